//! The running daemon: wires listener, upstreams, sim, deliveries and admin together, applies
//! reloads, and drains on shutdown.
//!
//! Shutdown (the token): stop accepting connections and new binds, refuse new submits with
//! ESME_RTHROTTLED (transient), wait for deferred submits to be answered, generate the sim's
//! pending receipts at once, wait until queued deliveries reached the ESMEs. Receipts and MO
//! arriving meanwhile are taken only when they can still reach an ESME (`Core::takes_delivery`),
//! else refused with ESME_RX_T_APPN so the carrier redelivers. Then refuse them all, unbind the
//! upstreams (all at once), let what was queued last go out, and unbind the ESMEs. All of it
//! within `shutdown.drain_secs` (the last 20% reserved for the unbinds; a connection not
//! unbound in its share is dropped); deliveries still queued then are lost with a memory store
//! (logged).
//!
//! Reload (the watch channel): accounts (limits, passwords, allow-lists; removed accounts are
//! unbound), routing, sim settings and upstream binds apply without dropping other binds and
//! without waiting for an unbind (`Upstreams::apply`). Listener and admin addresses,
//! max_connections and the store type need a restart.
//!
//! Leadership, reloads and binds are ordered: taking and losing the lead and applying a
//! reload's upstreams hold one lock (`control`), so a reload never binds upstream after a
//! step-down looked; an ESME session inserted as a step-down runs checks again and unbinds.

use crate::core::Core;
use crate::inbound::Sessions;
use crate::live::Live;
use crate::metrics::{AccountLabel, ResultLabel};
use crate::router::Router;
use crate::store::memory::MemoryStore;
use smsc_api::smscd_config::{SmscdConfig, StoreConfig};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen for SMPP on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot listen for admin HTTP on {addr}: {source}")]
    Admin { addr: String, source: std::io::Error },
    #[error("store: {0}")]
    Store(String),
    #[error("server TLS: {0}")]
    Tls(String),
    #[error("no SMPP listener: server.plain_listener is false and server.tls is not set")]
    NoListener,
    #[error("daemon task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("{0}")]
    Handlers(String),
}

/// A started daemon.
pub struct DaemonHandle {
    /// Where ESMEs connect: the plain listener, or the TLS one when `server.plain_listener` is
    /// false.
    pub smpp_addr: SocketAddr,
    /// The plain SMPP listener, unless `server.plain_listener` is false.
    pub plain_addr: Option<SocketAddr>,
    /// The SMPP-over-TLS listener, when `server.tls` is set.
    pub tls_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    /// The HTTP API, when `http.enabled`.
    pub http_addr: Option<SocketAddr>,
    pub core: Arc<Core>,
    task: JoinHandle<()>,
}

impl DaemonHandle {
    /// Wait until the daemon has shut down (after the token passed to `start` is cancelled).
    pub async fn wait(self) -> Result<(), DaemonError> {
        self.task.await.map_err(|e| DaemonError::Task(e.to_string()))
    }
}

/// Run until `shutdown` is cancelled and the drain is over.
pub async fn run(
    config: Arc<SmscdConfig>,
    reloads: watch::Receiver<Arc<SmscdConfig>>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    start(config, reloads, shutdown).await?.wait().await
}

