//! Lookup tables end to end: a job with a `lookup` sink refreshes a table from an upstream, a
//! later job's tabular processors map and divide through it, and `/v1/lookups` shows it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::harness::{assert_problem, detail};
use crate::support::{Mock, TestApp};

const WAIT: Duration = Duration::from_secs(10);

/// A job reading the report rows and converting gross into dollars through `currency`.
fn report_job(url: String) -> Value {
    json!({
        "sources": [{"connector": "http", "settings": {"url": url}}],
        "processors": [
            {"type": "rename", "columns": {"market": "country", "Est. Gross Rev": "gross"}},
            {"type": "map", "column": "country", "values": {"UK": "GB"}, "lowercase": true},
            {"type": "map", "column": "currency", "table": "currency", "lowercase": true,
             "into": "rate", "default": "1"},
            {"type": "multiply", "column": "gross", "by_column": "rate", "divide": true},
            {"type": "drop_rows", "where": {"column": "channel", "equals": "ORGANIC"}},
            {"type": "group_by", "keys": ["country"], "sum": ["gross"], "count_as": "rows"}
        ]
    })
}

fn close(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|n| (n - expected).abs() < 1e-9)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_refreshes_a_lookup_table_that_a_later_job_maps_through() {
    let mock = Mock::start().await;
    mock.set_json(
        "/rates",
        json!({"base": "USD", "rates": {"EUR": 0.8, "GBP": 0.5, "USD": 1}}),
    );
    mock.set_json(
        "/report",
        json!([
            {"market": "UK", "Est. Gross Rev": "10", "currency": "GBP", "channel": "a"},
            {"market": "UK", "Est. Gross Rev": 4, "currency": "EUR", "channel": "b"},
            {"market": "DE", "Est. Gross Rev": 8, "currency": "EUR", "channel": "ORGANIC"},
            {"market": "FR", "Est. Gross Rev": 3, "currency": "CHF", "channel": "c"}
        ]),
    );
    let app = TestApp::start().await;

    // Before any job filled the table, a job reading it fails for good, saying why.
    let early = app.create_job(&report_job(mock.url("/report"))).await;
    let job = app.wait_for_status(&early, &["failed"], WAIT).await;
    assert!(
        job.to_string().contains(
            "lookup table \\\"currency\\\" does not exist; run the job that fills it first"
        ),
        "{job:#}"
    );
    let missing = app.get("/v1/lookups/currency").await;
    assert_problem(&missing, 404);

    let refresh = app
        .create_job(&json!({
            "sources": [{"connector": "http", "settings": {
                "url": mock.url("/rates"), "record_path": ".rates | to_entries[]"}}],
            "processors": [{"type": "jq", "filter": "{code: .key, rate: .value}"}],
            "sinks": [{"type": "lookup", "table": "currency", "key": "code", "value": "rate",
                       "lowercase_keys": true}]
        }))
        .await;
    app.wait_for_status(&refresh, &["succeeded"], WAIT).await;

    let list = app.get("/v1/lookups").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let tables = list.json()["tables"].clone();
    assert_eq!(tables.as_array().map(Vec::len), Some(1), "{tables}");
    assert_eq!(tables[0]["name"], "currency");
    assert_eq!(tables[0]["entries"], 3);
    let table = app.get("/v1/lookups/currency").await;
    assert_eq!(table.status, StatusCode::OK, "{}", table.text);
    assert_eq!(
        table.json()["entries"],
        json!({"eur": "0.8", "gbp": "0.5", "usd": "1"})
    );

    let report = app.create_job(&report_job(mock.url("/report"))).await;
    app.wait_for_status(&report, &["succeeded"], WAIT).await;
    let records = app.records(&report).await;
    assert_eq!(records.len(), 2, "{records:#?}");
    let (gb, fr) = (&records[0], &records[1]);
    assert_eq!(gb["country"], "gb");
    assert!(close(&gb["gross"], 10.0 / 0.5 + 4.0 / 0.8), "{gb}");
    assert_eq!(gb["rows"], 2);
    assert_eq!(
        gb["channel"], "a",
        "text columns are kept from the first row"
    );
    assert_eq!(fr["country"], "fr");
    assert_eq!(
        fr["rate"], "1",
        "a currency not in the table takes the default"
    );
    assert!(close(&fr["gross"], 3.0), "{fr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tabular_processors_and_lookup_sinks_are_refused() {
    let app = TestApp::builder().without_engine().start().await;
    let cases = [
        (
            json!([{"type": "extract", "column": "c", "pattern": "(unclosed"}]),
            "processor 0 (extract)",
        ),
        (
            json!([{"type": "jq", "filter": "."}, {"type": "rename", "columns": {}}]),
            "processor 1 (rename)",
        ),
        (
            json!([{"type": "drop_rows", "where": {"column": "c", "equals": 1, "in": [2]}}]),
            "exactly one of",
        ),
        (
            json!([{"type": "multiply", "column": "gross"}]),
            "exactly one of by and by_column",
        ),
    ];
    for (processors, expected) in cases {
        let answer = app
            .post(
                "/v1/jobs",
                &json!({"sources": [{"connector": "noop"}], "processors": processors}),
            )
            .await;
        let problem = assert_problem(&answer, 422);
        assert!(detail(&problem).contains(expected), "{problem}");
    }
    let bad_sink = app
        .post(
            "/v1/jobs",
            &json!({"sources": [{"connector": "noop"}],
                    "sinks": [{"type": "lookup", "table": "no spaces", "key": "k", "value": "v"}]}),
        )
        .await;
    assert_problem(&bad_sink, 422);
}

/// Runs `job` to success and returns the `country_name` of each of its records.
async fn mapped_names(app: &TestApp, job: &Value) -> Vec<Value> {
    let id = app.create_job(job).await;
    app.wait_for_status(&id, &["succeeded"], WAIT).await;
    let records = app.records(&id).await;
    records
        .iter()
        .map(|record| record["country_name"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_table_is_put_mapped_through_replaced_and_deleted() {
    let mock = Mock::start().await;
    mock.set_json(
        "/people",
        json!([{"name": "ada", "country": "UK"}, {"name": "kurt", "country": "AT"}]),
    );
    let app = TestApp::start().await;
    let put = |body: Value| {
        let request = app
            .request(reqwest::Method::PUT, "/v1/lookups/country-names")
            .json(&body);
        app.send(request)
    };
    let job = json!({
        "sources": [{"connector": "http", "settings": {"url": mock.url("/people")}}],
        "processors": [{"type": "map", "column": "country", "table": "country-names",
                        "into": "country_name", "default": "?"}]
    });

    let created = put(json!({"entries": {"UK": "United Kingdom", "DE": "Germany"}})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json()["entries"]["UK"], "United Kingdom");
    assert_eq!(
        mapped_names(&app, &job).await,
        [json!("United Kingdom"), json!("?")]
    );

    // A PUT replaces the whole table: the next job sees only the new entries.
    let replaced = put(json!({"entries": {"AT": "Austria"}})).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_eq!(
        mapped_names(&app, &job).await,
        [json!("?"), json!("Austria")]
    );

    // Bad tables are refused and change nothing.
    for (body, status, says) in [
        (json!({"entries": {}}), 422, "at least one entry"),
        (json!({"entries": {"": "x"}}), 422, "a key is empty"),
        (
            json!({"entries": {"k": "v".repeat(5000)}}),
            422,
            "at most 4096 bytes",
        ),
        (json!({"entries": {"k": 1}}), 422, "expected a string"),
        (json!({"entries": {"k": "v"}, "extra": true}), 422, "extra"),
        (json!(["k", "v"]), 422, ""),
    ] {
        let answer = put(body.clone()).await;
        let problem = assert_problem(&answer, status);
        assert!(detail(&problem).contains(says), "{body}: {problem:#}");
    }
    let bad_name = app
        .send(
            app.request(reqwest::Method::PUT, "/v1/lookups/no%20spaces")
                .json(&json!({"entries": {"k": "v"}})),
        )
        .await;
    let problem = assert_problem(&bad_name, 422);
    assert!(detail(&problem).contains("table name"), "{problem:#}");
    let table = app.get("/v1/lookups/country-names").await.json();
    assert_eq!(table["entries"], json!({"AT": "Austria"}));

    // Deleted, it is gone for readers and for jobs.
    let delete = || app.send(app.request(reqwest::Method::DELETE, "/v1/lookups/country-names"));
    assert_eq!(delete().await.status, StatusCode::NO_CONTENT);
    assert_problem(&delete().await, 404);
    assert_problem(&app.get("/v1/lookups/country-names").await, 404);
    let third = app.create_job(&job).await;
    app.wait_for_status(&third, &["failed"], WAIT).await;
}

/// `gleaner lookups …` against a real `gleaner serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookups_cli_puts_shows_lists_and_deletes() {
    use crate::support::process::GleanerProcess;

    let dir = tempfile::tempdir().expect("temp dir");
    let process = GleanerProcess::start(&dir.path().join("data"), &[]).await;
    let file = dir.path().join("rates.json");
    std::fs::write(&file, r#"{"EUR": "0.9", "GBP": "0.8"}"#).expect("write");
    let file = file.to_str().expect("utf-8 path");
    let cli = |args: &[&str]| {
        let output = process.run_command(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stdout, stderr)
    };

    let (ok, put, stderr) = cli(&["lookups", "put", "currency", file]);
    assert!(ok, "{stderr}");
    assert_eq!(put.trim(), "lookup table \"currency\": 2 entries");
    let (ok, shown, stderr) = cli(&["lookups", "show", "currency"]);
    assert!(ok, "{stderr}");
    let shown: Value = serde_json::from_str(&shown).expect("JSON");
    assert_eq!(shown, json!({"EUR": "0.9", "GBP": "0.8"}));
    let (ok, listed, stderr) = cli(&["lookups", "list"]);
    assert!(ok, "{stderr}");
    assert!(listed.starts_with("currency "), "{listed}");
    assert!(listed.contains(" 2 "), "{listed}");

    let (ok, _, stderr) = cli(&["lookups", "put", "bad name", file]);
    assert!(!ok && stderr.contains("table name"), "{stderr}");
    let (ok, deleted, stderr) = cli(&["lookups", "delete", "currency"]);
    assert!(ok, "{stderr}");
    assert_eq!(deleted.trim(), "lookup table \"currency\" deleted");
    let (ok, _, stderr) = cli(&["lookups", "delete", "currency"]);
    assert!(!ok && stderr.contains("404"), "{stderr}");
}
