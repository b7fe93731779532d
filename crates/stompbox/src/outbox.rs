//! The bounded queue of encoded frames between everything that produces
//! frames for a connection (its own session, publishers on other tasks) and
//! the one task that writes to its socket.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

/// Unwritten bytes across every outbox of a server.
///
/// When the server as a whole cannot write as fast as publishers send (the
/// CPU, not any one client, is the limit), connections stop reading new
/// frames above `high` until the writers bring the total under `low`. This
/// slows publishers instead of letting every subscriber's outbox fill up and
/// be cut off as a slow consumer. One stalled client holds at most its own
/// outbox limit, far below `high`, so it cannot pause anyone by itself.
#[derive(Debug)]
pub struct Backlog {
    bytes: AtomicUsize,
    high: usize,
    low: usize,
    drained: Notify,
    /// Set when the total passed `high`, cleared when it falls under `low`:
    /// readers that paused stay paused in between.
    tripped: std::sync::atomic::AtomicBool,
}

impl Backlog {
    /// A backlog pausing readers above `high` bytes until under `high / 2`.
    pub fn new(high: usize) -> Backlog {
        Backlog {
            bytes: AtomicUsize::new(0),
            high,
            low: high / 2,
            drained: Notify::new(),
            tripped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn add(&self, n: usize) {
        let before = self.bytes.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.high {
            self.tripped.store(true, Ordering::Relaxed);
        }
    }

    fn sub(&self, n: usize) {
        if n == 0 {
            return;
        }
        // Every subtraction is a charge being dropped after it was added,
        // so this cannot wrap. One atomic subtraction, not a compare-and-
        // swap loop: writers on every core drop frames at once.
        let before = self.bytes.fetch_sub(n, Ordering::Relaxed);
        if before < n {
            // Never reached; should a charge ever be dropped twice, undo
            // the wrap rather than read a wrapped count as "over".
            self.bytes.fetch_add(n - before, Ordering::Relaxed);
        }
        if before >= self.low && before.saturating_sub(n) < self.low {
            self.tripped.store(false, Ordering::Relaxed);
            self.drained.notify_waiters();
        }
    }

    /// True from passing the limit until drained under half of it: the
    /// time readers that paused wait.
    pub fn pausing(&self) -> bool {
        self.tripped.load(Ordering::Relaxed) && self.bytes() >= self.low
    }

    /// Unwritten bytes now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// True when readers should pause.
    pub fn over(&self) -> bool {
        self.bytes() > self.high
    }

    /// Resolves once the total is under the low-water mark.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.bytes() < self.low {
                return;
            }
            // The timer is a safety net: a pause must never outlive the
            // condition that caused it, whatever happens to a wake-up.
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
        }
    }
}

/// Deques of frames up to this capacity are kept when empty (the writer's
/// and the outbox's swap at every batch); larger ones only while batches
/// are larger too.
const SPARE_DEQUE: usize = 16;

/// Bytes of a delivery's own head held inside the frame itself: the MESSAGE
/// line with a subscription id (and an ack id) of usual lengths fits, since
/// the headers every delivery of a message has in common belong to its
/// shared part. A delivery then costs no allocation of its own, and a whole
/// [`OutFrame`] stays 72 bytes: a publisher moves one into every
/// subscriber's queue, and a writer reads it back on another core.
const INLINE_HEAD: usize = 46;

/// What a queued frame occupies in an outbox besides its bytes to send: its
/// place in the deque (a head too long to be inline is among its bytes).
const QUEUED_FRAME: usize = std::mem::size_of::<OutFrame>();

/// The part of a frame written before its shared bytes. It never changes:
/// how much of the frame is written is counted in [`OutFrame`].
#[derive(Clone)]
enum Head {
    Inline {
        len: u8,
        buf: [u8; INLINE_HEAD],
    },
    /// A head too long to keep inline.
    Heap(Box<[u8]>),
}

impl Head {
    const EMPTY: Head = Head::Inline {
        len: 0,
        buf: [0; INLINE_HEAD],
    };

