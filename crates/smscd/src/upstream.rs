//! Upstream SMSCs we bind to as an ESME: `binds` supervised sessions per upstream (connect,
//! bind, keepalive by the session, reconnect with jittered exponential backoff), submits spread
//! round-robin over the bound sessions within each session's window and the upstream's rate.
//!
//! `max_msg_per_sec` is one rate for the bind across all its sessions (on this replica), paced
//! rather than bucketed: sends are spaced 1/rate apart, so the carrier never counts more than
//! the rate in any second, however many sessions are configured or up. A submit that finds every
//! window slot taken waits on the sessions' window semaphores (first come, first served) until
//! a slot frees or its wait ends.
//!
//! With `max_binds`, each session holds a bind permit while bound (crate::permits), so the
//! carrier never sees more than `max_binds` binds of this account from all replicas together.

use crate::core::Core;
use crate::permits::Permit;
use crate::throttle::Pacer;
use bytes::Bytes;
use futures::FutureExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use smpp::session::{
    esme, BindKind, Handler, Reply, Request, Reserved, Session, SessionConfig, SessionError,
};
use smpp::{Bind, Body, CommandStatus, DeliverSm, DeliverSmResp, Pdu, SubmitSm};
use smsc_api::smscd_config::{BindConfig, BindType};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long an upstream that answered ESME_RTHROTTLED / ESME_RMSGQFUL is skipped.
const BACKOFF_ON_THROTTLE: Duration = Duration::from_millis(500);
/// How long a submit waits for a free window slot (or its turn under the rate) before moving
/// on, within its own budget.
const WINDOW_WAIT: Duration = Duration::from_secs(2);
/// A bind that lasted this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a stopping upstream's sessions get to unbind before their connections are dropped
/// (reloads and shutdown; a step-down uses its own budget).
pub const UNBIND_LIMIT: Duration = Duration::from_secs(5);
/// After its sessions were dropped, how long a supervisor gets to notice before it is aborted.
const ABORT_GRACE: Duration = Duration::from_millis(200);

/// Why a submit to this target did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitFailure {
    /// Try the next target of the chain (down, throttled, full, transient error).
    MoveOn(CommandStatus),
    /// Sent, and no answer by its deadline: the upstream may have taken it. Another target
    /// would risk a duplicate, so the ESME gets a transient error instead.
    Unknown,
    /// The upstream refused the message itself: answer the ESME with this.
    Final(CommandStatus),
}

/// Statuses after which the next target is tried: the upstream is busy or broken, the message
/// is not at fault. Everything else (invalid address, ...) goes back to the ESME.
pub fn moves_on(s: CommandStatus) -> bool {
    s.is_transient()
        || matches!(
            s,
            CommandStatus::ESME_RSUBMITFAIL
                | CommandStatus::ESME_RINVBNDSTS
                | CommandStatus::ESME_RUNKNOWNERR
        )
}

pub struct Upstream {
    pub name: Arc<str>,
    pub cfg: BindConfig,
    sessions: RwLock<Vec<(u64, Session)>>,
    rr: AtomicUsize,
    base: Instant,
    backoff_until_ms: AtomicU64,
    throttle: Pacer,
    /// `max_msg_per_sec` and `window` as last applied (a reload changes them in place).
    limits: Mutex<(Option<u32>, usize)>,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Handles of the per-message series (made on first use, so /metrics shows them only then).
    rtt: OnceLock<Histogram>,
    submitted_ok: OnceLock<Counter>,
    /// Sessions waiting for a bind permit (`max_binds`, see crate::permits).
    waiting_permit: AtomicUsize,
    /// Whose permits this upstream's sessions hold (crate::permits::holder_base).
    permit_holder: String,
}

impl Upstream {
    fn new(cfg: BindConfig, parent: &CancellationToken) -> Upstream {
        Upstream {
            name: cfg.name.as_str().into(),
            permit_holder: crate::permits::holder_base(&cfg.name),
            // One rate for the bind, whatever number of its sessions is up.
            throttle: Pacer::new(cfg.max_msg_per_sec),
            limits: Mutex::new((cfg.max_msg_per_sec, cfg.window)),
            cfg,
            sessions: RwLock::new(Vec::new()),
            rr: AtomicUsize::new(0),
            base: Instant::now(),
            backoff_until_ms: AtomicU64::new(0),
            cancel: parent.child_token(),
            tasks: Mutex::new(Vec::new()),
            rtt: OnceLock::new(),
            submitted_ok: OnceLock::new(),
            waiting_permit: AtomicUsize::new(0),
        }
    }

