//! Tests of the `reddit` connector against a scripted axum Reddit (token endpoint and `/new`
//! listing pages keyed by their `after` cursor) on 127.0.0.1, with the clock driven by hand.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{MAX_PAGES, RedditConfig, RedditConnector};
use crate::clock::ManualClock;
use crate::config::Secret;
use crate::connectors::{Connector, ConnectorContext, Error, test_context};
use crate::net::Retryability;

/// 2024-05-01T12:00:00Z, the default "now" of these tests.
const NOON: i64 = 1_714_564_800_000;
/// 2024-05-01T00:00:00Z in seconds.
const MIDNIGHT: i64 = 1_714_521_600;

/// A scripted page: its posts' creation times (seconds), its cursor and rate-limit headers.
#[derive(Clone, Default)]
struct ScriptedPage {
    created: Vec<i64>,
    after: Option<String>,
    rate: Option<(&'static str, &'static str)>,
}

#[derive(Default)]
struct Reddit {
    /// Pages by the `after` they answer (`""` for the first).
    pages: HashMap<String, ScriptedPage>,
    /// When set, every page not scripted is a full page of posts created at this second.
    endless: Option<i64>,
    expires_in: u64,
    /// Token requests still to answer with a 500.
    auth_failures: u32,
    auth_delay: Duration,
    tokens_issued: u32,
    revoked: HashSet<String>,
    /// `(after, bearer, user agent)` of each listing call.
    listings: Vec<(String, String, String)>,
    /// `(basic auth, user agent, body)` of each token request.
    token_requests: Vec<(String, String, String)>,
}

type Shared = Arc<Mutex<Reddit>>;

fn header_of(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn access_token(State(reddit): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let delay = {
        let mut reddit = reddit.lock().expect("reddit");
        reddit.token_requests.push((
            header_of(&headers, header::AUTHORIZATION),
            header_of(&headers, header::USER_AGENT),
            body,
        ));
        reddit.auth_delay
    };
    tokio::time::sleep(delay).await;
    let mut reddit = reddit.lock().expect("reddit");
    if reddit.auth_failures > 0 {
        reddit.auth_failures -= 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, "busy").into_response();
    }
    reddit.tokens_issued += 1;
    let token = format!("token-{}", reddit.tokens_issued);
    axum::Json(json!({"access_token": token, "token_type": "bearer", "expires_in": reddit.expires_in, "scope": "*"}))
        .into_response()
}

async fn new_posts(
    State(reddit): State<Shared>,
    Path(_subreddit): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut reddit = reddit.lock().expect("reddit");
    let bearer = header_of(&headers, header::AUTHORIZATION);
    let after = query.get("after").cloned().unwrap_or_default();
    reddit.listings.push((
        after.clone(),
        bearer.clone(),
        header_of(&headers, header::USER_AGENT),
    ));
    let token = bearer.strip_prefix("Bearer ").unwrap_or_default();
    if !token.starts_with("token-") || reddit.revoked.contains(token) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    assert_eq!(query.get("limit").map(String::as_str), Some("100"));
    let page = match (reddit.pages.get(&after), reddit.endless) {
        (Some(page), _) => page.clone(),
        (None, Some(at)) => ScriptedPage {
            created: vec![at; 100],
            after: Some(format!("{after}x")),
            rate: None,
        },
        (None, None) => panic!("no page scripted after {after:?}"),
    };
    let children: Vec<Value> = page
        .created
        .iter()
        .map(|at| json!({"kind": "t3", "data": {"created_utc": *at as f64, "title": "post"}}))
        .collect();
    let body =
        axum::Json(json!({"kind": "Listing", "data": {"after": page.after, "children": children}}));
    match page.rate {
        Some((remaining, reset)) => (
            [
                ("x-ratelimit-remaining", remaining),
                ("x-ratelimit-reset", reset),
            ],
            body,
        )
            .into_response(),
        None => body.into_response(),
    }
}

async fn reddit(pages: &[(&str, ScriptedPage)]) -> (RedditConfig, Shared) {
    let state: Shared = Arc::new(Mutex::new(Reddit {
        pages: pages
            .iter()
            .map(|(after, page)| ((*after).to_owned(), page.clone()))
            .collect(),
        expires_in: 3_600,
        ..Reddit::default()
    }));
    let app = Router::new()
        .route("/api/v1/access_token", post(access_token))
        .route("/r/{subreddit}/new", get(new_posts))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = RedditConfig {
        auth_url: format!("http://{address}/api/v1/access_token")
            .parse()
            .expect("url"),
        base_url: format!("http://{address}").parse().expect("url"),
        client_id: Some("app".into()),
        client_secret: Some(Secret::new("shh")),
        user_agent: "gleaner-test/1 (by /u/tester)".into(),
    };
    (config, state)
}

fn page(created: &[i64], after: Option<&str>) -> ScriptedPage {
    ScriptedPage {
        created: created.to_vec(),
        after: after.map(str::to_owned),
        rate: None,
    }
}

