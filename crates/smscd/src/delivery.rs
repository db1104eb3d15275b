//! One loop per account: hand queued deliveries (receipts, MO) to the account's receiver and
//! transceiver sessions round-robin. An item leaves the queue only on deliver_sm_resp with
//! status 0; otherwise (error status, session gone, no answer) it goes back and is retried.
//! While the account has no receiving session, items wait in the store.

use crate::accounts::AccountState;
use crate::core::Core;
use smpp::{Body, Pdu};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// deliver_sm in flight per account, over all its sessions (each session's window also applies).
const MAX_IN_FLIGHT: usize = 512;
const IDLE_POLL: Duration = Duration::from_millis(500);
const RETRY_DELAY: Duration = Duration::from_millis(200);

pub async fn run(core: Arc<Core>, account: Arc<AccountState>) {
    let name = account.system_id.clone();
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while !core.stop.is_cancelled() && !account.is_removed() {
        if !account.has_receiver() {
            wait(&core, &account).await;
            continue;
        }
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = core.stop.cancelled() => return,
        };
        let item = match core.store.next_for(&name).await {
            Ok(Some(item)) => item,
            Ok(None) => {
                drop(permit);
                wait(&core, &account).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(account = %name, error = %e, "store unavailable for deliveries");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (id, d) = item;
        let Some(session) = account.pick_receiver() else {
            let _ = core.store.nack(&name, id).await;
            continue;
        };
        let body = match Pdu::decode(d.pdu.clone()) {
            Ok(Pdu { body: b @ Body::DeliverSm(_), .. }) => b,
            other => {
                tracing::error!(account = %name, ?other, "undecodable queued delivery: dropped");
                let _ = core.store.ack(&name, id).await;
                continue;
            }
        };
        let core2 = core.clone();
        let name2 = name.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let r = session.request(body).await;
            let ok = matches!(&r, Ok(p) if p.command_status.is_ok());
            if ok {
                core2.metrics.delivery("delivered");
                if let Err(e) = core2.store.ack(&name2, id).await {
                    tracing::warn!(account = %name2, error = %e, "ack failed: may be delivered twice");
                }
            } else {
                match &r {
                    Ok(p) => {
                        tracing::debug!(account = %name2, status = %p.command_status, id = ?d.our_id, "deliver_sm refused: retrying")
                    }
                    Err(e) => tracing::debug!(account = %name2, error = %e, "deliver_sm failed: retrying"),
                }
                core2.metrics.delivery("retried");
                tokio::time::sleep(RETRY_DELAY).await;
                let _ = core2.store.nack(&name2, id).await;
            }
        });
    }
}

async fn wait(core: &Core, account: &AccountState) {
    tokio::select! {
        _ = account.wake.notified() => {}
        _ = tokio::time::sleep(IDLE_POLL) => {}
        _ = core.stop.cancelled() => {}
    }
}
