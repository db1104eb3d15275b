//! One loop per account: hand queued deliveries (receipts, MO) to the account's receiver and
//! transceiver sessions round-robin. An item leaves the queue only on deliver_sm_resp with
//! status 0; otherwise (error status, session gone, no answer) it goes back and is retried.
//! While the account has no receiving session, items wait in the store.
//!
//! Items are fetched in batches (as many as free in-flight slots, one store round trip) and
//! acknowledged in batches by a companion task, so a shared store costs a few commands per
//! batch rather than several per item.

use crate::accounts::AccountState;
use crate::core::Core;
use crate::store::DeliveryId;
use futures::stream::{FuturesUnordered, StreamExt};
use smpp::session::SessionError;
use smpp::{Body, Pdu};
use std::sync::Arc;
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

pub async fn run(core: Arc<Core>, account: Arc<AccountState>) {
    let name = account.system_id.clone();
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let (acks, ack_rx) = mpsc::unbounded_channel();
    // Ends when the loop and every delivery it spawned have dropped their sender, so no ack
    // of a delivered item is left behind.
    tokio::spawn(acker(core.clone(), name.clone(), ack_rx));
    let mut busy_until = None;
    while !core.stop.is_cancelled() && !account.is_removed() {
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
            let item =
                Item { core: core.clone(), account: name.clone(), acks: acks.clone(), id, our_id: d.our_id };
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
}

/// A handed-out item on its way to a session, until its answer settles it.
struct Item {
    core: Arc<Core>,
    account: String,
    acks: mpsc::UnboundedSender<DeliveryId>,
    id: DeliveryId,
    /// Our message id (receipts), for the logs.
    our_id: Option<String>,
}

impl Item {
    /// Acknowledged on deliver_sm_resp status 0, else back to the queue after a short delay (on
    /// a task of its own: the rare path).
    fn settle(self, r: Result<Pdu, SessionError>) {
        let Item { core, account: name, acks, id, our_id } = self;
        if matches!(&r, Ok(p) if p.command_status.is_ok()) {
            core.metrics.delivery("delivered");
            // The acker outlives every sender: a send only fails after a panic there.
            let _ = acks.send(id);
            return;
        }
        match &r {
            Ok(p) => {
                tracing::debug!(account = %name, status = %p.command_status, id = ?our_id, "deliver_sm refused: retrying")
            }
            Err(e) => tracing::debug!(account = %name, error = %e, "deliver_sm failed: retrying"),
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