    /// The config this upstream runs with now (`cfg` with limits changed in place since).
    fn current(&self) -> BindConfig {
        let mut c = self.cfg.clone();
        (c.max_msg_per_sec, c.window) = *self.limits.lock().unwrap_or_else(|p| p.into_inner());
        c
    }

    /// Apply a new `max_msg_per_sec` and `window` to the running sessions (sessions bound
    /// later take them from [`current`](Self::current)).
    fn set_limits(&self, rate: Option<u32>, window: usize) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = (rate, window);
        self.throttle.set_rate(rate);
        for (_, s) in self.sessions.read().unwrap_or_else(|p| p.into_inner()).iter() {
            s.set_window(window.max(1));
        }
    }

    /// Free window slots over the bound sessions.
    pub fn free_slots(&self) -> usize {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, s)| s.window_available())
            .sum()
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    pub fn bound_sessions(&self) -> usize {
        self.sessions.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// No session bound, and at least one waiting for a bind permit: every bind the carrier
    /// allows is held elsewhere (or the store cannot say), so this replica cannot submit here.
    pub fn starved(&self) -> bool {
        self.waiting_permit.load(Ordering::Acquire) > 0 && self.bound_sessions() == 0
    }

    /// A window slot on one of the bound sessions, round-robin from the next start.
    fn reserve(&self) -> Option<Reserved> {
        let sessions = self.sessions.read().unwrap_or_else(|p| p.into_inner());
        let n = sessions.len();
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| sessions[(start + i) % n].1.try_reserve().ok())
    }

    /// A window slot on one of the bound sessions, waiting until `until` for one to free.
    async fn reserve_until(&self, until: tokio::time::Instant) -> Result<Reserved, SubmitFailure> {
        if let Some(slot) = self.reserve() {
            return Ok(slot);
        }
        let live: Vec<Session> = {
            let sessions = self.sessions.read().unwrap_or_else(|p| p.into_inner());
            sessions.iter().filter(|(_, s)| s.close_reason().is_none()).map(|(_, s)| s.clone()).collect()
        };
        if live.is_empty() {
            return Err(SubmitFailure::MoveOn(CommandStatus::ESME_RSYSERR));
        }
        // Queued on every session's window at once; the first slot to free is ours, and the
        // other waits are dropped (a dropped semaphore wait takes nothing).
        let waits = live.iter().map(|s| Box::pin(s.reserve()));
        let first = tokio::time::timeout_at(until, futures::future::select_ok(waits)).await;
        match first {
            Ok(Ok((slot, _))) => Ok(slot),
            // Every session ended while we waited.
            Ok(Err(_)) => Err(SubmitFailure::MoveOn(CommandStatus::ESME_RSYSERR)),
            Err(_) => Err(SubmitFailure::MoveOn(CommandStatus::ESME_RMSGQFUL)),
        }
    }

    /// Submit through one of the bound sessions; Ok is the upstream's message id. Every wait
    /// (window slot, rate) ends by `send_by` at the latest, and the upstream must answer by then.
    pub async fn submit(
        &self,
        core: &Core,
        sm: SubmitSm,
        send_by: tokio::time::Instant,
    ) -> Result<String, SubmitFailure> {
        if !self.cfg.bind_type.can_submit() {
            return Err(SubmitFailure::MoveOn(CommandStatus::ESME_RINVBNDSTS));
        }
        if self.now_ms() < self.backoff_until_ms.load(Ordering::Relaxed) {
            return Err(SubmitFailure::MoveOn(CommandStatus::ESME_RTHROTTLED));
        }
        let wait_until = send_by.min(tokio::time::Instant::now() + WINDOW_WAIT);
        let slot = self.reserve_until(wait_until).await?;
        // The slot first, then the turn: a send never waits for a slot after its turn came, so
        // sends cannot bunch up behind a full window.
        let max_wait = wait_until.saturating_duration_since(tokio::time::Instant::now());
        let Some(wait) = self.throttle.book(max_wait) else {
            self.count(core, "throttled_local");
            return Err(SubmitFailure::MoveOn(CommandStatus::ESME_RTHROTTLED));
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let sent = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        slot.send_with_deadline(Body::SubmitSm(sm), Some(send_by), Box::new(move |_, r| drop(tx.send(r))));
        let r =
            rx.await.unwrap_or_else(|_| Err(SessionError::Closed(smpp::session::CloseReason::LocalClose)));
        self.outcome(core, sent, r)
    }

    /// The fast path of [`submit`](Self::submit), without a task: when a bound session has a free
    /// window slot (and the upstream is neither backing off nor over its rate), queue the submit
    /// there and return; `done` gets `ctx`, the body back and the outcome, on that session's task.
    /// Otherwise `body` and `ctx` come back at once, for the caller to take the waiting path.
    // The body comes back by value: boxing it would cost an allocation per submit instead.
    #[allow(clippy::result_large_err)]
    pub fn try_submit_with<C: Send + 'static>(
        self: &Arc<Self>,
        core: &Arc<Core>,
        body: Body,
        send_by: tokio::time::Instant,
        ctx: C,
        done: fn(C, Body, Result<String, SubmitFailure>),
    ) -> Result<(), (Body, C)> {
        if !self.cfg.bind_type.can_submit() || self.now_ms() < self.backoff_until_ms.load(Ordering::Relaxed) {
            return Err((body, ctx));
        }
        let Some(slot) = self.reserve() else { return Err((body, ctx)) };
        // Not our turn yet: the waiting path waits for it (or counts the refusal).
        if self.throttle.book(Duration::ZERO).is_none() {
            return Err((body, ctx));
        }
        let up = Arc::clone(self);
        let core = Arc::clone(core);
        let sent = Instant::now();
        slot.send_with_deadline(
            body,
            Some(send_by),
            Box::new(move |body, r| {
                let outcome = up.outcome(&core, sent, r);
                done(ctx, body, outcome);
            }),
        );
        Ok(())
    }

    /// What an upstream's answer (or the lack of one) means for the submit; counts it.
    fn outcome(
        &self,
        core: &Core,
        sent: Instant,
        r: Result<Pdu, SessionError>,
    ) -> Result<String, SubmitFailure> {
        let resp = match r {
            Ok(resp) => resp,
            Err(SessionError::Timeout(after)) => {
                debug!(upstream = %self.name, ?after, "submit not answered in time: outcome unknown");
                self.count(core, "timeout");
                return Err(SubmitFailure::Unknown);
            }
            Err(e) => {
                // Not sent, or the connection went down under it: the next target takes it.
                debug!(upstream = %self.name, error = %e, "submit failed");
                self.count(core, "error");
                return Err(SubmitFailure::MoveOn(CommandStatus::ESME_RSYSERR));
            }
        };
        let rtt = self.rtt.get_or_init(|| {
            let label = crate::metrics::UpstreamLabel { upstream: self.name.to_string() };
            core.metrics.upstream_rtt.get_or_create(&label).clone()
        });
        rtt.observe(sent.elapsed().as_secs_f64());
        let status = resp.command_status;
        if status.is_ok() {
            self.submitted_ok.get_or_init(|| self.counter(core, "ESME_ROK")).inc();
            return match resp.body {
                Body::SubmitSmResp(r) => Ok(String::from_utf8_lossy(&r.message_id).into_owned()),
                _ => Err(SubmitFailure::MoveOn(CommandStatus::ESME_RSYSERR)),
            };
        }
        self.count(core, &crate::metrics::status_name(status));
        if matches!(status, CommandStatus::ESME_RTHROTTLED | CommandStatus::ESME_RMSGQFUL) {
            let until = self.now_ms() + BACKOFF_ON_THROTTLE.as_millis() as u64;
            self.backoff_until_ms.fetch_max(until, Ordering::Relaxed);
        }
        Err(if moves_on(status) { SubmitFailure::MoveOn(status) } else { SubmitFailure::Final(status) })
    }

    fn counter(&self, core: &Core, status: &str) -> Counter {
        let l = crate::metrics::UpstreamSubmitLabels {
            upstream: self.name.to_string(),
            status: status.to_owned(),
        };
        core.metrics.upstream_submits.get_or_create(&l).clone()
    }

    fn count(&self, core: &Core, status: &str) {
        self.counter(core, status).inc();
    }

    /// Out of routing already: stay bound receive-only for `keep` (the receipts it owes for
    /// accepted submits still arrive on these binds), or until stopped, then unbind.
    async fn retire(&self, keep: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(keep) => {}
            _ = self.cancel.cancelled() => {}
        }
        self.stop(UNBIND_LIMIT).await;
    }

    /// Unbind every session and end the supervisors. Sessions not unbound within `limit` (a peer
    /// that does not answer, or stopped reading) have their connections dropped.
    pub async fn stop(&self, limit: Duration) {
        self.cancel.cancel();
        let mut tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        if tokio::time::timeout(limit, futures::future::join_all(tasks.iter_mut())).await.is_ok() {
            return;
        }
        warn!(upstream = %self.name, ?limit, "upstream not unbound in time: dropping its connections");
        for (_, s) in self.sessions.read().unwrap_or_else(|p| p.into_inner()).iter() {
            s.abort();
        }
        // Each supervisor sees its session end at once and returns; one that does not is aborted.
        if tokio::time::timeout(ABORT_GRACE, futures::future::join_all(tasks.iter_mut())).await.is_err() {
            tasks.iter().for_each(JoinHandle::abort);
            self.sessions.write().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// Whether it has stopped (or is stopping).
    fn is_stopped(&self) -> bool {
        self.cancel.is_cancelled() && self.tasks.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }
}

/// What a reload does to a running upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Same,
    /// Only `max_msg_per_sec` and/or `window` changed: applied to the running sessions.
    InPlace,
    /// Same carrier account (host, port, system_id), other settings: new sessions replace the
    /// old ones, which unbind at once (the carrier sends the receipts the old ones owed to
    /// the new binds of the same account).
    Rebind,
    /// Another carrier or account: the old binds stay bound receive-only until the receipts
    /// they owe could still come (the store's correlation ttl), beside the new ones.
    Repoint,
}

