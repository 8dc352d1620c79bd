//! Gleaner: durable data collection from third-party APIs in one binary.
//!
//! Jobs are made of steps (collect from a source, deliver to a sink) that live in one
//! transactional store; workers claim steps under a fenced lease, retry them on a jittered
//! schedule, and never redo a finished step. See `ARCHITECTURE.md` for the map.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connectors;
pub mod dates;
pub mod engine;
pub mod job;
pub mod metrics;
pub mod net;
pub mod observability;
pub mod pipelines;
pub mod platforms;
pub mod processors;
pub mod schedule;
pub mod secrets;
pub mod server;
pub mod sinks;
pub mod store;
