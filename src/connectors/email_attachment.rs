//! The `email-attachment` connector: the CSV attached to the newest message of a day in an
//! IMAP mailbox (the seed's private email platforms, made configurable).
//!
//! One `collect_page` connects (implicit TLS on 993 by default, or plain IMAP upgraded with
//! `STARTTLS` before anything else is sent), logs in, selects the mailbox,
//! runs `UID SEARCH SENTON <date> [FROM "…"] [SUBJECT "…"]`, fetches the highest UID with
//! `BODY.PEEK[]` (the message stays unread), takes its first CSV attachment and returns its
//! rows as records: one page, done.
//!
//! Invariants: every address the host resolves to passes the SSRF guard before a socket is
//! opened; plain IMAP is only accepted for a loopback host; the password is `writeOnly`.

mod imap;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use jiff::civil::Date;
use mail_parser::{MessageParser, MessagePart, MimeHeaders};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::date_range::{date_schema, parse_date};
use super::{Connector, ConnectorContext, Error, Page};
use crate::job::progress;
use crate::net::{GuardedResolver, UpstreamError};
use imap::{Arg, Client, ImapError, Io};

/// The field added to every record: the message's `Date` header (RFC 3339), or the searched day.
pub const MESSAGE_DATE_FIELD: &str = "_message_date";
/// The field added to every record: the attachment's file name.
pub const ATTACHMENT_FIELD: &str = "_attachment";

/// Settings of one `email-attachment` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    pub host: String,
    /// Default: 993 with implicit TLS, 143 otherwise ([`TlsMode::port`]).
    #[serde(default)]
    pub port: Option<u16>,
    pub username: String,
    pub password: String,
    #[serde(default = "default_mailbox")]
    pub mailbox: String,
    pub date: String,
    #[serde(default)]
    pub sender: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub tls: TlsMode,
    #[serde(default)]
    pub ca_cert_pem: Option<String>,
    #[serde(default)]
    pub csv: CsvSettings,
}

fn default_mailbox() -> String {
    "INBOX".to_owned()
}

/// `implicit`: TLS from the first byte (IMAPS); `starttls`: plain IMAP upgraded to TLS before
/// login (port 143); `none`: plain IMAP, loopback hosts only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    #[default]
    Implicit,
    Starttls,
    None,
}

impl TlsMode {
    /// The usual port: 993 for IMAPS, 143 for IMAP.
    pub fn port(self) -> u16 {
        match self {
            TlsMode::Implicit => 993,
            TlsMode::Starttls | TlsMode::None => 143,
        }
    }
}

/// How the attachment is read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSettings {
    #[serde(default)]
    pub delimiter: Option<String>,
}

/// Settings checked for one call.
struct Plan {
    settings: EmailSettings,
    date: Date,
    delimiter: u8,
    /// Trust anchors from `ca_cert_pem`; the system's roots when `None`.
    roots: Option<Arc<rustls::RootCertStore>>,
}

impl Plan {
    fn new(settings: &Value) -> Result<Self, Error> {
        let settings: EmailSettings = serde_json::from_value(settings.clone())
            .map_err(|error| Error::Settings(error.to_string()))?;
        let host = settings.host.trim();
        if host.is_empty() || host.contains(|ch: char| ch.is_whitespace() || ch == '/') {
            return Err(Error::Settings(format!(
                "host: {:?} is not a host name or IP address",
                settings.host
            )));
        }
        if settings.port == Some(0) {
            return Err(Error::Settings("port: must be 1–65535".to_owned()));
        }
        if settings.tls == TlsMode::None && !is_loopback(host) {
            return Err(Error::Settings(format!(
                "tls: \"none\" sends the password in clear and is only allowed for a loopback host, not {host:?}"
            )));
        }
        for (field, value) in [
            ("username", Some(&settings.username)),
            ("password", Some(&settings.password)),
            ("mailbox", Some(&settings.mailbox)),
            ("sender", settings.sender.as_ref()),
            ("subject", settings.subject.as_ref()),
        ] {
            if let Some(value) = value
                && value.contains(['\0', '\r', '\n'])
            {
                return Err(Error::Settings(format!(
                    "{field}: must not contain line breaks or NUL"
                )));
            }
        }
        let date = parse_date("date", &settings.date)?;
        let delimiter = match settings.csv.delimiter.as_deref().unwrap_or(",").as_bytes() {
            [byte] if byte.is_ascii() && !matches!(byte, b'"' | b'\n' | b'\r') => *byte,
            _ => {
                return Err(Error::Settings(format!(
                    "csv.delimiter: expected one ASCII character other than a quote or line break, got {:?}",
                    settings.csv.delimiter
                )));
            }
        };
        let roots = settings
            .ca_cert_pem
            .as_deref()
            .map(parse_roots)
            .transpose()?
            .map(Arc::new);
        Ok(Self {
            settings,
            date,
            delimiter,
            roots,
        })
    }

