//! The store conformance suite: one generic test per behaviour, instantiated for every backend
//! by `store_conformance!` (the SQLite module does it; a PostgreSQL store must too).

use serde_json::json;
use uuid::Uuid;

use super::{Error, Store};
use crate::job::{
    Claimed, DeadLetterFilter, Fence, IdempotencyClaim, JobFilter, JobStatus, NewJob, NewStep,
    Outcome, PageWrite, RetryBudget, StepError, StepKind, StepState,
};

const HOUR: i64 = 3_600_000;

fn new_job(sources: usize, sinks: usize, now: i64) -> NewJob {
    let step = |kind, name: &str| NewStep {
        kind,
        name: name.to_owned(),
        config: json!({"name": name}),
        max_attempts: 3,
        deadline_at: now + HOUR,
    };
    let mut steps: Vec<NewStep> = (0..sources)
        .map(|_| step(StepKind::Collect, "noop"))
        .collect();
    steps.extend((0..sinks).map(|_| step(StepKind::Deliver, "file")));
    NewJob {
        id: Uuid::now_v7(),
        created_at: now,
        spec: json!({"sources": []}),
        steps,
        idempotency: None,
        generated_secrets: Vec::new(),
    }
}

fn error(kind: &str) -> StepError {
    StepError {
        kind: kind.into(),
        message: format!("{kind} happened"),
        http_status: Some(503),
        response: Some("busy".into()),
    }
}

pub async fn claim_run_finish_derives_status(store: &dyn Store) {
    let job = store
        .create_job(new_job(2, 1, 1_000))
        .await
        .expect("create")
        .job;
    assert_eq!(job.status, JobStatus::Queued);
    let claimed = store.claim("w1", 10, 1_000, 31_000).await.expect("claim");
    assert_eq!(
        claimed.len(),
        2,
        "only the collect steps are due; the deliver step waits"
    );
    let detail = store.get_job(job.id).await.expect("get").expect("exists");
    assert_eq!(detail.job.status, JobStatus::Running);
    for (index, step) in claimed.iter().enumerate() {
        let page = PageWrite {
            records: vec![json!({"i": index})],
            checkpoint: Some(json!({"page": 1})),
            ..PageWrite::default()
        };
        store
            .finish(&step.fence, Outcome::Succeeded, Some(page), 2_000)
            .await
            .expect("finish");
    }
    let deliver = store
        .claim("w1", 10, 2_000, 32_000)
        .await
        .expect("claim deliver");
    assert_eq!(deliver.len(), 1);
    assert_eq!(deliver[0].step.kind, StepKind::Deliver);
    store
        .finish(&deliver[0].fence, Outcome::Succeeded, None, 3_000)
        .await
        .expect("finish deliver");
    let detail = store.get_job(job.id).await.expect("get").expect("exists");
    assert_eq!(detail.job.status, JobStatus::Succeeded);
    assert_eq!(detail.job.finished_at, Some(3_000));
    assert_eq!(detail.attempts.len(), 3);
    assert_eq!(
        store
            .job_records(job.id, None, 100)
            .await
            .expect("records")
            .len(),
        2
    );
}

/// Ends a step's attempt as succeeded, offering to run what it releases until `lease_until`.
async fn succeed_and_continue(
    store: &dyn Store,
    fence: &Fence,
    now: i64,
    lease_until: Option<i64>,
) -> super::Result<Option<Claimed>> {
    Ok(store
        .finish_and_continue(fence, Outcome::Succeeded, None, now, lease_until)
        .await?
        .map(|handed| handed.claimed))
}

