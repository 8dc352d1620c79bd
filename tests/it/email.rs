//! The `email-attachment` connector through `POST /v1/jobs` against a tiny IMAPS server with a
//! test-CA certificate: the newest message of the day from the sender gives the records, a
//! refused login fails once with "login failed", and a day without mail fails naming it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::imap::{CA_CERT_PEM, CannedMessage, ImapServer, PASSWORD, USERNAME};

const WAIT: Duration = Duration::from_secs(30);
const SENDER: &str = "reports@adnet.example";
const SUBJECT: &str = "Daily report";

/// Two reports from the sender on 2026-11-03 (UID 7 is the newer), one the day before, and a
/// later one that day from someone else (UID 9, which the sender filter must exclude).
async fn mailbox() -> ImapServer {
    ImapServer::start(messages()).await
}

fn messages() -> Vec<CannedMessage> {
    vec![
        CannedMessage::with_csv(
            9,
            "2026-11-03",
            "20:00",
            "other@elsewhere.example",
            SUBJECT,
            "other.csv",
            "channel,clicks\nwrong,0\n",
        ),
        CannedMessage::with_csv(
            3,
            "2026-11-03",
            "08:00",
            SENDER,
            SUBJECT,
            "report_2026-11-03_am.csv",
            "channel,clicks\nstale,1\n",
        ),
        CannedMessage::with_csv(
            5,
            "2026-11-02",
            "18:00",
            SENDER,
            SUBJECT,
            "report_2026-11-02.csv",
            "channel,clicks\nyesterday,2\n",
        ),
        CannedMessage::with_csv(
            7,
            "2026-11-03",
            "18:00",
            SENDER,
            "Daily report (final)",
            "report_2026-11-03.csv",
            "channel,clicks,spend\r\nemail,12,3.50\r\n\"search, paid\",34,\"1,204.10\"\r\n",
        ),
    ]
}

fn email_job(server: &ImapServer, password: &str, date: &str) -> Value {
    json!({"sources": [{"connector": "email-attachment", "settings": {
        "host": "127.0.0.1",
        "port": server.addr.port(),
        "username": USERNAME,
        "password": password,
        "date": date,
        "sender": SENDER,
        "subject": SUBJECT,
        "ca_cert_pem": CA_CERT_PEM
    }}]})
}

