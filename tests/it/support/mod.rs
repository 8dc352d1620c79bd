//! Shared helpers of the black-box tests: the mock upstream and the app harness.

pub mod crash;
pub mod databox;
pub mod flaky_source;
pub mod harness;
pub mod imap;
pub mod mock;
pub mod outage;
pub mod pipeline_mocks;
pub mod pipeline_run;
pub mod process;
pub mod providers;
pub mod receiver;
pub mod reddit;
pub mod report_site;
pub mod served;
pub mod severable;
pub mod stackexchange;

pub use harness::{TestApp, eventually};
pub use mock::{Mock, Reply};
