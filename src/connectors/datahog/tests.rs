//! Tests of the `datahog-provider` connector against an axum providers API on 127.0.0.1.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use super::{DatahogConfig, DatahogConnector};
use crate::clock::SystemClock;
use crate::connectors::schema::SettingsSchema;
use crate::connectors::{Connector, ConnectorContext, Error, Page};
use crate::net::{HttpClientFactory, NetConfig, Retryability, UpstreamError};

fn gas_bills() -> Value {
    json!([
        {"billedOn": "2020-04-07T15:03:14.257Z", "amount": 22.27},
        {"billedOn": "2020-05-07T15:03:14.257Z", "amount": 30}
    ])
}

/// The seed's providers plus the answers the seed mock never gives: an empty list, an
/// object, an outage and a non-JSON body. Unknown providers get the mock's empty 404.
async fn providers_api() -> String {
    let app = Router::new()
        .route("/providers/gas", get(|| async { axum::Json(gas_bills()) }))
        .route("/providers/empty", get(|| async { axum::Json(json!([])) }))
        .route("/providers/object", get(|| async { axum::Json(json!({})) }))
        .route(
            "/providers/down",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "#fail").into_response() }),
        )
        .route("/providers/text", get(|| async { "not json" }))
        .fallback(|| async { StatusCode::NOT_FOUND });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// A connector over `base` that knows the mock's providers and one the mock lacks (`water`).
fn connector(base: &str) -> DatahogConnector {
    let config: DatahogConfig = serde_json::from_value(json!({
        "base_url": base,
        "providers": ["gas", "empty", "object", "down", "text", "water"]
    }))
    .expect("config");
    DatahogConnector::new(config)
}

fn ctx() -> ConnectorContext {
    let config = NetConfig {
        allow: vec!["127.0.0.1/32".parse().expect("net")],
        ..NetConfig::default()
    };
    ConnectorContext {
        http: HttpClientFactory::new(&config).expect("factory"),
        clock: Arc::new(SystemClock),
        telemetry: crate::observability::Telemetry::new(),
    }
}

async fn collect(base: &str, id: &str) -> Result<Page, Error> {
    connector(base)
        .collect_page(&ctx(), &json!({ "id": id }), None)
        .await
}

#[tokio::test]
async fn bills_arrive_as_records_in_one_final_page() {
    let base = providers_api().await;
    let page = collect(&base, "gas").await.expect("gas");
    assert_eq!(Value::Array(page.records), gas_bills());
    assert!(page.done);
    assert_eq!(page.checkpoint, None);
}

#[tokio::test]
async fn an_empty_bill_list_is_a_finished_collection() {
    let base = providers_api().await;
    let page = collect(&base, "empty").await.expect("empty list");
    assert_eq!(
        page,
        Page {
            records: Vec::new(),
            checkpoint: None,
            done: true
        }
    );
}

#[tokio::test]
async fn missing_provider_is_permanent_and_outage_is_retried() {
    let base = providers_api().await;
    let missing = collect(&base, "water").await.expect_err("404");
    assert_eq!(missing.http_status(), Some(404));
    assert_eq!(missing.retryability(), Retryability::Permanent);

    let down = collect(&base, "down").await.expect_err("500");
    assert_eq!(down.http_status(), Some(500));
    assert_eq!(down.response_excerpt(), Some("#fail"));
    assert!(matches!(down.retryability(), Retryability::Retry { .. }));

    // Nothing listens on port 9 of loopback: a transport failure, retried.
    let refused = collect("http://127.0.0.1:9", "gas")
        .await
        .expect_err("refused");
    assert!(matches!(
        refused,
        Error::Upstream(UpstreamError::Transport { .. })
    ));
    assert!(matches!(refused.retryability(), Retryability::Retry { .. }));
}

#[tokio::test]
async fn bodies_that_are_not_bill_arrays_fail_permanently() {
    let base = providers_api().await;
    let object = collect(&base, "object").await.expect_err("object");
    assert!(matches!(object, Error::Response(_)), "{object:?}");
    assert!(object.to_string().contains("object"), "{object}");
    assert_eq!(object.retryability(), Retryability::Permanent);

    let text = collect(&base, "text").await.expect_err("text");
    assert!(
        matches!(text, Error::Upstream(UpstreamError::Decode { .. })),
        "{text:?}"
    );
    assert_eq!(text.retryability(), Retryability::Permanent);
}

#[tokio::test]
async fn check_fetches_the_provider() {
    let base = providers_api().await;
    let connector = connector(&base);
    connector
        .check(&ctx(), &json!({"id": "gas"}))
        .await
        .expect("gas answers");
    let error = connector
        .check(&ctx(), &json!({"id": "water"}))
        .await
        .expect_err("water is missing");
    assert_eq!(error.http_status(), Some(404));
}

#[test]
fn schema_admits_exactly_the_configured_ids() {
    let connector = DatahogConnector::new(DatahogConfig::default());
    let schema = SettingsSchema::compile(connector.settings_schema()).expect("schema");
    for id in ["gas", "internet"] {
        let settings = json!({ "id": id });
        assert_eq!(schema.validate(&settings), Ok(()), "{id}");
        assert!(connector.validate(&settings).is_ok(), "{id}");
    }
    for refused in [
        json!({"id": "GAS"}),
        json!({"id": "__proto__"}),
        json!({"id": "constructor"}),
        json!({"id": "toString"}),
        json!({"id": ""}),
        json!({"id": ["gas"]}),
        json!({"id": 1}),
        json!({}),
        json!({"id": "gas", "extra": true}),
        json!("gas"),
    ] {
        assert!(
            schema.validate(&refused).is_err(),
            "schema let {refused} in"
        );
        assert!(
            connector.validate(&refused).is_err(),
            "validate let {refused} in"
        );
    }
}

#[tokio::test]
async fn unconfigured_ids_are_never_fetched() {
    // A stored job may name a provider removed from the configuration since.
    let base = "http://127.0.0.1:9";
    let error = collect(base, "__proto__").await.expect_err("refused");
    assert!(matches!(error, Error::Settings(_)), "{error:?}");
    assert_eq!(error.retryability(), Retryability::Permanent);
}

#[test]
fn providers_share_the_api_breaker_and_are_labelled_by_id() {
    let connector = DatahogConnector::new(DatahogConfig::default());
    for id in ["gas", "internet"] {
        let settings = json!({ "id": id });
        assert_eq!(
            connector.upstream(&settings).as_deref(),
            Some("http://127.0.0.1:3000")
        );
        assert_eq!(connector.label(&settings).as_deref(), Some(id));
    }
    assert_eq!(connector.label(&json!({"id": "GAS"})), None);
}
