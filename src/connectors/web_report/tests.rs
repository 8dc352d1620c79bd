//! Tests of the `web-report` connector against a small axum report site on 127.0.0.1: the
//! login without redirects, one page per date, checkpoints, and a refused session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::WebReportConnector;
use crate::clock::SystemClock;
use crate::connectors::schema::SettingsSchema;
use crate::connectors::{Connector, test_context};

#[derive(Default)]
struct Site {
    /// Reports by date, as CSV text.
    reports: HashMap<String, String>,
    /// When set, the listing sends everyone back to the login page.
    refuse_sessions: bool,
    downloads: Vec<String>,
    logins: usize,
}

type Shared = Arc<Mutex<Site>>;

async fn login(State(site): State<Shared>, body: String) -> Response {
    site.lock().unwrap().logins += 1;
    if body.contains("password=right") {
        (
            StatusCode::FOUND,
            [
                (header::LOCATION, "/members.php"),
                (header::SET_COOKIE, "PHPSESSID=s1; path=/"),
            ],
        )
            .into_response()
    } else {
        "<form>wrong password</form>".into_response()
    }
}

fn has_session(headers: &HeaderMap) -> bool {
    headers
        .get(header::COOKIE)
        .is_some_and(|cookie| cookie == "PHPSESSID=s1")
}

async fn members(
    State(site): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let site = site.lock().unwrap();
    if site.refuse_sessions || !has_session(&headers) {
        return (StatusCode::FOUND, [(header::LOCATION, "/login.php")]).into_response();
    }
    assert_eq!(query["dFrom"], "2026-11-01");
    let mut dates: Vec<&String> = site.reports.keys().collect();
    dates.sort();
    let rows: String = dates
        .iter()
        .map(|date| format!(r#"<tr><td><a href="files/r_{date}.csv">r_{date}.csv</a></td></tr>"#))
        .collect();
    format!("<table><tbody>{rows}</tbody></table>").into_response()
}

async fn file(
    State(site): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if !has_session(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut site = site.lock().unwrap();
    site.downloads.push(name.clone());
    let date = name.trim_start_matches("r_").trim_end_matches(".csv");
    site.reports[date].clone().into_response()
}

async fn start_site(dates: &[&str]) -> (SocketAddr, Shared) {
    let site = Shared::default();
    for date in dates {
        site.lock().unwrap().reports.insert(
            (*date).to_owned(),
            format!("day,clicks\n{date},1\n{date},2\n"),
        );
    }
    let app = Router::new()
        .route("/login.php", post(login))
        .route("/members.php", get(members))
        .route("/files/{name}", get(file))
        .with_state(site.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, site)
}

fn settings(address: SocketAddr, password: &str, end_date: &str) -> Value {
    json!({
        "login": {"url": format!("http://{address}/login.php"), "username": "ann",
                  "password": password, "success_cookie": "PHPSESSID"},
        "listing": {"url": format!("http://{address}/members.php?dFrom={{from}}&dTo={{to}}")},
        "start_date": "2026-11-01",
        "end_date": end_date
    })
}

#[test]
fn the_schema_accepts_defaults_and_redacts_the_password() {
    let schema = SettingsSchema::compile(WebReportConnector.settings_schema()).unwrap();
    let example = settings("127.0.0.1:9".parse().unwrap(), "hunter2", "2026-11-02");
    schema.validate(&example).unwrap();
    WebReportConnector.validate(&example).unwrap();
    assert!(!schema.redact(&example).to_string().contains("hunter2"));

    for (field, value, needle) in [
        (
            "listing",
            json!({"url": "http://x/", "link_selector": "tbody >>> a"}),
            "link_selector",
        ),
        (
            "listing",
            json!({"url": "http://x/", "date_pattern": r"\d{4}"}),
            "capture group",
        ),
        ("csv", json!({"delimiter": "\""}), "csv.delimiter"),
        ("end_date", json!("2026-10-01"), "before"),
    ] {
        let mut bad = example.clone();
        bad[field] = value;
        let error = WebReportConnector.validate(&bad).unwrap_err().to_string();
        assert!(error.contains(needle), "{field}: {error}");
    }
}

#[tokio::test]
async fn one_page_per_date_and_a_resumed_run_downloads_only_the_rest() {
    let (address, site) = start_site(&["2026-11-01", "2026-11-02", "2026-11-03"]).await;
    let ctx = test_context(Arc::new(SystemClock));
    let settings = settings(address, "right", "2026-11-03");
    WebReportConnector.check(&ctx, &settings).await.unwrap();

    let first = WebReportConnector
        .collect_page(&ctx, &settings, None)
        .await
        .unwrap();
    assert_eq!(
        first.records,
        [
            json!({"day": "2026-11-01", "clicks": "1", "_report_date": "2026-11-01"}),
            json!({"day": "2026-11-01", "clicks": "2", "_report_date": "2026-11-01"}),
        ]
    );
    assert!(!first.done);
    let resumed = json!({"done_dates": ["2026-11-01", "2026-11-03"]});
    let last = WebReportConnector
        .collect_page(&ctx, &settings, Some(&resumed))
        .await
        .unwrap();
    assert!(last.done);
    assert_eq!(
        last.checkpoint,
        Some(json!({"done_dates": ["2026-11-01", "2026-11-02", "2026-11-03"]}))
    );
    assert_eq!(last.records[0]["_report_date"], "2026-11-02");
    let after = WebReportConnector
        .collect_page(&ctx, &settings, last.checkpoint.as_ref())
        .await
        .unwrap();
    assert!(after.done && after.records.is_empty());

    let site = site.lock().unwrap();
    assert_eq!(site.downloads, ["r_2026-11-01.csv", "r_2026-11-02.csv"]);
    assert_eq!(
        site.logins, 3,
        "one login per check and per page that downloads"
    );
}

#[tokio::test]
async fn a_wrong_password_a_missing_date_and_a_refused_session_fail_permanently() {
    let (address, site) = start_site(&["2026-11-01", "2026-11-03"]).await;
    let ctx = test_context(Arc::new(SystemClock));

    let wrong = WebReportConnector
        .collect_page(&ctx, &settings(address, "not-right", "2026-11-01"), None)
        .await
        .unwrap_err();
    assert!(wrong.to_string().contains("login failed"), "{wrong}");
    assert!(!format!("{wrong:?}").contains("not-right"), "{wrong:?}");
    assert_eq!(wrong.retryability(), crate::net::Retryability::Permanent);

    let missing = WebReportConnector
        .collect_page(&ctx, &settings(address, "right", "2026-11-04"), None)
        .await
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "unexpected response: no report for 2026-11-02, 2026-11-04 in the listing"
    );

    site.lock().unwrap().refuse_sessions = true;
    let refused = WebReportConnector
        .collect_page(&ctx, &settings(address, "right", "2026-11-01"), None)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("redirected to the login page"),
        "{refused}"
    );
}
