//! The metric connectors end to end: `stackoverflow` and `reddit` sources run through the real
//! app against mock StackExchange and Reddit APIs, their records read from
//! `GET /v1/jobs/{id}/records`.

use std::time::Duration;

use gleaner::clock::ManualClock;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::process::{binary, default_env};
use crate::support::reddit::{self, MockReddit};
use crate::support::stackexchange::MockStackExchange;

const WAIT: Duration = Duration::from_secs(10);
/// 2024-05-01T12:00:00Z.
const NOON_MS: i64 = 1_714_564_800_000;
const MIDNIGHT: i64 = 1_714_521_600;

/// An app on a manual clock at [`NOON_MS`] whose metric connectors call the mocks;
/// `configured` puts the Reddit credentials in `[reddit]`.
async fn app_over(
    stackexchange: &MockStackExchange,
    reddit: &MockReddit,
    configured: bool,
) -> (TestApp, ManualClock) {
    let clock = ManualClock::new(NOON_MS);
    let app = TestApp::builder()
        .clock(clock.clone())
        .config(|config| {
            config.stackoverflow.base_url = stackexchange.base_url().parse().expect("url");
            config.reddit.auth_url = reddit.auth_url().parse().expect("url");
            config.reddit.base_url = reddit.base_url().parse().expect("url");
            if configured {
                config.reddit.client_id = Some(reddit::CLIENT_ID.into());
                config.reddit.client_secret =
                    Some(gleaner::config::Secret::new(reddit::CLIENT_SECRET));
            }
        })
        .start()
        .await;
    (app, clock)
}

/// The record whose `metric` is `name`.
fn metric<'a>(records: &'a [Value], name: &str) -> &'a Value {
    records
        .iter()
        .find(|record| record["metric"] == name)
        .unwrap_or_else(|| panic!("no {name} record in {records:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_totals_and_posts_of_the_day_become_metric_records() {
    let stackexchange =
        MockStackExchange::start(&[("rust", 41_000), ("go", 72_000), ("python", 2_200_000)]).await;
    let reddit = MockReddit::start().await;
    // 150 posts today (two pages), three from yesterday.
    let mut posts: Vec<i64> = (0..150).map(|i| MIDNIGHT + 60 * i).collect();
    posts.extend([MIDNIGHT - 1, MIDNIGHT - 600, MIDNIGHT - 7_200]);
    reddit.set_posts("rust", posts);
    let (app, _clock) = app_over(&stackexchange, &reddit, true).await;

    let id = app
        .create_job(&json!({"sources": [
            {"connector": "stackoverflow", "settings": {"tag": "rust"}},
            {"connector": "stackoverflow", "settings": {"tag": "go", "metric": "GoQuestionCount"}},
            {"connector": "stackoverflow", "settings": {"tag": "python", "key": "per-job-key"}},
            {"connector": "reddit", "settings": {"subreddit": "rust", "metric": "RustPostCount"}},
        ]}))
        .await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;
    let records = app.records(&id).await;
    assert_eq!(records.len(), 4, "{job:#}");
    assert_eq!(
        metric(&records, "rust_question_count"),
        &json!({"metric": "rust_question_count", "value": 41_000, "tag": "rust", "site": "stackoverflow",
                "quota_remaining": metric(&records, "rust_question_count")["quota_remaining"], "quota_max": 300})
    );
    assert_eq!(metric(&records, "GoQuestionCount")["value"], 72_000);
    assert_eq!(
        metric(&records, "python_question_count")["value"],
        2_200_000
    );
    assert_eq!(
        metric(&records, "RustPostCount"),
        &json!({"metric": "RustPostCount", "value": 150, "subreddit": "rust", "day": "2024-05-01"})
    );
    for record in &records {
        assert!(
            record.get("date").is_none(),
            "the sink stamps the date: {record}"
        );
    }

    let keys: Vec<_> = stackexchange
        .queries()
        .iter()
        .filter_map(|query| query.get("key").cloned())
        .collect();
    assert_eq!(
        keys,
        ["per-job-key"],
        "only the job that named a key sent one"
    );
    assert_eq!(reddit.tokens_issued(), 1);
    assert_eq!(reddit.listing_calls(), 2);
    assert!(
        reddit
            .user_agents()
            .iter()
            .all(|agent| agent.starts_with("gleaner/") && agent.contains("(by /u/"))
    );

    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics.contains("gleaner_upstream_quota_remaining{connector=\"stackoverflow\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_job_reddit_credentials_are_used_and_never_shown() {
    let stackexchange = MockStackExchange::start(&[]).await;
    let reddit = MockReddit::start().await;
    reddit.set_posts("golang", vec![MIDNIGHT + 5, MIDNIGHT]);
    let (app, _clock) = app_over(&stackexchange, &reddit, false).await;

    let (status, problem) = app
        .post_job(
            &json!({"sources": [{"connector": "reddit", "settings": {"subreddit": "golang"}}]}),
        )
        .await;
    assert_eq!(status.as_u16(), 422, "no credentials anywhere: {problem}");

    let id = app
        .create_job(&json!({"sources": [{"connector": "reddit", "settings": {
            "subreddit": "golang", "client_id": reddit::CLIENT_ID, "client_secret": reddit::CLIENT_SECRET}}]}))
        .await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;
    assert!(!job.to_string().contains(reddit::CLIENT_SECRET), "{job:#}");
    assert_eq!(app.records(&id).await[0]["value"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_tag_waits_for_the_named_delay_then_succeeds() {
    let stackexchange = MockStackExchange::start(&[("rust", 41_000)]).await;
    let reddit = MockReddit::start().await;
    let (app, clock) = app_over(&stackexchange, &reddit, true).await;
    stackexchange.throttle(Some(600));

    let id = app
        .create_job(
            &json!({"sources": [{"connector": "stackoverflow", "settings": {"tag": "rust"}}]}),
        )
        .await;
    let job = app
        .wait_for_job(&id, WAIT, "throttled attempt retrying", |job| {
            job["steps"][0]["state"] == "retrying"
        })
        .await;
    let step = &job["steps"][0];
    assert!(
        step["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("throttle_violation"),
        "{job:#}"
    );
    let calls = stackexchange.queries().len();

    stackexchange.throttle(None);
    clock.advance(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stackexchange.queries().len(),
        calls,
        "not called again before the named 600 s"
    );

    clock.advance(Duration::from_secs(600));
    app.wait_for_status(&id, &["succeeded"], WAIT).await;
    assert_eq!(app.records(&id).await[0]["value"], 41_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reddit_credentials_come_from_the_environment() {
    let reddit = MockReddit::start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs() as i64;
    reddit.set_posts("rust", vec![now, now - 2 * 86_400]);
    let dir = tempfile::tempdir().expect("tempdir");
    let output = tokio::process::Command::new(binary())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["run", "reddit", "--set", "subreddit=rust"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("GLEANER_CONFIG")
        .envs(default_env())
        .env("GLEANER_REDDIT__AUTH_URL", reddit.auth_url())
        .env("GLEANER_REDDIT__BASE_URL", reddit.base_url())
        .env("GLEANER_REDDIT__CLIENT_ID", reddit::CLIENT_ID)
        .env("GLEANER_REDDIT__CLIENT_SECRET", reddit::CLIENT_SECRET)
        .output()
        .await
        .expect("run gleaner");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains(reddit::CLIENT_SECRET), "{stderr}");
    let record: Value = serde_json::from_slice(&output.stdout).expect("one record");
    assert_eq!(record["value"], 1, "{record}");
    assert_eq!(reddit.tokens_issued(), 1);
}
