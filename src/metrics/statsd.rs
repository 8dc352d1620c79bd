//! StatsD (with DogStatsD tags) over UDP: a line parser and a listener that feeds event batches
//! into a channel.
//!
//! A line is `name:value|type[|@rate][|#tag:value,tag2:value2]`, several lines per datagram
//! separated by `\n`. Types: `c` counter, `g` gauge, `ms`/`h`/`d` timer, `m` meter; sets (`s`)
//! are refused. A counter's value is divided by its sample rate (`hits:1|c|@0.1` adds 10); for
//! the other types the rate is checked but ignored. A tag without `:value` gets the value
//! `true`; a repeated tag keeps its last value. The DogStatsD container (`|c:…`) and timestamp
//! (`|T…`) sections are accepted and ignored. Relative gauges (`+n|g`, `-n|g`) are refused,
//! since an event carries an absolute value: send the absolute value instead. Names may not
//! contain `:` here (the first `:` ends the name).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Event, EventError, IngestError, MetricType, MetricsService, SeriesKey};

/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams already queued in the socket that are folded into one batch.
const MAX_DATAGRAMS_PER_BATCH: usize = 64;

/// Why a StatsD line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsdError {
    #[error("missing ':' between name and value")]
    MissingValue,
    #[error("missing '|' before the metric type")]
    MissingType,
    #[error("value {0:?} is not a finite number")]
    Value(String),
    #[error("unsupported metric type {0:?}, expected c, g, ms, h, d or m")]
    Type(String),
    #[error("relative gauge values (+n or -n) are not supported")]
    RelativeGauge,
    #[error("sample rate {0:?} must be a number in (0, 1]")]
    SampleRate(String),
    #[error("unknown section {0:?}")]
    Section(String),
    #[error(transparent)]
    Key(#[from] EventError),
}

/// Parses one line (surrounding whitespace ignored).
pub fn parse_line(line: &str) -> Result<Event, StatsdError> {
    let mut sections = line.trim().split('|');
    let head = sections.next().unwrap_or_default();
    let (name, raw_value) = head.split_once(':').ok_or(StatsdError::MissingValue)?;
    let type_code = sections.next().ok_or(StatsdError::MissingType)?;
    let kind = match type_code {
        "c" => MetricType::Counter,
        "g" => MetricType::Gauge,
        "ms" | "h" | "d" => MetricType::Timer,
        "m" => MetricType::Meter,
        other => return Err(StatsdError::Type(other.to_owned())),
    };
    let mut sample_rate = 1.0;
    let mut tags = BTreeMap::new();
    for section in sections {
        if let Some(raw_rate) = section.strip_prefix('@') {
            sample_rate = raw_rate
                .parse::<f64>()
                .ok()
                .filter(|rate| *rate > 0.0 && *rate <= 1.0)
                .ok_or_else(|| StatsdError::SampleRate(raw_rate.to_owned()))?;
        } else if let Some(raw_tags) = section.strip_prefix('#') {
            for tag in raw_tags.split(',') {
                let (key, value) = tag.split_once(':').unwrap_or((tag, "true"));
                tags.insert(key.to_owned(), value.to_owned());
            }
        } else if section.starts_with("c:") || section.starts_with('T') {
            continue;
        } else {
            return Err(StatsdError::Section(section.to_owned()));
        }
    }
    if kind == MetricType::Gauge && raw_value.starts_with(['+', '-']) {
        return Err(StatsdError::RelativeGauge);
    }
    let invalid_value = || StatsdError::Value(raw_value.to_owned());
    let mut value: f64 = raw_value.parse().map_err(|_| invalid_value())?;
    if kind == MetricType::Counter {
        value /= sample_rate;
    }
    if !value.is_finite() {
        return Err(invalid_value());
    }
    let key = SeriesKey::new(name, tags)?;
    Ok(Event { key, kind, value })
}

