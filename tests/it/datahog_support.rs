//! Self-tests of the datahog test doubles: the mock provider API (seed contract 4.2) and the
//! recording callback receiver, so the end-to-end tests can trust what they report.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use gleaner::clock::{Clock, ManualClock, Millis, SystemClock};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use sha2::Sha256;

use crate::support::harness::client;
use crate::support::outage::{TimeSource, manual};
use crate::support::providers::{
    Counts, FAIL_BODY, GAS, INTERNET, MockProviders, ProvidersConfig, Scope,
};
use crate::support::receiver::{CallbackReceiver, DownMode, ReceiverConfig, Scripted, Signature};

const HOUR: Millis = 3_600_000;
const WAIT: Duration = Duration::from_secs(5);

/// `(status, content type, body)` of `GET url`.
async fn get(http: &reqwest::Client, url: &str) -> (u16, Option<String>, String) {
    let response = http.get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().expect("content type").to_owned());
    (status, content_type, response.text().await.expect("body"))
}

#[tokio::test]
async fn mock_providers_serve_the_seed_bytes() {
    let http = client();
    let providers = MockProviders::start(ProvidersConfig::default()).await;
    let json = Some("application/json; charset=utf-8".to_owned());

    assert_eq!(
        get(&http, &providers.url("gas")).await,
        (200, json.clone(), GAS.to_owned())
    );
    assert_eq!(
        GAS,
        r#"[{"billedOn":"2020-04-07T15:03:14.257Z","amount":22.27},{"billedOn":"2020-05-07T15:03:14.257Z","amount":30}]"#
    );
    let internet = format!("{}/providers/internet/?since=x", providers.base_url());
    assert_eq!(
        get(&http, &internet).await,
        (200, json, INTERNET.to_owned())
    );
    assert_eq!(
        INTERNET,
        r#"[{"billedOn":"2020-02-07T15:03:14.257Z","amount":15.12},{"billedOn":"2020-03-07T15:03:14.257Z","amount":15.12}]"#
    );
    for unknown in ["water", "GAS"] {
        let (status, _, body) = get(&http, &providers.url(unknown)).await;
        assert_eq!((status, body.as_str()), (404, ""), "{unknown}");
    }

    providers.set_provider("empty", "[]");
    assert_eq!(get(&http, &providers.url("empty")).await.2, "[]");
    providers.remove_provider("empty");
    assert_eq!(get(&http, &providers.url("empty")).await.0, 404);
    assert_eq!(
        providers.counts("gas"),
        Counts {
            calls: 1,
            successes: 1,
            ..Counts::default()
        }
    );
    assert_eq!(providers.counts("GAS").not_found, 1);
    let total = providers.total();
    assert_eq!((total.calls, total.successes, total.not_found), (6, 3, 3));
}

/// The statuses of `calls` sequential calls alternating between gas and internet.
async fn statuses(providers: &MockProviders, calls: usize) -> Vec<u16> {
    let http = client();
    let mut statuses = Vec::with_capacity(calls);
    for call in 0..calls {
        let id = if call % 2 == 0 { "gas" } else { "internet" };
        let (status, content_type, body) = get(&http, &providers.url(id)).await;
        match status {
            200 => assert_eq!(body, if id == "gas" { GAS } else { INTERNET }),
            500 => {
                assert_eq!(content_type.as_deref(), Some("text/plain"));
                assert_eq!(body, FAIL_BODY);
            }
            other => panic!("unexpected status {other}"),
        }
        statuses.push(status);
    }
    statuses
}

#[tokio::test]
async fn mock_providers_fail_about_half_the_calls_with_a_fixed_seed() {
    let providers = MockProviders::start(ProvidersConfig::seed_like(42)).await;
    let first = statuses(&providers, 400).await;

    let failures = first.iter().filter(|&&status| status == 500).count();
    assert!(
        (160..=240).contains(&failures),
        "{failures} failures of 400"
    );
    let total = providers.total();
    assert_eq!((total.calls, total.failures), (400, failures as u64));
    assert_eq!(total.successes, 400 - failures as u64);
    let gas = providers.counts("gas");
    assert_eq!(gas.calls, 200);
    assert_eq!(gas.successes + gas.failures, 200);
    assert!(providers.calls().iter().all(|call| !call.during_outage));

    let again = MockProviders::start(ProvidersConfig::seed_like(42)).await;
    assert_eq!(
        statuses(&again, 400).await,
        first,
        "same seed, same answers"
    );
}