/// Ending a job's last source with a handoff leases its first deliver step to the same owner
/// in that transaction (a fresh attempt under a fence, its budget started then), queues the
/// others, and leaves nothing to claim twice; ending an earlier source or asking no handoff
/// hands nothing.
pub async fn ending_the_last_source_hands_its_delivery_to_the_worker(store: &dyn Store) {
    let job = store
        .create_job(new_job(2, 2, 1_000))
        .await
        .expect("create")
        .job;
    let sources = store.claim("w1", 10, 1_000, 31_000).await.expect("claim");
    assert_eq!(sources.len(), 2);
    let early = succeed_and_continue(store, &sources[0].fence, 2_000, Some(32_000))
        .await
        .expect("finish the first source");
    assert!(early.is_none(), "another source is still running");
    let handed = succeed_and_continue(store, &sources[1].fence, 2_500, Some(32_500))
        .await
        .expect("finish the last source")
        .expect("a deliver step handed over");
    assert_eq!(handed.step.kind, StepKind::Deliver);
    assert_eq!(handed.step.state, StepState::Running);
    assert_eq!(handed.fence.owner, "w1");
    assert_eq!(handed.fence.attempt, 1);
    assert_eq!(handed.step.lease_expires_at, Some(32_500));
    assert_eq!(
        handed.step.deadline_at,
        2_500 + HOUR,
        "the budget starts at the handoff"
    );
    let detail = store.get_job(job.id).await.expect("get").expect("exists");
    assert_eq!(detail.job.status, JobStatus::Running);

    let others = store.claim("w2", 10, 3_000, 33_000).await.expect("claim");
    assert_eq!(others.len(), 1, "only the second deliver step is queued");
    assert_ne!(others[0].step.id, handed.step.id);
    assert!(matches!(
        succeed_and_continue(store, &others[0].fence, 3_100, Some(33_100)).await,
        Ok(None)
    ));
    // The handed step runs under its fence like any claimed one.
    let mut stale = handed.fence.clone();
    stale.attempt += 1;
    assert!(matches!(
        store.finish(&stale, Outcome::Succeeded, None, 3_200).await,
        Err(Error::Fenced)
    ));
    store
        .finish(&handed.fence, Outcome::Succeeded, None, 3_300)
        .await
        .expect("finish the handed step");
    let detail = store.get_job(job.id).await.expect("get").expect("exists");
    assert_eq!(detail.job.status, JobStatus::Succeeded);
    assert_eq!(detail.attempts.len(), 4);

    // Without a handoff the deliver step is queued for whoever claims.
    store
        .create_job(new_job(1, 1, 4_000))
        .await
        .expect("create");
    let source = store.claim("w1", 10, 4_000, 34_000).await.expect("claim");
    assert_eq!(source.len(), 1);
    assert!(matches!(
        succeed_and_continue(store, &source[0].fence, 4_100, None).await,
        Ok(None)
    ));
    let queued = store.claim("w2", 10, 4_200, 34_200).await.expect("claim");
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].step.kind, StepKind::Deliver);
}

/// Disables `url` as a `410 Gone` from `job_id` would.
async fn disable(store: &dyn Store, url: &str, job_id: Uuid, at: i64) {
    store
        .disable_endpoint(&super::DisabledEndpoint {
            url: url.into(),
            reason: "410 Gone".into(),
            job_id: Some(job_id),
            disabled_at: at,
        })
        .await
        .expect("disable");
}

/// The delivery input of an existing job, for a sink sending to `url`.
async fn input_of(store: &dyn Store, job_id: Uuid, url: &str) -> super::DeliveryInput {
    store
        .delivery_input(job_id, Some(url.into()))
        .await
        .expect("read")
        .expect("the job exists")
}

