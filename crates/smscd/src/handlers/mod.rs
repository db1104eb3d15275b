//! Scripted handlers: a Python file whose `@smpp.on_bind` and `@smpp.on_pdu(...)` functions
//! decide binds, submits (each destination of a submit_multi as a submit_sm, see
//! [`crate::multi`]) and data_sm from ESMEs, and deliver_sm / data_sm from upstreams (MO and
//! receipts, and the sim's receipts) before they are routed (docs/handlers.md is the user's
//! guide).
//!
//! The rest of smscd sees only [`Handlers`]: `on_bind` and `on_pdu` are async calls that answer a
//! verdict or a [`Failure`], and [`Handlers::wants`] says (one atomic load) whether a hook is
//! registered at all. With no `handlers` section no [`Handlers`] exists, no interpreter is
//! started and the hot path pays one `Option` check.
//!
//! Why CPython embedded through PyO3:
//! - the scripts are the document's (`from siphon import smpp`, `async def` handlers awaiting a
//!   cache): they need real CPython semantics, asyncio and the standard library. RustPython runs
//!   neither asyncio nor C extensions faithfully and is several times slower;
//! - a subprocess speaking a pipe protocol would add two copies and a context switch per message
//!   and a second process to supervise; embedded, a trivial handler costs a few microseconds;
//! - PyO3 is the maintained binding, and links the libpython3.11 that Debian (and so our images)
//!   ships.
//!
//! How calls run (see [`python`]): one thread per engine owns the interpreter's asyncio loop and
//! runs every handler; tokio tasks hand it jobs through a queue and a wake-up pipe and await the
//! answer on a oneshot channel, so no tokio worker ever waits for the GIL. `timeout_ms` is kept
//! twice: the Python thread cancels an async handler and interrupts a sync one that overruns (a
//! watchdog raises [`python`]'s `HandlerTimeout` in it), and the caller stops waiting shortly
//! after, so even a handler stuck in C code cannot hang an ESME.
//!
//! Hot reload ([`script`]): the script is read through its path every `reload_interval_ms`
//! (which follows a ConfigMap's `..data` symlink swap); a changed one is imported on the Python
//! thread into a fresh module and swapped in only if the import succeeds. Calls already running
//! keep the functions they started with; a failed import is logged with file:line, counted in
//! `handler_reloads{result="refused"}` and the old handlers stay.

pub mod bind;
pub mod cache;
pub mod deliver;
mod python;
pub mod script;
pub mod submit;

use crate::metrics::{HandlerErrorLabels, HandlerLabels, Metrics, ResultLabel};
use crate::router::Target;
use prometheus_client::metrics::counter::Counter;
use smpp::{CommandStatus, SubmitSm};
use smsc_api::smscd_config::{HandlersConfig, OnHandlerError, StoreConfig};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub use python::check_script;

/// A hook a script can register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    Bind,
    SubmitSm,
    DeliverSm,
    DataSm,
}

impl Hook {
    const ALL: [Hook; 4] = [Hook::Bind, Hook::SubmitSm, Hook::DeliverSm, Hook::DataSm];

    fn bit(self) -> u8 {
        match self {
            Hook::Bind => 1,
            Hook::SubmitSm => 2,
            Hook::DeliverSm => 4,
            Hook::DataSm => 8,
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Hook::Bind => "on_bind",
            Hook::SubmitSm => "on_pdu:submit_sm",
            Hook::DeliverSm => "on_pdu:deliver_sm",
            Hook::DataSm => "on_pdu:data_sm",
        }
    }

    /// The command name `@smpp.on_pdu` takes.
    fn from_command(name: &str) -> Option<Hook> {
        match name {
            "submit_sm" => Some(Hook::SubmitSm),
            "deliver_sm" => Some(Hook::DeliverSm),
            "data_sm" => Some(Hook::DataSm),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Hook::Bind => 0,
            Hook::SubmitSm => 1,
            Hook::DeliverSm => 2,
            Hook::DataSm => 3,
        }
    }
}

/// What `on_bind` sees.
#[derive(Clone, Debug, Default)]
pub struct BindInfo {
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    /// `transmitter`, `receiver` or `transceiver`.
    pub bind_type: &'static str,
    pub interface_version: u8,
    pub client_addr: String,
    pub client_port: u16,
}

/// The session a PDU came on, as `on_pdu` sees it: an ESME's, or one of our upstream binds
/// (`upstream` names it; `system_id` is ours at the upstream, the address the upstream's).
#[derive(Clone, Debug, Default)]
pub struct SessionView {
    pub system_id: String,
    pub client_addr: String,
    pub client_port: u16,
    pub bind_type: &'static str,
    pub upstream: Option<std::sync::Arc<str>>,
}

