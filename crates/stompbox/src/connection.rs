//! The task that drives one client connection: reads and decodes frames,
//! hands them to the session, writes the outbox in batches, keeps the
//! heart-beats, and closes the connection with an ERROR when something is
//! wrong.

use crate::auth::Handshake;
use crate::frames::{ErrorReason, StompError};
use crate::outbox::{
    Backlog, Congested, OutFrame, Outbox, PublisherPauses, STALL_AFTER, Stop, Taken,
};
use crate::session::{Flow, OfferedVersions, Session};
use crate::shared::ServerShared;
use crate::telemetry::{Registered, SessionEntry, Telemetry};
use crate::transport::{Read, Transport};
use crate::websocket::CloseCode;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use stompbox_codec::{Command, DecodeError, Decoded, Decoder, Frame, Limits, Version};
use tokio::time::{Instant, sleep_until, timeout};

/// How a connection ended, for the one log line it gets.
#[derive(Debug)]
enum End {
    ClientClosed,
    Disconnected,
    ProtocolError(String),
    /// A WebSocket protocol violation: no STOMP ERROR can follow it, only
    /// the WebSocket Close frame.
    WebSocketViolation(String),
    SlowConsumer(&'static str),
    Shutdown,
    BrokerEnded,
    /// An operator disconnected the session (the name is who).
    Kicked(String),
    Io(std::io::Error),
}

const HEARTBEAT: &[u8] = b"\n";

/// Bounds the time spent telling a misbehaving client why it is closed.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// Drives one session to its end. Set-up happens before the returned
/// future is first polled, so the future (held by every open session for
/// its whole life) keeps only what the loop needs, not the arguments too.
/// `places` (the connection's places in the server's limits) is dropped as
/// the session ends; holding it here, rather than beside this future in the
/// spawning task, keeps it out of the spawning future's lasting prefix.
pub(crate) fn run<P: Send + 'static>(
    mut transport: Transport,
    server: Arc<ServerShared>,
    subprotocol_versions: Option<OfferedVersions>,
    handshake: Arc<Handshake>,
    places: P,
) -> impl Future<Output = ()> + Send + 'static {
    let config = Arc::clone(&server.config);
    let outbox = Arc::new(Outbox::with_backlog(
        config.outbox_bytes,
        Arc::clone(&server.backlog),
    ));
    let session_id: Arc<str> = server.next_session_id().into();
    // The session's id and address are read from its entry, not kept
    // beside it: every byte of this future is held by every idle session.
    let entry = server.telemetry.register(
        session_id,
        handshake.remote_addr,
        transport.kind(),
        Arc::clone(&outbox),
    );
    let mut session = Session::new(
        Arc::clone(&server),
        Arc::clone(&outbox),
        Arc::clone(&entry.entry),
        subprotocol_versions,
        handshake,
    );
    // Until CONNECT succeeds a client is nobody: it may send only a small
    // frame, so unauthenticated sockets cannot make the server buffer much.
    let mut decoder = Decoder::new(Limits {
        max_frame_bytes: config
            .frame_limits
            .max_frame_bytes
            .min(config.unauthenticated_frame_bytes),
        ..config.frame_limits
    });
    if *server.shutdown.borrow() {
        // Registered after the shutdown told every registered session.
        outbox.shut_down();
    }
    async move {
        let telemetry = &server.telemetry;
        let mut read_buf = BytesMut::new();
        let mut batch = VecDeque::new();
        let opened = Instant::now();
        let mut last_read = opened;
        let mut last_write = opened;
        // One timer for the session's life, moved when its deadline moves:
        // a timer made per pass of the loop would be put into and taken out
        // of the runtime's timer wheel at every wake-up.
        let mut timer = std::pin::pin!(sleep_until(opened + config.connect_timeout));
        let mut heartbeats_armed = false;
        let mut was_holding = false;
        let heartbeat_every = AtomicU32::new(0);
        // A SUBSCRIBE or UNSUBSCRIBE past the session's rate, held (with nothing
        // more read) until the instant it may be handled.
        // Boxed: rare, and an idle session holds none.
        let mut held: Option<Box<Frame>> = None;
        // Set while nothing is read: the server-wide backlog is over its
        // limit, this client congested subscriber outboxes, or its
        // (UN)SUBSCRIBEs came too fast. Ends when the wait does.
        let mut hold: Option<Hold> = None;
        tracing::debug!(session = %entry.id, peer = %entry.peer, transport = transport.kind(), "connection opened");

        let end = loop {
            // Set when there is input to handle: just read, or held while paused.
            let mut input = false;
            let buffered = read_buf.len();
            tokio::select! {
                biased;
                () = outbox.ready() => {
                    let taken = match outbox.take_for_writer(&mut batch) {
                        Ok(taken) => taken,
                        Err(Stop::ShuttingDown) => break End::Shutdown,
                        Err(Stop::Overflowed(cap)) => break End::SlowConsumer(cap.unwrap_or("outbox full")),
                    };
                    if taken.wanted {
                        // Room again: queues that held messages back go on.
                        session.drained();
                    }
                    if !batch.is_empty() {
                        entry.writing(&taken);
                        match write_in_time(&mut transport, &mut batch, &outbox, config.send_timeout, &server.backlog).await {
                            Ok(Ok(())) => last_write = Instant::now(),
                            Ok(Err(e)) => break End::Io(e),
                            Err(why) => break End::SlowConsumer(why),
                        }
                    }
                    if outbox.is_finished() {
                        // The broker or an operator ended the session (its
                        // ERROR was the last frame written).
                        break ended_on_purpose(&entry);
                    }
                }
                () = until_resumed(&mut hold), if hold.is_some() => {
                    hold = None;
                    // Time spent held is the server's, not the client's silence.
                    last_read = Instant::now();
                    input = true;
                }
                read = transport.read(&mut read_buf), if hold.is_none() => {
                    match read {
                        Ok(Read::Data) => {}
                        Ok(Read::Closed) => break End::ClientClosed,
                        Ok(Read::TooLarge) => {
                            let e = StompError::new(format!(
                                "frame too large: more than {} bytes",
                                decoder.limits().max_frame_bytes
                            ))
                            .because(ErrorReason::FrameTooLarge);
                            Box::pin(send_error(&mut transport, &outbox, &mut batch, &e, session.error_version(), &entry, telemetry)).await;
                            break End::ProtocolError(e.message);
                        }
                        Ok(Read::Violation(why)) => break End::WebSocketViolation(why),
                        Err(e) => break End::Io(e),
                    }
                    entry.read(read_buf.len().saturating_sub(buffered));
                    last_read = Instant::now();
                    input = true;
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if !session.is_connected() {
                        let e = StompError::new(format!(
                            "no CONNECT frame within {} s", config.connect_timeout.as_secs()
                        ))
                        .because(ErrorReason::ConnectTimeout);
                        Box::pin(send_error(&mut transport, &outbox, &mut batch, &e, session.error_version(), &entry, telemetry)).await;
                        break End::ProtocolError(e.message);
                    }
                    if session.expires_at().is_some_and(|at| now >= at) {
                        let e = StompError::new(
                            "access refused: the session's credentials expired; reconnect with fresh ones",
                        )
                        .because(ErrorReason::CredentialsExpired);
                        Box::pin(send_error(&mut transport, &outbox, &mut batch, &e, session.error_version(), &entry, telemetry)).await;
                        break End::ProtocolError(e.message);
                    }
                    let heartbeat = session.heartbeat();
                    if let Some(every) = heartbeat.expect_every
                        && hold.is_none()
                        && now.duration_since(last_read) > every.mul_f64(config.heartbeat_grace)
                    {
                            let e = StompError::new(format!(
                                "no heart-beat or frame received for {} ms", now.duration_since(last_read).as_millis()
                            ))
                            .because(ErrorReason::HeartbeatTimeout);
                            Box::pin(send_error(&mut transport, &outbox, &mut batch, &e, session.error_version(), &entry, telemetry)).await;
                            break End::ProtocolError(e.message);
                    }
                    if let Some(every) = heartbeat.send_every
                        && now.duration_since(last_write) >= every
                    {
                        let _ = outbox.push(OutFrame::with_text(Bytes::from_static(HEARTBEAT), true));
                        last_write = now;
                    }
                    let holding = hold.is_some();
                    timer.as_mut().reset(next_deadline(&session, &config, last_read, last_write, now, holding));
                }
            }
            if input {
                heartbeat_every.store(heartbeat_ms(&session), Ordering::Relaxed);
                // Boxed: handling frames (authentication, handlers, the
                // broker) takes a future several times the size of the rest of
                // this one; allocated per read, it is not held while idle.
                let processed = Box::pin(process_while_writing(
                    Processing {
                        decoder: &mut decoder,
                        buf: &mut read_buf,
                        session: &mut session,
                        backlog: &server.backlog,
                        congestion: (config.send_timeout, &server.publisher_pauses),
                        held: &mut held,
                        heartbeat_ms: &heartbeat_every,
                        entry: &entry,
                        telemetry,
                    },
                    Writing {
                        transport: &mut transport,
                        outbox: &outbox,
                        batch: &mut batch,
                        send_timeout: config.send_timeout,
                        backlog: &server.backlog,
                        last_write: &mut last_write,
                        heartbeat_ms: &heartbeat_every,
                        entry: &entry,
                    },
                ))
                .await;
                match processed {
                    Err(end) => break end,
                    Ok(Ok(Step::Continue)) => {}
                    Ok(Ok(Step::Paused)) => {
                        let server = Arc::clone(&server);
                        hold = Some(Box::pin(async move { server.backlog.drained().await }));
                    }
                    Ok(Ok(Step::Throttled(until))) => hold = Some(Box::pin(sleep_until(until))),
                    Ok(Ok(Step::Congested(congested))) => {
                        hold = Some(Box::pin(async move { congested.wait().await }));
                    }
                    Ok(Ok(Step::Close)) => break End::Disconnected,
                    Ok(Err(e)) => {
                        Box::pin(send_error(
                            &mut transport,
                            &outbox,
                            &mut batch,
                            &e,
                            session.error_version(),
                            &entry,
                            telemetry,
                        ))
                        .await;
                        break End::ProtocolError(e.message);
                    }
                }
                if outbox.is_shutting_down() {
                    // Told while handling frames (which took the wake-up).
                    break End::Shutdown;
                }
                if read_buf.is_empty() {
                    // Every frame read is decoded: an idle session holds no
                    // input buffer (nor, through it, the read it came from).
                    read_buf = BytesMut::new();
                }
            }
            let mut newly_armed = false;
            if !heartbeats_armed && session.is_connected() {
                // Larger than the STOMP frame limit, so that an oversized frame
                // usually reaches the decoder and gets a STOMP ERROR; a message
                // past this is refused by the WebSocket layer itself (close code
                // 1009), as it cannot be read to its end without holding it.
                transport.set_message_limit(config.frame_limits.max_frame_bytes.saturating_mul(4));
                heartbeats_armed = true;
                newly_armed = true;
            }
            // The connect deadline gives way to heart-beats once connected. A
            // pause that ends brings the client's silence check back (from a
            // fresh `last_read`); one that begins suspends it.
            let holding = hold.is_some();
            if newly_armed || (heartbeats_armed && holding != was_holding) {
                timer.as_mut().reset(next_deadline(
                    &session,
                    &config,
                    last_read,
                    last_write,
                    Instant::now(),
                    holding,
                ));
            }
            was_holding = holding;
        };

        let version = session.error_version();
        // End the session before the (possibly slow) farewell on the socket, so
        // that unacknowledged messages go back to their queues and the
        // disconnect hook runs without waiting for the client. Boxed too: it
        // was the largest state of this future, held by every idle session.
        Box::pin(session.end()).await;
        drop(session);
        // Boxed, as the processing below: a large future awaited once would
        // otherwise enlarge the one every idle session holds.
        let ended = Arc::clone(&entry.entry);
        Box::pin(finish(
            &mut transport,
            &outbox,
            &mut batch,
            &end,
            version,
            &server,
            entry,
        ))
        .await;
        log_end(&end, &ended.id, &ended.peer);
        drop(places);
    }
}

