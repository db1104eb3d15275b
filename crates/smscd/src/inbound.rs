//! The SMPP listener and the ESME sessions: connection cap, bind decision, and the inline
//! submit handler (sim answered on the session task; upstream routes deferred to a task).

use crate::accounts::{AccountState, BindSlot};
use crate::core::Core;
use crate::handlers::BindVerdict;
use crate::live::Cached;
use crate::live::Live;
use crate::metrics::AccountLabel;
use crate::router::{Router, Target};
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use smpp::session::{smsc, CloseReason, Handler, Reply, Request, Session, SessionConfig};
use smpp::{Body, CommandStatus, SubmitSmResp};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The system_id in our bind_resp.
pub const SYSTEM_ID: &str = "smscd";

/// Bound ESME sessions, for shutdown and account removal.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<u64, (String, Session)>>,
}

impl Sessions {
    fn insert(&self, id: u64, account: &str, s: Session) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (account.to_owned(), s));
    }
    fn remove(&self, id: u64) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
    fn matching(&self, f: impl Fn(&str) -> bool) -> Vec<Session> {
        let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        m.values().filter(|(a, _)| f(a)).map(|(_, s)| s.clone()).collect()
    }
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Unbind every session of `account` (or every session when None).
    pub async fn unbind(&self, account: Option<&str>) {
        let list = self.matching(|a| account.is_none_or(|x| x == a));
        futures::future::join_all(list.iter().map(|s| s.unbind())).await;
    }

    /// Unbind every session; the connections of those not unbound within `limit` are dropped.
    pub async fn unbind_within(&self, limit: Duration) {
        let list = self.matching(|_| true);
        let unbinds = futures::future::join_all(list.iter().map(|s| s.unbind()));
        if tokio::time::timeout(limit, unbinds).await.is_err() {
            warn!(?limit, "ESME sessions not unbound in time: dropping their connections");
            list.iter().filter(|s| s.close_reason().is_none()).for_each(Session::abort);
        }
    }
}

/// Accept connections until `stop_accepting`; each bound session runs on its own task.
pub async fn serve(
    core: Arc<Core>,
    sessions: Arc<Sessions>,
    listener: TcpListener,
    stop_accepting: CancellationToken,
) {
    let max = core.config.get().server.max_connections.max(1);
    serve_with(core, sessions, listener, stop_accepting, None, Arc::new(Semaphore::new(max))).await
}

/// The connection cap shared by the plain and TLS listeners.
pub fn connection_slots(core: &Core) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(core.config.get().server.max_connections.max(1)))
}

/// Accept connections (TLS ones when `tls` is given) until `stop_accepting`, within `slots`.
pub async fn serve_with(
    core: Arc<Core>,
    sessions: Arc<Sessions>,
    listener: TcpListener,
    stop_accepting: CancellationToken,
    tls: Option<Arc<Live<crate::tls::TlsAcceptor>>>,
    slots: Arc<Semaphore>,
) {
    let max = core.config.get().server.max_connections.max(1);
    let _listening = core.listeners.listening(stop_accepting.clone());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop_accepting.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, max, "connection cap reached: closing");
            drop(stream);
            continue;
        };
        let (per_address, window) = {
            let cfg = core.config.get();
            (cfg.server.max_connections_per_address, Duration::from_secs(cfg.server.failed_bind_window_secs))
        };
        let Some(counted) = core.peers.connect(peer.ip(), per_address, window) else {
            debug!(%peer, per_address, "connections from this address at max_connections_per_address: closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let core = core.clone();
        let sessions = sessions.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            core.metrics.connections.inc();
            match tls {
                None => connection(&core, &sessions, stream, peer).await,
                Some(live) => {
                    // The current certificate: a reload swaps it without touching open sessions.
                    let acceptor = (*live.get()).clone();
                    // The handshake counts against the bind timeout.
                    let limit = Duration::from_secs(core.config.get().server.bind_timeout_secs.max(1));
                    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(&core, &sessions, s, peer).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            core.metrics.connections.dec();
            drop(counted);
            drop(permit);
        });
    }
    info!("listener closed");
}

