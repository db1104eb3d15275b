//! Store-and-forward: submits that no target of their chain can take now (or that are scheduled
//! for later) are accepted, held in the message store ([`crate::store::queue`]) and sent when
//! due, retried with backoff across the chain until one target takes them or they expire.
//!
//! Per route (`routing.store_and_forward`, each rule's `store_and_forward`), off by default: an
//! OK for a held submit tells the ESME to stop retrying, which is only a fair promise when the
//! operator chose it and the store is durable (Redis); a route without it keeps refusing with a
//! transient status, and the ESME retries as it always did.
//!
//! The seam on the submit path is [`hold`] (called by [`crate::dispatch`] when the chain is
//! spent, and by the inbound session for scheduled submits); the HTTP API can call it with a
//! parsed submit_sm the same way. [`run`] drains the store on every active replica.
//!
//! Guarantees (docs/delivery-guarantees.md): a held submit is sent at least once. It can be sent
//! twice when the replica that sent it dies before recording the outcome (another one takes it
//! when the lease ends), or when the upstream does not answer in time (unknown outcome: retried).
//! It is never sent after its expiry: each claim checks it first. Order per destination: the
//! messages of one destination are sent one after the other, and when one is not taken the
//! later ones are given back behind it ([`drain`]).

use crate::core::Core;
use crate::router::Target;
use crate::sim::unix_ms;
use crate::store::queue::{Final, Queued};
use crate::store::{Correlation, StoreError};
use crate::upstream::SubmitFailure;
use bytes::Bytes;
use smpp::receipt::{MessageIdFormat, MessageState, Receipt, Stat};
use smpp::{Body, CommandStatus, DeliverSm, Pdu, SubmitSm};
use std::sync::Arc;
use std::time::Duration;

mod drain;

/// How often each replica looks for due messages.
const TICK: Duration = Duration::from_millis(100);
/// The pseudo upstream under which an expiry receipt is correlated (it never leaves the store).
pub const SAF_UPSTREAM: &str = "store-and-forward";

/// When a submit may be sent and when it expires (unix ms), from its schedule_delivery_time and
/// validity_period at `now_ms`; the validity is cut to `max_validity`. A schedule in the past
/// means now. Bad fields: ESME_RINVSCHED / ESME_RINVEXPIRY.
pub fn times(sm: &SubmitSm, now_ms: u64, max_validity: Duration) -> Result<(u64, u64), CommandStatus> {
    let due = smpp::time::resolve(&sm.schedule_delivery_time, now_ms)
        .map_err(|_| CommandStatus::ESME_RINVSCHED)?
        .map_or(now_ms, |d| d.max(now_ms));
    let cap = now_ms.saturating_add(max_validity.as_millis() as u64);
    let expires =
        match smpp::time::resolve(&sm.validity_period, now_ms).map_err(|_| CommandStatus::ESME_RINVEXPIRY)? {
            Some(v) if v <= now_ms => return Err(CommandStatus::ESME_RINVEXPIRY),
            Some(v) => v.min(cap),
            None => cap,
        };
    // Scheduled for after it would expire: the schedule is what cannot be honoured.
    if due >= expires {
        return Err(CommandStatus::ESME_RINVSCHED);
    }
    Ok((due, expires))
}

/// Whether the two time fields are well-formed (checked on every submit, held or not).
pub fn check_times(sm: &SubmitSm) -> Result<(), CommandStatus> {
    if sm.schedule_delivery_time.is_empty() && sm.validity_period.is_empty() {
        return Ok(());
    }
    smpp::time::parse(&sm.schedule_delivery_time).map_err(|_| CommandStatus::ESME_RINVSCHED)?;
    smpp::time::parse(&sm.validity_period).map_err(|_| CommandStatus::ESME_RINVEXPIRY)?;
    Ok(())
}

/// Whether the route of `sm` from `account` stores and forwards.
pub fn holds(core: &Core, account: &str, sm: &SubmitSm) -> bool {
    core.router.get().stores_and_forwards(account, &sm.source.addr, &sm.destination.addr)
}

