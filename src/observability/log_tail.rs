//! Backend of `GET /v1/logs?job=&level=&since=&follow=&limit=`: filters the NDJSON log file
//! and streams the matching lines, optionally following the file as it grows.
//!
//! Invariant: only complete lines (ending in `\n`) that parse as JSON and match the query are
//! yielded, each with its `\n`; a last line the writer has not finished is held back until its
//! newline arrives. A missing file is "no lines yet", never an error.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;
use tokio::fs::File;
use tokio::io::AsyncReadExt;
use tracing::Level;

use super::Error;

/// How often a following tail checks the file for new lines, truncation and replacement.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Bytes read per system call.
const READ_CHUNK: usize = 64 * 1024;

/// Longest line kept; a longer one (not a real log record) is dropped up to its newline so a
/// runaway writer cannot make the tail buffer without bound.
const MAX_LINE: usize = 1024 * 1024;

/// Name of the field carrying a job id, at the top level or in a span.
const JOB_FIELD: &str = "job_id";

/// The query string of `GET /v1/logs` as sent, before validation (every value is text so that
/// [`parse`] can give one clear error per parameter). Unknown parameters are ignored.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLogQuery {
    /// Job id to filter on.
    pub job: Option<String>,
    /// Minimum level: `error`, `warn`, `info`, `debug` or `trace` (any case).
    pub level: Option<String>,
    /// RFC 3339 timestamp; older lines are skipped.
    pub since: Option<String>,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    pub follow: Option<String>,
    /// Positive integer: stop after this many matching lines.
    pub limit: Option<String>,
}

/// A validated log query. Deserializes from a query string through [`RawLogQuery`], so
/// `axum::extract::Query<LogQuery>` rejects bad values with the [`Error::Query`] message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawLogQuery")]
pub struct LogQuery {
    /// Only lines of this job (top-level `job_id` or a span's `job_id`).
    pub job: Option<String>,
    /// Minimum level: `WARN` keeps `WARN` and `ERROR`.
    pub level: Option<Level>,
    /// Only lines whose `timestamp` is at or after this instant.
    pub since: Option<Timestamp>,
    /// Keep streaming lines appended after the end of the file was reached.
    pub follow: bool,
    /// Stop after this many matching lines (also when following).
    pub limit: Option<usize>,
}

impl TryFrom<RawLogQuery> for LogQuery {
    type Error = Error;

    fn try_from(raw: RawLogQuery) -> Result<Self, Error> {
        parse(&raw)
    }
}

/// Validates a raw query; blank values count as absent.
pub fn parse(raw: &RawLogQuery) -> Result<LogQuery, Error> {
    let level = present(&raw.level)
        .map(|level| {
            parse_level(level).ok_or_else(|| {
                invalid(
                    "level",
                    level,
                    "is not one of error, warn, info, debug, trace",
                )
            })
        })
        .transpose()?;
    let since = present(&raw.since)
        .map(|since| {
            since.parse::<Timestamp>().map_err(|err| {
                let reason =
                    format!("is not an RFC 3339 timestamp such as 2025-01-31T12:00:00Z ({err})");
                invalid("since", since, &reason)
            })
        })
        .transpose()?;
    let follow = match present(&raw.follow) {
        None => false,
        Some(flag) => {
            parse_flag(flag).ok_or_else(|| invalid("follow", flag, "is not true or false"))?
        }
    };
    let limit = present(&raw.limit)
        .map(|limit| match limit.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(invalid("limit", limit, "is not a positive integer")),
        })
        .transpose()?;

    Ok(LogQuery {
        job: present(&raw.job).map(str::to_owned),
        level,
        since,
        follow,
        limit,
    })
}

/// The trimmed value of a parameter, `None` when absent or blank.
fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The error for parameter `param` having value `value`.
fn invalid(param: &'static str, value: &str, reason: &str) -> Error {
    Error::Query {
        param,
        reason: format!("{value:?} {reason}"),
    }
}

