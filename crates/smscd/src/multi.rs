//! submit_multi and data_sm from ESMEs, and data_sm from upstreams.
//!
//! submit_multi fans out to one submit_sm per SME destination, each routed like a submit_sm and
//! all under one message id (ours, in the submit_multi_resp; the receipts carry it too and tell
//! the destinations apart by their source address). Destinations no target takes are listed in
//! unsuccess_smes with their status (the upstream's, or ESME_RSUBMITFAIL when no target could
//! take it now). On a route that stores and forwards, a destination no target can take now (or
//! every destination, when the submit_multi is scheduled) is held like a submit_sm instead
//! ([`crate::forward`]): accepted, not in unsuccess_smes. Each held destination is a message of
//! its own in the store, under `<id>.<n>` (`n` its place in the destination list, from 0; our
//! ids never hold a `.`); it is sent, and its receipts come, under the submit_multi's id
//! (see [`crate::forward::public_id`]); query_sm / cancel_sm / replace_sm reach it by
//! `<id>.<n>`. None taken: the whole PDU gets the first failure's status. A
//! distribution list is refused as a whole with ESME_RINVDLNAME (we keep no lists), no
//! destination at all with ESME_RINVNUMDESTS; nothing is sent then.
//!
//! With the script's `on_pdu("submit_sm")`, each destination goes through it as the submit_sm
//! it becomes (so a policy written for submit_sm cannot be bypassed by a submit_multi): None
//! sends it with the handler's changes, `route` along its chain, `reply()` counts it accepted
//! and sends nothing, `reject(status)` (or a reply with an error status) lists it in
//! unsuccess_smes with that status, as does ESME_RSYSERR for a failed call under `on_error:
//! reject`. unsuccess_smes names the destination as the ESME wrote it.
//!
//! data_sm from an ESME is a submit: it goes the submit_sm way ([`crate::dispatch`], including
//! store-and-forward) as a submit_sm whose content is the message_payload TLV, and is answered
//! data_sm_resp. data_sm from an upstream is a deliver_sm (receipt or MO) the same way; the ESME
//! gets it as deliver_sm.

use crate::core::Core;
use crate::forward::Sent;
use crate::handlers::{Handlers, Hook, PduVerdict, SessionView};
use crate::router::Target;
use bytes::Bytes;
use smpp::{
    Body, CommandStatus, DataSm, DeliverSm, DestAddress, SubmitMulti, SubmitMultiResp, SubmitSm, UnsuccessSme,
};
use smsc_api::smscd_config::OnHandlerError;
use std::sync::Arc;

/// The submit_sm a data_sm stands for.
pub fn data_to_submit(d: DataSm) -> SubmitSm {
    SubmitSm {
        service_type: d.service_type,
        source: d.source,
        destination: d.destination,
        esm_class: d.esm_class,
        registered_delivery: d.registered_delivery,
        data_coding: d.data_coding,
        tlvs: d.tlvs,
        ..SubmitSm::default()
    }
}

/// The deliver_sm a data_sm from an upstream stands for (same layout as a submit_sm).
pub fn data_to_deliver(d: DataSm) -> DeliverSm {
    data_to_submit(d)
}

/// One destination of a submit_multi as a submit_sm.
fn part(m: &SubmitMulti, destination: smpp::Address) -> SubmitSm {
    SubmitSm {
        service_type: m.service_type.clone(),
        source: m.source.clone(),
        destination,
        esm_class: m.esm_class,
        protocol_id: m.protocol_id,
        priority_flag: m.priority_flag,
        schedule_delivery_time: m.schedule_delivery_time.clone(),
        validity_period: m.validity_period.clone(),
        registered_delivery: m.registered_delivery,
        replace_if_present_flag: m.replace_if_present_flag,
        data_coding: m.data_coding,
        sm_default_msg_id: m.sm_default_msg_id,
        short_message: m.short_message.clone(),
        tlvs: m.tlvs.clone(),
    }
}

/// What became of one destination.
enum Outcome {
    Sent(Sent),
    /// Held for store-and-forward: its store id, or why not.
    Held(Result<String, CommandStatus>),
    /// Answered by the script's handler (`pdu.reply()`): accepted, nothing sent.
    Answered,
    /// Refused by the script's handler with this status.
    Refused(CommandStatus),
}