pub async fn delivery_input_is_one_snapshot_of_what_a_delivery_sends(store: &dyn Store) {
    assert!(
        store
            .delivery_input(Uuid::now_v7(), None)
            .await
            .expect("read")
            .is_none(),
        "an unknown job has no delivery input"
    );
    let job = store
        .create_job(new_job(2, 1, 1_000))
        .await
        .expect("create")
        .job;
    let claimed = store.claim("w1", 10, 1_000, 31_000).await.expect("claim");
    for (index, step) in claimed.iter().enumerate() {
        let page = PageWrite {
            records: vec![
                json!({"step": index, "n": 1}),
                json!({"step": index, "n": 2}),
            ],
            ..PageWrite::default()
        };
        let outcome = if index == 0 {
            Outcome::Succeeded
        } else {
            Outcome::Failed {
                error: error("status"),
            }
        };
        let page = (index == 0).then_some(page);
        store
            .finish(&step.fence, outcome, page, 2_000 + index as i64)
            .await
            .expect("finish");
    }
    let url = "https://hooks.example/in";
    let input = input_of(store, job.id, url).await;
    assert_eq!(input.created_at, 1_000);
    assert_eq!(
        input
            .sources
            .iter()
            .map(|step| (step.kind, step.state))
            .collect::<Vec<_>>(),
        [
            (StepKind::Collect, StepState::Succeeded),
            (StepKind::Collect, StepState::Failed)
        ],
        "the collect steps only, in position order"
    );
    assert_eq!(
        input.records,
        [
            (claimed[0].step.id, json!({"step": 0, "n": 1})),
            (claimed[0].step.id, json!({"step": 0, "n": 2}))
        ]
    );
    assert!(input.disabled.is_none());
    disable(store, url, job.id, 3_000).await;
    let input = input_of(store, job.id, url).await;
    assert_eq!(
        input.disabled.map(|entry| (entry.url, entry.disabled_at)),
        Some((url.to_owned(), 3_000))
    );
    let other = input_of(store, job.id, "https://other.example/").await;
    assert!(other.disabled.is_none(), "only the named endpoint");
}

/// Creates a job of one source and one deliver step at `now`, ends its source as succeeded
/// with `records` records and a handoff, and returns the deliver step handed over.
pub async fn hand_over_after(store: &dyn Store, records: usize, now: i64) -> super::Handed {
    store.create_job(new_job(1, 1, now)).await.expect("create");
    let source = store
        .claim("w1", 1, now, now + 30_000)
        .await
        .expect("claim");
    let page = PageWrite {
        records: (0..records).map(|n| json!({ "n": n })).collect(),
        ..PageWrite::default()
    };
    store
        .finish_and_continue(
            &source[0].fence,
            Outcome::Succeeded,
            Some(page),
            now + 1_000,
            Some(now + 31_000),
        )
        .await
        .expect("finish the source")
        .expect("the deliver step handed over")
}

/// A handed deliver step may come with its input, read in the transaction that ended the
/// last source: then it is exactly what `delivery_input` reads afterwards. While any endpoint
/// is disabled the store cannot know whether it is this step's, so it reads nothing then.
pub async fn a_handed_delivery_comes_with_its_input_when_no_endpoint_is_disabled(
    store: &dyn Store,
) {
    let handed = hand_over_after(store, 2, 1_000).await;
    let job_id = handed.claimed.step.job_id;
    assert_eq!(handed.claimed.step.kind, StepKind::Deliver);
    if let Some(input) = handed.input {
        let read = input_of(store, job_id, "https://hooks.example/in").await;
        assert_eq!(input.created_at, read.created_at);
        assert_eq!(input.records, read.records);
        let ended = |sources: &[crate::job::Step]| -> Vec<_> {
            sources
                .iter()
                .map(|step| (step.id, step.state, step.records))
                .collect()
        };
        assert_eq!(
            ended(&input.sources),
            ended(&read.sources),
            "the sources as they ended"
        );
        assert_eq!(input.sources[0].state, StepState::Succeeded);
        assert!(input.disabled.is_none());
    }

    disable(store, "https://hooks.example/gone", job_id, 2_500).await;
    assert!(
        hand_over_after(store, 2, 3_000).await.input.is_none(),
        "with an endpoint disabled the input is read before the send, by endpoint"
    );
}

