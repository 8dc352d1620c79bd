//! The in-memory view of one stage's durable queue: messages ready now, messages waiting for
//! their retry time, and the depth (ready + waiting + in flight) that bounds the stage.
//!
//! Invariant: the store holds every message counted here; this only decides who handles which
//! message next and when a producer must wait for room.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::model::QueuedMessage;
use crate::clock::{Millis, SharedClock};

#[derive(Default)]
struct State {
    ready: VecDeque<QueuedMessage>,
    waiting: BTreeMap<(Millis, i64), QueuedMessage>,
    depth: usize,
    /// Room promised to producers that are still working on what they will push.
    reserved: usize,
}

/// A stage's queue.
pub struct StageQueue {
    capacity: usize,
    state: Mutex<State>,
    /// A message became ready or a retry time was added.
    arrived: Notify,
    /// The depth went down.
    room: Notify,
}

/// Depths of a queue, for views and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    /// Everything the stage holds: ready, waiting to retry, and in flight.
    pub depth: usize,
    pub ready: usize,
    pub waiting: usize,
    pub capacity: usize,
}

impl StageQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds newly stored messages (counted in the depth).
    pub fn push(&self, messages: impl IntoIterator<Item = QueuedMessage>) {
        let mut state = self.lock();
        for message in messages {
            state.depth += 1;
            Self::place(&mut state, message);
        }
        drop(state);
        self.arrived.notify_waiters();
    }

    fn place(state: &mut State, message: QueuedMessage) {
        state.waiting.insert((message.next_at, message.id), message);
    }

    /// Puts back a message taken earlier, to be handled again at its `next_at`.
    pub fn put_back(&self, message: QueuedMessage) {
        Self::place(&mut self.lock(), message);
        self.arrived.notify_waiters();
    }

    /// Adds the outputs a producer reserved `slots` for (none, if it produced nothing), ending
    /// its reservation.
    pub fn push_reserved(&self, messages: Vec<QueuedMessage>, slots: usize) {
        {
            let mut state = self.lock();
            state.reserved = state.reserved.saturating_sub(slots);
        }
        if messages.is_empty() {
            self.room.notify_waiters();
        } else {
            self.push(messages);
        }
    }

    /// Gives back a reservation of `slots` that will not be used.
    pub fn unreserve(&self, slots: usize) {
        {
            let mut state = self.lock();
            state.reserved = state.reserved.saturating_sub(slots);
        }
        self.room.notify_waiters();
    }

    /// A message taken earlier left the stage.
    pub fn release(&self, count: usize) {
        let mut state = self.lock();
        state.depth = state.depth.saturating_sub(count);
        drop(state);
        self.room.notify_waiters();
    }

    /// Takes up to `max` messages whose time has come, waiting for at least one; `None` when
    /// cancelled.
    pub async fn take(
        &self,
        max: usize,
        clock: &SharedClock,
        cancel: &CancellationToken,
    ) -> Option<Vec<QueuedMessage>> {
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let next = {
                let mut state = self.lock();
                let now = clock.now();
                while let Some(entry) = state.waiting.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let message = entry.remove();
                    state.ready.push_back(message);
                }
                if !state.ready.is_empty() {
                    let count = state.ready.len().min(max.max(1));
                    return Some(state.ready.drain(..count).collect());
                }
                state.waiting.first_key_value().map(|(key, _)| key.0)
            };
            let sleep = async {
                match next {
                    Some(at) => clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = arrived => {}
                _ = sleep => {}
            }
        }
    }

    /// Waits until the queue has room for `slots` more messages (or is empty, for a batch
    /// larger than the whole queue), and reserves them: the queue never holds more than its
    /// capacity, plus what a split (one message, several outputs) adds. `false` when cancelled
    /// (nothing reserved).
    pub async fn reserve(&self, slots: usize, cancel: &CancellationToken) -> bool {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut state = self.lock();
                let taken = state.depth + state.reserved;
                if taken + slots <= self.capacity || taken == 0 {
                    state.reserved += slots;
                    return true;
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = room => {}
            }
        }
    }

    pub fn depth(&self) -> QueueDepth {
        let state = self.lock();
        QueueDepth {
            depth: state.depth,
            ready: state.ready.len(),
            waiting: state.waiting.len(),
            capacity: self.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;

    fn message(id: i64, next_at: Millis) -> QueuedMessage {
        QueuedMessage {
            id,
            stage: 1,
            payload: json!({"id": id}),
            attempts: 0,
            next_at,
            last_error: None,
        }
    }

    #[tokio::test]
    async fn retries_wait_for_their_time_and_room_follows_the_depth() {
        let clock = ManualClock::new(0);
        let shared: SharedClock = Arc::new(clock.clone());
        let cancel = CancellationToken::new();
        let queue = Arc::new(StageQueue::new(2));
        queue.push([message(1, 0), message(2, 5_000)]);
        let first = queue.take(10, &shared, &cancel).await.expect("ready");
        assert_eq!(first.iter().map(|m| m.id).collect::<Vec<_>>(), [1]);
        assert_eq!(queue.depth().depth, 2);

        let later = tokio::spawn({
            let (queue, shared, cancel) = (queue.clone(), shared.clone(), cancel.clone());
            async move { queue.take(10, &shared, &cancel).await }
        });
        tokio::task::yield_now().await;
        assert!(!later.is_finished(), "message 2 is not due yet");
        clock.advance(Duration::from_millis(5_000));
        let second = later.await.expect("task").expect("due");
        assert_eq!(second[0].id, 2);

        let waiter = tokio::spawn({
            let (queue, cancel) = (queue.clone(), cancel.clone());
            async move { queue.reserve(1, &cancel).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "full at capacity 2");
        queue.release(1);
        assert!(waiter.await.expect("task"));
        assert!(
            tokio::time::timeout(Duration::from_millis(20), queue.reserve(1, &cancel))
                .await
                .is_err(),
            "the reserved slot counts against the capacity"
        );
        queue.push_reserved(vec![message(3, 0)], 1);
        assert_eq!(queue.depth().depth, 2);
        cancel.cancel();
        assert!(queue.take(1, &shared, &cancel).await.is_none());
    }
}