    fn as_slice(&self) -> &[u8] {
        match self {
            Head::Inline { len, buf } => &buf[..usize::from(*len)],
            Head::Heap(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Bytes::copy_from_slice(self.as_slice()).fmt(f)
    }
}

/// What every frame made from one encoding holds in common: the bytes,
/// whether they are text, and their count in the server-wide backlog. One
/// reference count per delivery, not one for the bytes and one for the
/// count.
#[derive(Debug)]
struct Shared {
    bytes: Bytes,
    /// True when the bytes are valid UTF-8, so a WebSocket may send them as
    /// a text message (browsers' STOMP clients handle either; text is
    /// friendlier to devtools). Computed once per encoding, not per
    /// delivery.
    text: bool,
    /// Set at the first push of any frame holding these bytes: a message
    /// fanned out to many outboxes holds them once, so they are counted
    /// once, until the last frame holding them is written or dropped.
    charge: OnceLock<Charge>,
}

/// One encoded STOMP frame ready for the socket: a head of its own and
/// bytes shared with every other delivery of the same message.
///
/// A publish to many subscribers encodes the shared part (the destination
/// and redelivered headers, message-id, the publisher's headers,
/// content-length, body, NUL) once per STOMP version; each delivery adds
/// only what differs between subscribers (the MESSAGE line with the
/// subscription id, and an ack id), usually held inline, so a delivery
/// neither copies the body nor allocates, whatever the subscription ids.
/// Writers send head and shared bytes with vectored writes. Frames that
/// are not deliveries have no head.
#[derive(Debug)]
pub struct OutFrame {
    head: Head,
    shared: Arc<Shared>,
    /// How much of the frame, head then shared bytes, is written.
    at: usize,
    /// True when this very frame added what it occupies itself to the
    /// backlog when pushed ([`OutFrame::own_memory`]: its place in a queue,
    /// a long head); taken off when it drops.
    own_charged: bool,
}

impl Clone for OutFrame {
    /// The same bytes, sharing their charge; the frame's own charge belongs
    /// to the frame that was pushed, so a clone starts uncounted.
    fn clone(&self) -> OutFrame {
        OutFrame {
            head: self.head.clone(),
            shared: Arc::clone(&self.shared),
            at: self.at,
            own_charged: false,
        }
    }
}

impl Drop for OutFrame {
    fn drop(&mut self) {
        if self.own_charged
            && let Some(charge) = self.shared.charge.get()
        {
            charge.backlog.sub(self.own_memory());
        }
    }
}

impl OutFrame {
    /// Wraps encoded bytes, checking UTF-8 once.
    pub fn new(bytes: Bytes) -> OutFrame {
        let text = std::str::from_utf8(&bytes).is_ok();
        OutFrame::with_text(bytes, text)
    }

    /// Wraps encoded bytes whose UTF-8 validity is already known.
    pub fn with_text(bytes: Bytes, text: bool) -> OutFrame {
        OutFrame {
            head: Head::EMPTY,
            shared: Arc::new(Shared {
                bytes,
                text,
                charge: OnceLock::new(),
            }),
            at: 0,
            own_charged: false,
        }
    }

    /// True when a WebSocket may send the frame as a text message.
    pub fn is_text(&self) -> bool {
        self.shared.text
    }

    /// True for a MESSAGE frame (statistics count them).
    fn is_message(&self) -> bool {
        self.starts_with(b"MESSAGE\n") || self.starts_with(b"MESSAGE\r\n")
    }

    /// A frame of `head` (the concatenation of its parts) followed by this
    /// frame's bytes, shared and counted once in the backlog with every
    /// other frame made from this one. This frame is the template of one
    /// message's deliveries: shared bytes without a head.
    pub(crate) fn with_head(&self, head: &[&[u8]]) -> OutFrame {
        debug_assert!(
            self.head.as_slice().is_empty() && self.at == 0,
            "a template has no head"
        );
        let len: usize = head.iter().map(|part| part.len()).sum();
        let head = match u8::try_from(len) {
            Ok(short) if len <= INLINE_HEAD => {
                let mut buf = [0; INLINE_HEAD];
                let mut at = 0;
                for part in head {
                    buf[at..at + part.len()].copy_from_slice(part);
                    at += part.len();
                }
                Head::Inline { len: short, buf }
            }
            _ => Head::Heap(head.concat().into_boxed_slice()),
        };
        OutFrame {
            head,
            shared: Arc::clone(&self.shared),
            at: 0,
            own_charged: false,
        }
    }

    /// The head's part still to be written.
    fn head_rest(&self) -> &[u8] {
        self.head.as_slice().get(self.at..).unwrap_or_default()
    }

    /// The shared bytes' part still to be written.
    fn rest(&self) -> &[u8] {
        let head = self.head.as_slice().len();
        let at = self.at.saturating_sub(head);
        self.shared.bytes.get(at..).unwrap_or_default()
    }

    /// Bytes still to be written.
    pub(crate) fn len(&self) -> usize {
        self.head_rest().len() + self.rest().len()
    }

    /// The bytes still to be written, head then shared part (either may be
    /// empty), for one vectored write.
    pub(crate) fn chunks(&self) -> [&[u8]; 2] {
        [self.head_rest(), self.rest()]
    }

    /// True when the frame (from where it is now) starts with `prefix`.
    pub(crate) fn starts_with(&self, prefix: &[u8]) -> bool {
        let head = self.head_rest();
        if head.len() >= prefix.len() {
            return head.starts_with(prefix);
        }
        let (first, rest) = prefix.split_at(head.len());
        head == first && self.rest().starts_with(rest)
    }

    /// The bytes still to be written, in one buffer: the shared bytes
    /// themselves when there is no head, else a copy (tests compare frames
    /// with it).
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> Bytes {
        let head = self.head_rest();
        if head.is_empty() {
            let at = self.shared.bytes.len() - self.rest().len();
            return self.shared.bytes.slice(at..);
        }
        let mut out = bytes::BytesMut::with_capacity(self.len());
        out.extend_from_slice(head);
        out.extend_from_slice(self.rest());
        out.freeze()
    }

    /// Drops the first `n` bytes, which were written (`n` at most
    /// [`OutFrame::len`]). The backlog charge stays as it was until the
    /// frame drops.
    pub(crate) fn advance(&mut self, n: usize) {
        assert!(n <= self.len(), "advanced past the end of a frame");
        self.at += n;
    }

    /// Counts the frame in `backlog` as memory, not as bytes to send: the
    /// shared part once (the bytes and the allocation holding them) unless
    /// another frame holding it already did, and what this frame occupies
    /// itself.
    fn charge(&mut self, backlog: &Arc<Backlog>) {
        self.shared.charge.get_or_init(|| {
            let bytes = SHARED_OVERHEAD + self.shared.bytes.len();
            backlog.add(bytes);
            Charge {
                backlog: Arc::clone(backlog),
                bytes,
            }
        });
        if !self.own_charged {
            self.own_charged = true;
            backlog.add(self.own_memory());
        }
    }

    /// What a queued frame occupies besides what it shares: its place in a
    /// queue (an inline head is part of it) and a head too long for that.
    fn own_memory(&self) -> usize {
        std::mem::size_of::<OutFrame>()
            + match &self.head {
                Head::Inline { .. } => 0,
                Head::Heap(head) => head.len(),
            }
    }
}

/// What the shared part of frames occupies besides its bytes: the `Arc`'s
/// counts and [`Shared`] itself.
const SHARED_OVERHEAD: usize = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Shared>();

/// Bytes of one frame counted in a backlog; uncounted when dropped, that is
/// when the last clone of the frame is gone.
#[derive(Debug)]
struct Charge {
    backlog: Arc<Backlog>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.backlog.sub(self.bytes);
    }
}

tokio::task_local! {
    static CONGESTED: Congested;
}

/// Times publishers were paused for the subscribers they congested, and
/// for how long in all (server statistics).
#[derive(Debug, Default)]
pub(crate) struct PublisherPauses {
    count: AtomicU64,
    micros: AtomicU64,
}

impl PublisherPauses {
    fn record(&self, paused: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(paused.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn total(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

/// A publisher pauses once a subscriber it feeds has more than this part of
/// its `outbox_bytes` queued. Low, for two reasons: at saturation the
/// queued output is the latency every subscriber sees (`bench fanout`, 1,000
/// subscribers: p99 150 ms at an eighth against 350 ms at half, for 0.9× the
/// deliveries per second), and the room above the mark is what lets many
/// publishers of one topic each add a message before they pause, without
/// overflowing a subscriber that reads.
pub(crate) const PAUSE_DIVISOR: usize = 8;

/// How long a publisher waits for a subscriber whose writer makes no
/// progress at all before it stops waiting for it (see `State::stalled`).
/// A reader that keeps up writes its batch (at most about a pause mark's
/// worth) far sooner; one slower than that is cut off by its outbox limit,
/// as before there was any pausing. Without this bound, clients that
/// subscribe and never read could hold every publisher of a topic for up
/// to the send time limit each.
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(1);

/// The subscriber outboxes that a session's own work (its SENDs, its
/// handlers' replies, its hooks' publishes, all on its task) left past
/// their pause mark (see [`PAUSE_DIVISOR`]), and the wait for them to drain
/// under it: a publisher is slowed by the subscribers it feeds, long before
/// their outboxes overflow.
#[derive(Debug, Clone)]
pub(crate) struct Congested(Arc<CongestedState>);

#[derive(Debug)]
struct CongestedState {
    outboxes: Mutex<HashMap<usize, Arc<Outbox>>>,
    /// The longest one wait lasts (the send time limit), for subscribers
    /// that keep writing, however slowly.
    limit: Duration,
    pauses: Arc<PublisherPauses>,
}

impl Congested {
    /// A collector whose waits last at most `limit`, counted in `pauses`.
    pub(crate) fn new(limit: Duration, pauses: Arc<PublisherPauses>) -> Congested {
        Congested(Arc::new(CongestedState {
            outboxes: Mutex::default(),
            limit,
            pauses,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Arc<Outbox>>> {
        self.0.outboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `work` with deliveries noting congested outboxes here.
    /// Not an `async fn`: that would hold `work` twice in its state (as
    /// the argument and inside the scope), and the state is copied onto
    /// the heap for every read a session processes.
    pub(crate) fn collect<F: Future>(&self, work: F) -> impl Future<Output = F::Output> {
        CONGESTED.scope(self.clone(), work)
    }

    /// True when some delivery left an outbox congested.
    pub(crate) fn any(&self) -> bool {
        !self.lock().is_empty()
    }

    /// Waits until every outbox noted so far is under its pause mark or
    /// closed, or its writer made no progress for [`STALL_AFTER`], and at
    /// most for the limit (the send time limit). So a subscriber that reads
    /// nothing holds a publisher about a second, once, and is then cut off
    /// by its outbox limit or the send time limit; one that reads slowly
    /// paces the publisher while it keeps writing. At once when nothing was
    /// noted.
    pub(crate) async fn wait(&self) {
        let outboxes: Vec<_> = self.lock().drain().map(|(_, outbox)| outbox).collect();
        if outboxes.is_empty() {
            return;
        }
        let started = tokio::time::Instant::now();
        let _ = tokio::time::timeout(self.0.limit, until_drained_or_stalled(outboxes)).await;
        self.0.pauses.record(started.elapsed());
    }

    /// [`Congested::wait`] for the collector of the current task, if it has
    /// one: publishing several messages within one frame (a COMMIT, an
    /// application handler or hook calling [`crate::app::Messaging`] in a
    /// loop) is paced message by message. Outside a session's task (the
    /// HTTP API, an application's own tasks) it returns at once.
    pub(crate) async fn wait_here() {
        if let Ok(congested) = CONGESTED.try_with(Congested::clone) {
            congested.wait().await;
        }
    }

    fn note(outbox: &Arc<Outbox>) {
        // Outside a session's task there is nobody to pause: those pushes
        // are bounded by the outbox limit alone.
        let _ = CONGESTED.try_with(|congested| {
            congested
                .lock()
                .entry(Arc::as_ptr(outbox) as usize)
                .or_insert_with(|| Arc::clone(outbox));
        });
    }
}

/// Resolves once every outbox is at most at its pause mark (or closed),
/// marking stalled (and no longer waiting for) each one whose writer took
/// nothing during a whole [`STALL_AFTER`] window. All are watched in the
/// same windows, so many stalled subscribers cost a publisher one window,
/// not one each.
async fn until_drained_or_stalled(mut outboxes: Vec<Arc<Outbox>>) {
    loop {
        outboxes.retain(|outbox| !outbox.drained_to_pause_mark());
        if outboxes.is_empty() {
            return;
        }
        let takes: Vec<u64> = outboxes.iter().map(|o| o.lock().takes).collect();
        let all_drained = async {
            for outbox in &outboxes {
                outbox.at_most(outbox.limit / PAUSE_DIVISOR).await;
            }
        };
        if tokio::time::timeout(STALL_AFTER, all_drained).await.is_ok() {
            return;
        }
        let mut still = Vec::with_capacity(outboxes.len());
        for (outbox, takes) in outboxes.into_iter().zip(takes) {
            let mut state = outbox.lock();
            if state.takes == takes && !state.closed {
                state.stalled = true;
            } else {
                drop(state);
                still.push(outbox);
            }
        }
        outboxes = still;
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The connection is closing or closed.
    Closed,
    /// The queue passed its byte limit: the connection is a slow consumer and
    /// is being closed. The frame (and everything queued) is dropped.
    Overflow,
}

/// What a push reads and writes comes first (`repr(C)` keeps the order),
/// beside the lock and the outbox's limit and backlog: a publisher fanning
/// out to 1,000 outboxes touches each once per message, and each field
/// apart is a cache line more to fetch.
#[derive(Debug, Default)]
#[repr(C)]
struct State {
    frames: VecDeque<OutFrame>,
    /// What the queued frames occupy, counted against the outbox's limit:
    /// each frame's bytes to send (its shared part too, as this subscriber
    /// holds it) and its place in the deque ([`QUEUED_FRAME`]). A queue of
    /// tiny frames cannot hold several times its limit.
    bytes: usize,
    /// MESSAGE frames among those queued (statistics).
    messages: usize,
    closed: bool,
    /// A publisher waited [`STALL_AFTER`] here and the writer took nothing:
    /// publishers no longer wait for this outbox, so a subscriber that
    /// reads nothing (or next to nothing) cannot hold them, and is cut off
    /// by its outbox limit instead. Cleared when the writer takes frames.
    stalled: bool,
    overflowed: bool,
    /// Closed on purpose with a last frame: write what is queued, then end.
    finished: bool,
    /// A queue held messages back for lack of room here.
    wanted: bool,
    /// The server is shutting down (see [`Outbox::shut_down`]).
    shutting_down: bool,
    /// Times the writer took frames: its progress, as a publisher waiting
    /// here sees it.
    takes: u64,
    /// The cap a subscriber passed by not acknowledging, when that (and
    /// not its reading) made it a slow consumer.
    unacked_cap: Option<&'static str>,
    /// Producers waiting for room (see [`Outbox::room`]): a take wakes
    /// them only when there are any.
    room_waiters: usize,
}

/// What one take moved into the writer's batch, and what the writer learns
/// with it under the same lock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Bytes of the frames taken.
    pub bytes: usize,
    /// MESSAGE frames among them.
    pub messages: usize,
    /// A queue skipped this consumer for being half full since the last
    /// take: the writer should let queues dispatch to it again.
    pub wanted: bool,
}

impl Taken {
    /// Counts one more frame the writer adds to the batch itself.
    pub(crate) fn add(&mut self, frame: &OutFrame) {
        self.bytes += frame.len();
        self.messages += usize::from(frame.is_message());
    }
}

/// One producer counted in [`State::room_waiters`] while it waits, however
/// its wait ends (woken, or its future dropped).
struct RoomWaiter<'a>(&'a Outbox);

impl Drop for RoomWaiter<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.room_waiters = state.room_waiters.saturating_sub(1);
    }
}

/// Why a writer's take found the session ending instead of frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The server is shutting down: deliver what is queued and close.
    ShuttingDown,
    /// The outbox overflowed (a slow consumer), or a subscriber passed the
    /// unacknowledged cap named.
    Overflowed(Option<&'static str>),
}

/// Bounded (in the memory its frames occupy) multi-producer, single-consumer frame queue.
///
/// A std mutex and not a channel: producers are publishers fanning one
/// message out to thousands of outboxes, so a push must be a short critical
/// section with no await and no allocation beyond the deque's growth, and the
/// writer takes everything queued in one swap so it can write it in one batch.
#[derive(Debug)]
#[repr(C)]
pub struct Outbox {
    limit: usize,
    backlog: Option<Arc<Backlog>>,
    state: Mutex<State>,
    notify: Notify,
    /// Woken whenever the writer takes frames, for a producer that waits
    /// for room (a relay link reading from the broker).
    room: Notify,
}

impl Outbox {
    /// An empty outbox whose unwritten frames occupy at most `limit` bytes.
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            room: Notify::new(),
            limit,
            backlog: None,
        }
    }

    /// Like [`Outbox::new`], counting its bytes in a server-wide backlog.
    pub fn with_backlog(limit: usize, backlog: Arc<Backlog>) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            room: Notify::new(),
            limit,
            backlog: Some(backlog),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent
        // (every mutation is a single push/clear), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame and wakes the writer if the queue was empty.
    ///
    /// # Errors
    ///
    /// [`PushError::Overflow`] when this frame would pass the byte limit (the
    /// outbox then closes), [`PushError::Closed`] when already closed.
    pub fn push(&self, frame: OutFrame) -> Result<(), PushError> {
        self.push_noting(frame).map(|_| ())
    }

    /// Queues a frame from a publisher (a delivery of a message): when it
    /// leaves this outbox past its pause mark, the session whose task is
    /// publishing is told to pause (see [`Congested`]).
    ///
    /// # Errors
    ///
    /// As [`Outbox::push`].
    pub(crate) fn deliver(self: &Arc<Self>, frame: OutFrame) -> Result<(), PushError> {
        let congested = self.push_noting(frame)?;
        if congested {
            Congested::note(self);
        }
        Ok(())
    }

    /// Like [`Outbox::deliver`], except that a frame that would pass the
    /// limit is refused and the outbox stays open: for a link many sessions
    /// share (the shared relay's), where one session's burst must cost that
    /// session its frame, not everyone their link.
    ///
    /// # Errors
    ///
    /// [`PushError::Overflow`] (nothing queued, still open) or
    /// [`PushError::Closed`].
    pub(crate) fn offer(self: &Arc<Self>, frame: OutFrame) -> Result<(), PushError> {
        if self.push_or(frame, false)? {
            Congested::note(self);
        }
        Ok(())
    }

    /// Pushes; `Ok(true)` when the outbox is now past its pause mark.
    fn push_noting(&self, frame: OutFrame) -> Result<bool, PushError> {
        self.push_or(frame, true)
    }

    /// Pushes; on overflow closes the outbox when `close`, else only
    /// refuses the frame.
    fn push_or(&self, frame: OutFrame, close: bool) -> Result<bool, PushError> {
        // Counted before a writer can see the frame, so the writer's
        // uncounting (when it drops the frame) always follows.
        let mut frame = frame;
        if let Some(backlog) = &self.backlog {
            frame.charge(backlog);
        }
        let len = frame.len() + QUEUED_FRAME;
        let message = frame.is_message();
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        if state.bytes + len > self.limit && !state.frames.is_empty() {
            if close {
                self.overflow(state);
            }
            return Err(PushError::Overflow);
        }
        let was_empty = state.frames.is_empty();
        state.bytes += len;
        state.messages += usize::from(message);
        state.frames.push_back(frame);
        let congested = state.bytes > self.limit / PAUSE_DIVISOR && !state.stalled;
        drop(state);
        if was_empty {
            self.notify.notify_one();
        }
        Ok(congested)
    }

    /// Moves every queued frame into `into`, after any frames it still holds.
    pub fn take_all(&self, into: &mut VecDeque<OutFrame>) -> Taken {
        let state = self.lock();
        self.take_locked(state, into)
    }

    /// The writer's turn: unless the session must end instead, as
    /// [`Outbox::take_all`]. One lock for everything the writer checks
    /// each time it wakes.
    pub(crate) fn take_for_writer(&self, into: &mut VecDeque<OutFrame>) -> Result<Taken, Stop> {
        let state = self.lock();
        if state.shutting_down {
            return Err(Stop::ShuttingDown);
        }
        if state.overflowed {
            return Err(Stop::Overflowed(state.unacked_cap));
        }
        Ok(self.take_locked(state, into))
    }

    fn take_locked(
        &self,
        mut state: std::sync::MutexGuard<'_, State>,
        into: &mut VecDeque<OutFrame>,
    ) -> Taken {
        // Every queued frame was counted as its bytes and one place.
        let places = state.frames.len() * QUEUED_FRAME;
        if into.is_empty() {
            std::mem::swap(&mut state.frames, into);
        } else {
            // Frames still in the batch stay ahead of these, and none goes
            // back into the outbox uncounted.
            into.append(&mut state.frames);
        }
        let taken = Taken {
            bytes: std::mem::take(&mut state.bytes).saturating_sub(places),
            messages: std::mem::take(&mut state.messages),
            wanted: std::mem::take(&mut state.wanted),
        };
        if !into.is_empty() {
            state.takes += 1;
            state.stalled = false;
        }
        // Light traffic gives back a large deque (the writer's, swapped
        // in), so that a session gone idle holds none; heavy traffic keeps
        // it rather than grow a new one for every batch. A session that
        // goes idle after heavy traffic lets it go in `release_if_idle`.
        if state.frames.capacity() > SPARE_DEQUE && into.len() <= SPARE_DEQUE {
            state.frames = VecDeque::new();
        }
        // The backlog still counts the taken frames (real memory) until the
        // writer drops them; this outbox's own limit no longer does, so a
        // producer waiting for room here may go on.
        let wake = taken.bytes > 0 && state.room_waiters > 0;
        drop(state);
        if wake {
            self.room.notify_waiters();
        }
        taken
    }

    /// When nothing is queued: gives back a large spare deque and returns
    /// true (the writer then gives back its own). A writer calls it after a
    /// large batch, so that the deques of a burst do not stay with a
    /// session that went idle.
    pub(crate) fn release_if_idle(&self) -> bool {
        let mut state = self.lock();
        if !state.frames.is_empty() {
            return false;
        }
        if state.frames.capacity() > SPARE_DEQUE {
            state.frames = VecDeque::new();
        }
        true
    }

    /// True when over half full. A queue then offers this consumer nothing
    /// more until its writer drains it (see [`Taken::wanted`]), so a
    /// deep queue never overflows a consumer that is keeping up.
    pub fn half_full(&self, wanted: bool) -> bool {
        let mut state = self.lock();
        let full = state.bytes > self.limit / 2;
        if full && wanted {
            state.wanted = true;
        }
        full
    }

    /// True when a producer that can wait should: this outbox is over half
    /// full, or the server-wide backlog is over its limit.
    pub fn congested(&self) -> bool {
        self.lock().bytes > self.limit / 2 || self.backlog.as_ref().is_some_and(|b| b.over())
    }

    /// Resolves once [`Outbox::congested`] is false (or the outbox closed).
    pub async fn room(&self) {
        self.under_half().await;
        if let Some(backlog) = &self.backlog
            && backlog.over()
        {
            backlog.drained().await;
        }
    }

    /// Resolves once at most half full, or closed.
    pub(crate) async fn under_half(&self) {
        self.at_most(self.limit / 2).await;
    }

    /// At most at the pause mark, or closed.
    fn drained_to_pause_mark(&self) -> bool {
        let state = self.lock();
        state.closed || state.bytes <= self.limit / PAUSE_DIVISOR
    }

    async fn at_most(&self, bytes: usize) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if state.closed || state.bytes <= bytes {
                    return;
                }
                state.room_waiters += 1;
            }
            let _waiting = RoomWaiter(self);
            notified.await;
        }
    }

    /// Stops accepting frames. Frames already queued can still be taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
        self.room.notify_waiters();
    }

