//! Outages on simulated time (issue 4, acceptance 2 and 3): a provider down for an hour or past
//! its 24 h budget, a callback receiver down for hours, a `410 Gone`, and a delivery that
//! exhausted its schedule.
//!
//! The app, the mock providers and the receiver share one `ManualClock`. The test moves it and,
//! after every move, waits in bounded real time until the engine has settled: no step running
//! and none due at the clock's "now". Nothing waits for simulated time to pass.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gleaner::clock::{Clock, ManualClock, Millis};
use gleaner::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::outage::manual;
use crate::support::providers::{GAS, INTERNET, MockProviders, ProvidersConfig};
use crate::support::receiver::{CallbackReceiver, Delivery, ReceiverConfig, Scripted};

/// A valid Standard Webhooks secret (32 bytes of key), the default of every callback here.
const SECRET: &str = "whsec_b3V0YWdlLXRlc3RzLXNpZ25pbmcta2V5LTMyYnl0ZXM=";
/// The simulated start, 2030-03-17T17:46:40Z: far from the wall clock on purpose, so nothing
/// passes by accident of reading the wrong clock.
const T0: Millis = 1_900_000_000_000;
const SECOND: Millis = 1_000;
const MINUTE: Millis = 60 * SECOND;
const HOUR: Millis = 60 * MINUTE;
/// The default callback schedule: the wait before each attempt.
const SCHEDULE: [Millis; 8] = [
    0,
    5 * SECOND,
    5 * MINUTE,
    30 * MINUTE,
    2 * HOUR,
    5 * HOUR,
    10 * HOUR,
    10 * HOUR,
];
/// The default jitter of the callback schedule, ± this fraction.
const JITTER: f64 = 0.2;
/// Real time the engine gets to settle after each move of the clock.
const SETTLE: Duration = Duration::from_secs(10);

/// The app, the mock providers and the receiver on one manual clock.
struct World {
    clock: ManualClock,
    providers: MockProviders,
    receiver: CallbackReceiver,
    app: TestApp,
}

impl World {
    /// Starts everything at [`T0`] with the callback secret and the providers' URL configured;
    /// `change` adjusts the rest of the config.
    async fn start(change: impl FnOnce(&mut Config)) -> World {
        let clock = ManualClock::new(T0);
        let providers = MockProviders::start(ProvidersConfig {
            time: manual(&clock),
            ..ProvidersConfig::default()
        })
        .await;
        let receiver = CallbackReceiver::start(ReceiverConfig {
            time: manual(&clock),
            ..ReceiverConfig::default()
        })
        .await;
        receiver.set_secret(SECRET);
        let base = providers.base_url();
        let app = TestApp::builder()
            .clock(clock.clone())
            .config(|config| {
                config.datahog.base_url = base.parse().expect("mock URL");
                config.sinks.callback.secret = Some(SECRET.into());
                change(config);
            })
            .start()
            .await;
        World {
            clock,
            providers,
            receiver,
            app,
        }
    }

    fn now(&self) -> Millis {
        self.clock.now()
    }

    /// The breaker key of the mock providers' host.
    fn host_key(&self) -> String {
        format!("host {}", self.providers.base_url())
    }

    /// `POST /webhook` with the seed's body; returns the job id.
    async fn submit(&self, providers: &[&str], path: &str) -> String {
        let body = json!({"provider": providers, "callbackUrl": self.receiver.url(path)});
        let answer = self.app.post("/webhook", &body).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
        answer.json()["id"].as_str().expect("job id").to_owned()
    }

