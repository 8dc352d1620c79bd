//! App-only OAuth tokens (client credentials grant), cached per (token URL, client id, secret).
//!
//! Invariant: at most one token request per credentials is in flight; concurrent callers await
//! that one request. A token is served until `expires_in` *seconds* minus a margin have passed
//! on the injected clock (the seed read seconds as milliseconds), and a failed request is
//! never served to a caller that arrives after it failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use reqwest::Method;
use reqwest::header::USER_AGENT;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

use crate::clock::Millis;
use crate::config::Secret;
use crate::connectors::{ConnectorContext, Error};

/// Longest margin taken off a token's lifetime, so it is renewed before Reddit refuses it.
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// Who asks for tokens.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub client_id: String,
    pub client_secret: Secret,
}

/// A bearer token and the instant (clock millis) from which it is no longer served.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub access_token: String,
    pub renew_at: Millis,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Token")
            .field("renew_at", &self.renew_at)
            .finish_non_exhaustive()
    }
}

/// One token request, shared by every caller that arrives while it runs.
type TokenRequest = Shared<BoxFuture<'static, Result<Token, Error>>>;

/// Where to ask for tokens and the User-Agent to ask with.
#[derive(Debug, Clone)]
pub struct TokenEndpoint {
    pub url: Url,
    pub user_agent: String,
}

/// The token cache; cheap to clone, shared by every job of the process.
#[derive(Clone, Default)]
pub struct TokenCache {
    /// The latest request per credentials key: in flight, succeeded, or failed (then replaced
    /// by the next caller). Locked only to look up or swap an entry, never across an await.
    requests: Arc<Mutex<HashMap<[u8; 32], TokenRequest>>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenCache")
    }
}

impl TokenCache {
    /// A token for `credentials`: the cached one while it is fresh, else the result of the
    /// request in flight, else of a new request.
    pub async fn token(
        &self,
        ctx: &ConnectorContext,
        endpoint: &TokenEndpoint,
        credentials: &Credentials,
    ) -> Result<Token, Error> {
        let key = cache_key(&endpoint.url, credentials);
        let request = {
            let mut requests = self.requests.lock().expect("token cache poisoned");
            let now = ctx.clock.now();
            match requests.get(&key) {
                Some(request) if serves(request, now) => request.clone(),
                _ => {
                    let request = fetch(ctx.clone(), endpoint.clone(), credentials.clone())
                        .boxed()
                        .shared();
                    requests.insert(key, request.clone());
                    request
                }
            }
        };
        let result = request.clone().await;
        if result.is_err() {
            self.forget(&key, |cached| cached.ptr_eq(&request));
        }
        result
    }

    /// Drops `token` (the API refused it) unless a newer token already replaced it.
    pub fn invalidate(&self, endpoint: &TokenEndpoint, credentials: &Credentials, token: &Token) {
        let key = cache_key(&endpoint.url, credentials);
        self.forget(
            &key,
            |cached| matches!(cached.peek(), Some(Ok(current)) if current == token),
        );
    }

    fn forget(&self, key: &[u8; 32], when: impl FnOnce(&TokenRequest) -> bool) {
        let mut requests = self.requests.lock().expect("token cache poisoned");
        if requests.get(key).is_some_and(when) {
            requests.remove(key);
        }
    }
}

/// Whether a cached request may serve a caller at `now`: still running, or done with a token
/// that is not due for renewal.
fn serves(request: &TokenRequest, now: Millis) -> bool {
    match request.peek() {
        None => true,
        Some(Ok(token)) => now < token.renew_at,
        Some(Err(_)) => false,
    }
}

/// The cache key: a digest, so the map holds no copy of the secret.
fn cache_key(url: &Url, credentials: &Credentials) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in [
        url.as_str(),
        &credentials.client_id,
        credentials.client_secret.expose(),
    ] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    digest.finalize().into()
}

/// How long a token of `expires_in` seconds is served: its lifetime less a tenth of it, at
/// most [`MAX_MARGIN`]; never negative.
pub fn served_for(expires_in: u64) -> Duration {
    let lifetime = Duration::from_secs(expires_in);
    lifetime - (lifetime / 10).min(MAX_MARGIN)
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    /// Seconds.
    expires_in: Option<u64>,
    error: Option<String>,
}

/// `POST {url}` with `grant_type=client_credentials` and HTTP Basic credentials.
async fn fetch(
    ctx: ConnectorContext,
    endpoint: TokenEndpoint,
    credentials: Credentials,
) -> Result<Token, Error> {
    let request = ctx
        .http
        .request(Method::POST, endpoint.url)
        .basic_auth(
            &credentials.client_id,
            Some(credentials.client_secret.expose()),
        )
        .header(USER_AGENT, &endpoint.user_agent)
        .form(&[("grant_type", "client_credentials")]);
    let response = ctx.http.send(request).await?.error_for_status()?;
    let body: TokenResponse = response.json()?;
    match (body.access_token, body.expires_in) {
        (Some(access_token), Some(expires_in)) if !access_token.is_empty() => Ok(Token {
            access_token,
            renew_at: ctx
                .clock
                .now()
                .saturating_add(served_for(expires_in).as_millis() as i64),
        }),
        _ => Err(Error::Response(format!(
            "reddit gave no access token: {}",
            body.error.as_deref().unwrap_or("no error given")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_served_for_their_lifetime_in_seconds_less_a_margin() {
        assert_eq!(served_for(86_400), Duration::from_secs(86_340));
        assert_eq!(served_for(3_600), Duration::from_secs(3_540));
        assert_eq!(served_for(100), Duration::from_secs(90));
        assert_eq!(served_for(5), Duration::from_millis(4_500));
        assert_eq!(served_for(0), Duration::ZERO);
    }

    #[test]
    fn keys_separate_endpoints_ids_and_secrets() {
        let url = Url::parse("https://www.reddit.com/api/v1/access_token").expect("url");
        let credentials = |id: &str, secret: &str| Credentials {
            client_id: id.into(),
            client_secret: Secret::new(secret),
        };
        let key = cache_key(&url, &credentials("a", "b"));
        assert_eq!(key, cache_key(&url, &credentials("a", "b")));
        assert_ne!(key, cache_key(&url, &credentials("ab", "")));
        assert_ne!(key, cache_key(&url, &credentials("a", "c")));
        let other = Url::parse("http://127.0.0.1:9/token").expect("url");
        assert_ne!(key, cache_key(&other, &credentials("a", "b")));
    }
}