/// Whether `sm` asks to be sent later (and its route holds it).
pub fn is_scheduled(sm: &SubmitSm) -> bool {
    !sm.schedule_delivery_time.is_empty()
}

/// Accept `sm` from `account` for later: our message id, or the status for the ESME
/// (ESME_RMSGQFUL at the account's cap, ESME_RSYSERR when the store does not answer, the time
/// fields' statuses).
pub async fn hold(core: &Core, account: &str, sm: &SubmitSm) -> Result<String, CommandStatus> {
    let id = core.ids.next_id();
    hold_with_id(core, account, sm, id).await
}

/// [`hold`] under our id `id` chosen beforehand (the HTTP API records its messages first; a
/// submit_multi's destinations share the PDU's id, see [`crate::multi`]).
pub async fn hold_with_id(
    core: &Core,
    account: &str,
    sm: &SubmitSm,
    id: String,
) -> Result<String, CommandStatus> {
    let max_validity = core.config.get().store_and_forward.max_validity;
    let now = unix_ms();
    let (due_ms, expires_ms) = times(sm, now, max_validity)?;
    let submit = Pdu::new(0, Body::SubmitSm(sm.clone())).to_bytes().map_err(|e| {
        tracing::warn!(account, error = %e, "submit not encodable: not held");
        CommandStatus::ESME_RSYSERR
    })?;
    hold_as(core, account, sm, id, submit, now, due_ms, expires_ms).await
}

/// [`hold`] under our id `id` chosen beforehand (the HTTP API records it first), `submit` the
/// encoded `sm`, its times already resolved.
#[allow(clippy::too_many_arguments)]
async fn hold_as(
    core: &Core,
    account: &str,
    sm: &SubmitSm,
    id: String,
    submit: Bytes,
    now: u64,
    due_ms: u64,
    expires_ms: u64,
) -> Result<String, CommandStatus> {
    let max = core.config.get().store_and_forward.max_per_account;
    let route = core.router.get().route_label(account, &sm.source.addr, &sm.destination.addr);
    let m = Queued { id: id.clone(), submit, submitted_ms: now, due_ms, expires_ms, attempts: 0, route };
    match core.queue.put(account, &m, max).await {
        Ok(()) => {
            core.metrics.forwarded(account, &m.route, "held", 1);
            Ok(id)
        }
        Err(StoreError::Full) => Err(CommandStatus::ESME_RMSGQFUL),
        Err(e) => {
            tracing::warn!(account, error = %e, "submit not held: store unavailable");
            Err(CommandStatus::ESME_RSYSERR)
        }
    }
}

/// Drain the message store until `core.stop`: every [`TICK`], for each account, claim what is
/// due and send it. Only while active (a standby has no upstream binds) and not draining.
/// The accounts go one after the other: one whose pass waits on an unanswered send holds up
/// the rest (docs/delivery-guarantees.md states it).
pub async fn run(core: Arc<Core>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = core.stop.cancelled() => break,
        }
        let accounts: Vec<String> = core.config.get().accounts.iter().map(|a| a.system_id.clone()).collect();
        for account in accounts {
            if !core.is_active() || core.is_draining() {
                break;
            }
            drain_account(&core, &account).await;
            gauges(&core, &account).await;
        }
    }
}

async fn gauges(core: &Core, account: &str) {
    let Ok(stats) = core.queue.stats(account).await else { return };
    let now = unix_ms();
    core.metrics.held_by_route(account, &stats.by_route);
    let label = crate::metrics::AccountLabel { account: account.to_owned() };
    let overdue = stats.first_due_ms.map_or(0, |d| now.saturating_sub(d) / 1000);
    core.metrics.held_overdue.get_or_create(&label).set(overdue as i64);
    let oldest = stats.oldest_ms.map_or(0, |s| now.saturating_sub(s) / 1000);
    core.metrics.held_oldest.get_or_create(&label).set(oldest as i64);
}

