//! One HTTP call per message, shared by the `http` processor and the `http` sink: the record
//! POSTed as JSON, success only on the call's one status.
//!
//! Invariant: every failure keeps the shared retry classification of [`UpstreamError`]
//! (408/425/429/5xx and network errors retry, `Retry-After` honoured); nothing else decides.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use super::StageError;
use super::spec::HttpCall;
use crate::connectors::http::urls::parse_http_url;
use crate::net::{CappedResponse, HttpClientFactory, RESERVED_HEADERS};

/// Checks what a spec's schema cannot: an absolute http(s) URL and valid, unreserved headers.
pub fn validate_call(call: &HttpCall) -> Result<(), String> {
    parse_http_url(&call.url).map_err(|error| format!("url: {error}"))?;
    if let Some(status) = call.success_status
        && !(100..=599).contains(&status)
    {
        return Err(format!("success_status: {status} is not an HTTP status"));
    }
    for (name, value) in &call.headers {
        header(name, value)?;
    }
    Ok(())
}

/// A header of the call, checked.
fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("headers: invalid header name {name:?}"))?;
    if RESERVED_HEADERS.contains(&parsed.as_str()) {
        return Err(format!("headers: {name:?} may not be set"));
    }
    let value =
        HeaderValue::from_str(value).map_err(|_| format!("headers: invalid value for {name:?}"))?;
    Ok((parsed, value))
}

/// POSTs `record` and returns the response, which had the call's success status
/// (`call.success_status`, else `default_status`). For a caller that ignores the body.
pub async fn send_record(
    http: &HttpClientFactory,
    call: &HttpCall,
    record: &Value,
    default_status: u16,
    timeout: Duration,
) -> Result<CappedResponse, StageError> {
    let url: Url = parse_http_url(&call.url).map_err(StageError::permanent)?;
    let mut request = http
        .request(Method::POST, url)
        .header(ACCEPT, HeaderValue::from_static("application/json"))
        .json(record)
        .timeout(timeout);
    for (name, value) in &call.headers {
        let (name, value) = header(name, value).map_err(StageError::permanent)?;
        request = request.header(name, value);
    }
    let success = call.success_status.unwrap_or(default_status);
    Ok(http.send(request).await?.expect_status(success)?)
}

