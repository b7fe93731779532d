//! Figures: a latency histogram, /proc readings, grouped errors, and the
//! little JSON writer for the RESULT line (a handful of numbers and strings
//! do not justify another dependency).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A JSON value, just enough for the RESULT line.
#[derive(Debug, Clone)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Uint(u64),
    /// Written with three decimals; NaN and infinities become `null`.
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    pub(crate) fn obj() -> Json {
        Json::Obj(Vec::new())
    }

    pub(crate) fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    pub(crate) fn uint(n: u64) -> Json {
        Json::Uint(n)
    }

    pub(crate) fn opt_uint(n: Option<u64>) -> Json {
        n.map_or(Json::Null, Json::Uint)
    }

    pub(crate) fn opt_num(n: Option<f64>) -> Json {
        n.map_or(Json::Null, Json::Num)
    }

    pub(crate) fn opt_str(s: Option<&str>) -> Json {
        s.map_or(Json::Null, Json::str)
    }

    /// The member `key` of an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A number's value.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Uint(n) => Some(*n as f64),
            Json::Num(n) if n.is_finite() => Some(*n),
            _ => None,
        }
    }

    /// A string's value.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Adds a member to an object (builder style); other values are
    /// returned unchanged.
    #[must_use]
    pub(crate) fn with(mut self, key: &'static str, value: Json) -> Json {
        if let Json::Obj(members) = &mut self {
            members.push((key, value));
        }
        self
    }

    /// Sets a member of an object, replacing the one of that name if any.
    #[must_use]
    pub(crate) fn set(mut self, key: &'static str, value: Json) -> Json {
        if let Json::Obj(members) = &mut self {
            match members.iter_mut().find(|(k, _)| *k == key) {
                Some((_, old)) => *old = value,
                None => members.push((key, value)),
            }
        }
        self
    }
}

fn write_json_str(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Uint(n) => write!(f, "{n}"),
            Json::Num(n) if n.is_finite() => write!(f, "{n:.3}"),
            Json::Num(_) => f.write_str("null"),
            Json::Str(s) => write_json_str(f, s),
            Json::Arr(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Json::Obj(members) => {
                f.write_str("{")?;
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_json_str(f, key)?;
                    write!(f, ":{value}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Values below this are counted exactly.
const EXACT: u64 = 256;
/// Above [`EXACT`], each power of two is split into 2^SUB_BITS buckets, so a
/// reported percentile is at most 1/128 (0.8 %) above the true value.
const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;

/// A log-linear histogram of non-negative integers (latencies in µs). It
/// records every sample in constant memory, where keeping raw samples of
/// 1,000 subscribers × N messages would not.
#[derive(Debug, Clone, Default)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

fn bucket_of(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let high = 63 - value.leading_zeros();
    let shift = high - SUB_BITS;
    let top = (value >> shift) as usize;
    EXACT as usize + (shift as usize - 1) * SUB + (top - SUB)
}

fn bucket_upper(index: usize) -> u64 {
    if index < EXACT as usize {
        return index as u64;
    }
    let k = index - EXACT as usize;
    let shift = k / SUB + 1;
    let top = (k % SUB + SUB) as u64;
    ((top + 1) << shift) - 1
}

impl Histogram {
    pub(crate) fn record(&mut self, value: u64) {
        let index = bucket_of(value);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The smallest bucket bound at or above fraction `q` of the samples.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_upper(index).min(self.max));
            }
        }
        Some(self.max)
    }

    pub(crate) fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// Percentiles in milliseconds, for the RESULT line.
    pub(crate) fn to_json_ms(&self) -> Json {
        let ms = |us: Option<u64>| Json::opt_num(us.map(|us| us as f64 / 1000.0));
        Json::obj()
            .with("samples", Json::uint(self.total))
            .with("p50_ms", ms(self.quantile(0.50)))
            .with("p90_ms", ms(self.quantile(0.90)))
            .with("p99_ms", ms(self.quantile(0.99)))
            .with("p999_ms", ms(self.quantile(0.999)))
            .with("max_ms", ms(self.max()))
    }

    /// `p50 1.234 ms, p99 …` for the human-readable lines.
    pub(crate) fn summary_ms(&self) -> String {
        let ms = |us: Option<u64>| {
            us.map_or_else(|| "-".to_owned(), |us| format!("{:.3}", us as f64 / 1000.0))
        };
        format!(
            "p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms ({} samples)",
            ms(self.quantile(0.50)),
            ms(self.quantile(0.90)),
            ms(self.quantile(0.99)),
            ms(self.quantile(0.999)),
            ms(self.max()),
            self.total
        )
    }
}

/// Identical error messages counted together: a thousand subscribers failing
/// the same way should read as one line, not a thousand.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    counts: BTreeMap<String, u64>,
}

