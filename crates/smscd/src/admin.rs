//! Admin HTTP: /healthz (the process answers), /readyz (listener up, not draining, DLR store
//! answering),
//! /metrics (Prometheus text).

use crate::core::Core;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub async fn serve(core: Arc<Core>, listener: TcpListener, stop: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(core);
    let served =
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "admin server ended");
    }
}

async fn readyz(State(core): State<Arc<Core>>) -> impl IntoResponse {
    if core.ready.load(Ordering::Relaxed) && !core.is_draining() {
        if !core.store.healthy() {
            return (StatusCode::SERVICE_UNAVAILABLE, "not ready: store unavailable\n");
        }
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(core): State<Arc<Core>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        core.metrics.encode(),
    )
}
