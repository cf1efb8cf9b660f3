//! Socket buffers that cost nothing while a connection is idle.
//!
//! Most connections of a fleet are idle most of the time, so an idle connection keeps no
//! read or write buffer: a read waits in a scratch buffer shared by every connection of
//! the worker thread, and only the bytes that arrived are copied into the connection's
//! own buffer, which is allocated at their size. A packet that spans reads grows that
//! buffer (doubling, so a large packet soon reads straight into it), and an empty buffer
//! gives its memory back. Decoded packets share the allocation of the read that carried
//! them (`decode` splits frames off without copying), so a queued or retained message
//! also keeps no more than its read.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Bytes read from the socket at once, at most, into the scratch buffer.
pub(super) const READ_CHUNK: usize = 8 * 1024;

thread_local! {
    /// Where reads wait; allocated by the first read on each thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Reads what the socket has (at least one byte, or 0 at end of stream) and appends it
/// to `buf`. An empty `buf` first gives its allocation back, so nothing is held while
/// the read waits. Cancel safe: bytes are taken from the socket only when it completes.
pub(super) async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    poll_fn(|cx| poll_read_some(reader, cx, buf)).await
}

/// `read_some` as a poll function, for a task that also writes.
pub(super) fn poll_read_some<R: AsyncRead + Unpin>(
    reader: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    release_if_empty(buf);
    if buf.capacity() - buf.len() >= READ_CHUNK {
        // A large packet is arriving and the buffer has grown for it: no copy. (The
        // future reads at most once per poll, so a new one per poll is equivalent.)
        return pin!(reader.read_buf(buf)).poll(cx);
    }
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < READ_CHUNK {
            scratch.resize(READ_CHUNK, 0);
        }
        let mut read = ReadBuf::new(scratch);
        ready!(Pin::new(reader).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
}

/// Reads and throws away what the peer sends, through the scratch buffer, until the end
/// of the stream, an error, or `limit` bytes; returns how many were discarded.
pub(super) async fn discard_input<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
    stats: &crate::broker::Stats,
) -> usize {
    let mut discarded = 0;
    while discarded < limit {
        match poll_fn(|cx| poll_discard(reader, cx)).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                crate::broker::Stats::add(&stats.bytes_received, read as u64);
                discarded += read;
            }
        }
    }
    discarded
}

fn poll_discard<R: AsyncRead + Unpin>(
    reader: &mut R,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < READ_CHUNK {
            scratch.resize(READ_CHUNK, 0);
        }
        let mut read = ReadBuf::new(scratch);
        ready!(Pin::new(reader).poll_read(cx, &mut read))?;
        Poll::Ready(Ok(read.filled().len()))
    })
}

/// Drops the allocation of an empty buffer (packets split off it keep theirs).
pub(super) fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() != 0 {
        *buf = BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn idle_buffer_holds_no_memory() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        client.write_all(b"\xc0\x00").await.unwrap();
        assert_eq!(read_some(&mut server, &mut buf).await.unwrap(), 2);
        // Allocated at the size of what arrived, not of a read chunk.
        assert!(buf.capacity() < 64, "capacity {}", buf.capacity());
        let _ping = buf.split_to(2);
        release_if_empty(&mut buf);
        assert_eq!(buf.capacity(), 0);
    }

    #[tokio::test]
    async fn large_packet_grows_the_buffer_across_reads() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let writer = tokio::spawn(async move {
            client.write_all(&payload).await.unwrap();
            payload
        });
        let mut buf = BytesMut::new();
        while buf.len() < 100_000 {
            assert_ne!(read_some(&mut server, &mut buf).await.unwrap(), 0);
        }
        assert_eq!(&buf[..], &writer.await.unwrap()[..]);
    }

    #[tokio::test]
    async fn end_of_stream_reads_zero() {
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let mut buf = BytesMut::new();
        assert_eq!(read_some(&mut server, &mut buf).await.unwrap(), 0);
        assert_eq!(buf.capacity(), 0);
    }
}
