//! The HTTP API: the native `/v1` resources, health and metrics, the OpenAPI document and the
//! docs page. Handlers validate input and call the store or the connectors; they never run SQL
//! and never talk to upstreams except through `check`.
//!
//! Invariant: every error leaves through `error::ApiError` as problem+json.

pub mod auth;
mod compat;

pub use compat::PATHS as COMPAT_ROUTES;
mod connectors;
mod dead_letters;
mod endpoints;
pub mod error;
mod extract;
mod health;
mod jobs;
mod logs;
mod lookups;
mod metrics;
mod pipelines;
pub(crate) mod platforms;
mod schedules;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::clock::SharedClock;
use crate::config::ServerConfig;
use crate::connectors::datahog::DatahogConfig;
use crate::connectors::{ConnectorContext, ConnectorRegistry};
use crate::engine::EngineConfig;
use crate::job::spec::Catalog;
use crate::observability::Telemetry;
use crate::sinks::{SinkRegistry, SinkValidation};
use crate::store::SharedStore;
use error::ApiError;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

/// The parts of [`AppState`]; built once at start.
pub struct StateInner {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub connectors: ConnectorRegistry,
    pub sinks: SinkRegistry,
    pub connector_context: ConnectorContext,
    pub sink_validation: SinkValidation,
    pub engine: EngineConfig,
    pub server: ServerConfig,
    /// The known providers `POST /webhook` accepts.
    pub datahog: DatahogConfig,
    pub telemetry: Telemetry,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
    pub tokens: auth::TokenCache,
    /// The engine's circuit breakers, for job views and metrics.
    pub breakers: crate::engine::Breakers,
    /// What schedule routes need to accept schedules and wake the scheduler.
    pub scheduler: crate::schedule::scheduler::SchedulerContext,
    /// The pipelines running in this process (none unless it has the worker role).
    pub pipelines: std::sync::Arc<crate::pipelines::PipelineManager>,
    /// Metric ingest and the series aggregates.
    pub metrics: std::sync::Arc<crate::metrics::MetricsService>,
}

impl AppState {
    pub fn new(inner: StateInner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    fn server_config(&self) -> &ServerConfig {
        &self.inner.server
    }

    fn catalog(&self) -> Catalog<'_> {
        Catalog {
            connectors: &self.inner.connectors,
            sinks: &self.inner.sinks,
            sink_validation: &self.inner.sink_validation,
            timezone: &self.inner.scheduler.timezone,
            sealer: &self.inner.scheduler.sealer,
            dates_at: None,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gleaner",
        description = "Durable data collection from third-party APIs: jobs of sources and sinks, retried on a \
                       schedule, with every record kept. Authenticate with `Authorization: Bearer <token>`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(error::Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI router with every documented route.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(jobs::routes())
        .merge(connectors::routes())
        .merge(dead_letters::routes())
        .merge(endpoints::routes())
        .merge(schedules::routes())
        .merge(lookups::routes())
        .merge(pipelines::routes())
        .merge(platforms::routes())
        .merge(metrics::routes())
        .merge(health::routes())
        .merge(logs::routes())
        .merge(compat::routes())
}

/// The OpenAPI document generated from the routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().split_for_parts().1
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let (routes, openapi) = documented().split_for_parts();
    let timeout = state.inner.server.request_timeout;
    let body_limit = state.inner.server.body_limit;
    let cors = cors_layer(&state.inner.server.cors_allow_origins);
    routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(|| async { ApiError::NotFound("no such route; see /docs".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(tower::util::option_layer(cors))
        .with_state(state)
}

/// CORS for the configured origins (outermost, so a preflight needs no token); no CORS layer
/// at all when none is configured, so browsers refuse cross-origin calls and no request pays
/// for CORS headers nobody reads.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::OPTIONS,
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::ORIGIN,
                header::ACCEPT,
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("idempotency-key"),
            ]),
    )
}

/// Counts every request by its route template in the metrics.
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    state.inner.telemetry.http_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
