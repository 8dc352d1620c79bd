//! The outgoing HTTP client factory: one guarded, size-capped `reqwest::Client` for all callers.
//!
//! Invariant: every request sent through [`HttpClientFactory::execute`] has its URL, each
//! redirect hop and each resolved address checked by the same [`AddressGuard`].

use std::error::Error as StdError;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::header::HeaderMap;
use reqwest::redirect::Policy;
use serde::de::DeserializeOwned;

use super::{
    AddressGuard, GuardedResolver, NetConfig, UpstreamError, body_excerpt, parse_retry_after,
};

/// Redirect hops are never followed beyond this, whatever the configuration says.
const MAX_REDIRECTS_CAP: usize = 10;

/// Initial body buffer size ceiling, so a lying `Content-Length` cannot make us preallocate much.
const INITIAL_BUFFER_CAP: u64 = 64 * 1024;

/// Builds and shares the one hardened HTTP client; cheap to clone.
///
/// The client never uses an environment proxy, resolves names through [`GuardedResolver`],
/// re-checks every redirect hop, and bounds connect time, request time and body size.
#[derive(Debug, Clone)]
pub struct HttpClientFactory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: NetConfig,
    guard: Arc<AddressGuard>,
    client: reqwest::Client,
    /// The same client without redirects, built on first use (few callers need it).
    client_without_redirects: OnceLock<Result<reqwest::Client, UpstreamError>>,
}

/// A response whose body was read completely and within the configured size limit.
#[derive(Debug, Clone)]
pub struct CappedResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl CappedResponse {
    /// Decodes the body as JSON; failure is [`UpstreamError::Decode`].
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, UpstreamError> {
        serde_json::from_slice(&self.body).map_err(|e| UpstreamError::Decode {
            message: e.to_string(),
        })
    }

    /// The beginning of the body as text, as attempt logs keep it; `None` for an empty body.
    pub fn excerpt(&self) -> Option<String> {
        (!self.body.is_empty()).then(|| body_excerpt(&self.body))
    }

    /// Passes 2xx responses through and turns any other status into
    /// [`UpstreamError::Status`] with a body excerpt and the upstream's `Retry-After`.
    pub fn error_for_status(self) -> Result<Self, UpstreamError> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        Err(self.status_error())
    }

    /// Passes only responses with exactly `status` (an API whose contract names one success
    /// code); any other, 2xx included, becomes [`UpstreamError::Status`] as in
    /// [`Self::error_for_status`].
    pub fn expect_status(self, status: u16) -> Result<Self, UpstreamError> {
        if self.status == status {
            return Ok(self);
        }
        Err(self.status_error())
    }

    fn status_error(&self) -> UpstreamError {
        UpstreamError::Status {
            status: self.status,
            body: body_excerpt(&self.body),
            retry_after: parse_retry_after(&self.headers, SystemTime::now()),
        }
    }
}

