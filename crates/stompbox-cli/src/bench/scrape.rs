//! `--metrics on`: scraping a spawned server's `GET /metrics` during a
//! measurement, as Prometheus would, so its cost shows in the figures.

use super::paired::{self, mean, rates_text, ratio, rounds_note, server_cpu, show};
use super::report::{Errors, Json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// How often: Prometheus' usual scrape intervals are 15 s to 1 min, so
/// this is a harsh case.
pub(crate) const SCRAPE_EVERY: Duration = Duration::from_secs(1);
/// A scrape taking longer is an error, as it would be for Prometheus
/// with `scrape_timeout` at the interval.
const SCRAPE_TIMEOUT: Duration = SCRAPE_EVERY;
/// The most of one scrape's body that is read; a larger body is an error.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A value of `--metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MetricsArg {
    /// `metrics.enabled = true`, scraped every second by the bench.
    On,
    /// `metrics.enabled = false`.
    Off,
}

impl MetricsArg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            MetricsArg::On => "on",
            MetricsArg::Off => "off",
        }
    }

    /// Arguments for the spawned server.
    pub(crate) fn server_args(self) -> Vec<String> {
        let enabled = self == MetricsArg::On;
        vec!["--set".to_owned(), format!("metrics.enabled={enabled}")]
    }
}

/// What the scrapes of one measurement came to.
#[derive(Debug, Default)]
pub(crate) struct Scrapes {
    pub(crate) ok: u64,
    pub(crate) errors: Errors,
    total: Duration,
    slowest: Duration,
    /// Bytes of the last good scrape.
    bytes: usize,
}

impl Scrapes {
    fn record(&mut self, result: Result<usize, String>, took: Duration) {
        match result {
            Ok(bytes) => {
                self.ok += 1;
                self.total += took;
                self.slowest = self.slowest.max(took);
                self.bytes = bytes;
            }
            Err(e) => self.errors.add(e),
        }
    }

    fn mean_ms(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.total.as_secs_f64() * 1000.0 / self.ok as f64)
    }

    /// The line for the report.
    pub(crate) fn line(&self) -> String {
        format!(
            "metrics scraped every {} s: {} scrapes ({} failed), {} ms mean, {:.1} ms slowest, {} KiB each",
            SCRAPE_EVERY.as_secs(),
            self.ok,
            self.errors.total(),
            self.mean_ms()
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}")),
            self.slowest.as_secs_f64() * 1000.0,
            self.bytes / 1024
        )
    }

    pub(crate) fn to_json(&self) -> Json {
        Json::obj()
            .with("every_secs", Json::Num(SCRAPE_EVERY.as_secs_f64()))
            .with("scrapes", Json::uint(self.ok))
            .with("errors", self.errors.to_json())
            .with("mean_ms", Json::opt_num(self.mean_ms()))
            .with("max_ms", Json::Num(self.slowest.as_secs_f64() * 1000.0))
            .with("bytes", Json::uint(self.bytes as u64))
    }
}

/// The `host:port` of a `ws://host:port/path` URL: where `/metrics` is.
pub(crate) fn http_addr(ws_url: &str) -> Result<String, String> {
    ws_url
        .strip_prefix("ws://")
        .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
        .filter(|addr| !addr.is_empty())
        .ok_or_else(|| format!("--metrics on scrapes plain HTTP; cannot scrape {ws_url}"))
}

/// Scrapes `http://addr/metrics` every [`SCRAPE_EVERY`], the first at
/// once, until `stop` is raised.
pub(crate) fn start(addr: String, mut stop: watch::Receiver<bool>) -> JoinHandle<Scrapes> {
    tokio::spawn(async move {
        let mut scrapes = Scrapes::default();
        let mut ticks = tokio::time::interval(SCRAPE_EVERY);
        // A slow scrape delays the next rather than bunching them up.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = super::stopped(&mut stop) => break,
                _ = ticks.tick() => {}
            }
            let started = Instant::now();
            let result = tokio::time::timeout(SCRAPE_TIMEOUT, scrape(&addr))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no answer within {} ms",
                        SCRAPE_TIMEOUT.as_millis()
                    ))
                });
            scrapes.record(result, started.elapsed());
        }
        scrapes
    })
}

/// Checks that a server measured with `--metrics off` answers `/metrics`
/// with 404, so the comparison is not of two scraped-or-not servers alike.
pub(crate) async fn check_off(ws_url: &str) -> Result<(), String> {
    let addr = http_addr(ws_url)?;
    match tokio::time::timeout(SCRAPE_TIMEOUT * 5, scrape(&addr)).await {
        Ok(Err(e)) if e == "HTTP 404" => Ok(()),
        Ok(Ok(_)) => Err("--metrics off: the server still serves /metrics".into()),
        Ok(Err(e)) => Err(format!(
            "--metrics off: GET /metrics: {e}, expected HTTP 404"
        )),
        Err(_) => Err("--metrics off: GET /metrics took too long".into()),
    }
}