fn listen_addr(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Bind the listeners, start every part and return the bound addresses. Every replica is active.
pub async fn start(
    config: Arc<SmscdConfig>,
    reloads: watch::Receiver<Arc<SmscdConfig>>,
    shutdown: CancellationToken,
) -> Result<DaemonHandle, DaemonError> {
    start_with_leadership(config, reloads, shutdown, None).await
}

/// As [`start`]; with `leadership` (from `leader::LeaderHandle::watch`) the daemon serves ESMEs
/// and binds upstream only while it is `true` (active/standby), and stands by otherwise.
pub async fn start_with_leadership(
    config: Arc<SmscdConfig>,
    mut reloads: watch::Receiver<Arc<SmscdConfig>>,
    shutdown: CancellationToken,
    leadership: Option<watch::Receiver<bool>>,
) -> Result<DaemonHandle, DaemonError> {
    let crate::store::Built { store, memory, queue } =
        crate::store::build(&config.store, &crate::store::redis::default_identity())
            .map_err(|e| DaemonError::Store(e.to_string()))?;
    let plain = match config.server.plain_listener {
        true => {
            let at = listen_addr(&config.server.bind_address, config.server.port);
            let l = TcpListener::bind(&at)
                .await
                .map_err(|source| DaemonError::Listen { addr: at.clone(), source })?;
            let a = l.local_addr().map_err(|source| DaemonError::Listen { addr: at, source })?;
            Some((l, a))
        }
        false => None,
    };
    let admin_at = listen_addr(&config.admin.bind_address, config.admin.port);
    let admin_listener = TcpListener::bind(&admin_at)
        .await
        .map_err(|source| DaemonError::Admin { addr: admin_at.clone(), source })?;
    let admin_addr =
        admin_listener.local_addr().map_err(|source| DaemonError::Admin { addr: admin_at, source })?;
    let mut tls_state: Option<Arc<TlsState>> = None;
    let tls = match &config.server.tls {
        Some(t) => {
            let loaded = crate::tls::ServerTls::load(t).map_err(|e| DaemonError::Tls(e.to_string()))?;
            let acceptor = Arc::new(Live::new(loaded.acceptor()));
            tls_state = Some(Arc::new(TlsState { files: Mutex::new(loaded), acceptor: acceptor.clone() }));
            let at = listen_addr(&config.server.bind_address, t.port);
            let l = TcpListener::bind(&at)
                .await
                .map_err(|source| DaemonError::Listen { addr: at.clone(), source })?;
            let a = l.local_addr().map_err(|source| DaemonError::Listen { addr: at, source })?;
            Some((l, a, acceptor))
        }
        None => None,
    };
    let tls_addr = tls.as_ref().map(|(_, a, _)| *a);
    let plain_addr = plain.as_ref().map(|(_, a)| *a);
    // Validation refuses a config with neither listener.
    let Some(smpp_addr) = plain_addr.or(tls_addr) else {
        return Err(DaemonError::NoListener);
    };
    let tls_state = tls_state;

    let mut core = Core::new(&config, store).with_queue(queue);
    if let Some(h) = &config.handlers {
        let started =
            crate::handlers::Handlers::start(h, &config.store, &core.metrics, core.stop.clone()).await;
        core.handlers = Some(started.map_err(|e| DaemonError::Handlers(e.to_string()))?);
    }
    let core = Arc::new(core);
    let sessions = Arc::new(Sessions::default());
    let drain = CancellationToken::new();
    let stop_accepting = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let control = Arc::new(tokio::sync::Mutex::new(()));
    let http = crate::http::start(&core, &config, admin_stop.clone()).await?;
    let http_addr = http.as_ref().map(|h| h.addr);

    apply_accounts(&core, &sessions, &config).await;
    let leader_task = match leadership {
        Some(rx) => {
            core.active.store(false, Ordering::Release);
            // Follows until the very end, so a Lease lost during the drain still stops us acting.
            let follow =
                follow_leadership(core.clone(), sessions.clone(), control.clone(), rx, core.stop.clone());
            Some(tokio::spawn(follow))
        }
        None => {
            core.upstreams.apply(&core, &config.binds, retire_after(&config));
            None
        }
    };
    let sim_task = tokio::spawn(crate::sim::run(core.clone(), drain.clone()));
    let forward_task = tokio::spawn(crate::forward::run(core.clone()));
    let house_task = tokio::spawn(housekeeping(core.clone(), memory));
    let admin_task = tokio::spawn(crate::admin::serve(core.clone(), admin_listener, admin_stop.clone()));
    let slots = crate::inbound::connection_slots(&core);
    let listen_task = plain.map(|(listener, _)| {
        tokio::spawn(crate::inbound::serve_with(
            core.clone(),
            sessions.clone(),
            listener,
            stop_accepting.clone(),
            None,
            slots.clone(),
        ))
    });
    let tls_task = tls.map(|(l, _, acceptor)| {
        let serve = crate::inbound::serve_with(
            core.clone(),
            sessions.clone(),
            l,
            stop_accepting.clone(),
            Some(acceptor),
            slots,
        );
        tokio::spawn(serve)
    });
    core.ready.store(true, Ordering::Relaxed);
    info!(%smpp_addr, %admin_addr, "smscd running");

    let c = core.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = reloads.changed() => {
                    if changed.is_err() {
                        // No more reloads; keep running until shutdown.
                        shutdown.cancelled().await;
                        break;
                    }
                    let cfg = reloads.borrow_and_update().clone();
                    apply(&c, &sessions, &control, &cfg).await;
                    if let Some(t) = &tls_state {
                        t.refresh(&cfg);
                    }
                }
            }
        }
        let drain_for = Duration::from_secs(c.config.get().shutdown.drain_secs.max(1));
        info!(?drain_for, "shutting down: draining");
        c.draining.store(true, Ordering::Relaxed);
        stop_accepting.cancel();
        if let Some(t) = listen_task {
            let _ = t.await;
        }
        if let Some(t) = tls_task {
            let _ = t.await;
        }
        drain.cancel();
        let work = drain_for.mul_f64(0.8);
        let drained = tokio::time::timeout(work, async {
            c.inflight_drained().await;
            while c.sim.pending() > 0 || c.store.pending_total().await.unwrap_or(0) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if drained.is_err() {
            let left = c.store.pending_total().await.unwrap_or(0);
            warn!(inflight = c.inflight(), sim = c.sim.pending(), deliveries = left, "drain time over");
        }
        // Upstreams first, so nothing arrives for ESMEs already gone: from here a receipt or MO
        // is refused (transient) and the carrier redelivers it.
        c.deliveries_closed.store(true, Ordering::Release);
        let reserve = drain_for.mul_f64(0.2);
        c.upstreams.stop_all(reserve.mul_f64(0.5)).await;
        let last = tokio::time::timeout(reserve.mul_f64(0.25), async {
            while c.store.pending_total().await.unwrap_or(0) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        if last.await.is_err() {
            warn!("deliveries queued as the upstreams unbound did not all go out");
        }
        sessions.unbind_within(reserve.mul_f64(0.25)).await;
        c.ready.store(false, Ordering::Relaxed);
        c.stop.cancel();
        admin_stop.cancel();
        let _ = tokio::join!(sim_task, house_task, admin_task, forward_task);
        if let Some(h) = http {
            // Bounded: a client holding a connection open must not hold up the exit.
            let _ = tokio::time::timeout(Duration::from_secs(5), h.task).await;
        }
        if let Some(t) = leader_task {
            let _ = t.await;
        }
        info!("smscd stopped");
    });
    Ok(DaemonHandle { smpp_addr, plain_addr, tls_addr, admin_addr, http_addr, core, task })
}

async fn apply_accounts(core: &Arc<Core>, sessions: &Sessions, cfg: &SmscdConfig) {
    let (added, removed) = core.accounts.apply(&cfg.accounts);
    for a in added {
        tokio::spawn(crate::delivery::run(core.clone(), a));
    }
    for a in removed {
        info!(account = %a.system_id, "account removed: unbinding its sessions");
        sessions.unbind(Some(&a.system_id)).await;
    }
}

/// How long an upstream out of routing stays bound receive-only: until the correlations of
/// the messages it accepted expire, after which no receipt of theirs can be matched.
fn retire_after(cfg: &SmscdConfig) -> Duration {
    match &cfg.store {
        StoreConfig::Memory { ttl } | StoreConfig::Redis { ttl, .. } => *ttl,
    }
}

/// Apply a reloaded config to the running daemon.
async fn apply(core: &Arc<Core>, sessions: &Sessions, control: &tokio::sync::Mutex<()>, cfg: &SmscdConfig) {
    let old = core.config.get();
    if old.server != cfg.server || old.admin != cfg.admin || old.store != cfg.store {
        warn!("server, admin and store settings change only on restart");
    }
    core.config.set(cfg.clone());
    core.router.set(Router::new(&cfg.routing));
    core.sim.set_config(cfg.sim.clone());
    match (&core.handlers, &cfg.handlers) {
        (Some(h), Some(c)) => h.reconfigure(c),
        (None, None) => {}
        _ => warn!("adding or removing the handlers section takes a restart"),
    }
    apply_accounts(core, sessions, cfg).await;
    // Under the lock: a step-down either ran before (then we are not active) or waits for us.
    let _ordered = control.lock().await;
    if core.is_active() {
        core.upstreams.apply(core, &cfg.binds, retire_after(cfg));
    }
    core.metrics.reloads.get_or_create(&ResultLabel { result: "applied".into() }).inc();
    info!("config reloaded");
}

/// Expire correlations and refresh the gauges.
async fn housekeeping(core: Arc<Core>, memory: Option<Arc<MemoryStore>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = core.stop.cancelled() => return,
        }
        if last_sweep.elapsed() >= Duration::from_secs(60) {
            last_sweep = tokio::time::Instant::now();
            let gone = memory.as_ref().map_or(0, |m| m.sweep());
            if gone > 0 {
                info!(gone, "expired correlations");
            }
        }
        for a in core.accounts.all() {
            let p = core.store.pending(&a.system_id).await.unwrap_or(0);
            core.metrics
                .pending_receipts
                .get_or_create(&AccountLabel { account: a.system_id.clone() })
                .set(p as i64);
        }
        let c = core.store.correlations().await.unwrap_or(0);
        core.metrics.correlations.set(c as i64);
        core.metrics.store_up.set(i64::from(core.store.healthy()));
        // The store counts failovers it followed; the counter catches up with it.
        let failovers = core.store.failovers();
        let seen = core.metrics.store_failovers.get();
        if failovers > seen {
            core.metrics.store_failovers.inc_by(failovers - seen);
        }
    }
}