impl HttpClientFactory {
    /// Builds the client from `config`; fails only if the client cannot be constructed
    /// (for example an invalid `user_agent`).
    pub fn new(config: &NetConfig) -> Result<Self, UpstreamError> {
        // reqwest is built without a bundled crypto provider; installing fails harmlessly
        // when another part of the process already installed one.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let guard = Arc::new(AddressGuard::new(config.allow.clone()));
        let policy = redirect_policy(Arc::clone(&guard), config.max_redirects);
        let client = build_client(config, &guard, policy)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                guard,
                client,
                client_without_redirects: OnceLock::new(),
            }),
        })
    }

    /// The underlying client. Names and redirects are guarded by it, but an IP-literal first
    /// URL is not: callers that bypass [`Self::execute`] must call [`Self::guard`] themselves.
    pub fn client(&self) -> &reqwest::Client {
        &self.inner.client
    }

    /// The guard shared by the resolver, the redirect policy and [`Self::execute`].
    pub fn guard(&self) -> &AddressGuard {
        &self.inner.guard
    }

    /// The configuration the client was built from.
    pub fn config(&self) -> &NetConfig {
        &self.inner.config
    }

    /// Starts a request on the guarded client; send it with [`Self::send`].
    pub fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        self.inner.client.request(method, url)
    }

    /// Builds `request` and sends it with [`Self::execute`].
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<CappedResponse, UpstreamError> {
        let request = request.build().map_err(|e| UpstreamError::InvalidUrl {
            message: error_chain(&e.without_url()),
        })?;
        self.execute(request).await
    }

    /// Checks the URL, sends the request and reads the whole body within the size limit.
    ///
    /// Any status is returned as a response; use [`CappedResponse::error_for_status`] to turn
    /// failures into errors.
    pub async fn execute(
        &self,
        request: reqwest::Request,
    ) -> Result<CappedResponse, UpstreamError> {
        self.inner.guard.check_url(request.url())?;
        let response = self
            .inner
            .client
            .execute(request)
            .await
            .map_err(map_error)?;
        self.capped(response).await
    }

    /// Like [`Self::execute`], but a 3xx answer is returned as it is instead of being
    /// followed: for callers that must see the hop itself (a login answering with a redirect
    /// and the session cookie).
    pub async fn execute_without_redirects(
        &self,
        request: reqwest::Request,
    ) -> Result<CappedResponse, UpstreamError> {
        self.inner.guard.check_url(request.url())?;
        let client = self
            .inner
            .client_without_redirects
            .get_or_init(|| build_client(&self.inner.config, &self.inner.guard, Policy::none()))
            .as_ref()
            .map_err(Clone::clone)?;
        let response = client.execute(request).await.map_err(map_error)?;
        self.capped(response).await
    }

    /// Reads the status, headers and the whole body within the size limit.
    async fn capped(&self, response: reqwest::Response) -> Result<CappedResponse, UpstreamError> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_capped(response, self.inner.config.max_response_bytes).await?;
        Ok(CappedResponse {
            status,
            headers,
            body,
        })
    }
}

/// The guarded client of `config` with redirect `policy`: no environment proxy, names
/// resolved through the guard, bounded connect and request time.
fn build_client(
    config: &NetConfig,
    guard: &Arc<AddressGuard>,
    policy: Policy,
) -> Result<reqwest::Client, UpstreamError> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .timeout(Duration::from_millis(config.request_timeout_ms))
        .redirect(policy)
        .referer(false)
        .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(guard))))
        .user_agent(config.user_agent.as_str())
        .pool_max_idle_per_host(config.max_idle_per_host)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| UpstreamError::Transport {
            message: format!("cannot build http client: {}", error_chain(&e)),
            timeout: false,
        })
}

/// Follows at most `max_redirects` hops (capped at [`MAX_REDIRECTS_CAP`]), each of which must
/// pass the guard; with zero, 3xx responses are returned as they are.
fn redirect_policy(guard: Arc<AddressGuard>, max_redirects: usize) -> Policy {
    let max = max_redirects.min(MAX_REDIRECTS_CAP);
    if max == 0 {
        return Policy::none();
    }
    Policy::custom(move |attempt| {
        // `previous` starts with the original URL, so it holds one entry per hop taken so far.
        if attempt.previous().len() > max {
            let reason = format!("stopped after {max} redirects");
            return attempt.error(UpstreamError::Refused { reason });
        }
        match guard.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(UpstreamError::Refused { reason }) => {
                let reason = format!("redirect refused: {reason}");
                attempt.error(UpstreamError::Refused { reason })
            }
            Err(other) => attempt.error(other),
        }
    })
}

