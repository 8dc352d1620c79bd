//! Extractors that turn every malformed request into the same problem+json answers: bodies
//! (content type, size, nesting depth, syntax, types, unknown fields), query strings and path ids.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// A JSON body, checked before it is parsed.
pub struct ApiJson<T> {
    pub value: T,
    /// The canonical form of the body (sorted keys), for idempotency hashing.
    pub canonical: serde_json::Value,
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as JSON with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        let (value, canonical) = parse_json(&bytes, state.server_config().json_max_depth)?;
        Ok(ApiJson { value, canonical })
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(
            "the request body is larger than the server accepts (server.body_limit)".into(),
        )
    } else {
        ApiError::BadRequest(format!("could not read the request body: {rejection}"))
    }
}

/// Parses `bytes` as JSON no deeper than `max_depth`, then into `T`.
pub fn parse_json<T: DeserializeOwned>(
    bytes: &[u8],
    max_depth: usize,
) -> Result<(T, serde_json::Value), ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "the request body is empty; send a JSON document".into(),
        ));
    }
    if let Some(depth) = exceeds_depth(bytes, max_depth) {
        return Err(ApiError::BadRequest(format!(
            "JSON nested deeper than {max_depth} levels (reached {depth})"
        )));
    }
    let canonical: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| {
        ApiError::BadRequest(format!(
            "malformed JSON at line {} column {}: {error}",
            error.line(),
            error.column()
        ))
    })?;
    let value =
        serde_json::from_value(canonical.clone()).map_err(|error| ApiError::Unprocessable {
            detail: format!("the body does not have the expected shape: {error}"),
            errors: vec![error.to_string()],
        })?;
    Ok((value, canonical))
}

/// The nesting depth reached, if it is beyond `max_depth`; strings are skipped.
fn exceeds_depth(bytes: &[u8], max_depth: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Some(depth);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// A query string that failed to parse is a 400 with the reason.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|query| ApiQuery(query.0))
            .map_err(|rejection: QueryRejection| {
                ApiError::BadRequest(format!("invalid query string: {}", rejection.body_text()))
            })
    }
}

/// A path parameter that failed to parse (e.g. a job id that is not a UUID) is a 404: no such
/// resource can exist.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|path| ApiPath(path.0))
            .map_err(|rejection: PathRejection| {
                ApiError::NotFound(format!("no such resource: {}", rejection.body_text()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_only_structure_outside_strings() {
        assert_eq!(exceeds_depth(br#"{"a":[1,2,{"b":"[[[[[["}]}"#, 3), None);
        assert_eq!(exceeds_depth(br#"[[[[1]]]]"#, 3), Some(4));
        assert_eq!(exceeds_depth(br#"{"a":"\"[[[["}"#, 1), None);
    }

    #[test]
    fn syntax_is_400_and_shape_is_422() {
        let syntax = parse_json::<serde_json::Value>(b"{", 8).expect_err("syntax");
        assert!(matches!(syntax, ApiError::BadRequest(_)));
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Shape {
            a: u32,
        }
        let shape = parse_json::<Shape>(br#"{"a":"x"}"#, 8).expect_err("type");
        assert!(matches!(shape, ApiError::Unprocessable { .. }));
        let unknown = parse_json::<Shape>(br#"{"a":1,"b":2}"#, 8).expect_err("unknown field");
        assert!(unknown.to_string().contains("unknown field"), "{unknown}");
    }
}
