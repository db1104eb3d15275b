//! The HTTP API (`http:`, off by default; docs/http-api.md): submit over HTTP
//! (`POST /v1/messages`, Kannel's `/cgi-bin/sendsms`), message state (`GET /v1/messages/{id}`),
//! receipts and MO to webhooks, the OpenAPI document (`/v1/openapi.json`).
//!
//! Served by axum (hyper) like the admin port. A submit goes through the same routing, chains
//! and receipts as an ESME's ([`submit`]); the account's allow-list and throttle apply
//! ([`auth`], 429 with Retry-After over the throttle); errors are RFC 9457 problem details
//! ([`problem`]). Receipts of HTTP submits and MO of accounts with an `mo_url` become
//! webhooks ([`events`], [`webhook`]), queued in the shared store until a 2xx.

pub mod auth;
pub mod events;
pub mod kannel;
pub mod messages;
pub mod openapi;
pub mod problem;
pub mod records;
pub mod submit;
pub mod webhook;

use crate::core::Core;
use crate::metrics::ResultLabel;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use problem::Problem;
use smpp::CommandStatus;
use smsc_api::smscd_config::SmscdConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The routes, as the OpenAPI document must list them (checked by a test).
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/messages", &["post"]),
    ("/v1/messages/{id}", &["get"]),
    ("/v1/openapi.json", &["get"]),
    ("/cgi-bin/sendsms", &["get", "post"]),
];

/// What every handler shares.
pub struct Http {
    pub core: Arc<Core>,
    pub records: Arc<records::Records>,
    pub tokens: auth::Tokens,
    /// Wakes the webhook sender when one is queued here.
    pub wake: Arc<Notify>,
}

impl Http {
    /// Count the answer and turn a problem into its response.
    pub fn respond(&self, r: Result<Response, Problem>) -> Response {
        let resp = r.unwrap_or_else(IntoResponse::into_response);
        self.count_status(resp.status());
        resp
    }

    pub fn count_status(&self, s: StatusCode) {
        let result = format!("{}xx", s.as_u16() / 100);
        self.core.metrics.http_requests.get_or_create(&ResultLabel { result }).inc();
    }
}

/// The problem for a submit no target took: the status of the first failure.
pub fn refused(status: Option<CommandStatus>) -> Problem {
    let s = status.unwrap_or(CommandStatus::ESME_RSYSERR);
    let name = crate::metrics::status_name(s);
    match s {
        CommandStatus::ESME_RTHROTTLED | CommandStatus::ESME_RMSGQFUL => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream-busy",
            "Upstream busy",
            format!("no target took the message now ({name}): retry later"),
        )
        .retry_after(Duration::from_secs(1)),
        CommandStatus::ESME_RINVDSTADR => {
            Problem::invalid("/to", format!("no target takes this destination ({name})"))
        }
        CommandStatus::ESME_RSYSERR | CommandStatus::ESME_RX_T_APPN | CommandStatus::ESME_RSUBMITFAIL => {
            Problem::unavailable(format!("the message was not accepted ({name}): retry later"))
        }
        _ => Problem::new(
            StatusCode::BAD_GATEWAY,
            "refused-upstream",
            "Refused by the upstream",
            format!("the upstream refused the message: {name}"),
        ),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen for the HTTP API on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("HTTP API TLS: {0}")]
    Tls(String),
    #[error("HTTP API store: {0}")]
    Store(String),
}

/// A started HTTP API.
pub struct Started {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

fn listen_addr(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub fn router(http: Arc<Http>, max_body: usize) -> Router {
    Router::new()
        .route("/v1/messages", post(messages::post))
        .route("/v1/messages/{id}", get(messages::get))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/cgi-bin/sendsms", get(kannel::sendsms).post(kannel::sendsms))
        .fallback(|| async { Problem::not_found("no such route: see /v1/openapi.json") })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(http)
}

/// Bind and serve the HTTP API when `http.enabled`, install the webhook sink and start the
/// webhook sender. The server stops with `stop`; the sender with `core.stop`.
pub async fn start(
    core: &Arc<Core>,
    cfg: &SmscdConfig,
    stop: CancellationToken,
) -> Result<Option<Started>, HttpError> {
    if !cfg.http.enabled {
        return Ok(None);
    }
    let at = listen_addr(&cfg.http.bind_address, cfg.http.port);
    let listener =
        TcpListener::bind(&at).await.map_err(|source| HttpError::Listen { addr: at.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| HttpError::Listen { addr: at, source })?;
    let tls = match &cfg.http.tls {
        Some(t) => {
            let settings = smsc_api::smscd_config::ServerTlsConfig {
                port: cfg.http.port,
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
            };
            let loaded = crate::tls::ServerTls::load(&settings).map_err(|e| HttpError::Tls(e.to_string()))?;
            Some(loaded.acceptor())
        }
        None => None,
    };
    let records = Arc::new(records::Records::new(&cfg.store).map_err(|e| HttpError::Store(e.to_string()))?);
    let wake = Arc::new(Notify::new());
    let sink = events::Events { core: Arc::downgrade(core), records: records.clone(), wake: wake.clone() };
    let _ = core.sink.set(Arc::new(sink));
    let http =
        Arc::new(Http { core: core.clone(), records, tokens: auth::Tokens::default(), wake: wake.clone() });
    tokio::spawn(webhook::run(core.clone(), wake));
    let app =
        router(http, cfg.http.max_body_bytes.max(1024)).into_make_service_with_connect_info::<SocketAddr>();
    // Liveness covers this listener too: a server that ends without being stopped fails /healthz.
    let listening = core.listeners.listening(stop.clone());
    let task = tokio::spawn(async move {
        let _listening = listening;
        let served = match tls {
            None => {
                axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
            }
            Some(acceptor) => {
                use axum::serve::ListenerExt;
                // tap_io: its connect info is the peer address, as for the plain listener.
                let tls = tls_listener::TlsListener::new(listener, acceptor).tap_io(|_| {});
                axum::serve(tls, app).with_graceful_shutdown(async move { stop.cancelled().await }).await
            }
        };
        if let Err(e) = served {
            tracing::warn!(error = %e, "HTTP API server ended");
        }
    });
    tracing::info!(%addr, tls = cfg.http.tls.is_some(), "HTTP API listening");
    Ok(Some(Started { addr, task }))
}

mod tls_listener;
