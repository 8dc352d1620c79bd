//! Pipelines: long-lived jobs whose stages (source → processors → sinks) are connected by
//! bounded, durable queues.

mod error;
pub mod http;
pub mod import;
pub mod spec;

pub use error::StageError;
pub use spec::PipelineSpec;