fn session_config(core: &Core) -> SessionConfig {
    let cfg = core.config.get();
    let handlers_window = cfg.handlers.as_ref().map_or(1, |h| h.window);
    let inbound_window = cfg.accounts.iter().map(|a| a.window).max().unwrap_or(1).max(handlers_window).max(1);
    SessionConfig {
        window: 64,
        inbound_window,
        bind_timeout: Duration::from_secs(cfg.server.bind_timeout_secs.max(1)),
        enquire_link_interval: Duration::from_secs(cfg.server.enquire_link_secs.max(1)),
        // An ESME that unbinds gets every submit_sm_resp still owed first: each is answered
        // within the submit budget, so waiting a little longer than it loses none.
        unbind_drain_timeout: submit_budget(&cfg) + Duration::from_secs(1),
        ..SessionConfig::default()
    }
}

fn submit_budget(cfg: &smsc_api::smscd_config::SmscdConfig) -> Duration {
    Duration::from_millis(cfg.server.submit_timeout_ms.max(1))
}

async fn connection<S>(core: &Arc<Core>, sessions: &Sessions, stream: S, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let incoming = match smsc::accept(stream, Some(peer), session_config(core)).await {
        Ok(i) => i,
        Err(e) => {
            debug!(%peer, error = %e, "no bind");
            return;
        }
    };
    let system_id = String::from_utf8_lossy(&incoming.bind.system_id).into_owned();
    if core.is_draining() || !core.is_active() {
        // Draining, or the standby of an active/standby pair: only the Lease holder serves.
        info!(%peer, system_id, draining = core.is_draining(), "bind refused: not serving");
        let _ = incoming.reject(CommandStatus::ESME_RBINDFAIL).await;
        return;
    }
    let (limit, window) = {
        let cfg = core.config.get();
        (cfg.server.failed_binds_per_address, Duration::from_secs(cfg.server.failed_bind_window_secs))
    };
    if core.peers.bind_blocked(peer.ip(), limit, window) {
        // Not even checked: the address used up its failed binds for this window.
        info!(%peer, system_id, "bind refused: too many failed binds from this address");
        let _ = incoming.reject(CommandStatus::ESME_RBINDFAIL).await;
        return;
    }
    // Scripted on_bind (handlers/): accept or reject here, or leave it to the accounts.
    let mut settings = crate::handlers::bind::Settings::default();
    let decision = match crate::handlers::bind::ask(core, &incoming.bind, incoming.kind, peer).await {
        BindVerdict::Reject(status) => {
            info!(%peer, system_id, %status, "bind refused by on_bind");
            let _ = incoming.reject(status).await;
            return;
        }
        BindVerdict::Accept { window, throttle } => {
            settings = crate::handlers::bind::Settings { window, throttle };
            let default_window = core.handlers.as_ref().map_or(1, |h| h.window());
            core.accounts.admit(&system_id, default_window).map(|(slot, added)| {
                if let Some(a) = added {
                    tokio::spawn(crate::delivery::run(core.clone(), a));
                }
                slot
            })
        }
        BindVerdict::Default => core.accounts.authorize(
            &incoming.bind.system_id,
            &incoming.bind.password,
            incoming.kind,
            Some(peer.ip()),
        ),
    };
    let slot = match decision {
        Ok(s) => s,
        Err(refusal) => {
            if refusal.is_auth_failure() {
                core.peers.bind_failed(peer.ip(), window);
            }
            // The ESME gets the same status whatever was wrong; the log says what.
            info!(%peer, system_id, reason = refusal.as_str(), "bind refused");
            let _ = incoming.reject(refusal.status()).await;
            return;
        }
    };
    let kind = incoming.kind;
    let account = slot.account.clone();
    let mut handler = InboundHandler::new(core.clone(), slot);
    handler.hooks = crate::handlers::bind::SessionHooks::new(core, settings, &system_id, peer, kind);
    let session = match incoming.accept(Bytes::from_static(SYSTEM_ID.as_bytes()), Some(0x34), handler).await {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, error = %e, "bind_resp not sent");
            return;
        }
    };
    let sid = core.accounts.session_id();
    info!(%peer, system_id, ?kind, "ESME bound");
    let label = AccountLabel { account: account.system_id.clone() };
    core.metrics.inbound_binds.get_or_create(&label).inc();
    sessions.insert(sid, &account.system_id, session.clone());
    if kind.can_receive() {
        account.add_receiver(sid, session.clone());
    }
    // A step-down (or the drain) that started after the check above unbinds every session it
    // finds; this one may have been inserted just after it looked. Step-down clears `active`
    // before it looks (and the map's lock orders the two), so one of us sees the other.
    if core.is_draining() || !core.is_active() {
        info!(%peer, system_id, "bound as the replica stopped serving: unbinding");
        session.unbind().await;
    }
    let reason = session.closed().await;
    account.remove_receiver(sid);
    sessions.remove(sid);
    core.metrics.inbound_binds.get_or_create(&label).dec();
    info!(%peer, system_id, %reason, "ESME session ended");
}