impl Errors {
    pub(crate) fn add(&mut self, message: impl Into<String>) {
        *self.counts.entry(message.into()).or_default() += 1;
    }

    pub(crate) fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub(crate) fn merge(&mut self, other: &Errors) {
        for (message, count) in &other.counts {
            *self.counts.entry(message.clone()).or_default() += count;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub(crate) fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.counts
            .iter()
            .map(|(message, count)| format!("{count} × {message}"))
    }

    pub(crate) fn to_json(&self) -> Json {
        Json::Arr(
            self.counts
                .iter()
                .map(|(message, count)| {
                    Json::obj()
                        .with("error", Json::str(message.as_str()))
                        .with("count", Json::uint(*count))
                })
                .collect(),
        )
    }
}

/// Resident set size of `pid` in KiB (VmRSS of /proc/PID/status).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Resident set size of this process in KiB.
pub(crate) fn own_rss_kib() -> Option<u64> {
    proc_status_kib("/proc/self/status", "VmRSS:")
}

fn proc_status_kib(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Linux reports utime and stime in USER_HZ ticks, which the kernel ABI
/// fixes at 100 per second whatever the internal tick rate.
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of `pid` (all its threads) so far.
pub(crate) fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |pid| format!("/proc/{pid}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name in field 2 may hold spaces and parentheses; fields
    // after its closing parenthesis are plain numbers. utime and stime are
    // fields 14 and 15, i.e. the 12th and 13th after the name.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

/// CPU seconds used by this tool and by the server between two points, so
/// the report shows how the two shared the machine's cores.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuMark {
    bench: Option<Duration>,
    server: Option<Duration>,
    at: std::time::Instant,
}

impl CpuMark {
    pub(crate) fn now(server_pid: Option<u32>) -> CpuMark {
        CpuMark {
            bench: cpu_time(None),
            server: server_pid.and_then(|pid| cpu_time(Some(pid))),
            at: std::time::Instant::now(),
        }
    }

    /// `{"wall_secs", "bench_cpu_secs", "server_cpu_secs"}` since `self`.
    pub(crate) fn since(&self, server_pid: Option<u32>) -> (Json, String) {
        self.spent(server_pid).report()
    }

    /// Wall and CPU seconds since `self`.
    pub(crate) fn spent(&self, server_pid: Option<u32>) -> CpuSpent {
        let later = CpuMark::now(server_pid);
        let diff = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
            _ => None,
        };
        CpuSpent {
            wall: later.at.duration_since(self.at).as_secs_f64(),
            bench: diff(self.bench, later.bench),
            server: diff(self.server, later.server),
        }
    }
}

/// What [`CpuMark::spent`] measured, in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSpent {
    pub(crate) wall: f64,
    pub(crate) bench: Option<f64>,
    pub(crate) server: Option<f64>,
}

impl CpuSpent {
    /// The RESULT object and the human-readable line.
    pub(crate) fn report(&self) -> (Json, String) {
        let CpuSpent {
            wall,
            bench,
            server,
        } = *self;
        let show = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.2}"));
        let line = format!(
            "CPU over {wall:.2} s wall: bench {} s, server {} s",
            show(bench),
            show(server)
        );
        let json = Json::obj()
            .with("wall_secs", Json::Num(wall))
            .with("bench_cpu_secs", Json::opt_num(bench))
            .with("server_cpu_secs", Json::opt_num(server));
        (json, line)
    }
}

/// The soft limit on open files of this process, which caps how many
/// sockets one bench process can hold.
pub(crate) fn open_files_limit() -> Option<u64> {
    proc_open_files_limit("/proc/self/limits")
}

/// Descriptors a server should keep free beyond the bench's connections
/// (its log files, listeners, /proc reads, connections of other clients).
const SERVER_FD_MARGIN: u64 = 64;

/// Refuses to open `connections` more sockets to server `pid` when they
/// would exhaust its open-file limit. Not hypothetical: RabbitMQ 3.10 at its
/// limit had its memory monitor crash on EMFILE, after which every new STOMP
/// session died until the monitor was restarted by hand.
pub(crate) fn check_server_fds(pid: u32, connections: u64) -> Result<(), String> {
    let Some(limit) = proc_open_files_limit(&format!("/proc/{pid}/limits")) else {
        return Ok(());
    };
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Ok(());
    };
    let used = fds.count() as u64;
    if used + connections + SERVER_FD_MARGIN > limit {
        return Err(format!(
            "server pid {pid} may open {limit} files and has {used} open: {connections} more \
             connections would exhaust that (a server out of descriptors can fail in ways that \
             outlive the bench); use at most {} or raise its limit (--ignore-server-fd-limit \
             to try anyway)",
            limit.saturating_sub(used + SERVER_FD_MARGIN)
        ));
    }
    Ok(())
}

