//! The `message-source` connector: the collection-engine seed's source API, read by cursor
//! (`GET {base_url}/messages`, then `GET {base_url}/messages/{cursor}`), `X-Auth-Token` auth.
//!
//! Invariant: every message is kept verbatim (the seed dropped its `message` field), the
//! answer's cursor replaces the checkpoint's even when null, and an empty page is no error.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::http::urls::parse_http_url;
use super::{Connector, ConnectorContext, Error, Page, json_type};

/// The connector's name in specs.
pub const NAME: &str = "message-source";

/// The header carrying the token, as the seed's source API expects it.
const TOKEN_HEADER: &str = "x-auth-token";

/// Pulls messages from a cursor-paginated source API; all state is in the checkpoint.
#[derive(Debug, Default, Clone, Copy)]
pub struct MessageSourceConnector;

/// Settings of one message source. `Debug` never shows the token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    base_url: String,
    token: String,
    #[serde(default)]
    timeout: Option<Timeout>,
}

#[derive(Clone, Copy, Deserialize)]
struct Timeout(#[serde(with = "crate::config::duration")] Duration);

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("base_url", &self.base_url)
            .field("token", &"********")
            .field("timeout", &self.timeout.map(|Timeout(timeout)| timeout))
            .finish()
    }
}

/// Settings checked once per call: the base URL parsed, the token usable as a header value.
struct Source {
    base_url: Url,
    token: HeaderValue,
    timeout: Option<Duration>,
}

impl Source {
    fn new(settings: &Value) -> Result<Self, Error> {
        let settings: Settings = serde_json::from_value(settings.clone())
            .map_err(|error| Error::Settings(error.to_string()))?;
        let base_url = parse_http_url(&settings.base_url)
            .map_err(|error| Error::Settings(format!("base_url: {error}")))?;
        if base_url.cannot_be_a_base() {
            return Err(Error::Settings("base_url: must be a base URL".into()));
        }
        let mut token = HeaderValue::from_str(&settings.token)
            .map_err(|_| Error::Settings("token: not a valid header value".into()))?;
        token.set_sensitive(true);
        let timeout = settings.timeout.map(|Timeout(timeout)| timeout);
        if timeout == Some(Duration::ZERO) {
            return Err(Error::Settings("timeout: must be more than zero".into()));
        }
        Ok(Self {
            base_url,
            token,
            timeout,
        })
    }

    /// `{base_url}/messages`, or `{base_url}/messages/{cursor}` once a cursor is known.
    fn page_url(&self, cursor: Option<i64>) -> Url {
        let mut url = self.base_url.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .expect("checked: the base URL can be a base");
            segments.pop_if_empty().push("messages");
            if let Some(cursor) = cursor {
                segments.push(&cursor.to_string());
            }
        }
        url
    }

    async fn fetch(&self, ctx: &ConnectorContext, cursor: Option<i64>) -> Result<Page, Error> {
        let mut request = ctx
            .http
            .request(Method::GET, self.page_url(cursor))
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(TOKEN_HEADER, self.token.clone());
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        let body: Value = ctx.http.send(request).await?.expect_status(200)?.json()?;
        let (records, next) = read_answer(body)?;
        let done = records.is_empty() && next.is_none();
        Ok(Page {
            records,
            checkpoint: Some(json!({ "cursor": next })),
            done,
        })
    }
}

/// The cursor a checkpoint resumes from; no checkpoint or a null cursor starts at `/messages`.
fn checkpoint_cursor(checkpoint: Option<&Value>) -> Result<Option<i64>, Error> {
    let Some(checkpoint) = checkpoint else {
        return Ok(None);
    };
    match checkpoint.get("cursor") {
        None | Some(Value::Null) => Ok(None),
        Some(cursor) => cursor.as_i64().map(Some).ok_or_else(|| {
            Error::Settings(format!("checkpoint: cursor {cursor} is not an integer"))
        }),
    }
}

/// The messages and the next cursor of `{"results": [...], "cursor": int|null}`.
fn read_answer(body: Value) -> Result<(Vec<Value>, Option<i64>), Error> {
    let Value::Object(mut fields) = body else {
        return Err(Error::Response(format!(
            "the source answered a JSON {} where an object with `results` was expected",
            json_type(&body)
        )));
    };
    let records = match fields.remove("results") {
        Some(Value::Array(records)) => records,
        Some(other) => {
            return Err(Error::Response(format!(
                "`results` is a JSON {}, not an array",
                json_type(&other)
            )));
        }
        None => return Err(Error::Response("the answer has no `results`".into())),
    };
    let cursor = match fields.remove("cursor") {
        None | Some(Value::Null) => None,
        Some(cursor) => Some(cursor.as_i64().ok_or_else(|| {
            Error::Response(format!("`cursor` {cursor} is not an integer or null"))
        })?),
    };
    Ok((records, cursor))
}

