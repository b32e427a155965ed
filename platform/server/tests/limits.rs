//! Transport limits on real loopback sockets: slow-loris clients on the
//! HTTP listeners, header caps, and the gRPC server's message sizes,
//! streams per connection and connections.

// A test reports a broken system by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fleet_config::Env;
use fleet_metrics::Metrics;
use fleet_server::{ServerConfig, ServiceHost};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn config(pairs: &[(&str, &str)]) -> ServerConfig {
    let env = Env::from_pairs([("READINESS_INTERVAL", "50ms"), ("SHUTDOWN_GRACE", "2s")]);
    let env = pairs.iter().fold(env, |env, (k, v)| env.with(*k, *v));
    ServerConfig::from_env(
        &env,
        "test",
        "GRPC_ADDR",
        "127.0.0.1:0",
        "127.0.0.1:0",
        "1.0.0",
        &["1.0"],
    )
    .unwrap()
}

/// An HTTP host (the edge's kind) serving `GET /healthz` → `ok` (as its
/// admin port does).
async fn http_host(pairs: &[(&str, &str)]) -> (SocketAddr, SocketAddr) {
    let host = ServiceHost::bind(config(pairs), Metrics::new("test", "1.0.0"))
        .await
        .unwrap();
    let addrs = (host.main_addr(), host.admin_addr());
    let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(host.run_http(router));
    addrs
}

/// A gRPC host serving health and reflection only.
async fn grpc_host(pairs: &[(&str, &str)]) -> SocketAddr {
    let host = ServiceHost::bind(config(pairs), Metrics::new("test", "1.0.0"))
        .await
        .unwrap();
    let addr = host.main_addr();
    tokio::spawn(host.run_grpc(tonic::service::Routes::default(), &[]));
    addr
}

/// Reads until the server closes the connection (within a minute); what
/// it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0_u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("the server kept the connection open for a minute");
    got
}

/// Sends `head` on a fresh connection; the status line of the answer.
async fn raw_status(addr: SocketAddr, head: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head).await.unwrap();
    let got = read_to_close(&mut s).await;
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