pub fn change(old: &BindConfig, new: &BindConfig) -> Change {
    if old == new {
        return Change::Same;
    }
    let limits_only = BindConfig { max_msg_per_sec: new.max_msg_per_sec, window: new.window, ..old.clone() };
    if limits_only == *new {
        Change::InPlace
    } else if (old.host.as_str(), old.port, old.system_id.as_str())
        == (new.host.as_str(), new.port, new.system_id.as_str())
    {
        Change::Rebind
    } else {
        Change::Repoint
    }
}

/// Every configured upstream, and the ones a reload took out of routing that are still bound.
#[derive(Default)]
pub struct Upstreams {
    map: RwLock<HashMap<String, Arc<Upstream>>>,
    root: CancellationToken,
    retiring: Mutex<Vec<Arc<Upstream>>>,
}

impl Upstreams {
    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Upstream>> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// The first upstream with no session bound because it waits for bind permits, if any.
    pub fn starved(&self) -> Option<Arc<str>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|u| u.starved())
            .map(|u| u.name.clone())
    }

    /// Sessions still bound of upstreams out of routing (removed or re-pointed by a reload).
    pub fn retiring_sessions(&self) -> usize {
        let r = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().map(|u| u.bound_sessions()).sum()
    }

    /// Bring the running upstreams in line with `cfgs` without waiting for any unbind (a reload
    /// must never hold up SIGTERM or a step-down): unchanged ones stay bound, rate changes apply
    /// in place, new ones start; changed and removed ones leave routing at once and unbind in
    /// the background, removed and re-pointed ones only after `keep` (see [`Change`]).
    pub fn apply(&self, core: &Arc<Core>, cfgs: &[BindConfig], keep: Duration) {
        let mut retire = Vec::new();
        let mut start = Vec::new();
        {
            let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
            let wanted: HashMap<&str, &BindConfig> = cfgs.iter().map(|c| (c.name.as_str(), c)).collect();
            map.retain(|name, u| {
                let Some(new) = wanted.get(name.as_str()) else {
                    info!(upstream = %u.name, ?keep, "upstream removed: receive-only until its receipts are due");
                    retire.push((u.clone(), keep));
                    return false;
                };
                match change(&u.current(), new) {
                    Change::Same => true,
                    Change::InPlace => {
                        info!(upstream = %u.name, rate = ?new.max_msg_per_sec, window = new.window, "upstream limits changed in place");
                        u.set_limits(new.max_msg_per_sec, new.window);
                        true
                    }
                    Change::Rebind => {
                        info!(upstream = %u.name, "upstream changed: re-binding");
                        retire.push((u.clone(), Duration::ZERO));
                        false
                    }
                    Change::Repoint => {
                        info!(upstream = %u.name, ?keep, "upstream re-pointed: old binds receive-only until their receipts are due");
                        retire.push((u.clone(), keep));
                        false
                    }
                }
            });
            for cfg in cfgs {
                if !map.contains_key(&cfg.name) {
                    let u = Arc::new(Upstream::new(cfg.clone(), &self.root));
                    map.insert(cfg.name.clone(), u.clone());
                    start.push(u);
                }
            }
        }
        {
            let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
            retiring.retain(|u| !u.is_stopped());
            for (u, keep) in retire {
                retiring.push(u.clone());
                tokio::spawn(async move { u.retire(keep).await });
            }
        }
        for u in start {
            info!(upstream = %u.name, host = %u.cfg.host, port = u.cfg.port, binds = u.cfg.binds, "starting upstream");
            let mut tasks = u.tasks.lock().unwrap_or_else(|p| p.into_inner());
            for slot in 0..u.cfg.binds.max(1) {
                tasks.push(tokio::spawn(supervise(Arc::downgrade(core), u.clone(), slot)));
            }
        }
    }

    /// Unbind everything, retiring binds included, all at once; connections not unbound within
    /// `limit` are dropped.
    pub async fn stop_all(&self, limit: Duration) {
        let mut all: Vec<_> =
            self.map.write().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, u)| u).collect();
        all.append(&mut self.retiring.lock().unwrap_or_else(|p| p.into_inner()));
        futures::future::join_all(all.iter().map(|u| u.stop(limit))).await;
    }
}

