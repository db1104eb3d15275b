//! Draining one account's held submits: claimed in batches, sent in order per destination,
//! many destinations at once.
//!
//! One destination's messages go one after the other (each waits for the previous one's
//! submit_sm_resp: issue 16 keeps order per destination), so each destination is a lane and the
//! rate comes from running up to [`PARALLEL`] lanes at once and keeping them fed:
//! - the next claim is made while sends are in flight (at most [`AHEAD`] claimed and not yet
//!   through their lane), so the lanes do not wait for the slowest one of a claim;
//! - a destination whose messages span two claims keeps them in its one lane, in claim order;
//! - what an upstream took is recorded in the store in batches (one round trip for up to
//!   [`FLUSH`] messages), off the lane's path: its next send does not wait for the write. A
//!   replica that dies before the write gives those messages to another one after the lease
//!   (sent twice: the at-least-once case docs/delivery-guarantees.md states).
//!
//! When one message of a lane is not taken, the lane stays blocked for the rest of the pass: the
//! later ones of that destination are given back due when it is (so they come back behind it,
//! not before it as a shorter wait would bring them), without an attempt. A pass claims only
//! what was due when it began, so what it gave back waits for a later pass (every `TICK`).
//! A pass ends when its last lane does: a destination whose upstream keeps a send unanswered
//! for the whole submit budget holds up messages that became due after the pass began (not the
//! ones claimed with it) that long. The block does not outlive the pass: a message held for
//! that destination afterwards is due at once, before the one given back, and a later pass can
//! send it first (docs/delivery-guarantees.md states it).

use super::{decode, expire, final_receipt, retry_at, send, Sent};
use crate::core::Core;
use crate::sim::unix_ms;
use crate::store::queue::{Final, Queued};
use crate::store::StoreError;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use smpp::receipt::MessageState;
use smpp::SubmitSm;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Messages claimed per round trip.
const BATCH: usize = 1000;
/// Claimed messages not yet through their lane, at most, before the next claim: with one
/// claim's worth in the lanes the next is fetched, so the lanes do not run dry between claims.
const AHEAD: usize = 2 * BATCH;
/// Destinations sent to at once (each one's messages in order).
const PARALLEL: usize = 512;
/// Taken messages recorded per store round trip, at most.
const FLUSH: usize = 512;
/// Longest wait of a taken message for its record (a batch that does not fill).
const FLUSH_AFTER: Duration = Duration::from_millis(20);
/// Record writes in flight at once, at most.
const WRITES: usize = 4;

/// A claimed message on its way through its lane.
struct Item {
    m: Queued,
    sm: SubmitSm,
    /// When the claim's lease ends (unix ms): not sent after that less the submit budget.
    lease_end_ms: u64,
}

#[derive(Default)]
struct Lane {
    waiting: VecDeque<Item>,
    /// A step of this lane is running.
    busy: bool,
    /// One was not taken: the due time it was given back with, which the rest of the lane get
    /// too (the store orders equal due times by id, and ids grow in acceptance order; spacing
    /// them a millisecond apart would cap a large backlog of one destination at 1 000/s).
    blocked: Option<u64>,
}

/// How one message's step ended.
enum Step {
    /// An upstream took it: to record.
    Taken(Queued),
    /// Not taken (or given back unsent): the lane is blocked behind it, due again at this time.
    Blocked(u64),
    /// Ended or given back, recorded already.
    Done,
}