    async fn jobs(&self, ids: &[String]) -> Vec<Value> {
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            jobs.push(self.app.job(id).await);
        }
        jobs
    }

    /// Waits until no step of `ids` is running or due at the clock's now; returns the jobs.
    async fn settle(&self, ids: &[String]) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let now = self.now();
            let jobs = self.jobs(ids).await;
            let busy = jobs.iter().flat_map(steps).find(|step| !is_idle(step, now));
            let Some(busy) = busy else { return jobs };
            assert!(
                started.elapsed() < SETTLE,
                "the engine did not settle within {SETTLE:?} at {}: {busy:#}",
                now - T0
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Moves the clock to the jobs' next attempts, one after the other, in moves of at most
    /// `max_move`, until every job is finished; fails past `horizon`. Between attempts nothing
    /// may reach the receiver. Returns the finished jobs.
    async fn follow_schedule(
        &self,
        ids: &[String],
        max_move: Millis,
        horizon: Millis,
    ) -> Vec<Value> {
        loop {
            let jobs = self.settle(ids).await;
            if jobs.iter().all(is_finished) {
                return jobs;
            }
            let next = jobs
                .iter()
                .flat_map(steps)
                .filter_map(due_at)
                .min()
                .unwrap_or_else(|| panic!("an unfinished job has no next attempt: {jobs:#?}"));
            assert!(
                next <= horizon,
                "next attempt at T0+{} ms is past the horizon",
                next - T0
            );
            let target = next.min(self.now() + max_move);
            let seen = self.receiver.deliveries().len();
            self.clock.set(target);
            if target < next {
                self.settle(ids).await;
                assert_eq!(
                    self.receiver.deliveries().len(),
                    seen,
                    "a delivery before its scheduled time (clock at T0+{} ms)",
                    target - T0
                );
            }
        }
    }
}

fn steps(job: &Value) -> impl Iterator<Item = &Value> {
    job["steps"].as_array().expect("steps").iter()
}

fn millis(text: &Value) -> Option<Millis> {
    text.as_str().map(|text| {
        text.parse::<jiff::Timestamp>()
            .expect("RFC 3339")
            .as_millisecond()
    })
}

/// When a queued or retrying step runs next.
fn due_at(step: &Value) -> Option<Millis> {
    matches!(step["state"].as_str(), Some("queued" | "retrying"))
        .then(|| millis(&step["next_attempt_at"]))
        .flatten()
}

/// Not running, and not due at `now` (a due step is about to be claimed).
fn is_idle(step: &Value, now: Millis) -> bool {
    match step["state"].as_str() {
        Some("running") => false,
        Some("queued" | "retrying") => due_at(step).is_some_and(|at| at > now),
        _ => true,
    }
}

fn is_finished(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("succeeded" | "partially_succeeded" | "failed" | "cancelled")
    )
}

/// The step of `job` named `name` (a source's name, or `callback` for the delivery).
fn step<'a>(job: &'a Value, name: &str) -> &'a Value {
    let wanted = |step: &&Value| match name {
        "callback" => step["kind"] == "deliver",
        source => step["kind"] == "collect" && step_source(job, step) == Some(source),
    };
    steps(job)
        .find(wanted)
        .unwrap_or_else(|| panic!("no step {name}: {job:#}"))
}

/// The provider a collect step fetches, from the job's spec (sources come first, in order).
fn step_source<'a>(job: &'a Value, step: &Value) -> Option<&'a str> {
    let position = steps(job).position(|each| each["id"] == step["id"])?;
    job["spec"]["sources"][position]["settings"]["id"].as_str()
}

/// The attempt log of one step, in attempt order.
fn attempts_of<'a>(job: &'a Value, step: &Value) -> Vec<&'a Value> {
    let mut attempts: Vec<&Value> = job["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter(|attempt| attempt["step_id"] == step["id"])
        .collect();
    attempts.sort_by_key(|attempt| attempt["attempt"].as_u64());
    attempts
}