/// Answers one ESME session's requests on its session task.
struct InboundHandler {
    core: Arc<Core>,
    account: Arc<AccountState>,
    _slot: BindSlot,
    router: Cached<Router>,
    /// Deferred submits of this session not answered yet.
    inflight: Arc<AtomicUsize>,
    account_name: Arc<str>,
    metrics: Arc<crate::dispatch::SessionMetrics>,
    /// Each relayed submit's time budget (`server.submit_timeout_ms` when the ESME bound).
    submit_budget: Duration,
    sim_ok: Counter,
    /// By route, then status.
    counters: HashMap<String, Vec<(CommandStatus, Counter)>>,
    /// Scripted handlers of this session and what `on_bind` set for it.
    hooks: crate::handlers::bind::SessionHooks,
}

impl InboundHandler {
    fn new(core: Arc<Core>, slot: BindSlot) -> Self {
        let account = slot.account.clone();
        let sim_ok = core.metrics.submit(&account.system_id, "sim", CommandStatus::ESME_ROK);
        let submit_budget = submit_budget(&core.config.get());
        InboundHandler {
            submit_budget,
            router: core.router.cached(),
            core,
            account_name: account.system_id.as_str().into(),
            account,
            _slot: slot,
            inflight: Arc::new(AtomicUsize::new(0)),
            metrics: Arc::default(),
            sim_ok,
            counters: HashMap::new(),
            hooks: Default::default(),
        }
    }

    fn count(&mut self, route: &str, status: CommandStatus) {
        if let Some(c) = self.counters.get(route).and_then(|v| v.iter().find(|(s, _)| *s == status)) {
            c.1.inc();
            return;
        }
        let c = self.core.metrics.submit(&self.account.system_id, route, status);
        c.inc();
        let cached: usize = self.counters.values().map(Vec::len).sum();
        if cached < 64 {
            self.counters.entry(route.to_owned()).or_default().push((status, c));
        }
    }

    /// This session's window: what `on_bind` set, else the account's.
    fn window(&self) -> usize {
        self.hooks.window.unwrap_or_else(|| self.account.window())
    }

    /// A deferred submit's job, one of the session's window slots taken.
    fn job(&self, chain: Arc<[Target]>, responder: smpp::session::Responder) -> crate::dispatch::Job {
        crate::dispatch::Job {
            inflight: crate::dispatch::SessionSlot::take(&self.inflight),
            guard: self.core.inflight_guard(),
            core: self.core.clone(),
            account: self.account_name.clone(),
            chain,
            responder,
            started: Instant::now(),
            budget: crate::dispatch::Budget::new(self.submit_budget),
            metrics: self.metrics.clone(),
        }
    }

