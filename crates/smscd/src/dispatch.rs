//! A submit routed to a chain: targets are tried in order until one accepts it.
//!
//! The next target is tried when one is down (no bound session), throttled (our rate for it, or
//! it answered ESME_RTHROTTLED / ESME_RMSGQFUL, after which it is skipped briefly), its window
//! stays full, or it answers a transient error ([`crate::upstream::moves_on`]: ESME_RTHROTTLED,
//! ESME_RMSGQFUL, ESME_RSYSERR, ESME_RX_T_APPN, ESME_RSUBMITFAIL, ESME_RINVBNDSTS,
//! ESME_RUNKNOWNERR, or no answer at all). Any other error status is the message's fault and goes
//! back to the ESME as is. When every target fails the ESME gets ESME_RTHROTTLED if one was
//! throttled or full (retry later), else the last status.
//!
//! One time budget covers the whole submit (`server.submit_timeout_ms`, below the ESMEs' own
//! response timers): window and rate waits, the upstream's answers, failover along the chain and
//! the correlation write. The upstream part ends at four fifths of it ([`Budget::send_by`]), so
//! the store write keeps the last fifth. A submit sent and not answered by then has an unknown
//! outcome: the ESME gets ESME_RSYSERR (transient) and no other target is tried, which could
//! duplicate the message. A submit that wants a receipt is acknowledged only once its
//! correlation is stored; a store that fails or does not answer within the budget gets the ESME
//! ESME_RSYSERR.
//!
//! The common case, a chain headed by a bind with a free window slot, runs without a task: the
//! submit is queued on an upstream session from the ESME's session task and its answer handled by
//! a callback on the upstream's session task ([`start`]). Anything else (no free slot, failover,
//! a store that does not answer at once) continues on a task of its own through [`dispatch`].

use crate::core::{Core, InflightGuard};
use crate::router::Target;
use crate::sim::unix_ms;
use crate::store::Correlation;
use crate::upstream::SubmitFailure;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use smpp::receipt::MessageIdFormat;
use smpp::session::Responder;
use smpp::{Body, CommandStatus, SubmitSm, SubmitSmResp};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// When a submit must be answered, and by when its upstream part must be over.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// The submit_sm_resp goes out by then.
    pub deadline: tokio::time::Instant,
    /// Window and rate waits and the upstream's answer end by then; the rest is the store's.
    pub send_by: tokio::time::Instant,
}

impl Budget {
    /// `total` from now.
    pub fn new(total: Duration) -> Budget {
        let now = tokio::time::Instant::now();
        Budget { deadline: now + total, send_by: now + total.mul_f64(0.8) }
    }

    fn sending_over(&self) -> bool {
        tokio::time::Instant::now() >= self.send_by
    }
}

/// One deferred submit: where its answer goes and what it counts once answered.
pub struct Job {
    pub core: Arc<Core>,
    pub account: Arc<str>,
    pub chain: Arc<[Target]>,
    pub responder: Responder,
    /// The ESME session's deferred submits not answered yet: one taken for this job.
    pub inflight: SessionSlot,
    pub guard: InflightGuard,
    pub started: Instant,
    pub budget: Budget,
    pub metrics: Arc<SessionMetrics>,
}

/// One of an ESME session's deferred submits, counted until dropped (whatever becomes of the job).
pub struct SessionSlot(Arc<AtomicUsize>);