/// A backend may read small inputs one way and large ones another (SQLite: on the writer's
/// connection, else from the read pool); a large one still comes whole and in order.
pub async fn a_large_delivery_input_is_read_whole(store: &dyn Store) {
    let job = store
        .create_job(new_job(1, 1, 1_000))
        .await
        .expect("create")
        .job;
    let claimed = store.claim("w1", 10, 1_000, 31_000).await.expect("claim");
    let records: Vec<_> = (0..1_000).map(|n| json!({"n": n})).collect();
    let page = PageWrite {
        records: records.clone(),
        ..PageWrite::default()
    };
    store
        .finish(&claimed[0].fence, Outcome::Succeeded, Some(page), 2_000)
        .await
        .expect("finish");
    let url = "https://hooks.example/large";
    disable(store, url, job.id, 3_000).await;
    let input = input_of(store, job.id, url).await;
    assert_eq!(input.sources.len(), 1);
    assert_eq!(input.sources[0].records, 1_000);
    assert_eq!(
        input.records,
        records
            .into_iter()
            .map(|record| (claimed[0].step.id, record))
            .collect::<Vec<_>>()
    );
    assert_eq!(input.disabled.map(|entry| entry.disabled_at), Some(3_000));
}

pub async fn a_fenced_worker_cannot_commit(store: &dyn Store) {
    store.create_job(new_job(1, 0, 0)).await.expect("create");
    let first = store.claim("w1", 1, 0, 100).await.expect("claim").remove(0);
    assert_eq!(
        store.rescue(200, false).await.expect("rescue"),
        1,
        "the lease expired"
    );
    let second = store
        .claim("w2", 1, 200, 30_000)
        .await
        .expect("reclaim")
        .remove(0);
    assert_eq!(second.fence.attempt, first.fence.attempt + 1);
    let page = PageWrite {
        records: vec![json!(1)],
        checkpoint: None,
        ..PageWrite::default()
    };
    assert!(matches!(
        store.save_page(&first.fence, page.clone(), 300).await,
        Err(Error::Fenced)
    ));
    assert!(matches!(
        store
            .finish(&first.fence, Outcome::Succeeded, None, 300)
            .await,
        Err(Error::Fenced)
    ));
    assert!(matches!(
        store.extend_lease(&first.fence, 9_000).await,
        Err(Error::Fenced)
    ));
    store
        .finish(&second.fence, Outcome::Succeeded, Some(page), 400)
        .await
        .expect("current holder commits");
    let records = store
        .job_records(second.step.job_id, None, 10)
        .await
        .expect("records");
    assert_eq!(records.len(), 1, "the fenced worker's page was not stored");
}

pub async fn retries_wait_then_dead_letter_and_replay(store: &dyn Store) {
    let job = store
        .create_job(new_job(1, 0, 0))
        .await
        .expect("create")
        .job;
    let step = store
        .claim("w", 1, 0, 10_000)
        .await
        .expect("claim")
        .remove(0);
    store
        .finish(
            &step.fence,
            Outcome::Retry {
                at: 5_000,
                error: error("status"),
            },
            None,
            100,
        )
        .await
        .expect("retry");
    assert!(
        store
            .claim("w", 1, 4_999, 10_000)
            .await
            .expect("early")
            .is_empty(),
        "not due yet"
    );
    assert_eq!(store.next_due().await.expect("due"), Some(5_000));
    let step = store
        .claim("w", 1, 5_000, 15_000)
        .await
        .expect("due")
        .remove(0);
    store
        .finish(
            &step.fence,
            Outcome::Dead {
                error: error("status"),
            },
            None,
            5_100,
        )
        .await
        .expect("dead");
    let detail = store.get_job(job.id).await.expect("get").expect("exists");
    assert_eq!(detail.job.status, JobStatus::Failed);
    assert_eq!(detail.steps[0].state, StepState::Dead);
    let letters = store
        .list_dead_letters(&DeadLetterFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].http_status, Some(503));
    assert_eq!(letters[0].response.as_deref(), Some("busy"));
    let budget = RetryBudget {
        max_attempts: 3,
        budget_ms: HOUR,
    };
    let filter = DeadLetterFilter {
        job_id: Some(job.id),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        store
            .replay_dead_letters(&filter, 6_000, budget)
            .await
            .expect("replay"),
        1
    );
    assert_eq!(
        store
            .replay_dead_letters(&filter, 6_000, budget)
            .await
            .expect("again"),
        0,
        "replayed once"
    );
    let step = store
        .claim("w", 1, 6_000, 16_000)
        .await
        .expect("claim replayed")
        .remove(0);
    assert_eq!(
        step.fence.attempt, 3,
        "attempt numbers keep growing across replays"
    );
    store
        .finish(&step.fence, Outcome::Succeeded, None, 6_100)
        .await
        .expect("finish");
    assert_eq!(
        store
            .get_job(job.id)
            .await
            .expect("get")
            .expect("exists")
            .job
            .status,
        JobStatus::Succeeded
    );
}

