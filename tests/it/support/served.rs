//! `Served`: a test router listening on `127.0.0.1:0` for as long as the handle lives, the
//! common base of the mock upstreams.

use std::net::SocketAddr;

use axum::Router;
use tokio::task::JoinHandle;

/// A router being served; stops when dropped.
pub struct Served {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Served {
    /// Binds a free loopback port and serves `router` on it; `what` names it in panics.
    pub async fn start(router: Router, what: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("bind {what}: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("{what} addr: {error}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, task }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}
