//! One running pipeline: a source task and the workers of every stage, over the store's
//! durable queues.
//!
//! Invariants: a message is handed on only by a store transaction that removes it from its
//! stage (so a worker that lost a race, or a restarted runtime, cannot hand it on twice); a
//! stage takes work only while every stage it feeds has room, and the source fetches only
//! while its first stages have room, so memory is bounded by the queue capacities; stages only
//! ever wait on stages after them, and the last ones (sinks) wait on nothing, so no worker
//! count can deadlock.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::model::{DeadMessage, Pipeline, PipelineState, QueuedMessage, SourcePage};
use super::queue::{QueueDepth, StageQueue};
use super::stage::Handler;
use super::{PipelineSpec, StageError};
use crate::clock::{Millis, SharedClock};
use crate::connectors::{ConnectorContext, ConnectorRegistry, SharedConnector};
use crate::engine::BackoffPolicy;
use crate::net::rate_limit::WaitStats;
use crate::net::{RateLimiter, UpstreamLimits};
use crate::store::{Error as StoreError, SharedStore};

/// Most messages a worker takes at once from a stage that calls once per message.
const MAX_TAKE: usize = 64;
/// Wait before handling a message again after the store refused a write.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Everything a pipeline runtime needs from the process.
#[derive(Clone)]
pub struct PipelineContext {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub connectors: ConnectorRegistry,
    pub connector_context: ConnectorContext,
    pub limits: UpstreamLimits,
    pub data_dir: PathBuf,
    /// Opens the secrets of the stored definition when a pipeline starts.
    pub sealer: crate::secrets::Sealer,
    /// This process's name on the pipelines' leases.
    pub owner: Arc<str>,
    /// How long a lease lasts unrenewed: how soon another process takes over the pipelines
    /// of one that stopped without releasing them.
    pub lease: Duration,
}

/// A stage's limits: its own windows and those of the upstream it calls.
struct Limits {
    own: Option<RateLimiter>,
    upstream: Option<Arc<RateLimiter>>,
}

impl Limits {
    fn new(windows: &[crate::net::RateWindow], url: Option<&str>, all: &UpstreamLimits) -> Self {
        Self {
            own: (!windows.is_empty()).then(|| RateLimiter::new(windows.to_vec())),
            upstream: url.and_then(|url| all.for_url(url)),
        }
    }

    /// Takes a slot of every limit; `false` when cancelled first.
    async fn acquire(&self, clock: &SharedClock, cancel: &CancellationToken) -> bool {
        let acquire = async {
            if let Some(own) = &self.own {
                own.acquire(clock).await;
            }
            if let Some(upstream) = &self.upstream {
                upstream.acquire(clock).await;
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = acquire => true,
        }
    }

    /// The upstream said to wait (`429` with `Retry-After`): nothing goes out before `until`.
    fn hold_until(&self, until: Millis) {
        for limiter in self.own.iter().chain(self.upstream.as_deref()) {
            limiter.hold_until(until);
        }
    }

    fn stats(&self) -> WaitStats {
        self.own
            .iter()
            .chain(self.upstream.as_deref())
            .map(RateLimiter::stats)
            .fold(WaitStats::default(), |sum, stats| WaitStats {
                waits: sum.waits + stats.waits,
                waited_ms: sum.waited_ms + stats.waited_ms,
            })
    }
}

/// A processor or sink stage.
struct StageRun {
    index: u32,
    name: String,
    kind: &'static str,
    handler: Handler,
    queue: StageQueue,
    limits: Limits,
    workers: u32,
    max_attempts: u32,
    timeout: Duration,
    /// The stages its outputs enter (none for a sink).
    next: Vec<u32>,
    last_error: Mutex<Option<String>>,
}

struct SourceRun {
    connector: SharedConnector,
    settings: Value,
    limits: Limits,
    checkpoint: Mutex<Option<Value>>,
    last_error: Mutex<Option<String>>,
    /// The stages a fetched record enters.
    first: Vec<u32>,
}

/// A running pipeline.
pub struct Runtime {
    id: Uuid,
    spec: PipelineSpec,
    state: PipelineState,
    ctx: PipelineContext,
    source: SourceRun,
    /// Stage `n` (1-based; 0 is the source) is `stages[n - 1]`.
    stages: Vec<Arc<StageRun>>,
    backoff: BackoffPolicy,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// The live state of one stage, for views and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct LiveStage {
    pub index: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub workers: u32,
    pub queue: QueueDepth,
    /// Messages being handled right now.
    pub in_flight: usize,
    pub rate_limit: WaitStats,
    pub last_error: Option<String>,
}

/// The live state of the source.
#[derive(Debug, Clone, Serialize)]
pub struct LiveSource {
    pub connector: String,
    /// The checkpoint (cursor) the next page is fetched from.
    pub checkpoint: Option<Value>,
    pub rate_limit: WaitStats,
    pub last_error: Option<String>,
}

/// The live state of a running pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct LiveView {
    pub source: LiveSource,
    pub stages: Vec<LiveStage>,
}