/// How a session whose outbox was finished on purpose ended.
fn ended_on_purpose(entry: &SessionEntry) -> End {
    match entry.kicked_by() {
        Some(by) => End::Kicked(by),
        None => End::BrokerEnded,
    }
}

/// What handling frames needs.
struct Processing<'a> {
    decoder: &'a mut Decoder,
    buf: &'a mut BytesMut,
    session: &'a mut Session,
    backlog: &'a Backlog,
    /// The longest wait for congested subscribers (the send time limit),
    /// and where such waits are counted.
    congestion: (Duration, &'a Arc<PublisherPauses>),
    held: &'a mut Option<Box<Frame>>,
    /// The server's heart-beat interval in ms (0: none), set once CONNECT
    /// succeeds, for the writer running beside the processing.
    heartbeat_ms: &'a AtomicU32,
    entry: &'a SessionEntry,
    telemetry: &'a Telemetry,
}

/// The wait that ends a hold on reading. Boxed: the waits are large, and
/// rare, so an idle session's future does not make room for them.
type Hold = Pin<Box<dyn Future<Output = ()> + Send>>;

async fn until_resumed(wait: &mut Option<Hold>) {
    match wait {
        Some(wait) => wait.await,
        None => std::future::pending().await,
    }
}

/// Writes a batch within the send time limit. While the server-wide
/// backlog has readers paused (from passing its limit until drained to
/// half), a write that has not finished for
/// [`STALL_AFTER`] also ends the connection as a slow consumer: a client
/// that takes nothing is then holding server memory that every other
/// connection is waiting for (the messages of its topics that nobody else
/// still holds), and it must not hold it for the whole send time limit.
async fn write_in_time(
    transport: &mut Transport,
    batch: &mut VecDeque<OutFrame>,
    outbox: &Outbox,
    send_timeout: Duration,
    backlog: &Backlog,
) -> Result<std::io::Result<()>, &'static str> {
    let started = Instant::now();
    let frames = batch.len();
    let outcome = {
        let write = transport.write_batch(batch);
        tokio::pin!(write);
        // Most writes complete at once, the socket having room: they need
        // no timers (each one a trip into the runtime's timer wheel).
        match futures_util::FutureExt::now_or_never(&mut write) {
            Some(result) => Ok(result),
            // Boxed: the timers are large and rarely needed.
            None => Box::pin(wait_for_write(write, started + send_timeout, backlog)).await,
        }
    };
    finish_write(batch, frames, outbox, outcome)
}