fn kind(t: BindType) -> BindKind {
    match t {
        BindType::Transmitter => BindKind::Transmitter,
        BindType::Receiver => BindKind::Receiver,
        BindType::Transceiver => BindKind::Transceiver,
    }
}

fn session_config(cfg: &BindConfig) -> SessionConfig {
    SessionConfig {
        window: cfg.window.max(1),
        inbound_window: 256,
        request_timeout: Duration::from_secs(15),
        bind_timeout: Duration::from_secs(10),
        enquire_link_interval: Duration::from_secs(cfg.enquire_link_secs.max(1)),
        ..SessionConfig::default()
    }
}

/// Connect (over TLS when the bind has `tls`), bind, start the session.
async fn connect(
    cfg: &BindConfig,
    bind: Bind,
    handler: UpstreamHandler,
) -> Result<(Session, smpp::BindResp), SessionError> {
    let scfg = session_config(cfg);
    let addr = (cfg.host.clone(), cfg.port);
    let Some(tls) = &cfg.tls else {
        return esme::connect(addr, kind(cfg.bind_type), bind, scfg, handler).await;
    };
    let tls_err = |e: crate::tls::TlsError| SessionError::Protocol(format!("TLS: {e}"));
    let client = crate::tls::client_config(tls).map_err(tls_err)?;
    let name = crate::tls::server_name(cfg).map_err(tls_err)?;
    let limit = scfg.bind_timeout;
    let tcp = tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| SessionError::BindTimeout(limit))??;
    tcp.set_nodelay(true)?;
    let stream = tokio::time::timeout(limit, crate::tls::TlsConnector::from(client).connect(name, tcp))
        .await
        .map_err(|_| SessionError::BindTimeout(limit))??;
    esme::bind(stream, kind(cfg.bind_type), bind, scfg, handler).await
}