// Time is paused: the runtime jumps to the next timer whenever every task
// waits, so the 10 s timeout passes at once and is measured exactly.
#[tokio::test(start_paused = true)]
async fn a_client_that_stalls_mid_request_line_is_cut_off_at_the_header_read_timeout() {
    let (main, admin) = http_host(&[]).await;
    for addr in [main, admin] {
        // The control: a prompt request on the same listener is served.
        let ok = raw_status(
            addr,
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(ok, "HTTP/1.1 200 OK", "{addr}");

        let mut s = TcpStream::connect(addr).await.unwrap();
        let start = Instant::now();
        s.write_all(b"GET /api/v1/ti").await.unwrap();
        let got = read_to_close(&mut s).await;
        let held = start.elapsed();
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
        assert!(
            held >= Duration::from_secs(10) && held < Duration::from_secs(11),
            "{addr}: connection held {held:?}, not the 10 s header read timeout"
        );

        // An idle keep-alive connection after a served request: closed
        // once the next head has not come within the timeout.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let start = Instant::now();
        let got = read_to_close(&mut s).await;
        let held = start.elapsed();
        assert!(got.starts_with(b"HTTP/1.1 200 OK"), "{addr}");
        assert!(
            held >= Duration::from_secs(10) && held < Duration::from_secs(11),
            "{addr}: idle keep-alive connection held {held:?}"
        );

        // A client that connects and says nothing at all: the same.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let start = Instant::now();
        let got = read_to_close(&mut s).await;
        let held = start.elapsed();
        assert!(got.is_empty());
        assert!(
            held >= Duration::from_secs(10) && held < Duration::from_secs(11),
            "{addr}: silent connection held {held:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_header_read_timeout_is_configurable_and_a_slow_but_timely_head_is_served() {
    let (main, _) = http_host(&[("HTTP_HEADER_READ_TIMEOUT", "2s")]).await;
    // Trickled over 1.5 s: within the timeout, served.
    let mut s = TcpStream::connect(main).await.unwrap();
    for part in [
        &b"GET /healthz HT"[..],
        b"TP/1.1\r\nhost: x\r\n",
        b"connection: close\r\n\r\n",
    ] {
        s.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let got = read_to_close(&mut s).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // Stalled: cut off after 2 s.
    let mut s = TcpStream::connect(main).await.unwrap();
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
    let held = start.elapsed();
    assert!(
        held >= Duration::from_secs(2) && held < Duration::from_secs(3),
        "{held:?}"
    );
}

#[tokio::test]
async fn too_many_or_too_large_headers_get_431_from_the_transport() {
    let (main, admin) = http_host(&[("HTTP_MAX_HEADERS", "16")]).await;
    let head = |headers: usize, value_len: usize| {
        let mut h = String::from("GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
        for i in 0..headers {
            h.push_str(&format!("x-h{i}: {}\r\n", "v".repeat(value_len)));
        }
        h.push_str("\r\n");
        h.into_bytes()
    };
    for addr in [main, admin] {
        assert_eq!(raw_status(addr, &head(10, 8)).await, "HTTP/1.1 200 OK");
        assert_eq!(
            raw_status(addr, &head(20, 8)).await,
            "HTTP/1.1 431 Request Header Fields Too Large",
            "{addr}: 22 headers over a cap of 16"
        );
        // 70 KiB of head over the 64 KiB default.
        assert_eq!(
            raw_status(addr, &head(10, 7 * 1024)).await,
            "HTTP/1.1 431 Request Header Fields Too Large",
            "{addr}: 70 KiB head"
        );
    }
}

async fn health_client(addr: SocketAddr) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

#[tokio::test]
async fn a_request_message_over_the_limit_is_refused_with_out_of_range() {
    let addr = grpc_host(&[("GRPC_MAX_RECV_MESSAGE_BYTES", "1024")]).await;
    let mut client = health_client(addr).await;
    let check = |len: usize| HealthCheckRequest {
        service: "s".repeat(len),
    };
    // Under the limit: the server read it (an unknown service).
    let e = client.check(check(1000)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // Over it, by a little and by a lot: refused before it is read.
    for len in [1030, 3 * 1024 * 1024] {
        let e = client.check(check(len)).await.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "{len}: {e:?}");
        assert!(
            e.message().contains("larger than the limit of 1024 bytes"),
            "{e:?}"
        );
    }
    // The connection is still good for the next call.
    let e = client.check(check(10)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn a_response_message_over_the_limit_ends_the_call_with_out_of_range() {
    let symbol = "grpc.reflection.v1.ServerReflection";
    // The control: with the default limit, reflection describes itself
    // (its file descriptor is a few KiB).
    let roomy = grpc_host(&[]).await;
    assert!(
        fleet_testkit::reflection::describes(roomy, symbol)
            .await
            .unwrap()
    );

    let tight = grpc_host(&[("GRPC_MAX_SEND_MESSAGE_BYTES", "1024")]).await;
    // A small answer still goes out.
    let services = fleet_testkit::reflection::list_services(tight)
        .await
        .unwrap();
    assert!(services.contains(&symbol.to_owned()), "{services:?}");
    match fleet_testkit::reflection::describes(tight, symbol).await {
        Err(fleet_testkit::reflection::ReflectionError::Call(status)) => {
            assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
            assert!(
                status
                    .message()
                    .contains("larger than the limit of 1024 bytes"),
                "{status:?}"
            );
        }
        other => panic!("expected OUT_OF_RANGE, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_is_held_to_the_concurrent_stream_limit_of_its_connection() {
    let addr = grpc_host(&[("GRPC_MAX_CONCURRENT_STREAMS", "2")]).await;
    // One connection; health Watch streams stay open until dropped.
    let client = health_client(addr).await;
    let watch = |mut client: HealthClient<tonic::transport::Channel>| async move {
        let mut stream = client
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner();
        let first = stream.message().await?;
        Ok::<_, tonic::Status>((stream, first))
    };
    let (first, _) = watch(client.clone()).await.unwrap();
    let (_second, _) = watch(client.clone()).await.unwrap();
    // The third waits in the client for a free stream...
    let third = tokio::spawn(watch(client.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third stream opened beyond the limit of 2"
    );
    // ...and opens as soon as one ends.
    drop(first);
    let (_third, status) = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the third stream never opened after the first ended")
        .unwrap()
        .unwrap();
    assert!(status.is_some());
}

#[tokio::test]
async fn beyond_the_connection_limit_a_client_waits_until_a_connection_closes() {
    let addr = grpc_host(&[("GRPC_MAX_CONNECTIONS", "1")]).await;
    let mut first = health_client(addr).await;
    let check = HealthCheckRequest {
        service: String::new(),
    };
    first.check(check.clone()).await.unwrap();
    let second = tokio::spawn({
        let check = check.clone();
        async move { health_client(addr).await.check(check).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served beyond the limit of 1"
    );
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second connection was never served after the first closed")
        .unwrap();
    assert!(answer.is_ok(), "{answer:?}");
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_disconnected_by_keepalive() {
    let addr = grpc_host(&[
        ("GRPC_KEEPALIVE_INTERVAL", "1s"),
        ("GRPC_KEEPALIVE_TIMEOUT", "1s"),
    ])
    .await;
    // A raw HTTP/2 client: the preface and empty SETTINGS, then silence —
    // it reads what the server sends and never acknowledges a PING.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let got = read_to_close(&mut s).await;
    // Frame type 6 is PING: the server asked before it gave up.
    let mut at = 0;
    let mut pinged = false;
    while at + 9 <= got.len() {
        let len =
            usize::from(got[at]) << 16 | usize::from(got[at + 1]) << 8 | usize::from(got[at + 2]);
        pinged |= got[at + 3] == 6 && got[at + 4] & 1 == 0;
        at += 9 + len;
    }
    assert!(pinged, "no PING before the close: {got:?}");
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_sent_a_request_does_not_hold_up_the_drain() {
    let host = ServiceHost::bind(config(&[]), Metrics::new("test", "1.0.0"))
        .await
        .unwrap();
    let (main, admin) = (host.main_addr(), host.admin_addr());
    let stop = host.shutdown_token();
    let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let server = tokio::spawn(host.run_http(router));
    let ok = raw_status(
        main,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ok, "HTTP/1.1 200 OK");
    // Silent connections on both listeners, then SIGTERM: the drain ends
    // within the 2 s grace, not at the 10 s header read timeout (which
    // would be DrainAborted).
    let _silent_main = TcpStream::connect(main).await.unwrap();
    let _silent_admin = TcpStream::connect(admin).await.unwrap();
    tokio::task::yield_now().await;
    let start = Instant::now();
    stop.cancel();
    let result = server.await.unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}
