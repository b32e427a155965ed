//! The server loop of every HTTP listener (the edge's public port, every
//! admin port), with the transport limits of [`HttpLimits`].
//!
//! `axum::serve` builds its hyper connection builder itself and gives it no
//! timer, so hyper's header read timeout never runs: a client that sends
//! half a request line and stalls holds its connection (and a task) for as
//! long as the kernel keeps it — the slow-loris attack. This loop is
//! `axum::serve`'s (accept, one task per connection, graceful shutdown that
//! stops accepting and lets each connection finish its request) with the
//! builder configured here:
//!
//! * Before any protocol: a connection must send its first bytes (enough
//!   to tell HTTP/1 from the HTTP/2 preface) within `header_read_timeout`,
//!   or it is closed — hyper's protocol detection waits forever.
//! * HTTP/1: a timer and `header_read_timeout` (the connection is closed
//!   when a request head is not complete in time, and an idle keep-alive
//!   connection after that long), at most `max_headers` headers and
//!   `max_head_bytes` of head (hyper answers 431 beyond them).
//! * HTTP/2: the same head limit as the header-list size, and a timer for
//!   hyper's HTTP/2 timeouts.
//!
//! With a TLS acceptor (the edge with `TLS_CERT_FILE`, see [`crate::tls`])
//! the handshake follows the first bytes, within the same
//! `header_read_timeout`; HTTP/1 or HTTP/2 then runs inside it (ALPN).
//!
//! Each request carries `ConnectInfo<SocketAddr>`, as with
//! `into_make_service_with_connect_info`, for the edge's rate limiter.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use futures::FutureExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::config::HttpLimits;
use crate::listen::HttpListener;

/// The connection builder every HTTP listener uses.
fn builder(limits: &HttpLimits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        // hyper's floor is 8 KiB; the config's range starts there.
        .max_buf_size(limits.max_head_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        // As axum::serve: the CONNECT protocol (HTTP/2 WebSockets).
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX));
    builder
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until the first bytes on `stream` tell HTTP/1 (anything that is
/// not a prefix of the HTTP/2 preface) from HTTP/2 (the whole preface);
/// `false` when the peer closed first. Only peeks: hyper reads them again.
async fn protocol_known(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0_u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        if n == buf.len() || buf[..n] != H2_PREFACE[..n] {
            return Ok(true);
        }
        // Part of the preface so far: `peek` would return the same bytes at
        // once, so wait a little before looking again.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Serves one connection's requests until it ends; on `stop` (draining),
/// lets the request in progress finish, then closes.
async fn serve_connection<I, S>(
    builder: &Builder<TokioExecutor>,
    io: TokioIo<I>,
    service: S,
    mut stop: std::pin::Pin<&mut futures::future::Fuse<impl Future<Output = ()>>>,
    peer: SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    // A client going away mid-request, a timed-out head, a
                    // malformed request: the client's problem, never the
                    // server's.
                    tracing::debug!(%peer, %error, "HTTP connection ended with an error");
                }
                break;
            }
            () = &mut stop => conn.as_mut().graceful_shutdown(),
        }
    }
}

/// Serves `router` on `listener` until `signal` resolves, then stops
/// accepting and waits for open connections to finish their requests
/// (the caller bounds that wait).
pub async fn serve(
    mut listener: HttpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    signal: impl Future<Output = ()> + Send + 'static,
) {
    let builder = Arc::new(builder(&limits));
    // Dropping the receiver is the shutdown signal every connection
    // watches; the close channel counts the connections still open.
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        signal.await;
        drop(signal_rx);
    });
    let (close_tx, close_rx) = watch::channel(());
    loop {
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            () = signal_tx.closed() => break,
        };
        let service = router
            .clone()
            .map_request(move |req: http::Request<Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            });
        let service = TowerToHyperService::new(service);
        let builder = Arc::clone(&builder);
        let signal_tx = signal_tx.clone();
        let close_rx = close_rx.clone();
        let first_bytes = limits.header_read_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut stop = pin!(signal_tx.closed().fuse());
            let known = tokio::select! {
                known = tokio::time::timeout(first_bytes, protocol_known(&io)) => known,
                // Draining: a connection that has sent nothing has no
                // request to finish (as hyper closes an idle one).
                () = &mut stop => Ok(Ok(false)),
            };
            if !matches!(known, Ok(Ok(true))) {
                // Closed, failed, silent or draining: nothing to serve.
                tracing::debug!(%peer, "HTTP connection sent no request; closed");
                drop(close_rx);
                return;
            }
            match tls {
                None => serve_connection(&builder, TokioIo::new(io), service, stop, peer).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(first_bytes, acceptor.accept(io)) => done,
                        () = &mut stop => {
                            drop(close_rx);
                            return;
                        }
                    };
                    match handshake {
                        Ok(Ok(tls)) => {
                            serve_connection(&builder, TokioIo::new(tls), service, stop, peer)
                                .await;
                        }
                        Ok(Err(error)) => {
                            // Plain HTTP on the TLS port, an unknown CA on
                            // the client's side, a scanner: its problem.
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}
