//! `fleet-bench-echo`: the raw tonic hop of `scripts/bench` (see the
//! library). Prints `listening on ADDR` once bound, serves until SIGTERM
//! or Ctrl-C.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A minimal tonic server answering catalog.v1 GetTitle from memory.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen (port 0: any free port; the bound one is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    println!("listening on {}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
    });
    fleet_bench::serve(listener, shutdown)
        .await
        .context("the echo server failed")
}
