//! query_sm, cancel_sm and replace_sm against the message store of held submits
//! ([`crate::store::queue`]), for the bound account's own messages only.
//!
//! What the store knows: submits held by store-and-forward while they wait; submits an upstream
//! took (relayed at once, or held then sent), ENROUTE until their final receipt, for
//! `store_and_forward.keep_relayed`; and final states (a receipt's, or expired, cancelled,
//! undeliverable by us) for `store_and_forward.keep_final`. With the Redis store every replica
//! reads the same records. A relayed submit that asked for no receipt stays ENROUTE; with
//! `keep_relayed: 0s` relayed submits are not recorded and query_sm answers ESME_RQUERYFAIL for
//! them as for an unknown id. cancel_sm / replace_sm of a relayed submit: the upstream has it,
//! ESME_RCANCELFAIL / ESME_RREPLACEFAIL.
//!
//! Statuses (SMPP 3.4 sections 4.8, 4.9, 4.10): query_sm of an unknown id: ESME_RQUERYFAIL;
//! cancel_sm / replace_sm of an unknown id: ESME_RINVMSGID; of a message already final or
//! being sent right now: ESME_RCANCELFAIL / ESME_RREPLACEFAIL; cancel_sm without a message_id
//! (cancel every message from a source to a destination) is not supported: ESME_RCANCELFAIL.
//! A replace_sm with a bad schedule or validity gets ESME_RINVSCHED / ESME_RINVEXPIRY and
//! changes nothing.

use crate::core::Core;
use crate::sim::unix_ms;
use crate::store::queue::{Change, Lookup, Replacement};
use bytes::Bytes;
use smpp::{Body, CommandStatus, Pdu, QuerySm, QuerySmResp, ReplaceSm};

/// message_state ENROUTE: held, waiting to be sent (queued or scheduled).
const ENROUTE: u8 = 1;

fn id_text(b: &Bytes) -> Result<String, CommandStatus> {
    let id = std::str::from_utf8(b).map_err(|_| CommandStatus::ESME_RINVMSGID)?.trim_end_matches('\0');
    if id.is_empty() || id.len() > 64 {
        return Err(CommandStatus::ESME_RINVMSGID);
    }
    Ok(id.to_owned())
}

pub async fn query(core: &Core, account: &str, q: &QuerySm) -> Result<Body, CommandStatus> {
    let id = id_text(&q.message_id).map_err(|_| CommandStatus::ESME_RQUERYFAIL)?;
    let found = core.queue.lookup(account, &id, unix_ms()).await.map_err(|e| {
        tracing::warn!(account, error = %e, "query_sm: store unavailable");
        CommandStatus::ESME_RSYSERR
    })?;
    let (final_date, message_state) = match found {
        None => return Err(CommandStatus::ESME_RQUERYFAIL),
        Some(Lookup::Waiting { .. }) | Some(Lookup::Relayed { .. }) => (Bytes::new(), ENROUTE),
        Some(Lookup::Ended { state, at_ms }) => {
            (Bytes::from(smpp::time::format_absolute(at_ms)), state.message_state())
        }
    };
    Ok(Body::QuerySmResp(QuerySmResp {
        message_id: q.message_id.clone(),
        final_date,
        message_state,
        error_code: 0,
    }))
}

pub async fn cancel(core: &Core, account: &str, message_id: &Bytes) -> Result<Body, CommandStatus> {
    if message_id.iter().all(|b| *b == 0) {
        // Cancel-by-addresses (no id): not supported, and said so rather than cancelling nothing.
        return Err(CommandStatus::ESME_RCANCELFAIL);
    }
    let id = id_text(message_id)?;
    let keep = core.config.get().store_and_forward.keep_final;
    // Its route, for the metric's label (a rare operation: one more read is fine).
    let route = match core.queue.lookup(account, &id, unix_ms()).await {
        Ok(Some(Lookup::Waiting { message, .. })) => message.route,
        _ => "default".to_owned(),
    };
    let change = core.queue.cancel(account, &id, unix_ms(), keep).await.map_err(|e| {
        tracing::warn!(account, error = %e, "cancel_sm: store unavailable");
        CommandStatus::ESME_RSYSERR
    })?;
    match change {
        Change::Done => {
            core.metrics.forwarded(account, &route, "cancelled", 1);
            Ok(Body::CancelSmResp)
        }
        Change::Unknown => Err(CommandStatus::ESME_RINVMSGID),
        Change::Ended | Change::InFlight => Err(CommandStatus::ESME_RCANCELFAIL),
    }
}

pub async fn replace(core: &Core, account: &str, r: &ReplaceSm) -> Result<Body, CommandStatus> {
    let id = id_text(&r.message_id)?;
    let now = unix_ms();
    let unavailable = |e: crate::store::StoreError| {
        tracing::warn!(account, error = %e, "replace_sm: store unavailable");
        CommandStatus::ESME_RSYSERR
    };
    let message = match core.queue.lookup(account, &id, now).await.map_err(unavailable)? {
        None => return Err(CommandStatus::ESME_RINVMSGID),
        Some(Lookup::Ended { .. })
        | Some(Lookup::Relayed { .. })
        | Some(Lookup::Waiting { claimed: true, .. }) => return Err(CommandStatus::ESME_RREPLACEFAIL),
        Some(Lookup::Waiting { message, .. }) => message,
    };
    let route = message.route.clone();
    let Ok(Pdu { body: Body::SubmitSm(mut sm), .. }) = Pdu::decode(message.submit.clone()) else {
        return Err(CommandStatus::ESME_RREPLACEFAIL);
    };
    let due_ms = smpp::time::resolve(&r.schedule_delivery_time, now)
        .map_err(|_| CommandStatus::ESME_RINVSCHED)?
        .map(|d| d.max(now));
    let max = core.config.get().store_and_forward.max_validity;
    let expires_ms =
        match smpp::time::resolve(&r.validity_period, now).map_err(|_| CommandStatus::ESME_RINVEXPIRY)? {
            Some(v) if v <= now => return Err(CommandStatus::ESME_RINVEXPIRY),
            Some(v) => Some(v.min(message.submitted_ms.saturating_add(max.as_millis() as u64))),
            None => None,
        };
    if due_ms.unwrap_or(message.due_ms) >= expires_ms.unwrap_or(message.expires_ms) {
        return Err(CommandStatus::ESME_RINVSCHED);
    }
    sm.short_message = r.short_message.clone();
    sm.registered_delivery = r.registered_delivery;
    sm.sm_default_msg_id = r.sm_default_msg_id;
    // The new short_message replaces any payload TLV of the original.
    sm.tlvs.remove(smpp::Tag::MESSAGE_PAYLOAD);
    let submit = Pdu::new(0, Body::SubmitSm(sm)).to_bytes().map_err(|_| CommandStatus::ESME_RREPLACEFAIL)?;
    let change = core
        .queue
        .replace(account, &id, &Replacement { submit, due_ms, expires_ms }, now)
        .await
        .map_err(unavailable)?;
    match change {
        Change::Done => {
            core.metrics.forwarded(account, &route, "replaced", 1);
            Ok(Body::ReplaceSmResp)
        }
        Change::Unknown => Err(CommandStatus::ESME_RINVMSGID),
        Change::Ended | Change::InFlight => Err(CommandStatus::ESME_RREPLACEFAIL),
    }
}
