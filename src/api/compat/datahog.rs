//! `POST /webhook`: the datahog seed's contract. `{"provider": [ids], "callbackUrl": url}`
//! becomes a native job of one `datahog-provider` source per id and one `callback` sink.
//!
//! Invariant: every seed bug stays fixed: an empty, duplicated, unknown or non-array provider
//! list and any unusable `callbackUrl` are a 4xx (never the seed's 500), nothing is stored for
//! them, and the answer carries the job id the seed never returned.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::ApiJson;
use crate::api::jobs::{self, CreationProblems, JobView};
use crate::connectors::datahog::{self, DatahogConfig};
use crate::connectors::json_type;
use crate::connectors::registry::ValidationError;
use crate::job::spec::{JobSpec, SinkSpec, SourceSpec, SpecError};

/// The sink that delivers the collected bills to `callbackUrl`.
const CALLBACK_SINK: &str = "callback";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(webhook))
}

/// The datahog seed's request: which providers to collect, and where to send their bills.
// Both fields stay raw JSON until checked, so that each refusal can name its field and say
// what is wrong with it (serde's type errors do not name the field).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookRequest {
    /// The providers to collect, each named once (case-sensitive), e.g. `["gas", "internet"]`.
    #[schema(value_type = Vec<String>, min_items = 1, example = json!(["gas", "internet"]))]
    provider: Value,
    /// Where the signed callback carrying every provider's bills is POSTed (http or https).
    #[schema(value_type = String, example = "https://example.com/bills")]
    callback_url: Value,
}

/// The created job as `POST /v1/jobs` shows it, plus the seed's `processing` list.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAccepted {
    #[serde(flatten)]
    job: JobView,
    /// The providers being collected, as the seed answered.
    processing: Vec<String>,
}

/// Why a `/webhook` body was refused, in the seed's field names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum WebhookError {
    #[error("provider: must be an array of provider ids, not a {0}")]
    ProviderNotArray(&'static str),
    #[error("provider: name at least one provider")]
    NoProviders,
    #[error("provider: at most {known} providers can be named (one of each), got {given}")]
    TooManyProviders { known: usize, given: usize },
    #[error("provider[{index}]: must be a string, not a {kind}")]
    ProviderNotString { index: usize, kind: &'static str },
    #[error(
        "provider[{index}]: unknown provider {id:?}; known providers (case-sensitive): {known}"
    )]
    UnknownProvider {
        index: usize,
        id: String,
        known: String,
    },
    #[error("provider[{index}]: {id:?} is named twice")]
    DuplicateProvider { index: usize, id: String },
    #[error("callbackUrl: must be a string holding an http or https URL, not a {0}")]
    CallbackNotString(&'static str),
}

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        ApiError::unprocessable(error.to_string())
    }
}

/// The provider ids of `raw`: a non-empty array of distinct configured ids.
fn providers(raw: &Value, config: &DatahogConfig) -> Result<Vec<String>, WebhookError> {
    let Value::Array(items) = raw else {
        return Err(WebhookError::ProviderNotArray(json_type(raw)));
    };
    if items.is_empty() {
        return Err(WebhookError::NoProviders);
    }
    let known = config.providers.len();
    if items.len() > known {
        return Err(WebhookError::TooManyProviders {
            known,
            given: items.len(),
        });
    }
    let mut ids: Vec<String> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::String(id) = item else {
            let kind = json_type(item);
            return Err(WebhookError::ProviderNotString { index, kind });
        };
        if !config.knows(id) {
            return Err(WebhookError::UnknownProvider {
                index,
                id: id.clone(),
                known: config.providers.join(", "),
            });
        }
        if ids.contains(id) {
            return Err(WebhookError::DuplicateProvider {
                index,
                id: id.clone(),
            });
        }
        ids.push(id.clone());
    }
    Ok(ids)
}

/// The native job for `providers` delivered to `callback_url`.
fn job_spec(providers: &[String], callback_url: &str) -> JobSpec {
    let sources = providers
        .iter()
        .map(|id| SourceSpec {
            connector: datahog::NAME.to_owned(),
            name: Some(id.clone()),
            settings: json!({ "id": id }),
        })
        .collect();
    let mut sink = Map::new();
    sink.insert("url".to_owned(), Value::String(callback_url.to_owned()));
    JobSpec {
        sources,
        processors: Vec::new(),
        sinks: vec![SinkSpec {
            kind: CALLBACK_SINK.to_owned(),
            settings: sink,
        }],
        retry: None,
        resolved_dates: Vec::new(),
    }
}