/// Keep one session of `u` bound until the upstream is stopped.
async fn supervise(core: Weak<Core>, u: Arc<Upstream>, slot: usize) {
    let label = crate::metrics::UpstreamLabel { upstream: u.name.to_string() };
    let min = u.cfg.reconnect.min_ms.max(1);
    let max = u.cfg.reconnect.max_ms.max(min);
    let mut delay = min;
    let session_id_base = (slot as u64) << 48;
    let mut attempt: u64 = 0;
    while !u.cancel.is_cancelled() {
        attempt += 1;
        let Some(c) = core.upgrade() else { return };
        let handler = UpstreamHandler {
            core: Arc::downgrade(&c),
            name: u.name.clone(),
            id_format: crate::receipts::id_format(u.cfg.message_id_format),
            view: session_view(&u),
        };
        drop(c);
        let bind = Bind {
            system_id: Bytes::from(u.cfg.system_id.clone()),
            password: Bytes::from(u.cfg.password.clone()),
            system_type: Bytes::from(u.cfg.system_type.clone()),
            ..Bind::default()
        };
        let current = u.current();
        let permit = match current.max_binds {
            None => None,
            Some(max) => {
                let Some(c) = core.upgrade() else { return };
                let store = c.store.clone();
                let waits = c.metrics.upstream_permit_waits.get_or_create(&label).clone();
                let ttl = crate::permits::ttl(
                    c.config.get().leader_election.as_ref().map(|l| l.lease_duration_secs),
                );
                drop(c);
                let waiting = |w: bool| {
                    if w {
                        u.waiting_permit.fetch_add(1, Ordering::AcqRel);
                        waits.inc();
                    } else {
                        u.waiting_permit.fetch_sub(1, Ordering::AcqRel);
                        waits.dec();
                    }
                };
                let carrier = crate::permits::carrier(&current);
                let holder = format!("{}/{slot}", u.permit_holder);
                match Permit::acquire(store, carrier, max, holder, ttl, &u.cancel, waiting).await {
                    Some(p) => Some(p),
                    None => break,
                }
            }
        };
        let connect = connect(&current, bind, handler);
        let res = tokio::select! {
            r = connect => r,
            _ = u.cancel.cancelled() => {
                release(permit).await;
                break;
            }
        };
        match res {
            Ok((session, _)) => {
                let id = session_id_base | attempt;
                info!(upstream = %u.name, slot, "upstream bound");
                u.sessions.write().unwrap_or_else(|p| p.into_inner()).push((id, session.clone()));
                if let Some(c) = core.upgrade() {
                    c.metrics.upstream_binds.get_or_create(&label).inc();
                }
                let bound_at = Instant::now();
                let reason = tokio::select! {
                    r = session.closed() => r,
                    _ = u.cancel.cancelled() => session.unbind().await,
                    // Another holder has our permit: the carrier may count one bind too many.
                    _ = lost(&permit) => session.unbind().await,
                };
                u.sessions.write().unwrap_or_else(|p| p.into_inner()).retain(|(i, _)| *i != id);
                if let Some(c) = core.upgrade() {
                    c.metrics.upstream_binds.get_or_create(&label).dec();
                }
                info!(upstream = %u.name, slot, %reason, "upstream session ended");
                if bound_at.elapsed() >= STABLE_AFTER {
                    delay = min;
                }
            }
            Err(e) => warn!(upstream = %u.name, slot, error = %e, "upstream bind failed"),
        }
        // Unbound (or never bound): the permit goes back, so a session that can bind gets it.
        release(permit).await;
        if u.cancel.is_cancelled() {
            break;
        }
        // Full jitter in [delay/2, delay]: binds of many replicas do not stampede.
        let wait = delay / 2 + fastrand::u64(0..=delay / 2);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = u.cancel.cancelled() => break,
        }
        delay = (delay.saturating_mul(2)).min(max);
    }
}

