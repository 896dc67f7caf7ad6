//! A connection whose peer stops reading is closed: [`WriteStall`] fails a write (or flush)
//! that makes no progress for its limit. hyper bounds the reading of a request head and the
//! gateway the reading of a body, but nothing bounded a response the client never reads: a
//! client that pipelines requests and reads none of the answers held its connection (and its
//! slot of the listener's limit) for as long as it liked, so a few of them took every slot of
//! the admin listener, `/readyz` included.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `inner`, whose writes fail with `TimedOut` after `limit` without progress.
pub(crate) struct WriteStall<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write waits; reset by any progress.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteStall<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> Self {
        WriteStall {
            inner,
            limit,
            timer: None,
        }
    }

    /// Called when the inner write is pending: arms the timer, and fails once it has run out.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer read nothing for {} s", limit.as_secs()),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The outcome of an inner write poll, with the stall limit applied.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(done) => {
                self.timer = None;
                Poll::Ready(done)
            }
            Poll::Pending => self.waiting(cx).map(Err),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A peer that reads nothing: the write fails after the limit (the pipe's buffer full).
    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_after_the_limit() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut stream = WriteStall::new(ours, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let chunk = vec![0u8; 64 * 1024];
        let e = stream.write_all(&chunk).await.expect_err("stalled");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// A peer that reads, however slowly within the limit, gets everything.
    #[tokio::test]
    async fn a_write_that_progresses_is_never_cut() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut stream = WriteStall::new(ours, Duration::from_millis(300));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match theirs.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            got.len()
        });
        // About 40 reads of 512 bytes, 20 ms apart: 0.8 s in all, well past the limit.
        stream.write_all(&[7u8; 20 * 1024]).await.expect("written");
        stream.shutdown().await.expect("shut down");
        assert_eq!(reader.await.expect("reader"), 20 * 1024);
    }

    /// A stream that writes one buffer at a time (`is_write_vectored` left at its default).
    struct Plain<W>(W);

    impl<W: AsyncWrite + Unpin> AsyncWrite for Plain<W> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// Reads pass through untouched.
    #[tokio::test]
    async fn reads_are_the_inner_streams() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut stream = WriteStall::new(ours, Duration::from_millis(200));
        theirs.write_all(b"request").await.expect("write");
        drop(theirs);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"request");
    }

    /// A vectored write reaches the peer (as many bytes as it reports), says whether the inner
    /// stream writes vectors, and stalls like any write.
    #[tokio::test]
    async fn vectored_writes_are_the_inner_streams_and_stall_alike() {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let mut stream = WriteStall::new(ours, Duration::from_millis(200));
        assert!(stream.is_write_vectored(), "a duplex pipe does");
        let plain = WriteStall::new(Plain(tokio::io::duplex(64).0), Duration::from_millis(200));
        assert!(
            !plain.is_write_vectored(),
            "a stream without vectored writes does not"
        );
        let bufs = [io::IoSlice::new(b"head "), io::IoSlice::new(b"body")];
        let n = stream.write_vectored(&bufs).await.expect("written");
        assert!(n > 1, "{n}");
        drop(stream);
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, &b"head body"[..n]);

        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut stream = WriteStall::new(ours, Duration::from_millis(200));
        let chunk = vec![0u8; 4096];
        let stalled = loop {
            match stream.write_vectored(&[io::IoSlice::new(&chunk)]).await {
                Ok(n) => assert!(n > 0),
                Err(e) => break e,
            }
        };
        assert_eq!(stalled.kind(), io::ErrorKind::TimedOut, "{stalled}");
    }

    /// A flush that cannot hand its bytes on (a buffered writer in front of a peer that reads
    /// nothing) fails after the limit; one the peer takes delivers them.
    #[tokio::test]
    async fn a_flush_stalls_like_a_write() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut stream = WriteStall::new(
            tokio::io::BufWriter::with_capacity(64 * 1024, ours),
            Duration::from_millis(200),
        );
        stream.write_all(&[1u8; 8 * 1024]).await.expect("buffered");
        let e = stream.flush().await.expect_err("stalled");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");

        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let mut stream = WriteStall::new(
            tokio::io::BufWriter::with_capacity(64 * 1024, ours),
            Duration::from_millis(200),
        );
        stream.write_all(b"answer").await.expect("buffered");
        stream.flush().await.expect("flushed");
        let mut got = [0u8; 6];
        theirs.read_exact(&mut got).await.expect("delivered");
        assert_eq!(&got, b"answer");
    }
}