fn as_millis(value: &Value) -> Millis {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// The bills of `provider` exactly as the mock serves them.
fn bills(provider: &str) -> Value {
    let raw = match provider {
        "gas" => GAS,
        "internet" => INTERNET,
        other => panic!("no bills for {other}"),
    };
    serde_json::from_str(raw).expect("bills")
}

/// The callback body's sources by name.
fn sources(body: &Value) -> BTreeMap<String, Value> {
    body["data"]["sources"]
        .as_array()
        .unwrap_or_else(|| panic!("sources in {body}"))
        .iter()
        .map(|source| {
            (
                source["name"].as_str().expect("name").to_owned(),
                source.clone(),
            )
        })
        .collect()
}

/// A signed callback for `job` carrying both providers, succeeded, with their exact bills.
#[track_caller]
fn assert_complete(delivery: &Delivery, job: &str) {
    assert!(
        delivery.signature_ok(),
        "signature: {:?}",
        delivery.signature
    );
    let body = delivery.json();
    assert_eq!(body["type"], "job.succeeded", "{body}");
    assert_eq!(body["data"]["id"], job, "{body}");
    assert_eq!(body["data"]["status"], "succeeded", "{body}");
    let sources = sources(&body);
    assert_eq!(sources.len(), 2, "{body}");
    for name in ["gas", "internet"] {
        let source = &sources[name];
        assert_eq!(source["status"], "succeeded", "{name} in {body}");
        assert_eq!(source["data"], bills(name), "{name} in {body}");
        assert_eq!(source["error"], Value::Null, "{name} in {body}");
    }
}

/// Each attempt started its schedule's wait (± jitter) after the one before, and the attempts'
/// start times are exactly the receiver's arrival times of the delivery's `webhook-id`.
#[track_caller]
fn assert_follows_schedule(attempts: &[&Value], arrivals: &[Millis]) {
    let started: Vec<Millis> = attempts
        .iter()
        .map(|attempt| as_millis(&attempt["started_at"]))
        .collect();
    assert_eq!(
        started, arrivals,
        "the attempt log matches what the receiver saw"
    );
    assert!(started.len() <= SCHEDULE.len(), "{started:?}");
    for (n, pair) in started.windows(2).enumerate() {
        let wait = SCHEDULE[n + 1] as f64;
        let gap = pair[1] - pair[0];
        let low = (wait * (1.0 - JITTER)).floor() as Millis - 1;
        let high = (wait * (1.0 + JITTER)).ceil() as Millis + 1;
        assert!(
            (low..=high).contains(&gap),
            "attempt {} came {gap} ms after attempt {}; the schedule says {wait} ms ± {JITTER}",
            n + 2,
            n + 1
        );
    }
}

/// Deliveries with `webhook-id` `id`.
fn deliveries_of(receiver: &CallbackReceiver, id: &str) -> Vec<Delivery> {
    receiver.by_webhook_id().remove(id).unwrap_or_default()
}

/// The `webhook-id` of the deliveries of `job` (its body's `data.id`); exactly one id per job.
fn webhook_id_of(receiver: &CallbackReceiver, job: &str) -> String {
    let ids: Vec<String> = receiver
        .by_webhook_id()
        .into_iter()
        .filter(|(_, deliveries)| deliveries.iter().all(|d| d.json()["data"]["id"] == job))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 1, "one webhook-id for job {job}: {ids:?}");
    ids[0].clone()
}

async fn metrics(app: &TestApp) -> String {
    let answer = app.get("/metrics").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.text
}