async fn release(permit: Option<Permit>) {
    if let Some(p) = permit {
        p.release().await;
    }
}

/// Resolves when the permit is lost; never without one.
async fn lost(permit: &Option<Permit>) {
    match permit {
        Some(p) => p.lost().await,
        None => std::future::pending().await,
    }
}

/// Inbound requests on an upstream session: deliver_sm (receipts, MO).
struct UpstreamHandler {
    core: Weak<Core>,
    name: Arc<str>,
    /// How this upstream's receipt ids relate to its submit_sm_resp ids.
    id_format: smpp::receipt::MessageIdFormat,
    /// This bind as scripted handlers see it (`session` of `on_pdu("deliver_sm")`).
    view: crate::handlers::SessionView,
}

fn session_view(u: &Upstream) -> crate::handlers::SessionView {
    crate::handlers::SessionView {
        system_id: u.cfg.system_id.clone(),
        client_addr: u.cfg.host.clone(),
        client_port: u.cfg.port,
        bind_type: crate::handlers::bind::kind_name(kind(u.cfg.bind_type)),
        upstream: Some(u.name.clone()),
    }
}

impl Handler for UpstreamHandler {
    fn on_request(&mut self, mut req: Request<'_>) -> Reply {
        // data_sm is a deliver_sm in another layout (see crate::multi), answered data_sm_resp.
        let data = matches!(req.pdu.body, Body::DataSm(_));
        if !data && !matches!(req.pdu.body, Body::DeliverSm(_)) {
            return Reply::Error(CommandStatus::ESME_RINVCMDID);
        }
        let Some(core) = self.core.upgrade() else {
            return Reply::Error(CommandStatus::ESME_RX_T_APPN);
        };
        // Taken out (an empty one of the same kind left in its place keeps the command id
        // `defer` reads).
        let empty =
            if data { Body::DataSm(Default::default()) } else { Body::DeliverSm(DeliverSm::default()) };
        let dsm = match std::mem::replace(&mut req.pdu.body, empty) {
            Body::DeliverSm(dsm) => dsm,
            Body::DataSm(d) => crate::multi::data_to_deliver(d),
            _ => return Reply::Error(CommandStatus::ESME_RSYSERR),
        };
        let ok = move || match data {
            true => Body::DataSmResp(smpp::DataSmResp::default()),
            false => Body::DeliverSmResp(DeliverSmResp::default()),
        };
        let name = self.name.clone();
        let id_format = self.id_format;
        // Scripted on_pdu("deliver_sm" / "data_sm") (handlers/): decided on the handler's thread.
        if let Some((h, hook)) = crate::handlers::deliver::wanted(&core, data) {
            let (_, responder) = req.defer();
            let view = self.view.clone();
            tokio::spawn(async move {
                let hooked = crate::handlers::deliver::Hooked { h, hook, session: view };
                let r = crate::handlers::deliver::deliver(&core, hooked, &name, id_format, dsm).await;
                let sent = match r {
                    Ok(()) => responder.respond(ok()),
                    Err(status) => responder.reject(status),
                };
                if let Err(e) = sent {
                    debug!(upstream = %name, error = %e, "deliver_sm_resp not sent");
                }
            });
            return Reply::Deferred;
        }
        let mut work =
            Box::pin(async move { crate::receipts::on_upstream_deliver(&core, &name, id_format, dsm).await });
        // One poll here: with the memory store it is done at once, answered without a task or
        // a responder; only work still waiting (a shared store, a retried lookup) gets a task.
        match (&mut work).now_or_never() {
            Some(Ok(())) => Reply::Ok(ok()),
            Some(Err(status)) => Reply::Error(status),
            None => {
                let (_, responder) = req.defer();
                let name = self.name.clone();
                tokio::spawn(async move {
                    let r = match work.await {
                        Ok(()) => responder.respond(ok()),
                        Err(status) => responder.reject(status),
                    };
                    if let Err(e) = r {
                        debug!(upstream = %name, error = %e, "deliver_sm_resp not sent");
                    }
                });
                Reply::Deferred
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind() -> BindConfig {
        serde_norway::from_str("{ name: a, host: h, system_id: s }").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn what_a_reload_does_to_a_running_upstream() {
        let old = bind();
        let with = |f: fn(&mut BindConfig)| {
            let mut c = old.clone();
            f(&mut c);
            change(&old, &c)
        };
        assert_eq!(change(&old, &old), Change::Same);
        assert_eq!(with(|c| c.max_msg_per_sec = Some(5)), Change::InPlace);
        assert_eq!(with(|c| c.window = 3), Change::InPlace);
        assert_eq!(with(|c| c.password = "new".into()), Change::Rebind);
        assert_eq!(with(|c| c.binds = 4), Change::Rebind);
        assert_eq!(with(|c| c.host = "other".into()), Change::Repoint);
        assert_eq!(with(|c| c.port = 1), Change::Repoint);
        assert_eq!(with(|c| c.system_id = "other".into()), Change::Repoint);
    }
}
