//! Layer: the largest gRPC message a server receives and sends.
//!
//! tonic sets message limits per generated service (`XServer::
//! max_decoding_message_size`), which each service would have to repeat;
//! this layer applies one limit to every service the host serves, health
//! and reflection included. It reads the 5-byte length prefix of each gRPC
//! message as the bytes stream past, without buffering anything:
//!
//! * a request message longer than `max_recv` ends the request body with
//!   `OUT_OF_RANGE` as soon as its prefix arrives (the rest is never read),
//!   and tonic answers the call with that status — tonic's own code for a
//!   message over its decoding limit;
//! * a response message longer than `max_send` is not sent: the response
//!   ends there with `OUT_OF_RANGE` in its trailers (tonic's code for a
//!   message over its encoding limit).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::Frame;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::entry::BoxError;

/// Applies [`MessageLimit`].
#[derive(Clone, Copy, Debug)]
pub struct MessageLimitLayer {
    max_recv: usize,
    max_send: usize,
}

impl MessageLimitLayer {
    /// Requests' messages at most `max_recv` bytes, responses' `max_send`.
    pub fn new(max_recv: usize, max_send: usize) -> Self {
        Self { max_recv, max_send }
    }
}

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit {
            inner,
            max_recv: self.max_recv,
            max_send: self.max_send,
        }
    }
}

/// The service of [`MessageLimitLayer`].
#[derive(Clone, Debug)]
pub struct MessageLimit<S> {
    inner: S,
    max_recv: usize,
    max_send: usize,
}

impl<S, ResBody> Service<http::Request<Body>> for MessageLimit<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let max = self.max_recv;
        let req = req.map(|body| {
            Body::new(Limited {
                inner: body,
                scanner: Scanner::default(),
                max,
                direction: Direction::Request,
                trailers: None,
                done: false,
            })
        });
        ResponseFuture {
            inner: self.inner.call(req),
            max_send: self.max_send,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`MessageLimit`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        max_send: usize,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let max = *this.max_send;
        let resp = ready!(this.inner.poll(cx))?;
        Poll::Ready(Ok(resp.map(|body| {
            Body::new(Limited {
                inner: body,
                scanner: Scanner::default(),
                max,
                direction: Direction::Response,
                trailers: None,
                done: false,
            })
        })))
    }
}

/// Which way a body flows, for what happens to an oversized message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// Finds the length prefix of each gRPC message in a byte stream.
#[derive(Debug, Default)]
struct Scanner {
    /// The prefix (flag byte, 4-byte big-endian length) read so far.
    prefix: [u8; 5],
    have: usize,
    /// Bytes of the current message's payload still to pass.
    remaining: u64,
}

/// A message over the limit in a chunk.
#[derive(Debug, PartialEq, Eq)]
struct Oversized {
    /// Its declared length.
    len: u64,
    /// Where its prefix starts in the chunk (0 when it began in an earlier
    /// chunk).
    start: usize,
}

impl Scanner {
    /// Scans `chunk`; the first message longer than `max`, if any.
    fn scan(&mut self, chunk: &[u8], max: usize) -> Result<(), Oversized> {
        let mut at = 0;
        while at < chunk.len() {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len() - at);
                at += skip;
                self.remaining -= skip as u64;
                continue;
            }
            let start = at.saturating_sub(self.have);
            let take = (5 - self.have).min(chunk.len() - at);
            self.prefix[self.have..self.have + take].copy_from_slice(&chunk[at..at + take]);
            self.have += take;
            at += take;
            if self.have == 5 {
                self.have = 0;
                let [_, a, b, c, d] = self.prefix;
                let len = u64::from(u32::from_be_bytes([a, b, c, d]));
                if len > max as u64 {
                    return Err(Oversized { len, start });
                }
                self.remaining = len;
            }
        }
        Ok(())
    }
}

pin_project_lite::pin_project! {
    /// A body whose messages are checked against a limit.
    struct Limited<B> {
        #[pin]
        inner: B,
        scanner: Scanner,
        max: usize,
        direction: Direction,
        // Trailers to send next (a response cut short).
        trailers: Option<Status>,
        done: bool,
    }
}

/// The trailers frame ending a response with `status`.
fn trailers(status: Status) -> Frame<Bytes> {
    // tonic renders a status (`grpc-status`, percent-encoded
    // `grpc-message`, details) only as a whole response; its `grpc-*`
    // headers are the trailers.
    let rendered = status.into_http::<()>().into_parts().0.headers;
    let mut trailers = http::HeaderMap::new();
    for (name, value) in &rendered {
        if name.as_str().starts_with("grpc-") {
            trailers.append(name.clone(), value.clone());
        }
    }
    Frame::trailers(trailers)
}

impl<B> http_body::Body for Limited<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        if let Some(status) = this.trailers.take() {
            *this.done = true;
            return Poll::Ready(Some(Ok(trailers(status))));
        }
        if *this.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(this.inner.poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(Status::from_error(e.into())))),
            Some(Ok(frame)) => frame,
        };
        let Some(data) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let Err(over) = this.scanner.scan(data, *this.max) else {
            return Poll::Ready(Some(Ok(frame)));
        };
        *this.done = true;
        let max = *this.max;
        match this.direction {
            Direction::Request => {
                tracing::warn!(
                    message_bytes = over.len,
                    limit_bytes = max,
                    "gRPC request message over the limit refused"
                );
                Poll::Ready(Some(Err(Status::out_of_range(format!(
                    "request message of {} bytes is larger than the limit of {max} bytes",
                    over.len
                )))))
            }
            Direction::Response => {
                tracing::error!(
                    message_bytes = over.len,
                    limit_bytes = max,
                    "gRPC response message over the limit not sent"
                );
                let status = Status::out_of_range(format!(
                    "response message of {} bytes is larger than the limit of {max} bytes",
                    over.len
                ));
                // The whole messages before it in this chunk still go out;
                // the call then ends with the status.
                if over.start > 0 {
                    *this.trailers = Some(status);
                    let data = frame.into_data().unwrap_or_default();
                    return Poll::Ready(Some(Ok(Frame::data(data.slice(..over.start)))));
                }
                Poll::Ready(Some(Ok(trailers(status))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        (self.done || self.inner.is_end_stream()) && self.trailers.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7, len as usize));
        m
    }

    #[test]
    fn messages_within_the_limit_pass_in_any_chunking() {
        let mut stream = message(10);
        stream.extend(message(0));
        stream.extend(message(16));
        for size in 1..=stream.len() {
            let mut s = Scanner::default();
            for chunk in stream.chunks(size) {
                assert_eq!(s.scan(chunk, 16), Ok(()), "chunks of {size}");
            }
        }
    }

    #[test]
    fn the_first_oversized_message_is_found_at_its_prefix() {
        let mut stream = message(3);
        stream.extend(message(17));
        let mut s = Scanner::default();
        assert_eq!(s.scan(&stream, 16), Err(Oversized { len: 17, start: 8 }));
        // Split inside the prefix: found once the prefix is whole.
        let mut s = Scanner::default();
        assert_eq!(s.scan(&stream[..10], 16), Ok(()));
        assert_eq!(
            s.scan(&stream[10..], 16),
            Err(Oversized { len: 17, start: 0 })
        );
        // A 4 GiB claim needs no 4 GiB to be found.
        let mut s = Scanner::default();
        assert_eq!(
            s.scan(&[0, 0xff, 0xff, 0xff, 0xff], 1 << 20),
            Err(Oversized {
                len: u64::from(u32::MAX),
                start: 0
            })
        );
    }
}
