//! Collection with callbacks, end to end: many datahog jobs against flaky providers and a
//! flaky receiver, each ending in exactly one successful, signed callback that carries every
//! provider's exact data.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::harness::TestApp;
use crate::support::providers::{GAS, INTERNET, MockProviders, ProvidersConfig};
use crate::support::receiver::{CallbackReceiver, ReceiverConfig};

/// A valid Standard Webhooks secret (32 bytes of key).
const SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const JOBS: usize = 200;

fn fast_callbacks(config: &mut gleaner::config::Config, providers: &MockProviders) {
    config.datahog.base_url = providers.base_url().parse().expect("base url");
    config.sinks.callback.secret = Some(SECRET.into());
    config.sinks.callback.schedule = ["0ms", "20ms", "50ms", "100ms", "200ms", "400ms", "800ms"]
        .iter()
        .map(|text| gleaner::config::duration::parse(text).expect("duration"))
        .collect();
    config.engine.max_attempts = 1000;
}

/// The bills of `provider` exactly as the mock serves them.
fn bills(provider: &str) -> Value {
    let raw = match provider {
        "gas" => GAS,
        "internet" => INTERNET,
        other => panic!("no bills for {other}"),
    };
    serde_json::from_str(raw).expect("bills")
}

/// Asserts that a callback body carries both providers, succeeded, with their exact data.
#[track_caller]
fn assert_complete(body: &Value) {
    let data = &body["data"];
    assert_eq!(data["status"], "succeeded", "{body}");
    assert_eq!(body["type"], "job.succeeded", "{body}");
    let sources = data["sources"].as_array().expect("sources");
    let by_name: BTreeMap<&str, &Value> = sources
        .iter()
        .map(|source| (source["name"].as_str().expect("name"), source))
        .collect();
    assert_eq!(
        by_name.keys().copied().collect::<Vec<_>>(),
        ["gas", "internet"],
        "{body}"
    );
    for (name, source) in by_name {
        assert_eq!(source["status"], "succeeded", "{body}");
        assert_eq!(source["data"], bills(name), "{name} in {body}");
        assert_eq!(source["error"], Value::Null, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_gets_one_signed_callback_with_all_its_data() {
    let providers = MockProviders::start(ProvidersConfig::seed_like(41)).await;
    let receiver = CallbackReceiver::start(ReceiverConfig {
        seed: 43,
        failure_rate: 0.2,
        ..ReceiverConfig::default()
    })
    .await;
    receiver.set_secret(SECRET);
    let app = TestApp::builder()
        .config(|config| fast_callbacks(config, &providers))
        .start()
        .await;

    let mut ids = Vec::with_capacity(JOBS);
    for n in 0..JOBS {
        let answer = app
            .send(app.request(Method::POST, "/webhook").json(&json!({
                "provider": ["gas", "internet"],
                "callbackUrl": receiver.url(&format!("/hooks/{n}")),
            })))
            .await;
        assert_eq!(answer.status.as_u16(), 202, "{}", answer.text);
        let job = answer.json();
        assert_eq!(job["status"], "queued", "{job}");
        assert_eq!(job["processing"], json!(["gas", "internet"]), "{job}");
        ids.push(job["id"].as_str().expect("id").to_owned());
    }

    for id in &ids {
        let job = app
            .wait_for_status(id, &["succeeded"], Duration::from_secs(60))
            .await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    receiver
        .wait_successful(JOBS, Duration::from_secs(30))
        .await;

    let deliveries = receiver.deliveries();
    let by_id = receiver.by_webhook_id();
    assert_eq!(by_id.len(), JOBS, "one webhook-id per job");
    for delivery in &deliveries {
        assert!(delivery.signature_ok(), "signature of {:?}", delivery.path);
        // Even a delivery the receiver failed carried everything: no partial callbacks.
        assert_complete(&delivery.json());
    }
    let mut redelivered = 0;
    for (webhook_id, attempts) in &by_id {
        let successes = attempts.iter().filter(|d| d.is_success()).count();
        assert_eq!(
            successes, 1,
            "{webhook_id}: {successes} successful deliveries"
        );
        // A webhook-id is sent again only after the receiver failed it.
        let last = attempts.last().expect("an attempt");
        assert!(last.is_success(), "{webhook_id} ends with a failure");
        assert!(
            attempts[..attempts.len() - 1]
                .iter()
                .all(|d| !d.is_success()),
            "{webhook_id} was re-sent after a success"
        );
        redelivered += attempts.len() - 1;
        let paths: Vec<_> = attempts.iter().map(|d| d.path.as_str()).collect();
        assert!(paths.windows(2).all(|w| w[0] == w[1]), "{paths:?}");
    }
    let failed_by_receiver = deliveries.iter().filter(|d| !d.is_success()).count();
    assert_eq!(redelivered, failed_by_receiver);
    assert!(
        failed_by_receiver > 0,
        "the receiver's failures were exercised"
    );

    // Each provider of a job is fetched until it succeeds, and never again after that.
    let gas = providers.counts("gas");
    let internet = providers.counts("internet");
    assert_eq!(gas.successes, JOBS as u64, "{gas:?}");
    assert_eq!(internet.successes, JOBS as u64, "{internet:?}");
    assert!(gas.failures > 0 && internet.failures > 0);

    // The job's own view: both sources succeeded, the delivery's answer is logged.
    let job = app.job(&ids[0]).await;
    let steps = job["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3, "{job}");
    let deliver_step = steps
        .iter()
        .find(|s| s["kind"] == "deliver")
        .expect("deliver");
    let logged: Vec<&Value> = job["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter(|a| a["step_id"] == deliver_step["id"])
        .collect();
    let last = logged.last().expect("a delivery attempt");
    assert_eq!(last["outcome"], "succeeded", "{job}");
    assert_eq!(last["http_status"], 200, "{job}");
    assert_eq!(last["response"], "ok", "{job}");
    println!(
        "callbacks e2e: {JOBS} jobs, provider calls gas {} / internet {} (failures {} / {}), \
         deliveries {}, receiver failures {failed_by_receiver}",
        gas.calls,
        internet.calls,
        gas.failures,
        internet.failures,
        deliveries.len()
    );
}

#[tokio::test]
async fn a_generated_secret_is_shown_once_and_signs_the_callback() {
    let providers = MockProviders::start(ProvidersConfig::default()).await;
    let receiver = CallbackReceiver::start(ReceiverConfig::default()).await;
    let app = TestApp::builder()
        .config(|config| {
            fast_callbacks(config, &providers);
            config.sinks.callback.secret = None;
        })
        .start()
        .await;
    let spec = json!({
        "sources": [{"connector": "datahog-provider", "settings": {"id": "gas"}}],
        "sinks": [{"type": "callback", "url": receiver.url("/native")}],
    });
    let (status, job) = app.post_job(&spec).await;
    assert_eq!(status.as_u16(), 202, "{job}");
    let secret = job["signing_secrets"][0]["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no generated secret in {job}"))
        .to_owned();
    assert_eq!(job["signing_secrets"][0]["sink"], 0);
    assert!(secret.starts_with("whsec_"));
    let id = job["id"].as_str().expect("id").to_owned();
    receiver.set_secret(&secret);

    app.wait_for_status(&id, &["succeeded"], Duration::from_secs(20))
        .await;
    receiver.wait_successful(1, Duration::from_secs(10)).await;
    let delivery = &receiver.successful()[0];
    assert!(delivery.signature_ok());
    let body = delivery.json();
    assert_eq!(body["data"]["id"], id.as_str());
    assert_eq!(body["data"]["sources"][0]["data"], bills("gas"));

    // Never shown again: the job's view redacts it.
    let shown = app.job(&id).await;
    assert!(shown.get("signing_secrets").is_none(), "{shown}");
    assert_eq!(shown["spec"]["sinks"][0]["secret"], "********", "{shown}");
    assert!(!shown.to_string().contains(&secret));
}

#[tokio::test]
async fn a_provider_with_no_bills_completes_with_empty_data() {
    // The seed never completed a request whose provider answered `[]`.
    let providers = MockProviders::start(ProvidersConfig::default().provider("water", "[]")).await;
    let receiver = CallbackReceiver::start(ReceiverConfig::default()).await;
    receiver.set_secret(SECRET);
    let app = TestApp::builder()
        .config(|config| {
            fast_callbacks(config, &providers);
            config.datahog.providers = vec!["gas".into(), "water".into()];
        })
        .start()
        .await;
    let answer = app
        .send(app.request(Method::POST, "/webhook").json(&json!({
            "provider": ["water", "gas"],
            "callbackUrl": receiver.url("/empty"),
        })))
        .await;
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.text);
    let id = answer.json()["id"].as_str().expect("id").to_owned();
    app.wait_for_status(&id, &["succeeded"], Duration::from_secs(20))
        .await;
    receiver.wait_successful(1, Duration::from_secs(10)).await;
    let body = receiver.successful()[0].json();
    let sources = body["data"]["sources"].as_array().expect("sources");
    assert_eq!(sources[0]["name"], "water");
    assert_eq!(sources[0]["data"], json!([]));
    assert_eq!(sources[0]["status"], "succeeded");
    assert_eq!(sources[1]["data"], bills("gas"));
}