/// POSTs `record` and returns the JSON answer ([`Value::Null`] for an empty body), as an
/// `http` processor replaces the record with it. A body that is not JSON fails permanently.
pub async fn post_record(
    http: &HttpClientFactory,
    call: &HttpCall,
    record: &Value,
    default_status: u16,
    timeout: Duration,
) -> Result<Value, StageError> {
    let response = send_record(http, call, record, default_status, timeout).await?;
    if response.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&response.body).map_err(|error| StageError {
        http_status: Some(response.status),
        response: response.excerpt(),
        ..StageError::permanent(format!("undecodable response body: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use serde_json::json;

    use super::*;
    use crate::net::NetConfig;

    /// Answers by path: `/echo` 200 with the body plus `seen_token`, `/created` 201 empty,
    /// `/busy` 503 with Retry-After, `/bad` 400, `/text` 200 non-JSON, `/slow` after 2 s.
    async fn receiver() -> String {
        let app = axum::Router::new().fallback(answer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    async fn answer(request: Request) -> Response {
        let path = request.uri().path().to_owned();
        let headers = request.headers().clone();
        let body = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .expect("body");
        match path.as_str() {
            "/echo" => {
                let is_json = headers
                    .get("content-type")
                    .is_some_and(|value| value == "application/json");
                let mut record: Value = serde_json::from_slice(&body).expect("json record");
                record["seen_token"] = json!(headers.get("x-token").map(|v| v.to_str().ok()));
                record["seen_json"] = json!(is_json);
                axum::Json(record).into_response()
            }
            "/created" => StatusCode::CREATED.into_response(),
            "/busy" => (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "4")],
                "busy now",
            )
                .into_response(),
            "/bad" => (StatusCode::BAD_REQUEST, "no such field").into_response(),
            "/text" => "fine thanks".into_response(),
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                StatusCode::OK.into_response()
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }

    fn factory() -> HttpClientFactory {
        let config = NetConfig {
            allow: vec!["127.0.0.1/32".parse().expect("net")],
            ..NetConfig::default()
        };
        HttpClientFactory::new(&config).expect("factory")
    }

    fn call(base: &str, path: &str, success_status: Option<u16>) -> HttpCall {
        HttpCall {
            url: format!("{base}{path}"),
            success_status,
            headers: BTreeMap::from([("X-Token".to_owned(), "t1".to_owned())]),
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn the_answer_becomes_the_record() {
        let base = receiver().await;
        let http = factory();
        let record = json!({"id": "a", "message": "hi"});
        let answer = post_record(&http, &call(&base, "/echo", None), &record, 200, TIMEOUT)
            .await
            .expect("200");
        assert_eq!(
            answer,
            json!({"id": "a", "message": "hi", "seen_token": "t1", "seen_json": true})
        );
        let empty = post_record(&http, &call(&base, "/created", None), &record, 201, TIMEOUT)
            .await
            .expect("201");
        assert_eq!(empty, Value::Null);
    }

    #[tokio::test]
    async fn only_the_success_status_succeeds() {
        let base = receiver().await;
        let http = factory();
        let record = json!({"id": "a"});
        let wrong = post_record(
            &http,
            &call(&base, "/echo", Some(201)),
            &record,
            200,
            TIMEOUT,
        )
        .await
        .expect_err("200 where 201 is success");
        assert_eq!(wrong.http_status, Some(200));
        assert!(!wrong.retryable);
        let created = send_record(&http, &call(&base, "/created", None), &record, 201, TIMEOUT)
            .await
            .expect("201 by default");
        assert_eq!(created.status, 201);
    }

    #[tokio::test]
    async fn failures_keep_retryability_retry_after_and_the_answer() {
        let base = receiver().await;
        let http = factory();
        let record = json!({"id": "a"});
        let busy = post_record(&http, &call(&base, "/busy", None), &record, 200, TIMEOUT)
            .await
            .expect_err("503");
        assert!(busy.retryable);
        assert_eq!(busy.retry_after, Some(Duration::from_secs(4)));
        assert_eq!(busy.http_status, Some(503));
        assert_eq!(busy.response.as_deref(), Some("busy now"));

        let bad = post_record(&http, &call(&base, "/bad", None), &record, 200, TIMEOUT)
            .await
            .expect_err("400");
        assert!(!bad.retryable);
        assert_eq!(bad.response.as_deref(), Some("no such field"));

        let text = post_record(&http, &call(&base, "/text", None), &record, 200, TIMEOUT)
            .await
            .expect_err("not json");
        assert!(!text.retryable);
        assert!(text.message.contains("undecodable"), "{}", text.message);
        assert_eq!(text.response.as_deref(), Some("fine thanks"));

        let slow = post_record(
            &http,
            &call(&base, "/slow", None),
            &record,
            200,
            Duration::from_millis(200),
        )
        .await
        .expect_err("timeout");
        assert!(slow.retryable, "{slow:?}");
        assert_eq!(slow.http_status, None);
    }

    #[tokio::test]
    async fn refused_addresses_are_permanent() {
        let http = HttpClientFactory::new(&NetConfig::default()).expect("factory");
        let refused = post_record(
            &http,
            &call("http://127.0.0.1:9", "/x", None),
            &json!({}),
            200,
            TIMEOUT,
        )
        .await
        .expect_err("loopback refused");
        assert!(!refused.retryable);
    }

    #[test]
    fn calls_are_validated() {
        let ok = call("https://store.example.com", "/message", Some(201));
        assert_eq!(validate_call(&ok), Ok(()));
        let with = |f: &dyn Fn(&mut HttpCall)| {
            let mut bad = ok.clone();
            f(&mut bad);
            validate_call(&bad).expect_err("refused")
        };
        assert!(with(&|c| c.url = "/message".into()).starts_with("url:"));
        assert!(with(&|c| c.url = "ftp://h/message".into()).starts_with("url:"));
        assert!(with(&|c| c.success_status = Some(42)).starts_with("success_status:"));
        let bad_name = with(&|c| {
            c.headers.insert("bad name".into(), "v".into());
        });
        assert!(bad_name.contains("invalid header name"), "{bad_name}");
        let bad_value = with(&|c| {
            c.headers.insert("X-A".into(), "a\nb".into());
        });
        assert!(bad_value.contains("invalid value"), "{bad_value}");
        let reserved = with(&|c| {
            c.headers.insert("Host".into(), "elsewhere".into());
        });
        assert!(reserved.contains("may not be set"), "{reserved}");
    }
}
