//! Bearer-token authentication. Tokens are random, shown once, and stored only as SHA-256
//! hashes; a token's hash is cached in memory after its first successful lookup.
//!
//! Invariant: every route except the ones `is_public` names needs a valid token, unless the
//! operator opened a compatibility route to some client networks (`[server.open_routes]`).

use std::collections::HashSet;
use std::sync::RwLock;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::store::Store;

/// Prefix of every token, so leaked ones are easy to recognise in logs and scanners.
pub const TOKEN_PREFIX: &str = "glt_";

/// A new random token (256 bits).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(digest(token))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Creates a token named `name` in the store and returns it (the only time it is visible).
pub async fn create_token(
    store: &dyn Store,
    name: &str,
    now: i64,
) -> Result<String, crate::store::Error> {
    let token = generate_token();
    let id = uuid::Uuid::now_v7().to_string();
    store
        .insert_token(&id, name, &hash_token(&token), now)
        .await?;
    Ok(token)
}

/// SHA-256 digests of tokens already verified against the store, kept as bytes so that a
/// request with a known token costs one digest and one lookup, no hex string.
#[derive(Default)]
pub struct TokenCache {
    known: RwLock<HashSet<[u8; 32]>>,
}

impl TokenCache {
    async fn verify(&self, store: &dyn Store, token: &str) -> Result<bool, ApiError> {
        let digest = digest(token);
        if self
            .known
            .read()
            .map(|known| known.contains(&digest))
            .unwrap_or(false)
        {
            return Ok(true);
        }
        let exists = store.token_exists(&hex::encode(digest)).await?;
        if exists && let Ok(mut known) = self.known.write() {
            known.insert(digest);
        }
        Ok(exists)
    }
}

/// Routes open without a token: liveness and readiness probes, and the API description.
pub fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/openapi.json")
        || path == "/docs"
        || path.starts_with("/docs/")
}

/// Middleware: lets public routes through and checks the bearer token on the rest.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if is_public(request.uri().path()) {
        return Ok(next.run(request).await);
    }
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    if state
        .inner
        .server
        .open_routes
        .admits(request.uri().path(), peer)
    {
        return Ok(next.run(request).await);
    }
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let Some(header) = header else {
        return Err(ApiError::Unauthenticated(
            "send Authorization: Bearer <token>".into(),
        ));
    };
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthenticated("the Authorization header must be `Bearer <token>`".into())
        })?;
    if !state
        .inner
        .tokens
        .verify(state.inner.store.as_ref(), token)
        .await?
    {
        return Err(ApiError::Unauthenticated("the token is not valid".into()));
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), a);
    }

    #[test]
    fn only_probes_and_docs_are_public() {
        for path in [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/docs",
            "/docs/index.html",
        ] {
            assert!(is_public(path), "{path}");
        }
        for path in ["/v1/jobs", "/metrics", "/v1/logs", "/docsx", "/healthz/x"] {
            assert!(!is_public(path), "{path}");
        }
    }
}