/// The admin view of held submits: per account, how many, how late the most overdue is, and
/// the first `max` (earliest due first) with their times and attempts.
pub async fn view(core: &Core, accounts: &[String], max: usize) -> Result<serde_json::Value, String> {
    let now = unix_ms();
    let mut out = serde_json::Map::new();
    for account in accounts {
        let stats = core.queue.stats(account).await.map_err(|e| e.to_string())?;
        let (held, first_due) = (stats.held, stats.first_due_ms);
        let list = core.queue.list(account, max).await.map_err(|e| e.to_string())?;
        let messages: Vec<serde_json::Value> = list
            .iter()
            .map(|m| {
                let destination =
                    decode(m).map(|sm| String::from_utf8_lossy(&sm.destination.addr).into_owned());
                serde_json::json!({
                    "id": m.id,
                    "destination": destination,
                    "submitted": smpp::time::format_absolute(m.submitted_ms),
                    "due": smpp::time::format_absolute(m.due_ms),
                    "expires": smpp::time::format_absolute(m.expires_ms),
                    "attempts": m.attempts,
                    "route": m.route,
                })
            })
            .collect();
        let overdue_secs = first_due.map_or(0, |d| now.saturating_sub(d) / 1000);
        let oldest_secs = stats.oldest_ms.map_or(0, |s| now.saturating_sub(s) / 1000);
        let routes: serde_json::Map<String, serde_json::Value> =
            stats.by_route.iter().map(|(r, n)| (r.clone(), serde_json::json!(n))).collect();
        out.insert(
            account.clone(),
            serde_json::json!({
                "held": held,
                "overdue_secs": overdue_secs,
                "oldest_secs": oldest_secs,
                "routes": routes,
                "messages": messages,
            }),
        );
    }
    Ok(serde_json::Value::Object(out))
}

/// Claim and send what is due for `account` (see [`drain`]).
pub async fn drain_account(core: &Arc<Core>, account: &str) {
    drain::account(core, account).await;
}

fn decode(m: &Queued) -> Option<SubmitSm> {
    match Pdu::decode(m.submit.clone()).ok()?.body {
        Body::SubmitSm(sm) => Some(sm),
        _ => None,
    }
}

pub(crate) enum Sent {
    Taken,
    /// The message's fault, for good.
    Refused(CommandStatus),
    NotNow,
}

/// Try the chain of `sm` once under our id `id` (a held message, or a submit_multi's part).
pub(crate) async fn send(core: &Arc<Core>, account: &str, id: &str, sm: SubmitSm) -> Sent {
    send_via(core, account, id, sm, None).await
}

/// [`send`] along `chain` (a handler's `pdu.route`) instead of the routing rules' when given.
pub(crate) async fn send_via(
    core: &Arc<Core>,
    account: &str,
    id: &str,
    sm: SubmitSm,
    chain: Option<Arc<[Target]>>,
) -> Sent {
    let chain = match chain {
        Some(c) => c,
        None => core.router.get().route(account, &sm.source.addr, &sm.destination.addr).clone(),
    };
    let budget = {
        let cfg = core.config.get();
        crate::dispatch::Budget::new(Duration::from_millis(cfg.server.submit_timeout_ms.max(1)))
    };
    let rd = sm.registered_delivery;
    for target in chain.iter() {
        match target {
            Target::Sim => {
                if !crate::dispatch::wants_receipt(rd) || core.sim.schedule(account, id, &sm) {
                    return Sent::Taken;
                }
            }
            Target::Bind(name) => {
                let Some(up) = core.upstreams.get(name) else { continue };
                match up.submit(core, sm.clone(), budget.send_by).await {
                    Ok(upstream_id) => {
                        let id_format = crate::receipts::id_format(up.cfg.message_id_format);
                        // Stored or not, the upstream has it: a failed correlation loses the
                        // receipt (logged there), resending would duplicate the message.
                        let _ = crate::dispatch::correlate(
                            core,
                            account,
                            name,
                            id_format,
                            rd,
                            &upstream_id,
                            id.to_owned(),
                            &budget,
                        )
                        .await;
                        return Sent::Taken;
                    }
                    Err(SubmitFailure::Final(s)) => return Sent::Refused(s),
                    // Maybe sent: at-least-once retries it (a possible duplicate, see the doc).
                    Err(SubmitFailure::Unknown) => return Sent::NotNow,
                    Err(SubmitFailure::MoveOn(_)) => {}
                }
            }
        }
    }
    Sent::NotNow
}

