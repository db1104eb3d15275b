//! Admin HTTP: /healthz (liveness: the process answers and every SMPP listener still accepts),
//! /readyz (taking binds: listening, not draining, and, without leader election, not left without
//! any bind to an upstream whose `max_binds` permits are all held elsewhere), /metrics, /queue
//! and /queue/{account} (held submits of store-and-forward, JSON: see [`crate::forward::view`]).
//!
//! The DLR store's health is not readiness: one Redis outage must not empty the Service of every
//! replica at once. While the store is down, submits that ask for a receipt are refused with a
//! transient status and everything else flows; `smscd_store_up` and the /readyz body show it.

use crate::core::Core;
use axum::extract::{Path, State};
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
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/queue", get(queue))
        .route("/queue/{account}", get(queue_of))
        .with_state(core);
    let served =
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "admin server ended");
    }
}

async fn healthz(State(core): State<Arc<Core>>) -> impl IntoResponse {
    if core.listeners.alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not live: an SMPP listener stopped accepting\n")
    }
}

async fn readyz(State(core): State<Arc<Core>>) -> impl IntoResponse {
    if !core.ready.load(Ordering::Relaxed) || core.is_draining() || !core.listeners.alive() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned());
    }
    // Every bind the carrier allows is held by other replicas (a rollout's draining Pods):
    // ESMEs sent here could not submit. Ready again once a permit is free (crate::permits).
    // Not with a Lease: there readiness means alive (standbys are Ready too) and the role label
    // routes ESMEs; a new leader waits for the old one's permits while staying Ready, so a
    // rollout (or a switch from active/active) never waits on it.
    let elected = core.config.get().leader_election.is_some();
    if let Some(up) = core.upstreams.starved().filter(|_| !elected) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: upstream {up} waits for a bind permit (max_binds held elsewhere)\n"),
        );
    }
    if !core.store.healthy() {
        let why = core.store.down_reason().map(|r| format!("; {r}")).unwrap_or_default();
        return (
            StatusCode::OK,
            format!("ready (store unavailable: submits asking for a receipt are refused{why})\n"),
        );
    }
    (StatusCode::OK, "ready\n".to_owned())
}

async fn metrics(State(core): State<Arc<Core>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        core.metrics.encode(),
    )
}

/// Every account's held submits: counts and the first few.
async fn queue(State(core): State<Arc<Core>>) -> impl IntoResponse {
    let accounts: Vec<String> = core.config.get().accounts.iter().map(|a| a.system_id.clone()).collect();
    json(crate::forward::view(&core, &accounts, 20).await)
}

/// One account's held submits, up to 1000 of them.
async fn queue_of(State(core): State<Arc<Core>>, Path(account): Path<String>) -> impl IntoResponse {
    json(crate::forward::view(&core, &[account], 1000).await)
}

fn json(
    r: Result<serde_json::Value, String>,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let ct = [(header::CONTENT_TYPE, "application/json")];
    match r {
        Ok(v) => (StatusCode::OK, ct, format!("{v:#}\n")),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, ct, format!("{}\n", serde_json::json!({ "error": e }))),
    }
}