fn proc_open_files_limit(path: &str) -> Option<u64> {
    let limits = std::fs::read_to_string(path).ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Established TCP connections that process `pid` holds to remote `port`:
/// a relaying server's connections to its broker (one per client session
/// plus its system connection). `None` when /proc cannot be read.
pub(crate) fn connections_to_port(pid: u32, port: u16) -> Option<u64> {
    let mut inodes = std::collections::HashSet::new();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for entry in fds.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok())
        {
            inodes.insert(inode);
        }
    }
    let mut total = 0;
    let mut read_any = false;
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            read_any = true;
            total += established_to_port(&text, port, &inodes);
        }
    }
    read_any.then_some(total)
}

/// Rows of a /proc/net/tcp(6) table in state ESTABLISHED (01) whose remote
/// port is `port` and whose socket inode is one of `inodes`.
fn established_to_port(table: &str, port: u16, inodes: &std::collections::HashSet<u64>) -> u64 {
    let mut count = 0;
    // The first line holds the column names.
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl, local_address, rem_address, st, tx:rx, tr:when, retrnsmt,
        // uid, timeout, inode, ...
        let (Some(remote), Some(state), Some(inode)) =
            (fields.get(2), fields.get(3), fields.get(9))
        else {
            continue;
        };
        let remote_port = remote
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        let inode = inode.parse::<u64>().ok();
        if *state == "01"
            && remote_port == Some(port)
            && inode.is_some_and(|inode| inodes.contains(&inode))
        {
            count += 1;
        }
    }
    count
}

/// A random 64-bit value without a `rand` dependency: the std hasher is
/// seeded randomly per process, and the clock separates calls.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bound_their_values() {
        let mut previous = 0;
        for value in 0..200_000u64 {
            let index = bucket_of(value);
            assert!(index == previous || index == previous + 1, "gap at {value}");
            assert!(bucket_upper(index) >= value);
            assert!(bucket_upper(index) as f64 <= value as f64 * (1.0 + 1.0 / 128.0) + 1.0);
            previous = index;
        }
        assert_eq!(bucket_of(u64::MAX), bucket_of(u64::MAX - 1));
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        // 500 shares a bucket with 501 (buckets are 2 wide there).
        assert_eq!(h.quantile(0.5), Some(501));
        assert_eq!(h.quantile(0.1), Some(100));
        let p99 = h.quantile(0.99).unwrap_or_default();
        assert!((990..=998).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), Some(1000));
        let mut other = Histogram::default();
        other.record(5000);
        h.merge(&other);
        assert_eq!(h.max(), Some(5000));
        assert_eq!(h.total, 1001);
    }

    #[test]
    fn json_escapes() {
        let j = Json::obj().with("a", Json::str("x\"y\n")).with(
            "b",
            Json::Arr(vec![Json::Num(1.5), Json::Null, Json::Num(f64::NAN)]),
        );
        assert_eq!(j.to_string(), r#"{"a":"x\"y\n","b":[1.500,null,null]}"#);
    }

    #[test]
    fn counts_established_sockets_to_a_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:F0AD 00000000:0000 0A 00000000:00000000 00:00000000 00000000   108        0 100 1 0 100 0 0 10 0
   1: 0100007F:D431 0100007F:F0AD 01 00000000:00000000 00:00000000 00000000     0        0 201 1 0 20 4 30 10 -1
   2: 0100007F:D432 0100007F:F0AD 01 00000000:00000000 00:00000000 00000000     0        0 202 1 0 20 4 30 10 -1
   3: 0100007F:D433 0100007F:F0AD 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0
   4: 0100007F:D434 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 204 1 0 20 4 30 10 -1
   5: 0100007F:D435 0100007F:F0AD 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0 20 4 30 10 -1
";
        let ours: std::collections::HashSet<u64> = [100, 201, 202, 204].into_iter().collect();
        // 61613 = 0xF0AD: rows 1 and 2; not the listener (0A), not the
        // TIME_WAIT row (06), not another port, not another process's socket.
        assert_eq!(established_to_port(table, 61613, &ours), 2);
        assert_eq!(established_to_port(table, 8080, &ours), 1);
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:D431 0000000000000000FFFF00000100007F:F0AD 01 00000000:00000000 00:00000000 00000000     0        0 201 1 0 20 4 30 10 -1
";
        assert_eq!(established_to_port(tcp6, 61613, &ours), 1);
        assert_eq!(established_to_port("", 61613, &ours), 0);
    }

    #[test]
    fn reads_own_proc_files() {
        assert!(own_rss_kib().is_some_and(|kib| kib > 0));
        assert!(cpu_time(None).is_some());
        assert!(open_files_limit().is_some());
    }
}
