//! The `web-report` and `json-table` connectors through `POST /v1/jobs` against a mock
//! members-only report site: the availability check, gzip CSV downloads one date per page,
//! DataTables paging past the seed's 1000 rows, and a failed login that never shows the
//! password.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::report_site::{PASSWORD, ReportSite, USERNAME};

const WAIT: Duration = Duration::from_secs(30);

fn login(site: &ReportSite, password: &str) -> Value {
    json!({
        "url": site.url("/login.php"),
        "username": USERNAME,
        "password": password,
        "extra_fields": {"Submit": "Login"},
        "success_cookie": "PHPSESSID"
    })
}

fn web_report_job(site: &ReportSite, password: &str, start: &str, end: &str) -> Value {
    json!({"sources": [{"connector": "web-report", "settings": {
        "login": login(site, password),
        "listing": {
            "url": site.url("/members.php?period=DAY&type=detail&dFrom={from}&dTo={to}"),
            "link_selector": "tbody a",
            "date_pattern": r"(\d{4}-\d{2}-\d{2})"
        },
        "start_date": start,
        "end_date": end,
        "csv": {"gzip": "auto"}
    }}]})
}

fn collect_step(job: &Value) -> &Value {
    job["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|step| step["kind"] == "collect"))
        .unwrap_or_else(|| panic!("a collect step in {job:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_date_missing_from_the_listing_fails_the_step_naming_the_dates() {
    let site = ReportSite::start("2026-11-01", "2026-11-05", 10, 0).await;
    site.remove_date("2026-11-03");
    site.remove_date("2026-11-05");
    let app = TestApp::start().await;

    let id = app
        .create_job(&web_report_job(&site, PASSWORD, "2026-11-01", "2026-11-05"))
        .await;
    let job = app.wait_for_status(&id, &["failed"], WAIT).await;

    let step = collect_step(&job);
    assert_eq!(step["state"], "failed", "{job:#}");
    assert_eq!(
        step["attempts"], 1,
        "an incomplete listing is not retried: {job:#}"
    );
    let error = step["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no report for 2026-11-03, 2026-11-05 in the listing"),
        "{error}"
    );
    assert!(site.downloads().is_empty(), "nothing is downloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_reports_of_every_date_are_collected_one_page_per_date() {
    let site = ReportSite::start("2026-11-01", "2026-11-04", 2_500, 0).await;
    let app = TestApp::start().await;

    let id = app
        .create_job(&web_report_job(&site, PASSWORD, "2026-11-01", "2026-11-04"))
        .await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;

    assert_eq!(job["records_collected"], 10_000, "{job:#}");
    assert_eq!(
        site.downloads(),
        [
            "report_2026-11-01.csv.gz",
            "report_2026-11-02.csv.gz",
            "report_2026-11-03.csv.gz",
            "report_2026-11-04.csv.gz"
        ],
        "each date downloaded once, in order"
    );
    assert_eq!(site.logins(), 4, "one login per page");
    let records = app.records(&id).await;
    assert_eq!(records.len(), 10_000);
    assert_eq!(
        records[0],
        json!({"datestamp": "2026-11-01", "type_tag": "tag_20261101_00", "market": "UK",
               "Searches": "0", "Est. Gross Rev": "0.5", "_report_date": "2026-11-01"})
    );
    for date in ["2026-11-01", "2026-11-04"] {
        let of_date = records
            .iter()
            .filter(|record| record["_report_date"] == date && record["datestamp"] == date)
            .count();
        assert_eq!(of_date, 2_500, "{date}");
    }
    let shown = app.get(&format!("/v1/jobs/{id}")).await.text;
    assert!(
        !shown.contains(PASSWORD),
        "the password is redacted: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_table_pages_past_the_first_thousand_rows_and_drops_the_total() {
    let site = ReportSite::start("2026-11-01", "2026-11-01", 0, 2_500).await;
    let app = TestApp::start().await;

    let id = app
        .create_job(&json!({"sources": [{"connector": "json-table", "settings": {
            "login": login(&site, PASSWORD),
            "url": site.url("/routePage.php?date_from={from}&date_to={to}&global_time_zone=0&channels=&countries="),
            "columns": ["source_date", "channel", "country", "chrome_leads", "firefox_leads",
                        "ie_leads", "other_leads", "total_leads", "average_price", "total_price"],
            "page_size": 1000,
            "skip_rows": [{"column": "source_date", "equals": "Total"}],
            "start_date": "2026-11-01",
            "end_date": "2026-11-01"
        }}]}))
        .await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;

    assert_eq!(job["records_collected"], 2_500, "{job:#}");
    let starts: Vec<String> = site
        .table_queries()
        .iter()
        .map(|query| format!("{}+{}", query["iDisplayStart"], query["iDisplayLength"]))
        .collect();
    assert_eq!(starts, ["0+1000", "1000+1000", "2000+1000"]);
    assert!(
        site.table_queries()
            .iter()
            .all(|query| query["date_from"] == "2026-11-01" && query["date_to"] == "2026-11-01")
    );
    let records = app.records(&id).await;
    assert_eq!(records.len(), 2_500);
    assert!(
        records
            .iter()
            .all(|record| record["source_date"] == "2026-11-01")
    );
    assert_eq!(records[2_499]["channel"], "ch-2499");
    assert_eq!(records[0]["total_price"], "0.25");
    assert_eq!(records[0]["total_leads"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_with_login_failed_and_is_shown_nowhere() {
    const WRONG: &str = "Wr0ng-but-still-secret-42";
    let site = ReportSite::start("2026-11-01", "2026-11-02", 10, 10).await;
    let app = TestApp::start().await;

    let id = app
        .create_job(&web_report_job(&site, WRONG, "2026-11-01", "2026-11-02"))
        .await;
    let job = app.wait_for_status(&id, &["failed"], WAIT).await;

    let step = collect_step(&job);
    assert_eq!(
        step["attempts"], 1,
        "a refused login is not retried: {job:#}"
    );
    let error = step["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("login failed"), "{error}");
    assert_eq!(site.logins(), 1);
    assert!(site.downloads().is_empty());

    let shown = app.get(&format!("/v1/jobs/{id}")).await.text;
    assert!(!shown.contains(WRONG), "the password appears in {shown}");
    assert!(
        shown.contains("********"),
        "the password is redacted: {shown}"
    );
    let dead_letters = app.get(&format!("/v1/dead-letters?job_id={id}")).await.text;
    assert!(!dead_letters.contains(WRONG), "{dead_letters}");
}