/// Reads the body chunk by chunk, failing as soon as it would exceed `limit` bytes.
async fn read_capped(mut response: reqwest::Response, limit: u64) -> Result<Bytes, UpstreamError> {
    let announced = response.content_length();
    if announced.is_some_and(|len| len > limit) {
        return Err(UpstreamError::TooLarge { limit });
    }
    let initial = announced.unwrap_or(0).min(limit).min(INITIAL_BUFFER_CAP);
    let mut body = BytesMut::with_capacity(usize::try_from(initial).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(map_error)? {
        let total = (body.len() as u64).saturating_add(chunk.len() as u64);
        if total > limit {
            return Err(UpstreamError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Maps a `reqwest` error to an [`UpstreamError`], recovering refusals raised by the resolver
/// or the redirect policy. URLs are stripped because their queries may carry credentials.
fn map_error(error: reqwest::Error) -> UpstreamError {
    let error = error.without_url();
    let mut cause: Option<&(dyn StdError + 'static)> = Some(&error);
    while let Some(current) = cause {
        if let Some(upstream) = current.downcast_ref::<UpstreamError>() {
            return upstream.clone();
        }
        cause = current.source();
    }
    let message = error_chain(&error);
    if error.is_builder() {
        UpstreamError::InvalidUrl { message }
    } else if error.is_decode() {
        UpstreamError::Decode { message }
    } else if error.is_redirect() {
        UpstreamError::Refused { reason: message }
    } else {
        UpstreamError::Transport {
            message,
            timeout: error.is_timeout(),
        }
    }
}

/// The error and its causes joined with `": "`, skipping causes already spelled out.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = current.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Retryability;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use reqwest::Method;
    use std::net::SocketAddr;

    const CAP: u64 = 1024;

    /// Serves the test routes on 127.0.0.1 and returns the bound address.
    async fn serve() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let port = addr.port();
        let app = Router::new()
            .route(
                "/json",
                get(|| async { axum::Json(serde_json::json!({"ok": true, "n": 3})) }),
            )
            .route("/not-json", get(|| async { "plain text" }))
            .route("/big", get(|| async { "x".repeat(CAP as usize + 1) }))
            .route(
                "/big-stream",
                get(|| async {
                    let chunks =
                        (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 200])));
                    Body::from_stream(futures::stream::iter(chunks))
                }),
            )
            .route(
                "/redirect-private",
                get(|| async { redirect("http://10.0.0.1/") }),
            )
            .route(
                "/redirect-loopback2",
                get(move || async move { redirect(&format!("http://127.0.0.2:{port}/json")) }),
            )
            .route("/redirect-ok", get(|| async { redirect("/json") }))
            .route("/loop", get(|| async { redirect("/loop") }))
            .route(
                "/unavailable",
                get(|| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "7")],
                        "try later",
                    )
                }),
            )
            .route(
                "/missing",
                get(|| async { (StatusCode::NOT_FOUND, "no such thing") }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        addr
    }

    fn redirect(location: &str) -> Response {
        (StatusCode::FOUND, [(header::LOCATION, location.to_owned())]).into_response()
    }

    fn factory(allow: &[&str]) -> HttpClientFactory {
        let config = NetConfig {
            allow: allow
                .iter()
                .map(|s| crate::net::allow_list::parse(s).unwrap())
                .collect(),
            max_response_bytes: CAP,
            request_timeout_ms: 1_000,
            ..NetConfig::default()
        };
        HttpClientFactory::new(&config).unwrap()
    }

    async fn get_path(
        factory: &HttpClientFactory,
        host: &str,
        path: &str,
    ) -> Result<CappedResponse, UpstreamError> {
        let url = url::Url::parse(&format!("http://{host}{path}")).unwrap();
        factory.send(factory.request(Method::GET, url)).await
    }

    fn assert_refused(result: Result<CappedResponse, UpstreamError>, needle: &str) {
        match result {
            Err(UpstreamError::Refused { reason }) => assert!(reason.contains(needle), "{reason}"),
            other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn loopback_is_refused_without_allow_list() {
        let addr = serve().await;
        let result = get_path(&factory(&[]), &addr.to_string(), "/json").await;
        assert_refused(result, "loopback");
    }

    #[tokio::test]
    async fn allow_listed_loopback_returns_json() {
        let addr = serve().await;
        let f = factory(&["127.0.0.1/32"]);
        let response = get_path(&f, &addr.to_string(), "/json")
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        assert_eq!(response.status, 200);
        let value: serde_json::Value = response.json().unwrap();
        assert_eq!(value, serde_json::json!({"ok": true, "n": 3}));
        let bad = get_path(&f, &addr.to_string(), "/not-json").await.unwrap();
        assert!(matches!(
            bad.json::<serde_json::Value>(),
            Err(UpstreamError::Decode { .. })
        ));
    }

    #[tokio::test]
    async fn oversized_bodies_are_too_large() {
        let addr = serve().await;
        let f = factory(&["127.0.0.1/32"]);
        for path in ["/big", "/big-stream"] {
            match get_path(&f, &addr.to_string(), path).await {
                Err(UpstreamError::TooLarge { limit }) => assert_eq!(limit, CAP),
                other => panic!("{path}: expected TooLarge, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn redirects_to_refused_addresses_are_refused() {
        let addr = serve().await;
        let f = factory(&["127.0.0.1/32"]);
        let host = addr.to_string();
        assert_refused(
            get_path(&f, &host, "/redirect-private").await,
            "redirect refused: address 10.0.0.1",
        );
        assert_refused(
            get_path(&f, &host, "/redirect-loopback2").await,
            "redirect refused: address 127.0.0.2",
        );
        let ok = get_path(&f, &host, "/redirect-ok").await.unwrap();
        assert_eq!(ok.status, 200);
        assert_refused(
            get_path(&f, &host, "/loop").await,
            "stopped after 5 redirects",
        );
    }

    #[tokio::test]
    async fn without_redirects_a_hop_is_returned_as_it_is_and_still_guarded() {
        let addr = serve().await;
        let f = factory(&["127.0.0.1/32"]);
        let request = |path: &str| {
            let url = url::Url::parse(&format!("http://{addr}{path}")).unwrap();
            f.request(Method::GET, url).build().unwrap()
        };
        let hop = f
            .execute_without_redirects(request("/redirect-ok"))
            .await
            .unwrap();
        assert_eq!(hop.status, 302);
        assert_eq!(hop.headers[header::LOCATION], "/json");
        let followed = f.execute(request("/redirect-ok")).await.unwrap();
        assert_eq!(followed.status, 200, "the shared client still follows");

        let refusing = factory(&[]);
        let url = url::Url::parse(&format!("http://{addr}/json")).unwrap();
        let request = refusing.request(Method::GET, url).build().unwrap();
        assert_refused(
            refusing.execute_without_redirects(request).await,
            "loopback",
        );
    }

    #[tokio::test]
    async fn status_errors_carry_retry_classification() {
        let addr = serve().await;
        let f = factory(&["127.0.0.1/32"]);
        let err = get_path(&f, &addr.to_string(), "/unavailable")
            .await
            .unwrap()
            .error_for_status()
            .unwrap_err();
        assert_eq!(
            err,
            UpstreamError::Status {
                status: 503,
                body: "try later".into(),
                retry_after: Some(Duration::from_secs(7)),
            }
        );
        assert_eq!(
            err.retryability(),
            Retryability::Retry {
                after: Some(Duration::from_secs(7))
            }
        );

        let err = get_path(&f, &addr.to_string(), "/missing")
            .await
            .unwrap()
            .error_for_status()
            .unwrap_err();
        assert_eq!(err.http_status(), Some(404));
        assert_eq!(err.response_excerpt(), Some("no such thing"));
        assert_eq!(err.retryability(), Retryability::Permanent);
    }

    #[tokio::test]
    async fn localhost_name_is_refused_by_resolver_unless_allow_listed() {
        let addr = serve().await;
        let host = format!("localhost:{}", addr.port());
        assert_refused(
            get_path(&factory(&[]), &host, "/json").await,
            "host localhost resolves only to refused addresses",
        );
        let response = get_path(&factory(&["127.0.0.1"]), &host, "/json")
            .await
            .unwrap();
        assert_eq!(response.status, 200);
    }

    #[tokio::test]
    async fn slow_upstream_times_out_as_retryable_transport_error() {
        let addr = serve().await;
        let f = factory(&["127.0.0.1/32"]);
        match get_path(&f, &addr.to_string(), "/slow").await {
            Err(err @ UpstreamError::Transport { timeout: true, .. }) => {
                assert_eq!(err.retryability(), Retryability::Retry { after: None });
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn refused_schemes_and_literals_never_reach_the_network() {
        let f = factory(&[]);
        for url in [
            "ftp://example.com/",
            "http://0x7f.1/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            let url = url::Url::parse(url).unwrap();
            let result = f.send(f.request(Method::GET, url.clone())).await;
            assert!(
                matches!(result, Err(UpstreamError::Refused { .. })),
                "{url}: {result:?}"
            );
        }
    }

    #[test]
    fn invalid_user_agent_is_reported() {
        let config = NetConfig {
            user_agent: "bad\nagent".into(),
            ..NetConfig::default()
        };
        assert!(HttpClientFactory::new(&config).is_err());
    }
}