/// One `GET /metrics` over HTTP/1.0 (a body to its end, never chunked):
/// the body's size, if it is the exposition.
async fn scrape(addr: &str) -> Result<usize, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if response.len() > MAX_BODY {
        return Err(format!("response over {MAX_BODY} bytes"));
    }
    let status = response
        .split(|b| *b == b' ')
        .nth(1)
        .and_then(|s| std::str::from_utf8(s).ok())
        .unwrap_or("?");
    if status != "200" {
        return Err(format!("HTTP {status}"));
    }
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the headers")?;
    let body = &response[at + 4..];
    // A 200 from something else (a page at that path) is no scrape.
    if !body
        .windows(b"stompbox_sessions".len())
        .any(|w| w == b"stompbox_sessions")
    {
        return Err("HTTP 200 without stompbox_sessions".into());
    }
    Ok(body.len())
}

/// With `--metrics on,off`: deliveries/s with metrics scraped against
/// without, and the server's CPU; with several rounds, the ratio of the
/// means and each round's.
pub(crate) fn compare(results: &[Json], out: super::Out) -> Option<Json> {
    let state = |r: &Json| r.get("metrics").and_then(Json::as_str).map(str::to_owned);
    let of = |name: &str| -> Vec<&Json> {
        results
            .iter()
            .filter(|r| state(r).as_deref() == Some(name))
            .collect()
    };
    let (on, off) = (of("on"), of("off"));
    if on.is_empty() || off.is_empty() {
        return None;
    }
    let rate = paired::deliveries_per_sec;
    let (on_rate, off_rate) = (mean(&on, &rate), mean(&off, &rate));
    let rate_ratio = ratio(on_rate, off_rate);
    let cpu_ratio = ratio(mean(&on, &server_cpu), mean(&off, &server_cpu));
    let round_ratios = paired::round_ratios(&on, &off);
    let rounds = on.len();
    say!(
        out,
        "\n== fanout: metrics on (scraped every {} s) against off (same run{}): {}; server CPU ratio {}",
        SCRAPE_EVERY.as_secs(),
        rounds_note(rounds),
        rates_text(on_rate, off_rate, rate_ratio, &round_ratios),
        show(cpu_ratio, 3),
    );
    Some(
        Json::obj()
            .with("deliveries_per_sec_metrics_on", Json::opt_num(on_rate))
            .with("deliveries_per_sec_metrics_off", Json::opt_num(off_rate))
            .with("deliveries_per_sec_ratio", Json::opt_num(rate_ratio))
            .with("server_cpu_ratio", Json::opt_num(cpu_ratio))
            .with("rounds", Json::uint(rounds as u64))
            .with(
                "round_ratios",
                Json::Arr(round_ratios.into_iter().map(Json::opt_num).collect()),
            ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_scraped_where_the_websocket_is() {
        assert_eq!(
            http_addr("ws://127.0.0.1:4000/ws").as_deref(),
            Ok("127.0.0.1:4000")
        );
        assert_eq!(http_addr("ws://[::1]:4000").as_deref(), Ok("[::1]:4000"));
        assert!(http_addr("wss://127.0.0.1:4000/ws").is_err());
        assert!(http_addr("ws:///ws").is_err());
    }

    #[test]
    fn on_and_off_set_metrics_enabled() {
        assert_eq!(
            MetricsArg::On.server_args(),
            ["--set", "metrics.enabled=true"]
        );
        assert_eq!(
            MetricsArg::Off.server_args(),
            ["--set", "metrics.enabled=false"]
        );
    }

    #[test]
    fn the_comparison_is_on_against_off() {
        let target = |state: &str, round: u64, rate: f64, cpu: f64| {
            Json::obj()
                .with("metrics", Json::str(state))
                .with("round", Json::uint(round))
                .with("deliveries_per_sec", Json::Num(rate))
                .with("cpu", Json::obj().with("server_cpu_secs", Json::Num(cpu)))
        };
        let out = super::super::Out { quiet: true };
        let figure = |c: &Json, key: &str| c.get(key).and_then(Json::as_f64);
        let results = [target("off", 1, 200.0, 2.0), target("on", 1, 150.0, 3.0)];
        let comparison = compare(&results, out).expect("both measured");
        assert_eq!(figure(&comparison, "deliveries_per_sec_ratio"), Some(0.75));
        assert_eq!(figure(&comparison, "server_cpu_ratio"), Some(1.5));
        assert!(compare(&results[..1], out).is_none());
        // Two rounds, the second in the other order: means, and each
        // round's own pair.
        let results = [
            target("on", 1, 100.0, 1.0),
            target("off", 1, 200.0, 1.0),
            target("off", 2, 100.0, 1.0),
            target("on", 2, 200.0, 1.0),
        ];
        let comparison = compare(&results, out).expect("both measured");
        assert_eq!(figure(&comparison, "deliveries_per_sec_ratio"), Some(1.0));
        assert_eq!(figure(&comparison, "rounds"), Some(2.0));
        let rounds = match comparison.get("round_ratios") {
            Some(Json::Arr(each)) => each.iter().map(Json::as_f64).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(rounds, [Some(0.5), Some(2.0)]);
    }
}
