//! Socket options for every accepted connection: `TCP_NODELAY` and keepalive.
//!
//! Every server here answers small request/response exchanges (a gRPC unary
//! call is a HEADERS frame, a DATA frame and a trailing HEADERS frame, often
//! written separately). With Nagle's algorithm on, the second small write
//! waits for the ACK of the first, and the peer delays that ACK (up to 40 ms
//! on Linux): a ~40 ms stall on a large share of calls. tonic sets
//! `TCP_NODELAY` only on sockets it accepts itself, and ignores the setting
//! for an incoming stream it is handed; `axum::serve` never sets it. So each
//! listener goes through one of these two wrappers, and nothing here accepts
//! a socket any other way.

use std::time::Duration;

use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::TcpIncoming;

/// TCP keepalive on accepted connections: a peer that vanished without a
/// FIN (a killed pod, a dropped NAT entry) is noticed instead of holding a
/// connection (and its HTTP/2 streams) forever.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The gRPC server's incoming connections from `listener`, with
/// `TCP_NODELAY` and keepalive set on each accepted socket.
pub fn grpc_incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
}

/// An HTTP listener (edge, admin port) that sets `TCP_NODELAY` on each
/// accepted socket. The concrete type (not `impl Listener`) keeps axum's
/// `ConnectInfo<SocketAddr>` working, which the edge's rate limit needs.
pub type HttpListener = TapIo<TcpListener, fn(&mut TcpStream)>;

/// Wraps `listener` so that every accepted socket gets `TCP_NODELAY`.
pub fn http_listener(listener: TcpListener) -> HttpListener {
    listener.tap_io(set_nodelay as fn(&mut TcpStream))
}

fn set_nodelay(stream: &mut TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        // The connection still works, only slower: log and serve it.
        tracing::warn!(%error, "cannot set TCP_NODELAY on an accepted connection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio_stream::StreamExt;

    async fn bound() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[tokio::test]
    async fn grpc_incoming_sets_nodelay_on_accepted_sockets() {
        let (listener, addr) = bound().await;
        let mut incoming = grpc_incoming(listener);
        let _client = TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "accepted gRPC socket has Nagle on"
        );
    }

    #[tokio::test]
    async fn http_listener_sets_nodelay_on_accepted_sockets() {
        let (listener, addr) = bound().await;
        let mut listener = http_listener(listener);
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, peer) = listener.accept().await;
        assert!(peer.ip().is_loopback());
        assert!(
            accepted.nodelay().unwrap(),
            "accepted HTTP socket has Nagle on"
        );
    }

    #[tokio::test]
    async fn a_plain_listener_leaves_nagle_on() {
        // The control: without the wrapper the kernel default (Nagle on) is
        // what a server gets, which is why the wrappers exist.
        let (listener, addr) = bound().await;
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap());
    }
}
