//! `vitalmesh run --metrics ADDR`: the run's live figures at
//! `http://ADDR/metrics` for Prometheus to scrape, rendered from each
//! snapshot the run emits (`vitalmesh_sim::exposition`) on its way to the
//! dashboard or the progress lines.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::sync::mpsc;
use vitalmesh_mesh::Snapshot;
use vitalmesh_sim::exposition;

/// Binds `addr` now, so a bad or busy address is refused before the run.
pub(crate) fn bind(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener> {
    let _guard = runtime.enter();
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| {
            anyhow::anyhow!(
                "--metrics: cannot listen on '{addr}': {e}; expected a free address such as '127.0.0.1:9464'"
            )
        })?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

/// Serves `/metrics` on `listener` and returns the sender the run should
/// emit its snapshots into: each is rendered, then handed on to
/// `downstream` as before.
pub(crate) fn tap(
    runtime: &tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    downstream: mpsc::Sender<Snapshot>,
) -> mpsc::Sender<Snapshot> {
    let text = Arc::new(Mutex::new(String::new()));
    let served = text.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = served.lock().unwrap_or_else(|p| p.into_inner()).clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, exposition::CONTENT_TYPE)],
                    body,
                )
            }
        }),
    );
    runtime.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("metrics: the HTTP server stopped: {e}");
        }
    });
    let (tx, mut rx) = mpsc::channel::<Snapshot>(4);
    runtime.spawn(async move {
        while let Some(s) = rx.recv().await {
            *text.lock().unwrap_or_else(|p| p.into_inner()) = exposition::render(&s);
            let _ = downstream.send(s).await;
        }
    });
    tx
}