#[tokio::test]
async fn mock_providers_follow_outage_windows_on_the_test_clock() {
    let http = client();
    let clock = ManualClock::new(SystemClock.now());
    let start = clock.now();
    let config = ProvidersConfig {
        time: manual(&clock),
        ..ProvidersConfig::default()
    };
    let providers = MockProviders::start(config.provider("empty", "[]")).await;
    providers.add_outage("gas", start + HOUR, start + 2 * HOUR);
    providers.add_outage(Scope::All, start + 5 * HOUR, start + 30 * HOUR);
    let status = |id: &'static str| {
        let url = providers.url(id);
        let http = http.clone();
        async move { get(&http, &url).await.0 }
    };

    assert_eq!(status("gas").await, 200);
    clock.advance(Duration::from_secs(90 * 60));
    assert_eq!(status("gas").await, 500, "gas is down for its hour");
    assert_eq!(status("internet").await, 200, "internet is not");
    clock.set(start + 2 * HOUR);
    assert_eq!(status("gas").await, 200, "the window's end is exclusive");

    clock.set(start + 5 * HOUR);
    for id in ["gas", "internet", "empty"] {
        assert_eq!(status(id).await, 500, "{id} is down with all the others");
    }
    clock.set(start + 30 * HOUR);
    assert_eq!(status("empty").await, 200);

    providers.set_down("internet", true);
    assert_eq!(status("internet").await, 500, "switched down");
    assert_eq!(status("gas").await, 200);
    providers.set_down("internet", false);
    assert_eq!(status("internet").await, 200, "switched back up");

    let outage_calls: Vec<(String, Millis)> = providers
        .calls()
        .into_iter()
        .filter(|call| call.during_outage)
        .map(|call| (call.provider, call.at - start))
        .collect();
    let down_at = |id: &str, hours: Millis| (id.to_owned(), hours);
    assert_eq!(
        outage_calls,
        [
            down_at("gas", 90 * 60_000),
            down_at("gas", 5 * HOUR),
            down_at("internet", 5 * HOUR),
            down_at("empty", 5 * HOUR),
            down_at("internet", 30 * HOUR),
        ]
    );
    assert_eq!(providers.counts("gas").failures, 2);

    providers.set_down(Scope::All, true);
    providers.add_outage("gas", start, start + 100 * HOUR);
    assert_eq!(status("gas").await, 500);
    providers.clear_outages();
    assert_eq!(status("gas").await, 200, "switches and windows forgotten");
    providers.set_failure_rate(1.0);
    assert_eq!(status("gas").await, 500, "every call fails");
    assert!(!providers.calls().last().expect("a call").during_outage);
}

const SECRET_KEY: &[u8] = b"gleaner datahog test signing key";

fn secret() -> String {
    format!("whsec_{}", BASE64.encode(SECRET_KEY))
}

/// Standard Webhooks signing, written independently of the crate under test.
fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// POSTs `body` to `url` with Standard Webhooks headers; the status, or `None` if dropped.
async fn post_signed(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    timestamp: i64,
    signature: &str,
    body: &str,
) -> Option<u16> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
        .send()
        .await;
    response.ok().map(|response| response.status().as_u16())
}

