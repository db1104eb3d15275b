//! One loop per account: hand queued deliveries (receipts, MO) to the account's receiver and
//! transceiver sessions round-robin. An item leaves the queue on deliver_sm_resp with status 0.
//! A permanent error status ([`is_permanent`]: the ESME will never take this PDU) moves it to
//! the account's dead letters at once; a transient one or no answer puts it back for a retry,
//! up to `queues.max_attempts` answers in all, after which it is dead-lettered too. A session
//! that goes away mid-send is not the ESME's answer and costs no attempt. While the account
//! has no receiving session, items wait in the store.
//!
//! The loop also ages out items queued longer than the correlation TTL (`store.ttl`) and, once
//! the account is removed from the config, purges its queue (both counted in
//! `smscd_queue_dropped_total`).
//!
//! Items are fetched in batches (as many as free in-flight slots, one store round trip) and
//! acknowledged in batches by a companion task, so a shared store costs a few commands per
//! batch rather than several per item.

use crate::accounts::AccountState;
use crate::core::Core;
use crate::metrics::{AccountLabel, ReasonLabel};
use crate::store::DeliveryId;
use futures::stream::{FuturesUnordered, StreamExt};
use smpp::session::SessionError;
use smpp::{Body, CommandStatus, Pdu};
use smsc_api::smscd_config::StoreConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// deliver_sm in flight per account, over all its sessions (each session's window also applies).
const MAX_IN_FLIGHT: usize = 512;
/// Most items asked of the store at once.
const BATCH: usize = 256;
/// Most acks sent to the store at once.
const ACK_BATCH: usize = 512;
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Poll interval while the account had deliveries lately: with a shared store, items another
/// replica queued wake nobody here, and a 500 ms poll would add that much to their latency.
const BUSY_POLL: Duration = Duration::from_millis(10);
const BUSY_FOR: Duration = Duration::from_secs(2);
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// How often items older than the correlation TTL are aged out (and the dead letters counted).
const AGE_EVERY: Duration = Duration::from_secs(60);

/// deliver_sm_resp statuses that say the ESME will never take this PDU as it is (its content,
/// addresses or TLVs, or its application's explicit permanent/reject answer): retrying cannot
/// help, so the item is dead-lettered at once. Every other error status (ESME_RX_T_APPN,
/// ESME_RTHROTTLED, ESME_RMSGQFUL, ESME_RSYSERR, vendor codes, ...) is retried, up to
/// `queues.max_attempts`.
pub fn is_permanent(s: CommandStatus) -> bool {
    matches!(
        s,
        CommandStatus::ESME_RX_P_APPN
            | CommandStatus::ESME_RX_R_APPN
            | CommandStatus::ESME_RINVMSGLEN
            | CommandStatus::ESME_RINVCMDLEN
            | CommandStatus::ESME_RINVESMCLASS
            | CommandStatus::ESME_RINVSRCADR
            | CommandStatus::ESME_RINVDSTADR
            | CommandStatus::ESME_RINVSRCTON
            | CommandStatus::ESME_RINVSRCNPI
            | CommandStatus::ESME_RINVDSTTON
            | CommandStatus::ESME_RINVDSTNPI
            | CommandStatus::ESME_RINVOPTPARSTREAM
            | CommandStatus::ESME_ROPTPARNOTALLWD
            | CommandStatus::ESME_RINVPARLEN
            | CommandStatus::ESME_RMISSINGOPTPARAM
            | CommandStatus::ESME_RINVOPTPARAMVAL
    )
}

/// What one failed send means for the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Back to the queue for another try.
    Retry,
    /// To the dead letters, for this reason (a `smscd_dead_lettered_total` label).
    DeadLetter(&'static str),
}

/// The verdict on a failed send: `status` the ESME answered (None: no answer in time), after
/// `attempts` answers so far including this one, with at most `max_attempts` allowed.
pub fn verdict(status: Option<CommandStatus>, attempts: u32, max_attempts: u32) -> Verdict {
    match status {
        Some(s) if is_permanent(s) => Verdict::DeadLetter("refused"),
        // Back-pressure ("full, come back later") is no failure of the message: it costs no
        // attempt, or a burst that fills the ESME's queue would dead-letter what it merely delays.
        // The item still ages out with the store's ttl.
        Some(s) if is_backpressure(s) => Verdict::Retry,
        _ if attempts >= max_attempts => Verdict::DeadLetter("attempts"),
        _ => Verdict::Retry,
    }
}

/// The ESME is full or over its rate: the same PDU will be taken later.
pub fn is_backpressure(s: CommandStatus) -> bool {
    s == CommandStatus::ESME_RTHROTTLED || s == CommandStatus::ESME_RMSGQFUL
}

