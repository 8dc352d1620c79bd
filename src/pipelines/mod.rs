//! Pipelines: long-lived jobs whose stages (source → processors → sinks) are connected by
//! bounded, durable queues.
//!
//! `spec` is what users write; `model` what the store keeps; `runtime` runs one pipeline over
//! its `queue`s with each `stage`'s handler; `manager` keeps the running set in line with the
//! store; `import` reads the collection-engine seed's YAML.

pub mod accept;
mod error;
pub mod http;
pub mod import;
pub mod manager;
pub mod model;
mod queue;
pub mod runtime;
pub mod spec;
mod stage;

pub use error::StageError;
pub use manager::PipelineManager;
pub use runtime::PipelineContext;
pub use spec::PipelineSpec;
