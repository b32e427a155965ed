//! The most client connections a gRPC server serves at once.
//!
//! Every HTTP/2 connection costs the server a task, buffers and its
//! streams' state, and the stream limit is per connection: without a cap on
//! connections, a client could multiply the stream limit by opening more.
//! [`LimitedIncoming`] accepts a connection only while it holds a permit
//! for it; at the limit it stops accepting, so new clients wait in the
//! kernel's backlog (their connect or handshake times out on their side)
//! until a connection closes and frees its permit.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tokio_util::sync::PollSemaphore;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// Incoming connections, at most `max` open at once.
#[derive(Debug)]
pub struct LimitedIncoming {
    inner: TcpIncoming,
    permits: PollSemaphore,
    /// The permit for the next connection, taken before accepting it.
    next: Option<OwnedSemaphorePermit>,
    max: usize,
    /// Whether the wait at the limit is already logged.
    waiting: bool,
}

impl LimitedIncoming {
    /// Limits `inner` to `max` open connections.
    pub fn new(inner: TcpIncoming, max: usize) -> Self {
        Self {
            inner,
            permits: PollSemaphore::new(Arc::new(Semaphore::new(max))),
            next: None,
            max,
            waiting: false,
        }
    }
}

impl Stream for LimitedIncoming {
    type Item = std::io::Result<LimitedConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.next.is_none() {
            match self.permits.poll_acquire(cx) {
                Poll::Ready(Some(permit)) => {
                    self.next = Some(permit);
                    self.waiting = false;
                }
                // The semaphore is never closed.
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    if !self.waiting {
                        self.waiting = true;
                        tracing::warn!(
                            max_connections = self.max,
                            "gRPC connection limit reached; not accepting until one closes"
                        );
                    }
                    return Poll::Pending;
                }
            }
        }
        match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
            Some(Ok(stream)) => Poll::Ready(Some(Ok(LimitedConn {
                stream,
                _permit: self.next.take(),
            }))),
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }
}

/// An accepted connection holding its permit until it is dropped.
#[derive(Debug)]
pub struct LimitedConn {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Connected for LimitedConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