    fn host(&self) -> &str {
        self.settings.host.trim()
    }

    /// `03-Nov-2026`, the date form of IMAP search keys.
    fn imap_date(&self) -> String {
        self.date.strftime("%d-%b-%Y").to_string()
    }

    /// What was searched for, for messages: `on 2026-11-03 from "a@b" with subject "x"`.
    fn described(&self) -> String {
        let mut text = format!("on {}", self.date);
        if let Some(sender) = &self.settings.sender {
            text.push_str(&format!(" from {sender:?}"));
        }
        if let Some(subject) = &self.settings.subject {
            text.push_str(&format!(" with subject {subject:?}"));
        }
        text
    }
}

/// Whether `host` names this machine (`localhost` or a loopback IP literal).
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The certificates of a PEM bundle as the only trust anchors.
fn parse_roots(pem: &str) -> Result<rustls::RootCertStore, Error> {
    let invalid = |detail: String| Error::Settings(format!("ca_cert_pem: {detail}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|error| invalid(format!("unreadable PEM: {error}")))?;
        roots
            .add(cert)
            .map_err(|error| invalid(format!("not a usable certificate: {error}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("no CERTIFICATE block".to_owned()));
    }
    Ok(roots)
}

/// The system's trust anchors, loaded once.
fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "could not load a system CA certificate");
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        Arc::new(roots)
    }))
}

/// The hand-written JSON Schema of [`EmailSettings`].
pub fn settings_schema() -> Value {
    json!({
        "type": "object",
        "title": "Email attachment (IMAP)",
        "additionalProperties": false,
        "required": ["host", "username", "password", "date"],
        "properties": {
            "host": {"type": "string", "minLength": 1, "description": "IMAP server host name or IP address."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                     "description": "Default: 993 with `implicit` TLS, 143 with `starttls` or `none`."},
            "username": {"type": "string", "minLength": 1, "description": "Mailbox login."},
            "password": {"type": "string", "writeOnly": true, "description": "Mailbox password (or app password). Never shown again."},
            "mailbox": {"type": "string", "minLength": 1, "default": "INBOX", "description": "Folder to search."},
            "date": date_schema("Day the message was sent (the `Date` header, as IMAP `SENTON` compares it)."),
            "sender": {"type": "string", "minLength": 1, "description": "Only messages whose From contains this (IMAP `FROM`)."},
            "subject": {"type": "string", "minLength": 1, "description": "Only messages whose Subject contains this (IMAP `SUBJECT`)."},
            "tls": {
                "enum": ["implicit", "starttls", "none"], "default": "implicit",
                "description": "`implicit`: TLS from the start (IMAPS, usually port 993). `starttls`: plain IMAP upgraded to TLS with STARTTLS before login (usually port 143). `none`: plain IMAP, accepted only for a loopback host."
            },
            "ca_cert_pem": {
                "type": "string", "minLength": 1,
                "description": "PEM certificate(s) to trust instead of the system roots (a private CA or a self-signed server certificate)."
            },
            "csv": {
                "type": "object",
                "additionalProperties": false,
                "description": "How the attachment is read: a header row, then one record per row (values as strings).",
                "properties": {
                    "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "default": ","}
                }
            }
        }
    })
}

/// Collects the CSV attached to the newest message of a day from an IMAP mailbox.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmailAttachmentConnector;

