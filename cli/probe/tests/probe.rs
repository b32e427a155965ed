//! The probe binary against real sockets: the exit status Docker and the
//! rehearsal read, for a healthy, an unhealthy and an absent server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::process::Command;

/// Serves `answer` to every connection on a loopback port; returns it.
fn serve(answer: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut buf = [0_u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    port
}

fn probe(args: &[&str], admin_addr: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleet-probe"));
    cmd.args(args).env_remove("ADMIN_ADDR");
    if let Some(a) = admin_addr {
        cmd.env("ADMIN_ADDR", a);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_2xx_answer_is_healthy_and_anything_else_is_not() {
    let ok = serve("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    let unready = serve("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
    let garbage = serve("SSH-2.0-OpenSSH_9.2\r\n");

    let (healthy, err) = probe(&[&format!("http://127.0.0.1:{ok}/readyz")], None);
    assert!(healthy, "{err}");
    let (healthy, err) = probe(&[&format!("http://127.0.0.1:{unready}/readyz")], None);
    assert!(!healthy);
    assert!(err.contains("answered 503"), "{err}");
    let (healthy, err) = probe(&[&format!("http://127.0.0.1:{garbage}/")], None);
    assert!(!healthy);
    assert!(err.contains("not an HTTP answer"), "{err}");
}

#[test]
fn without_a_url_it_probes_readyz_on_the_admin_addr_port() {
    let ok = serve("HTTP/1.1 204 No Content\r\n\r\n");
    let (healthy, err) = probe(&[], Some(&format!("0.0.0.0:{ok}")));
    assert!(healthy, "{err}");
    let (healthy, err) = probe(&[], None);
    assert!(!healthy);
    assert!(err.contains("ADMIN_ADDR is unset"), "{err}");
}

#[test]
fn nothing_listening_or_bad_arguments_fail_with_the_reason() {
    // A port that was just free: bind, note, drop.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (healthy, err) = probe(&[&format!("http://127.0.0.1:{port}/readyz")], None);
    assert!(!healthy);
    assert!(err.contains("connecting to"), "{err}");
    let (healthy, err) = probe(&["--timeout", "soon", "http://127.0.0.1:1/"], None);
    assert!(!healthy);
    assert!(err.contains("not a positive duration"), "{err}");
    let (healthy, err) = probe(&["https://127.0.0.1:1/"], None);
    assert!(!healthy);
    assert!(err.contains("only http://"), "{err}");
}
