//! One STOMP connection to the upstream broker, client side: connect with
//! failover over the address list, CONNECT/CONNECTED, then a task that
//! writes the link's outbox in batches, reads frames for a handler, and keeps
//! heart-beats in both directions.

use super::RelayConfig;
use super::stats::{OpenConnection, RelayCounters};
use crate::broker::BrokerError;
use crate::frames::encode;
use crate::outbox::{OutFrame, Outbox};
use crate::transport::{Read, Transport};
use crate::websocket::CloseCode;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use stompbox_codec::{Command, Decoded, Decoder, Frame, Limits, Version, header};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};

/// What the link's task reports.
#[derive(Debug)]
pub(crate) enum Event {
    /// A frame from the broker.
    Frame(Frame),
    /// The link is gone; `None` when we closed it on purpose.
    Closed(Option<String>),
}

/// A live link. Dropping it without [`Link::disconnect`] closes the socket.
#[derive(Debug)]
pub(crate) struct Link {
    /// Frames for the broker. Bounded: a broker that stops reading makes
    /// pushes fail instead of buffering without end.
    pub(crate) outbox: Arc<Outbox>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Sends DISCONNECT after everything queued, then closes.
    pub(crate) fn disconnect(&self, version: Version) {
        self.outbox
            .finish(encode(&Frame::new(Command::Disconnect), version));
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if !self.outbox.is_finished() {
            self.task.abort();
        }
    }
}

/// Connects to the first reachable address, in order, over TLS when
/// configured.
async fn dial(config: &RelayConfig) -> Result<Transport, BrokerError> {
    let connector = match &config.tls {
        Some(tls) => Some(tls_connector(tls)?),
        None => None,
    };
    let mut last = String::from("no broker address configured");
    for address in &config.addresses {
        let stream =
            match timeout(config.connect_timeout, TcpStream::connect(address.as_str())).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    last = format!("{address}: {e}");
                    continue;
                }
                Err(_) => {
                    last = format!("{address}: connect timed out");
                    continue;
                }
            };
        let _ = stream.set_nodelay(true);
        let (Some(connector), Some(tls)) = (&connector, &config.tls) else {
            return Ok(Transport::Tcp(stream));
        };
        let host = address
            .rsplit_once(':')
            .map_or(address.as_str(), |(host, _)| host);
        let name = tls
            .server_name
            .as_deref()
            .unwrap_or(host.trim_matches(['[', ']']));
        let server_name = rustls_pki_types::ServerName::try_from(name.to_owned())
            .map_err(|_| BrokerError::Unavailable(format!("invalid TLS server name '{name}'")))?;
        match timeout(
            config.connect_timeout,
            connector.connect(server_name, stream),
        )
        .await
        {
            Ok(Ok(tls_stream)) => return Ok(Transport::Tls(Box::new(tls_stream))),
            Ok(Err(e)) => last = format!("{address}: TLS handshake failed: {e}"),
            Err(_) => last = format!("{address}: TLS handshake timed out"),
        }
    }
    Err(BrokerError::Unavailable(last))
}

