//! A minimal IMAP4rev1 client: tagged commands whose string arguments are quoted or sent as
//! literals (waiting for the server's `+` continuation), responses read line by line with
//! `{n}` literals, and the four commands the connector needs (LOGIN, SELECT, UID SEARCH,
//! UID FETCH BODY.PEEK[]).
//!
//! Invariant: every read is bounded in time (`timeout`) and size (lines, literals), so a
//! silent or endless server cannot hold a worker or exhaust memory.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest response line accepted, literals excluded.
const MAX_LINE: u64 = 1 << 20;

/// A connection the client can talk over (TLS or, on loopback, plain TCP).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One argument of a command.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    /// Sent as is (a command name, a search key, a number).
    Atom(&'a str),
    /// A string: quoted when it is printable ASCII, otherwise a literal.
    Str(&'a str),
}

/// Why a conversation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the server closed the connection")]
    Closed,
    #[error("{0}")]
    Protocol(String),
    #[error("a response is larger than {0} bytes")]
    TooLarge(usize),
}

/// One response line: its text (with each literal's `{n}` marker kept) and its literals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Line {
    pub text: Vec<u8>,
    pub literals: Vec<Vec<u8>>,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// A command's tagged completion and the untagged lines before it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: Status,
    /// The human-readable rest of the tagged line.
    pub text: String,
    pub untagged: Vec<Line>,
}

impl Response {
    /// Ok, or an error naming `what` with the server's text.
    pub fn ok(self, what: &str) -> Result<Self, ImapError> {
        match self.status {
            Status::Ok => Ok(self),
            Status::No | Status::Bad => Err(ImapError::Protocol(format!(
                "{what} refused: {}",
                self.text
            ))),
        }
    }
}

/// An IMAP session over `S`.
pub struct Client<S> {
    stream: BufReader<S>,
    next_tag: u32,
    timeout: Duration,
    max_literal: usize,
}

impl<S: Io> Client<S> {
    /// Reads the server greeting (`* OK` or `* PREAUTH`; `* BYE` is an error).
    pub async fn greet(
        stream: S,
        timeout: Duration,
        max_literal: usize,
    ) -> Result<Self, ImapError> {
        let mut client = Self {
            stream: BufReader::new(stream),
            next_tag: 1,
            timeout,
            max_literal,
        };
        let greeting = client.read_line().await?;
        let text = String::from_utf8_lossy(&greeting.text);
        let upper = text.to_ascii_uppercase();
        if upper.starts_with("* OK") || upper.starts_with("* PREAUTH") {
            Ok(client)
        } else {
            Err(ImapError::Protocol(format!(
                "unexpected greeting: {}",
                excerpt(&text)
            )))
        }
    }

    /// A session on a stream that was upgraded by `STARTTLS`: no new greeting comes.
    pub fn resume(stream: S, timeout: Duration, max_literal: usize) -> Self {
        Self {
            stream: BufReader::new(stream),
            next_tag: 1,
            timeout,
            max_literal,
        }
    }

    /// `STARTTLS`; on OK, the bare stream for the TLS handshake. Bytes the server sent after
    /// its OK would be read as if they came over TLS (a known injection), so they are refused.
    pub async fn starttls(mut self) -> Result<S, ImapError> {
        self.command(&[Arg::Atom("STARTTLS")])
            .await?
            .ok("STARTTLS")?;
        if !self.stream.buffer().is_empty() {
            return Err(ImapError::Protocol(
                "the server sent data after agreeing to STARTTLS; refused (it could be injected)"
                    .into(),
            ));
        }
        Ok(self.stream.into_inner())
    }

