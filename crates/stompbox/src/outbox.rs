//! The bounded queue of encoded frames between everything that produces
//! frames for a connection (its own session, publishers on other tasks) and
//! the one task that writes to its socket.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

/// One encoded STOMP frame ready for the socket.
#[derive(Debug, Clone)]
pub struct OutFrame {
    /// The frame's wire bytes, often shared with other connections.
    pub bytes: Bytes,
    /// True when the bytes are valid UTF-8, so a WebSocket may send them as a
    /// text message (browsers' STOMP clients handle either; text is friendlier
    /// to devtools). Computed once per encoded frame, not per delivery.
    pub text: bool,
}

impl OutFrame {
    /// Wraps encoded bytes, checking UTF-8 once.
    pub fn new(bytes: Bytes) -> OutFrame {
        let text = std::str::from_utf8(&bytes).is_ok();
        OutFrame { bytes, text }
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

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<OutFrame>,
    bytes: usize,
    closed: bool,
    overflowed: bool,
    /// Closed on purpose with a last frame: write what is queued, then end.
    finished: bool,
}

/// Bounded (in bytes) multi-producer, single-consumer frame queue.
///
/// A std mutex and not a channel: producers are publishers fanning one
/// message out to thousands of outboxes, so a push must be a short critical
/// section with no await and no allocation beyond the deque's growth, and the
/// writer takes everything queued in one swap so it can write it in one batch.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    limit: usize,
}

impl Outbox {
    /// An empty outbox holding at most `limit` bytes of unwritten frames.
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            limit,
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
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        let len = frame.bytes.len();
        if state.bytes + len > self.limit && !state.frames.is_empty() {
            state.closed = true;
            state.overflowed = true;
            state.frames = VecDeque::new();
            state.bytes = 0;
            drop(state);
            self.notify.notify_one();
            return Err(PushError::Overflow);
        }
        let was_empty = state.frames.is_empty();
        state.bytes += len;
        state.frames.push_back(frame);
        drop(state);
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Moves every queued frame into `into` (which should be empty).
    pub fn take_all(&self, into: &mut VecDeque<OutFrame>) {
        let mut state = self.lock();
        std::mem::swap(&mut state.frames, into);
        state.bytes = 0;
        // Idle connections should not keep a large deque allocated.
        if state.frames.capacity() > 64 {
            state.frames = VecDeque::new();
        }
    }

    /// Stops accepting frames. Frames already queued can still be taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    /// Closes the outbox as a slow consumer (for a subscriber that stopped
    /// acknowledging), dropping what is queued.
    pub fn fail_slow(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.overflowed = true;
        state.frames = VecDeque::new();
        state.bytes = 0;
        drop(state);
        self.notify.notify_one();
    }

    /// Queues a last frame whatever the limit, then closes: the writer sends
    /// everything queued and ends the connection (used to pass on an ERROR
    /// from an upstream broker, or a DISCONNECT to one).
    pub fn finish(&self, last: OutFrame) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.bytes += last.bytes.len();
        state.frames.push_back(last);
        state.closed = true;
        state.finished = true;
        drop(state);
        self.notify.notify_one();
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

    /// Resolves when frames were queued (or the outbox closed) since the last
    /// time this resolved. Cancel-safe: a wake-up is stored as a permit.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> OutFrame {
        OutFrame::new(Bytes::from(vec![b'a'; n]))
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
    fn taking_frees_room() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(frame(6)), Ok(()));
        let mut out = VecDeque::new();
        outbox.take_all(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(outbox.push(frame(6)), Ok(()));
    }
}