fn tls_connector(tls: &super::RelayTls) -> Result<tokio_rustls::TlsConnector, BrokerError> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| {
                BrokerError::Unavailable(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    BrokerError::Unavailable(format!(
                        "invalid certificate in {}: {e}",
                        path.display()
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    BrokerError::Unavailable(format!(
                        "unusable certificate in {}: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Unavailable(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn heartbeat_ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Opens a link: TCP, CONNECT with `headers`, waits for CONNECTED, then
/// hands every later frame to `handler` on the link's own task, and writes
/// `outbox` (a new one if `None`).
/// `downstream`, when given, is the client outbox the handler feeds: while
/// it is congested the link stops reading, so the broker (which buffers and
/// applies its own flow control) holds messages instead of our memory.
/// The link is counted in `counters` while its connection is open, and a
/// failure to open it as a connection failure.
pub(crate) async fn open(
    config: &RelayConfig,
    counters: &Arc<RelayCounters>,
    version: Version,
    headers: &[(&str, &str)],
    downstream: Option<Arc<Outbox>>,
    outbox: Option<Arc<Outbox>>,
    handler: impl FnMut(Event) + Send + 'static,
) -> Result<Link, BrokerError> {
    let opened = establish(
        config, counters, version, headers, downstream, outbox, handler,
    )
    .await;
    if opened.is_err() {
        counters
            .connection_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    opened
}

async fn establish(
    config: &RelayConfig,
    counters: &Arc<RelayCounters>,
    version: Version,
    headers: &[(&str, &str)],
    downstream: Option<Arc<Outbox>>,
    outbox: Option<Arc<Outbox>>,
    mut handler: impl FnMut(Event) + Send + 'static,
) -> Result<Link, BrokerError> {
    let mut transport = dial(config).await?;
    let connection = OpenConnection::new(counters);
    let mut connect = Frame::new(Command::Connect)
        .header(header::ACCEPT_VERSION, version.as_str())
        .header(
            header::HEART_BEAT,
            &format!(
                "{},{}",
                heartbeat_ms(config.heartbeat_send),
                heartbeat_ms(config.heartbeat_receive)
            ),
        );
    for (name, value) in headers {
        connect = connect.header(name, value);
    }
    let mut batch = VecDeque::from([encode(&connect, version)]);
    let unavailable = |e: std::io::Error| BrokerError::Unavailable(e.to_string());
    timeout(config.connect_timeout, transport.write_batch(&mut batch))
        .await
        .map_err(|_| BrokerError::Unavailable("CONNECT to the broker timed out".into()))?
        .map_err(unavailable)?;
    let limits = Limits {
        max_frame_bytes: config.max_frame_bytes,
        ..Limits::default()
    };
    let mut decoder = Decoder::new(limits);
    decoder.set_version(version);
    let mut buf = BytesMut::new();
    let connected = timeout(config.connect_timeout, async {
        loop {
            while let Some(item) = decoder
                .decode(&mut buf)
                .map_err(|e| BrokerError::Unavailable(format!("invalid frame from broker: {e}")))?
            {
                let Decoded::Frame(frame) = item else {
                    continue;
                };
                return match frame.command {
                    Command::Connected => Ok(frame),
                    Command::Error => Err(BrokerError::Refused(
                        frame
                            .headers
                            .get(header::MESSAGE)
                            .unwrap_or("no reason given")
                            .to_owned(),
                    )),
                    other => Err(BrokerError::Unavailable(format!(
                        "broker answered CONNECT with {other}"
                    ))),
                };
            }
            match transport.read(&mut buf).await.map_err(unavailable)? {
                Read::Data => {}
                Read::Closed | Read::TooLarge | Read::Violation(_) => {
                    return Err(BrokerError::Unavailable(
                        "broker closed the connection during CONNECT".into(),
                    ));
                }
            }
        }
    })
    .await
    .map_err(|_| BrokerError::Unavailable("no CONNECTED from the broker in time".into()))??;

    // Heart-beats as agreed with the broker's CONNECTED.
    let (broker_send, broker_want) = connected
        .headers
        .get(header::HEART_BEAT)
        .and_then(|v| v.split_once(','))
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
        .unwrap_or((0, 0));
    let send_every = (!config.heartbeat_send.is_zero() && broker_want > 0).then(|| {
        config
            .heartbeat_send
            .max(Duration::from_millis(broker_want))
    });
    let expect_every = (!config.heartbeat_receive.is_zero() && broker_send > 0).then(|| {
        config
            .heartbeat_receive
            .max(Duration::from_millis(broker_send))
    });

    // A given outbox may hold frames queued while connecting: they follow
    // the CONNECT.
    let outbox = outbox.unwrap_or_else(|| Arc::new(Outbox::new(config.upstream_buffer_bytes)));
    let task_outbox = Arc::clone(&outbox);
    let send_timeout = config.connect_timeout;
    let task = tokio::spawn(async move {
        // Counted open until the task ends (or is aborted with the link).
        let _connection = connection;
        let reason = drive(
            transport,
            decoder,
            buf,
            &task_outbox,
            downstream.as_deref(),
            send_every,
            expect_every,
            send_timeout,
            &mut handler,
        )
        .await;
        task_outbox.close();
        handler(Event::Closed(reason));
    });
    Ok(Link { outbox, task })
}

/// The link's loop; returns why it ended (`None`: closed on purpose).
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut transport: Transport,
    mut decoder: Decoder,
    mut buf: BytesMut,
    outbox: &Outbox,
    downstream: Option<&Outbox>,
    send_every: Option<Duration>,
    expect_every: Option<Duration>,
    send_timeout: Duration,
    handler: &mut (impl FnMut(Event) + Send),
) -> Option<String> {
    let mut batch = VecDeque::new();
    let mut last_read = Instant::now();
    let mut last_write = Instant::now();
    let far = Duration::from_secs(24 * 3600);
    let mut waiting = false;
    loop {
        let now = Instant::now();
        let mut deadline = now + far;
        if let Some(every) = send_every {
            deadline = deadline.min(last_write + every);
        }
        if let Some(every) = expect_every {
            deadline = deadline.min(last_read + every * 2);
        }
        // Frames already read are handled before waiting again.
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Decoded::Frame(frame))) => handler(Event::Frame(frame)),
                Ok(Some(Decoded::Heartbeat)) => {}
                Ok(None) => break,
                Err(e) => return Some(format!("invalid frame from broker: {e}")),
            }
        }
        let congested = downstream.is_some_and(Outbox::congested);
        tokio::select! {
            () = async {
                if let Some(downstream) = downstream {
                    downstream.room().await;
                }
            }, if congested => {
                waiting = false;
                // Broker silence while we did not read is ours, not its.
                last_read = Instant::now();
            }
            () = outbox.ready() => {
                outbox.take_all(&mut batch);
                if !batch.is_empty() {
                    match timeout(send_timeout, transport.write_batch(&mut batch)).await {
                        Ok(Ok(())) => last_write = Instant::now(),
                        Ok(Err(e)) => return Some(format!("write to broker failed: {e}")),
                        Err(_) => return Some("broker stopped reading".into()),
                    }
                }
                if outbox.is_finished() {
                    // The last frame was DISCONNECT: read what the broker
                    // still says (its RECEIPT) until it closes, within a bound.
                    let _ = timeout(Duration::from_secs(5), async {
                        loop {
                            loop {
                                match decoder.decode(&mut buf) {
                                    Ok(Some(Decoded::Frame(frame))) => handler(Event::Frame(frame)),
                                    Ok(Some(Decoded::Heartbeat)) => {}
                                    Ok(None) => break,
                                    Err(_) => return,
                                }
                            }
                            match transport.read(&mut buf).await {
                                Ok(Read::Data) => {}
                                _ => return,
                            }
                        }
                    })
                    .await;
                    let _ = timeout(Duration::from_secs(1), transport.close(CloseCode::NORMAL_CLOSURE, "")).await;
                    return None;
                }
                if outbox.overflowed() {
                    return Some("too much unsent data for the broker".into());
                }
            }
            read = transport.read(&mut buf), if !congested => match read {
                Ok(Read::Data) => last_read = Instant::now(),
                Ok(Read::Closed | Read::TooLarge | Read::Violation(_)) => {
                    return Some("broker closed the connection".into());
                }
                Err(e) => return Some(format!("read from broker failed: {e}")),
            },
            () = sleep_until(deadline) => {
                let now = Instant::now();
                if congested {
                    waiting = true;
                }
                if let Some(every) = expect_every
                    && !waiting
                    && now.duration_since(last_read) >= every * 2
                {
                    return Some("broker heart-beats stopped".into());
                }
                if let Some(every) = send_every
                    && now.duration_since(last_write) >= every
                {
                    let _ = outbox.push(OutFrame::with_text(Bytes::from_static(b"\n"), true));
                    last_write = now;
                }
            }
        }
    }
}