/// Test 2, first half: `gas` is down for an hour of simulated time while `internet` is up.
/// Every job completes with one callback, sent only once both providers' bills are in; the
/// host's breaker opens during the outage, and waiting on it costs no attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_hour_long_provider_outage_delays_callbacks_until_all_data_is_in() {
    const JOBS: usize = 20;
    const OUTAGE_END: Millis = T0 + HOUR;
    const MOVE: Millis = 2 * MINUTE;
    let world = World::start(|_| {}).await;
    world.providers.add_outage("gas", T0, OUTAGE_END);
    let mut ids = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        ids.push(world.submit(&["gas", "internet"], "/bills").await);
    }
    let host = world.host_key();
    let open_line = format!("gleaner_circuit_breaker{{key=\"{host}\",state=\"open\"}} 1");
    let (mut breaker_listed, mut breaker_on_step, mut breaker_in_metrics) = (false, false, false);
    let jobs = loop {
        let jobs = world.settle(&ids).await;
        let now = world.now();
        if now < OUTAGE_END {
            assert!(
                world.receiver.deliveries().is_empty(),
                "a callback at T0+{} ms, while gas was down",
                now - T0
            );
            for job in &jobs {
                assert_eq!(step(job, "internet")["state"], "succeeded", "{job:#}");
                assert_ne!(step(job, "gas")["state"], "succeeded", "{job:#}");
                assert_eq!(step(job, "callback")["state"], "waiting", "{job:#}");
            }
            let breakers = world.app.get("/v1/breakers").await.json();
            let listed = breakers["breakers"]
                .as_array()
                .expect("breakers")
                .iter()
                .any(|breaker| breaker["key"] == host.as_str() && breaker["state"] == "open");
            if listed {
                breaker_listed = true;
                breaker_on_step |= jobs
                    .iter()
                    .any(|job| step(job, "gas")["breaker"]["state"] == "open");
                breaker_in_metrics |= metrics(&world.app).await.contains(&open_line);
            }
        }
        if jobs.iter().all(is_finished) {
            break jobs;
        }
        assert!(
            now < OUTAGE_END + 2 * HOUR,
            "jobs still open at T0+{} ms",
            now - T0
        );
        world.clock.advance(Duration::from_millis(MOVE as u64));
    };
    assert!(
        breaker_listed,
        "the breaker of {host} opened during the outage"
    );
    assert!(
        breaker_on_step,
        "GET /v1/jobs/{{id}} showed the open breaker on the gas step"
    );
    assert!(
        breaker_in_metrics,
        "/metrics showed the open breaker: {open_line}"
    );

    let (mut deferred, mut tries) = (0, 0);
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let gas = step(job, "gas");
        let attempts = gas["attempts"].as_u64().expect("attempts");
        let deferrals = gas["deferred_attempts"]
            .as_u64()
            .expect("deferred_attempts");
        let max = gas["max_attempts"].as_u64().expect("max_attempts");
        // Every gas step was claimed at least once while the breaker was open, and each such
        // claim is a deferral: `max_attempts` grew by one for it, so the budget of real
        // attempts (the default 25) is untouched and the real attempts stay within it.
        assert!(deferrals > 0, "{gas:#}");
        assert_eq!(max - deferrals, 25, "{gas:#}");
        assert!(attempts - deferrals <= 25, "{gas:#}");
        deferred += deferrals;
        tries += attempts - deferrals;
        let log = attempts_of(job, gas);
        let waited = log
            .iter()
            .filter(|attempt| attempt["outcome"] == "deferred")
            .inspect(|attempt| {
                // Waited on the open breaker, or was its failed half-open probe.
                let probe = attempt["error_kind"] == "status" && attempt["http_status"] == 500;
                assert!(
                    attempt["error_kind"] == "breaker_open" || probe,
                    "{attempt}"
                );
            })
            .count();
        assert_eq!(waited as u64, deferrals, "{job:#}");
        let failed = log
            .iter()
            .find(|attempt| attempt["outcome"] == "retrying")
            .expect("a failed fetch in the attempt log");
        assert_eq!(failed["http_status"], 500, "{failed}");
        assert_eq!(failed["response"], "#fail", "{failed}");
        assert!(as_millis(&failed["started_at"]) < OUTAGE_END, "{failed}");
        let last = log.last().expect("attempts");
        assert_eq!(last["outcome"], "succeeded", "{last}");
        assert!(as_millis(&last["started_at"]) >= OUTAGE_END, "{last}");
        assert_eq!(
            step(job, "internet")["attempts"],
            1,
            "internet fetched once: {job:#}"
        );
    }
    let breakers = world.app.get("/v1/breakers").await.json();
    assert_eq!(breakers["breakers"], json!([]), "closed again: {breakers}");
    eprintln!(
        "2a: {JOBS} jobs, gas: {tries} attempts, {deferred} deferrals, {} calls during the outage",
        world.providers.counts("gas").failures
    );
    // A provider that succeeded is never fetched again.
    assert_eq!(world.providers.counts("gas").successes, JOBS as u64);
    assert_eq!(world.providers.counts("internet").calls, JOBS as u64);
    assert!(
        world
            .providers
            .calls()
            .iter()
            .all(|call| call.status != 500 || call.during_outage),
        "only the outage failed calls"
    );

    let deliveries = world.receiver.deliveries();
    assert_eq!(deliveries.len(), JOBS, "one callback per job, none retried");
    assert_eq!(world.receiver.duplicate_successes(), 0);
    for delivery in &deliveries {
        assert!(delivery.is_success());
        assert!(
            delivery.at >= OUTAGE_END,
            "callback at T0+{} ms",
            delivery.at - T0
        );
        let job = delivery.json()["data"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert_complete(delivery, &job);
    }
    let mut delivered: Vec<String> = deliveries
        .iter()
        .map(|delivery| {
            delivery.json()["data"]["id"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    delivered.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(delivered, expected, "every job's callback, once");
}

/// Test 2, second half: `gas` stays down past its 24 h time budget. The job ends
/// `partially_succeeded` and its callback names gas as dead, with the reason, next to
/// internet's bills.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_down_past_its_budget_gives_a_partial_callback() {
    const JOBS: usize = 3;
    const BUDGET_END: Millis = T0 + 24 * HOUR;
    const MOVE: Millis = 30 * MINUTE;
    // The default 25 attempts: waiting on the open breaker, and probing it, uses none of them,
    // so the time budget is what runs out.
    let world = World::start(|_| {}).await;
    world.providers.add_outage("gas", T0, T0 + 30 * HOUR);
    let mut ids = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        ids.push(world.submit(&["gas", "internet"], "/partial").await);
    }
    let jobs = loop {
        let jobs = world.settle(&ids).await;
        let now = world.now();
        if now < BUDGET_END {
            assert!(
                world.receiver.deliveries().is_empty(),
                "callback at T0+{} ms",
                now - T0
            );
            for job in &jobs {
                assert_eq!(step(job, "callback")["state"], "waiting", "{job:#}");
                assert_eq!(step(job, "gas")["state"], "retrying", "{job:#}");
            }
        }
        if jobs.iter().all(is_finished) {
            break jobs;
        }
        assert!(
            now < BUDGET_END + 2 * HOUR,
            "jobs still open at T0+{} ms",
            now - T0
        );
        world.clock.advance(Duration::from_millis(MOVE as u64));
    };
    for job in &jobs {
        assert_eq!(job["status"], "partially_succeeded", "{job:#}");
        let gas = step(job, "gas");
        assert_eq!(gas["state"], "dead", "{gas:#}");
        let last_error = gas["last_error"].as_str().expect("last_error");
        assert!(last_error.contains("time budget"), "{last_error}");
        let last = *attempts_of(job, gas).last().expect("attempts");
        assert!(as_millis(&last["started_at"]) >= BUDGET_END, "{last}");
        let dead = world
            .app
            .dead_letters(job["id"].as_str().expect("id"))
            .await;
        assert!(
            dead.iter().any(|letter| letter["step_id"] == gas["id"]),
            "gas dead-lettered: {dead:?}"
        );
        let attempts = gas["attempts"].as_u64().expect("attempts");
        let deferrals = gas["deferred_attempts"].as_u64().expect("deferrals");
        assert!(
            attempts - deferrals <= 25,
            "within the attempt limit: {gas:#}"
        );
        eprintln!("2b: gas {attempts} attempts, {deferrals} deferrals");
    }
    let deliveries = world.receiver.deliveries();
    assert_eq!(deliveries.len(), JOBS, "one callback per job");
    for delivery in &deliveries {
        assert!(
            delivery.is_success() && delivery.signature_ok(),
            "{delivery:?}"
        );
        assert!(
            delivery.at >= BUDGET_END,
            "callback at T0+{} ms",
            delivery.at - T0
        );
        let body = delivery.json();
        assert_eq!(body["type"], "job.partially_succeeded", "{body}");
        assert_eq!(body["data"]["status"], "partially_succeeded", "{body}");
        assert!(
            ids.iter().any(|id| body["data"]["id"] == id.as_str()),
            "{body}"
        );
        let sources = sources(&body);
        let gas = &sources["gas"];
        assert_eq!(gas["status"], "dead", "{body}");
        assert!(
            gas["error"]
                .as_str()
                .is_some_and(|error| error.contains("time budget")),
            "gas says why: {body}"
        );
        assert_eq!(gas["data"], json!([]), "{body}");
        let internet = &sources["internet"];
        assert_eq!(internet["status"], "succeeded", "{body}");
        assert_eq!(internet["data"], bills("internet"), "{body}");
        assert_eq!(internet["error"], Value::Null, "{body}");
    }
}

/// Test 3, first part: the receiver is down for 3 h. Each delivery's attempts follow the
/// schedule (0, 5 s, 5 min, 30 min, 2 h, 5 h … ± 20 %) in the attempt log, and the first
/// attempt after the outage lands, once per `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_down_for_three_hours_gets_the_callbacks_on_schedule() {
    const JOBS: usize = 3;
    const OUTAGE_END: Millis = T0 + 3 * HOUR;
    let world = World::start(|_| {}).await;
    world.receiver.add_down_window(T0, OUTAGE_END);
    let mut ids = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        ids.push(world.submit(&["gas", "internet"], "/late").await);
    }
    let jobs = world
        .follow_schedule(&ids, 10 * MINUTE, T0 + 12 * HOUR)
        .await;
    assert_eq!(world.receiver.duplicate_successes(), 0);
    for job in &jobs {
        let id = job["id"].as_str().expect("id");
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let deliver = step(job, "callback");
        assert_eq!(deliver["max_attempts"], SCHEDULE.len(), "{deliver:#}");
        assert_eq!(
            deliver["deferred_attempts"], 0,
            "the breaker stayed shut: {deliver:#}"
        );
        let attempts = attempts_of(job, deliver);
        let webhook_id = webhook_id_of(&world.receiver, id);
        let deliveries = deliveries_of(&world.receiver, &webhook_id);
        let arrivals: Vec<Millis> = deliveries.iter().map(|delivery| delivery.at).collect();
        assert_follows_schedule(&attempts, &arrivals);
        let (last, failed) = attempts.split_last().expect("attempts");
        assert!(
            (5..=6).contains(&attempts.len()),
            "attempts 1–4 fall within the first 3 h, 6 is past it: {attempts:?}"
        );
        for attempt in failed {
            assert_eq!(attempt["outcome"], "retrying", "{attempt}");
            assert_eq!(attempt["http_status"], 503, "{attempt}");
            assert!(as_millis(&attempt["started_at"]) < OUTAGE_END, "{attempt}");
        }
        assert_eq!(last["outcome"], "succeeded", "{last}");
        assert_eq!(last["http_status"], 200, "{last}");
        assert_eq!(last["response"], "ok", "{last}");
        assert!(as_millis(&last["started_at"]) >= OUTAGE_END, "{last}");
        let (landed, refused) = deliveries.split_last().expect("deliveries");
        assert!(refused.iter().all(|delivery| delivery.status == Some(503)));
        assert!(landed.is_success());
        assert_complete(landed, id);
        eprintln!(
            "3a: job {id}: attempts at T0 + {:?} s",
            arrivals
                .iter()
                .map(|at| (at - T0) / SECOND)
                .collect::<Vec<_>>()
        );
    }
}