/// One destination's submit_sm through the script's `on_pdu("submit_sm")`: what to send and
/// the chain the handler chose, or what became of it.
async fn ask(
    h: &Handlers,
    sm: SubmitSm,
    session: SessionView,
) -> Result<(SubmitSm, Option<Arc<[Target]>>), Outcome> {
    // Only `continue` needs the PDU as it came, should the handler fail.
    let original = (h.on_error() == OnHandlerError::Continue).then(|| sm.clone());
    match h.on_pdu(Hook::SubmitSm, sm, session).await {
        Ok(PduVerdict::Continue(sm)) => Ok((sm, None)),
        Ok(PduVerdict::Route(chain, _)) if chain.is_empty() => {
            Err(Outcome::Refused(CommandStatus::ESME_RINVDSTADR))
        }
        Ok(PduVerdict::Route(chain, sm)) => Ok((sm, Some(chain))),
        Ok(PduVerdict::Reply { status, .. }) if status.is_ok() => Err(Outcome::Answered),
        Ok(PduVerdict::Reply { status, .. } | PduVerdict::Reject(status)) => Err(Outcome::Refused(status)),
        Err(_) => match original {
            Some(sm) => Ok((sm, None)),
            // on_error: reject. System error, as for a submit_sm.
            None => Err(Outcome::Refused(CommandStatus::ESME_RSYSERR)),
        },
    }
}

/// Answer a submit_multi from `account`; `hook`: the script's `on_pdu("submit_sm")` and the
/// ESME's session, when registered.
pub async fn submit_multi(
    core: &Arc<Core>,
    account: &str,
    m: SubmitMulti,
    hook: Option<(Arc<Handlers>, SessionView)>,
) -> Result<Body, CommandStatus> {
    if m.destinations.is_empty() || m.destinations.len() > 254 {
        return Err(CommandStatus::ESME_RINVNUMDESTS);
    }
    if m.destinations.iter().any(|d| matches!(d, DestAddress::DistributionList(_))) {
        return Err(CommandStatus::ESME_RINVDLNAME);
    }
    let first = part(&m, smpp::Address::default());
    crate::forward::check_times(&first)?;
    let id = core.ids.next_id();
    let parts = m.destinations.iter().filter_map(|d| match d {
        DestAddress::Sme(a) => Some(a.clone()),
        DestAddress::DistributionList(_) => None,
    });
    let scheduled = crate::forward::is_scheduled(&first);
    let sends = parts.enumerate().map(|(n, address)| {
        let sm = part(&m, address.clone());
        let id = id.clone();
        let hook = hook.clone();
        async move {
            let (sm, chain) = match hook {
                None => (sm, None),
                Some((h, session)) => match ask(&h, sm, session).await {
                    Ok(asked) => asked,
                    Err(outcome) => return (address, outcome),
                },
            };
            let holds = crate::forward::holds(core, account, &sm);
            let outcome = if scheduled && holds {
                Outcome::Held(crate::forward::hold_with_id(core, account, &sm, format!("{id}.{n}")).await)
            } else {
                match crate::forward::send_via(core, account, &id, sm.clone(), chain).await {
                    Sent::NotNow if holds => Outcome::Held(
                        crate::forward::hold_with_id(core, account, &sm, format!("{id}.{n}")).await,
                    ),
                    sent => Outcome::Sent(sent),
                }
            };
            (address, outcome)
        }
    });
    let outcomes = futures::future::join_all(sends).await;
    let mut unsuccess = Vec::new();
    let mut relayed = false;
    for (address, outcome) in outcomes {
        let status = match outcome {
            Outcome::Sent(Sent::Taken) => {
                relayed = true;
                continue;
            }
            Outcome::Held(Ok(_)) | Outcome::Answered => continue,
            Outcome::Held(Err(s)) | Outcome::Sent(Sent::Refused(s)) | Outcome::Refused(s) => s,
            Outcome::Sent(Sent::NotNow) => CommandStatus::ESME_RSUBMITFAIL,
        };
        unsuccess.push(UnsuccessSme { address, error_status_code: status });
    }
    if relayed {
        crate::forward::relayed(core, account, &id).await;
    }
    if unsuccess.len() == m.destinations.len() {
        return Err(unsuccess.first().map_or(CommandStatus::ESME_RSUBMITFAIL, |u| u.error_status_code));
    }
    Ok(Body::SubmitMultiResp(SubmitMultiResp {
        message_id: Bytes::from(id),
        unsuccess_smes: unsuccess,
        ..Default::default()
    }))
}