/// Parses a boolean flag: `true`/`1`/`yes` or `false`/`0`/`no`, any case.
fn parse_flag(flag: &str) -> Option<bool> {
    let is = |word: &str| flag.eq_ignore_ascii_case(word);
    if is("true") || is("1") || is("yes") {
        Some(true)
    } else if is("false") || is("0") || is("no") {
        Some(false)
    } else {
        None
    }
}

/// Parses a level name, case-insensitively; numbers are not accepted.
fn parse_level(name: &str) -> Option<Level> {
    [
        Level::ERROR,
        Level::WARN,
        Level::INFO,
        Level::DEBUG,
        Level::TRACE,
    ]
    .into_iter()
    .find(|level| name.eq_ignore_ascii_case(level.as_str()))
}

/// Whether one parsed log line passes every filter of `query`. A line without a readable
/// `level` or `timestamp` fails the corresponding filter.
pub fn matches(line: &Value, query: &LogQuery) -> bool {
    if let Some(job) = &query.job
        && !mentions_job(line, job)
    {
        return false;
    }
    if let Some(min) = query.level {
        let Some(level) = line
            .get("level")
            .and_then(Value::as_str)
            .and_then(parse_level)
        else {
            return false;
        };
        // `tracing` orders levels by verbosity: ERROR < WARN < ... < TRACE.
        if level > min {
            return false;
        }
    }
    if let Some(since) = query.since {
        let Some(at) = line
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|ts| ts.parse::<Timestamp>().ok())
        else {
            return false;
        };
        if at < since {
            return false;
        }
    }
    true
}

/// Looks for the job id at the top level, in `fields` (unflattened events), in `span` (current
/// span) and in every entry of `spans` (span list).
fn mentions_job(line: &Value, job: &str) -> bool {
    has_job(line, job)
        || line
            .get("fields")
            .is_some_and(|fields| has_job(fields, job))
        || line.get("span").is_some_and(|span| has_job(span, job))
        || line
            .get("spans")
            .and_then(Value::as_array)
            .is_some_and(|spans| spans.iter().any(|span| has_job(span, job)))
}

/// Whether `object.job_id` equals `job` (as a string, or a number written the same way).
fn has_job(object: &Value, job: &str) -> bool {
    match object.get(JOB_FIELD) {
        Some(Value::String(id)) => id == job,
        Some(Value::Number(id)) => id.to_string() == job,
        _ => false,
    }
}

/// Streams the lines of the log file at `path` that match `query`, from the start of the file.
///
/// Without `follow` the stream ends at end of file (immediately and empty if the file does not
/// exist). With `follow` it then polls every [`POLL_INTERVAL`] forever, waiting for the file to
/// appear and starting over from the top when it is truncated or replaced; the consumer ends it
/// by dropping the stream. Unparsable lines are skipped. An I/O error is yielded once and ends
/// the stream.
pub fn tail(
    path: PathBuf,
    query: LogQuery,
) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let state = Tail {
        path,
        remaining: query.limit,
        query,
        file: None,
        pos: 0,
        partial: Vec::new(),
        skipping: false,
        ready: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        state.next_line().await.map(|item| (item, state))
    })
}

/// State of one [`tail`] stream.
struct Tail {
    path: PathBuf,
    query: LogQuery,
    /// Matching lines still allowed by `limit`.
    remaining: Option<usize>,
    /// The open log file, `None` until it exists or after it was replaced.
    file: Option<File>,
    /// Bytes read from `file` so far, to detect truncation.
    pos: u64,
    /// Bytes after the last newline seen: a line still being written.
    partial: Vec<u8>,
    /// Discarding an over-long line up to its newline.
    skipping: bool,
    /// Matching lines read but not yet yielded.
    ready: VecDeque<Bytes>,
    /// No more items: end of file without follow, limit reached, or an error was yielded.
    done: bool,
}