/// Test 3, second part: a `410 Gone` disables the endpoint; another job's delivery to it fails
/// at once without a request; enabling it and replaying the dead letters delivers both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_410_disables_the_endpoint_until_enabled_and_replayed() {
    let world = World::start(|_| {}).await;
    let url = world.receiver.url("/gone");
    world
        .receiver
        .push_for("/gone", Scripted::status(410).body("this hook is gone"));
    let first = world.submit(&["gas", "internet"], "/gone").await;
    let jobs = world.settle(std::slice::from_ref(&first)).await;
    let deliver = step(&jobs[0], "callback");
    assert_eq!(deliver["state"], "failed", "410 is final: {deliver:#}");
    let attempts = attempts_of(&jobs[0], deliver);
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["error_kind"], "gone", "{}", attempts[0]);
    assert_eq!(attempts[0]["http_status"], 410, "{}", attempts[0]);
    assert_eq!(
        attempts[0]["response"], "this hook is gone",
        "{}",
        attempts[0]
    );
    assert_eq!(
        jobs[0]["status"], "failed",
        "a failed delivery fails the job"
    );

    let disabled = world.app.get("/v1/endpoints/disabled").await.json();
    let endpoints = disabled["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "{disabled}");
    assert_eq!(endpoints[0]["url"], url.as_str(), "{disabled}");
    assert_eq!(endpoints[0]["job_id"], first.as_str(), "{disabled}");

    world.clock.advance(Duration::from_secs(60));
    let second = world.submit(&["gas", "internet"], "/gone").await;
    let jobs = world.settle(std::slice::from_ref(&second)).await;
    let deliver = step(&jobs[0], "callback");
    assert_eq!(deliver["state"], "failed", "{deliver:#}");
    let attempts = attempts_of(&jobs[0], deliver);
    assert_eq!(attempts.len(), 1, "failed at once: {attempts:?}");
    assert_eq!(
        attempts[0]["error_kind"], "endpoint_disabled",
        "{}",
        attempts[0]
    );
    assert_eq!(
        world.receiver.deliveries().len(),
        1,
        "no request to a disabled endpoint"
    );
    let ids = [first.clone(), second.clone()];
    for id in &ids {
        assert_eq!(
            world.app.dead_letters(id).await.len(),
            1,
            "{id} dead-lettered"
        );
    }

    let enable = world
        .app
        .post("/v1/endpoints/enable", &json!({"url": url}))
        .await;
    assert_eq!(enable.status, StatusCode::OK, "{}", enable.text);
    let again = world
        .app
        .post("/v1/endpoints/enable", &json!({"url": url}))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.text);
    let disabled = world.app.get("/v1/endpoints/disabled").await.json();
    assert_eq!(disabled["endpoints"], json!([]), "{disabled}");

    world.clock.advance(Duration::from_secs(60));
    let replay = world
        .app
        .post("/v1/dead-letters/replay", &json!({"all": true}))
        .await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.text);
    assert_eq!(replay.json()["replayed"], 2, "{}", replay.text);
    let jobs = world.settle(&ids).await;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job:#}");
    }
    let landed = world.receiver.successful();
    assert_eq!(landed.len(), 2, "both delivered after the replay");
    assert_eq!(world.receiver.duplicate_successes(), 0);
    for id in &ids {
        let webhook_id = webhook_id_of(&world.receiver, id);
        let deliveries = deliveries_of(&world.receiver, &webhook_id);
        let last = deliveries.last().expect("delivered");
        assert!(last.is_success());
        assert_complete(last, id);
    }
    for letter in world.app.dead_letters(&first).await {
        assert!(letter["replayed_at"].is_i64(), "marked replayed: {letter}");
    }
}

