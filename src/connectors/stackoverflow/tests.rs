//! Tests of the `stackoverflow` connector against an axum StackExchange API on 127.0.0.1.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::{StackOverflowConfig, StackOverflowConnector};
use crate::clock::{Clock, ManualClock};
use crate::config::Secret;
use crate::connectors::{Connector, ConnectorContext, Error, test_context};
use crate::net::Retryability;
use crate::observability::StoreSnapshot;

/// What the mock answers next, and every query it was sent.
#[derive(Default)]
struct Api {
    /// Question totals by tag; unknown tags answer `bad_parameter`.
    totals: HashMap<String, u64>,
    /// The `backoff` put in the next answer.
    backoff: Option<u64>,
    /// When set, every call answers this throttle error.
    throttled: bool,
    quota_remaining: i64,
    queries: Vec<HashMap<String, String>>,
}

type Shared = Arc<Mutex<Api>>;

async fn questions(
    State(api): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut api = api.lock().expect("api");
    api.queries.push(query.clone());
    api.quota_remaining -= 1;
    let mut body = json!({"quota_max": 300, "quota_remaining": api.quota_remaining});
    if let Some(backoff) = api.backoff.take() {
        body["backoff"] = json!(backoff);
    }
    if api.throttled {
        body["error_id"] = json!(502);
        body["error_name"] = json!("throttle_violation");
        body["error_message"] =
            json!("too many requests from this IP, more requests available in 77 seconds");
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    match api
        .totals
        .get(query.get("tagged").map(String::as_str).unwrap_or_default())
    {
        Some(total) if query.get("filter").map(String::as_str) == Some("total") => {
            body["total"] = json!(total);
            axum::Json(body).into_response()
        }
        _ => {
            body["error_id"] = json!(400);
            body["error_name"] = json!("bad_parameter");
            body["error_message"] = json!("tagged");
            (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
        }
    }
}

async fn api() -> (String, Shared) {
    let api: Shared = Arc::new(Mutex::new(Api {
        totals: HashMap::from([
            ("rust".into(), 41_000),
            ("go".into(), 72_000),
            ("c#".into(), 1_600_000),
        ]),
        quota_remaining: 300,
        ..Api::default()
    }));
    let app = Router::new()
        .route("/2.3/questions", get(questions))
        .route(
            "/down/2.3/questions",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "<html>down</html>") }),
        )
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), api)
}

fn connector(base: &str, key: Option<&str>) -> StackOverflowConnector {
    StackOverflowConnector::new(StackOverflowConfig {
        base_url: format!("{base}/2.3").parse().expect("url"),
        key: key.map(Secret::new),
    })
}

fn ctx(clock: &ManualClock) -> ConnectorContext {
    test_context(Arc::new(clock.clone()))
}

async fn collect(
    connector: &StackOverflowConnector,
    ctx: &ConnectorContext,
    settings: Value,
) -> Result<Value, Error> {
    let page = connector.collect_page(ctx, &settings, None).await?;
    assert!(page.done);
    assert_eq!(page.records.len(), 1);
    Ok(page.records[0].clone())
}