fn ctx(clock: &ManualClock) -> ConnectorContext {
    test_context(Arc::new(clock.clone()))
}

async fn count(connector: &RedditConnector, ctx: &ConnectorContext) -> Result<Value, Error> {
    let page = connector
        .collect_page(ctx, &json!({"subreddit": "rust"}), None)
        .await?;
    assert!(page.done);
    assert_eq!(page.records.len(), 1);
    Ok(page.records[0].clone())
}

fn listing_calls(state: &Shared) -> usize {
    state.lock().expect("reddit").listings.len()
}

fn tokens_issued(state: &Shared) -> u32 {
    state.lock().expect("reddit").tokens_issued
}

const TODAY: i64 = MIDNIGHT + 3_600;
const YESTERDAY: i64 = MIDNIGHT - 3_600;

#[tokio::test]
async fn the_seeds_three_pages_give_five_posts_in_three_calls() {
    let (config, state) = reddit(&[
        ("", page(&[TODAY + 30, TODAY + 20], Some("t3_b"))),
        ("t3_b", page(&[TODAY + 10, TODAY + 5], Some("t3_c"))),
        ("t3_c", page(&[TODAY, YESTERDAY], Some("t3_d"))),
    ])
    .await;
    let record = count(&RedditConnector::new(config), &ctx(&ManualClock::new(NOON)))
        .await
        .expect("count");
    assert_eq!(
        record,
        json!({"metric": "rust_post_count", "value": 5, "subreddit": "rust", "day": "2024-05-01"})
    );
    let reddit = state.lock().expect("reddit");
    let afters: Vec<_> = reddit
        .listings
        .iter()
        .map(|(after, _, _)| after.as_str())
        .collect();
    assert_eq!(afters, ["", "t3_b", "t3_c"]);
    for (_, bearer, agent) in &reddit.listings {
        assert_eq!(bearer, "Bearer token-1");
        assert_eq!(agent, "gleaner-test/1 (by /u/tester)");
    }
    let (basic, agent, body) = &reddit.token_requests[0];
    assert_eq!(basic, "Basic YXBwOnNoaA==", "base64 of app:shh");
    assert_eq!(agent, "gleaner-test/1 (by /u/tester)");
    assert_eq!(body, "grant_type=client_credentials");
}

#[tokio::test]
async fn the_token_is_refreshed_after_its_expiry_in_seconds() {
    let (config, state) = reddit(&[("", page(&[TODAY, YESTERDAY], None))]).await;
    let connector = RedditConnector::new(config);
    let clock = ManualClock::new(NOON);
    let ctx = ctx(&clock);
    count(&connector, &ctx).await.expect("first");
    clock.advance(Duration::from_secs(3_000));
    count(&connector, &ctx).await.expect("cached");
    assert_eq!(
        tokens_issued(&state),
        1,
        "a 3600 s token is still served after 3000 s"
    );
    clock.advance(Duration::from_secs(600));
    count(&connector, &ctx).await.expect("refreshed");
    assert_eq!(
        tokens_issued(&state),
        2,
        "renewed once its lifetime less the margin passed"
    );
    let reddit = state.lock().expect("reddit");
    assert_eq!(reddit.listings.last().expect("call").1, "Bearer token-2");
}

#[tokio::test]
async fn fifty_concurrent_collections_share_one_token_request() {
    let (config, state) = reddit(&[("", page(&[TODAY, YESTERDAY], None))]).await;
    state.lock().expect("reddit").auth_delay = Duration::from_millis(100);
    let connector = Arc::new(RedditConnector::new(config));
    let ctx = ctx(&ManualClock::new(NOON));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (connector, ctx) = (connector.clone(), ctx.clone());
            tokio::spawn(async move { count(&connector, &ctx).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("count")["value"], 1);
    }
    assert_eq!(state.lock().expect("reddit").token_requests.len(), 1);
    assert_eq!(listing_calls(&state), 50);
}

#[tokio::test]
async fn a_failed_token_request_is_not_cached() {
    let (config, state) = reddit(&[("", page(&[TODAY], None))]).await;
    state.lock().expect("reddit").auth_failures = 1;
    let connector = RedditConnector::new(config);
    let ctx = ctx(&ManualClock::new(NOON));
    let failed = count(&connector, &ctx)
        .await
        .expect_err("token endpoint failed");
    assert_eq!(failed.http_status(), Some(500));
    assert!(matches!(failed.retryability(), Retryability::Retry { .. }));
    assert_eq!(listing_calls(&state), 0);
    count(&connector, &ctx)
        .await
        .expect("the next call asks again");
    assert_eq!(state.lock().expect("reddit").token_requests.len(), 2);
}

