//! `ImapServer`: a tiny IMAPS server on `127.0.0.1:0` (TLS with a certificate signed by the
//! test CA [`CA_CERT_PEM`], valid 2000–2100 for `127.0.0.1` and `localhost`) holding a few
//! canned messages. It answers CAPABILITY, LOGIN, SELECT INBOX, `UID SEARCH` with SENTON,
//! FROM and SUBJECT keys (quoted or atom arguments), `UID FETCH <uid> BODY.PEEK[]` and
//! LOGOUT, and records the logins, searches and fetches it saw. [`ImapServer::start_starttls`]
//! starts it as plain IMAP that refuses LOGIN until `STARTTLS` upgraded the connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub const USERNAME: &str = "reports@gleaner.test";
pub const PASSWORD: &str = "Imap-s3cret-app-password";

/// The CA the test server's certificate chains to; pass it as `ca_cert_pem`.
pub const CA_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBezCCASCgAwIBAgIUFidV4nJ2C12XLtb88bCKDQAS8NAwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPZ2xlYW5lciB0ZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIx
MDAwMTAxMDAwMDAwWjAaMRgwFgYDVQQDDA9nbGVhbmVyIHRlc3QgQ0EwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAATBIbo5F1X+SPxJVrWuA3gVFgxTf+dxwqWxUK3c
HHIYN3jGASmMux5rhm4jm6aoKLjFe4PaNTL3bV6u+pD/BcLyo0IwQDAPBgNVHRMB
Af8EBTADAQH/MA4GA1UdDwEB/wQEAwIBBjAdBgNVHQ4EFgQUN8vsJvwkipiTnA2H
TevBG9ekGbkwCgYIKoZIzj0EAwIDSQAwRgIhAO9eVl4xZ5R5nUpnRKT2qz/1qVri
lHyE5bHafk6YSNEFAiEA4c/zViEU9wOOOoG6u17gjH9uVulcdXEumhj7cZGvlus=
-----END CERTIFICATE-----
";

const SERVER_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBlTCCATqgAwIBAgIUJhBLanAGK/bkAc5tuyqNjwcdApwwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPZ2xlYW5lciB0ZXN0IENBMCAXDTAwMDEwMTAwMDAwMFoYDzIx
MDAwMTAxMDAwMDAwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAR6E3ed+La8MeDpm2hlv3b8BJZC/KtyScp7pefj4EityO2A
oJohiBzEXkPVsSDfCQi7K4ELLZZr8KssJ3hkVQhRo2IwYDAMBgNVHRMBAf8EAjAA
MBoGA1UdEQQTMBGHBH8AAAGCCWxvY2FsaG9zdDATBgNVHSUEDDAKBggrBgEFBQcD
ATAfBgNVHSMEGDAWgBQ3y+wm/CSKmJOcDYdN68Eb16QZuTAKBggqhkjOPQQDAgNJ
ADBGAiEAsOe/FKIjvvTJC5G+aYX2tq6Un1Xe/AoNDtk1afo3LwcCIQD+GLce9b5p
sfpMBNe9iAMAP0ncvVnQKFdTs3IgnXCKZw==
-----END CERTIFICATE-----
";

const SERVER_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdu319tcgnqHeBGi+
AF9eXR3JDIVWQzaVn8Ofcv2taumhRANCAAR6E3ed+La8MeDpm2hlv3b8BJZC/Kty
Scp7pefj4EityO2AoJohiBzEXkPVsSDfCQi7K4ELLZZr8KssJ3hkVQhR
-----END PRIVATE KEY-----
";

/// A canned message: its UID, the day it was sent (YYYY-MM-DD), sender, subject and bytes.
#[derive(Debug, Clone)]
pub struct CannedMessage {
    pub uid: u32,
    pub day: String,
    pub from: String,
    pub subject: String,
    pub raw: Vec<u8>,
}

impl CannedMessage {
    /// A multipart message sent on `day` at `time` (HH:MM) with a text part, then `csv` as a
    /// base64 `text/csv` attachment named `filename`.
    pub fn with_csv(
        uid: u32,
        day: &str,
        time: &str,
        from: &str,
        subject: &str,
        filename: &str,
        csv: &str,
    ) -> Self {
        let date = jiff::civil::Date::strptime("%Y-%m-%d", day).expect("day");
        let header_date = format!("{} {time}:00 +0000", date.strftime("%a, %d %b %Y"));
        let encoded = base64::engine::general_purpose::STANDARD.encode(csv);
        let wrapped: Vec<&str> = encoded
            .as_bytes()
            .chunks(76)
            .map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII"))
            .collect();
        let raw = format!(
            "From: Ad Network <{from}>\r\n\
             To: {USERNAME}\r\n\
             Date: {header_date}\r\n\
             Subject: {subject}\r\n\
             Message-ID: <{uid}@adnet.example>\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"=_part_{uid}\"\r\n\
             \r\n\
             --=_part_{uid}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             \r\n\
             Your daily report is attached.\r\n\
             --=_part_{uid}\r\n\
             Content-Type: text/csv; name=\"{filename}\"\r\n\
             Content-Disposition: attachment; filename=\"{filename}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             \r\n\
             {}\r\n\
             --=_part_{uid}--\r\n",
            wrapped.join("\r\n")
        );
        Self {
            uid,
            day: day.to_owned(),
            from: from.to_owned(),
            subject: subject.to_owned(),
            raw: raw.into_bytes(),
        }
    }
}