/// Waits for a write that could not complete at once, within the send
/// time limit, giving up early when it stalls while the server's backlog is
/// over its limit.
async fn wait_for_write(
    mut write: Pin<&mut impl Future<Output = std::io::Result<()>>>,
    deadline: Instant,
    backlog: &Backlog,
) -> Result<std::io::Result<()>, &'static str> {
    let deadline = sleep_until(deadline);
    tokio::pin!(deadline);
    let mut check = tokio::time::interval_at(Instant::now() + STALL_AFTER, STALL_AFTER / 4);
    loop {
        tokio::select! {
            biased;
            result = &mut write => return Ok(result),
            () = &mut deadline => return Err("send time limit"),
            _ = check.tick() => {
                if backlog.pausing() {
                    return Err("stalled while the server's unwritten output is over backlog_bytes");
                }
            }
        }
    }
}

fn finish_write<T>(
    batch: &mut VecDeque<OutFrame>,
    frames: usize,
    outbox: &Outbox,
    outcome: T,
) -> T {
    // Light traffic: give the deque back, so that a session gone idle
    // holds none (the outbox swaps deques with this one). A busy session
    // writes larger batches and keeps its capacity while more is queued;
    // regrowing it for every batch cost a tenth of a delivery's CPU.
    if frames <= SMALL_BATCH || outbox.release_if_idle() {
        *batch = VecDeque::new();
    }
    outcome
}

