//! Relative dates in connector settings: resolved when a job is created, in the configured
//! time zone, stored resolved with the phrase beside it; unreadable ones refused by name.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gleaner::clock::ManualClock;
use gleaner::connectors::{Connector, ConnectorContext, ConnectorRegistry, Error, Page};
use serde_json::{Value, json};

use crate::support::harness::{TestApp, assert_problem, detail};

/// A source whose settings are two dates; its one record echoes what it was given, so the
/// test sees what a connector receives.
struct DatedSource;

#[async_trait]
impl Connector for DatedSource {
    fn name(&self) -> &'static str {
        "dated"
    }

    fn description(&self) -> &'static str {
        "Echoes its date settings (tests)."
    }

    fn settings_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["start_date"],
            "properties": {
                "start_date": {"type": "string", "format": "date"},
                "since": {"type": "string", "format": "date-time"}
            }
        })
    }

    async fn check(&self, _ctx: &ConnectorContext, _settings: &Value) -> Result<(), Error> {
        Ok(())
    }

    async fn collect_page(
        &self,
        _ctx: &ConnectorContext,
        settings: &Value,
        _checkpoint: Option<&Value>,
    ) -> Result<Page, Error> {
        Ok(Page::only(vec![settings.clone()]))
    }
}

/// 2026-11-29T23:30:00Z: already Monday 2026-11-30 in Berlin.
const NOW: i64 = 1_795_995_000_000;

async fn start() -> TestApp {
    TestApp::builder()
        .clock(ManualClock::new(NOW))
        .connectors(ConnectorRegistry::with(vec![Arc::new(DatedSource)]))
        .config(|config| config.timezone = "Europe/Berlin".to_owned())
        .start()
        .await
}

#[tokio::test]
async fn relative_dates_are_stored_resolved_in_the_configured_zone() {
    let app = start().await;
    let id = app
        .create_job(&json!({
            "sources": [{"connector": "dated", "settings": {
                "start_date": "4 days back", "since": "Yesterday 00:00"}}],
            // Whatever a client claims here is replaced by what was resolved.
            "resolved_dates": [{"source": 0, "setting": "start_date", "phrase": "x", "value": "y"}]
        }))
        .await;
    let job = app.job(&id).await;
    assert_eq!(
        job["spec"]["sources"][0]["settings"],
        json!({"start_date": "2026-11-26", "since": "2026-11-29T00:00:00+01:00"})
    );
    assert_eq!(
        job["spec"]["resolved_dates"],
        json!([
            {"source": 0, "setting": "since", "phrase": "Yesterday 00:00",
             "value": "2026-11-29T00:00:00+01:00"},
            {"source": 0, "setting": "start_date", "phrase": "4 days back", "value": "2026-11-26"}
        ])
    );
    app.wait_for_status(&id, &["succeeded"], Duration::from_secs(10))
        .await;
    assert_eq!(
        app.records(&id).await,
        [json!({"start_date": "2026-11-26", "since": "2026-11-29T00:00:00+01:00"})]
    );
}

#[tokio::test]
async fn an_unreadable_date_is_a_422_naming_the_setting() {
    let app = start().await;
    for phrase in ["garbage", "every day"] {
        let answer = app
            .post(
                "/v1/jobs",
                &json!({"sources": [
                    {"connector": "dated", "settings": {"start_date": "today"}},
                    {"connector": "dated", "settings": {"start_date": phrase}}
                ]}),
            )
            .await;
        let problem = assert_problem(&answer, 422);
        let detail = detail(&problem);
        assert!(
            detail.starts_with(&format!(
                "sources[1].settings.start_date: cannot read {phrase:?} as a date"
            )),
            "{detail}"
        );
        assert!(detail.contains("4 days back"), "{detail}");
    }
    assert_eq!(crate::support::harness::job_count(&app).await, 0);
}

#[tokio::test]
async fn a_schedule_keeps_the_phrase_to_resolve_at_each_run() {
    let app = start().await;
    let answer = app
        .post(
            "/v1/schedules",
            &json!({"name": "dated", "cron": "0 0 1 1 *", "paused": true, "job": {
                "sources": [{"connector": "dated", "settings": {"start_date": "yesterday"}}]}}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let schedule = answer.json();
    assert_eq!(
        schedule["job"]["sources"][0]["settings"],
        json!({"start_date": "yesterday"})
    );
    assert!(
        schedule["job"].get("resolved_dates").is_none(),
        "{schedule}"
    );
    let refused = app
        .post(
            "/v1/schedules",
            &json!({"name": "broken", "cron": "0 0 1 1 *", "job": {
                "sources": [{"connector": "dated", "settings": {"start_date": "garbage"}}]}}),
        )
        .await;
    let problem = assert_problem(&refused, 422);
    assert!(detail(&problem).contains("start_date"), "{problem}");
}
