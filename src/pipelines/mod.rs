//! Pipelines: long-lived jobs whose stages (source → processors → sinks) are connected by
//! bounded, durable queues.

pub mod spec;

pub use spec::PipelineSpec;