    /// Closes the outbox as a slow consumer for a subscriber that left more
    /// unacknowledged than `cap` (a setting's name) allows, dropping what is
    /// queued.
    pub fn fail_unacked(&self, cap: &'static str) {
        let mut state = self.lock();
        state.unacked_cap.get_or_insert(cap);
        self.overflow(state);
    }

    /// The cap named by [`Outbox::fail_unacked`], if that closed it.
    pub fn unacked_cap(&self) -> Option<&'static str> {
        self.lock().unacked_cap
    }

    fn overflow(&self, mut state: std::sync::MutexGuard<'_, State>) {
        state.closed = true;
        state.overflowed = true;
        let dropped = std::mem::take(&mut state.frames);
        state.bytes = 0;
        state.messages = 0;
        drop(state);
        // Uncounted from the backlog outside the lock.
        drop(dropped);
        self.notify.notify_one();
        self.room.notify_waiters();
    }

    /// Queues a last frame whatever the limit, then closes: the writer sends
    /// everything queued and ends the connection (used to pass on an ERROR
    /// from an upstream broker, or a DISCONNECT to one). False, and nothing
    /// queued, when it was closed already.
    pub fn finish(&self, mut last: OutFrame) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        if let Some(backlog) = &self.backlog {
            last.charge(backlog);
        }
        state.bytes += last.len() + QUEUED_FRAME;
        state.messages += usize::from(last.is_message());
        state.frames.push_back(last);
        state.closed = true;
        state.finished = true;
        drop(state);
        self.notify.notify_one();
        self.room.notify_waiters();
        true
    }

    /// Tells the session's writer that the server is shutting down: it
    /// delivers what is queued and ends the session. Every outbox is told
    /// at once, instead of every session watching a signal of its own for
    /// its whole life.
    pub(crate) fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.notify.notify_one();
    }

    /// True after [`Outbox::shut_down`].
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    /// True after [`Outbox::finish`].
    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// True once closed, by [`Outbox::close`] or by overflow.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// True when the outbox closed because the consumer was too slow.
    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// What the frames queued and not yet taken by the writer occupy: their
    /// bytes to send and their places in the queue (as counted against the
    /// limit).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Resolves when frames were queued (or the outbox closed) since the last
    /// time this resolved. Cancel-safe: a wake-up is stored as a permit.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_keeps_its_deques_while_it_lasts_and_gives_them_back_after() {
        let outbox = Outbox::new(1 << 20);
        let mut batch = VecDeque::new();
        let spare = |outbox: &Outbox| outbox.lock().frames.capacity();
        // A burst: every batch is large, so the writer's deque swapped in
        // is kept for the next one instead of growing a new deque each time.
        for round in 0..3 {
            for _ in 0..100 {
                outbox.push(frame(10)).expect("room");
            }
            outbox.take_all(&mut batch);
            assert_eq!(batch.len(), 100);
            if round > 0 {
                assert!(spare(&outbox) > SPARE_DEQUE, "round {round}");
            }
            batch.clear();
        }
        // More queued after a large batch: the burst goes on.
        outbox.push(frame(10)).expect("room");
        assert!(!outbox.release_if_idle());
        assert!(spare(&outbox) > SPARE_DEQUE);
        for _ in 0..99 {
            outbox.push(frame(10)).expect("room");
        }
        outbox.take_all(&mut batch);
        assert_eq!(batch.len(), 100);
        batch.clear();
        // Nothing queued after the last batch: the outbox's deque goes, and
        // the answer tells the writer to let its own go.
        assert!(spare(&outbox) > SPARE_DEQUE);
        assert!(outbox.release_if_idle());
        assert_eq!(spare(&outbox), 0);
        // Light traffic gives back a large deque swapped in from the writer.
        let mut large = VecDeque::with_capacity(256);
        outbox.push(frame(10)).expect("room");
        outbox.take_all(&mut large);
        assert_eq!(spare(&outbox), 0);
    }

    #[test]
    fn the_backlog_never_reads_over_while_writers_race_producers() {
        // The outbox limit keeps real unwritten bytes far below the backlog
        // limit (five times over, as before the backlog counted places), so
        // "over" may only ever be a counting error: at most 100 frames of
        // 10 bytes queued and as many taken, each counted with its place in
        // a queue and its shared part.
        let most = 200 * (10 + SHARED_OVERHEAD + std::mem::size_of::<OutFrame>());
        let backlog = Arc::new(Backlog::new(5 * most));
        let outbox = Arc::new(Outbox::with_backlog(1_000, Arc::clone(&backlog)));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || {
                for _ in 0..200_000 {
                    let _ = outbox.push(frame(10));
                }
            })
        };
        let writer = {
            let (outbox, stop) = (Arc::clone(&outbox), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut batch = VecDeque::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    outbox.take_all(&mut batch);
                    batch.clear();
                }
            })
        };
        let mut seen_over = 0;
        while !producer.is_finished() {
            if backlog.over() {
                seen_over += 1;
            }
        }
        producer.join().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert_eq!(
            seen_over, 0,
            "the backlog read over with at most 1,000 bytes queued"
        );
        drop(outbox);
        assert_eq!(backlog.bytes(), 0);
    }

    #[tokio::test]
    async fn the_backlog_counts_every_outbox_and_wakes_when_drained() {
        // Over with two frames, not with one, and not under the low-water
        // mark (half the limit) with one either.
        let one = 6 + SHARED_OVERHEAD + std::mem::size_of::<OutFrame>();
        let backlog = Arc::new(Backlog::new(one * 3 / 2));
        let a = Outbox::with_backlog(100, Arc::clone(&backlog));
        let b = Outbox::with_backlog(100, Arc::clone(&backlog));
        a.push(frame(6)).unwrap();
        b.push(frame(6)).unwrap();
        assert!(backlog.over());
        let waiter = tokio::spawn({
            let backlog = Arc::clone(&backlog);
            async move { backlog.drained().await }
        });
        let mut out = VecDeque::new();
        a.take_all(&mut out);
        // Taken is not written: the writer still holds those bytes.
        assert!(backlog.over());
        out.clear();
        assert!(!backlog.over());
        // One frame left, not under the low-water mark yet.
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("not woken")
            .unwrap();
        assert_eq!(backlog.bytes(), 0);
    }

    #[test]
    fn a_frame_shared_by_many_outboxes_counts_once_in_the_backlog() {
        let backlog = Arc::new(Backlog::new(1_000));
        let outboxes: Vec<_> = (0..50)
            .map(|_| Outbox::with_backlog(100, Arc::clone(&backlog)))
            .collect();
        let shared = frame(60);
        for outbox in &outboxes {
            outbox.push(shared.clone()).unwrap();
        }
        drop(shared);
        // 50 outboxes each hold the frame against their own limit...
        assert!(outboxes.iter().all(|o| o.half_full(false)));
        // ...but its bytes are in memory once, beside a place in each queue.
        let slot = std::mem::size_of::<OutFrame>();
        assert_eq!(backlog.bytes(), SHARED_OVERHEAD + 60 + 50 * slot);
        let mut out = VecDeque::new();
        for outbox in &outboxes[..49] {
            outbox.take_all(&mut out);
            out.clear();
        }
        assert_eq!(
            backlog.bytes(),
            SHARED_OVERHEAD + 60 + slot,
            "one outbox still holds it"
        );
        drop(outboxes);
        assert_eq!(backlog.bytes(), 0);
    }

    #[test]
    fn distinct_frames_count_separately_and_overflow_uncounts_them() {
        let backlog = Arc::new(Backlog::new(1_000));
        let a = Outbox::with_backlog(100, Arc::clone(&backlog));
        let b = Outbox::with_backlog(100, Arc::clone(&backlog));
        let memory = |n: usize| n + SHARED_OVERHEAD + std::mem::size_of::<OutFrame>();
        a.push(frame(60)).unwrap();
        b.push(frame(30)).unwrap();
        assert_eq!(backlog.bytes(), memory(60) + memory(30));
        assert_eq!(a.push(frame(60)), Err(PushError::Overflow));
        assert_eq!(backlog.bytes(), memory(30));
        b.finish(frame(5));
        assert_eq!(backlog.bytes(), memory(30) + memory(5));
        drop(b);
        assert_eq!(backlog.bytes(), 0);
    }

    #[tokio::test]
    async fn a_delivery_past_the_pause_mark_is_noted_for_the_publishing_task_only() {
        let outbox = Arc::new(Outbox::new(800));
        let mark = 800 / PAUSE_DIVISOR;
        let pauses = Arc::new(PublisherPauses::default());
        let congested = Congested::new(std::time::Duration::from_secs(5), Arc::clone(&pauses));
        congested
            .collect(async {
                // A frame occupies its bytes and its place in the queue.
                outbox.deliver(frame(mark - QUEUED_FRAME)).unwrap();
            })
            .await;
        assert!(!congested.any(), "at the mark is not past it");
        congested
            .collect(async {
                outbox.deliver(frame(20)).unwrap();
                outbox.deliver(frame(20)).unwrap();
            })
            .await;
        assert_eq!(
            congested.lock().len(),
            1,
            "noted once however many deliveries"
        );
        // Outside a collecting task nothing is noted (and nothing fails).
        outbox.deliver(frame(10)).unwrap();
        assert_eq!(congested.lock().len(), 1);
        let waiter = tokio::spawn({
            let congested = congested.clone();
            async move { congested.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut out = VecDeque::new();
        outbox.take_all(&mut out);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("not woken when drained")
            .unwrap();
        assert!(!congested.any());
        assert_eq!(pauses.count(), 1);
        // Nothing noted: no wait, no pause counted.
        congested.wait().await;
        assert_eq!(pauses.count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_publisher_stops_waiting_for_an_outbox_whose_writer_takes_nothing() {
        let outbox = Arc::new(Outbox::new(800));
        let pauses = Arc::new(PublisherPauses::default());
        let congested = Congested::new(Duration::from_secs(30), Arc::clone(&pauses));
        let over_mark = || async {
            congested
                .collect(async {
                    outbox.deliver(frame(800 / PAUSE_DIVISOR + 1)).unwrap();
                })
                .await;
        };
        over_mark().await;
        assert!(congested.any());
        let started = tokio::time::Instant::now();
        congested.wait().await;
        assert_eq!(
            started.elapsed(),
            STALL_AFTER,
            "waited past the stall bound"
        );
        // Stalled: more deliveries do not pause the publisher again.
        over_mark().await;
        assert!(
            !congested.any(),
            "a stalled outbox paused the publisher again"
        );
        // Once the writer takes frames it counts again.
        outbox.take_all(&mut VecDeque::new());
        over_mark().await;
        assert!(congested.any());
    }

    #[tokio::test(start_paused = true)]
    async fn many_stalled_outboxes_hold_a_publisher_one_stall_window_in_all() {
        let outboxes: Vec<_> = (0..20).map(|_| Arc::new(Outbox::new(800))).collect();
        let pauses = Arc::new(PublisherPauses::default());
        let congested = Congested::new(Duration::from_secs(10), Arc::clone(&pauses));
        let over_mark = || async {
            congested
                .collect(async {
                    for o in &outboxes {
                        o.deliver(frame(800 / PAUSE_DIVISOR + 1)).unwrap();
                    }
                })
                .await;
        };
        over_mark().await;
        let started = tokio::time::Instant::now();
        congested.wait().await;
        let first = started.elapsed();
        over_mark().await;
        let again = congested.any();
        assert!(
            first <= STALL_AFTER * 2 && !again,
            "20 stalled subscribers held the publisher {first:?}; noted again on next frame: {again}"
        );
    }

    /// A delivery: `head` of its own before the template's tail.
    fn delivery(template: &OutFrame, head: &[u8]) -> OutFrame {
        template.with_head(&[head])
    }

    #[test]
    fn a_delivery_is_its_head_then_the_shared_tail() {
        let template = OutFrame::new(Bytes::from_static(b"message-id:1\n\nbody\0"));
        let frame = delivery(&template, b"MESSAGE\nsubscription:7\n");
        let [head, tail] = frame.chunks();
        assert_eq!(head, b"MESSAGE\nsubscription:7\n");
        assert_eq!(tail, b"message-id:1\n\nbody\0");
        assert_eq!(frame.len(), head.len() + tail.len());
        assert_eq!(
            &frame.to_bytes()[..],
            b"MESSAGE\nsubscription:7\nmessage-id:1\n\nbody\0"
        );
        assert!(frame.starts_with(b"MESSAGE\n"));
        // A frame without a head starts in its tail.
        assert!(OutFrame::new(Bytes::from_static(b"MESSAGE\n\n\0")).starts_with(b"MESSAGE\n"));
        // The prefix may span head and tail.
        assert!(delivery(&template, b"MESS").starts_with(b"MESSmessage-id"));
        assert!(!delivery(&template, b"MESS").starts_with(b"MESSAGE\n"));
        // A head too long to keep inline is kept whole all the same.
        let long = vec![b'h'; INLINE_HEAD + 1];
        let frame = delivery(&template, &long);
        assert_eq!(frame.chunks()[0], &long[..]);
        assert_eq!(frame.len(), long.len() + template.len());
    }

    #[test]
    fn a_queued_frame_is_small_enough_to_move_by_value() {
        // Every delivery is moved into a subscriber's queue by the
        // publisher and out of it by the writer, usually on another core.
        assert!(
            std::mem::size_of::<OutFrame>() <= 72,
            "{}",
            std::mem::size_of::<OutFrame>()
        );
        // The MESSAGE line with a client's usual subscription id and an ack
        // id fits inline.
        let template = OutFrame::new(Bytes::from_static(b"\ndestination:/queue/a\n"));
        let frame = template.with_head(&[
            b"MESSAGE\nsubscription:",
            b"sub-12",
            b"\nack:",
            b"123.45678",
        ]);
        assert!(matches!(frame.head, Head::Inline { .. }));
    }

    #[test]
    fn advancing_crosses_from_head_into_tail() {
        let template = OutFrame::new(Bytes::from_static(b"tail-bytes"));
        for head in [&b"head-"[..], &[b'h'; INLINE_HEAD + 3][..]] {
            let whole = [head, b"tail-bytes"].concat();
            // Every split of the frame into two writes, and a write ending
            // exactly where the head ends.
            for first in 0..=whole.len() {
                let mut frame = delivery(&template, head);
                frame.advance(first);
                assert_eq!(frame.len(), whole.len() - first);
                assert_eq!(frame.chunks().concat(), whole[first..]);
                let rest = frame.len();
                frame.advance(rest);
                assert_eq!(frame.len(), 0);
                assert_eq!(frame.chunks(), [&b""[..], &b""[..]]);
            }
            let mut frame = delivery(&template, head);
            frame.advance(head.len());
            assert_eq!(frame.chunks(), [&b""[..], &b"tail-bytes"[..]]);
            frame.advance(3);
            assert_eq!(frame.chunks(), [&b""[..], &b"l-bytes"[..]]);
        }
    }

    #[test]
    fn deliveries_count_their_shared_tail_once_and_each_its_own_place() {
        let backlog = Arc::new(Backlog::new(100_000));
        let outboxes: Vec<_> = (0..10)
            .map(|_| Arc::new(Outbox::with_backlog(10_000, Arc::clone(&backlog))))
            .collect();
        let template = frame(1_000);
        for (i, outbox) in outboxes.iter().enumerate() {
            let head = format!("MESSAGE\nsubscription:{i:02}\n");
            outbox.push(delivery(&template, head.as_bytes())).unwrap();
        }
        let head = "MESSAGE\nsubscription:00\n".len();
        // An inline head is part of the frame's place in its queue.
        let slot = std::mem::size_of::<OutFrame>();
        let tail = SHARED_OVERHEAD + 1_000;
        assert_eq!(backlog.bytes(), tail + 10 * slot);
        // Each outbox holds the whole frame and its place against its own
        // limit.
        assert!(outboxes.iter().all(|o| o.bytes() == 1_000 + head + slot));
        // A partly written delivery still holds its place until it is
        // dropped; the tail stays counted while any delivery holds it.
        let mut out = VecDeque::new();
        outboxes[0].take_all(&mut out);
        out[0].advance(head + 10);
        assert_eq!(backlog.bytes(), tail + 10 * slot);
        out.clear();
        assert_eq!(backlog.bytes(), tail + 9 * slot);
        // A clone of a pushed delivery is not counted until pushed itself.
        outboxes[1].take_all(&mut out);
        let copy = out[0].clone();
        out.clear();
        assert_eq!(backlog.bytes(), tail + 8 * slot);
        outboxes[1].push(copy).unwrap();
        assert_eq!(backlog.bytes(), tail + 9 * slot);
        // A head too long to be inline counts as well.
        let long = format!("MESSAGE\nsubscription:{}\n", "x".repeat(100));
        outboxes[3]
            .push(delivery(&template, long.as_bytes()))
            .unwrap();
        assert_eq!(backlog.bytes(), tail + 10 * slot + long.len());
        // Refused frames give their charge back at once.
        outboxes[2].close();
        assert_eq!(
            outboxes[2].push(delivery(&template, b"x")),
            Err(PushError::Closed)
        );
        assert_eq!(backlog.bytes(), tail + 10 * slot + long.len());
        drop(outboxes);
        assert_eq!(backlog.bytes(), tail, "the template still holds the tail");
        drop(template);
        assert_eq!(backlog.bytes(), 0);
    }

    fn frame(n: usize) -> OutFrame {
        OutFrame::new(Bytes::from(vec![b'a'; n]))
    }

    #[test]
    fn tiny_frames_cannot_hold_more_memory_than_the_limit() {
        // One-byte frames (heart-beats) to a client that never reads: each
        // occupies its place in the queue, not only its byte.
        let limit = 64 * 1024;
        let outbox = Outbox::new(limit);
        let mut queued = 0;
        while outbox.push(frame(1)).is_ok() {
            queued += 1;
            assert!(queued <= limit, "never cut off");
        }
        assert!(outbox.overflowed());
        assert_eq!(queued, limit / (1 + QUEUED_FRAME));
        // What the queue held, deque slots alone, stayed within the limit.
        assert!(queued * std::mem::size_of::<OutFrame>() <= limit);
    }

    #[test]
    fn overflow_closes_and_drops_everything() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(frame(6)), Ok(()));
        assert_eq!(outbox.push(frame(6)), Err(PushError::Overflow));
        assert!(outbox.overflowed());
        assert_eq!(outbox.push(frame(1)), Err(PushError::Closed));
        let mut out = VecDeque::new();
        outbox.take_all(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_writers_take_counts_messages_and_sees_the_session_end() {
        let outbox = Outbox::new(1_000);
        outbox
            .push(OutFrame::new(Bytes::from_static(b"MESSAGE\n\n\0")))
            .unwrap();
        outbox
            .push(OutFrame::new(Bytes::from_static(b"RECEIPT\n\n\0")))
            .unwrap();
        let template = OutFrame::new(Bytes::from_static(b"\n\n\0"));
        outbox.push(template.with_head(&[b"MESSAGE\r\n"])).unwrap();
        assert!(!outbox.half_full(true));
        let mut batch = VecDeque::new();
        assert_eq!(
            outbox.take_for_writer(&mut batch),
            Ok(Taken {
                bytes: 10 + 10 + 12,
                messages: 2,
                wanted: false,
            })
        );
        assert_eq!(batch.len(), 3);
        batch.clear();
        // A queue that found this consumer half full wants it again after
        // the next take, once.
        outbox.push(frame(600)).unwrap();
        assert!(outbox.half_full(true));
        assert!(outbox.take_for_writer(&mut batch).unwrap().wanted);
        assert!(!outbox.take_for_writer(&mut batch).unwrap().wanted);
        batch.clear();
        // Ending: nothing is taken, so the writer's end decides what is.
        outbox.push(frame(1)).unwrap();
        outbox.shut_down();
        assert_eq!(outbox.take_for_writer(&mut batch), Err(Stop::ShuttingDown));
        assert!(batch.is_empty());
        assert_eq!(outbox.take_all(&mut batch).bytes, 1);
        let outbox = Outbox::new(10);
        outbox.push(frame(6)).unwrap();
        outbox.fail_unacked("max_unacked");
        assert_eq!(
            outbox.take_for_writer(&mut batch),
            Err(Stop::Overflowed(Some("max_unacked")))
        );
    }

    #[tokio::test]
    async fn a_take_wakes_a_producer_waiting_for_room_however_many_wait() {
        let outbox = Arc::new(Outbox::new(100));
        outbox.push(frame(80)).unwrap();
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let outbox = Arc::clone(&outbox);
                tokio::spawn(async move { outbox.room().await })
            })
            .collect();
        // Every waiter is counted before the take, so none is missed.
        while outbox.lock().room_waiters < 3 {
            tokio::task::yield_now().await;
        }
        let mut batch = VecDeque::new();
        outbox.take_all(&mut batch);
        for waiter in waiting {
            waiter.await.unwrap();
        }
        assert_eq!(outbox.lock().room_waiters, 0);
        // A wait given up still leaves the count.
        outbox.push(frame(80)).unwrap();
        let given_up = tokio::time::timeout(Duration::from_millis(1), outbox.room()).await;
        assert!(given_up.is_err());
        assert_eq!(outbox.lock().room_waiters, 0);
    }

    #[test]
    fn taking_frees_room() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(frame(6)), Ok(()));
        let mut out = VecDeque::new();
        outbox.take_all(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(outbox.push(frame(6)), Ok(()));
    }
}
