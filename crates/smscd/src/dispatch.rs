//! A submit routed to a chain: targets are tried in order until one accepts it.
//!
//! The next target is tried when one is down (no bound session), throttled (our rate for it, or
//! it answered ESME_RTHROTTLED / ESME_RMSGQFUL, after which it is skipped briefly), its window
//! stays full, or it answers a transient error ([`crate::upstream::moves_on`]: ESME_RTHROTTLED,
//! ESME_RMSGQFUL, ESME_RSYSERR, ESME_RX_T_APPN, ESME_RSUBMITFAIL, ESME_RINVBNDSTS,
//! ESME_RUNKNOWNERR, or no answer at all). Any other error status is the message's fault and goes
//! back to the ESME as is. When every target fails the ESME gets ESME_RTHROTTLED if one was
//! throttled or full (retry later), else the last status.

use crate::core::Core;
use crate::router::Target;
use crate::sim::unix_ms;
use crate::store::Correlation;
use crate::upstream::SubmitFailure;
use smpp::receipt::normalize_message_id;
use smpp::{CommandStatus, SubmitSm};

/// The outcome: our message id or the status for the ESME, and the target label for metrics.
pub async fn dispatch(
    core: &Core,
    account: &str,
    sm: SubmitSm,
    chain: &[Target],
) -> (Result<String, CommandStatus>, String) {
    // A shared store that does not answer could not correlate the receipt: refuse the submit
    // (ESME_RSYSERR, transient: the ESME retries) rather than accept it and lose the receipt.
    if wants_receipt(sm.registered_delivery) && !core.store.healthy() {
        return (Err(CommandStatus::ESME_RSYSERR), "store".to_owned());
    }
    let mut last = CommandStatus::ESME_RSYSERR;
    let mut busy = false;
    for target in chain {
        match target {
            Target::Sim => {
                let id = core.ids.next_id();
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
                match up.submit(core, sm.clone()).await {
                    Ok(upstream_id) => {
                        let id = core.ids.next_id();
                        if wants_receipt(rd) {
                            let c = Correlation {
                                account: account.to_owned(),
                                our_id: id.clone(),
                                submitted_at_ms: unix_ms(),
                                registered_delivery: rd,
                            };
                            let key = normalize_message_id(&upstream_id);
                            if let Err(e) = core.store.put_correlation(name, &key, c).await {
                                // The upstream has the message; refusing now would only duplicate it.
                                tracing::warn!(upstream = %name, error = %e, "correlation not stored: receipt will be lost");
                            }
                        }
                        return (Ok(id), name.to_string());
                    }
                    Err(SubmitFailure::Final(s)) => return (Err(s), name.to_string()),
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
    (Err(status), "none".to_owned())
}

/// Whether registered_delivery asks for any receipt (final or intermediate).
pub fn wants_receipt(rd: u8) -> bool {
    rd & 0x03 != 0 || rd & 0x10 != 0
}