/// The message a receipt reports on, when smscd matched it before the handler
/// (`pdu.receipt.upstream_id` and `pdu.receipt.account`; the PDU carries our id already).
#[derive(Clone, Debug)]
pub struct ReceiptMatch {
    pub account: String,
    pub upstream_id: String,
}

/// `on_bind`'s answer.
#[derive(Clone, Debug, PartialEq)]
pub enum BindVerdict {
    /// None: the configured accounts decide.
    Default,
    /// `bind.accept(window=..., throttle=...)`: bound whatever the accounts say.
    Accept { window: Option<usize>, throttle: Option<u32> },
    /// `bind.reject(status)`.
    Reject(CommandStatus),
}

/// `on_pdu`'s answer, with the PDU as the handler left it.
#[derive(Debug)]
pub enum PduVerdict {
    /// None: default routing of the (possibly changed) PDU.
    Continue(SubmitSm),
    /// `pdu.route([...])`: this chain instead of the routing rules (PDUs from ESMEs only).
    Route(Arc<[Target]>, SubmitSm),
    /// `pdu.reply(message_id=..., status=...)`: answered here; no message_id: ours. For a PDU
    /// from an upstream: answered (the status) and not forwarded.
    Reply { message_id: Option<String>, status: CommandStatus },
    /// `pdu.reject(status)`.
    Reject(CommandStatus),
}

/// Why a call gave no verdict (`handler_errors{kind}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The handler raised.
    Exception,
    /// It returned something that is not a verdict for its hook.
    WrongType,
    /// It ran past `timeout_ms`.
    Timeout,
    /// The interpreter thread is gone (shutdown).
    Unavailable,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Exception => "exception",
            FailureKind::WrongType => "wrong_type",
            FailureKind::Timeout => "timeout",
            FailureKind::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// `file:line: Type: message` where known.
    pub detail: String,
}

/// Settings that a config reload changes in place.
#[derive(Clone, Copy, Debug)]
struct Settings {
    timeout: Duration,
    on_error: OnHandlerError,
}

/// A running handlers engine. Cheap to share; calls are answered from its Python thread.
pub struct Handlers {
    engine: python::Engine,
    flags: Arc<AtomicU8>,
    settings: Mutex<Settings>,
    script: Mutex<std::path::PathBuf>,
    window: std::sync::atomic::AtomicUsize,
    counters: Counters,
    last_error_log: AtomicU64,
    epoch: Instant,
}

struct Counters {
    ok: Vec<Counter>,
    metrics_errors: prometheus_client::metrics::family::Family<HandlerErrorLabels, Counter>,
    metrics_calls: prometheus_client::metrics::family::Family<HandlerLabels, Counter>,
    reloads_applied: Counter,
    reloads_refused: Counter,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("handlers.script: {0}")]
    Script(String),
}

impl Handlers {
    /// Start the interpreter thread and import the script (a failure here is fatal: there is no
    /// old version to keep). `script` is already resolved against the config's directory.
    pub async fn start(
        cfg: &HandlersConfig,
        store: &StoreConfig,
        metrics: &Metrics,
        stop: CancellationToken,
    ) -> Result<Arc<Handlers>, StartError> {
        let flags = Arc::new(AtomicU8::new(0));
        let cache = cache::Cache::new(store);
        let engine = python::Engine::spawn(flags.clone(), cache).map_err(StartError::Script)?;
        let path = std::path::PathBuf::from(&cfg.script);
        let source =
            std::fs::read(&path).map_err(|e| StartError::Script(format!("{}: {e}", path.display())))?;
        let import_limit = Duration::from_millis(cfg.import_timeout_ms.max(1));
        engine.load(&path, source.clone(), import_limit).await.map_err(StartError::Script)?;
        // One statement each: a family's guard lives to the end of its statement, and a second
        // get_or_create in the same one would wait for it forever.
        let mut ok = Vec::new();
        for h in Hook::ALL {
            let c = metrics
                .handler_calls
                .get_or_create(&HandlerLabels { handler: h.label().into(), result: "ok".into() })
                .clone();
            ok.push(c);
        }
        let reloads_applied =
            metrics.handler_reloads.get_or_create(&ResultLabel { result: "applied".into() }).clone();
        let reloads_refused =
            metrics.handler_reloads.get_or_create(&ResultLabel { result: "refused".into() }).clone();
        let counters = Counters {
            ok,
            metrics_errors: metrics.handler_errors.clone(),
            metrics_calls: metrics.handler_calls.clone(),
            reloads_applied,
            reloads_refused,
        };
        let h = Arc::new(Handlers {
            engine,
            flags,
            settings: Mutex::new(Settings {
                timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
                on_error: cfg.on_error,
            }),
            script: Mutex::new(path.clone()),
            window: std::sync::atomic::AtomicUsize::new(cfg.window.max(1)),
            counters,
            last_error_log: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        tracing::info!(script = %path.display(), hooks = ?h.registered(), "handlers loaded");
        let interval = Duration::from_millis(cfg.reload_interval_ms.max(10));
        tokio::spawn(script::watch(h.clone(), path, source, interval, import_limit, stop));
        Ok(h)
    }

    /// Whether the script registered `hook` (one relaxed load: the hot path asks per PDU).
    pub fn wants(&self, hook: Hook) -> bool {
        self.flags.load(Ordering::Relaxed) & hook.bit() != 0
    }

    fn registered(&self) -> Vec<&'static str> {
        Hook::ALL.iter().filter(|h| self.wants(**h)).map(|h| h.label()).collect()
    }

    pub fn on_error(&self) -> OnHandlerError {
        self.settings().on_error
    }

    /// The window of an ESME accepted without an account, and the cap on `accept(window=)`.
    pub fn window(&self) -> usize {
        self.window.load(Ordering::Relaxed)
    }

    fn settings(&self) -> Settings {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A config reload: timeout, on_error and window apply at once; a new script path is
    /// watched from the next poll.
    pub fn reconfigure(&self, cfg: &HandlersConfig) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) =
            Settings { timeout: Duration::from_millis(cfg.timeout_ms.max(1)), on_error: cfg.on_error };
        self.window.store(cfg.window.max(1), Ordering::Relaxed);
        *self.script.lock().unwrap_or_else(|p| p.into_inner()) = std::path::PathBuf::from(&cfg.script);
    }