/// Parses every non-blank line of a datagram: the events and the number of invalid lines.
pub fn parse_packet(packet: &str) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut invalid = 0;
    for line in packet.lines().filter(|line| !line.trim().is_empty()) {
        match parse_line(line) {
            Ok(event) => events.push(event),
            Err(_) => invalid += 1,
        }
    }
    (events, invalid)
}

/// What a listener has seen; shared, readable while it runs and after it stops.
#[derive(Debug)]
pub struct StatsdStats {
    received_lines: AtomicU64,
    invalid_lines: AtomicU64,
    dropped_lines: AtomicU64,
    local_addr: SocketAddr,
    socket_inode: Option<u64>,
}

impl StatsdStats {
    /// Non-blank lines received, valid or not.
    pub fn received_lines(&self) -> u64 {
        self.received_lines.load(Ordering::Relaxed)
    }

    /// Lines refused by the parser (under `serve`, also events whose type conflicts with
    /// their series).
    pub fn invalid_lines(&self) -> u64 {
        self.invalid_lines.load(Ordering::Relaxed)
    }

    /// Valid lines lost because the consumer's channel was full (or closed), or, under
    /// `serve`, because ingest could not take them.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines.load(Ordering::Relaxed)
    }

    /// Datagrams the kernel dropped because the socket's receive buffer was full: the `drops`
    /// column of `/proc/net/udp` (or `udp6`) for this socket. `None` where that is not readable.
    pub fn kernel_drops(&self) -> Option<u64> {
        let table = if self.local_addr.is_ipv4() {
            "/proc/net/udp"
        } else {
            "/proc/net/udp6"
        };
        let text = std::fs::read_to_string(table).ok()?;
        drops_in_table(&text, self.socket_inode, self.local_addr.port())
    }
}

/// Sums the `drops` column of the rows for `inode` (or, when unknown, for the local `port`).
fn drops_in_table(table: &str, inode: Option<u64>, port: u16) -> Option<u64> {
    let mut found = None;
    for row in table.lines().skip(1) {
        let columns: Vec<&str> = row.split_whitespace().collect();
        let [_, local, _, _, _, _, _, _, _, row_inode, _, _, drops, ..] = columns[..] else {
            continue;
        };
        let row_port = local
            .rsplit_once(':')
            .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
        let matches = match inode {
            Some(inode) => row_inode.parse::<u64>().ok() == Some(inode),
            None => row_port == Some(port),
        };
        if matches {
            let drops: u64 = drops.parse().ok()?;
            found = Some(found.unwrap_or(0) + drops);
        }
    }
    found
}

