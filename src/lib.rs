//! Gleaner: durable data collection from third-party APIs in one binary.
//!
//! Jobs are made of steps (collect from a source, deliver to a sink) that live in one
//! transactional store; workers claim steps under a fenced lease, retry them on a jittered
//! schedule, and never redo a finished step. See `ARCHITECTURE.md` for the map.

/// mimalloc instead of the system allocator, for the binary, its tests and its benches alike:
/// requests, jobs and deliveries allocate many short-lived buffers across threads, and glibc's
/// malloc took about a fifth of the process's CPU in the callback bench. Built with `no_thp`:
/// huge pages on its arenas raised idle RSS by about 10 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