#[async_trait]
impl Connector for EmailAttachmentConnector {
    fn name(&self) -> &'static str {
        "email-attachment"
    }

    fn description(&self) -> &'static str {
        "Searches an IMAP mailbox for the messages sent on a date (optionally from a sender, with a subject), takes the newest, and collects the rows of its CSV attachment."
    }

    fn settings_schema(&self) -> Value {
        settings_schema()
    }

    fn upstream(&self, settings: &Value) -> Option<String> {
        let host = settings.get("host")?.as_str()?.trim();
        let mode = settings
            .get("tls")
            .cloned()
            .map(serde_json::from_value::<TlsMode>);
        let mode = mode.and_then(Result::ok).unwrap_or_default();
        let port = settings
            .get("port")
            .and_then(Value::as_u64)
            .unwrap_or(mode.port().into());
        let scheme = match mode {
            TlsMode::Implicit => "imaps",
            TlsMode::Starttls | TlsMode::None => "imap",
        };
        Some(format!("{scheme}://{host}:{port}"))
    }

    fn validate(&self, settings: &Value) -> Result<(), Error> {
        Plan::new(settings).map(|_| ())
    }

    /// Logs in, selects the mailbox and checks that a message matches.
    async fn check(&self, ctx: &ConnectorContext, settings: &Value) -> Result<(), Error> {
        let plan = Plan::new(settings)?;
        let mut session = open(ctx, &plan).await?;
        let found = newest_uid(&mut session, &plan).await;
        session.logout().await;
        found.map(|_| ())
    }

    async fn collect_page(
        &self,
        ctx: &ConnectorContext,
        settings: &Value,
        _checkpoint: Option<&Value>,
    ) -> Result<Page, Error> {
        let plan = Plan::new(settings)?;
        let mut session = open(ctx, &plan).await?;
        let fetched = async {
            let uid = newest_uid(&mut session, &plan).await?;
            session
                .fetch_message(uid)
                .await
                .map_err(|error| imap_error(&plan, error))
        }
        .await;
        session.logout().await;
        let raw = fetched?;

        let fallback_date = plan.date.to_string();
        let delimiter = plan.delimiter;
        let records = tokio::task::spawn_blocking(move || {
            attachment_records(&raw, delimiter, &fallback_date)
        })
        .await
        .map_err(|error| Error::Response(format!("decoding stopped: {error}")))??;
        progress::report(
            "mailbox",
            format!(
                "{} rows from the newest message's attachment",
                records.len()
            ),
        );
        Ok(Page::only(records))
    }
}

/// Connects, logs in and selects the mailbox.
async fn open(ctx: &ConnectorContext, plan: &Plan) -> Result<Client<Box<dyn Io>>, Error> {
    let config = ctx.http.config();
    let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
    let request_timeout = Duration::from_millis(config.request_timeout_ms);
    let max_bytes = usize::try_from(config.max_response_bytes).unwrap_or(usize::MAX);
    let host = plan.host();

    progress::report("mailbox", format!("connecting to {host}"));
    let port = plan.settings.port.unwrap_or(plan.settings.tls.port());
    let stream = connect(ctx, host, port, connect_timeout).await?;
    let roots = || plan.roots.clone().unwrap_or_else(system_roots);
    let greeted = |stream: Box<dyn Io>| async move {
        Client::greet(stream, request_timeout, max_bytes)
            .await
            .map_err(|error| imap_error(plan, error))
    };
    let mut client = match plan.settings.tls {
        TlsMode::None => greeted(Box::new(stream)).await?,
        TlsMode::Implicit => {
            greeted(Box::new(tls(stream, host, roots(), connect_timeout).await?)).await?
        }
        TlsMode::Starttls => {
            let plain = Client::greet(stream, request_timeout, max_bytes)
                .await
                .map_err(|error| imap_error(plan, error))?;
            let stream = plain
                .starttls()
                .await
                .map_err(|error| imap_error(plan, error))?;
            let stream = tls(stream, host, roots(), connect_timeout).await?;
            progress::report("mailbox", "upgraded to TLS (STARTTLS)");
            Client::resume(Box::new(stream) as Box<dyn Io>, request_timeout, max_bytes)
        }
    };

    let login = client
        .login(&plan.settings.username, &plan.settings.password)
        .await
        .map_err(|error| imap_error(plan, error))?;
    if let Err(reason) = login {
        progress::report("login", "failed");
        client.logout().await;
        return Err(Error::Response(format!(
            "login failed for {:?}: {reason}",
            plan.settings.username
        )));
    }
    progress::report("login", "ok");
    client
        .select(&plan.settings.mailbox)
        .await
        .map_err(|error| imap_error(plan, error))?;
    Ok(client)
}

