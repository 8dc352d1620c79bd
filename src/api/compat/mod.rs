//! Compatibility routes: each seed system's HTTP contract, one file per seed, translated into
//! native jobs.
//!
//! Invariant: a compatibility route only translates; it creates jobs through the same shared
//! path as `/v1/jobs` and answers errors through `ApiError`, so it never accepts what the native
//! API would refuse.

mod datahog;
mod etlas;
mod integration;
mod metrics;

use utoipa_axum::router::OpenApiRouter;

use super::AppState;

/// Every compatibility path, for `[server.open_routes]` to choose from.
pub const PATHS: &[&str] = &[
    "/webhook",
    "/api/v1/integration",
    "/api/v1/integration/logs",
    "/ingest/metrics",
    "/ingest/metrics/",
    "/data/metrics",
    "/data/metrics/{key}",
    "/health/ping",
    "/system/alive",
    "/platforms/get",
    "/execution/run",
    "/execution/get",
];

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(datahog::routes())
        .merge(integration::routes())
        .merge(metrics::routes())
        .merge(etlas::routes())
}