/// Batches up to this many frames do not keep their deque allocated.
const SMALL_BATCH: usize = 8;

/// What writing the outbox needs.
struct Writing<'a> {
    transport: &'a mut Transport,
    outbox: &'a Outbox,
    batch: &'a mut VecDeque<OutFrame>,
    send_timeout: Duration,
    backlog: &'a Backlog,
    last_write: &'a mut Instant,
    /// See [`Processing::heartbeat_ms`].
    heartbeat_ms: &'a AtomicU32,
    entry: &'a SessionEntry,
}

/// Resolves when a heart-beat is due (never without heart-beats).
async fn heartbeat_due(every_ms: u32, last_write: Instant) {
    match every_ms {
        0 => std::future::pending().await,
        ms => sleep_until(last_write + Duration::from_millis(u64::from(ms))).await,
    }
}

/// In milliseconds, as the session keeps it (at most `u32::MAX`).
fn heartbeat_ms(session: &Session) -> u32 {
    session.heartbeat().send_every.map_or(0, |every| {
        u32::try_from(every.as_millis()).unwrap_or(u32::MAX).max(1)
    })
}

/// Handles the frames read so far while still writing the outbox: a handler
/// or hook that awaits (application code, a relay waiting for the broker)
/// must not stop this client's output, or a client that keeps up would look
/// like a slow consumer. `Err` ends the connection.
async fn process_while_writing(
    work: Processing<'_>,
    out: Writing<'_>,
) -> Result<Result<Step, StompError>, End> {
    let mut redispatch = false;
    let mut work = work;
    let result = {
        let processing = process(&mut work);
        tokio::pin!(processing);
        loop {
            tokio::select! {
                biased;
                result = &mut processing => break result,
                () = out.outbox.ready() => {
                    // A shutdown ends the session once the frame's work is
                    // done (the loop around this sees it); until then,
                    // output is written as it comes.
                    let taken = match out.outbox.take_for_writer(out.batch) {
                        Ok(taken) => taken,
                        Err(Stop::ShuttingDown) => out.outbox.take_all(out.batch),
                        Err(Stop::Overflowed(cap)) => return Err(End::SlowConsumer(cap.unwrap_or("outbox full"))),
                    };
                    redispatch |= taken.wanted;
                    if !out.batch.is_empty() {
                        out.entry.writing(&taken);
                        match write_in_time(out.transport, out.batch, out.outbox, out.send_timeout, out.backlog).await {
                            Ok(Ok(())) => *out.last_write = Instant::now(),
                            Ok(Err(e)) => return Err(End::Io(e)),
                            Err(why) => return Err(End::SlowConsumer(why)),
                        }
                    }
                    if out.outbox.is_finished() {
                        return Err(ended_on_purpose(out.entry));
                    }
                }
                // Handling one frame may take long (a COMMIT or a handler
                // paced by slow subscribers): the client still gets its
                // heart-beats meanwhile.
                () = heartbeat_due(out.heartbeat_ms.load(Ordering::Relaxed), *out.last_write) => {
                    let _ = out.outbox.push(OutFrame::with_text(Bytes::from_static(HEARTBEAT), true));
                    *out.last_write = Instant::now();
                }
            }
        }
    };
    if redispatch {
        // Queues held messages back while the outbox was full; it drained.
        work.session.drained();
    }
    Ok(result)
}

