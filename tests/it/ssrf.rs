//! The outgoing request guard seen through the API: without an allow-list, no form of a
//! loopback, private, link-local or otherwise special address is reached, literal, resolved or
//! redirected to.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Mock, Reply, TestApp};

async fn check(app: &TestApp, url: &str) -> Value {
    let answer = app
        .post("/v1/connectors/http/check", &json!({"url": url}))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{url}: {}", answer.text);
    answer.json()
}

/// Asserts a refusal by the guard (not, say, a connection refused by the network).
#[track_caller]
fn assert_refused(url: &str, result: &Value) {
    assert_eq!(result["ok"], false, "{url}: {result}");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("request refused:")
            && (error.contains("range") || error.contains("refused addresses")),
        "{url}: refused by the guard, got {result}"
    );
    assert_eq!(result["retryable"], false, "{url}: {result}");
    assert!(result["http_status"].is_null(), "{url}: {result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_addresses_in_every_form_are_refused_without_an_allow_list() {
    let mock = Mock::start().await;
    mock.set_json("/", json!([{"leaked": true}]));
    let app = TestApp::builder()
        .config(|config| config.net.allow.clear())
        .without_engine()
        .start()
        .await;
    let port = mock.port();

    let forms = [
        format!("http://127.0.0.1:{port}/"),
        format!("HTTP://127.0.0.1:{port}/"),
        format!("http://user:pw@127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://127.000.000.001:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::ffff:7f00:1]:{port}/"),
        format!("http://[::127.0.0.1]:{port}/"),
        format!("http://[64:ff9b::7f00:1]:{port}/"),
        format!("http://[2002:7f00:1::]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        format!("http://[::]:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://172.16.0.1/".to_owned(),
        "http://192.168.0.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "http://[fc00::1]/".to_owned(),
        "http://224.0.0.1/".to_owned(),
        "http://198.18.0.1/".to_owned(),
        "http://255.255.255.255/".to_owned(),
        "http://[ff02::1]/".to_owned(),
    ];
    for url in &forms {
        let result = check(&app, url).await;
        assert_refused(url, &result);
    }
    assert!(forms.len() >= 20);
    assert!(
        mock.requests().is_empty(),
        "the mock was reached: {:?}",
        mock.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_against_refused_addresses_fail_without_reaching_them() {
    let mock = Mock::start().await;
    mock.set_json("/", json!([{"leaked": true}]));
    let app = TestApp::builder()
        .config(|config| config.net.allow.clear())
        .start()
        .await;

    let id = app
        .create_job(&json!({"sources": [{"connector": "http",
                                          "settings": {"url": format!("http://127.1:{}/", mock.port())}}]}))
        .await;
    let job = app
        .wait_for_status(&id, &["failed"], std::time::Duration::from_secs(10))
        .await;
    let step = &job["steps"][0];
    assert_eq!(step["state"], "failed", "refusals are not retried: {job:#}");
    assert_eq!(step["attempts"], 1, "{job:#}");
    let attempt = &job["attempts"][0];
    assert_eq!(attempt["error_kind"], "refused", "{job:#}");
    assert!(mock.requests().is_empty(), "the mock was reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_listed_loopback_is_reached_but_redirects_to_private_addresses_are_not() {
    let mock = Mock::start().await;
    mock.set_json("/items", json!([{"id": 1}]));
    mock.set("/hop", Reply::redirect("http://10.0.0.1/"));
    mock.set("/hop-loopback", Reply::redirect("http://[::1]/"));
    mock.set(
        "/hop-metadata",
        Reply::redirect("http://169.254.169.254/latest/meta-data/"),
    );
    let app = TestApp::builder().without_engine().start().await;

    let url = mock.url("/items");
    let result = check(&app, &url).await;
    assert_eq!(result["ok"], true, "{url}: {result}");
    assert_eq!(mock.count("/items"), 1);

    for path in ["/hop", "/hop-loopback", "/hop-metadata"] {
        let url = mock.url(path);
        let result = check(&app, &url).await;
        assert_refused(&url, &result);
        assert!(
            result["error"]
                .as_str()
                .is_some_and(|error| error.contains("redirect")),
            "{url}: {result}"
        );
        assert_eq!(mock.count(path), 1, "the allowed first hop was requested");
    }

    // The allow-list is exact: another loopback address stays refused.
    let other = format!("http://127.0.0.2:{}/items", mock.port());
    let result = check(&app, &other).await;
    assert_refused(&other, &result);
}