/// Test 3, last part: a delivery to a receiver that never comes back goes through all eight
/// attempts of the schedule and is dead-lettered; replaying it delivers it, and
/// `POST /v1/jobs/{id}/redeliver` sends it again with the same `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exhausted_delivery_is_dead_lettered_replayed_and_redelivered() {
    let world = World::start(|_| {}).await;
    world.receiver.set_down(true);
    let id = world.submit(&["gas", "internet"], "/never").await;
    let ids = [id.clone()];
    let jobs = world.follow_schedule(&ids, HOUR, T0 + 48 * HOUR).await;
    let job = &jobs[0];
    assert_eq!(job["status"], "failed", "{job:#}");
    let deliver = step(job, "callback");
    assert_eq!(deliver["state"], "dead", "{deliver:#}");
    let attempts = attempts_of(job, deliver);
    assert_eq!(
        attempts.len(),
        SCHEDULE.len(),
        "the whole schedule: {attempts:?}"
    );
    let webhook_id = webhook_id_of(&world.receiver, &id);
    let refused = deliveries_of(&world.receiver, &webhook_id);
    let arrivals: Vec<Millis> = refused.iter().map(|delivery| delivery.at).collect();
    assert_follows_schedule(&attempts, &arrivals);
    assert!(refused.iter().all(|delivery| delivery.status == Some(503)));
    let letters = world.app.dead_letters(&id).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["step_id"], deliver["id"], "{letter}");
    assert_eq!(letter["state"], "dead", "{letter}");
    assert_eq!(letter["http_status"], 503, "{letter}");
    let error = letter["error"].as_str().expect("error");
    assert!(error.contains("gave up after 8 attempts"), "{error}");

    world.receiver.set_down(false);
    world.clock.advance(Duration::from_secs(3600));
    let replay = world
        .app
        .post("/v1/dead-letters/replay", &json!({"ids": [letter["id"]]}))
        .await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.text);
    assert_eq!(replay.json()["replayed"], 1, "{}", replay.text);
    let jobs = world.settle(&ids).await;
    assert_eq!(jobs[0]["status"], "succeeded", "{:#}", jobs[0]);
    let replayed = deliveries_of(&world.receiver, &webhook_id);
    assert_eq!(
        replayed.len(),
        SCHEDULE.len() + 1,
        "one more request, same webhook-id"
    );
    let landed = replayed.last().expect("replayed");
    assert!(landed.is_success());
    assert_complete(landed, &id);
    let letters = world.app.dead_letters(&id).await;
    assert!(letters[0]["replayed_at"].is_i64(), "{letters:?}");
    let again = world
        .app
        .post("/v1/dead-letters/replay", &json!({"job_id": id}))
        .await;
    assert_eq!(
        again.json()["replayed"],
        0,
        "a replayed letter is not replayed twice"
    );

    world.clock.advance(Duration::from_secs(60));
    let redeliver = world
        .app
        .post(&format!("/v1/jobs/{id}/redeliver"), &json!({}))
        .await;
    assert_eq!(redeliver.status, StatusCode::OK, "{}", redeliver.text);
    let jobs = world.settle(&ids).await;
    assert_eq!(jobs[0]["status"], "succeeded", "{:#}", jobs[0]);
    let all = deliveries_of(&world.receiver, &webhook_id);
    assert_eq!(
        all.len(),
        SCHEDULE.len() + 2,
        "redelivered under the same webhook-id"
    );
    let (redelivered, earlier) = all.split_last().expect("redelivered");
    assert!(redelivered.is_success());
    assert_complete(redelivered, &id);
    assert_eq!(
        redelivered.json()["data"],
        earlier.last().expect("replayed").json()["data"],
        "the same result"
    );
    assert_eq!(
        world.receiver.deliveries().len(),
        SCHEDULE.len() + 2,
        "nothing else sent"
    );
}

