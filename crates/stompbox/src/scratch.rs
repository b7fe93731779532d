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
use std::task::{Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// One read system call takes at most this much.
const SCRATCH_BYTES: usize = 64 * 1024;

/// A buffer with at least this much room already (a large frame being
/// received) is read into directly instead.
const DIRECT_READ_MIN: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// Reads what is available (waiting for at least one byte) and appends it
/// to `buf`; 0 at the end of the stream. Cancel-safe.
pub(crate) async fn read_appending(
    io: &mut (impl AsyncRead + Unpin + ?Sized),
    buf: &mut BytesMut,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() >= DIRECT_READ_MIN {
        return io.read_buf(buf).await;
    }
    read_with(io, |bytes| buf.extend_from_slice(bytes)).await
}

/// Reads what is available and drops it; 0 at the end of the stream.
pub(crate) async fn discard(io: &mut (impl AsyncRead + Unpin + ?Sized)) -> io::Result<usize> {
    read_with(io, |_| {}).await
}

/// One read into the scratch buffer, whose bytes `take` sees.
async fn read_with(
    io: &mut (impl AsyncRead + Unpin + ?Sized),
    mut take: impl FnMut(&[u8]),
) -> io::Result<usize> {
    poll_fn(|cx| {
        // Borrowed only within this poll, never across an await, so one
        // buffer per thread serves every connection it runs.
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut read = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut *io).poll_read(cx, &mut read))?;
            take(read.filled());
            Poll::Ready(Ok(read.filled().len()))
        })
    })
    .await
}
