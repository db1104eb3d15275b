//! The deliver seam: a deliver_sm (or data_sm) from an upstream or the sim, MO or receipt, goes
//! through `on_pdu("deliver_sm")` (`on_pdu("data_sm")`) before it is queued for an ESME.
//!
//! MO is shown to the handler as the upstream sent it, then routed by `routing.mo`. A receipt is
//! matched with the message it reports on first ([`crate::receipts`]), so the handler sees it
//! as the ESME will: with our id in its receipted_message_id TLV and text, the upstream's id and
//! the submitting account beside them ([`ReceiptMatch`]); a billing hook keyed on the id the
//! ESME got can match it. A receipt that matches nothing is shown as it came, and its changes
//! are matched again (a script that repairs an upstream's ids).
//!
//! The answer is the upstream's deliver_sm_resp (data_sm_resp) status: `reply()` answers 0 and
//! forwards nothing, `reject(status)` that status, None the status of the usual queueing with the
//! handler's changes applied. A failed call goes on as it came (`on_error: continue`) or is
//! refused ESME_RX_T_APPN (`reject`): transient, so the upstream redelivers it rather than lose it.
//! A parked receipt (answered 0 before its match, see [`crate::receipts`]) has nobody left to
//! refuse it to: a reject drops it and a failure forwards it as it came.

use super::{Handlers, Hook, PduVerdict, ReceiptMatch, SessionView};
use crate::core::Core;
use smpp::receipt::MessageIdFormat;
use smpp::{CommandStatus, DeliverSm};
use smsc_api::smscd_config::OnHandlerError;
use std::sync::Arc;

/// A deliver-side hook the script registered, and the session its PDUs came on.
#[derive(Clone)]
pub struct Hooked {
    pub h: Arc<Handlers>,
    pub hook: Hook,
    pub session: SessionView,
}

/// What the handler made of a PDU from an upstream.
// Returned once and matched at once: boxing the PDU would only add an allocation per PDU.
#[allow(clippy::large_enum_variant)]
pub enum Asked {
    /// Queue it (changed as the handler left it).
    Forward(DeliverSm),
    /// `pdu.reply()`: answered 0, not forwarded.
    Drop,
    /// Answered with this status, not forwarded.
    Refuse(CommandStatus),
}

impl Asked {
    /// The PDU to go on with, or the upstream's answer now (Ok: `reply()`, Err: `reject`),
    /// counted as the handler's.
    pub fn forwarded(self, core: &Core) -> Result<Option<DeliverSm>, CommandStatus> {
        match self {
            Asked::Forward(dsm) => Ok(Some(dsm)),
            Asked::Drop => {
                core.metrics.receipt("handler_answered");
                Ok(None)
            }
            Asked::Refuse(status) => {
                core.metrics.receipt("handler_rejected");
                Err(status)
            }
        }
    }
}

impl Hooked {
    /// Ask the handler about `dsm`; `matched`: the message a receipt reports on; `answered`:
    /// the upstream has its answer already (a parked receipt), so a failure forwards it as is.
    pub async fn ask(&self, dsm: DeliverSm, matched: Option<ReceiptMatch>, answered: bool) -> Asked {
        // Only `continue` (or a receipt nobody can refuse now) needs the PDU as it came.
        let original = (answered || self.h.on_error() == OnHandlerError::Continue).then(|| dsm.clone());
        match self.h.on_pdu_matched(self.hook, dsm, self.session.clone(), matched).await {
            Ok(PduVerdict::Continue(dsm)) => Asked::Forward(dsm),
            Ok(PduVerdict::Reply { status, .. }) if status.is_ok() => Asked::Drop,
            Ok(PduVerdict::Reply { status, .. } | PduVerdict::Reject(status)) => Asked::Refuse(status),
            // Refused by the engine for a PDU from an upstream (a wrong_type failure); not reached.
            Ok(PduVerdict::Route(..)) => Asked::Refuse(CommandStatus::ESME_RX_T_APPN),
            Err(_) => match original {
                Some(dsm) => Asked::Forward(dsm),
                None => Asked::Refuse(CommandStatus::ESME_RX_T_APPN),
            },
        }
    }
}

/// The hook for a deliver_sm (`data`: a data_sm) when the script registered it; None (no
/// handlers, or not that hook) leaves the upstream's PDU on its usual path.
pub fn wanted(core: &Core, data: bool) -> Option<(Arc<Handlers>, Hook)> {
    let hook = if data { Hook::DataSm } else { Hook::DeliverSm };
    core.handlers.as_ref().filter(|h| h.wants(hook)).map(|h| (h.clone(), hook))
}

/// The `session` the sim's receipts come on: `upstream == "sim"`, nothing else.
pub fn sim_session() -> SessionView {
    SessionView { upstream: Some(crate::sim::SIM_UPSTREAM.into()), ..SessionView::default() }
}

/// Ask the handler about `dsm` from `upstream`, then queue it (or not) as it says; the status
/// for the upstream's response.
pub async fn deliver(
    core: &Arc<Core>,
    hooked: Hooked,
    upstream: &str,
    id_format: MessageIdFormat,
    dsm: DeliverSm,
) -> Result<(), CommandStatus> {
    if crate::receipts::is_report(dsm.esm_class) {
        return crate::receipts::on_receipt_hooked(core, upstream, id_format, dsm, hooked).await;
    }
    match hooked.ask(dsm, None, false).await.forwarded(core)? {
        Some(dsm) => crate::receipts::on_upstream_deliver(core, upstream, id_format, dsm).await,
        None => Ok(()),
    }
}