/// Active/standby: act only while this replica holds the Lease. On losing it (or the elector
/// ending) stop at once: refuse binds, unbind ESMEs and upstreams, and drop the connections of
/// any not unbound in half the step-down budget (`leader_election.step_down_secs`), which
/// validation keeps below the gap between the renew deadline and the lease duration.
async fn follow_leadership(
    core: Arc<Core>,
    sessions: Arc<Sessions>,
    control: Arc<tokio::sync::Mutex<()>>,
    mut rx: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    loop {
        let leading = *rx.borrow_and_update();
        {
            let _ordered = control.lock().await;
            // Not once draining: a Lease won during the drain must not bind anything anew.
            if leading && !core.is_active() && !core.is_draining() {
                info!("leadership acquired: binding upstream and serving ESMEs");
                core.active.store(true, Ordering::Release);
                let cfg = core.config.get();
                core.upstreams.apply(&core, &cfg.binds, retire_after(&cfg));
            } else if !leading && core.is_active() {
                warn!("leadership lost: standing by (ESME sessions dropped, upstream unbound)");
                step_down(&core, &sessions).await;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = rx.changed() => {
                if changed.is_err() {
                    // The elector ended (shutdown): stand by unless already draining.
                    let _ordered = control.lock().await;
                    if core.is_active() && !core.is_draining() {
                        step_down(&core, &sessions).await;
                    }
                    return;
                }
            }
        }
    }
}

/// Stop acting and close every bind within the step-down budget: unbind, and after half of it
/// drop the connections still open.
async fn step_down(core: &Core, sessions: &Sessions) {
    core.active.store(false, Ordering::Release);
    let budget = core.config.get().leader_election.as_ref().map_or(Duration::from_secs(3), |l| l.step_down());
    let started = tokio::time::Instant::now();
    tokio::join!(sessions.unbind_within(budget / 2), core.upstreams.stop_all(budget / 2));
    let took = started.elapsed();
    if took > budget {
        warn!(?took, ?budget, "stepping down took longer than its budget");
    } else {
        info!(?took, "stepped down: every bind closed");
    }
}

/// The TLS listener's certificate, re-read on reload: the reload watcher republishes the config
/// when the certificate files change, and a changed file or setting swaps the acceptor that new
/// connections use. A bad new certificate is logged and the old one keeps serving.
struct TlsState {
    files: Mutex<crate::tls::ServerTls>,
    acceptor: Arc<Live<crate::tls::TlsAcceptor>>,
}

impl TlsState {
    fn refresh(&self, cfg: &SmscdConfig) {
        let Some(settings) = &cfg.server.tls else { return };
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        match files.refresh(settings) {
            Ok(true) => {
                self.acceptor.set(files.acceptor());
                info!("TLS certificate reloaded");
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "TLS certificate not reloaded: the old one keeps serving"),
        }
    }
}