/// The delay before attempt `attempts + 1`: `retry_min` doubling up to `retry_max`.
pub fn backoff(attempts: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempts.min(31)).unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max)
}

/// Give a claimed message back, due again at `due_ms` after `attempts` attempts.
async fn retry_at(core: &Core, account: &str, m: &Queued, due_ms: u64, attempts: u32) {
    if let Err(e) = core.queue.retry(account, &m.id, due_ms, attempts).await {
        tracing::debug!(account, id = %m.id, error = %e, "retry not recorded: the lease brings it back");
    }
    core.metrics.forwarded(account, &m.route, "retried", 1);
}

async fn end(core: &Core, account: &str, m: &Queued, state: Final) {
    let keep = core.config.get().store_and_forward.keep_final;
    if let Err(e) = core.queue.finish(account, &m.id, state, unix_ms(), keep).await {
        // Ended but not recorded: the lease brings it back and it is tried again.
        tracing::warn!(account, id = %m.id, error = %e, "held submit's outcome not recorded");
    }
    let result = match state {
        Final::Delivered => "delivered",
        Final::Expired => "expired",
        Final::Deleted => "cancelled",
        _ => "undeliverable",
    };
    core.metrics.forwarded(account, &m.route, result, 1);
}

/// Record that a submit relayed at once (never held) is with an upstream: ENROUTE for query_sm
/// until its final receipt, for `store_and_forward.keep_relayed` (0: not recorded). A store
/// that does not answer costs only the query_sm answer (logged), never the submit.
pub async fn relayed(core: &Core, account: &str, id: &str) {
    let keep = core.config.get().store_and_forward.keep_relayed;
    if keep.is_zero() {
        return;
    }
    if let Err(e) = core.queue.relayed_at_once(account, id, unix_ms(), keep).await {
        tracing::debug!(account, id, error = %e, "relayed message not recorded: query_sm will not find it");
    }
}

/// A final receipt for our id `id` of `account`: its state for query_sm, kept for `keep_final`.
pub async fn receipt(core: &Core, account: &str, id: &str, state: MessageState) {
    let Some(state) = Final::from_state(state) else { return };
    let policy = core.config.get().store_and_forward.clone();
    // Not following relayed messages: no write per receipt either.
    if policy.keep_relayed.is_zero() {
        return;
    }
    let keep = policy.keep_final;
    if let Err(e) = core.queue.finish(account, id, state, unix_ms(), keep).await {
        tracing::debug!(account, id, error = %e, "receipt's state not recorded for query_sm");
    }
}

async fn expire(core: &Arc<Core>, account: &str, m: &Queued, sm: &SubmitSm) {
    end(core, account, m, Final::Expired).await;
    final_receipt(core, account, m, sm, MessageState::Expired).await;
}

/// The id the ESME knows a held message by: its store id, or for a submit_multi destination
/// (`<id>.<n>`, see [`crate::multi`]) the submit_multi's id.
pub fn public_id(store_id: &str) -> &str {
    store_id.split_once('.').map_or(store_id, |(id, _)| id)
}

