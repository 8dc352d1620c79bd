//! `POST /api/v1/integration`, the databox-collector seed's route: StackOverflow and Reddit
//! metrics pushed to Databox, with the seed's per-source report and honest status codes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::databox::{Answer, MockDatabox};
use crate::support::harness::{TestApp, assert_problem, job_count, post_raw};
use crate::support::reddit::{self, MockReddit};
use crate::support::stackexchange::MockStackExchange;

const TOKEN: &str = "push-token-1";

/// An app whose StackOverflow and Databox are the mocks and whose Reddit cannot be reached
/// (its token endpoint refuses connections), unless `reddit` is given.
async fn app(
    stackexchange: &MockStackExchange,
    databox: &MockDatabox,
    reddit: Option<&MockReddit>,
) -> TestApp {
    TestApp::builder()
        .config(|config| {
            config.stackoverflow.base_url = stackexchange.base_url().parse().expect("url");
            config.sinks.databox.base_url = databox.base_url();
            config.sinks.databox.token = Some(TOKEN.into());
            config.reddit.client_id = Some(reddit::CLIENT_ID.into());
            config.reddit.client_secret = Some(gleaner::config::Secret::new(reddit::CLIENT_SECRET));
            match reddit {
                Some(reddit) => {
                    config.reddit.auth_url = reddit.auth_url().parse().expect("url");
                    config.reddit.base_url = reddit.base_url().parse().expect("url");
                }
                None => {
                    config.reddit.auth_url = "http://127.0.0.1:1/token".parse().expect("url");
                    config.reddit.base_url = "http://127.0.0.1:1".parse().expect("url");
                }
            }
        })
        .start()
        .await
}

async fn integrate(app: &TestApp, body: &Value) -> (StatusCode, Value) {
    let answer = app
        .send(app.request(Method::POST, "/api/v1/integration").json(body))
        .await;
    (answer.status, answer.json())
}

#[tokio::test]
async fn one_failing_upstream_gives_a_per_metric_report_and_the_rest_is_pushed() {
    let stackexchange = MockStackExchange::start(&[("go", 72_000), ("python", 2_200_000)]).await;
    let databox = MockDatabox::start().await;
    let app = app(&stackexchange, &databox, None).await;

    let (status, report) = integrate(
        &app,
        &json!([
            {"dataSource": "StackOverflow", "metrics": ["GoQuestionCount", "PythonQuestionCount"]},
            {"dataSource": "Reddit", "metrics": ["GoPostCount"]},
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{report:#}");
    assert_eq!(report[0]["dataSource"], "StackOverflow");
    let sent = report[0]["metricsSent"].as_array().expect("sent");
    assert_eq!(sent.len(), 2, "{report:#}");
    assert_eq!(sent[0]["name"], "GoQuestionCount");
    assert_eq!(sent[0]["value"], 72_000);
    assert_eq!(sent[1]["value"], 2_200_000);
    assert!(sent[0]["date"].is_string());
    assert_eq!(report[0]["metricsFailed"], json!([]));
    assert_eq!(report[1]["dataSource"], "Reddit");
    assert_eq!(report[1]["metricsSent"], json!([]));
    let failed = &report[1]["metricsFailed"][0];
    assert_eq!(failed["metric"], "GoPostCount", "{report:#}");
    assert!(failed["error"].as_str().is_some_and(|e| !e.is_empty()));

    // The successful metrics reached Databox in one push, with the basic-auth token.
    let pushes = databox.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].push_token().as_deref(), Some(TOKEN));
    let data = pushes[0].data();
    assert_eq!(data.len(), 2, "{data:?}");
    assert_eq!(data[0]["$GoQuestionCount"], 72_000);
    assert_eq!(data[1]["$PythonQuestionCount"], 2_200_000);
    assert_eq!(data[0]["date"], data[1]["date"], "one timestamp per batch");

    // Everything fine: 200.
    let (status, report) = integrate(
        &app,
        &json!([{"dataSource": "StackOverflow", "metrics": ["GoQuestionCount"]}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report:#}");
    assert_eq!(report[0]["metricsSent"][0]["value"], 72_000);
}

#[tokio::test]
async fn reddit_metrics_are_counted_and_a_refused_push_is_a_502() {
    let stackexchange = MockStackExchange::start(&[("typescript", 5)]).await;
    let databox = MockDatabox::start().await;
    let reddit = MockReddit::start().await;
    let app = app(&stackexchange, &databox, Some(&reddit)).await;
    let now = jiff::Timestamp::now().as_second();
    reddit.set_posts("golang", vec![now - 10, now - 20, now - 3 * 86_400]);

    let (status, report) = integrate(
        &app,
        &json!([{"dataSource": "Reddit", "metrics": ["GoPostCount"]}]),
    )
    .await;
    // Posts of the day: the two recent ones (unless the test runs across midnight UTC).
    assert_eq!(status, StatusCode::OK, "{report:#}");
    let value = report[0]["metricsSent"][0]["value"]
        .as_u64()
        .expect("value");
    assert!((1..=2).contains(&value), "{report:#}");

    databox.script_push(Answer::refused(401, "invalid token"));
    let (status, report) = integrate(
        &app,
        &json!([{"dataSource": "StackOverflow", "metrics": ["TypeScriptQuestionCount"]}]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{report:#}");
    assert!(
        report[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("401")),
        "{report:#}"
    );
    assert_eq!(report[0]["metricsSent"], json!([]));
}

#[tokio::test]
async fn bad_bodies_are_problems_and_nothing_is_stored() {
    let stackexchange = MockStackExchange::start(&[]).await;
    let databox = MockDatabox::start().await;
    let app = app(&stackexchange, &databox, None).await;
    for body in [
        json!([]),
        json!({"dataSource": "Reddit"}),
        json!("Reddit"),
        json!([{"dataSource": "Twitter"}]),
        json!([{"dataSource": "Reddit", "metrics": ["Bogus"]}]),
        json!([{"dataSource": "StackOverflow", "metrics": ["TypescriptQuestionCount"]}]),
        json!([{"dataSource": "StackOverflow", "metrics": ["GoQuestionCount", "GoQuestionCount"]}]),
        json!([{"dataSource": "Reddit"}, {"dataSource": "Reddit"}]),
        json!([{"dataSource": "Reddit", "metrics": "GoPostCount"}]),
        json!([{"dataSource": "Reddit", "extra": 1}]),
        json!([{"metrics": ["GoPostCount"]}]),
    ] {
        let answer = app
            .send(app.request(Method::POST, "/api/v1/integration").json(&body))
            .await;
        assert!(answer.status.is_client_error(), "{body}: {}", answer.text);
        assert_problem(&answer, answer.status.as_u16());
    }
    let answer = post_raw(&app, "/api/v1/integration", "application/json", "[{").await;
    assert_problem(&answer, 400);
    let answer = post_raw(&app, "/api/v1/integration", "text/plain", "[]").await;
    assert_problem(&answer, 415);
    assert_eq!(job_count(&app).await, 0);

    let logs = app.get("/api/v1/integration/logs?limit=5").await;
    assert_eq!(logs.status, StatusCode::OK);
    assert_eq!(logs.header("content-type"), Some("application/ndjson"));
}