/// Claim and send what was due for `account` when this pass began until a claim comes back
/// short (or the replica stops or drains), then finish what was claimed.
pub async fn account(core: &Arc<Core>, account: &str) {
    let mut lanes: HashMap<Bytes, Lane> = HashMap::new();
    // Lanes with a message waiting and no step running, oldest first.
    let mut ready: VecDeque<Bytes> = VecDeque::new();
    let mut steps = FuturesUnordered::new();
    let mut claiming: Option<BoxFuture<'_, Result<Vec<Queued>, StoreError>>> = None;
    let pass_start = unix_ms();
    let mut lease_end_ms = 0;
    let mut more = true;
    // Claimed and not yet through their lane.
    let mut ahead = 0usize;
    let mut taken: Vec<Queued> = Vec::new();
    let mut flush_at: Option<tokio::time::Instant> = None;
    let mut writes = FuturesUnordered::new();
    // Bounded: each pass either starts a step, a claim or a write, or awaits one of them (or
    // the flush timer); the claims stop when one comes back short, and every step ends.
    loop {
        while steps.len() < PARALLEL {
            let Some(dest) = ready.pop_front() else { break };
            let Some(lane) = lanes.get_mut(&dest) else { continue };
            let Some(item) = lane.waiting.pop_front() else { continue };
            lane.busy = true;
            let follow = lane.blocked;
            steps.push(async move { (dest, step(core, account, item, follow).await) });
        }
        if core.stop.is_cancelled() || core.is_draining() {
            more = false;
        }
        if more && claiming.is_none() && ahead + BATCH <= AHEAD {
            let lease = core.config.get().store_and_forward.lease;
            let now = unix_ms();
            lease_end_ms = now.saturating_add(lease.as_millis() as u64);
            // What was due when the pass began, the lease from now: a message given back in this
            // pass (due later) is not claimed again by it, so the pass ends and a blocked lane
            // does not keep giving back the same messages.
            let lease = lease + Duration::from_millis(now.saturating_sub(pass_start));
            claiming = Some(core.queue.claim(account, pass_start, lease, BATCH));
        }
        let idle = claiming.is_none() && steps.is_empty();
        let flush_due = flush_at.is_some_and(|t| t <= tokio::time::Instant::now());
        if !taken.is_empty() && writes.len() < WRITES && (taken.len() >= FLUSH || idle || flush_due) {
            writes.push(record(core, account, take_batch(&mut taken, &mut flush_at)));
        }
        if idle && writes.is_empty() && taken.is_empty() {
            return;
        }
        tokio::select! {
            Some((dest, s)) = steps.next(), if !steps.is_empty() => {
                ahead = ahead.saturating_sub(1);
                let Some(lane) = lanes.get_mut(&dest) else { continue };
                lane.busy = false;
                match s {
                    Step::Taken(m) => {
                        if taken.is_empty() {
                            flush_at = Some(tokio::time::Instant::now() + FLUSH_AFTER);
                        }
                        taken.push(m);
                    }
                    Step::Blocked(due) => lane.blocked = Some(due),
                    Step::Done => {}
                }
                if !lane.waiting.is_empty() {
                    ready.push_back(dest);
                } else if lane.blocked.is_none() {
                    lanes.remove(&dest);
                }
            }
            r = async { match claiming.as_mut() { Some(c) => c.await, None => std::future::pending().await } }, if claiming.is_some() => {
                claiming = None;
                let claimed = match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(account, error = %e, "store-and-forward: claim failed");
                        more = false;
                        continue;
                    }
                };
                more = more && claimed.len() == BATCH;
                for m in claimed {
                    let Some(sm) = decode(&m) else {
                        tracing::warn!(account, id = %m.id, "held submit does not decode: dropped as undeliverable");
                        super::end(core, account, &m, Final::Undeliverable).await;
                        continue;
                    };
                    let dest = sm.destination.addr.clone();
                    let lane = lanes.entry(dest.clone()).or_default();
                    if lane.waiting.is_empty() && !lane.busy {
                        ready.push_back(dest);
                    }
                    lane.waiting.push_back(Item { m, sm, lease_end_ms });
                    ahead += 1;
                }
            }
            Some(()) = writes.next(), if !writes.is_empty() => {}
            // Written at the loop's top (a full set of writes: when one of them ends).
            _ = tokio::time::sleep_until(flush_at.unwrap_or_else(tokio::time::Instant::now)),
                if flush_at.is_some() && writes.len() < WRITES => {}
            // Not reached: with nothing claimed, sent or written the loop returned above.
            else => return,
        }
    }
}

/// Up to [`FLUSH`] of `taken` to record now; the flush timer set again for the rest (due now:
/// they already waited).
fn take_batch(taken: &mut Vec<Queued>, flush_at: &mut Option<tokio::time::Instant>) -> Vec<Queued> {
    let batch: Vec<Queued> = taken.drain(..taken.len().min(FLUSH)).collect();
    *flush_at = (!taken.is_empty()).then(tokio::time::Instant::now);
    batch
}

/// One message of a lane: expired, given back behind a blocked one (`follow`: its due time),
/// or sent.
async fn step(core: &Arc<Core>, account: &str, item: Item, follow: Option<u64>) -> Step {
    let Item { m, sm, lease_end_ms } = item;
    let now = unix_ms();
    if now >= m.expires_ms {
        expire(core, account, &m, &sm).await;
        return Step::Done;
    }
    if let Some(due) = follow {
        retry_at(core, account, &m, due, m.attempts).await;
        return Step::Done;
    }
    // A send that could still be waiting for its answer when the lease ends could be sent again
    // by another replica: give it back (due now) instead, the lane behind it.
    let budget = core.config.get().server.submit_timeout_ms.max(1);
    if now.saturating_add(budget) >= lease_end_ms {
        retry_at(core, account, &m, now, m.attempts).await;
        return Step::Blocked(now);
    }
    // We did the scheduling; the rest of the validity goes along as an absolute time, so a
    // relative one does not restart at the upstream.
    let mut out = sm.clone();
    out.schedule_delivery_time = Bytes::new();
    out.validity_period = Bytes::from(smpp::time::format_absolute(m.expires_ms));
    match send(core, account, super::public_id(&m.id), out).await {
        Sent::Taken => Step::Taken(m),
        Sent::Refused(status) => {
            tracing::info!(account, id = %m.id, %status, "held submit refused by the upstream: undeliverable");
            super::end(core, account, &m, Final::Undeliverable).await;
            final_receipt(core, account, &m, &sm, MessageState::Undeliverable).await;
            Step::Done
        }
        Sent::NotNow => {
            let policy = core.config.get().store_and_forward.clone();
            let wait = super::backoff(m.attempts, policy.retry_min, policy.retry_max);
            // Never later than its expiry, so that it expires on time.
            let due = now.saturating_add(wait.as_millis() as u64).min(m.expires_ms);
            retry_at(core, account, &m, due, m.attempts.saturating_add(1)).await;
            Step::Blocked(due)
        }
    }
}

/// Record that an upstream took `taken`: out of the queue, ENROUTE for query_sm until their
/// receipts. Not recorded (the store did not answer): the lease brings them back and they are
/// sent again.
async fn record(core: &Arc<Core>, account: &str, taken: Vec<Queued>) {
    let policy = core.config.get().store_and_forward.clone();
    // Kept at least as long as a final state would be, even with relayed ids not recorded.
    let keep = policy.keep_relayed.max(policy.keep_final);
    let ids: Vec<String> = taken.iter().map(|m| m.id.clone()).collect();
    if let Err(e) = core.queue.relayed_many(account, &ids, unix_ms(), keep).await {
        tracing::warn!(account, n = ids.len(), error = %e, "held submits' outcome not recorded");
    }
    for m in &taken {
        core.metrics.forwarded(account, &m.route, "delivered", 1);
    }
}