fn collect_step(job: &Value) -> &Value {
    job["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|step| step["kind"] == "collect"))
        .unwrap_or_else(|| panic!("a collect step in {job:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_message_of_the_day_from_the_sender_gives_its_csv_rows() {
    let server = mailbox().await;
    let app = TestApp::start().await;

    let id = app
        .create_job(&email_job(&server, PASSWORD, "2026-11-03"))
        .await;
    let job = app.wait_for_status(&id, &["succeeded"], WAIT).await;

    assert_eq!(job["records_collected"], 2, "{job:#}");
    let records = app.records(&id).await;
    assert_eq!(
        records,
        vec![
            json!({"channel": "email", "clicks": "12", "spend": "3.50",
                   "_message_date": "2026-11-03T18:00:00Z", "_attachment": "report_2026-11-03.csv"}),
            json!({"channel": "search, paid", "clicks": "34", "spend": "1,204.10",
                   "_message_date": "2026-11-03T18:00:00Z", "_attachment": "report_2026-11-03.csv"}),
        ]
    );
    assert_eq!(server.logins(), [true]);
    assert_eq!(
        server.searches(),
        [format!(
            "SENTON 03-Nov-2026 FROM {SENDER} SUBJECT {SUBJECT}"
        )]
    );
    assert_eq!(server.fetches(), [7], "only the newest match is fetched");
    let progress = &collect_step(&job)["progress"];
    assert_eq!(progress["login"], "ok", "{job:#}");
    assert!(
        progress["mailbox"]
            .as_str()
            .is_some_and(|text| text.contains("2 rows")),
        "{job:#}"
    );
    let shown = app.get(&format!("/v1/jobs/{id}")).await.text;
    assert!(
        !shown.contains(PASSWORD),
        "the password is redacted: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_once_with_login_failed() {
    const WRONG: &str = "Wr0ng-imap-secret-17";
    let server = mailbox().await;
    let app = TestApp::start().await;

    let id = app
        .create_job(&email_job(&server, WRONG, "2026-11-03"))
        .await;
    let job = app.wait_for_status(&id, &["failed"], WAIT).await;

    let step = collect_step(&job);
    assert_eq!(
        step["attempts"], 1,
        "a refused login is not retried: {job:#}"
    );
    let error = step["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("login failed"), "{error}");
    assert!(error.contains("Invalid credentials"), "{error}");
    assert!(!error.contains(WRONG), "{error}");
    assert_eq!(server.logins(), [false]);
    assert!(server.searches().is_empty() && server.fetches().is_empty());
    let shown = app.get(&format!("/v1/jobs/{id}")).await.text;
    assert!(!shown.contains(WRONG), "the password appears in {shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_without_mail_fails_naming_the_date_sender_and_subject() {
    let server = mailbox().await;
    let app = TestApp::start().await;

    let id = app
        .create_job(&email_job(&server, PASSWORD, "2026-11-04"))
        .await;
    let job = app.wait_for_status(&id, &["failed"], WAIT).await;

    let step = collect_step(&job);
    assert_eq!(
        step["attempts"], 1,
        "a missing message is not retried: {job:#}"
    );
    let error = step["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            r#"no message on 2026-11-04 from "reports@adnet.example" with subject "Daily report""#
        ),
        "{error}"
    );
    assert!(server.fetches().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_imap_to_a_remote_host_and_an_untrusted_certificate_are_refused() {
    let server = mailbox().await;
    let app = TestApp::start().await;

    let (status, body) = app
        .post_job(
            &json!({"sources": [{"connector": "email-attachment", "settings": {
                "host": "imap.example.com", "username": USERNAME, "password": PASSWORD,
                "date": "2026-11-03", "tls": "none"
            }}]}),
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(body.to_string().contains("loopback"), "{body}");

    // Without `ca_cert_pem` the test CA is not trusted: the handshake fails, permanently.
    let mut spec = email_job(&server, PASSWORD, "2026-11-03");
    spec["sources"][0]["settings"]
        .as_object_mut()
        .unwrap()
        .remove("ca_cert_pem");
    let id = app.create_job(&spec).await;
    let job = app.wait_for_status(&id, &["failed"], WAIT).await;
    let step = collect_step(&job);
    let error = step["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("TLS handshake"), "{error}");
    assert_eq!(step["attempts"], 1, "{job:#}");
    assert!(server.logins().is_empty());
}

/// `tls: "starttls"`: plain IMAP upgraded before login (the server refuses LOGIN in clear);
/// the same job with `tls: "none"` cannot log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_upgrades_the_connection_before_login() {
    let server = ImapServer::start_starttls(messages()).await;
    let app = TestApp::start().await;

    let mut job = email_job(&server, PASSWORD, "2026-11-03");
    job["sources"][0]["settings"]["tls"] = json!("starttls");
    let id = app.create_job(&job).await;
    let done = app.wait_for_status(&id, &["succeeded"], WAIT).await;
    assert_eq!(done["records_collected"], 2, "{done:#}");
    assert_eq!(server.upgrades(), 1);
    assert_eq!(server.logins(), [true]);
    assert_eq!(server.fetches(), [7]);
    assert_eq!(collect_step(&done)["progress"]["login"], "ok", "{done:#}");

    job["sources"][0]["settings"]["tls"] = json!("none");
    let id = app.create_job(&job).await;
    let failed = app.wait_for_status(&id, &["failed"], WAIT).await;
    let error = collect_step(&failed)["last_error"].to_string();
    assert!(error.contains("login failed"), "{failed:#}");
    assert_eq!(server.upgrades(), 1, "no upgrade without starttls");
    assert_eq!(
        server.logins(),
        [true],
        "the clear LOGIN was refused before checking"
    );
}
