//! Black-box tests of Gleaner: the real router, store and engine over real HTTP, against a
//! scriptable mock upstream.

mod api;
mod callback_crash;
mod callbacks;
mod config;
mod crash;
mod databox;
mod datahog;
mod datahog_support;
mod dates;
mod email;
mod engine;
mod integration;
mod lookups;
mod metrics;
mod metrics_crash;
mod metrics_sources;
mod outages;
mod pipeline_crash;
mod pipelines;
mod platforms;
mod readme;
mod schedules;
mod secrets;
mod ssrf;
mod support;
mod web_reports;