    /// `LOGIN`; `Ok(Err(text))` when the server refuses the credentials.
    pub async fn login(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<Result<(), String>, ImapError> {
        let response = self
            .command(&[Arg::Atom("LOGIN"), Arg::Str(username), Arg::Str(password)])
            .await?;
        Ok(match response.status {
            Status::Ok => Ok(()),
            Status::No | Status::Bad => Err(response.text),
        })
    }

    /// `SELECT mailbox` (read-write is not needed: the fetch uses `BODY.PEEK`).
    pub async fn select(&mut self, mailbox: &str) -> Result<(), ImapError> {
        self.command(&[Arg::Atom("SELECT"), Arg::Str(mailbox)])
            .await?
            .ok(&format!("SELECT {mailbox:?}"))
            .map(|_| ())
    }

    /// `UID SEARCH <criteria>`: the UIDs found, ascending. `CHARSET UTF-8` is named when a
    /// string argument is not ASCII.
    pub async fn uid_search(&mut self, criteria: &[Arg<'_>]) -> Result<Vec<u32>, ImapError> {
        let mut args = vec![Arg::Atom("UID"), Arg::Atom("SEARCH")];
        let non_ascii = criteria
            .iter()
            .any(|arg| matches!(arg, Arg::Str(text) if !text.is_ascii()));
        if non_ascii {
            args.extend([Arg::Atom("CHARSET"), Arg::Atom("UTF-8")]);
        }
        args.extend_from_slice(criteria);
        let response = self.command(&args).await?.ok("UID SEARCH")?;
        let mut uids = Vec::new();
        for line in &response.untagged {
            let text = String::from_utf8_lossy(&line.text);
            let mut words = text.split_ascii_whitespace();
            if words.next() == Some("*")
                && words
                    .next()
                    .is_some_and(|word| word.eq_ignore_ascii_case("SEARCH"))
            {
                for word in words {
                    let uid = word.parse::<u32>().map_err(|_| {
                        ImapError::Protocol(format!("SEARCH answer has a non-UID {word:?}"))
                    })?;
                    uids.push(uid);
                }
            }
        }
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// `UID FETCH uid BODY.PEEK[]`: the whole message, unread flag untouched.
    pub async fn fetch_message(&mut self, uid: u32) -> Result<Vec<u8>, ImapError> {
        let uid_text = uid.to_string();
        let response = self
            .command(&[
                Arg::Atom("UID"),
                Arg::Atom("FETCH"),
                Arg::Atom(&uid_text),
                Arg::Atom("BODY.PEEK[]"),
            ])
            .await?
            .ok("UID FETCH")?;
        response
            .untagged
            .into_iter()
            .filter(|line| {
                let text = String::from_utf8_lossy(&line.text).to_ascii_uppercase();
                text.contains(" FETCH ") && text.contains("BODY[]")
            })
            .find_map(|line| line.literals.into_iter().next())
            .ok_or_else(|| {
                ImapError::Protocol(format!("the FETCH answer for UID {uid} holds no message"))
            })
    }

    /// `LOGOUT`, ignoring what the server says (the work is done).
    pub async fn logout(&mut self) {
        let _ = self.command(&[Arg::Atom("LOGOUT")]).await;
    }

    /// Sends one tagged command and reads until its completion.
    pub async fn command(&mut self, args: &[Arg<'_>]) -> Result<Response, ImapError> {
        let tag = format!("G{:04}", self.next_tag);
        self.next_tag += 1;
        let mut untagged = Vec::new();
        let mut out = tag.clone().into_bytes();
        for arg in args {
            out.push(b' ');
            match arg {
                Arg::Atom(atom) => out.extend_from_slice(atom.as_bytes()),
                Arg::Str(text) if quotable(text) => out.extend_from_slice(quote(text).as_bytes()),
                Arg::Str(text) => {
                    out.extend_from_slice(format!("{{{}}}\r\n", text.len()).as_bytes());
                    self.write(&out).await?;
                    out.clear();
                    if let Some(done) = self.await_continuation(&tag, &mut untagged).await? {
                        return Ok(done);
                    }
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        self.write(&out).await?;
        loop {
            let line = self.read_line().await?;
            if let Some(done) = completion(&tag, &line, &mut untagged)? {
                return Ok(done);
            }
        }
    }

    /// Reads until the `+` continuation (`None`) or an early completion of the command.
    async fn await_continuation(
        &mut self,
        tag: &str,
        untagged: &mut Vec<Line>,
    ) -> Result<Option<Response>, ImapError> {
        loop {
            let line = self.read_line().await?;
            if line.text.starts_with(b"+") {
                return Ok(None);
            }
            if let Some(done) = completion(tag, &line, untagged)? {
                return Ok(Some(done));
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ImapError> {
        let stream = self.stream.get_mut();
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        tokio::time::timeout(self.timeout, write)
            .await
            .map_err(|_| ImapError::Timeout(self.timeout))??;
        Ok(())
    }

    /// One response line with the literals it announces, bounded in size and time.
    pub async fn read_line(&mut self) -> Result<Line, ImapError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.read_line_untimed())
            .await
            .map_err(|_| ImapError::Timeout(timeout))?
    }

    async fn read_line_untimed(&mut self) -> Result<Line, ImapError> {
        let mut line = Line::default();
        let mut literal_bytes = 0usize;
        loop {
            let mut chunk = Vec::new();
            let read = (&mut self.stream)
                .take(MAX_LINE)
                .read_until(b'\n', &mut chunk)
                .await?;
            if read == 0 {
                return Err(ImapError::Closed);
            }
            if !chunk.ends_with(b"\n") {
                return Err(if read as u64 >= MAX_LINE {
                    ImapError::TooLarge(MAX_LINE as usize)
                } else {
                    ImapError::Closed
                });
            }
            chunk.pop();
            if chunk.ends_with(b"\r") {
                chunk.pop();
            }
            let literal = literal_length(&chunk);
            line.text.extend_from_slice(&chunk);
            let Some(length) = literal else {
                return Ok(line);
            };
            literal_bytes = literal_bytes.saturating_add(length);
            if literal_bytes > self.max_literal {
                return Err(ImapError::TooLarge(self.max_literal));
            }
            let mut bytes = vec![0; length];
            self.stream
                .read_exact(&mut bytes)
                .await
                .map_err(|error| match error.kind() {
                    std::io::ErrorKind::UnexpectedEof => ImapError::Closed,
                    _ => ImapError::Io(error),
                })?;
            line.literals.push(bytes);
        }
    }
}

/// The tagged completion `line` holds, if any; untagged lines are kept, `* BYE` ends it.
fn completion(
    tag: &str,
    line: &Line,
    untagged: &mut Vec<Line>,
) -> Result<Option<Response>, ImapError> {
    let text = String::from_utf8_lossy(&line.text);
    if let Some(rest) = text.strip_prefix("* ") {
        let mut words = rest.splitn(2, ' ');
        if words
            .next()
            .is_some_and(|word| word.eq_ignore_ascii_case("BYE"))
        {
            return Err(ImapError::Protocol(format!(
                "the server ended the session: {}",
                excerpt(words.next().unwrap_or(""))
            )));
        }
        untagged.push(line.clone());
        return Ok(None);
    }
    let Some(rest) = text
        .strip_prefix(tag)
        .and_then(|rest| rest.strip_prefix(' '))
    else {
        // A continuation or a line of another tag: not ours to handle.
        return Ok(None);
    };
    let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = match word.to_ascii_uppercase().as_str() {
        "OK" => Status::Ok,
        "NO" => Status::No,
        "BAD" => Status::Bad,
        _ => {
            return Err(ImapError::Protocol(format!(
                "unexpected completion: {}",
                excerpt(&text)
            )));
        }
    };
    Ok(Some(Response {
        status,
        text: excerpt(rest),
        untagged: std::mem::take(untagged),
    }))
}

/// The `n` of a line ending in `{n}` (or the non-synchronizing `{n+}`).
fn literal_length(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&byte| byte == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether `text` can be sent as a quoted string.
fn quotable(text: &str) -> bool {
    text.len() <= 1_000 && text.bytes().all(|byte| (0x20..0x7f).contains(&byte))
}

/// `text` as an IMAP quoted string.
pub fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for ch in text.chars() {
        if ch == '"' || ch == '\\' {
            quoted.push('\\');
        }
        quoted.push(ch);
    }
    quoted.push('"');
    quoted
}

/// At most 200 characters of a server's text, for error messages.
fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, duplex};

    use super::*;

    const SECOND: Duration = Duration::from_secs(5);

    /// A scripted server: for each expected client line, the lines to answer.
    async fn serve(server: DuplexStream, greeting: &str, script: Vec<(&'static str, String)>) {
        let (read, mut write) = tokio::io::split(server);
        let mut read = BufReader::new(read);
        write.write_all(greeting.as_bytes()).await.unwrap();
        for (expected, answer) in script {
            let mut line = String::new();
            read.read_line(&mut line).await.unwrap();
            assert_eq!(line, expected);
            write.write_all(answer.as_bytes()).await.unwrap();
        }
    }

    #[test]
    fn literals_and_quoting() {
        assert_eq!(literal_length(b"* 1 FETCH (BODY[] {12}"), Some(12));
        assert_eq!(literal_length(b"* 1 FETCH (BODY[] {12+}"), Some(12));
        assert_eq!(literal_length(b"* OK {x}"), None);
        assert_eq!(literal_length(b"* OK }"), None);
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert!(quotable("Daily report"));
        assert!(!quotable("Rapport journalier é"));
    }

    #[tokio::test]
    async fn starttls_hands_back_the_stream_and_refuses_injected_bytes() {
        let (client, server) = duplex(4096);
        let script = vec![("G0001 STARTTLS\r\n", "G0001 OK begin TLS\r\n".to_owned())];
        let server = tokio::spawn(serve(server, "* OK ready\r\n", script));
        let imap = Client::greet(client, SECOND, 1_000).await.unwrap();
        imap.starttls().await.expect("the bare stream");
        server.await.unwrap();

        // A line sent with the OK, before the handshake, would be read as if it were secure.
        let (client, server) = duplex(4096);
        let injected = "G0001 OK begin TLS\r\n* 1 EXISTS\r\n".to_owned();
        let server = tokio::spawn(serve(
            server,
            "* OK ready\r\n",
            vec![("G0001 STARTTLS\r\n", injected)],
        ));
        let imap = Client::greet(client, SECOND, 1_000).await.unwrap();
        let refused = imap.starttls().await.expect_err("injected bytes refused");
        assert!(
            refused.to_string().contains("after agreeing to STARTTLS"),
            "{refused}"
        );
        server.await.unwrap();

        let (client, server) = duplex(4096);
        let no = vec![("G0001 STARTTLS\r\n", "G0001 BAD not offered\r\n".to_owned())];
        let server = tokio::spawn(serve(server, "* OK ready\r\n", no));
        let imap = Client::greet(client, SECOND, 1_000).await.unwrap();
        let refused = imap.starttls().await.expect_err("a refused STARTTLS");
        assert!(refused.to_string().contains("not offered"), "{refused}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn login_search_and_fetch_with_a_literal() {
        let (client, server) = duplex(64 * 1024);
        let body = "Subject: x\r\n\r\nhello\r\n";
        let script = vec![
            ("G0001 LOGIN \"me\" {6}\r\n", "+ go on\r\n".to_owned()),
            ("pässw\r\n", "G0001 OK logged in\r\n".to_owned()),
            (
                "G0002 SELECT \"INBOX\"\r\n",
                "* 3 EXISTS\r\nG0002 OK [READ-WRITE] done\r\n".to_owned(),
            ),
            (
                "G0003 UID SEARCH SENTON 03-Nov-2026 FROM \"a@b\"\r\n",
                "* SEARCH 7 12 9\r\nG0003 OK done\r\n".to_owned(),
            ),
            (
                "G0004 UID FETCH 12 BODY.PEEK[]\r\n",
                format!(
                    "* 2 FETCH (FLAGS (\\Seen))\r\n* 2 FETCH (UID 12 BODY[] {{{}}}\r\n{body})\r\nG0004 OK done\r\n",
                    body.len()
                ),
            ),
        ];
        let server = tokio::spawn(serve(server, "* OK ready\r\n", script));
        let mut imap = Client::greet(client, SECOND, 1_000).await.unwrap();
        imap.login("me", "pässw").await.unwrap().unwrap();
        imap.select("INBOX").await.unwrap();
        let uids = imap
            .uid_search(&[
                Arg::Atom("SENTON"),
                Arg::Atom("03-Nov-2026"),
                Arg::Atom("FROM"),
                Arg::Str("a@b"),
            ])
            .await
            .unwrap();
        assert_eq!(uids, [7, 9, 12]);
        assert_eq!(imap.fetch_message(12).await.unwrap(), body.as_bytes());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn refused_login_bye_size_and_silence() {
        let (client, server) = duplex(64 * 1024);
        let script = vec![(
            "G0001 LOGIN \"me\" \"bad\"\r\n",
            "G0001 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n".to_owned(),
        )];
        let server = tokio::spawn(serve(server, "* OK ready\r\n", script));
        let mut imap = Client::greet(client, SECOND, 1_000).await.unwrap();
        let refused = imap.login("me", "bad").await.unwrap().unwrap_err();
        assert!(refused.contains("Invalid credentials"), "{refused}");
        server.await.unwrap();

        let (client, server) = duplex(1024);
        let bye = tokio::spawn(serve(server, "* BYE go away\r\n", vec![]));
        let error = Client::greet(client, SECOND, 1_000).await.err().unwrap();
        assert!(error.to_string().contains("go away"), "{error}");
        bye.await.unwrap();

        let (client, server) = duplex(64 * 1024);
        let script = vec![(
            "G0001 UID FETCH 1 BODY.PEEK[]\r\n",
            "* 1 FETCH (UID 1 BODY[] {5000}\r\n".to_owned(),
        )];
        let big = tokio::spawn(serve(server, "* OK\r\n", script));
        let mut imap = Client::greet(client, SECOND, 1_000).await.unwrap();
        let error = imap.fetch_message(1).await.unwrap_err();
        assert!(matches!(error, ImapError::TooLarge(1_000)), "{error}");
        big.await.unwrap();

        let (client, _server) = duplex(1024);
        let error = Client::greet(client, Duration::from_millis(50), 1_000)
            .await
            .err()
            .unwrap();
        assert!(matches!(error, ImapError::Timeout(_)), "{error}");
    }
}