#[tokio::test]
async fn a_refused_token_is_dropped_and_the_page_asked_once_more() {
    let (config, state) = reddit(&[("", page(&[TODAY], None))]).await;
    let connector = RedditConnector::new(config);
    let ctx = ctx(&ManualClock::new(NOON));
    count(&connector, &ctx).await.expect("first");
    state
        .lock()
        .expect("reddit")
        .revoked
        .insert("token-1".into());
    assert_eq!(
        count(&connector, &ctx).await.expect("after 401")["value"],
        1
    );
    assert_eq!(tokens_issued(&state), 2);
    assert_eq!(listing_calls(&state), 3);

    // A token refused twice in a row is the credentials' problem, not retried forever.
    state
        .lock()
        .expect("reddit")
        .revoked
        .insert("token-2".into());
    state
        .lock()
        .expect("reddit")
        .revoked
        .insert("token-3".into());
    let refused = count(&connector, &ctx).await.expect_err("401 twice");
    assert_eq!(refused.http_status(), Some(401));
    assert_eq!(listing_calls(&state), 5);
}

#[tokio::test]
async fn an_empty_page_mid_listing_keeps_the_running_count() {
    let (config, state) = reddit(&[
        ("", page(&[TODAY + 2, TODAY + 1], Some("t3_b"))),
        ("t3_b", page(&[], Some("t3_c"))),
    ])
    .await;
    let record = count(&RedditConnector::new(config), &ctx(&ManualClock::new(NOON)))
        .await
        .expect("count");
    assert_eq!(record["value"], 2, "the seed returned 0 here");
    assert_eq!(listing_calls(&state), 2);
}

#[tokio::test]
async fn a_null_cursor_ends_the_listing() {
    let (config, state) = reddit(&[("", page(&[TODAY + 2, TODAY + 1, TODAY], None))]).await;
    let record = count(&RedditConnector::new(config), &ctx(&ManualClock::new(NOON)))
        .await
        .expect("count");
    assert_eq!(record["value"], 3);
    assert_eq!(
        listing_calls(&state),
        1,
        "the seed restarted at page 1 forever"
    );
}

#[tokio::test]
async fn the_day_starts_at_exactly_midnight_utc_across_page_boundaries() {
    let (config, state) = reddit(&[
        ("", page(&[MIDNIGHT + 1, MIDNIGHT], Some("t3_b"))),
        ("t3_b", page(&[MIDNIGHT - 1, MIDNIGHT - 2], Some("t3_c"))),
        ("t3_c", page(&[MIDNIGHT - 86_401], None)),
    ])
    .await;
    let connector = RedditConnector::new(config);
    // At 00:00:00.000 exactly, the day has just begun: posts at 00:00:00 count.
    let record = count(&connector, &ctx(&ManualClock::new(MIDNIGHT * 1_000)))
        .await
        .expect("count");
    assert_eq!(
        (record["value"].clone(), record["day"].clone()),
        (json!(2), json!("2024-05-01"))
    );
    assert_eq!(
        listing_calls(&state),
        2,
        "the second page shows the day is over"
    );

    // One millisecond earlier it was still the day before, which all four posts belong to.
    let before = count(&connector, &ctx(&ManualClock::new(MIDNIGHT * 1_000 - 1)))
        .await
        .expect("count");
    assert_eq!(
        (before["value"].clone(), before["day"].clone()),
        (json!(4), json!("2024-04-30"))
    );
    assert_eq!(listing_calls(&state), 5);
}

#[tokio::test]
async fn an_exhausted_rate_limit_defers_until_the_reset() {
    let mut first = page(&[TODAY + 1], Some("t3_b"));
    first.rate = Some(("0.0", "42"));
    let (config, state) = reddit(&[("", first), ("t3_b", page(&[YESTERDAY], None))]).await;
    let error = count(&RedditConnector::new(config), &ctx(&ManualClock::new(NOON)))
        .await
        .expect_err("limited");
    assert_eq!(
        error.retryability(),
        Retryability::Retry {
            after: Some(Duration::from_secs(42))
        }
    );
    assert_eq!(listing_calls(&state), 1, "no call once no request is left");
}

#[tokio::test]
async fn paging_stops_at_the_listing_cap() {
    let (config, state) = reddit(&[]).await;
    state.lock().expect("reddit").endless = Some(TODAY);
    let record = count(&RedditConnector::new(config), &ctx(&ManualClock::new(NOON)))
        .await
        .expect("count");
    assert_eq!(record["value"], 100 * MAX_PAGES as u64);
    assert_eq!(listing_calls(&state), MAX_PAGES);
}

#[tokio::test]
async fn sources_without_credentials_are_refused() {
    let connector = RedditConnector::new(RedditConfig::default());
    let error = connector
        .validate(&json!({"subreddit": "rust"}))
        .expect_err("no credentials");
    assert!(matches!(error, Error::Settings(_)), "{error:?}");
    connector
        .validate(&json!({"subreddit": "rust", "client_id": "id", "client_secret": "s"}))
        .expect("own credentials");
    assert_eq!(
        connector.label(&json!({"subreddit": "golang"})).as_deref(),
        Some("golang_post_count")
    );
    assert_eq!(
        connector
            .upstream(&json!({"subreddit": "golang"}))
            .as_deref(),
        Some("https://oauth.reddit.com")
    );
}