    pub(crate) fn script_path(&self) -> std::path::PathBuf {
        self.script.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ask `on_bind`. Counted and logged here; the caller applies `on_error` to a failure.
    pub async fn on_bind(&self, info: BindInfo) -> Result<BindVerdict, Failure> {
        let timeout = self.settings().timeout;
        let r = self.engine.call_bind(info, timeout).await;
        self.count(Hook::Bind, r.as_ref().err());
        r
    }

    /// Ask `on_pdu(hook)` about `sm`. Counted and logged here; the caller applies `on_error`.
    pub async fn on_pdu(
        &self,
        hook: Hook,
        sm: SubmitSm,
        session: SessionView,
    ) -> Result<PduVerdict, Failure> {
        self.on_pdu_matched(hook, sm, session, None).await
    }

    /// [`Handlers::on_pdu`] for a receipt that matched a message of ours (`matched`).
    pub async fn on_pdu_matched(
        &self,
        hook: Hook,
        sm: SubmitSm,
        session: SessionView,
        matched: Option<ReceiptMatch>,
    ) -> Result<PduVerdict, Failure> {
        let timeout = self.settings().timeout;
        let r = self.engine.call_pdu(hook, sm, session, matched, timeout).await;
        self.count(hook, r.as_ref().err());
        r
    }

    fn count(&self, hook: Hook, failure: Option<&Failure>) {
        let Some(f) = failure else {
            if let Some(c) = self.counters.ok.get(hook.index()) {
                c.inc();
            }
            return;
        };
        let labels = HandlerLabels { handler: hook.label().into(), result: "error".into() };
        self.counters.metrics_calls.get_or_create(&labels).inc();
        let labels = HandlerErrorLabels { handler: hook.label().into(), kind: f.kind.as_str().into() };
        self.counters.metrics_errors.get_or_create(&labels).inc();
        // A broken handler fails every message: one line a second is enough to see why.
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_error_log.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self.last_error_log.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(handler = hook.label(), kind = f.kind.as_str(), error = %f.detail,
                on_error = ?self.on_error(), "handler failed (logged at most once a second)");
        }
    }

    /// Stop the interpreter thread (shutdown); later calls fail as `unavailable`.
    pub(crate) fn stop(&self) {
        self.engine.stop();
    }

    /// Import `source` as the new version; on success it serves every call from now on.
    pub(crate) async fn reload(
        &self,
        path: &std::path::Path,
        source: Vec<u8>,
        limit: Duration,
    ) -> Result<(), String> {
        let r = self.engine.load(path, source, limit).await;
        match &r {
            Ok(()) => {
                self.counters.reloads_applied.inc();
                tracing::info!(script = %path.display(), hooks = ?self.registered(), "handlers reloaded");
            }
            Err(e) => {
                self.counters.reloads_refused.inc();
                tracing::error!(script = %path.display(), error = %e, "handlers reload refused; the running version stays");
            }
        }
        r
    }
}