    fn submit(&mut self, req: Request<'_>) -> Reply {
        if self.core.is_draining() {
            // Transient: the ESME retries, on another replica or after the restart.
            self.count("none", CommandStatus::ESME_RTHROTTLED);
            return Reply::Error(CommandStatus::ESME_RTHROTTLED);
        }
        if !self.account.throttle.try_take() || !self.hooks.try_take() {
            self.count("none", CommandStatus::ESME_RTHROTTLED);
            return Reply::Error(CommandStatus::ESME_RTHROTTLED);
        }
        // Scripted on_pdu("submit_sm") (handlers/): deferred, decided on the handler's thread.
        if let Some(h) = self.hooks.submit() {
            if self.inflight.load(Ordering::Acquire) >= self.window() {
                self.count("none", CommandStatus::ESME_RMSGQFUL);
                return Reply::Error(CommandStatus::ESME_RMSGQFUL);
            }
            let (pdu, responder) = req.defer();
            let Body::SubmitSm(sm) = pdu.body else { return Reply::Deferred };
            let job = self.job(Arc::from([]), responder);
            crate::handlers::submit::start(h, job, sm, self.hooks.view.clone());
            return Reply::Deferred;
        }
        let Body::SubmitSm(sm) = &req.pdu.body else { return Reply::Error(CommandStatus::ESME_RSYSERR) };
        if let Err(status) = crate::forward::check_times(sm) {
            self.count("none", status);
            return Reply::Error(status);
        }
        if crate::forward::is_scheduled(sm) && crate::forward::holds(&self.core, &self.account_name, sm) {
            return self.hold(req);
        }
        let chain = self
            .core
            .router
            .refresh(&mut self.router)
            .route(&self.account.system_id, &sm.source.addr, &sm.destination.addr)
            .clone();
        match chain.first() {
            None => {
                self.count("none", CommandStatus::ESME_RINVDSTADR);
                Reply::Error(CommandStatus::ESME_RINVDSTADR)
            }
            // The hot path: answered here, no hop.
            Some(Target::Sim) if !crate::dispatch::wants_receipt(sm.registered_delivery) => {
                self.sim_ok.inc();
                let id = self.core.ids.next_id();
                Reply::Ok(Body::SubmitSmResp(SubmitSmResp {
                    message_id: Bytes::from(id),
                    ..Default::default()
                }))
            }
            Some(Target::Sim) => {
                let id = self.core.ids.next_id();
                if !self.core.sim.schedule(&self.account.system_id, &id, sm) {
                    self.count("sim", CommandStatus::ESME_RMSGQFUL);
                    return Reply::Error(CommandStatus::ESME_RMSGQFUL);
                }
                self.sim_ok.inc();
                Reply::Ok(Body::SubmitSmResp(SubmitSmResp {
                    message_id: Bytes::from(id),
                    ..Default::default()
                }))
            }
            Some(Target::Bind(_)) => {
                if self.inflight.load(Ordering::Acquire) >= self.window() {
                    self.count("none", CommandStatus::ESME_RMSGQFUL);
                    return Reply::Error(CommandStatus::ESME_RMSGQFUL);
                }
                let (pdu, responder) = req.defer();
                let Body::SubmitSm(sm) = pdu.body else { return Reply::Deferred };
                let job = self.job(chain, responder);
                crate::dispatch::start(job, sm);
                Reply::Deferred
            }
        }
    }
}