#[tokio::test]
async fn totals_of_several_tags_become_one_metric_record_each() {
    let (base, api) = api().await;
    let connector = connector(&base, None);
    let ctx = ctx(&ManualClock::new(0));
    let rust = collect(&connector, &ctx, json!({"tag": "rust"}))
        .await
        .expect("rust");
    assert_eq!(
        rust,
        json!({"metric": "rust_question_count", "value": 41_000, "tag": "rust", "site": "stackoverflow",
               "quota_remaining": 299, "quota_max": 300})
    );
    let go = collect(
        &connector,
        &ctx,
        json!({"tag": "go", "metric": "GoQuestionCount", "site": "stackoverflow"}),
    )
    .await
    .expect("go");
    assert_eq!(
        (go["metric"].clone(), go["value"].clone()),
        (json!("GoQuestionCount"), json!(72_000))
    );
    let csharp = collect(&connector, &ctx, json!({"tag": "c#"}))
        .await
        .expect("c#");
    assert_eq!(csharp["value"], 1_600_000);
    assert_eq!(
        csharp["quota_remaining"], 297,
        "the quota is tracked call by call"
    );

    let queries = api.lock().expect("api").queries.clone();
    assert_eq!(queries[2]["tagged"], "c#");
    for query in &queries {
        assert_eq!(query["filter"], "total");
        assert_eq!(query["site"], "stackoverflow");
        assert!(!query.contains_key("key"), "no key configured: {query:?}");
    }
    let metrics = ctx.telemetry.render(&StoreSnapshot::default());
    assert!(
        metrics.contains(&format!("gleaner_upstream_quota_remaining{{connector=\"stackoverflow\",upstream=\"{base}\"}} 297\n")),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_key_is_sent_from_settings_or_else_from_config() {
    let (base, api) = api().await;
    let ctx = ctx(&ManualClock::new(0));
    collect(
        &connector(&base, Some("configured")),
        &ctx,
        json!({"tag": "rust"}),
    )
    .await
    .expect("config key");
    collect(
        &connector(&base, Some("configured")),
        &ctx,
        json!({"tag": "rust", "key": "own"}),
    )
    .await
    .expect("own key");
    let keys: Vec<_> = api
        .lock()
        .expect("api")
        .queries
        .iter()
        .map(|query| query["key"].clone())
        .collect();
    assert_eq!(keys, ["configured", "own"]);
}

#[tokio::test]
async fn a_backoff_defers_the_next_call_until_it_has_passed() {
    let (base, api) = api().await;
    let clock = ManualClock::new(1_000_000);
    let ctx = ctx(&clock);
    let connector = connector(&base, None);
    api.lock().expect("api").backoff = Some(10);
    collect(&connector, &ctx, json!({"tag": "rust"}))
        .await
        .expect("answer with backoff");

    clock.advance(Duration::from_secs(4));
    let deferred = collect(&connector, &ctx, json!({"tag": "go"}))
        .await
        .expect_err("deferred");
    assert_eq!(
        deferred.retryability(),
        Retryability::Retry {
            after: Some(Duration::from_secs(6))
        }
    );
    assert_eq!(
        api.lock().expect("api").queries.len(),
        1,
        "nothing sent during the backoff"
    );

    clock.advance(Duration::from_secs(6));
    collect(&connector, &ctx, json!({"tag": "go"}))
        .await
        .expect("after the backoff");
    assert_eq!(api.lock().expect("api").queries.len(), 2);
    assert!(clock.now() > 0);
}

#[tokio::test]
async fn a_throttle_is_retried_after_its_wait_and_bad_parameters_are_permanent() {
    let (base, api) = api().await;
    let ctx = ctx(&ManualClock::new(0));
    let connector = connector(&base, None);
    let refused = collect(&connector, &ctx, json!({"tag": "no-such-tag"}))
        .await
        .expect_err("bad tag");
    assert!(matches!(refused, Error::Settings(_)), "{refused:?}");
    assert!(refused.to_string().contains("bad_parameter"), "{refused}");
    assert_eq!(refused.retryability(), Retryability::Permanent);

    api.lock().expect("api").throttled = true;
    let throttled = collect(&connector, &ctx, json!({"tag": "rust"}))
        .await
        .expect_err("throttled");
    assert!(
        throttled.to_string().contains("throttle_violation"),
        "{throttled}"
    );
    assert_eq!(
        throttled.retryability(),
        Retryability::Retry {
            after: Some(Duration::from_secs(77))
        }
    );
}

#[tokio::test]
async fn answers_that_are_not_the_api_keep_the_shared_classification() {
    let (base, _api) = api().await;
    let ctx = ctx(&ManualClock::new(0));
    let down = collect(
        &connector(&format!("{base}/down"), None),
        &ctx,
        json!({"tag": "rust"}),
    )
    .await
    .expect_err("503");
    assert_eq!(down.http_status(), Some(503));
    assert!(matches!(down.retryability(), Retryability::Retry { .. }));
}

#[test]
fn sources_share_the_api_breaker_and_are_labelled_by_metric() {
    let connector = StackOverflowConnector::new(StackOverflowConfig::default());
    let settings = json!({"tag": "rust"});
    assert_eq!(
        connector.upstream(&settings).as_deref(),
        Some("https://api.stackexchange.com")
    );
    assert_eq!(
        connector.label(&settings).as_deref(),
        Some("rust_question_count")
    );
    assert_eq!(
        connector
            .label(&json!({"tag": "go", "metric": "GoQuestionCount"}))
            .as_deref(),
        Some("GoQuestionCount")
    );
}