impl SessionSlot {
    pub fn take(count: &Arc<AtomicUsize>) -> SessionSlot {
        count.fetch_add(1, Ordering::AcqRel);
        SessionSlot(count.clone())
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An ESME session's per-message series, made on first use (as /metrics showed them before).
#[derive(Default)]
pub struct SessionMetrics {
    latency: OnceLock<Histogram>,
    /// ESME_ROK for the first route that answered, the usual one.
    ok: OnceLock<(Arc<str>, Counter)>,
}

impl Job {
    /// Answer the ESME and count.
    pub(crate) fn finish(self, result: Result<String, CommandStatus>, route: &str) {
        let status = result.as_ref().err().copied().unwrap_or(CommandStatus::ESME_ROK);
        // Counted before the answer goes out: whoever reads /metrics after the answer sees it.
        self.count(status, route);
        // Free the window slot before the ESME can see the answer and send again.
        drop(self.inflight);
        let sent = match result {
            Ok(id) => self.responder.respond(Body::SubmitSmResp(SubmitSmResp {
                message_id: Bytes::from(id),
                ..Default::default()
            })),
            Err(s) => self.responder.reject(s),
        };
        if let Err(e) = sent {
            tracing::debug!(account = %self.account, error = %e, "submit_sm_resp not sent");
        }
    }

    fn count(&self, status: CommandStatus, route: &str) {
        let m = &self.metrics;
        let core = &self.core;
        m.latency
            .get_or_init(|| {
                let label = crate::metrics::AccountLabel { account: self.account.to_string() };
                core.metrics.submit_latency.get_or_create(&label).clone()
            })
            .observe(self.started.elapsed().as_secs_f64());
        if status.is_ok() {
            let (r, c) = m.ok.get_or_init(|| {
                (route.into(), core.metrics.submit(&self.account, route, CommandStatus::ESME_ROK))
            });
            if &**r == route {
                c.inc();
                return;
            }
        }
        core.metrics.submit(&self.account, route, status).inc();
    }
}

/// Answer a deferred submit: queued upstream right here when the chain's first target can take
/// it now, else on a task through [`dispatch`].
pub fn start(job: Job, sm: SubmitSm) {
    let fast = match job.chain.first() {
        Some(Target::Bind(name)) if !wants_receipt(sm.registered_delivery) || job.core.store.healthy() => {
            job.core.upstreams.get(name)
        }
        _ => None,
    };
    let Some(up) = fast else { return spawn_rest(job, sm, 0, CommandStatus::ESME_RSYSERR, false) };
    let core = job.core.clone();
    let send_by = job.budget.send_by;
    let ctx = (job, up.name.clone(), crate::receipts::id_format(up.cfg.message_id_format));
    if let Err((body, (job, _, _))) =
        up.try_submit_with(&core, Body::SubmitSm(sm), send_by, ctx, on_first_answer)
    {
        let Body::SubmitSm(sm) = body else { return job.finish(Err(CommandStatus::ESME_RSYSERR), "none") };
        spawn_rest(job, sm, 0, CommandStatus::ESME_RSYSERR, false);
    }
}

/// The first target's (`name`) answer, on its session task.
fn on_first_answer(
    (job, name, id_format): (Job, Arc<str>, MessageIdFormat),
    body: Body,
    outcome: Result<String, SubmitFailure>,
) {
    // The body we sent comes back: always a submit_sm.
    let Body::SubmitSm(sm) = body else { return job.finish(Err(CommandStatus::ESME_RSYSERR), &name) };
    match outcome {
        Ok(upstream_id) => {
            let rd = sm.registered_delivery;
            drop(sm);
            // The memory store answers at once; a shared one may make this wait.
            now_or_spawn(async move {
                let r =
                    accepted(&job.core, &job.account, &name, id_format, rd, &upstream_id, &job.budget, None)
                        .await;
                job.finish(r, &name);
            });
        }
        Err(SubmitFailure::Final(s)) => job.finish(Err(s), &name),
        Err(SubmitFailure::Unknown) => job.finish(Err(CommandStatus::ESME_RSYSERR), &name),
        Err(SubmitFailure::MoveOn(s)) => {
            tracing::debug!(upstream = %name, status = %s, "moving on to the next target");
            let busy = matches!(s, CommandStatus::ESME_RTHROTTLED | CommandStatus::ESME_RMSGQFUL);
            spawn_rest(job, sm, 1, s, busy);
        }
    }
}

/// Try the chain from `from` on a task of its own, then answer.
fn spawn_rest(job: Job, sm: SubmitSm, from: usize, last: CommandStatus, busy: bool) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        // Only while the runtime itself goes away: the responder's drop answers ESME_RSYSERR.
        return;
    };
    rt.spawn(async move {
        let chain = job.chain.clone();
        let rest = chain.get(from..).unwrap_or_default();
        let (result, route) =
            dispatch_from(&job.core, &job.account, sm, rest, last, busy, &job.budget, None).await;
        job.finish(result, &route);
    });
}

