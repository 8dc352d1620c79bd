//! `ReportSite`: a members-only report site on `127.0.0.1:0` shaped like the seed's private
//! scraping platforms. `POST /login.php` (form `username`/`password`; right → 302 with
//! `Set-Cookie: PHPSESSID=…`, wrong → 200 login page without it); with the cookie,
//! `GET /members.php?dFrom=&dTo=` lists `files/report_<date>.csv.gz` links in a table,
//! `GET /files/{name}` serves gzip CSV, and `GET /routePage.php?iDisplayStart=&iDisplayLength=`
//! pages DataTables JSON rows ending with a `Total` row. Without the cookie every page
//! redirects to the login.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flate2::Compression;
use flate2::write::GzEncoder;
use jiff::civil::Date;
use serde_json::json;

pub const USERNAME: &str = "analyst";
pub const PASSWORD: &str = "Corr3ct-h0rse-battery";
const SESSION: &str = "sess-7f3a9c";

struct Inner {
    /// Dates that have a report.
    dates: BTreeSet<Date>,
    rows_per_report: usize,
    /// Data rows of the DataTables endpoint (a `Total` row follows them).
    table_rows: usize,
    logins: usize,
    downloads: Vec<String>,
    table_queries: Vec<HashMap<String, String>>,
}

/// A running mock report site.
#[derive(Clone)]
pub struct ReportSite {
    address: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl ReportSite {
    /// Serves a report for every date from `first` to `last`, each with `rows_per_report`
    /// rows, and `table_rows` rows (plus `Total`) on the DataTables endpoint.
    pub async fn start(first: &str, last: &str, rows_per_report: usize, table_rows: usize) -> Self {
        let first: Date = first.parse().expect("first date");
        let last: Date = last.parse().expect("last date");
        let dates = first
            .series(jiff::Span::new().days(1))
            .take_while(|day| *day <= last)
            .collect();
        let inner = Arc::new(Mutex::new(Inner {
            dates,
            rows_per_report,
            table_rows,
            logins: 0,
            downloads: Vec::new(),
            table_queries: Vec::new(),
        }));
        let app = Router::new()
            .route("/login.php", post(login))
            .route("/members.php", get(members))
            .route("/files/{name}", get(file))
            .route("/routePage.php", get(table))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind report site");
        let address = listener.local_addr().expect("report site address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Takes `date`'s report off the listing.
    pub fn remove_date(&self, date: &str) {
        let date: Date = date.parse().expect("date");
        self.lock().dates.remove(&date);
    }

    pub fn logins(&self) -> usize {
        self.lock().logins
    }

    /// The file names downloaded so far, in order.
    pub fn downloads(&self) -> Vec<String> {
        self.lock().downloads.clone()
    }

    /// The query of every DataTables call so far.
    pub fn table_queries(&self) -> Vec<HashMap<String, String>> {
        self.lock().table_queries.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("report site")
    }
}

type Shared = Arc<Mutex<Inner>>;

async fn login(State(inner): State<Shared>, Form(form): Form<HashMap<String, String>>) -> Response {
    inner.lock().expect("report site").logins += 1;
    let right = form.get("username").map(String::as_str) == Some(USERNAME)
        && form.get("password").map(String::as_str) == Some(PASSWORD);
    if !right {
        return axum::response::Html(
            "<html><body><form method=post><p>Invalid login</p></form></body></html>",
        )
        .into_response();
    }
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, "/members.php".to_owned()),
            (
                header::SET_COOKIE,
                format!("PHPSESSID={SESSION}; path=/; HttpOnly"),
            ),
        ],
    )
        .into_response()
}

fn to_login() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, "/login.php")]).into_response()
}

fn has_session(headers: &HeaderMap) -> bool {
    headers
        .get(header::COOKIE)
        .and_then(|cookie| cookie.to_str().ok())
        .is_some_and(|cookie| {
            cookie
                .split(';')
                .any(|pair| pair.trim() == format!("PHPSESSID={SESSION}"))
        })
}

async fn members(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !has_session(&headers) {
        return to_login();
    }
    let (Some(from), Some(to)) = (
        query.get("dFrom").and_then(|d| d.parse::<Date>().ok()),
        query.get("dTo").and_then(|d| d.parse::<Date>().ok()),
    ) else {
        return (StatusCode::BAD_REQUEST, "dFrom and dTo required").into_response();
    };
    let inner = inner.lock().expect("report site");
    let rows: String = inner
        .dates
        .range(from..=to)
        .map(|date| {
            format!(
                r#"<tr><td>{date}</td><td><a href="files/report_{date}.csv.gz">report_{date}.csv.gz</a></td></tr>"#
            )
        })
        .collect();
    axum::response::Html(format!(
        r#"<html><body><a href="logout.php">Logout</a>
        <table><thead><tr><th>Date</th><th>File</th></tr></thead><tbody>{rows}</tbody></table>
        </body></html>"#
    ))
    .into_response()
}

async fn file(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if !has_session(&headers) {
        return to_login();
    }
    let mut inner = inner.lock().expect("report site");
    let date = name
        .strip_prefix("report_")
        .and_then(|rest| rest.strip_suffix(".csv.gz"))
        .and_then(|date| date.parse::<Date>().ok());
    let Some(date) = date.filter(|date| inner.dates.contains(date)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    inner.downloads.push(name);
    let mut csv = String::from("datestamp,type_tag,market,Searches,Est. Gross Rev\n");
    for row in 0..inner.rows_per_report {
        csv.push_str(&format!(
            "{date},tag_20261101_{:02},UK,{row},\"{}.5\"\n",
            row % 100,
            row * 2
        ));
    }
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(csv.as_bytes()).expect("gzip");
    let body = encoder.finish().expect("gzip");
    ([(header::CONTENT_TYPE, "application/x-gzip")], body).into_response()
}

async fn table(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !has_session(&headers) {
        return to_login();
    }
    let mut inner = inner.lock().expect("report site");
    inner.table_queries.push(query.clone());
    let number = |name: &str| query.get(name).and_then(|n| n.parse::<usize>().ok());
    let (Some(start), Some(length)) = (number("iDisplayStart"), number("iDisplayLength")) else {
        return (StatusCode::BAD_REQUEST, "paging parameters required").into_response();
    };
    let date = query.get("date_from").cloned().unwrap_or_default();
    let total = inner.table_rows + 1;
    let rows: Vec<serde_json::Value> = (start..total.min(start.saturating_add(length)))
        .map(|index| {
            if index == inner.table_rows {
                json!(["Total", "", "", 0, 0, 0, 0, inner.table_rows, "", "99.0"])
            } else {
                json!([
                    date,
                    format!("ch-{index}"),
                    "<img src=flag.png> United Kingdom",
                    1,
                    2,
                    3,
                    4,
                    10,
                    "0.5",
                    format!("{index}.25")
                ])
            }
        })
        .collect();
    Json(json!({
        "sEcho": 1,
        "iTotalRecords": total,
        "iTotalDisplayRecords": total.to_string(),
        "aaData": rows
    }))
    .into_response()
}