pub async fn idempotency_keys_return_the_same_job_or_conflict(store: &dyn Store) {
    let claim = |hash: &str| IdempotencyClaim {
        key: "k1".into(),
        request_hash: hash.into(),
        expires_at: HOUR,
    };
    let mut first = new_job(1, 0, 0);
    first.idempotency = Some(claim("a"));
    let created = store.create_job(first).await.expect("first");
    let mut again = new_job(1, 0, 10);
    again.idempotency = Some(claim("a"));
    let replay = store.create_job(again).await.expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.job.id, created.job.id);
    let mut other = new_job(1, 0, 20);
    other.idempotency = Some(claim("b"));
    assert!(matches!(
        store.create_job(other).await,
        Err(Error::Conflict(_))
    ));
    let mut later = new_job(1, 0, HOUR + 1);
    later.idempotency = Some(claim("b"));
    assert!(
        !store
            .create_job(later)
            .await
            .expect("expired key is free")
            .replayed
    );
    let jobs = store
        .list_jobs(&JobFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(jobs.len(), 2, "the conflicting request stored nothing");
}

pub async fn a_batch_is_stored_whole_or_not_at_all(store: &dyn Store) {
    let claim = |key: &str, hash: &str| IdempotencyClaim {
        key: key.into(),
        request_hash: hash.into(),
        expires_at: HOUR,
    };
    let mut taken = new_job(1, 0, 0);
    taken.idempotency = Some(claim("k2", "a"));
    store.create_job(taken).await.expect("first");

    // The batch's last job conflicts: its first two must not be stored either.
    let mut batch: Vec<NewJob> = (0..3).map(|_| new_job(1, 1, 10)).collect();
    batch[2].idempotency = Some(claim("k2", "b"));
    assert!(matches!(
        store.create_jobs(batch).await,
        Err(Error::Conflict(_))
    ));
    let all = JobFilter {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list_jobs(&all).await.expect("list").len(), 1);

    let batch: Vec<NewJob> = (0..3).map(|_| new_job(1, 1, 20)).collect();
    let ids: Vec<Uuid> = batch.iter().map(|job| job.id).collect();
    let created = store.create_jobs(batch).await.expect("batch");
    assert_eq!(
        created
            .iter()
            .map(|created| created.job.id)
            .collect::<Vec<_>>(),
        ids
    );
    assert!(created.iter().all(|created| !created.replayed));
    assert_eq!(store.list_jobs(&all).await.expect("list").len(), 4);
    let claimed = store.claim("w", 10, 20, HOUR).await.expect("claim");
    assert_eq!(
        claimed.len(),
        4,
        "the first job and every source of the batch are due"
    );
}

