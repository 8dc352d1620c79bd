//! The datahog seed's contract: `POST /webhook` and its native form on `POST /v1/jobs` refuse
//! every bad input with a 4xx problem and store nothing; valid submissions become ordinary
//! jobs of `datahog-provider` sources; `gleaner run datahog-provider` collects one-shot.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::harness::{assert_problem, detail, job_count, post_raw};
use crate::support::process::{binary, default_env};
use crate::support::{Mock, Reply, TestApp};

const WAIT: Duration = Duration::from_secs(10);
const CALLBACK: &str = "https://example.com/bills";

fn gas_bills() -> Value {
    json!([
        {"billedOn": "2020-04-07T15:03:14.257Z", "amount": 22.27},
        {"billedOn": "2020-05-07T15:03:14.257Z", "amount": 30}
    ])
}

fn internet_bills() -> Value {
    json!([
        {"billedOn": "2020-02-07T15:03:14.257Z", "amount": 15.12},
        {"billedOn": "2020-03-07T15:03:14.257Z", "amount": 15.12}
    ])
}

/// A providers API serving the seed's two providers.
async fn providers_mock() -> Mock {
    let mock = Mock::start().await;
    mock.set_json("/providers/gas", gas_bills());
    mock.set_json("/providers/internet", internet_bills());
    mock
}

/// An app whose datahog connector fetches from `mock`.
async fn app_over(mock: &Mock) -> TestApp {
    let base = mock.url("");
    TestApp::builder()
        .config(|config| config.datahog.base_url = base.parse().expect("mock URL"))
        .start()
        .await
}

/// Callback URLs that must be refused: not absolute http(s), carrying credentials, too long,
/// or pointing at a refused address (the test config allow-lists only 127.0.0.1).
fn bad_callback_urls() -> Vec<Value> {
    let long = format!("https://example.com/{}", "a".repeat(2100));
    [
        "/relative/hook",
        "example.com/hook",
        "",
        "javascript:alert(1)",
        "ftp://x",
        "file:///etc/passwd",
        "http://user:pw@example.com/",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://192.168.1.1/",
        "http://0.0.0.0/",
        long.as_str(),
    ]
    .into_iter()
    .map(Value::from)
    .collect()
}

/// Posts each body and expects a problem with `status` whose detail names `field`.
async fn assert_refused(app: &TestApp, path: &str, cases: &[(Value, u16, &str)]) {
    for (body, status, field) in cases {
        let answer = app.post(path, body).await;
        let shown: String = body.to_string().chars().take(200).collect();
        assert!(
            answer.status.is_client_error(),
            "{path} {shown}: {} {}",
            answer.status,
            answer.text
        );
        let problem = assert_problem(&answer, *status);
        assert!(
            detail(&problem).contains(field),
            "{path} {shown}: detail should name {field:?}: {problem}"
        );
    }
}