/// Answers counted per handed-out item of one account (cleared when it is settled for good).
/// Kept by this replica: a restart, or another replica claiming the item, starts it again. An
/// item that leaves otherwise (aged out, claimed elsewhere) leaves its count until the loop
/// ends: only items that failed at least once, so few.
type Attempts = Arc<Mutex<HashMap<DeliveryId, u32>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drop what is older than the correlation TTL and refresh the dead-letter gauge.
async fn age_out(core: &Core, name: &str) {
    let cfg = core.config.get();
    let (StoreConfig::Memory { ttl } | StoreConfig::Redis { ttl, .. }) = &cfg.store;
    match core.store.age_out(name, *ttl).await {
        Ok(n) if n > 0 => {
            tracing::warn!(account = %name, dropped = n, ttl = ?ttl, "deliveries older than store.ttl dropped");
            core.metrics.dropped("expired", n);
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(account = %name, error = %e, "ageing out failed"),
    }
    if let Ok(n) = core.store.dead_letters(name).await {
        core.metrics.dead_letters.get_or_create(&AccountLabel { account: name.to_owned() }).set(n as i64);
    }
}

/// The account is gone from the config (and not back under the same name): its queue too.
async fn purge(core: &Core, name: &str) {
    if core.accounts.get(name).is_some() {
        return;
    }
    match core.store.purge(name).await {
        Ok(n) => {
            if n > 0 {
                tracing::warn!(account = %name, dropped = n, "account removed: its queued deliveries purged");
            }
            core.metrics.dropped("account_removed", n);
            core.metrics.dead_letters.remove(&AccountLabel { account: name.to_owned() });
        }
        Err(e) => tracing::warn!(account = %name, error = %e, "queue of a removed account not purged"),
    }
}

pub async fn run(core: Arc<Core>, account: Arc<AccountState>) {
    let name = account.system_id.clone();
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let (acks, ack_rx) = mpsc::unbounded_channel();
    // Ends when the loop and every delivery it spawned have dropped their sender, so no ack
    // of a delivered item is left behind.
    tokio::spawn(acker(core.clone(), name.clone(), ack_rx));
    let attempts: Attempts = Arc::default();
    let mut busy_until = None;
    let mut aged = Instant::now();
    age_out(&core, &name).await;
    while !core.stop.is_cancelled() && !account.is_removed() {
        if aged.elapsed() >= AGE_EVERY {
            aged = Instant::now();
            age_out(&core, &name).await;
        }
        if !account.has_receiver() {
            wait(&core, &account, IDLE_POLL).await;
            continue;
        }
        let mut permits = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = core.stop.cancelled() => return,
        };
        let extra = limit.available_permits().min(BATCH - 1);
        if extra > 0 {
            if let Ok(more) = limit.clone().try_acquire_many_owned(extra as u32) {
                permits.merge(more);
            }
        }
        let items = match core.store.next_batch(&name, permits.num_permits()).await {
            Ok(items) => items,
            Err(e) => {
                drop(permits);
                tracing::warn!(account = %name, error = %e, "store unavailable for deliveries");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if items.is_empty() {
            drop(permits);
            let poll = if busy_until.is_some_and(|t| Instant::now() < t) { BUSY_POLL } else { IDLE_POLL };
            wait(&core, &account, poll).await;
            continue;
        }
        busy_until = Some(Instant::now() + BUSY_FOR);
        let mut unsent: Vec<DeliveryId> = Vec::new();
        // One task per batch rather than per item; each item still settles on its own answer.
        let sends = FuturesUnordered::new();
        for (id, d) in items {
            let (Some(session), Some(permit)) = (account.pick_receiver(), permits.split(1)) else {
                unsent.push(id);
                continue;
            };
            let body = match Pdu::decode(d.pdu) {
                Ok(Pdu { body: b @ Body::DeliverSm(_), .. }) => b,
                other => {
                    tracing::error!(account = %name, ?other, "undecodable queued delivery: dropped");
                    let _ = acks.send(id);
                    continue;
                }
            };
            let item = Item {
                core: core.clone(),
                account: name.clone(),
                acks: acks.clone(),
                attempts: attempts.clone(),
                id,
                our_id: d.our_id,
            };
            // A free window slot: sent from here and settled on the session task by a callback
            // (no task, no wake-up per item). A full window: a waiting send in this batch's task.
            match session.try_reserve() {
                Ok(slot) => slot.send_with(
                    body,
                    Box::new(move |_, r| {
                        let _permit = permit;
                        item.settle(r);
                    }),
                ),
                Err(_) => sends.push(async move {
                    let _permit = permit;
                    item.settle(session.request(body).await);
                }),
            }
        }
        if !sends.is_empty() {
            tokio::spawn(sends.collect::<()>());
        }
        // The receiver went away mid-batch: back to the queue, in reverse so that each goes
        // to the front ahead of the ones after it.
        for id in unsent.into_iter().rev() {
            let _ = core.store.nack(&name, id).await;
        }
    }
    if account.is_removed() {
        purge(&core, &name).await;
    }
}

/// A handed-out item on its way to a session, until its answer settles it.
struct Item {
    core: Arc<Core>,
    account: String,
    acks: mpsc::UnboundedSender<DeliveryId>,
    attempts: Attempts,
    id: DeliveryId,
    /// Our message id (receipts), for the logs.
    our_id: Option<String>,
}

impl Item {
    /// Acknowledged on deliver_sm_resp status 0; otherwise judged by [`verdict`]: back to the
    /// queue after a short delay or to the dead letters (on a task of its own: the rare path).
    fn settle(self, r: Result<Pdu, SessionError>) {
        let Item { core, account: name, acks, attempts, id, our_id } = self;
        if matches!(&r, Ok(p) if p.command_status.is_ok()) {
            core.metrics.delivery("delivered");
            {
                let mut a = lock(&attempts);
                if !a.is_empty() {
                    a.remove(&id);
                }
            }
            // The acker outlives every sender: a send only fails after a panic there.
            let _ = acks.send(id);
            return;
        }
        // An answer (or its absence) is an attempt; a session that went away is not the ESME's.
        let answer = match &r {
            Ok(p) => Some(Some(p.command_status)),
            Err(SessionError::Timeout(_)) => Some(None),
            Err(_) => None,
        };
        let queues = core.config.get().queues.clone();
        let v = match answer {
            Some(status) => {
                let n = {
                    let mut a = lock(&attempts);
                    let n = a.entry(id).or_insert(0);
                    if !status.is_some_and(is_backpressure) {
                        *n += 1;
                    }
                    *n
                };
                verdict(status, n, queues.max_attempts)
            }
            None => Verdict::Retry,
        };
        match (&r, v) {
            (_, Verdict::DeadLetter(reason)) => {
                tracing::warn!(account = %name, id = ?our_id, ?reason, answer = ?r.as_ref().map(|p| p.command_status),
                    "deliver_sm given up: dead-lettered");
                lock(&attempts).remove(&id);
                core.metrics.delivery("dead_lettered");
                core.metrics.dead_lettered.get_or_create(&ReasonLabel { reason }).inc();
                tokio::spawn(async move {
                    if let Err(e) =
                        core.store.dead_letter(&name, id, reason, queues.dead_letters_per_account).await
                    {
                        // Still handed out: retried later (the next answer decides again).
                        tracing::warn!(account = %name, error = %e, "dead letter not stored: retrying");
                        let _ = core.store.nack(&name, id).await;
                        return;
                    }
                    if let Ok(n) = core.store.dead_letters(&name).await {
                        core.metrics
                            .dead_letters
                            .get_or_create(&AccountLabel { account: name.clone() })
                            .set(n as i64);
                    }
                });
                return;
            }
            (Ok(p), Verdict::Retry) => {
                tracing::debug!(account = %name, status = %p.command_status, id = ?our_id, "deliver_sm refused: retrying")
            }
            (Err(e), Verdict::Retry) => {
                tracing::debug!(account = %name, error = %e, "deliver_sm failed: retrying")
            }
        }
        core.metrics.delivery("retried");
        tokio::spawn(async move {
            tokio::time::sleep(RETRY_DELAY).await;
            let _ = core.store.nack(&name, id).await;
        });
    }
}

/// Acknowledges delivered items in batches: whatever arrived while the previous batch was
/// being acknowledged goes in the next one.
async fn acker(core: Arc<Core>, name: String, mut rx: mpsc::UnboundedReceiver<DeliveryId>) {
    let mut ids = Vec::with_capacity(ACK_BATCH);
    while rx.recv_many(&mut ids, ACK_BATCH).await > 0 {
        if let Err(e) = core.store.ack_many(&name, &ids).await {
            tracing::warn!(account = %name, count = ids.len(), error = %e, "ack failed: may be delivered twice");
        }
        ids.clear();
    }
}

async fn wait(core: &Core, account: &AccountState, poll: Duration) {
    tokio::select! {
        _ = account.wake.notified() => {}
        _ = tokio::time::sleep(poll) => {}
        _ = core.stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_statuses_end_at_once_others_after_the_cap() {
        let p = Some(CommandStatus::ESME_RX_P_APPN);
        assert_eq!(verdict(p, 1, 10), Verdict::DeadLetter("refused"));
        assert_eq!(verdict(Some(CommandStatus::ESME_RX_R_APPN), 1, 10), Verdict::DeadLetter("refused"));
        // Back-pressure never runs out of attempts (the relay bench at 1 x 256 dead-lettered
        // 7 k receipts a run when a full queue cost attempts).
        for full in [CommandStatus::ESME_RTHROTTLED, CommandStatus::ESME_RMSGQFUL] {
            assert_eq!(verdict(Some(full), 99, 3), Verdict::Retry, "{full:?}");
        }
        for transient in [
            Some(CommandStatus::ESME_RX_T_APPN),
            Some(CommandStatus::ESME_RSYSERR),
            Some(CommandStatus(0x0400)),
            None,
        ] {
            assert_eq!(verdict(transient, 1, 3), Verdict::Retry, "{transient:?}");
            assert_eq!(verdict(transient, 2, 3), Verdict::Retry, "{transient:?}");
            assert_eq!(verdict(transient, 3, 3), Verdict::DeadLetter("attempts"), "{transient:?}");
        }
        assert!(!is_permanent(CommandStatus::ESME_ROK));
    }
}