pub async fn a_claimed_job_reads_as_running_everywhere(store: &dyn Store) {
    let waiting = store.create_job(new_job(1, 0, 0)).await.expect("create");
    let claimed_job = store.create_job(new_job(1, 1, 0)).await.expect("create");
    let claimed = store.claim("w", 1, 10, HOUR).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].step.job_id, waiting.job.id, "oldest due first");
    let running = waiting.job.id;
    let queued = claimed_job.job.id;

    let status = |id| async move {
        let detail = store.get_job(id).await.expect("get").expect("job");
        detail.job.status
    };
    assert_eq!(status(running).await, JobStatus::Running);
    assert_eq!(status(queued).await, JobStatus::Queued);
    let listed = |status| async move {
        store
            .list_jobs(&JobFilter {
                status: Some(status),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_iter()
            .map(|job| job.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(JobStatus::Running).await, vec![running]);
    assert_eq!(listed(JobStatus::Queued).await, vec![queued]);
    let snapshot = store.snapshot(10).await.expect("snapshot");
    let count = |status: &str| {
        snapshot
            .jobs_by_status
            .iter()
            .find(|(name, _)| name == status)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!((count("queued"), count("running")), (1, 1));
    assert!(
        store.check_integrity().await.expect("check").is_empty(),
        "a claimed job is consistent with its steps"
    );

    // Once its step ends, the stored status says so.
    store
        .finish(&claimed[0].fence, Outcome::Succeeded, None, 20)
        .await
        .expect("finish");
    assert_eq!(status(running).await, JobStatus::Succeeded);
    assert_eq!(listed(JobStatus::Running).await, Vec::<Uuid>::new());
}

/// Every status filter agrees with each job's status and pages newest first by the cursor; so
/// does the connector filter, alone (a job with two sources of it listed once) or with a status.
pub async fn listing_by_status_or_connector_pages_newest_first(store: &dyn Store) {
    let mut ids = Vec::new();
    for at in 0..6 {
        let sources = if at == 5 { 2 } else { 1 };
        let created = store.create_job(new_job(sources, 0, at)).await;
        ids.push(created.expect("create").job.id);
    }
    // Oldest first: jobs 0–3 are claimed; 0 and 1 succeed, 2 fails, 3 stays running;
    // 4 is cancelled, 5 (two sources of one connector) stays queued.
    let claimed = store.claim("w", 4, 10, HOUR).await.expect("claim");
    let outcomes = [
        Outcome::Succeeded,
        Outcome::Succeeded,
        Outcome::Failed {
            error: error("status"),
        },
    ];
    for (step, outcome) in claimed.iter().zip(outcomes) {
        store
            .finish(&step.fence, outcome, None, 20)
            .await
            .expect("finish");
    }
    store.cancel_job(ids[4], 30).await.expect("cancel");
    let list = |status: Option<JobStatus>, connector: Option<&str>, before| {
        let filter = JobFilter {
            status,
            connector: connector.map(str::to_owned),
            before,
            limit: 1,
        };
        async move {
            store
                .list_jobs(&filter)
                .await
                .expect("list")
                .into_iter()
                .map(|job| (job.id, job.status))
                .collect::<Vec<_>>()
        }
    };
    for (status, expected) in [
        (JobStatus::Succeeded, vec![ids[1], ids[0]]),
        (JobStatus::Failed, vec![ids[2]]),
        (JobStatus::Running, vec![ids[3]]),
        (JobStatus::Cancelled, vec![ids[4]]),
        (JobStatus::Queued, vec![ids[5]]),
        (JobStatus::PartiallySucceeded, vec![]),
    ] {
        // One page of one job at a time, following the cursor.
        let mut pages = Vec::new();
        let mut before = None;
        while let Some(&(id, listed)) = list(Some(status), None, before).await.first() {
            assert_eq!(listed, status, "a job listed under {status:?} reads as it");
            pages.push(id);
            before = Some(id);
        }
        assert_eq!(pages, expected, "{status:?}");
        assert_eq!(
            list(Some(status), Some("noop"), None)
                .await
                .first()
                .map(|job| job.0),
            expected.first().copied(),
            "{status:?} of the connector"
        );
    }
    assert!(
        list(Some(JobStatus::Failed), Some("http"), None)
            .await
            .is_empty()
    );
    // By connector alone: every job once (job 5 has two sources), newest first.
    let mut pages = Vec::new();
    let mut before = None;
    while let Some(&(id, _)) = list(None, Some("noop"), before).await.first() {
        pages.push(id);
        before = Some(id);
    }
    ids.reverse();
    assert_eq!(pages, ids);
    assert!(list(None, Some("http"), None).await.is_empty());
    let two = JobFilter {
        connector: Some("noop".into()),
        limit: 2,
        ..Default::default()
    };
    let page: Vec<_> = store.list_jobs(&two).await.expect("list");
    assert_eq!(
        page.iter().map(|job| job.id).collect::<Vec<_>>(),
        ids[..2],
        "a job with two sources of the connector fills one place"
    );
}

pub async fn cancel_stops_every_unfinished_step(store: &dyn Store) {
    let job = store
        .create_job(new_job(2, 1, 0))
        .await
        .expect("create")
        .job;
    let running = store
        .claim("w", 1, 0, 10_000)
        .await
        .expect("claim")
        .remove(0);
    let cancelled = store.cancel_job(job.id, 100).await.expect("cancel");
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(matches!(
        store
            .finish(&running.fence, Outcome::Succeeded, None, 200)
            .await,
        Err(Error::Fenced)
    ));
    assert!(
        store
            .claim("w", 10, 1_000, 10_000)
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(matches!(
        store.cancel_job(job.id, 300).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.cancel_job(Uuid::now_v7(), 300).await,
        Err(Error::NotFound)
    ));
    let retried = store
        .retry_job(
            job.id,
            400,
            RetryBudget {
                max_attempts: 3,
                budget_ms: HOUR,
            },
        )
        .await
        .expect("retry");
    assert_eq!(
        retried.status,
        JobStatus::Running,
        "the retried job runs again"
    );
}

pub async fn rescue_all_at_start_requeues_running_steps(store: &dyn Store) {
    store.create_job(new_job(3, 0, 0)).await.expect("create");
    assert_eq!(
        store
            .claim("old-process", 3, 0, HOUR)
            .await
            .expect("claim")
            .len(),
        3
    );
    assert_eq!(store.rescue(10, false).await.expect("not expired"), 0);
    assert_eq!(store.rescue(10, true).await.expect("all"), 3);
    assert_eq!(
        store
            .claim("new-process", 3, 10, HOUR)
            .await
            .expect("claim")
            .len(),
        3
    );
}

pub async fn prune_deletes_only_old_finished_jobs(store: &dyn Store) {
    let old = store
        .create_job(new_job(1, 0, 0))
        .await
        .expect("create")
        .job;
    let step = store.claim("w", 1, 0, 100).await.expect("claim").remove(0);
    let page = PageWrite {
        records: vec![json!(1)],
        checkpoint: None,
        ..PageWrite::default()
    };
    store
        .finish(&step.fence, Outcome::Succeeded, Some(page), 50)
        .await
        .expect("finish");
    let open = store
        .create_job(new_job(1, 0, 60))
        .await
        .expect("create")
        .job;
    assert_eq!(store.prune(1_000, 1_000).await.expect("prune"), 1);
    assert!(store.get_job(old.id).await.expect("get").is_none());
    assert!(store.get_job(open.id).await.expect("get").is_some());
    assert!(store.check_integrity().await.expect("check").is_empty());
}

pub async fn tokens_are_found_by_hash(store: &dyn Store) {
    assert_eq!(store.token_count().await.expect("count"), 0);
    store
        .insert_token("t1", "admin", "hash-1", 0)
        .await
        .expect("insert");
    assert!(store.token_exists("hash-1").await.expect("exists"));
    assert!(!store.token_exists("hash-2").await.expect("absent"));
}

pub async fn a_pipeline_is_leased_to_one_owner_and_fenced_for_others(store: &dyn Store) {
    use crate::pipelines::model::{Pipeline, PipelineState, SourcePage};
    let spec = serde_json::from_value(json!({
        "name": "leased",
        "source": {"connector": "noop"},
        "sinks": [{"type": "http", "url": "http://127.0.0.1:3/m"}],
    }))
    .expect("spec");
    let pipeline = Pipeline {
        id: Uuid::now_v7(),
        origin: crate::schedule::Origin::Api,
        spec,
        state: PipelineState::Running,
        checkpoint: None,
        created_at: 0,
        updated_at: 0,
    };
    store.create_pipeline(&pipeline).await.expect("create");
    let id = pipeline.id;
    let gone = Uuid::now_v7();
    let lease = |owner: &str, now: i64| {
        store.lease_pipelines(owner.to_owned(), vec![id, gone], now, now + 1_000)
    };
    let page = |owner: &str| SourcePage {
        owner: owner.to_owned(),
        records: vec![json!({"n": 1})],
        checkpoint: Some(json!({"cursor": owner})),
        stages: vec![1],
    };
    assert!(
        matches!(
            store.commit_source_page(id, page("a"), 10).await,
            Err(Error::Fenced)
        ),
        "no lease taken yet"
    );
    assert_eq!(store.pipeline_lease(id).await.expect("read"), None);
    assert_eq!(
        lease("a", 0).await.expect("take"),
        vec![id],
        "a missing pipeline is not leased"
    );
    assert_eq!(store.pipeline_lease(gone).await.expect("read"), None);
    assert_eq!(
        lease("b", 500).await.expect("refused"),
        Vec::<Uuid>::new(),
        "a holds it"
    );
    assert_eq!(lease("a", 900).await.expect("renew"), vec![id]);
    assert_eq!(
        lease("b", 1_500).await.expect("still held"),
        Vec::<Uuid>::new(),
        "renewed to 1900"
    );
    store
        .commit_source_page(id, page("a"), 1_600)
        .await
        .expect("the holder commits");
    assert_eq!(
        lease("b", 1_900).await.expect("take over"),
        vec![id],
        "expired: taken over"
    );
    let held = store
        .pipeline_lease(id)
        .await
        .expect("read")
        .expect("a lease");
    assert_eq!((held.owner.as_str(), held.expires_at), ("b", 2_900));
    assert!(
        matches!(
            store.commit_source_page(id, page("a"), 1_950).await,
            Err(Error::Fenced)
        ),
        "the old holder is fenced"
    );
    store
        .commit_source_page(id, page("b"), 1_960)
        .await
        .expect("the new holder commits");
    let stored = store
        .get_pipeline(&id.to_string())
        .await
        .expect("get")
        .expect("pipeline");
    assert_eq!(stored.checkpoint, Some(json!({"cursor": "b"})));
    assert_eq!(
        store.pipeline_messages(id).await.expect("messages").len(),
        2
    );
    store
        .release_pipelines("a".into(), vec![id])
        .await
        .expect("not a's to release");
    assert_eq!(
        lease("c", 2_000).await.expect("still b's"),
        Vec::<Uuid>::new()
    );
    store
        .release_pipelines("b".into(), vec![id])
        .await
        .expect("release");
    assert_eq!(
        lease("c", 2_000).await.expect("free"),
        vec![id],
        "released: taken at once"
    );
    assert!(store.delete_pipeline(id).await.expect("delete"));
    assert!(matches!(
        store.commit_source_page(id, page("c"), 2_100).await,
        Err(Error::NotFound)
    ));
}

/// Instantiates every conformance test for a backend built by `$open(dir)`.
#[macro_export]
macro_rules! store_conformance {
    ($open:expr) => {
        $crate::store_conformance!(@tests $open;
            claim_run_finish_derives_status,
            ending_the_last_source_hands_its_delivery_to_the_worker,
            delivery_input_is_one_snapshot_of_what_a_delivery_sends,
            a_large_delivery_input_is_read_whole,
            a_handed_delivery_comes_with_its_input_when_no_endpoint_is_disabled,
            a_fenced_worker_cannot_commit,
            retries_wait_then_dead_letter_and_replay,
            idempotency_keys_return_the_same_job_or_conflict,
            a_batch_is_stored_whole_or_not_at_all,
            a_claimed_job_reads_as_running_everywhere,
            listing_by_status_or_connector_pages_newest_first,
            cancel_stops_every_unfinished_step,
            rescue_all_at_start_requeues_running_steps,
            prune_deletes_only_old_finished_jobs,
            tokens_are_found_by_hash,
            a_pipeline_is_leased_to_one_owner_and_fenced_for_others);
    };
    (@tests $open:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = ($open)(dir.path());
                $crate::store::conformance::$name(&store).await;
            }
        )*
    };
}