/// Malformed JSON, an empty body and non-JSON content types on `path`.
async fn assert_unparsable_refused(app: &TestApp, path: &str) {
    let malformed = post_raw(app, path, "application/json", r#"{"provider": ["gas""#).await;
    assert_problem(&malformed, 400);
    let empty = post_raw(app, path, "application/json", "").await;
    assert_problem(&empty, 400);
    let text = post_raw(
        app,
        path,
        "text/plain",
        r#"{"provider": ["gas"], "callbackUrl": "https://example.com/"}"#,
    )
    .await;
    assert_problem(&text, 415);
    let form = post_raw(
        app,
        path,
        "application/x-www-form-urlencoded",
        "provider=gas&callbackUrl=https://example.com/",
    )
    .await;
    assert_problem(&form, 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_refuses_bad_bodies_with_problems_and_stores_nothing() {
    let app = TestApp::builder().without_engine().start().await;
    let with_providers = |provider: Value| json!({"provider": provider, "callbackUrl": CALLBACK});
    let mut cases = vec![
        (with_providers(json!([])), 422, "provider"),
        (with_providers(json!(["gas", "gas"])), 422, "provider[1]"),
        (with_providers(json!(["water"])), 422, "provider[0]"),
        (with_providers(json!(["GAS"])), 422, "provider[0]"),
        (
            with_providers(json!(["gas", "Internet"])),
            422,
            "provider[1]",
        ),
        (with_providers(json!(["__proto__"])), 422, "provider[0]"),
        (with_providers(json!(["constructor"])), 422, "provider[0]"),
        (with_providers(json!(["toString"])), 422, "provider[0]"),
        (with_providers(json!("gas")), 422, "provider"),
        (with_providers(json!({"0": "gas"})), 422, "provider"),
        (with_providers(json!(1)), 422, "provider"),
        (with_providers(json!(null)), 422, "provider"),
        (with_providers(json!([1])), 422, "provider[0]"),
        (with_providers(json!([["gas"]])), 422, "provider[0]"),
        (with_providers(json!(vec!["gas"; 10_000])), 422, "provider"),
        (json!({"callbackUrl": CALLBACK}), 422, "provider"),
        (json!({"provider": ["gas"]}), 422, "callbackUrl"),
        (
            json!({"provider": ["gas"], "callbackUrl": null}),
            422,
            "callbackUrl",
        ),
        (
            json!({"provider": ["gas"], "callbackUrl": 42}),
            422,
            "callbackUrl",
        ),
        (
            json!({"provider": ["gas"], "callbackUrl": [CALLBACK]}),
            422,
            "callbackUrl",
        ),
        (
            json!({"provider": ["gas"], "callbackUrl": CALLBACK, "priority": 1}),
            422,
            "priority",
        ),
        (
            json!({"providers": ["gas"], "callbackUrl": CALLBACK}),
            422,
            "providers",
        ),
        (
            json!([{"provider": ["gas"], "callbackUrl": CALLBACK}]),
            422,
            "body",
        ),
        (json!("gas"), 422, "body"),
    ];
    for url in bad_callback_urls() {
        cases.push((
            json!({"provider": ["gas"], "callbackUrl": url}),
            422,
            "callbackUrl",
        ));
    }
    assert_refused(&app, "/webhook", &cases).await;
    assert_unparsable_refused(&app, "/webhook").await;
    let anonymous = app
        .send(
            app.client
                .post(app.url("/webhook"))
                .json(&json!({"provider": ["gas"], "callbackUrl": CALLBACK})),
        )
        .await;
    assert_problem(&anonymous, 401);
    assert_eq!(job_count(&app).await, 0, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_jobs_refuse_the_same_bad_inputs() {
    let app = TestApp::builder().without_engine().start().await;
    let source = |settings: Value| json!({"connector": "datahog-provider", "settings": settings});
    let sink = json!([{"type": "callback", "url": CALLBACK}]);
    let with_sources = |sources: Value| json!({"sources": sources, "sinks": sink});
    let with_id = |id: Value| with_sources(json!([source(json!({ "id": id }))]));
    let mut cases = vec![
        (with_sources(json!([])), 422, "source"),
        (
            with_sources(json!([
                source(json!({"id": "gas"})),
                source(json!({"id": "gas"}))
            ])),
            422,
            "sources[1] repeats sources[0]",
        ),
        (with_id(json!("water")), 422, "sources[0]"),
        (with_id(json!("GAS")), 422, "sources[0]"),
        (with_id(json!("__proto__")), 422, "sources[0]"),
        (with_id(json!("constructor")), 422, "sources[0]"),
        (with_id(json!(["gas"])), 422, "sources[0]"),
        (with_id(json!(1)), 422, "sources[0]"),
        (with_sources(json!([source(json!({}))])), 422, "sources[0]"),
        (
            with_sources(json!([source(json!("gas"))])),
            422,
            "sources[0]",
        ),
        (
            with_sources(json!([source(
                json!({"id": "gas", "url": "http://10.0.0.1/"})
            )])),
            422,
            "sources[0]",
        ),
        (
            with_sources(json!(vec![source(json!({"id": "gas"})); 10_000])),
            422,
            "at most",
        ),
        (
            json!({"sources": [source(json!({"id": "gas"}))], "sinks": [{"type": "callback"}]}),
            422,
            "sinks[0]",
        ),
        (
            json!({"sources": [source(json!({"id": "gas"}))], "sinks": sink, "priority": 1}),
            422,
            "priority",
        ),
        (
            json!({"sources": [{"connector": "datahog-provider", "settings": {"id": "gas"}, "x": 1}], "sinks": sink}),
            422,
            "unknown field",
        ),
    ];
    for url in bad_callback_urls() {
        cases.push((
            json!({"sources": [source(json!({"id": "gas"}))], "sinks": [{"type": "callback", "url": url}]}),
            422,
            "sinks[0]",
        ));
    }
    assert_refused(&app, "/v1/jobs", &cases).await;
    assert_unparsable_refused(&app, "/v1/jobs").await;
    assert_eq!(job_count(&app).await, 0, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_creates_the_native_job_once_per_idempotency_key() {
    let providers = providers_mock().await;
    providers.set("/hook", Reply::json(200, json!({"ok": true})));
    let app = app_over(&providers).await;
    let body = json!({"provider": ["internet", "gas"], "callbackUrl": providers.url("/hook")});
    let submit = |body: Value| {
        app.send(
            app.request(Method::POST, "/webhook")
                .header("idempotency-key", "datahog-1")
                .json(&body),
        )
    };

    let accepted = submit(body.clone()).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let job = accepted.json();
    let id = job["id"].as_str().expect("job id").to_owned();
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["processing"], json!(["internet", "gas"]), "{job}");
    assert_eq!(
        accepted.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    let connectors: Vec<&Value> = job["spec"]["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|source| &source["settings"]["id"])
        .collect();
    assert_eq!(connectors, [&json!("internet"), &json!("gas")], "{job}");
    assert_eq!(job["spec"]["sinks"][0]["type"], "callback", "{job}");

    let replay = submit(body).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.text);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json()["id"], id.as_str());
    assert_eq!(replay.json()["processing"], json!(["internet", "gas"]));
    let other = submit(json!({"provider": ["gas"], "callbackUrl": providers.url("/hook")})).await;
    assert_problem(&other, 409);
    assert_eq!(job_count(&app).await, 1);

    let done = app.wait_for_status(&id, &["succeeded"], WAIT).await;
    let mut records = app.records(&id).await;
    records.sort_by_key(|record| record["billedOn"].as_str().map(str::to_owned));
    let mut expected: Vec<Value> = [gas_bills(), internet_bills()]
        .iter()
        .flat_map(|bills| bills.as_array().expect("bills").clone())
        .collect();
    expected.sort_by_key(|record| record["billedOn"].as_str().map(str::to_owned));
    assert_eq!(records, expected, "{done}");
    assert_eq!(providers.count("/providers/gas"), 1);
    assert_eq!(providers.count("/providers/internet"), 1);
    assert_eq!(providers.count("/hook"), 1, "one callback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_bills_completes_with_zero_records() {
    let providers = providers_mock().await;
    providers.set_json("/providers/internet", json!([]));
    let app = app_over(&providers).await;
    let id = app
        .create_job(&json!({"sources": [
            {"connector": "datahog-provider", "settings": {"id": "internet"}},
            {"connector": "datahog-provider", "settings": {"id": "gas"}}
        ]}))
        .await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;
    let records: Vec<u64> = job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|step| step["records"].as_u64().expect("records"))
        .collect();
    assert_eq!(records, [0, 2], "{job}");
    assert_eq!(providers.count("/providers/internet"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_the_api_does_not_know_fails_without_retries() {
    let providers = providers_mock().await;
    providers.push("/providers/gas", Reply::status(503));
    let base = providers.url("");
    let app = TestApp::builder()
        .config(|config| {
            config.datahog.base_url = base.parse().expect("mock URL");
            config.datahog.providers = vec!["gas".into(), "water".into()];
        })
        .start()
        .await;
    let id = app
        .create_job(&json!({"sources": [
            {"connector": "datahog-provider", "settings": {"id": "water"}},
            {"connector": "datahog-provider", "settings": {"id": "gas"}}
        ]}))
        .await;
    let job = app
        .wait_for_status(&id, &["partially_succeeded"], WAIT)
        .await;
    let steps = job["steps"].as_array().expect("steps");
    assert_eq!(steps[0]["state"], "failed", "{job}");
    assert_eq!(steps[0]["attempts"], 1, "404 is permanent: {job}");
    assert_eq!(steps[0]["last_status"], 404, "{job}");
    assert_eq!(steps[1]["state"], "succeeded", "{job}");
    assert_eq!(steps[1]["attempts"], 2, "503 is retried: {job}");
    assert_eq!(providers.count("/providers/water"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_datahog_provider_prints_the_bills_as_ndjson() {
    let providers = providers_mock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |id: &str| {
        tokio::process::Command::new(binary())
            .arg("--data-dir")
            .arg(dir.path())
            .args(["run", "datahog-provider", "--set", &format!("id={id}")])
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env_remove("GLEANER_CONFIG")
            .envs(default_env())
            .env("GLEANER_DATAHOG__BASE_URL", providers.url(""))
            .output()
    };

    let output = run("gas").await.expect("run gleaner");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let bills: Vec<Value> = String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON record per line"))
        .collect();
    assert_eq!(Value::Array(bills), gas_bills(), "{stderr}");

    let refused = run("GAS").await.expect("run gleaner");
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("GAS"), "{stderr}");
    assert_eq!(providers.count("/providers/gas"), 1, "GAS is never fetched");
}

/// Seed clients send no token: an operator may open `/webhook` to some networks, and only it.
#[tokio::test]
async fn open_routes_admit_seed_clients_without_a_token_only_where_configured() {
    let open = TestApp::builder()
        .without_engine()
        .config(|config| config.server.open_routes.paths = vec!["/webhook".into()])
        .start()
        .await;
    let anonymous = crate::support::harness::client();
    let body = json!({"provider": ["gas"], "callbackUrl": CALLBACK});
    let answer = anonymous
        .post(open.url("/webhook"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    for (method, path) in [(Method::POST, "/v1/jobs"), (Method::GET, "/v1/jobs")] {
        let answer = anonymous
            .request(method, open.url(path))
            .json(&json!({}))
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{path}");
    }

    // Open to another network only: loopback clients still need the token.
    let elsewhere = TestApp::builder()
        .without_engine()
        .config(|config| {
            config.server.open_routes.paths = vec!["/webhook".into()];
            config.server.open_routes.from = vec!["10.0.0.0/8".parse().expect("net")];
        })
        .start()
        .await;
    let answer = anonymous
        .post(elsewhere.url("/webhook"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(job_count(&elsewhere).await, 0);
}