/// A receipt we issue ourselves (EXPIRED, UNDELIV) for a held submit that asked for one: it goes
/// through the receipt path like an upstream's, so registered_delivery's rules apply the same.
async fn final_receipt(core: &Arc<Core>, account: &str, m: &Queued, sm: &SubmitSm, state: MessageState) {
    if !crate::dispatch::wants_receipt(sm.registered_delivery) {
        return;
    }
    let c = Correlation {
        account: account.to_owned(),
        // Keyed by the store id (unique), carrying the id the ESME knows.
        our_id: public_id(&m.id).to_owned(),
        submitted_at_ms: m.submitted_ms,
        registered_delivery: sm.registered_delivery,
    };
    if let Err(e) = core.store.put_correlation(SAF_UPSTREAM, &m.id, c).await {
        tracing::warn!(account, id = %m.id, error = %e, "expiry receipt lost: correlation not stored");
        return;
    }
    let receipt = Receipt {
        id: m.id.clone(),
        sub: Some("001".into()),
        dlvrd: Some("000".into()),
        submit_date: Some(crate::sim::receipt_date(m.submitted_ms)),
        done_date: Some(crate::sim::receipt_date(unix_ms())),
        stat: Stat::Known(state),
        err: Some("000".into()),
        text: Some(String::from_utf8_lossy(&sm.payload()[..sm.payload().len().min(20)]).into_owned()),
    };
    let mut dsm = DeliverSm {
        source: sm.destination.clone(),
        destination: sm.source.clone(),
        esm_class: smpp::pdu::esm_class::DELIVERY_RECEIPT,
        short_message: Bytes::from(receipt.to_text()),
        ..DeliverSm::default()
    };
    dsm.tlvs.set_receipted_message_id(m.id.as_bytes());
    dsm.tlvs.set_message_state(state.as_u8());
    if let Err(status) =
        crate::receipts::on_upstream_deliver(core, SAF_UPSTREAM, MessageIdFormat::Same, dsm).await
    {
        tracing::warn!(account, id = %m.id, %status, "expiry receipt not queued");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smpp::time::format_absolute;

    const NOW: u64 = 1_796_221_800_000;
    const MAX: Duration = Duration::from_secs(3600);

    fn sm(schedule: &str, validity: &str) -> SubmitSm {
        SubmitSm {
            schedule_delivery_time: Bytes::from(schedule.to_owned()),
            validity_period: Bytes::from(validity.to_owned()),
            ..SubmitSm::default()
        }
    }

    #[test]
    fn times_default_cap_and_schedule() {
        assert_eq!(times(&sm("", ""), NOW, MAX), Ok((NOW, NOW + 3_600_000)));
        assert_eq!(
            times(&sm("000000000005000R", "000000001000000R"), NOW, MAX),
            Ok((NOW + 5_000, NOW + 600_000))
        );
        // Validity beyond the maximum is cut to it.
        assert_eq!(times(&sm("", "000002000000000R"), NOW, MAX), Ok((NOW, NOW + 3_600_000)));
        // A schedule in the past is now.
        assert_eq!(times(&sm(&format_absolute(NOW - 60_000), ""), NOW, MAX), Ok((NOW, NOW + 3_600_000)));
    }

    #[test]
    fn bad_times_get_their_statuses() {
        let bad = "261302143000000+";
        assert_eq!(times(&sm(bad, ""), NOW, MAX), Err(CommandStatus::ESME_RINVSCHED));
        assert_eq!(times(&sm("", bad), NOW, MAX), Err(CommandStatus::ESME_RINVEXPIRY));
        assert_eq!(check_times(&sm(bad, "")), Err(CommandStatus::ESME_RINVSCHED));
        assert_eq!(check_times(&sm("", "junk")), Err(CommandStatus::ESME_RINVEXPIRY));
        assert_eq!(check_times(&sm("", "")), Ok(()));
        // Already expired.
        assert_eq!(
            times(&sm("", &format_absolute(NOW - 1000)), NOW, MAX),
            Err(CommandStatus::ESME_RINVEXPIRY)
        );
        // Scheduled after its expiry.
        assert_eq!(
            times(&sm("000000010000000R", "000000000500000R"), NOW, MAX),
            Err(CommandStatus::ESME_RINVSCHED)
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(backoff(0, min, max), min);
        assert_eq!(backoff(1, min, max), Duration::from_secs(2));
        assert_eq!(backoff(5, min, max), Duration::from_secs(32));
        assert_eq!(backoff(6, min, max), max);
        assert_eq!(backoff(u32::MAX, min, max), max);
    }
}