/// Words a refused native spec in the seed's fields: source `i` is `provider[i]`, the
/// callback sink's settings are `callbackUrl`.
fn explain(error: SpecError) -> ApiError {
    let detail = match error {
        SpecError::Source { index, error } => format!("provider[{index}]: {error}"),
        SpecError::Sink {
            error: ValidationError::Settings(problems),
            ..
        } => format!("callbackUrl: {}", problems.join("; ")),
        other => other.to_string(),
    };
    ApiError::unprocessable(detail)
}

/// Collect datahog providers' bills and send them to `callbackUrl` (the datahog seed's route).
///
/// Creates a job of one `datahog-provider` source per provider and one `callback` sink: a
/// single signed callback carries every provider's bills once all are collected. Answers 202
/// with the job (follow it at `/v1/jobs/{id}`) once it is durably stored; `Idempotency-Key`
/// works as on `POST /v1/jobs`. Every invalid body is a 4xx problem and nothing is stored.
#[utoipa::path(post, path = "/webhook", tag = "compat", request_body = WebhookRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries of this request safe for 24 h")),
    responses(
        (status = 202, description = "Accepted and stored", body = WebhookAccepted),
        (status = 200, description = "Replay of an earlier request with the same Idempotency-Key", body = WebhookAccepted),
        CreationProblems))]
async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: ApiJson<WebhookRequest>,
) -> ApiResult<Response> {
    let request = body.value;
    let providers = providers(&request.provider, &state.inner.datahog)?;
    let Value::String(callback_url) = &request.callback_url else {
        return Err(WebhookError::CallbackNotString(json_type(&request.callback_url)).into());
    };
    let spec = job_spec(&providers, callback_url);
    // Bound to the native spec, so the same key means the same job on both routes.
    let canonical =
        serde_json::to_value(&spec).map_err(|error| ApiError::Internal(error.to_string()))?;
    let created = jobs::create(&state, &headers, &spec, &canonical, explain).await?;
    Ok(created.into_response(|job| WebhookAccepted {
        job,
        processing: providers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: Value) -> Result<Vec<String>, WebhookError> {
        providers(&raw, &DatahogConfig::default())
    }

    #[test]
    fn provider_lists_are_distinct_known_ids() {
        assert_eq!(
            check(json!(["internet", "gas"])),
            Ok(vec!["internet".to_owned(), "gas".to_owned()])
        );
        assert_eq!(check(json!([])), Err(WebhookError::NoProviders));
        assert_eq!(
            check(json!("gas")),
            Err(WebhookError::ProviderNotArray("string"))
        );
        assert_eq!(
            check(json!({"gas": true})),
            Err(WebhookError::ProviderNotArray("object"))
        );
        assert_eq!(
            check(json!(["gas", "gas"])),
            Err(WebhookError::DuplicateProvider {
                index: 1,
                id: "gas".into()
            })
        );
        assert_eq!(
            check(json!(["gas", 7])),
            Err(WebhookError::ProviderNotString {
                index: 1,
                kind: "number"
            })
        );
        assert_eq!(
            check(json!(vec!["gas"; 10_000])),
            Err(WebhookError::TooManyProviders {
                known: 2,
                given: 10_000
            })
        );
        for id in ["GAS", "__proto__", "constructor", ""] {
            let error = check(json!([id])).expect_err(id);
            assert!(
                matches!(&error, WebhookError::UnknownProvider { index: 0, id: got, .. } if got == id),
                "{error}"
            );
            assert!(error.to_string().contains("gas, internet"), "{error}");
        }
    }

    #[test]
    fn translation_is_one_source_per_provider_and_one_callback() {
        let spec = job_spec(
            &["gas".into(), "internet".into()],
            "https://example.com/hook",
        );
        assert_eq!(
            serde_json::to_value(&spec).expect("spec"),
            json!({
                "sources": [
                    {"connector": "datahog-provider", "name": "gas", "settings": {"id": "gas"}},
                    {"connector": "datahog-provider", "name": "internet", "settings": {"id": "internet"}}
                ],
                "sinks": [{"type": "callback", "url": "https://example.com/hook"}]
            })
        );
    }
}