#[derive(Default)]
struct Seen {
    /// Connections upgraded with STARTTLS.
    upgrades: usize,
    logins: Vec<bool>,
    searches: Vec<String>,
    fetches: Vec<u32>,
}

/// A running IMAPS server.
#[derive(Clone)]
pub struct ImapServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl ImapServer {
    /// IMAPS: TLS from the first byte.
    pub async fn start(messages: Vec<CannedMessage>) -> Self {
        Self::serve(messages, false).await
    }

    /// Plain IMAP offering STARTTLS, with LOGIN refused before it.
    pub async fn start_starttls(messages: Vec<CannedMessage>) -> Self {
        Self::serve(messages, true).await
    }

    async fn serve(messages: Vec<CannedMessage>, starttls: bool) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = CertificateDer::from_pem_slice(SERVER_CERT_PEM.as_bytes()).expect("cert");
        let key = PrivateKeyDer::from_pem_slice(SERVER_KEY_PEM.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let messages = Arc::new(messages);
        let server = Self {
            addr,
            seen: Arc::clone(&seen),
        };
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = Arc::clone(&seen);
                let messages = Arc::clone(&messages);
                tokio::spawn(async move {
                    if !starttls {
                        if let Ok(stream) = acceptor.accept(socket).await {
                            let _ = session(stream, &messages, &seen, Phase::Secure).await;
                        }
                        return;
                    }
                    let Ok(Some(plain)) = session(socket, &messages, &seen, Phase::Plain).await
                    else {
                        return;
                    };
                    seen.lock().unwrap().upgrades += 1;
                    if let Ok(stream) = acceptor.accept(plain).await {
                        let _ = session(stream, &messages, &seen, Phase::Upgraded).await;
                    }
                });
            }
        });
        server
    }

    /// How many connections were upgraded with STARTTLS.
    pub fn upgrades(&self) -> usize {
        self.seen.lock().unwrap().upgrades
    }

    /// Whether each login attempt was accepted, in order.
    pub fn logins(&self) -> Vec<bool> {
        self.seen.lock().unwrap().logins.clone()
    }

    /// The argument text of each `UID SEARCH`.
    pub fn searches(&self) -> Vec<String> {
        self.seen.lock().unwrap().searches.clone()
    }

    /// The UIDs fetched.
    pub fn fetches(&self) -> Vec<u32> {
        self.seen.lock().unwrap().fetches.clone()
    }
}

/// Atoms and quoted strings of a command line.
fn tokens(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&ch) = chars.peek() {
        if ch == ' ' {
            chars.next();
        } else if ch == '"' {
            chars.next();
            let mut text = String::new();
            while let Some(ch) = chars.next() {
                match ch {
                    '\\' => text.extend(chars.next()),
                    '"' => break,
                    other => text.push(other),
                }
            }
            tokens.push(text);
        } else {
            let mut atom = String::new();
            while let Some(&ch) = chars.peek() {
                if ch == ' ' {
                    break;
                }
                atom.push(ch);
                chars.next();
            }
            tokens.push(atom);
        }
    }
    tokens
}

/// Where a session stands on TLS.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TLS from the first byte.
    Secure,
    /// Plain, before STARTTLS: LOGIN is refused.
    Plain,
    /// After STARTTLS: no new greeting.
    Upgraded,
}

