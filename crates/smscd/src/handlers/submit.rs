//! The submit seam: a submit_sm deferred by the ESME session goes through `on_pdu("submit_sm")`,
//! then is answered here (`reply`, `reject`) or routed on (`route`, None) through
//! [`crate::dispatch::start`] like any other deferred submit, with the PDU as the handler left it.
//! A data_sm from an ESME (a submit in another layout) goes through `on_pdu("data_sm")` the same
//! way ([`data_sm`]).

use super::{Handlers, Hook, PduVerdict, SessionView};
use crate::core::Core;
use crate::dispatch::{Budget, Job};
use crate::router::Target;
use smpp::{CommandStatus, SubmitSm};
use smsc_api::smscd_config::OnHandlerError;
use std::sync::Arc;

/// The route label of submits a handler answered itself.
pub const ROUTE: &str = "handler";

/// Run `on_pdu("submit_sm")` for `sm`, then answer or route it (on a task: the session task
/// must not wait).
pub fn start(h: Arc<Handlers>, job: Job, sm: SubmitSm, session: SessionView) {
    tokio::spawn(async move {
        // Only `continue` needs the PDU as it came, should the handler fail.
        let original = (h.on_error() == OnHandlerError::Continue).then(|| sm.clone());
        match h.on_pdu(Hook::SubmitSm, sm, session).await {
            Ok(PduVerdict::Reply { message_id, status }) => {
                if status.is_ok() {
                    let id = message_id.unwrap_or_else(|| job.core.ids.next_id());
                    job.finish(Ok(id), ROUTE);
                } else {
                    job.finish(Err(status), ROUTE);
                }
            }
            Ok(PduVerdict::Reject(status)) => job.finish(Err(status), ROUTE),
            Ok(PduVerdict::Route(chain, sm)) => route(job, chain, sm),
            Ok(PduVerdict::Continue(sm)) => default_route(job, sm),
            Err(_) => match original {
                Some(sm) => default_route(job, sm),
                // on_error: reject. System error: the ESME may retry.
                None => job.finish(Err(CommandStatus::ESME_RSYSERR), ROUTE),
            },
        }
    });
}

fn default_route(job: Job, sm: SubmitSm) {
    let chain = job.core.router.get().route(&job.account, &sm.source.addr, &sm.destination.addr).clone();
    route(job, chain, sm)
}

fn route(mut job: Job, chain: Arc<[Target]>, sm: SubmitSm) {
    if chain.is_empty() {
        return job.finish(Err(CommandStatus::ESME_RINVDSTADR), "none");
    }
    job.chain = chain;
    crate::dispatch::start(job, sm);
}

/// Run `on_pdu("data_sm")` for a data_sm from `account` (as a submit_sm: `sm`), then answer or
/// route it as [`start`] does a submit: our message id or the status for the data_sm_resp.
pub async fn data_sm(
    h: &Handlers,
    core: &Core,
    account: &str,
    sm: SubmitSm,
    session: SessionView,
    budget: &Budget,
) -> Result<String, CommandStatus> {
    let original = (h.on_error() == OnHandlerError::Continue).then(|| sm.clone());
    match h.on_pdu(Hook::DataSm, sm, session).await {
        Ok(PduVerdict::Reply { message_id, status }) if status.is_ok() => {
            Ok(message_id.unwrap_or_else(|| core.ids.next_id()))
        }
        Ok(PduVerdict::Reply { status, .. } | PduVerdict::Reject(status)) => Err(status),
        Ok(PduVerdict::Route(chain, sm)) => {
            crate::dispatch::submit_via(core, account, sm, Some(chain), budget).await
        }
        Ok(PduVerdict::Continue(sm)) => crate::dispatch::submit(core, account, sm, budget).await,
        Err(_) => match original {
            Some(sm) => crate::dispatch::submit(core, account, sm, budget).await,
            None => Err(CommandStatus::ESME_RSYSERR),
        },
    }
}
