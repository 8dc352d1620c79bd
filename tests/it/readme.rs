//! The README's examples, run as written against the test suite's mocks.

use std::time::{Duration, Instant};

use gleaner::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::databox::MockDatabox;
use crate::support::harness::TestApp;
use crate::support::stackexchange::MockStackExchange;

/// The JSON block that follows `<!-- readme:{name} -->` in the README.
fn readme_block(name: &str) -> Value {
    let readme = include_str!("../../README.md");
    let marker = format!("<!-- readme:{name} -->");
    let after = &readme[readme.find(&marker).expect("marker in README") + marker.len()..];
    let start = after.find("```json\n").expect("json block") + "```json\n".len();
    let end = start + after[start..].find("```").expect("end of block");
    serde_json::from_str(&after[start..end]).expect("the README's JSON parses")
}

#[tokio::test]
async fn the_rust_schedule_example_works() {
    let stackexchange = MockStackExchange::start(&[("rust", 41_234)]).await;
    let databox = MockDatabox::start().await;
    // 2026-01-01T00:00:30Z
    let clock = ManualClock::new(1_767_225_630_000);
    let app = TestApp::builder()
        .clock(clock.clone())
        .config(|config| {
            config.stackoverflow.base_url = stackexchange.base_url().parse().expect("url");
            config.sinks.databox.base_url = databox.base_url();
            config.sinks.databox.token = Some("readme-token".into());
        })
        .start()
        .await;
    let answer = app
        .post("/v1/schedules", &readme_block("schedule-rust"))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    for minute in 1..=2usize {
        clock.advance(Duration::from_secs(60));
        let started = Instant::now();
        while databox.pushes().len() < minute {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no push {minute}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let pushes = databox.pushes();
    assert_eq!(pushes.len(), 2);
    let data = pushes[1].data();
    assert_eq!(data[0]["$RustQuestionCount"], 41_234, "{data:?}");
    // The collection time (the manual clock jumped straight to 00:02:30).
    assert_eq!(data[0]["date"], "2026-01-01T00:02:30Z");
    let schedule = app.get("/v1/schedules/rust-questions").await.json();
    assert_eq!(
        schedule["ticks"].as_array().map(Vec::len),
        Some(2),
        "{schedule:#}"
    );
}

/// The README's TOML block after `<!-- readme:{name} -->`, loaded as `gleaner.toml`.
fn readme_config(name: &str) -> gleaner::config::Config {
    let readme = include_str!("../../README.md");
    let marker = format!("<!-- readme:{name} -->");
    let after = &readme[readme.find(&marker).expect("marker in README") + marker.len()..];
    let start = after.find("```toml\n").expect("toml block") + "```toml\n".len();
    let end = start + after[start..].find("```").expect("end of block");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gleaner.toml");
    std::fs::write(&file, &after[start..end]).expect("write");
    gleaner::config::Config::load(Some(&file), &Default::default())
        .unwrap_or_else(|error| panic!("the README's {name} loads: {error}"))
}

/// The README's `[[platform]]` example loads and passes validation.
#[test]
fn the_platform_example_is_valid_configuration() {
    let config = readme_config("platform-toml");
    assert_eq!(config.platform.len(), 1);
    config.platform[0]
        .validate(&gleaner::connectors::ConnectorRegistry::builtin(&config))
        .expect("the README's platform is valid");
}

/// The README's `[[pipeline]]` example loads as configuration and passes validation.
#[test]
fn the_pipeline_example_is_valid_configuration() {
    let config = readme_config("pipeline-toml");
    assert_eq!(config.pipeline.len(), 1);
    let spec = &config.pipeline[0];
    assert_eq!((spec.processors.len(), spec.sinks.len()), (1, 2));
    gleaner::pipelines::accept::validate(
        spec,
        &gleaner::connectors::ConnectorRegistry::builtin(&config),
    )
    .expect("the README's pipeline is valid");
}