/// Messages a sink finished: nothing goes on from them.
fn finished(messages: Vec<QueuedMessage>) -> Vec<(QueuedMessage, Vec<Value>)> {
    messages
        .into_iter()
        .map(|message| (message, Vec::new()))
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a pipeline cannot run.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("stage {stage}: {reason}")]
    Stage { stage: String, reason: String },
    #[error("unknown connector {0:?}")]
    Connector(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sealed(#[from] crate::secrets::SealError),
}

/// The display name of stage `index` (1-based) of `spec`: its own or `type-index`.
pub fn stage_name(spec: &PipelineSpec, index: u32) -> String {
    let processors = spec.processors.len() as u32;
    let (name, kind) = if index == 0 {
        return "source".into();
    } else if index <= processors {
        let stage = &spec.processors[(index - 1) as usize];
        (stage.options.name.clone(), stage.kind.type_name())
    } else {
        let stage = &spec.sinks[(index - 1 - processors) as usize];
        (stage.options.name.clone(), stage.kind.type_name())
    };
    name.unwrap_or_else(|| format!("{kind}-{index}"))
}

impl Runtime {
    /// Builds the stages, loads the queued messages and starts every task; they stop when
    /// `parent` is cancelled or [`Self::stop`] is called.
    pub async fn start(
        ctx: PipelineContext,
        pipeline: &Pipeline,
        parent: &CancellationToken,
    ) -> Result<Arc<Self>, StartError> {
        // Stored with its secrets sealed; the running copy holds them in clear.
        let spec = ctx.sealer.unseal_typed(&pipeline.spec)?;
        let processors = spec.processors.len() as u32;
        let sinks = spec.sinks.len() as u32;
        let sink_stages: Vec<u32> = (processors + 1..=processors + sinks).collect();
        let mut stages = Vec::new();
        for (position, stage) in spec.processors.iter().enumerate() {
            let index = position as u32 + 1;
            let handler = Handler::processor(&stage.kind).map_err(|reason| StartError::Stage {
                stage: stage_name(&spec, index),
                reason,
            })?;
            let next = if index < processors {
                vec![index + 1]
            } else {
                sink_stages.clone()
            };
            stages.push(Self::stage(
                &ctx,
                &spec,
                index,
                &stage.options,
                handler,
                next,
                stage.kind.type_name(),
            ));
        }
        for (position, stage) in spec.sinks.iter().enumerate() {
            let index = processors + 1 + position as u32;
            let handler = Handler::sink(&stage.kind, ctx.data_dir.clone()).map_err(|reason| {
                StartError::Stage {
                    stage: stage_name(&spec, index),
                    reason,
                }
            })?;
            stages.push(Self::stage(
                &ctx,
                &spec,
                index,
                &stage.options,
                handler,
                Vec::new(),
                stage.kind.type_name(),
            ));
        }
        let connector = ctx
            .connectors
            .get(&spec.source.connector)
            .ok_or_else(|| StartError::Connector(spec.source.connector.clone()))?
            .connector
            .clone();
        let upstream = connector.upstream(&spec.source.settings);
        let source = SourceRun {
            limits: Limits::new(&spec.source.rate_limit, upstream.as_deref(), &ctx.limits),
            settings: spec.source.settings.clone(),
            connector,
            checkpoint: Mutex::new(pipeline.checkpoint.clone()),
            last_error: Mutex::new(None),
            first: if processors > 0 { vec![1] } else { sink_stages },
        };
        let queued = ctx.store.pipeline_messages(pipeline.id).await?;
        let runtime = Arc::new(Self {
            id: pipeline.id,
            backoff: BackoffPolicy {
                base: spec.retry.backoff,
                cap: spec.retry.max_backoff,
            },
            state: pipeline.state,
            spec,
            ctx,
            source,
            stages,
            cancel: parent.child_token(),
            tasks: TaskTracker::new(),
        });
        let mut by_stage: Vec<Vec<QueuedMessage>> = vec![Vec::new(); runtime.stages.len()];
        for message in queued {
            match by_stage.get_mut((message.stage as usize).wrapping_sub(1)) {
                Some(list) => list.push(message),
                None => tracing::warn!(pipeline = %runtime.spec.name, stage = message.stage,
                    "a queued message sits at a stage the pipeline no longer has; it is kept"),
            }
        }
        for (stage, messages) in runtime.stages.iter().zip(by_stage) {
            stage.queue.push(messages);
        }
        for stage in &runtime.stages {
            for _ in 0..stage.workers.max(1) {
                let (runtime, stage) = (runtime.clone(), stage.clone());
                runtime
                    .tasks
                    .clone()
                    .spawn(async move { runtime.work(stage).await });
            }
        }
        if runtime.state == PipelineState::Running {
            let source = runtime.clone();
            runtime.tasks.spawn(async move { source.fetch().await });
        }
        runtime.tasks.close();
        Ok(runtime)
    }

    #[allow(clippy::too_many_arguments)]
    fn stage(
        ctx: &PipelineContext,
        spec: &PipelineSpec,
        index: u32,
        options: &super::spec::StageOptions,
        handler: Handler,
        next: Vec<u32>,
        kind: &'static str,
    ) -> Arc<StageRun> {
        Arc::new(StageRun {
            index,
            name: stage_name(spec, index),
            kind,
            limits: Limits::new(&options.rate_limit, handler.url(), &ctx.limits),
            handler,
            queue: StageQueue::new(spec.queue_capacity as usize),
            workers: options.workers,
            max_attempts: options
                .max_attempts
                .unwrap_or(spec.retry.max_attempts)
                .max(1),
            timeout: options.timeout,
            next,
            last_error: Mutex::new(None),
        })
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Stops every task; a message in flight stays queued in the store for the next start.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }

    fn stage_at(&self, index: u32) -> Option<&Arc<StageRun>> {
        self.stages.get((index as usize).wrapping_sub(1))
    }

    /// Reserves room for `slots` messages in every stage of `targets`; `false` (nothing
    /// reserved) when cancelled.
    async fn reserve(&self, targets: &[u32], slots: usize) -> bool {
        for (position, &target) in targets.iter().enumerate() {
            if let Some(stage) = self.stage_at(target)
                && !stage.queue.reserve(slots, &self.cancel).await
            {
                self.unreserve(&targets[..position], slots);
                return false;
            }
        }
        true
    }

    fn unreserve(&self, targets: &[u32], slots: usize) {
        for &target in targets {
            if let Some(stage) = self.stage_at(target) {
                stage.queue.unreserve(slots);
            }
        }
    }

    /// Hands freshly stored messages to the stages of `targets`, ending their reservation of
    /// `slots`.
    fn distribute(&self, targets: &[u32], messages: Vec<QueuedMessage>, slots: usize) {
        let mut by_stage: Vec<Vec<QueuedMessage>> = vec![Vec::new(); targets.len()];
        for message in messages {
            if let Some(position) = targets.iter().position(|&t| t == message.stage) {
                by_stage[position].push(message);
            }
        }
        for (&target, messages) in targets.iter().zip(by_stage) {
            if let Some(stage) = self.stage_at(target) {
                stage.queue.push_reserved(messages, slots);
            }
        }
    }

    /// The source: fetch a page while the first stages have room, commit it with its
    /// checkpoint, repeat; back off on failure, wait `idle_interval` on an empty page.
    async fn fetch(self: Arc<Self>) {
        let source = &self.source;
        let clock = &self.ctx.clock;
        let mut failures = 0u32;
        loop {
            if !self.reserve(&source.first, 1).await {
                return;
            }
            if !source.limits.acquire(clock, &self.cancel).await {
                return self.unreserve(&source.first, 1);
            }
            let checkpoint = lock(&source.checkpoint).clone();
            let page = tokio::select! {
                _ = self.cancel.cancelled() => return self.unreserve(&source.first, 1),
                page = source.connector.collect_page(
                    &self.ctx.connector_context, &source.settings, checkpoint.as_ref()) => page,
            };
            let wait_until = match page {
                Ok(page) => {
                    failures = 0;
                    let empty = page.records.is_empty();
                    let committed = self
                        .ctx
                        .store
                        .commit_source_page(
                            self.id,
                            SourcePage {
                                owner: self.ctx.owner.to_string(),
                                records: page.records,
                                checkpoint: page.checkpoint.clone(),
                                stages: source.first.clone(),
                            },
                            clock.now(),
                        )
                        .await;
                    match committed {
                        Ok(queued) => {
                            *lock(&source.checkpoint) = page.checkpoint;
                            *lock(&source.last_error) = None;
                            self.distribute(&source.first, queued, 1);
                            empty.then(|| {
                                clock.now() + self.spec.source.idle_interval.as_millis() as Millis
                            })
                        }
                        Err(crate::store::Error::Fenced) => {
                            // The manager stops this runtime at its next pass.
                            self.unreserve(&source.first, 1);
                            tracing::warn!(pipeline = %self.spec.name, "another process holds this pipeline now; the page fetched here is left to it");
                            *lock(&source.last_error) =
                                Some("another process took this pipeline over".into());
                            Some(clock.now() + STORE_RETRY.as_millis() as Millis)
                        }
                        Err(error) => {
                            self.unreserve(&source.first, 1);
                            tracing::error!(pipeline = %self.spec.name, %error, "cannot store a source page; it will be fetched again");
                            *lock(&source.last_error) = Some(format!("store: {error}"));
                            Some(clock.now() + STORE_RETRY.as_millis() as Millis)
                        }
                    }
                }
                Err(error) => {
                    self.unreserve(&source.first, 1);
                    failures += 1;
                    let error = StageError::from_connector(&error);
                    let now = clock.now();
                    if let Some(after) = error.retry_after {
                        source.limits.hold_until(now + after.as_millis() as Millis);
                    }
                    tracing::warn!(pipeline = %self.spec.name, error = %error.message, failures, "source page failed");
                    *lock(&source.last_error) = Some(error.message.clone());
                    let policy = BackoffPolicy {
                        base: self.spec.retry.backoff,
                        cap: self.spec.source.max_backoff,
                    };
                    let ceiling = policy.ceiling(failures).as_millis() as Millis;
                    let jittered = rand::rng().random_range(ceiling / 2..=ceiling.max(1));
                    let floor = error
                        .retry_after
                        .map_or(0, |after| after.as_millis() as Millis);
                    Some(now + jittered.max(floor))
                }
            };
            if let Some(at) = wait_until {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = clock.sleep_until(at) => {}
                }
            }
        }
    }

    /// Messages a worker takes at once from a stage that handles them one by one: each is
    /// still its own call (run concurrently), but their outcomes are committed in one store
    /// write. Small enough that the reserved room downstream stays a small part of a queue.
    fn take_size(&self, stage: &StageRun) -> usize {
        stage.handler.batch().unwrap_or_else(|| {
            let share = self.spec.queue_capacity as usize / (4 * stage.workers.max(1) as usize);
            share.clamp(1, MAX_TAKE)
        })
    }

    /// One worker of a stage.
    async fn work(self: Arc<Self>, stage: Arc<StageRun>) {
        let clock = &self.ctx.clock;
        let take = self.take_size(&stage);
        while let Some(messages) = stage.queue.take(take, clock, &self.cancel).await {
            if !self.reserve(&stage.next, messages.len()).await {
                return;
            }
            if stage.handler.batch().is_some() {
                if !stage.limits.acquire(clock, &self.cancel).await {
                    return;
                }
                self.store(&stage, messages).await;
            } else {
                self.each(&stage, messages).await;
            }
            if self.cancel.is_cancelled() {
                return;
            }
        }
    }

    /// Handles messages one call each, concurrently, then commits every success in one write
    /// and each failure on its own. The reservation taken for the batch ends here.
    async fn each(&self, stage: &StageRun, messages: Vec<QueuedMessage>) {
        let slots = messages.len();
        let http = &self.ctx.connector_context.http;
        let clock = &self.ctx.clock;
        let sink = stage.next.is_empty();
        let calls = messages.into_iter().map(|message| async move {
            if !stage.limits.acquire(clock, &self.cancel).await {
                return (message, None);
            }
            let result = if sink {
                let one = std::slice::from_ref(&message.payload);
                self.run(stage, stage.handler.store(http, one, stage.timeout))
                    .await
                    .map(|result| result.map(|()| Vec::new()))
            } else {
                self.run(
                    stage,
                    stage.handler.process(
                        http,
                        self.ctx.store.as_ref(),
                        &message.payload,
                        stage.timeout,
                    ),
                )
                .await
            };
            (message, result)
        });
        let results = futures::future::join_all(calls).await;
        if self.cancel.is_cancelled() {
            return self.unreserve(&stage.next, slots);
        }
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for (message, result) in results {
            match result {
                Some(Ok(outputs)) => done.push((message, outputs)),
                Some(Err(error)) => failed.push((message, error)),
                None => {}
            }
        }
        self.hand_on(stage, done, slots).await;
        for (message, error) in failed {
            self.failed(stage, message, error).await;
        }
    }

    /// Commits finished messages in one write: a processor's outputs enter the next stages, a
    /// sink's messages leave. Ends the batch's reservation downstream.
    async fn hand_on(
        &self,
        stage: &StageRun,
        done: Vec<(QueuedMessage, Vec<Value>)>,
        slots: usize,
    ) {
        if done.is_empty() {
            return self.unreserve(&stage.next, slots);
        }
        let count = done.len();
        let now = self.ctx.clock.now();
        let result = if stage.next.is_empty() {
            let ids = done.iter().map(|(message, _)| message.id).collect();
            self.ctx
                .store
                .complete_messages(self.id, stage.index, ids)
                .await
                .map(|_| Vec::new())
        } else {
            let moves = done
                .iter()
                .map(|(message, outputs)| (message.id, outputs.clone()))
                .collect();
            self.ctx
                .store
                .advance_messages(self.id, stage.index, moves, stage.next.clone(), now)
                .await
        };
        match result {
            Ok(queued) => {
                self.distribute(&stage.next, queued, slots);
                stage.queue.release(count);
            }
            Err(error) => {
                self.unreserve(&stage.next, slots);
                for (message, _) in done {
                    self.store_failed(stage, message, &error);
                }
            }
        }
    }

    /// Runs `call` unless the runtime stops first (`None`), within the stage's timeout.
    async fn run<T>(
        &self,
        stage: &StageRun,
        call: impl Future<Output = Result<T, StageError>>,
    ) -> Option<Result<T, StageError>> {
        tokio::select! {
            _ = self.cancel.cancelled() => None,
            result = tokio::time::timeout(stage.timeout, call) => Some(result.unwrap_or_else(|_| {
                Err(StageError::transient(format!(
                    "timed out after {}",
                    crate::config::duration::format(&stage.timeout)
                )))
            })),
        }
    }

    /// Stores a batch in one call (a `sql` sink).
    async fn store(&self, stage: &StageRun, messages: Vec<QueuedMessage>) {
        let http = &self.ctx.connector_context.http;
        let records: Vec<Value> = messages.iter().map(|m| m.payload.clone()).collect();
        let Some(result) = self
            .run(stage, stage.handler.store(http, &records, stage.timeout))
            .await
        else {
            return;
        };
        match result {
            Ok(()) => self.hand_on(stage, finished(messages), 0).await,
            // One bad record must not take the others down with it: store them one by one.
            Err(error) if !error.retryable && messages.len() > 1 => {
                for message in messages {
                    let one = std::slice::from_ref(&message.payload);
                    match self
                        .run(stage, stage.handler.store(http, one, stage.timeout))
                        .await
                    {
                        None => return,
                        Some(Ok(())) => self.hand_on(stage, finished(vec![message]), 0).await,
                        Some(Err(error)) => self.failed(stage, message, error).await,
                    }
                }
            }
            Err(error) => {
                for message in messages {
                    self.failed(stage, message, error.clone()).await;
                }
            }
        }
    }

    /// The store refused a write: the message is still queued there, so handle it again later
    /// without counting an attempt.
    fn store_failed(&self, stage: &StageRun, mut message: QueuedMessage, error: &StoreError) {
        tracing::error!(pipeline = %self.spec.name, stage = %stage.name, %error, "cannot record a message's outcome");
        message.next_at = self.ctx.clock.now() + STORE_RETRY.as_millis() as Millis;
        stage.queue.put_back(message);
    }

    /// A failed attempt: retry after a backoff, or dead-letter when out of attempts or when no
    /// retry can help.
    async fn failed(&self, stage: &StageRun, mut message: QueuedMessage, error: StageError) {
        let now = self.ctx.clock.now();
        *lock(&stage.last_error) = Some(error.message.clone());
        if let (Some(after), Some(429)) = (error.retry_after, error.http_status) {
            stage.limits.hold_until(now + after.as_millis() as Millis);
        }
        let attempts = message.attempts + 1;
        let next_at = error
            .retryable
            .then(|| {
                self.backoff.next_attempt_at(
                    attempts,
                    stage.max_attempts,
                    error.retry_after,
                    now,
                    Millis::MAX,
                    &mut rand::rng(),
                )
            })
            .flatten();
        let result = match next_at {
            Some(next_at) => {
                let recorded = self
                    .ctx
                    .store
                    .retry_message(
                        self.id,
                        message.id,
                        stage.index,
                        attempts,
                        next_at,
                        error.message.clone(),
                    )
                    .await;
                if recorded.is_ok() {
                    message.attempts = attempts;
                    message.next_at = next_at;
                    message.last_error = Some(error.message);
                    stage.queue.put_back(message);
                    return;
                }
                recorded
            }
            None => {
                tracing::warn!(pipeline = %self.spec.name, stage = %stage.name, message = message.id,
                    attempts, error = %error.message, "message dead-lettered");
                let dead = DeadMessage {
                    stage_name: stage.name.clone(),
                    attempts,
                    error: error.message.clone(),
                    http_status: error.http_status,
                    response: error.response.clone(),
                };
                let recorded = self
                    .ctx
                    .store
                    .dead_letter_message(self.id, message.clone(), dead, now)
                    .await;
                if recorded.is_ok() {
                    stage.queue.release(1);
                    return;
                }
                recorded
            }
        };
        match result {
            Err(StoreError::NotFound) => stage.queue.release(1),
            Err(error) => self.store_failed(stage, message, &error),
            Ok(()) => {}
        }
    }

    /// Queue depths, waits and last errors right now.
    pub fn live(&self) -> LiveView {
        LiveView {
            source: LiveSource {
                connector: self.spec.source.connector.clone(),
                checkpoint: lock(&self.source.checkpoint).clone(),
                rate_limit: self.source.limits.stats(),
                last_error: lock(&self.source.last_error).clone(),
            },
            stages: self
                .stages
                .iter()
                .map(|stage| {
                    let queue = stage.queue.depth();
                    LiveStage {
                        index: stage.index,
                        name: stage.name.clone(),
                        kind: stage.kind.into(),
                        workers: stage.workers,
                        in_flight: queue.depth.saturating_sub(queue.ready + queue.waiting),
                        queue,
                        rate_limit: stage.limits.stats(),
                        last_error: lock(&stage.last_error).clone(),
                    }
                })
                .collect(),
        }
    }
}