/// Resolves `host`, keeps the addresses the SSRF guard accepts, and connects to the first
/// that answers.
async fn connect(
    ctx: &ConnectorContext,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => {
            ctx.http.guard().check_ip(ip)?;
            vec![SocketAddr::new(ip, port)]
        }
        Err(_) => {
            let resolver = GuardedResolver::new(Arc::new(ctx.http.guard().clone()));
            let lookup = tokio::time::timeout(timeout, resolver.lookup(bare))
                .await
                .map_err(|_| transport(format!("dns lookup of {host} timed out"), true))??;
            lookup
                .into_iter()
                .map(|address| SocketAddr::new(address.ip(), port))
                .collect()
        }
    };
    let mut last = None;
    for address in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => {
                last = Some(transport(format!("connect to {address}: {error}"), false))
            }
            Err(_) => last = Some(transport(format!("connect to {address} timed out"), true)),
        }
    }
    Err(last
        .unwrap_or_else(|| transport(format!("{host} has no address"), false))
        .into())
}

fn transport(message: String, timeout: bool) -> UpstreamError {
    UpstreamError::Transport { message, timeout }
}

/// The TLS handshake, verifying the certificate for `host` against `roots`.
async fn tls(
    stream: TcpStream,
    host: &str,
    roots: Arc<rustls::RootCertStore>,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Settings(format!("tls: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_owned())
        .map_err(|error| Error::Settings(format!("host: {error}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        // A certificate the settings do not trust will not change on retry.
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::InvalidData => Err(Error::Response(
            format!("TLS handshake with {host} failed: {error}"),
        )),
        Ok(Err(error)) => {
            Err(transport(format!("TLS handshake with {host}: {error}"), false).into())
        }
        Err(_) => Err(transport(format!("TLS handshake with {host} timed out"), true).into()),
    }
}

/// The highest UID of the messages matching the plan; none is a permanent error.
async fn newest_uid(session: &mut Client<Box<dyn Io>>, plan: &Plan) -> Result<u32, Error> {
    let date = plan.imap_date();
    let mut criteria = vec![Arg::Atom("SENTON"), Arg::Atom(&date)];
    if let Some(sender) = &plan.settings.sender {
        criteria.extend([Arg::Atom("FROM"), Arg::Str(sender)]);
    }
    if let Some(subject) = &plan.settings.subject {
        criteria.extend([Arg::Atom("SUBJECT"), Arg::Str(subject)]);
    }
    let uids = session
        .uid_search(&criteria)
        .await
        .map_err(|error| imap_error(plan, error))?;
    let Some(&uid) = uids.last() else {
        progress::report("mailbox", format!("no message {}", plan.described()));
        return Err(Error::Response(format!(
            "no message {} in mailbox {:?}",
            plan.described(),
            plan.settings.mailbox
        )));
    };
    progress::report(
        "mailbox",
        format!(
            "{} message(s) {}; fetching the newest (UID {uid})",
            uids.len(),
            plan.described()
        ),
    );
    Ok(uid)
}

/// A conversation failure as a connector error: network trouble is retried, what the server
/// refused is not.
fn imap_error(plan: &Plan, error: ImapError) -> Error {
    let host = plan.host();
    match error {
        ImapError::Io(error) => transport(format!("IMAP {host}: {error}"), false).into(),
        ImapError::Closed => transport(format!("IMAP {host}: connection closed"), false).into(),
        ImapError::Timeout(after) => {
            transport(format!("IMAP {host}: no answer within {after:?}"), true).into()
        }
        ImapError::TooLarge(limit) => UpstreamError::TooLarge {
            limit: limit as u64,
        }
        .into(),
        ImapError::Protocol(message) => Error::Response(format!("IMAP {host}: {message}")),
    }
}

/// The rows of the message's CSV attachment, each with the message date and file name.
fn attachment_records(raw: &[u8], delimiter: u8, fallback_date: &str) -> Result<Vec<Value>, Error> {
    let message = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| Error::Response("the message is not a readable MIME message".to_owned()))?;
    let date = message
        .date()
        .map(|date| date.to_rfc3339())
        .unwrap_or_else(|| fallback_date.to_owned());
    let part = pick_attachment(&message).ok_or_else(|| {
        Error::Response(format!(
            "the newest message (sent {date}) has no attachment"
        ))
    })?;
    let name = part
        .attachment_name()
        .map(str::to_owned)
        .unwrap_or_else(|| "attachment".to_owned());
    progress::report("mailbox", format!("reading attachment {name:?}"));
    super::csv_rows::records(
        part.contents(),
        delimiter,
        &[(MESSAGE_DATE_FIELD, &date), (ATTACHMENT_FIELD, &name)],
        &format!("attachment {name:?}"),
    )
}

/// The first attachment that looks like CSV, else the first attachment, else the first part
/// of any kind that looks like CSV (an inline `text/csv` body).
fn pick_attachment<'a>(message: &'a mail_parser::Message<'a>) -> Option<&'a MessagePart<'a>> {
    message
        .attachments()
        .find(|part| looks_like_csv(part))
        .or_else(|| message.attachments().next())
        .or_else(|| message.parts.iter().find(|part| looks_like_csv(part)))
}

fn looks_like_csv(part: &MessagePart<'_>) -> bool {
    let by_type = part.content_type().is_some_and(|kind| {
        let subtype = kind.subtype().unwrap_or_default().to_ascii_lowercase();
        subtype == "csv" || subtype == "comma-separated-values"
    });
    let by_name = part
        .attachment_name()
        .is_some_and(|name| name.to_ascii_lowercase().ends_with(".csv"));
    by_type || by_name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: Value) -> Value {
        let mut base = json!({
            "host": "imap.example.com", "username": "me", "password": "pw", "date": "2026-11-03"
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        base
    }

    #[test]
    fn settings_defaults_dates_and_plain_imap_only_on_loopback() {
        let plan = Plan::new(&settings(json!({"sender": "a@b", "subject": "Daily"}))).unwrap();
        assert_eq!(plan.settings.port, None);
        assert_eq!(plan.settings.tls.port(), 993);
        assert_eq!(TlsMode::Starttls.port(), 143);
        assert_eq!(plan.settings.mailbox, "INBOX");
        assert_eq!(plan.imap_date(), "03-Nov-2026");
        assert_eq!(
            plan.described(),
            r#"on 2026-11-03 from "a@b" with subject "Daily""#
        );
        let plain = Plan::new(&settings(json!({"tls": "none"})))
            .err()
            .unwrap()
            .to_string();
        assert!(plain.contains("loopback"), "{plain}");
        for host in ["127.0.0.1", "localhost", "[::1]"] {
            Plan::new(&settings(json!({"tls": "none", "host": host}))).unwrap();
        }
        for bad in [
            json!({"date": "03/11/2026"}),
            json!({"subject": "a\r\nb"}),
            json!({"csv": {"delimiter": "\""}}),
            json!({"ca_cert_pem": "not a pem"}),
            json!({"tls": "STARTTLS"}),
        ] {
            assert!(Plan::new(&settings(bad.clone())).is_err(), "{bad}");
        }
        assert_eq!(
            EmailAttachmentConnector.upstream(&settings(json!({}))),
            Some("imaps://imap.example.com:993".to_owned())
        );
    }

    #[test]
    fn the_csv_attachment_is_decoded_from_base64() {
        let raw = "From: Reports <reports@example.com>\r\n\
Date: Tue, 03 Nov 2026 07:30:00 +0000\r\n\
Subject: Daily\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain\r\n\
\r\n\
See attached.\r\n\
--b1\r\n\
Content-Type: application/pdf; name=\"x.pdf\"\r\n\
Content-Disposition: attachment; filename=\"x.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0=\r\n\
--b1\r\n\
Content-Type: text/csv; name=\"day.csv\"\r\n\
Content-Disposition: attachment; filename=\"day.csv\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
Y2hhbm5lbDtjbGlja3MKZW1haWw7MTIKc2VhcmNoOzM0Cg==\r\n\
--b1--\r\n";
        let records = attachment_records(raw.as_bytes(), b';', "2026-11-03").unwrap();
        assert_eq!(
            records,
            vec![
                json!({"channel": "email", "clicks": "12", "_message_date": "2026-11-03T07:30:00Z", "_attachment": "day.csv"}),
                json!({"channel": "search", "clicks": "34", "_message_date": "2026-11-03T07:30:00Z", "_attachment": "day.csv"}),
            ]
        );
        let none = attachment_records(b"Subject: x\r\n\r\nhello\r\n", b',', "2026-11-03")
            .unwrap_err()
            .to_string();
        assert!(none.contains("no attachment"), "{none}");
    }
}