/// Run `fut` here if it completes without waiting, else on a task of its own.
fn now_or_spawn(fut: impl Future<Output = ()> + Send + 'static) {
    let mut fut = Box::pin(fut);
    if let Poll::Ready(()) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return;
    }
    // Polled again there, with a waker that counts.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(fut);
    }
}

/// Our id for a submit `upstream` accepted as `upstream_id`, its correlation stored when it wants
/// a receipt, under the one key `id_format` gives the id. A correlation that cannot be stored by
/// the budget's deadline gets the ESME ESME_RSYSERR, never an OK whose receipt would be lost.
/// `given`: our id chosen beforehand (the HTTP API), else a new one.
#[allow(clippy::too_many_arguments)]
async fn accepted(
    core: &Core,
    account: &str,
    upstream: &str,
    id_format: MessageIdFormat,
    rd: u8,
    upstream_id: &str,
    budget: &Budget,
    given: Option<String>,
) -> Result<String, CommandStatus> {
    let id = given.unwrap_or_else(|| core.ids.next_id());
    // ENROUTE for query_sm until its receipt (see crate::message_ops), written beside the
    // correlation rather than after it: on Redis both commands share one round trip of the
    // multiplexed connection (one after the other was a second round trip per submit before
    // the ESME's answer). If the correlation then fails, the ESME gets ESME_RSYSERR and never
    // learns the id: its record is never asked for and expires.
    // Bounded by the budget: a slow store costs the query_sm answer, never the submit's.
    let record = async {
        let _ = tokio::time::timeout_at(budget.deadline, crate::forward::relayed(core, account, &id)).await;
    };
    let (correlated, ()) = futures::join!(
        correlate(core, account, upstream, id_format, rd, upstream_id, id.clone(), budget),
        record
    );
    correlated
}

/// [`accepted`] for a submit that has our id `id` already (a held one, see [`crate::forward`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn correlate(
    core: &Core,
    account: &str,
    upstream: &str,
    id_format: MessageIdFormat,
    rd: u8,
    upstream_id: &str,
    id: String,
    budget: &Budget,
) -> Result<String, CommandStatus> {
    if wants_receipt(rd) {
        let c = Correlation {
            account: account.to_owned(),
            our_id: id.clone(),
            submitted_at_ms: unix_ms(),
            registered_delivery: rd,
        };
        let Some(key) = id_format.resp_key(upstream_id) else {
            tracing::warn!(upstream = %upstream, id = %upstream_id, format = ?id_format,
                "submit_sm_resp id not in the declared message_id_format: its receipt cannot be matched");
            return Ok(id);
        };
        let stored =
            tokio::time::timeout_at(budget.deadline, core.store.put_correlation(upstream, &key, c)).await;
        match stored {
            Ok(Ok(())) => {}
            // The upstream has the message, and an ESME retry may duplicate it; an OK now would
            // promise a receipt that can never be matched.
            Ok(Err(e)) => {
                tracing::warn!(upstream = %upstream, error = %e, "correlation not stored: ESME_RSYSERR");
                return Err(CommandStatus::ESME_RSYSERR);
            }
            Err(_) => {
                tracing::warn!(upstream = %upstream, "correlation not stored within the submit budget: ESME_RSYSERR");
                return Err(CommandStatus::ESME_RSYSERR);
            }
        }
    }
    Ok(id)
}

/// A submit that comes from no ESME session (the HTTP API), under our id `id` chosen beforehand
/// (so the caller can record the message before its receipt can arrive): the chain tried as
/// for an ESME's submit. Our id or the status, and the target label for metrics.
pub async fn submit_as(
    core: &Core,
    account: &str,
    sm: SubmitSm,
    chain: &[Target],
    budget: &Budget,
    id: String,
) -> (Result<String, CommandStatus>, String) {
    dispatch_from(core, account, sm, chain, CommandStatus::ESME_RSYSERR, false, budget, Some(id)).await
}

