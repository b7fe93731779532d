//! `GET /metrics`: the server's counters in the Prometheus text format.
//!
//! The figures are read at scrape time from what the server keeps anyway
//! (the telemetry registry, the budgets, the broker), put into a registry
//! made for this one scrape and encoded. Nothing is counted twice on the
//! hot path for Prometheus' sake, and a series that no longer exists (a
//! destination gone) simply is not in the next scrape.

use crate::shared::ServerShared;
use crate::telemetry::{TRANSPORTS, VERSIONS};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prometheus::core::Collector;
use prometheus::{Encoder, Opts, Registry, TextEncoder};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};
use tokio::time::Instant;

/// One scrape's registry, with a short way to add each kind of series.
struct Scrape {
    registry: Registry,
}

impl Scrape {
    fn add(&self, collector: impl Collector + 'static) {
        // Names are constants of this module, each registered once per
        // scrape: a refusal would be a bug here, shown by the tests, and
        // must not fail the whole scrape.
        if let Err(e) = self.registry.register(Box::new(collector)) {
            tracing::warn!(error = %e, "metric not exposed");
        }
    }

    fn gauge(&self, name: &str, help: &str, value: f64) {
        if let Ok(gauge) = prometheus::Gauge::new(name, help) {
            gauge.set(value);
            self.add(gauge);
        }
    }

    fn counter(&self, name: &str, help: &str, value: f64) {
        if let Ok(counter) = prometheus::Counter::new(name, help) {
            counter.inc_by(value.max(0.0));
            self.add(counter);
        }
    }

    fn gauges<'a>(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        values: impl IntoIterator<Item = (Vec<&'a str>, f64)>,
    ) {
        if let Ok(family) = prometheus::GaugeVec::new(Opts::new(name, help), labels) {
            for (label_values, value) in values {
                if let Ok(gauge) = family.get_metric_with_label_values(&label_values) {
                    gauge.set(value);
                }
            }
            self.add(family);
        }
    }

    fn counters<'a>(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        values: impl IntoIterator<Item = (Vec<&'a str>, f64)>,
    ) {
        if let Ok(family) = prometheus::CounterVec::new(Opts::new(name, help), labels) {
            for (label_values, value) in values {
                if let Ok(counter) = family.get_metric_with_label_values(&label_values) {
                    counter.inc_by(value.max(0.0));
                }
            }
            self.add(family);
        }
    }
}

