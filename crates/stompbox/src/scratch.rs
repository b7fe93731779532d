//! Reading from a socket without a read buffer per connection.
//!
//! Most sessions are idle most of the time. A buffer reserved ahead of each
//! read would be held by every one of them while it waits; instead a read
//! lands in a buffer of the worker thread, and only the bytes it brought
//! are copied into the connection's own, sized to them. The connection
//! keeps them only until they are decoded.

use bytes::BytesMut;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, ReadBuf};

/// One read system call takes at most this much.
const SCRATCH_BYTES: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// Reads what is available, at most `max` bytes (waiting for at least
/// one), and appends it to `buf`; 0 at the end of the stream. Cancel-safe.
pub(crate) async fn read_appending(
    io: &mut (impl AsyncRead + Unpin + ?Sized),
    buf: &mut BytesMut,
    max: usize,
) -> io::Result<usize> {
    poll_fn(|cx| poll_read_with(io, cx, max, |bytes| buf.extend_from_slice(bytes))).await
}

/// [`read_appending`] as a poll, for readers that are polls themselves
/// (their futures then stay small).
pub(crate) fn poll_read_appending(
    io: &mut (impl AsyncRead + Unpin + ?Sized),
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    poll_read_with(io, cx, SCRATCH_BYTES, |bytes| buf.extend_from_slice(bytes))
}

/// Reads what is available and drops it; 0 at the end of the stream.
pub(crate) async fn discard(io: &mut (impl AsyncRead + Unpin + ?Sized)) -> io::Result<usize> {
    poll_fn(|cx| poll_read_with(io, cx, SCRATCH_BYTES, |_| {})).await
}

/// One read into the scratch buffer, whose bytes `take` sees. A buffer
/// reserved for a large frame is filled from it too: one copy more, for a
/// connection that holds nothing while idle.
fn poll_read_with(
    io: &mut (impl AsyncRead + Unpin + ?Sized),
    cx: &mut Context<'_>,
    max: usize,
    take: impl FnOnce(&[u8]),
) -> Poll<io::Result<usize>> {
    // Borrowed only within this poll, never across an await, so one buffer
    // per thread serves every connection it runs.
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let max = max.clamp(1, scratch.len());
        let mut read = ReadBuf::new(&mut scratch[..max]);
        ready!(Pin::new(&mut *io).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        take(read.filled());
        Poll::Ready(Ok(n))
    })
}