/// What the driver does after handling what was read.
#[derive(Debug)]
enum Step {
    /// Everything buffered was handled; read more.
    Continue,
    /// The server-wide backlog is over its limit: stop reading until it drains.
    Paused,
    /// The last frame left subscriber outboxes congested: stop reading
    /// until they have room (or the send time limit passed), so that a
    /// publisher's burst slows the publisher instead of cutting off the
    /// subscribers it feeds.
    Congested(Congested),
    /// A SUBSCRIBE or UNSUBSCRIBE came faster than the session's rate: it
    /// is held, and nothing more read, until then.
    Throttled(Instant),
    /// The session ended (DISCONNECT).
    Close,
}

async fn process(work: &mut Processing<'_>) -> Result<Step, StompError> {
    let Processing {
        decoder,
        buf,
        session,
        backlog,
        congestion: (limit, pauses),
        held,
        heartbeat_ms: heartbeat_every,
        entry,
        telemetry,
    } = work;
    // Made per read, not per session: an idle session holds none.
    let congested = Congested::new(*limit, Arc::clone(pauses));
    loop {
        // A session not yet connected publishes nothing: its CONNECT (a
        // small frame) is handled even while the server catches up, or the
        // first-frame time limit would cut off a client that sent it at once.
        if backlog.over() && session.is_connected() {
            return Ok(Step::Paused);
        }
        let next = match held.take() {
            Some(frame) => Some(Decoded::Frame(*frame)),
            None => decoder.decode(buf).map_err(|e| {
                let reason = match e {
                    DecodeError::FrameTooLarge { .. }
                    | DecodeError::HeaderLineTooLong { .. }
                    | DecodeError::TooManyHeaders { .. } => ErrorReason::FrameTooLarge,
                    _ => ErrorReason::Protocol,
                };
                StompError::new(e.to_string()).because(reason)
            })?,
        };
        match next {
            None => return Ok(Step::Continue),
            Some(Decoded::Heartbeat) => {}
            Some(Decoded::Frame(frame)) => {
                telemetry.frame_received(frame.command);
                if frame.command == Command::Send {
                    entry.message_in();
                }
                if let Some(until) = session.hold_until(&frame, Instant::now()) {
                    **held = Some(Box::new(frame));
                    return Ok(Step::Throttled(until));
                }
                let was_connected = session.is_connected();
                let flow = congested.collect(session.handle(frame)).await?;
                if !was_connected && session.is_connected() {
                    decoder.set_version(session.version());
                    heartbeat_every.store(heartbeat_ms(session), Ordering::Relaxed);
                    decoder.set_limits(session.frame_limits());
                }
                if flow == Flow::Close {
                    return Ok(Step::Close);
                }
                if congested.any() {
                    return Ok(Step::Congested(congested));
                }
            }
        }
    }
}