impl Tail {
    /// The next matching line, waiting for one when following; `None` ends the stream.
    async fn next_line(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(Ok(line));
            }
            if self.done {
                return None;
            }
            match self.read_more().await {
                Ok(true) => {}
                Ok(false) if !self.query.follow => self.done = true,
                Ok(false) => {
                    tokio::time::sleep(POLL_INTERVAL).await;
                    if let Err(err) = self.check_replaced().await {
                        self.done = true;
                        return Some(Err(err));
                    }
                }
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            }
        }
    }

    /// Reads the next chunk and queues its matching complete lines. `Ok(false)` means there is
    /// nothing to read right now: end of file, or the file does not exist (yet).
    async fn read_more(&mut self) -> io::Result<bool> {
        if self.file.is_none() {
            match File::open(&self.path).await {
                Ok(file) => {
                    self.file = Some(file);
                    self.pos = 0;
                    self.partial.clear();
                    self.skipping = false;
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(false);
        };

        let start = self.partial.len();
        self.partial.reserve(READ_CHUNK);
        let n = file.read_buf(&mut self.partial).await?;
        if n == 0 {
            return Ok(false);
        }
        self.pos += n as u64;
        self.take_lines(start);
        Ok(true)
    }

    /// Moves the complete lines out of `partial` (only bytes from `scan_from` on are new) and
    /// queues those that parse and match.
    fn take_lines(&mut self, scan_from: usize) {
        let Some(last_newline) = self.partial[scan_from..]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| scan_from + i)
        else {
            if self.partial.len() > MAX_LINE {
                self.partial.clear();
                self.skipping = true;
            }
            return;
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = Bytes::from(std::mem::replace(&mut self.partial, rest));

        let mut line_start = 0;
        while let Some(offset) = complete[line_start..].iter().position(|&b| b == b'\n') {
            let line_end = line_start + offset + 1;
            let line = complete.slice(line_start..line_end);
            line_start = line_end;

            if std::mem::take(&mut self.skipping) {
                continue;
            }
            if !self.line_matches(&line) {
                continue;
            }
            self.ready.push_back(line);
            if let Some(remaining) = self.remaining.as_mut() {
                *remaining -= 1;
                if *remaining == 0 {
                    self.done = true;
                    return;
                }
            }
        }
    }

    /// Whether a complete line (with its `\n`) is a JSON object matching the query.
    fn line_matches(&self, line: &[u8]) -> bool {
        let text = line.trim_ascii_end();
        if text.is_empty() {
            return false;
        }
        serde_json::from_slice::<Value>(text).is_ok_and(|value| matches(&value, &self.query))
    }

    /// At end of file while following: forgets the open file when the path was truncated,
    /// removed or replaced, so the next read starts over from the top of the current file.
    async fn check_replaced(&mut self) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let current = match tokio::fs::metadata(&self.path).await {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                self.file = None;
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        if current.len() < self.pos || !same_file(&current, &file.metadata().await?) {
            self.file = None;
        }
        Ok(())
    }
}

/// Whether two metadata describe the same file (same device and inode).
#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Without inodes a replaced file is only noticed when it is shorter than what was read.
#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::pin::pin;

    use futures::StreamExt;
    use serde_json::json;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn line(ts: &str, level: &str, message: &str) -> Value {
        json!({"timestamp": ts, "level": level, "message": message, "target": "gleaner"})
    }

    fn job_query(job: &str) -> LogQuery {
        LogQuery {
            job: Some(job.to_owned()),
            ..LogQuery::default()
        }
    }

    fn raw(pairs: &[(&str, &str)]) -> RawLogQuery {
        let mut raw = RawLogQuery::default();
        for (key, value) in pairs {
            let value = Some((*value).to_owned());
            match *key {
                "job" => raw.job = value,
                "level" => raw.level = value,
                "since" => raw.since = value,
                "follow" => raw.follow = value,
                "limit" => raw.limit = value,
                other => panic!("unknown key {other}"),
            }
        }
        raw
    }

    fn append(path: &std::path::Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open log");
        file.write_all(text.as_bytes()).expect("append");
    }

    async fn next_line<S>(stream: &mut S) -> String
    where
        S: Stream<Item = Result<Bytes, io::Error>> + Unpin,
    {
        let item = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("a line in time");
        let bytes = item.expect("stream not ended").expect("no i/o error");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[test]
    fn filters_by_job_at_top_level_and_in_spans() {
        let query = job_query("j1");
        let mut top = line("2025-01-01T00:00:00Z", "INFO", "top");
        top["job_id"] = json!("j1");
        let mut in_list = line("2025-01-01T00:00:00Z", "INFO", "list");
        in_list["spans"] = json!([{"name": "server"}, {"name": "step", "job_id": "j1"}]);
        let mut current = line("2025-01-01T00:00:00Z", "INFO", "current");
        current["span"] = json!({"name": "step", "job_id": "j1"});
        let mut other = line("2025-01-01T00:00:00Z", "INFO", "other");
        other["spans"] = json!([{"name": "step", "job_id": "j2"}]);
        let mut numeric = line("2025-01-01T00:00:00Z", "INFO", "numeric");
        numeric["job_id"] = json!(42);

        assert!(matches(&top, &query));
        assert!(matches(&in_list, &query));
        assert!(matches(&current, &query));
        assert!(!matches(&other, &query));
        assert!(!matches(
            &line("2025-01-01T00:00:00Z", "INFO", "none"),
            &query
        ));
        assert!(matches(&numeric, &job_query("42")));
    }

    #[test]
    fn level_is_a_minimum() {
        let query = LogQuery {
            level: Some(Level::WARN),
            ..LogQuery::default()
        };
        let kept: Vec<_> = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE", "bogus"]
            .into_iter()
            .filter(|level| matches(&line("2025-01-01T00:00:00Z", level, "m"), &query))
            .collect();
        assert_eq!(kept, ["ERROR", "WARN"]);
    }

    #[test]
    fn since_keeps_lines_at_or_after() {
        let query = parse(&raw(&[("since", "2025-01-01T00:00:01Z")])).expect("valid query");
        assert!(!matches(
            &line("2025-01-01T00:00:00.999999Z", "INFO", "m"),
            &query
        ));
        assert!(matches(&line("2025-01-01T00:00:01Z", "INFO", "m"), &query));
        assert!(!matches(
            &line("2025-01-01T01:00:00+01:00", "INFO", "m"),
            &query
        ));
        assert!(matches(
            &line("2025-01-01T01:00:01+01:00", "INFO", "m"),
            &query
        ));
        assert!(!matches(&json!({"level": "INFO"}), &query));
    }

    #[test]
    fn parse_validates_each_parameter() {
        let query = parse(&raw(&[
            ("job", "j1"),
            ("level", "WaRn"),
            ("since", "2025-01-31T12:00:00Z"),
            ("follow", "true"),
            ("limit", "10"),
        ]))
        .expect("valid query");
        assert_eq!(query.job.as_deref(), Some("j1"));
        assert_eq!(query.level, Some(Level::WARN));
        assert_eq!(
            query.since,
            Some("2025-01-31T12:00:00Z".parse().expect("ts"))
        );
        assert!(query.follow);
        assert_eq!(query.limit, Some(10));

        assert_eq!(
            parse(&raw(&[("level", ""), ("job", " ")])).expect("blank"),
            LogQuery::default()
        );
        for (param, value) in [
            ("level", "loud"),
            ("level", "3"),
            ("since", "yesterday"),
            ("follow", "maybe"),
            ("limit", "0"),
            ("limit", "-1"),
        ] {
            let err = parse(&raw(&[(param, value)])).expect_err("invalid value");
            let message = err.to_string();
            assert!(
                message.contains(param) && message.contains(value),
                "{message}"
            );
        }
    }

    #[test]
    fn deserializes_from_a_query_string() {
        let query: LogQuery =
            serde_json::from_value(json!({"job": "j1", "level": "error", "follow": "1", "x": "y"}))
                .expect("valid query");
        assert_eq!(query.level, Some(Level::ERROR));
        assert!(query.follow);
        let err = serde_json::from_value::<LogQuery>(json!({"level": "loud"})).expect_err("bad");
        assert!(err.to_string().contains("error, warn, info"), "{err}");
    }

    #[tokio::test]
    async fn missing_file_without_follow_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stream = tail(dir.path().join("absent.log"), LogQuery::default());
        let lines: Vec<_> = tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
            .await
            .expect("ends");
        assert!(lines.is_empty());
    }

    #[tokio::test]
    async fn streams_matching_complete_lines_from_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gleaner.log");
        append(
            &path,
            concat!(
                r#"{"timestamp":"2025-01-01T00:00:00Z","level":"INFO","message":"a","job_id":"j1"}"#,
                "\nnot json\n\n",
                r#"{"timestamp":"2025-01-01T00:00:01Z","level":"INFO","message":"b","job_id":"j2"}"#,
                "\n",
                r#"{"timestamp":"2025-01-01T00:00:02Z","level":"ERROR","message":"c","spans":[{"name":"step","job_id":"j1"}]}"#,
                "\n",
                r#"{"timestamp":"2025-01-01T00:00:03Z","level":"INFO","message":"partial","job_id":"j1""#,
            ),
        );

        let stream = tail(path.clone(), job_query("j1"));
        let lines: Vec<String> = stream
            .map(|line| String::from_utf8(line.expect("no i/o error").to_vec()).expect("utf-8"))
            .collect()
            .await;
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().all(|line| line.ends_with("}\n")), "{lines:?}");
        assert!(lines[0].contains(r#""message":"a""#), "{lines:?}");
        assert!(lines[1].contains(r#""message":"c""#), "{lines:?}");

        let limited = LogQuery {
            limit: Some(1),
            ..LogQuery::default()
        };
        assert_eq!(tail(path, limited).collect::<Vec<_>>().await.len(), 1);
    }

    #[tokio::test]
    async fn follow_picks_up_appended_lines_and_holds_back_partial_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gleaner.log");
        let query = LogQuery {
            follow: true,
            ..job_query("j1")
        };
        // Started before the file exists.
        let mut stream = pin!(tail(path.clone(), query));

        append(
            &path,
            "{\"level\":\"INFO\",\"job_id\":\"j2\",\"message\":\"other\"}\n{\"level\":\"INFO\",\"job_id\":\"j1\",\"message\":\"first\"}\n",
        );
        assert!(next_line(&mut stream).await.contains("first"));

        append(&path, "{\"level\":\"INFO\",\"job_id\":\"j1\",");
        let held = tokio::time::timeout(POLL_INTERVAL * 3, stream.next()).await;
        assert!(held.is_err(), "a partial line was emitted: {held:?}");

        append(&path, "\"message\":\"second\"}\n");
        let second = next_line(&mut stream).await;
        assert_eq!(
            second,
            "{\"level\":\"INFO\",\"job_id\":\"j1\",\"message\":\"second\"}\n"
        );
    }

    #[tokio::test]
    async fn follow_starts_over_after_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gleaner.log");
        append(
            &path,
            "{\"level\":\"INFO\",\"message\":\"old line that is rather long\"}\n",
        );
        let query = LogQuery {
            follow: true,
            ..LogQuery::default()
        };
        let mut stream = pin!(tail(path.clone(), query));
        assert!(next_line(&mut stream).await.contains("old line"));

        std::fs::write(&path, "{\"message\":\"new\"}\n").expect("truncate");
        assert_eq!(next_line(&mut stream).await, "{\"message\":\"new\"}\n");
    }
}
