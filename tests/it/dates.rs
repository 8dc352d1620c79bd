//! Relative dates in connector settings: resolved when a job is created, in the configured
//! time zone (a schedule's runs: as of their tick, in the schedule's zone), stored resolved with
//! the phrase beside it; unreadable ones refused by name.

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

#[tokio::test]
async fn scheduled_runs_resolve_dates_as_of_their_tick_in_the_schedules_zone() {
    let clock = ManualClock::new(NOW);
    let app = TestApp::builder()
        .clock(clock.clone())
        .connectors(ConnectorRegistry::with(vec![Arc::new(DatedSource)]))
        .config(|config| config.timezone = "Europe/Berlin".to_owned())
        .start()
        .await;
    // 19:00 in New York is midnight UTC and already 01:00 the next day in Berlin.
    let created = app
        .post(
            "/v1/schedules",
            &json!({"name": "ny", "cron": "0 19 * * *", "timezone": "America/New_York",
                    "catch_up": "all",
                    "job": {"sources": [{"connector": "dated", "settings": {"start_date": "today"}}]}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let local = app
        .post(
            "/v1/schedules",
            &json!({"name": "local", "cron": "0 19 * * *", "paused": true,
                    "job": {"sources": [{"connector": "dated", "settings": {"start_date": "today"}}]}}),
        )
        .await;
    assert_eq!(local.status, 201, "{}", local.text);
    assert_eq!(
        local.json()["timezone"],
        "Europe/Berlin",
        "no zone: the configured one"
    );

    // 30 s after the 2026-11-30 19:00 tick (New York): the 2026-11-29 one was missed (the clock
    // jumped over it) and is caught up. Each run reads "today" at its own tick in New York,
    // while in Berlin, the configured zone, it is already 2026-12-01.
    clock.advance(Duration::from_secs(86_400 + 1_830));
    let started = std::time::Instant::now();
    let mut dates = loop {
        let answer = app.get("/v1/jobs?status=succeeded").await;
        let jobs = answer.json()["jobs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if jobs.len() >= 2 {
            let mut dates = Vec::new();
            for job in &jobs {
                let id = job["id"].as_str().expect("id");
                let job = app.job(id).await;
                dates.push(job["spec"]["sources"][0]["settings"]["start_date"].clone());
            }
            break dates;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "two runs expected: {}",
            answer.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    dates.sort_by_key(Value::to_string);
    assert_eq!(dates, [json!("2026-11-29"), json!("2026-11-30")]);
}
