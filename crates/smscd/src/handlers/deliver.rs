//! The deliver seam: a deliver_sm (or data_sm) from an upstream, MO or receipt, goes through
//! `on_pdu("deliver_sm")` (`on_pdu("data_sm")`) before [`crate::receipts::on_upstream_deliver`]
//! queues it for an ESME. The handler sees the PDU as the upstream sent it (a receipt still
//! carries the upstream's id: correlation and the id rewrite come after it).
//!
//! The answer is the upstream's deliver_sm_resp (data_sm_resp) status: `reply()` answers 0 and
//! forwards nothing, `reject(status)` that status, None the status of the usual queueing with the
//! handler's changes applied. A failed call goes on as it came (`on_error: continue`) or is
//! refused ESME_RX_T_APPN (`reject`): transient, so the upstream redelivers it rather than lose it.

use super::{Handlers, Hook, PduVerdict, SessionView};
use crate::core::Core;
use smpp::receipt::MessageIdFormat;
use smpp::{CommandStatus, DeliverSm};
use smsc_api::smscd_config::OnHandlerError;
use std::sync::Arc;

/// The hook for a deliver_sm (`data`: a data_sm) when the script registered it; None (no
/// handlers, or not that hook) leaves the upstream's PDU on its usual path.
pub fn wanted(core: &Core, data: bool) -> Option<(Arc<Handlers>, Hook)> {
    let hook = if data { Hook::DataSm } else { Hook::DeliverSm };
    core.handlers.as_ref().filter(|h| h.wants(hook)).map(|h| (h.clone(), hook))
}

/// Ask the handler about `dsm` from `upstream`, then queue it (or not) as it says; the status
/// for the upstream's response.
pub async fn deliver(
    core: &Arc<Core>,
    h: &Handlers,
    hook: Hook,
    upstream: &str,
    id_format: MessageIdFormat,
    dsm: DeliverSm,
    session: SessionView,
) -> Result<(), CommandStatus> {
    // Only `continue` needs the PDU as it came, should the handler fail.
    let original = (h.on_error() == OnHandlerError::Continue).then(|| dsm.clone());
    match h.on_pdu(hook, dsm, session).await {
        Ok(PduVerdict::Continue(dsm)) => {
            crate::receipts::on_upstream_deliver(core, upstream, id_format, dsm).await
        }
        Ok(PduVerdict::Reply { status, .. }) if status.is_ok() => {
            core.metrics.receipt("handler_answered");
            Ok(())
        }
        Ok(PduVerdict::Reply { status, .. } | PduVerdict::Reject(status)) => {
            core.metrics.receipt("handler_rejected");
            Err(status)
        }
        // Refused by the engine for a PDU from an upstream (a wrong_type failure); not reached.
        Ok(PduVerdict::Route(..)) => Err(CommandStatus::ESME_RX_T_APPN),
        Err(_) => match original {
            Some(dsm) => crate::receipts::on_upstream_deliver(core, upstream, id_format, dsm).await,
            None => Err(CommandStatus::ESME_RX_T_APPN),
        },
    }
}