/// The exposition of `shared`'s figures now.
pub(crate) fn render(shared: &ServerShared) -> String {
    let scrape = Scrape {
        registry: Registry::new(),
    };
    let telemetry = &shared.telemetry;
    let config = &shared.config;

    scrape.gauges(
        "stompbox_build_info",
        "The running stompbox's version (always 1).",
        &["version"],
        [(vec![env!("CARGO_PKG_VERSION")], 1.0)],
    );
    let shutting_down = *shared.shutdown.borrow();
    let broker_up = *shared.broker.availability().borrow();
    scrape.gauge(
        "stompbox_ready",
        "1 while the server takes new sessions: running, not shutting down, its broker available.",
        f64::from(u8::from(!shutting_down && broker_up)),
    );

    // One walk over the open connections gives every per-session figure.
    let mut by_transport = [0usize; TRANSPORTS.len()];
    let mut sessions = [[0usize; VERSIONS.len()]; TRANSPORTS.len()];
    let mut subscriptions = 0usize;
    let mut largest_outbox = 0usize;
    let mut registered = 0usize;
    telemetry.sessions.for_each(|entry| {
        registered += 1;
        let t = TRANSPORTS
            .iter()
            .position(|t| *t == entry.transport)
            .unwrap_or(0);
        by_transport[t] += 1;
        if let Some(connected) = entry.connected() {
            let v = VERSIONS
                .iter()
                .position(|v| *v == connected.version)
                .unwrap_or(0);
            sessions[t][v] += 1;
            subscriptions += entry.subscriptions();
        }
        largest_outbox = largest_outbox.max(entry.outbox.bytes());
    });
    let totals = telemetry.sessions.totals();
    let admitted = shared.open_connections();
    // An HTTP connection holds a place from accept; one that became a
    // session is counted under its transport instead.
    let http_only = admitted.saturating_sub(registered);
    scrape.gauges(
        "stompbox_connections",
        "Open client connections by transport: STOMP sessions over WebSocket, TCP or TLS, and HTTP connections not (yet) upgraded.",
        &["transport"],
        TRANSPORTS
            .iter()
            .zip(by_transport)
            .map(|(t, n)| (vec![*t], n as f64))
            .chain([(vec!["http"], http_only as f64)]),
    );
    scrape.gauge(
        "stompbox_max_connections",
        "The connection limit in effect (max_connections, lowered to what the open-file limit allows).",
        config.max_connections as f64,
    );
    scrape.counters(
        "stompbox_connections_opened_total",
        "Client connections opened since start, by transport.",
        &["transport"],
        telemetry.opened().map(|(t, n)| (vec![t], n as f64)),
    );
    let versions: Vec<&str> = VERSIONS.iter().map(|v| v.as_str()).collect();
    scrape.gauges(
        "stompbox_sessions",
        "Connected STOMP sessions (past CONNECT), by transport and STOMP version.",
        &["transport", "version"],
        TRANSPORTS.iter().enumerate().flat_map(|(t, transport)| {
            let row = sessions[t];
            versions
                .iter()
                .enumerate()
                .map(move |(v, version)| (vec![*transport, *version], row[v] as f64))
        }),
    );
    scrape.counters(
        "stompbox_frames_received_total",
        "STOMP frames received from clients, by command.",
        &["command"],
        telemetry
            .frames_received()
            .map(|(c, n)| (vec![c.as_str()], n as f64)),
    );
    scrape.counters(
        "stompbox_messages_published_total",
        "Messages published: SEND frames from clients (source client), and the server's own (source server: handler replies, the Messaging handle, the HTTP API).",
        &["source"],
        [
            (vec!["client"], totals.messages_in as f64),
            (vec!["server"], shared.messaging.published() as f64),
        ],
    );
    scrape.counter(
        "stompbox_messages_delivered_total",
        "MESSAGE frames written to clients.",
        totals.messages_out as f64,
    );
    scrape.counter(
        "stompbox_received_bytes_total",
        "Bytes read from clients (STOMP frames, WebSocket payloads).",
        totals.bytes_in as f64,
    );
    scrape.counter(
        "stompbox_sent_bytes_total",
        "Bytes of frames written to clients.",
        totals.bytes_out as f64,
    );
    scrape.gauge(
        "stompbox_subscriptions",
        "Subscriptions held by connected sessions.",
        subscriptions as f64,
    );
    scrape.counters(
        "stompbox_slow_consumer_disconnects_total",
        "Clients cut off as slow consumers, by reason: outbox_full (did not read), send_timeout (a write took too long), unacked_limit (did not acknowledge).",
        &["reason"],
        telemetry.slow_consumers().map(|(r, n)| (vec![r], n as f64)),
    );
    scrape.counters(
        "stompbox_errors_total",
        "STOMP ERROR frames sent (each ends its session), by reason.",
        &["reason"],
        telemetry.errors().map(|(r, n)| (vec![r], n as f64)),
    );
    scrape.counters(
        "stompbox_authentication_failures_total",
        "CONNECT attempts refused at authentication, by reason.",
        &["reason"],
        telemetry.auth_failures().map(|(r, n)| (vec![r], n as f64)),
    );
    scrape.gauge(
        "stompbox_backlog_bytes",
        "Bytes of frames queued for clients and not yet written, all connections (a frame shared by many counted once).",
        shared.backlog.bytes() as f64,
    );
    scrape.gauge(
        "stompbox_backlog_limit_bytes",
        "backlog_bytes: past it, connections stop reading until the writers catch up.",
        config.backlog_bytes as f64,
    );
    scrape.gauge(
        "stompbox_outbox_max_bytes",
        "The most memory the frames queued for any one connection occupy now.",
        largest_outbox as f64,
    );
    scrape.gauge(
        "stompbox_outbox_limit_bytes",
        "outbox_bytes: a connection with more queued is a slow consumer.",
        config.outbox_bytes as f64,
    );
    scrape.counter(
        "stompbox_publisher_pauses_total",
        "Times a publisher's frames were held back while the subscribers it fed caught up.",
        shared.publisher_pauses.count() as f64,
    );
    scrape.counter(
        "stompbox_publisher_paused_seconds_total",
        "Time those pauses lasted.",
        shared.publisher_pauses.total().as_secs_f64(),
    );
    scrape.counter(
        "stompbox_subscription_holds_total",
        "SUBSCRIBE and UNSUBSCRIBE frames held back for coming faster than subscriptions_per_sec.",
        shared.subscription_holds.load(Ordering::Relaxed) as f64,
    );
    let memory = shared.broker.memory();
    scrape.gauge(
        "stompbox_queue_bytes",
        "Memory of queue messages, waiting or unacknowledged (embedded broker; under max_total_queue_bytes).",
        memory.queue_bytes as f64,
    );
    scrape.gauge(
        "stompbox_topic_unacked_bytes",
        "Memory of unacknowledged topic messages (embedded broker; under max_total_topic_unacked_bytes).",
        memory.topic_unacked_bytes as f64,
    );
    scrape.gauge(
        "stompbox_transaction_bytes",
        "Memory of frames held by open transactions (under max_total_transaction_bytes).",
        shared.transaction_bytes.used() as f64,
    );
    let broker = shared.broker.stats();
    scrape.gauge(
        "stompbox_destinations",
        "Destinations the broker holds now: topics with subscribers, wildcard patterns, queues.",
        broker.destinations as f64,
    );
    scrape.gauge(
        "stompbox_queues",
        "Queues the broker holds now.",
        broker.queues as f64,
    );
    scrape.gauge(
        "stompbox_broker_subscriptions",
        "Subscriptions the broker holds (a user destination is two: the user's and the session's).",
        broker.subscriptions as f64,
    );
    scrape.gauge(
        "stompbox_queue_messages_ready",
        "Messages waiting in queues for a consumer, all queues (embedded broker).",
        broker.queue_messages_ready as f64,
    );
    scrape.gauge(
        "stompbox_queue_messages_unacked",
        "Queue messages delivered and not yet acknowledged, all queues (embedded broker).",
        broker.queue_messages_unacked as f64,
    );
    scrape.gauge(
        "stompbox_topic_messages_unacked",
        "Topic messages delivered in a client ack mode and not yet acknowledged (embedded broker).",
        broker.topic_messages_unacked as f64,
    );
    scrape.counter(
        "stompbox_queue_messages_discarded_total",
        "Queue messages dropped by a NACK with requeue:false (embedded broker).",
        broker.queue_messages_discarded as f64,
    );
    if let Some(relay) = &broker.relay {
        scrape.gauges(
            "stompbox_relay_info",
            "The relay's mode (always 1).",
            &["mode"],
            [(vec![relay.mode], 1.0)],
        );
        scrape.gauge(
            "stompbox_relay_broker_connections",
            "Connections to the external broker open now.",
            relay.broker_connections as f64,
        );
        scrape.gauge(
            "stompbox_relay_links_up",
            "Shared relay pool links connected now.",
            relay.links_up as f64,
        );
        scrape.gauge(
            "stompbox_relay_links",
            "Shared relay pool links configured (relay.connections).",
            relay.links_total as f64,
        );
        scrape.counter(
            "stompbox_relay_reconnects_total",
            "Links to the external broker connected again after being lost.",
            relay.reconnects as f64,
        );
        scrape.counter(
            "stompbox_relay_connection_failures_total",
            "Attempts to connect to the external broker that failed.",
            relay.connection_failures as f64,
        );
        scrape.gauge(
            "stompbox_relay_upstream_subscriptions",
            "Subscriptions the relay holds at the external broker.",
            relay.upstream_subscriptions as f64,
        );
    }
    if config.metrics.per_destination {
        let destinations = shared
            .broker
            .destinations(config.metrics.max_destination_series);
        scrape.gauges(
            "stompbox_destination_subscribers",
            "Subscribers of a destination (consumers of a queue), for the busiest metrics.max_destination_series destinations.",
            &["destination", "kind"],
            destinations
                .iter()
                .map(|d| (vec![d.name.as_str(), d.kind.as_str()], d.subscribers as f64)),
        );
        scrape.gauges(
            "stompbox_destination_messages_ready",
            "Messages waiting in a queue, for the busiest destinations.",
            &["destination", "kind"],
            destinations
                .iter()
                .map(|d| (vec![d.name.as_str(), d.kind.as_str()], d.ready as f64)),
        );
        scrape.gauges(
            "stompbox_destination_messages_unacked",
            "Messages of a destination delivered and not yet acknowledged, for the busiest destinations.",
            &["destination", "kind"],
            destinations
                .iter()
                .map(|d| (vec![d.name.as_str(), d.kind.as_str()], d.unacked as f64)),
        );
    }
    scrape.gauge(
        "stompbox_broker_up",
        "1 while the message broker can be reached (always 1 for the embedded broker).",
        f64::from(u8::from(broker_up)),
    );
    scrape.gauge(
        "stompbox_start_time_seconds",
        "When the server started, in seconds since the Unix epoch.",
        telemetry
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    scrape.add(telemetry.handler_latency.clone());
    #[cfg(target_os = "linux")]
    scrape.add(prometheus::process_collector::ProcessCollector::for_self());

    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&scrape.registry.gather(), &mut out) {
        tracing::warn!(error = %e, "metrics not encoded");
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guessed token was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The latest exposition, and when its render began.
type Latest = Option<(Instant, Bytes)>;

/// The least time between the starts of two renders: a client scraping in
/// a loop gets its answers this much later, instead of keeping a core
/// busy walking the sessions. Prometheus scrapes every few seconds.
const RENDER_INTERVAL: Duration = Duration::from_millis(100);

/// One render at a time, shared by the scrapes that wait for it. `/metrics`
/// is open to anyone who reaches the listener unless a token is set, and a
/// render walks every session: without this, a few hundred clients
/// scraping in a loop would keep as many blocking threads walking the
/// registry, contending for the shard locks that every connection's open
/// and close takes.
#[derive(Debug, Default)]
struct Renders {
    latest: Arc<tokio::sync::Mutex<Latest>>,
}

impl Renders {
    /// An exposition whose render began after this call: the one in
    /// progress is too old (it may predate what the caller just did), but
    /// every scrape that waited for it is answered by the next one.
    async fn fresh(&self, render: impl FnOnce() -> String + Send + 'static) -> Option<Bytes> {
        let asked = Instant::now();
        let mut latest = Arc::clone(&self.latest).lock_owned().await;
        if let Some((began, body)) = latest.as_ref()
            && *began >= asked
        {
            return Some(body.clone());
        }
        if let Some((began, _)) = latest.as_ref() {
            tokio::time::sleep_until(*began + RENDER_INTERVAL).await;
        }
        let began = Instant::now();
        // The lock goes with the render: a scraper that hangs up mid-render
        // does not let the next one start another beside it. Off the
        // runtime's worker threads, as walking every session takes a while
        // on a big server.
        tokio::task::spawn_blocking(move || {
            let body = Bytes::from(render());
            *latest = Some((began, body.clone()));
            body
        })
        .await
        .ok()
    }
}

/// `GET /metrics`, its renders shared by every listener that serves it.
pub(crate) fn route() -> MethodRouter<Arc<ServerShared>> {
    let renders = Arc::new(Renders::default());
    get(
        move |State(shared): State<Arc<ServerShared>>, headers: HeaderMap| {
            let renders = Arc::clone(&renders);
            async move { serve(shared, &headers, &renders).await }
        },
    )
}

async fn serve(shared: Arc<ServerShared>, headers: &HeaderMap, renders: &Renders) -> Response {
    if let Some(token) = &shared.config.metrics.token {
        let offered = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer);
        if !offered.is_some_and(|offered| same(offered.as_bytes(), token.as_bytes())) {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                "metrics need the token: Authorization: Bearer <metrics.token>\n",
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let Some(body) = renders.fresh(move || render(&shared)).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(prometheus::TEXT_FORMAT),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn scrapes_waiting_for_a_render_share_the_next_one() {
        let renders = Arc::new(Renders::default());
        let count = Arc::new(AtomicUsize::new(0));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(std::sync::Mutex::new(held));
        let render = {
            let count = Arc::clone(&count);
            move || {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                // The first render lasts until the test lets it end.
                if n == 1 {
                    let _ = held.lock().map(|held| held.recv());
                }
                format!("render {n}")
            }
        };
        let first = tokio::spawn({
            let (renders, render) = (Arc::clone(&renders), render.clone());
            async move { renders.fresh(render).await }
        });
        while count.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Twenty scrapes arrive while the first render runs, and the first
        // scraper hangs up: its render goes on, and none begins beside it.
        let waiting: Vec<_> = (0..20)
            .map(|_| {
                let (renders, render) = (Arc::clone(&renders), render.clone());
                tokio::spawn(async move { renders.fresh(render).await })
            })
            .collect();
        first.abort();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(count.load(Ordering::SeqCst), 1);
        release.send(()).expect("the first render waits");
        for scrape in waiting {
            let body = scrape.await.expect("scrape").expect("rendered");
            // Not the render that began before it asked: the next one.
            assert_eq!(body, Bytes::from("render 2"));
        }
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // A scrape after those gets a render of its own.
        let later = renders.fresh(render).await.expect("rendered");
        assert_eq!(later, Bytes::from("render 3"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_scraper_in_a_loop_waits_between_renders() {
        let renders = Renders::default();
        let start = Instant::now();
        for _ in 0..3 {
            renders.fresh(String::new).await.expect("rendered");
            // The client's next request.
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(
            start.elapsed() >= RENDER_INTERVAL * 2,
            "{:?}",
            start.elapsed()
        );
    }
}