/// The inode of a socket, from `/proc/self/fd` (Linux), to find its row in `/proc/net/udp`.
fn socket_inode(socket: &UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// A bound StatsD UDP socket.
#[derive(Debug)]
pub struct StatsdListener {
    socket: UdpSocket,
    stats: Arc<StatsdStats>,
    recv_buffer_bytes: usize,
}

impl StatsdListener {
    /// Binds `addr` and asks for a receive buffer of `recv_buffer_bytes` (the kernel may grant
    /// less, capped by `net.core.rmem_max`; see `recv_buffer_bytes()`).
    pub async fn bind(addr: SocketAddr, recv_buffer_bytes: usize) -> io::Result<Self> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if let Err(error) = socket.set_recv_buffer_size(recv_buffer_bytes) {
            warn!(%error, requested = recv_buffer_bytes, "statsd receive buffer not enlarged");
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let granted = socket.recv_buffer_size().unwrap_or(0);
        let socket = UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
        let stats = Arc::new(StatsdStats {
            received_lines: AtomicU64::new(0),
            invalid_lines: AtomicU64::new(0),
            dropped_lines: AtomicU64::new(0),
            local_addr: socket.local_addr()?,
            socket_inode: socket_inode(&socket),
        });
        Ok(Self {
            socket,
            stats,
            recv_buffer_bytes: granted,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stats.local_addr
    }

    /// The receive buffer the kernel granted (Linux reports twice the usable size).
    pub fn recv_buffer_bytes(&self) -> usize {
        self.recv_buffer_bytes
    }

    pub fn stats(&self) -> Arc<StatsdStats> {
        Arc::clone(&self.stats)
    }

    pub fn kernel_drops(&self) -> Option<u64> {
        self.stats.kernel_drops()
    }

    /// Receives until `cancel` fires (or the receiver of `events` is gone). Datagrams waiting
    /// in the socket are parsed together into one batch, handed on with `try_send`; when the
    /// channel is full the batch is dropped and counted in `dropped_lines`.
    pub async fn run(self, events: mpsc::Sender<Vec<Event>>, cancel: CancellationToken) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        loop {
            let received = tokio::select! {
                () = cancel.cancelled() => return,
                received = self.socket.recv_from(&mut buffer) => received,
            };
            let mut batch = Vec::new();
            match received {
                Ok((length, _)) => self.parse_into(&buffer[..length], &mut batch),
                Err(error) => {
                    warn!(%error, "statsd receive failed");
                    continue;
                }
            }
            for _ in 1..MAX_DATAGRAMS_PER_BATCH {
                match self.socket.try_recv_from(&mut buffer) {
                    Ok((length, _)) => self.parse_into(&buffer[..length], &mut batch),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        warn!(%error, "statsd receive failed");
                        break;
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let lines = batch.len() as u64;
            match events.try_send(batch) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.stats.dropped_lines.fetch_add(lines, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.stats.dropped_lines.fetch_add(lines, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    fn parse_into(&self, datagram: &[u8], batch: &mut Vec<Event>) {
        let text = String::from_utf8_lossy(datagram);
        let (events, invalid) = parse_packet(&text);
        let received = (events.len() + invalid) as u64;
        self.stats
            .received_lines
            .fetch_add(received, Ordering::Relaxed);
        self.stats
            .invalid_lines
            .fetch_add(invalid as u64, Ordering::Relaxed);
        batch.extend(events);
    }
}

/// Receive buffer `serve` asks for.
pub const RECV_BUFFER_BYTES: usize = 8 << 20;
/// Batches waiting between the socket and ingest in `serve`.
const SERVE_QUEUE: usize = 256;
/// How often `serve` retries a batch while ingest is saturated, 10 ms apart.
const SATURATED_RETRIES: usize = 100;

/// Binds a listener on `addr` and feeds its batches into `service.ingest` until `cancel`
/// fires. Events whose type conflicts with their series are left out of their batch and
/// counted as invalid lines; a batch ingest cannot take (saturated for a second, or a store
/// error) is counted as dropped lines.
pub async fn serve(
    service: Arc<MetricsService>,
    addr: SocketAddr,
    cancel: CancellationToken,
) -> io::Result<JoinHandle<()>> {
    let listener = StatsdListener::bind(addr, RECV_BUFFER_BYTES).await?;
    info!(
        addr = %listener.local_addr(),
        recv_buffer_bytes = listener.recv_buffer_bytes(),
        "statsd listening"
    );
    let stats = listener.stats();
    service.attach_statsd(listener.local_addr(), stats.clone());
    let (sender, mut receiver) = mpsc::channel(SERVE_QUEUE);
    let receiving = tokio::spawn(listener.run(sender, cancel));
    let max_batch = service.config().max_batch.max(1);
    Ok(tokio::spawn(async move {
        while let Some(mut batch) = receiver.recv().await {
            // Whatever queued up meanwhile goes in the same ingest (one commit), so a burst
            // is absorbed by fewer, larger batches instead of overflowing the queue.
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            ingest_batch(&service, &stats, batch).await;
        }
        let _ = receiving.await;
    }))
}

async fn ingest_batch(service: &Arc<MetricsService>, stats: &StatsdStats, mut batch: Vec<Event>) {
    let mut saturated = 0;
    while !batch.is_empty() {
        match service.ingest_events(None, batch.clone()).await {
            Ok(_) => return,
            Err(IngestError::TypeMismatch { index, .. }) if index < batch.len() => {
                batch.remove(index);
                stats.invalid_lines.fetch_add(1, Ordering::Relaxed);
            }
            Err(IngestError::Saturated) if saturated < SATURATED_RETRIES => {
                saturated += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(error) => {
                warn!(%error, lines = batch.len(), "statsd batch dropped");
                let lines = batch.len() as u64;
                stats.dropped_lines.fetch_add(lines, Ordering::Relaxed);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parsed(line: &str) -> (String, MetricType, f64) {
        let event = parse_line(line).unwrap_or_else(|error| panic!("{line:?}: {error}"));
        (event.key.to_string(), event.kind, event.value)
    }

    #[test]
    fn parses_the_types() {
        assert_eq!(
            parsed("hits:1|c"),
            ("hits".into(), MetricType::Counter, 1.0)
        );
        assert_eq!(
            parsed("hits:-3|c"),
            ("hits".into(), MetricType::Counter, -3.0)
        );
        assert_eq!(
            parsed("temp:21.5|g"),
            ("temp".into(), MetricType::Gauge, 21.5)
        );
        assert_eq!(
            parsed("db.query:320|ms"),
            ("db.query".into(), MetricType::Timer, 320.0)
        );
        assert_eq!(parsed("size:7|h"), ("size".into(), MetricType::Timer, 7.0));
        assert_eq!(parsed("size:7|d"), ("size".into(), MetricType::Timer, 7.0));
        assert_eq!(
            parsed("logins:1|m"),
            ("logins".into(), MetricType::Meter, 1.0)
        );
        assert_eq!(
            parsed("  hits:1|c\r"),
            ("hits".into(), MetricType::Counter, 1.0)
        );
    }

    #[test]
    fn sample_rate_scales_counters_only() {
        assert_eq!(parsed("hits:1|c|@0.1").2, 10.0);
        assert_eq!(parsed("lat:40|ms|@0.5").2, 40.0);
        for bad in ["hits:1|c|@0", "hits:1|c|@1.5", "hits:1|c|@x", "hits:1|c|@"] {
            assert!(
                matches!(parse_line(bad), Err(StatsdError::SampleRate(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn dogstatsd_tags() {
        let (key, ..) = parsed("req:1|c|#env:prod,canary,route:/v1/x|@1|c:abc|T1700000000");
        assert_eq!(key, "req{canary=true,env=prod,route=/v1/x}");
        let (key, ..) = parsed("req:1|c|#env:a,env:b");
        assert_eq!(key, "req{env=b}");
        assert!(matches!(
            parse_line("req:1|c|#bad key:1"),
            Err(StatsdError::Key(_))
        ));
        assert!(matches!(
            parse_line("req:1|c|#k:a=b"),
            Err(StatsdError::Key(_))
        ));
    }

    #[test]
    fn malformed_lines_are_refused() {
        type Expectation = fn(&StatsdError) -> bool;
        let cases: [(&str, Expectation); 10] = [
            ("hits", |e| *e == StatsdError::MissingValue),
            ("hits:1", |e| *e == StatsdError::MissingType),
            ("hits:x|c", |e| matches!(e, StatsdError::Value(_))),
            ("hits:|c", |e| matches!(e, StatsdError::Value(_))),
            ("hits:NaN|c", |e| matches!(e, StatsdError::Value(_))),
            ("hits:inf|ms", |e| matches!(e, StatsdError::Value(_))),
            ("users:5|s", |e| matches!(e, StatsdError::Type(_))),
            ("temp:+5|g", |e| *e == StatsdError::RelativeGauge),
            ("hits:1|c|x", |e| matches!(e, StatsdError::Section(_))),
            ("9hits:1|c", |e| matches!(e, StatsdError::Key(_))),
        ];
        for (line, expected) in cases {
            let error = parse_line(line).expect_err(line);
            assert!(expected(&error), "{line}: {error:?}");
        }
        assert!(
            parse_line("a:1:2|c").is_err(),
            "multi-value lines are refused"
        );
    }

    #[test]
    fn packets_skip_blank_lines_and_count_invalid_ones() {
        let (events, invalid) = parse_packet("a:1|c\n\nb:2|g\r\nbroken\nc:3|ms\n");
        assert_eq!(events.len(), 3);
        assert_eq!(invalid, 1);
    }

    #[test]
    fn kernel_drops_column_is_read_by_inode_or_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 4242 2 0000000000000000 17\n\
             2: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 999 2 0000000000000000 3\n";
        assert_eq!(drops_in_table(table, Some(4242), 0), Some(17));
        assert_eq!(drops_in_table(table, None, 53), Some(3));
        assert_eq!(drops_in_table(table, Some(1), 0), None);
    }

    async fn wait_until(mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A listener on a free local port, running until the returned token is cancelled.
    struct Running {
        addr: SocketAddr,
        stats: Arc<StatsdStats>,
        receiver: mpsc::Receiver<Vec<Event>>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(recv_buffer_bytes: usize, capacity: usize) -> Running {
        let listener = StatsdListener::bind("127.0.0.1:0".parse().unwrap(), recv_buffer_bytes)
            .await
            .unwrap();
        let (sender, receiver) = mpsc::channel(capacity);
        let cancel = CancellationToken::new();
        Running {
            addr: listener.local_addr(),
            stats: listener.stats(),
            receiver,
            cancel: cancel.clone(),
            task: tokio::spawn(listener.run(sender, cancel)),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_round_trip_counts_every_line() {
        let Running {
            addr,
            stats,
            mut receiver,
            cancel,
            task,
        } = start(8 << 20, 1024).await;

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for datagram in 0..100 {
            let mut packet: String = (0..100)
                .map(|i| format!("rt.hits:1|c|#shard:{}\n", (datagram * 100 + i) % 4))
                .collect();
            packet.push_str("not a metric\n");
            client.send_to(packet.as_bytes(), addr).await.unwrap();
            if datagram % 5 == 4 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        wait_until(|| stats.received_lines() >= 10_100).await;
        cancel.cancel();
        task.await.unwrap();

        let mut events = 0;
        let mut total = 0.0;
        while let Ok(batch) = receiver.try_recv() {
            events += batch.len();
            total += batch.iter().map(|event| event.value).sum::<f64>();
        }
        assert_eq!(stats.received_lines(), 10_100);
        assert_eq!(stats.invalid_lines(), 100);
        assert_eq!(stats.dropped_lines(), 0);
        assert_eq!((events, total), (10_000, 10_000.0));
        if let Some(drops) = stats.kernel_drops() {
            assert_eq!(drops, 0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_channel_counts_dropped_lines() {
        let Running {
            addr,
            stats,
            mut receiver,
            cancel,
            task,
        } = start(1 << 20, 1).await;

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for _ in 0..20 {
            let packet = "q.depth:3|g\n".repeat(10);
            client.send_to(packet.as_bytes(), addr).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        wait_until(|| stats.received_lines() >= 200).await;
        cancel.cancel();
        task.await.unwrap();

        let delivered: usize = receiver.recv().await.map_or(0, |batch| batch.len());
        assert!(stats.dropped_lines() > 0);
        assert_eq!(delivered as u64 + stats.dropped_lines(), 200);
    }

    #[tokio::test]
    async fn kernel_drops_show_socket_buffer_overflow() {
        // Not running the listener: the smallest buffer the kernel allows overflows at once.
        let listener = StatsdListener::bind("127.0.0.1:0".parse().unwrap(), 1)
            .await
            .unwrap();
        let Some(before) = listener.kernel_drops() else {
            return; // no /proc/net/udp here
        };
        assert_eq!(before, 0);
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let packet = "x:1|c\n".repeat(200);
        for _ in 0..200 {
            client
                .send_to(packet.as_bytes(), listener.local_addr())
                .unwrap();
        }
        assert!(listener.kernel_drops().unwrap() > 0);
    }
}