/// `holding`: the driver is not reading (paused by the server), so the
/// client's silence is not checked, and must not set a deadline that has
/// already passed (the timer would fire every millisecond).
fn next_deadline(
    session: &Session,
    config: &crate::config::ServerConfig,
    last_read: Instant,
    last_write: Instant,
    now: Instant,
    holding: bool,
) -> Instant {
    let heartbeat = session.heartbeat();
    // Far enough to never fire, near enough not to overflow.
    let mut deadline = now + Duration::from_secs(24 * 3600);
    if let Some(every) = heartbeat.expect_every
        && !holding
    {
        deadline = deadline
            .min(last_read + every.mul_f64(config.heartbeat_grace) + Duration::from_millis(1));
    }
    if let Some(every) = heartbeat.send_every {
        deadline = deadline.min(last_write + every);
    }
    if let Some(at) = session.expires_at() {
        deadline = deadline.min(at);
    }
    deadline.max(now + Duration::from_millis(1))
}

/// Sends what is queued, then the ERROR, within a short bound: the client
/// should learn why it is being closed, but a dead client must not hold the
/// task.
async fn send_error(
    transport: &mut Transport,
    outbox: &Outbox,
    batch: &mut VecDeque<OutFrame>,
    error: &StompError,
    version: Version,
    entry: &SessionEntry,
    telemetry: &Telemetry,
) {
    // A session the broker or an operator already ended has its ERROR
    // queued last: a client gets one ERROR, never two.
    let ended = outbox.is_finished();
    outbox.close();
    let mut taken = outbox.take_all(batch);
    if !ended {
        telemetry.error_sent(error.reason);
        let frame = error.to_frame(version);
        taken.add(&frame);
        batch.push_back(frame);
    }
    entry.writing(&taken);
    let _ = timeout(FAREWELL_TIMEOUT, transport.write_batch(batch)).await;
}