impl InboundHandler {
    /// A scheduled submit on a route that stores and forwards: held until due ([`crate::forward`]).
    fn hold(&mut self, req: Request<'_>) -> Reply {
        let (pdu, responder) = req.defer();
        let Body::SubmitSm(sm) = pdu.body else { return Reply::Deferred };
        let (core, account, guard) =
            (self.core.clone(), self.account_name.clone(), self.core.inflight_guard());
        tokio::spawn(async move {
            let r = crate::forward::hold(&core, &account, &sm).await;
            core.metrics
                .submit(&account, "held", r.as_ref().err().copied().unwrap_or(CommandStatus::ESME_ROK))
                .inc();
            let sent = match r {
                Ok(id) => responder.respond(Body::SubmitSmResp(SubmitSmResp {
                    message_id: Bytes::from(id),
                    ..Default::default()
                })),
                Err(s) => responder.reject(s),
            };
            if let Err(e) = sent {
                debug!(%account, error = %e, "submit_sm_resp not sent");
            }
            drop(guard);
        });
        Reply::Deferred
    }
}

impl InboundHandler {
    /// query_sm, cancel_sm, replace_sm against the message store, submit_multi and data_sm
    /// ([`crate::multi`]), on a task.
    fn message_op(&mut self, req: Request<'_>) -> Reply {
        let (pdu, responder) = req.defer();
        let (core, account, budget) = (self.core.clone(), self.account_name.clone(), self.submit_budget);
        let guard = self.core.inflight_guard();
        // Scripted on_pdu("data_sm") (handlers/) for a data_sm, on_pdu("submit_sm") for each
        // destination of a submit_multi; only looked up for those.
        let hook = match &pdu.body {
            Body::DataSm(_) => Some(crate::handlers::Hook::DataSm),
            Body::SubmitMulti(_) => Some(crate::handlers::Hook::SubmitSm),
            _ => None,
        };
        let hook = hook.and_then(|k| self.hooks.hook(k)).map(|h| (h, self.hooks.view.clone()));
        tokio::spawn(async move {
            let _guard = guard;
            let r = match &pdu.body {
                Body::QuerySm(q) => crate::message_ops::query(&core, &account, q).await,
                Body::CancelSm(c) => crate::message_ops::cancel(&core, &account, &c.message_id).await,
                Body::ReplaceSm(r) => crate::message_ops::replace(&core, &account, r).await,
                Body::SubmitMulti(m) => crate::multi::submit_multi(&core, &account, m.clone(), hook).await,
                Body::DataSm(d) => {
                    let sm = crate::multi::data_to_submit(d.clone());
                    let budget = crate::dispatch::Budget::new(budget);
                    let r = match hook {
                        Some((h, view)) => {
                            crate::handlers::submit::data_sm(&h, &core, &account, sm, view, &budget).await
                        }
                        None => crate::dispatch::submit(&core, &account, sm, &budget).await,
                    };
                    r.map(|id| {
                        Body::DataSmResp(smpp::DataSmResp {
                            message_id: Bytes::from(id),
                            ..Default::default()
                        })
                    })
                }
                _ => Err(CommandStatus::ESME_RINVCMDID),
            };
            let sent = match r {
                Ok(body) => responder.respond(body),
                Err(s) => responder.reject(s),
            };
            if let Err(e) = sent {
                debug!(%account, error = %e, "response not sent");
            }
        });
        Reply::Deferred
    }
}

impl Handler for InboundHandler {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        match &req.pdu.body {
            Body::SubmitSm(_) => self.submit(req),
            Body::QuerySm(_) | Body::CancelSm(_) | Body::ReplaceSm(_) => self.message_op(req),
            Body::SubmitMulti(_) | Body::DataSm(_) => {
                // The session's own throttle (on_bind's `accept(throttle=)`) too, as for submit_sm.
                if self.core.is_draining() || !self.account.throttle.try_take() || !self.hooks.try_take() {
                    return Reply::Error(CommandStatus::ESME_RTHROTTLED);
                }
                self.message_op(req)
            }
            _ => Reply::Error(CommandStatus::ESME_RINVCMDID),
        }
    }

    fn on_close(&mut self, reason: &CloseReason) {
        debug!(account = %self.account.system_id, %reason, "session closed");
    }
}