/// Serves one connection; `Some(stream)` when the client asked for STARTTLS in the plain
/// phase (the caller does the handshake and goes on with [`Phase::Upgraded`]).
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    messages: &[CannedMessage],
    seen: &Mutex<Seen>,
    phase: Phase,
) -> std::io::Result<Option<S>> {
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);
    match phase {
        Phase::Secure => {
            write
                .write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] gleaner test IMAP ready\r\n")
                .await?
        }
        Phase::Plain => write
            .write_all(
                b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] gleaner test IMAP ready\r\n",
            )
            .await?,
        Phase::Upgraded => {}
    }
    let mut logged_in = false;
    let mut selected = false;
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let tokens = tokens(line);
        let (tag, command) = match tokens.as_slice() {
            [tag, command, ..] => (tag.clone(), command.to_ascii_uppercase()),
            _ => {
                write.write_all(b"* BAD empty command\r\n").await?;
                continue;
            }
        };
        let args = &tokens[2..];
        let answer = match (command.as_str(), args) {
            ("CAPABILITY", _) => {
                format!("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK CAPABILITY completed\r\n")
            }
            ("STARTTLS", []) if phase == Phase::Plain => {
                write
                    .write_all(format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes())
                    .await?;
                write.flush().await?;
                return Ok(Some(read.into_inner().unsplit(write)));
            }
            ("LOGIN", _) if phase == Phase::Plain => {
                format!("{tag} NO [PRIVACYREQUIRED] LOGINDISABLED: STARTTLS first\r\n")
            }
            ("LOGIN", [user, password]) => {
                logged_in = user == USERNAME && password == PASSWORD;
                seen.lock().unwrap().logins.push(logged_in);
                if logged_in {
                    format!("{tag} OK LOGIN completed\r\n")
                } else {
                    format!("{tag} NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")
                }
            }
            ("SELECT", [mailbox]) if logged_in => {
                selected = mailbox.eq_ignore_ascii_case("INBOX");
                if selected {
                    format!(
                        "* {} EXISTS\r\n* OK [UIDVALIDITY 1] UIDs valid\r\n{tag} OK [READ-WRITE] SELECT completed\r\n",
                        messages.len()
                    )
                } else {
                    format!("{tag} NO [NONEXISTENT] no such mailbox\r\n")
                }
            }
            ("UID", [sub, rest @ ..]) if selected && sub.eq_ignore_ascii_case("SEARCH") => {
                seen.lock().unwrap().searches.push(rest.join(" "));
                match search(messages, rest) {
                    Ok(uids) => {
                        let list: Vec<String> = uids.iter().map(u32::to_string).collect();
                        let list = list.join(" ");
                        let space = if list.is_empty() { "" } else { " " };
                        format!("* SEARCH{space}{list}\r\n{tag} OK SEARCH completed\r\n")
                    }
                    Err(why) => format!("{tag} BAD {why}\r\n"),
                }
            }
            ("UID", [sub, uid, item])
                if selected
                    && sub.eq_ignore_ascii_case("FETCH")
                    && item.eq_ignore_ascii_case("BODY.PEEK[]") =>
            {
                let found = uid.parse::<u32>().ok().and_then(|uid| {
                    messages
                        .iter()
                        .enumerate()
                        .find(|(_, message)| message.uid == uid)
                });
                match found {
                    Some((index, message)) => {
                        seen.lock().unwrap().fetches.push(message.uid);
                        let mut bytes = format!(
                            "* {} FETCH (UID {} BODY[] {{{}}}\r\n",
                            index + 1,
                            message.uid,
                            message.raw.len()
                        )
                        .into_bytes();
                        bytes.extend_from_slice(&message.raw);
                        bytes.extend_from_slice(
                            format!(")\r\n{tag} OK FETCH completed\r\n").as_bytes(),
                        );
                        write.write_all(&bytes).await?;
                        continue;
                    }
                    None => format!("{tag} OK FETCH completed\r\n"),
                }
            }
            ("LOGOUT", _) => {
                write
                    .write_all(
                        format!("* BYE logging out\r\n{tag} OK LOGOUT completed\r\n").as_bytes(),
                    )
                    .await?;
                write.shutdown().await?;
                return Ok(None);
            }
            _ => format!("{tag} BAD unexpected command in this state\r\n"),
        };
        write.write_all(answer.as_bytes()).await?;
    }
}

/// One search key's test of a message.
type Filter = Box<dyn Fn(&CannedMessage) -> bool>;

/// The UIDs matching SENTON/FROM/SUBJECT keys (all must hold), ascending.
fn search(messages: &[CannedMessage], keys: &[String]) -> Result<Vec<u32>, String> {
    let mut filters: Vec<Filter> = Vec::new();
    let mut keys = keys.iter();
    while let Some(key) = keys.next() {
        let value = keys
            .next()
            .ok_or_else(|| format!("{key} needs an argument"))?
            .clone();
        match key.to_ascii_uppercase().as_str() {
            "SENTON" => {
                let day = jiff::civil::Date::strptime("%d-%b-%Y", &value)
                    .map_err(|error| format!("SENTON {value}: {error}"))?
                    .to_string();
                filters.push(Box::new(move |message| message.day == day));
            }
            "FROM" => {
                let value = value.to_lowercase();
                filters.push(Box::new(move |message| {
                    message.from.to_lowercase().contains(&value)
                }));
            }
            "SUBJECT" => {
                let value = value.to_lowercase();
                filters.push(Box::new(move |message| {
                    message.subject.to_lowercase().contains(&value)
                }));
            }
            other => return Err(format!("unsupported search key {other}")),
        }
    }
    let mut uids: Vec<u32> = messages
        .iter()
        .filter(|message| filters.iter().all(|filter| filter(message)))
        .map(|message| message.uid)
        .collect();
    uids.sort_unstable();
    Ok(uids)
}