async fn finish(
    transport: &mut Transport,
    outbox: &Outbox,
    batch: &mut VecDeque<OutFrame>,
    end: &End,
    version: Version,
    server: &ServerShared,
    registered: Registered,
) {
    // The session leaves the registry before the client sees its socket
    // close: whoever watched it go finds it gone from the figures too.
    let entry = Arc::clone(&registered.entry);
    let config = &server.config;
    match end {
        End::Disconnected | End::Shutdown => {
            // Everything queued is still delivered, within a bound.
            let (limit, code, reason) = match end {
                End::Shutdown => (
                    config.shutdown_timeout,
                    CloseCode::GOING_AWAY,
                    "server shutting down",
                ),
                _ => (config.send_timeout, CloseCode::NORMAL_CLOSURE, ""),
            };
            outbox.close();
            let taken = outbox.take_all(batch);
            entry.writing(&taken);
            let _ = timeout(limit, transport.write_batch(batch)).await;
            drop(registered);
            let _ = timeout(FAREWELL_TIMEOUT, transport.close(code, reason)).await;
        }
        End::SlowConsumer(why) => {
            let reason = if outbox.unacked_cap().is_some() {
                "unacked_limit"
            } else if *why == "send time limit" || why.starts_with("stalled") {
                "send_timeout"
            } else {
                "outbox_full"
            };
            server.telemetry.slow_consumer(reason);
            server.telemetry.error_sent(ErrorReason::SlowConsumer);
            outbox.close();
            batch.clear();
            let error = match outbox.unacked_cap() {
                Some(cap) => StompError::new(format!(
                    "slow consumer: the client left more messages unacknowledged than {cap} allows and was disconnected"
                )),
                None => StompError::new(
                    "slow consumer: the client did not read its messages fast enough and was disconnected",
                ),
            };
            let frame = error.to_frame(version);
            let mut taken = Taken::default();
            taken.add(&frame);
            batch.push_back(frame);
            entry.writing(&taken);
            let _ = timeout(FAREWELL_TIMEOUT, transport.write_batch(batch)).await;
            drop(registered);
            let _ = timeout(
                FAREWELL_TIMEOUT,
                transport.close(CloseCode::POLICY_VIOLATION, "slow consumer"),
            )
            .await;
        }
        End::ProtocolError(_) | End::BrokerEnded | End::Kicked(_) | End::WebSocketViolation(_) => {
            match end {
                End::BrokerEnded => server.telemetry.error_sent(ErrorReason::Broker),
                End::Kicked(_) => server.telemetry.error_sent(ErrorReason::Administrator),
                _ => {}
            }
            drop(registered);
            let _ = timeout(
                FAREWELL_TIMEOUT,
                transport.close(CloseCode::NORMAL_CLOSURE, ""),
            )
            .await;
        }
        End::ClientClosed => {
            drop(registered);
            outbox.close();
            // A WebSocket client that sent a Close frame is owed one back
            // with its code (RFC 6455 §5.5.1), or it sees an unclean close
            // (1006); the WebSocket layer queued it on reading theirs, and
            // closing sends it. A TCP peer has gone: nothing is owed.
            if let Transport::WebSocket(_) = transport {
                let _ = timeout(
                    FAREWELL_TIMEOUT,
                    transport.close(CloseCode::NORMAL_CLOSURE, ""),
                )
                .await;
            }
        }
        End::Io(_) => {
            drop(registered);
            outbox.close();
        }
    }
}

fn log_end(end: &End, session: &str, peer: &std::net::SocketAddr) {
    match end {
        End::ClientClosed => tracing::debug!(%session, %peer, "connection closed by client"),
        End::Disconnected => tracing::debug!(%session, %peer, "client disconnected"),
        End::Shutdown => tracing::debug!(%session, %peer, "connection closed for shutdown"),
        End::ProtocolError(message) => {
            tracing::info!(%session, %peer, error = %message, "connection closed after ERROR");
        }
        End::WebSocketViolation(why) => {
            tracing::info!(%session, %peer, error = %why, "connection closed: WebSocket protocol violation");
        }
        End::SlowConsumer(why) => {
            tracing::warn!(%session, %peer, reason = why, "slow consumer disconnected");
        }
        End::Io(e) => tracing::debug!(%session, %peer, error = %e, "connection failed"),
        End::BrokerEnded => {
            tracing::info!(%session, %peer, "connection closed by the message broker")
        }
        End::Kicked(by) => {
            tracing::info!(%session, %peer, by = %by, "session disconnected by an administrator")
        }
    }
}