/// The outcome over what is left of a chain, after targets that failed with `last` (`busy`: one
/// was throttled or full): our message id (`given`, or a new one) or the status for the ESME,
/// and the target label for metrics.
#[allow(clippy::too_many_arguments)]
async fn dispatch_from(
    core: &Core,
    account: &str,
    sm: SubmitSm,
    chain: &[Target],
    mut last: CommandStatus,
    mut busy: bool,
    budget: &Budget,
    given: Option<String>,
) -> (Result<String, CommandStatus>, String) {
    // A shared store that does not answer could not correlate the receipt: refuse the submit
    // (ESME_RSYSERR, transient: the ESME retries) rather than accept it and lose the receipt.
    if wants_receipt(sm.registered_delivery) && !core.store.healthy() {
        return (Err(CommandStatus::ESME_RSYSERR), "store".to_owned());
    }
    for target in chain {
        if budget.sending_over() {
            tracing::debug!(account = %account, "submit budget spent before the chain's end");
            break;
        }
        match target {
            Target::Sim => {
                let id = given.clone().unwrap_or_else(|| core.ids.next_id());
                if wants_receipt(sm.registered_delivery) && !core.sim.schedule(account, &id, &sm) {
                    last = CommandStatus::ESME_RMSGQFUL;
                    busy = true;
                    continue;
                }
                return (Ok(id), "sim".to_owned());
            }
            Target::Bind(name) => {
                let Some(up) = core.upstreams.get(name) else {
                    continue;
                };
                let rd = sm.registered_delivery;
                match up.submit(core, sm.clone(), budget.send_by).await {
                    Ok(upstream_id) => {
                        let id_format = crate::receipts::id_format(up.cfg.message_id_format);
                        let r =
                            accepted(core, account, name, id_format, rd, &upstream_id, budget, given).await;
                        return (r, name.to_string());
                    }
                    Err(SubmitFailure::Final(s)) => return (Err(s), name.to_string()),
                    Err(SubmitFailure::Unknown) => {
                        return (Err(CommandStatus::ESME_RSYSERR), name.to_string())
                    }
                    Err(SubmitFailure::MoveOn(s)) => {
                        tracing::debug!(upstream = %name, status = %s, "moving on to the next target");
                        busy |= matches!(s, CommandStatus::ESME_RTHROTTLED | CommandStatus::ESME_RMSGQFUL);
                        last = s;
                    }
                }
            }
        }
    }
    let status = if busy { CommandStatus::ESME_RTHROTTLED } else { last };
    // Store-and-forward's seam: no target can take it now; a route that holds accepts it for later.
    if crate::forward::holds(core, account, &sm) {
        // Under the id chosen beforehand when there is one (the HTTP API recorded it already).
        let id = given.unwrap_or_else(|| core.ids.next_id());
        let held =
            tokio::time::timeout_at(budget.deadline, crate::forward::hold_with_id(core, account, &sm, id))
                .await;
        return (held.unwrap_or(Err(CommandStatus::ESME_RSYSERR)), "held".to_owned());
    }
    (Err(status), "none".to_owned())
}

/// A submit from `account` answered on the caller's task (data_sm, the HTTP API): routed,
/// relayed along its chain, or held when its route stores and forwards. Our id or the status.
pub async fn submit(
    core: &Core,
    account: &str,
    sm: SubmitSm,
    budget: &Budget,
) -> Result<String, CommandStatus> {
    submit_via(core, account, sm, None, budget).await
}

/// [`submit`] along `chain` (a handler's `pdu.route`) instead of the routing rules' when given.
pub async fn submit_via(
    core: &Core,
    account: &str,
    sm: SubmitSm,
    chain: Option<Arc<[Target]>>,
    budget: &Budget,
) -> Result<String, CommandStatus> {
    crate::forward::check_times(&sm)?;
    if crate::forward::is_scheduled(&sm) && crate::forward::holds(core, account, &sm) {
        return crate::forward::hold(core, account, &sm).await;
    }
    let chain = match chain {
        Some(c) => c,
        None => core.router.get().route(account, &sm.source.addr, &sm.destination.addr).clone(),
    };
    if chain.is_empty() {
        return Err(CommandStatus::ESME_RINVDSTADR);
    }
    dispatch_from(core, account, sm, &chain, CommandStatus::ESME_RSYSERR, false, budget, None).await.0
}

/// Whether registered_delivery asks for anything an upstream reports back: an SMSC receipt
/// (bits 0-1), an SME acknowledgement (bits 2-3) or intermediate notifications (bit 4).
pub fn wants_receipt(rd: u8) -> bool {
    rd & 0x1F != 0
}