/// Test 3 with many deliveries: 25 jobs' callbacks to one receiver that is down for 3 h open the
/// endpoint's breaker; deliveries then wait on it without using up their schedule, and every
/// one lands once the receiver is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_callbacks_to_a_down_receiver_wait_on_its_breaker() {
    const JOBS: usize = 25;
    const OUTAGE_END: Millis = T0 + 3 * HOUR;
    const MOVE: Millis = 5 * MINUTE;
    let world = World::start(|_| {}).await;
    world.receiver.add_down_window(T0, OUTAGE_END);
    let mut ids = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        ids.push(world.submit(&["gas", "internet"], "/busy").await);
    }
    let endpoint = format!("endpoint {}", world.receiver.url("/busy"));
    let mut breaker_seen = false;
    let jobs = loop {
        let jobs = world.settle(&ids).await;
        let now = world.now();
        if now < OUTAGE_END {
            breaker_seen |= jobs
                .iter()
                .any(|job| step(job, "callback")["breaker"]["state"] == "open");
        }
        if jobs.iter().all(is_finished) {
            break jobs;
        }
        assert!(
            now < T0 + 12 * HOUR,
            "jobs still open at T0+{} ms",
            now - T0
        );
        world.clock.advance(Duration::from_millis(MOVE as u64));
    };
    assert!(breaker_seen, "the breaker of {endpoint} opened");
    let during: usize = world
        .receiver
        .deliveries()
        .iter()
        .filter(|delivery| delivery.at < OUTAGE_END)
        .count();
    let mut deferred = 0;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let deliver = step(job, "callback");
        let attempts = deliver["attempts"].as_u64().expect("attempts");
        let deferrals = deliver["deferred_attempts"].as_u64().expect("deferrals");
        assert!(attempts - deferrals <= SCHEDULE.len() as u64, "{deliver:#}");
        deferred += deferrals;
        let id = job["id"].as_str().expect("id");
        let webhook_id = webhook_id_of(&world.receiver, id);
        let deliveries = deliveries_of(&world.receiver, &webhook_id);
        let landed: Vec<&Delivery> = deliveries.iter().filter(|d| d.is_success()).collect();
        assert_eq!(landed.len(), 1, "one success for {id}");
        assert_complete(landed[0], id);
        assert!(landed[0].at >= OUTAGE_END);
    }
    assert!(deferred > 0, "deliveries waited on the breaker");
    assert_eq!(world.receiver.duplicate_successes(), 0);
    eprintln!(
        "3a': {JOBS} jobs, {during} requests during the outage, {deferred} deferrals, {} requests",
        world.receiver.deliveries().len()
    );
}
