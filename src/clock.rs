//! The one clock: every timestamp the engine writes comes from here, so tests can move time.
//!
//! Time is milliseconds since the Unix epoch (`Millis`). `ManualClock` only moves when told to,
//! and wakes sleepers when it does.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// A source of "now" and a way to wait for a later instant on the same time line.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Millis;

    /// Waits until `now() >= at`; may return early (callers re-check).
    fn sleep_until(&self, at: Millis) -> futures::future::BoxFuture<'static, ()>;
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        jiff::Timestamp::now().as_millisecond()
    }

    fn sleep_until(&self, at: Millis) -> futures::future::BoxFuture<'static, ()> {
        let wait = (at - self.now()).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that only moves when `advance` or `set` is called; for tests of outages and schedules.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
    moved: Arc<watch::Sender<Millis>>,
}

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        let (moved, _) = watch::channel(start);
        Self {
            now: Arc::new(AtomicI64::new(start)),
            moved: Arc::new(moved),
        }
    }

    pub fn advance(&self, by: Duration) {
        let now =
            self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst) + by.as_millis() as i64;
        self.moved.send_replace(now);
    }

    pub fn set(&self, at: Millis) {
        self.now.store(at, Ordering::SeqCst);
        self.moved.send_replace(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, at: Millis) -> futures::future::BoxFuture<'static, ()> {
        let mut moved = self.moved.subscribe();
        Box::pin(async move {
            let _ = moved.wait_for(|now| *now >= at).await;
        })
    }
}

/// Formats a timestamp as RFC 3339 for API output.
pub fn rfc3339(at: Millis) -> String {
    jiff::Timestamp::from_millisecond(at)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced() {
        let clock = ManualClock::new(1_000);
        let sleeper = clock.sleep_until(61_000);
        let handle = tokio::spawn(sleeper);
        tokio::task::yield_now().await;
        assert!(!handle.is_finished());
        clock.advance(Duration::from_secs(60));
        tokio::time::timeout(Duration::from_secs(1), handle)
            .await
            .expect("sleeper woke")
            .expect("task ran");
        assert_eq!(clock.now(), 61_000);
    }

    #[test]
    fn rfc3339_formats_epoch_millis() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