#[tokio::test]
async fn receiver_verifies_signatures_with_the_standardwebhooks_crate() {
    let http = client();
    let receiver = CallbackReceiver::start(ReceiverConfig::default()).await;
    let url = receiver.url("/hook");
    let body = r#"{"id":"job-1","status":"succeeded"}"#;
    let now = SystemClock.now() / 1000;

    let unchecked = post_signed(&http, &url, "msg_0", now, "v1,AAAA", body).await;
    assert_eq!(unchecked, Some(200));
    receiver.set_secret(&secret());
    let good = sign(&secret(), "msg_1", now, body);
    assert_eq!(
        post_signed(&http, &url, "msg_1", now, &good, body).await,
        Some(200)
    );
    let other_key = format!(
        "whsec_{}",
        BASE64.encode(b"some other key of the same size!")
    );
    let forged = sign(&other_key, "msg_2", now, body);
    post_signed(&http, &url, "msg_2", now, &forged, body).await;
    let tampered = sign(&secret(), "msg_3", now, body);
    post_signed(&http, &url, "msg_3", now, &tampered, r#"{"id":"job-2"}"#).await;
    let rotated = format!("{forged} {}", sign(&secret(), "msg_4", now, body));
    post_signed(&http, &url, "msg_4", now, &rotated, body).await;

    let signatures: Vec<Signature> = receiver
        .deliveries()
        .into_iter()
        .map(|delivery| delivery.signature)
        .collect();
    let invalid = Signature::Invalid("signature invalid".into());
    assert_eq!(
        signatures,
        [
            Signature::Unchecked,
            Signature::Verified,
            invalid.clone(),
            invalid,
            Signature::Verified,
        ]
    );
    let delivery = &receiver.deliveries()[1];
    assert_eq!(
        (delivery.path.as_str(), delivery.webhook_id()),
        ("/hook", Some("msg_1"))
    );
    assert_eq!(&delivery.body[..], body.as_bytes());
    assert_eq!(delivery.json()["status"], "succeeded");
}

#[tokio::test]
async fn receiver_checks_timestamps_against_the_test_clock() {
    let http = client();
    let clock = ManualClock::new(SystemClock.now());
    clock.advance(Duration::from_secs(3 * 3600));
    let time: TimeSource = manual(&clock);
    let config = ReceiverConfig {
        time,
        ..ReceiverConfig::default()
    };
    let receiver = CallbackReceiver::start(config).await;
    receiver.set_secret_for("/job-7", &secret());
    let url = receiver.url("/job-7");
    let body = "{}";
    let simulated = clock.now() / 1000;
    let wall = SystemClock.now() / 1000;

    for (id, timestamp) in [("msg_sim", simulated), ("msg_wall", wall)] {
        let signature = sign(&secret(), id, timestamp, body);
        post_signed(&http, &url, id, timestamp, &signature, body).await;
    }
    let signed_late = sign(&secret(), "msg_late", simulated + 600, body);
    post_signed(&http, &url, "msg_late", simulated + 600, &signed_late, body).await;

    let deliveries = receiver.deliveries();
    assert_eq!(deliveries[0].signature, Signature::VerifiedOnTestClock);
    assert_eq!(deliveries[1].signature, Signature::Verified);
    assert!(
        matches!(&deliveries[2].signature, Signature::Invalid(why) if why.contains("timestamp"))
    );
    assert!(
        deliveries[..2]
            .iter()
            .all(|delivery| delivery.signature_ok())
    );
    assert!(deliveries.iter().all(|delivery| delivery.at == clock.now()));
}

#[tokio::test]
async fn receiver_plays_scripted_answers_and_counts_duplicate_successes() {
    let http = client();
    let receiver = CallbackReceiver::start(ReceiverConfig::default()).await;
    receiver.push_for("/gone", Scripted::status(410));
    receiver.push(Scripted::status(503).header("retry-after", "120"));
    let post = |path: &str, id: &str| {
        let request = http
            .post(receiver.url(path))
            .header("webhook-id", id)
            .body("{}");
        async move { request.send().await.expect("POST") }
    };

    let gone = post("/gone", "msg_a").await;
    assert_eq!(
        gone.status(),
        StatusCode::GONE,
        "the path's answer comes first"
    );
    let unavailable = post("/hook", "msg_b").await;
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unavailable.headers()["retry-after"], "120");
    for id in ["msg_b", "msg_c", "msg_c", "msg_c"] {
        assert_eq!(post("/hook", id).await.status(), StatusCode::OK);
    }

    let not_a_post = http.get(receiver.url("/hook")).send().await.expect("GET");
    assert_eq!(not_a_post.status(), StatusCode::METHOD_NOT_ALLOWED);

    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 7);
    assert_eq!(deliveries[6].method, reqwest::Method::GET);
    assert_eq!(receiver.successful().len(), 4);
    assert_eq!(receiver.deliveries_to("/gone")[0].status, Some(410));
    let groups = receiver.by_webhook_id();
    assert_eq!(groups["msg_b"].len(), 2);
    assert_eq!(receiver.duplicated_ids(), ["msg_c"], "msg_b failed once");
    assert_eq!(receiver.duplicate_successes(), 2);
    receiver.wait_successful(4, WAIT).await;
}

#[tokio::test]
async fn receiver_goes_down_by_switch_window_or_dropped_connection() {
    let http = client();
    let clock = ManualClock::new(SystemClock.now());
    let start = clock.now();
    let config = ReceiverConfig {
        time: manual(&clock),
        ..ReceiverConfig::default()
    };
    let receiver = CallbackReceiver::start(config).await;
    receiver.add_down_window(start + HOUR, start + 4 * HOUR);
    let url = receiver.url("/hook");
    let post = || post_signed(&http, &url, "msg", 0, "v1,x", "{}");

    assert_eq!(post().await, Some(200));
    clock.set(start + HOUR);
    assert_eq!(post().await, Some(503), "in the window");
    clock.set(start + 4 * HOUR);
    assert_eq!(post().await, Some(200), "after the window");

    receiver.set_down(true);
    assert_eq!(post().await, Some(503), "switched down");
    receiver.set_down_mode(DownMode::Drop);
    assert_eq!(post().await, None, "connection dropped");
    receiver.set_down(false);
    assert_eq!(post().await, Some(200), "back up on a new connection");

    let answered: Vec<Option<u16>> = receiver
        .deliveries()
        .iter()
        .map(|delivery| delivery.status)
        .collect();
    let expected = [200, 503, 200, 503].map(Some).into_iter();
    assert_eq!(
        answered,
        expected.chain([None, Some(200)]).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn receiver_fails_about_half_with_a_fixed_seed() {
    let http = client();
    let config = ReceiverConfig {
        seed: 5,
        failure_rate: 0.5,
        ..ReceiverConfig::default()
    };
    let receiver = CallbackReceiver::start(config).await;
    let url = receiver.url("/hook");
    for call in 0..200 {
        let id = format!("msg_{call}");
        post_signed(&http, &url, &id, 0, "v1,x", "{}").await;
    }
    let failures = receiver
        .deliveries()
        .iter()
        .filter(|delivery| delivery.status == Some(500))
        .count();
    assert!((70..=130).contains(&failures), "{failures} failures of 200");
    assert_eq!(receiver.successful().len(), 200 - failures);
    assert_eq!(receiver.duplicate_successes(), 0);

    receiver.set_failure_rate(0.0);
    post_signed(&http, &url, "msg_last", 0, "v1,x", "{}").await;
    assert_eq!(receiver.successful().len(), 201 - failures);
}