/// JSON Schema of the settings; the token is `writeOnly`, so it is redacted when shown.
fn settings_schema() -> Value {
    json!({
        "type": "object",
        "title": "Message source (cursor-paginated messages API)",
        "additionalProperties": false,
        "required": ["base_url", "token"],
        "properties": {
            "base_url": {
                "type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                "description": "API root; pages are read from `{base_url}/messages[/{cursor}]`.",
                "examples": ["https://source.example.com"]
            },
            "token": {
                "type": "string", "minLength": 1, "writeOnly": true,
                "description": "Sent as the `X-Auth-Token` header."
            },
            "timeout": {
                "anyOf": [
                    {"type": "integer", "minimum": 1},
                    {"type": "string", "pattern": "^\\s*[0-9]+\\s*(ms|s|m|h|d)?\\s*$"}
                ],
                "description": "Time allowed for one page request, e.g. `5s` (default: the client's request timeout)."
            }
        }
    })
}

#[async_trait]
impl Connector for MessageSourceConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Pulls messages from a cursor-paginated source API (`GET {base_url}/messages[/{cursor}]`, `X-Auth-Token`), keeping every field."
    }

    fn settings_schema(&self) -> Value {
        settings_schema()
    }

    fn validate(&self, settings: &Value) -> Result<(), Error> {
        Source::new(settings).map(|_| ())
    }

    fn upstream(&self, settings: &Value) -> Option<String> {
        super::origin_of(settings.get("base_url")?.as_str()?)
    }

    /// Fetches the first page and discards it.
    async fn check(&self, ctx: &ConnectorContext, settings: &Value) -> Result<(), Error> {
        Source::new(settings)?.fetch(ctx, None).await.map(|_| ())
    }

    async fn collect_page(
        &self,
        ctx: &ConnectorContext,
        settings: &Value,
        checkpoint: Option<&Value>,
    ) -> Result<Page, Error> {
        let source = Source::new(settings)?;
        let cursor = checkpoint_cursor(checkpoint)?;
        source.fetch(ctx, cursor).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::{Request, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};

    use super::*;
    use crate::clock::SystemClock;
    use crate::connectors::schema::SettingsSchema;
    use crate::connectors::test_context;
    use crate::net::{Retryability, UpstreamError};

    /// Paths and tokens the mock saw, in order.
    type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

    /// A source API: `/messages` → cursor 10, `/messages/10` → cursor null, `/messages/20` →
    /// empty, `/messages/429` → throttled, `/messages/7` → not JSON.
    async fn source_api() -> (String, Log) {
        let log: Log = Arc::default();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&log));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}/api"), log)
    }

    async fn answer(State(log): State<Log>, request: Request) -> Response {
        let path = request.uri().path().to_owned();
        let token = request
            .headers()
            .get("x-auth-token")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        log.lock().expect("log").push((path.clone(), token.clone()));
        if token.as_deref() != Some("secret") {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let body = match path.as_str() {
            "/api/messages" => json!({"results": [message("a"), message("b")], "cursor": 10}),
            "/api/messages/10" => json!({"results": [message("c")], "cursor": null}),
            "/api/messages/20" => json!({"results": [], "cursor": null}),
            "/api/messages/30" => json!({"results": [], "cursor": 31}),
            "/api/messages/429" => {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "3")],
                    "slow down",
                )
                    .into_response();
            }
            "/api/messages/7" => return "not json".into_response(),
            "/api/messages/8" => return axum::Json(json!({"results": {}})).into_response(),
            _ => return StatusCode::NOT_FOUND.into_response(),
        };
        axum::Json(body).into_response()
    }

    fn message(id: &str) -> Value {
        json!({
            "id": id, "source": "MessagingSystem", "title": "t", "creation_date": "2030-08-24T17:16:52.228009",
            "message": format!("body {id}"), "tags": ["x"], "author": "me"
        })
    }

    fn settings(base: &str) -> Value {
        json!({"base_url": base, "token": "secret", "timeout": "2s"})
    }

    async fn collect(base: &str, cursor: Value) -> Result<Page, Error> {
        let ctx = test_context(Arc::new(SystemClock));
        let checkpoint = json!({ "cursor": cursor });
        MessageSourceConnector
            .collect_page(&ctx, &settings(base), Some(&checkpoint))
            .await
    }

    #[tokio::test]
    async fn the_cursor_chain_keeps_every_field_and_restarts_after_null() {
        let (base, log) = source_api().await;
        let ctx = test_context(Arc::new(SystemClock));
        let first = MessageSourceConnector
            .collect_page(&ctx, &settings(&base), None)
            .await
            .expect("first page");
        assert_eq!(first.records, vec![message("a"), message("b")]);
        assert_eq!(first.checkpoint, Some(json!({"cursor": 10})));
        assert!(!first.done);

        let second = MessageSourceConnector
            .collect_page(&ctx, &settings(&base), first.checkpoint.as_ref())
            .await
            .expect("second page");
        assert_eq!(second.records, vec![message("c")]);
        assert_eq!(second.checkpoint, Some(json!({"cursor": null})));
        assert!(!second.done, "records arrived, so there may be more");

        MessageSourceConnector
            .collect_page(&ctx, &settings(&base), second.checkpoint.as_ref())
            .await
            .expect("third page");
        let seen = log.lock().expect("log").clone();
        let paths: Vec<&str> = seen.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            ["/api/messages", "/api/messages/10", "/api/messages"]
        );
        assert!(
            seen.iter()
                .all(|(_, token)| token.as_deref() == Some("secret"))
        );
    }

    #[tokio::test]
    async fn an_empty_page_is_no_error_and_done_only_without_cursor() {
        let (base, _) = source_api().await;
        let empty = collect(&base, json!(20)).await.expect("empty page");
        assert!(empty.records.is_empty());
        assert!(empty.done);
        assert_eq!(empty.checkpoint, Some(json!({"cursor": null})));

        let empty_with_cursor = collect(&base, json!(30)).await.expect("empty page");
        assert!(!empty_with_cursor.done);
        assert_eq!(empty_with_cursor.checkpoint, Some(json!({"cursor": 31})));
    }

    #[tokio::test]
    async fn statuses_keep_their_retry_classification() {
        let (base, _) = source_api().await;
        let throttled = collect(&base, json!(429)).await.expect_err("429");
        assert_eq!(throttled.http_status(), Some(429));
        assert_eq!(
            throttled.retryability(),
            Retryability::Retry {
                after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(throttled.response_excerpt(), Some("slow down"));

        let ctx = test_context(Arc::new(SystemClock));
        let wrong_token = json!({"base_url": base, "token": "nope"});
        let refused = MessageSourceConnector
            .collect_page(&ctx, &wrong_token, None)
            .await
            .expect_err("401");
        assert_eq!(refused.http_status(), Some(401));
        assert_eq!(refused.retryability(), Retryability::Permanent);

        let missing = collect(&base, json!(99)).await.expect_err("404");
        assert_eq!(missing.http_status(), Some(404));
    }

    #[tokio::test]
    async fn malformed_answers_are_permanent_errors() {
        let (base, _) = source_api().await;
        let text = collect(&base, json!(7)).await.expect_err("not json");
        assert!(matches!(
            text,
            Error::Upstream(UpstreamError::Decode { .. })
        ));
        let shape = collect(&base, json!(8)).await.expect_err("bad shape");
        assert!(matches!(shape, Error::Response(_)), "{shape:?}");
        assert_eq!(shape.retryability(), Retryability::Permanent);
    }

    #[test]
    fn settings_are_checked_and_the_token_is_secret() {
        let schema = SettingsSchema::compile(settings_schema()).expect("schema");
        let good =
            json!({"base_url": "https://source.example.com/v1/", "token": "t", "timeout": "500ms"});
        assert!(schema.validate(&good).is_ok());
        assert!(MessageSourceConnector.validate(&good).is_ok());
        assert_eq!(schema.redact(&good)["token"], "********");
        for bad in [
            json!({"base_url": "ftp://source.example.com", "token": "t"}),
            json!({"base_url": "https://source.example.com"}),
            json!({"base_url": "https://source.example.com", "token": "t", "timeout": "soon"}),
            json!({"base_url": "https://source.example.com", "token": "t", "extra": 1}),
        ] {
            assert!(schema.validate(&bad).is_err(), "{bad}");
            assert!(MessageSourceConnector.validate(&bad).is_err(), "{bad}");
        }
        let newline = json!({"base_url": "https://source.example.com", "token": "a\nb"});
        assert!(MessageSourceConnector.validate(&newline).is_err());
        let zero = json!({"base_url": "https://source.example.com", "token": "t", "timeout": 0});
        assert!(MessageSourceConnector.validate(&zero).is_err());
        assert_eq!(
            MessageSourceConnector.upstream(&good).as_deref(),
            Some("https://source.example.com")
        );
    }

    #[test]
    fn page_urls_follow_the_cursor() {
        let source =
            Source::new(&json!({"base_url": "http://h/api/", "token": "t"})).expect("settings");
        assert_eq!(source.page_url(None).as_str(), "http://h/api/messages");
        assert_eq!(
            source.page_url(Some(40)).as_str(),
            "http://h/api/messages/40"
        );
        assert_eq!(checkpoint_cursor(None).expect("none"), None);
        assert_eq!(
            checkpoint_cursor(Some(&json!({"cursor": null}))).expect("null"),
            None
        );
        assert_eq!(
            checkpoint_cursor(Some(&json!({"cursor": 4}))).expect("int"),
            Some(4)
        );
        assert!(checkpoint_cursor(Some(&json!({"cursor": "x"}))).is_err());
    }
}
