//! deliver_sm from upstreams (and the sim): receipts are correlated back to our id and queued
//! for the submitting account; MO messages are queued for the account `routing.mo` names.
//!
//! The upstream's deliver_sm is answered only after the delivery is queued (the caller answers
//! with our result), so a crash before that makes the upstream resend it. What cannot be queued
//! gets a transient status, never a silent 0: the account's queue is full (ESME_RMSGQFUL), the
//! account was removed by a reload or the store does not answer (ESME_RX_T_APPN).
//!
//! A receipt whose id matches no correlation may have overtaken its own submit_sm_resp (the
//! correlation is written once that arrives). It is not retried inside the upstream's window
//! (that would hold one of its few window slots per unknown id): when the message could still
//! be in flight (a submit of ours awaits its answer, or the store is shared with replicas whose
//! submits we cannot see) it is parked: answered 0 at once and matched again from a side queue
//! for up to [`PARK_RETRIES`] (about 2 s), then counted `unmatched` and dropped. At most
//! [`MAX_PARKED`] wait at once; beyond that the upstream gets ESME_RX_T_APPN and redelivers
//! later. Nothing in flight: unmatched at once (an expired or foreign id).
//!
//! With the script's deliver hook ([`crate::handlers::deliver`]), a receipt is shown to the
//! handler once matched, with our id already in it; one that matches nothing, as it came (its
//! repaired id is matched once more).
//!
//! Receipt texts are read by their data_coding: UCS2 (0x08 and the GSM UCS2 groups) as
//! UTF-16BE, anything else one octet per character, so every octet the upstream wrote comes
//! back unchanged except the id. A rewritten text longer than the 254 octets short_message can
//! hold moves to message_payload.

use crate::core::Core;
use crate::handlers::deliver::{Asked, Hooked};
use crate::handlers::ReceiptMatch;
use crate::store::{Correlation, Delivery, StoreError};
use bytes::{Bytes, BytesMut};
use smpp::receipt::{MessageIdFormat, MessageState, Receipt};
use smpp::text::{latin1, ucs2, Alphabet, DataCoding};
use smpp::{Body, CommandStatus, DeliverSm, Pdu};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Waits (ms) between the matches of a parked receipt: a correlation write on a busy store or
/// another replica takes well under this in all (about 2 s).
const PARK_RETRIES: [u64; 7] = [10, 20, 50, 100, 250, 500, 1000];
/// Receipts parked at once (each a task and its PDU), over the process.
pub const MAX_PARKED: usize = 10_000;
static PARKED: AtomicUsize = AtomicUsize::new(0);
/// The most octets short_message holds (SMPP 3.4 sm_length).
const MAX_SHORT_MESSAGE: usize = 254;

/// deliver_sm message types (esm_class bits 2-5, SMPP 3.4 §5.2.12) that report on a message
/// we submitted: correlated like a receipt (or dropped), never routed as MO.
pub mod kind {
    /// SMSC delivery receipt.
    pub const SMSC_RECEIPT: u8 = 0x04;
    /// SME delivery acknowledgement.
    pub const SME_DELIVERY_ACK: u8 = 0x08;
    /// SME manual/user acknowledgement.
    pub const SME_MANUAL_ACK: u8 = 0x10;
    /// Intermediate delivery notification.
    pub const INTERMEDIATE: u8 = 0x20;
}

/// Whether esm_class says a report on a message we submitted (one of [`kind`]), not MO.
pub fn is_report(esm_class: u8) -> bool {
    matches!(
        esm_class & smpp::pdu::esm_class::MESSAGE_TYPE_MASK,
        kind::SMSC_RECEIPT | kind::SME_DELIVERY_ACK | kind::SME_MANUAL_ACK | kind::INTERMEDIATE
    )
}

/// Whether a receipt in this state ends the message's life: a known final `message_state`.
/// A state we do not know (a stat word such as `BUFFRED`, `SENT` or `ACKED`, or none) is not
/// final: the correlation stays for the final one.
pub fn is_final(state: Option<MessageState>) -> bool {
    state.is_some_and(MessageState::is_final)
}

/// Whether `registered_delivery` asks for a deliver_sm of this message type (`kind`) in this
/// state. Bits 0-1 (SMSC receipt): 0 none, 1 every final outcome, 2 failures only; bit 2 SME
/// delivery acknowledgement; bit 3 SME manual/user acknowledgement; bit 4 intermediate
/// notification, which also covers an SMSC receipt in a state that is not final.
pub fn wanted(registered_delivery: u8, kind: u8, state: Option<MessageState>) -> bool {
    match kind {
        kind::SME_DELIVERY_ACK => registered_delivery & 0x04 != 0,
        kind::SME_MANUAL_ACK => registered_delivery & 0x08 != 0,
        kind::INTERMEDIATE => registered_delivery & 0x10 != 0,
        _ if !is_final(state) => registered_delivery & 0x10 != 0,
        _ => match registered_delivery & 0x03 {
            1 => true,
            2 => state != Some(MessageState::Delivered),
            _ => false,
        },
    }
}

/// The smpp crate's form of a bind's `message_id_format`.
pub fn id_format(f: smsc_api::smscd_config::MessageIdFormat) -> MessageIdFormat {
    use smsc_api::smscd_config::MessageIdFormat as Config;
    match f {
        Config::Same => MessageIdFormat::Same,
        Config::HexToDecimal => MessageIdFormat::HexToDecimal,
        Config::DecimalToHex => MessageIdFormat::DecimalToHex,
    }
}

/// Handle one deliver_sm from `upstream`, whose receipt ids relate to its submit_sm_resp ids as
/// `id_format` says; Ok means "queued, parked or deliberately dropped: answer 0".
pub async fn on_upstream_deliver(
    core: &Arc<Core>,
    upstream: &str,
    id_format: MessageIdFormat,
    dsm: DeliverSm,
) -> Result<(), CommandStatus> {
    match dsm.esm_class & smpp::pdu::esm_class::MESSAGE_TYPE_MASK {
        kind::SMSC_RECEIPT | kind::SME_DELIVERY_ACK | kind::SME_MANUAL_ACK | kind::INTERMEDIATE => {
            on_receipt(core, upstream, id_format, dsm, None).await
        }
        // Default message type, and Conversation Abort (0x18): the subscriber's side.
        0x00 | 0x18 => on_mo(core, upstream, dsm).await,
        other => {
            tracing::warn!(
                upstream,
                esm_class = dsm.esm_class,
                message_type = other,
                "deliver_sm of a reserved message type: refused"
            );
            core.metrics.receipt("bad_esm_class");
            Err(CommandStatus::ESME_RINVESMCLASS)
        }
    }
}

/// The receipt's text as characters, by its data_coding: UCS2 decoded, anything else one
/// octet per character (Latin-1), so that [`encode_text`] gives every octet back.
pub fn decode_text(data_coding: u8, bytes: &[u8]) -> String {
    match DataCoding(data_coding).alphabet() {
        Alphabet::Ucs2 => ucs2::decode(bytes),
        _ => latin1::decode(bytes),
    }
}

/// The inverse of [`decode_text`]; None when a character does not fit (not for our ids).
pub fn encode_text(data_coding: u8, text: &str) -> Option<Vec<u8>> {
    match DataCoding(data_coding).alphabet() {
        Alphabet::Ucs2 => Some(ucs2::encode(text)),
        _ => latin1::encode(text).ok(),
    }
}

/// A receipt read and keyed, waiting for its correlation.
struct Pending {
    upstream: String,
    dsm: DeliverSm,
    upstream_id: String,
    /// The correlation key: the id in the base of the submit_sm_resp id.
    key: String,
    id_format: MessageIdFormat,
    state: Option<MessageState>,
    kind: u8,
    /// The text parsed, when it was (the TLVs leave something out).
    parsed: Option<Option<Receipt>>,
}

/// A receipt (see [`is_report`]) from `upstream` for the script's deliver hook: matched first,
/// then shown to the handler as the ESME will get it (see [`crate::handlers::deliver`]).
pub async fn on_receipt_hooked(
    core: &Arc<Core>,
    upstream: &str,
    id_format: MessageIdFormat,
    dsm: DeliverSm,
    hooked: Hooked,
) -> Result<(), CommandStatus> {
    on_receipt(core, upstream, id_format, dsm, Some(hooked)).await
}

async fn on_receipt(
    core: &Arc<Core>,
    upstream: &str,
    id_format: MessageIdFormat,
    dsm: DeliverSm,
    hooked: Option<Hooked>,
) -> Result<(), CommandStatus> {
    let tlv_id = dsm
        .tlvs
        .receipted_message_id()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .filter(|s| !s.trim().is_empty());
    let tlv_state = dsm.tlvs.message_state().and_then(MessageState::from_u8);
    // The text is parsed only for what the TLVs leave out (or to rewrite an unusual text below).
    let mut parsed: Option<Option<Receipt>> = None;
    if tlv_id.is_none() || tlv_state.is_none() {
        parsed = Some(Receipt::parse(&decode_text(dsm.data_coding, dsm.payload())).ok());
    }
    let from_text = parsed.as_ref().and_then(Option::as_ref);
    let Some(upstream_id) = tlv_id.or_else(|| from_text.map(|r| r.id.clone())) else {
        let why = || format!("receipt from {upstream} without a message id: dropped");
        return no_key(core, upstream, id_format, dsm, hooked, "no_id", why).await;
    };
    let state = tlv_state.or_else(|| from_text.and_then(Receipt::state));
    let kind = dsm.esm_class & smpp::pdu::esm_class::MESSAGE_TYPE_MASK;
    // One key, in the base of the submit_sm_resp id: never a guess at another base.
    let Some(key) = id_format.receipt_key(&upstream_id) else {
        let why = || {
            format!("receipt id {upstream_id} from {upstream} not in the declared message_id_format {id_format:?}: dropped")
        };
        return no_key(core, upstream, id_format, dsm, hooked, "unmatched", why).await;
    };
    let p = Pending { upstream: upstream.to_owned(), dsm, upstream_id, key, id_format, state, kind, parsed };
    let corr = match core.store.find_correlation(upstream, std::slice::from_ref(&p.key)).await {
        Ok(found) => found.map(|(_, c)| c),
        Err(e) => {
            tracing::warn!(error = %e, "store lookup failed");
            // Transient for the upstream: it will resend.
            return Err(CommandStatus::ESME_RX_T_APPN);
        }
    };
    match (corr, hooked) {
        (Some(c), hooked) => matched(core, p, c, hooked, false).await,
        (None, hooked) if could_be_in_flight(core) => park(core, p, hooked),
        (None, Some(hooked)) => unmatched(core, upstream, id_format, p.dsm, hooked).await,
        (None, None) => {
            tracing::warn!(upstream, id = %p.upstream_id, "receipt for an unknown message: dropped");
            core.metrics.receipt("unmatched");
            Ok(())
        }
    }
}

/// A receipt with no id to match on: the script's handler sees it as it came (it may repair
/// the id), or it is dropped, logged with `why` and counted as `metric`.
async fn no_key(
    core: &Arc<Core>,
    upstream: &str,
    id_format: MessageIdFormat,
    dsm: DeliverSm,
    hooked: Option<Hooked>,
    metric: &str,
    why: impl FnOnce() -> String,
) -> Result<(), CommandStatus> {
    if let Some(hooked) = hooked {
        return unmatched(core, upstream, id_format, dsm, hooked).await;
    }
    tracing::warn!("{}", why());
    core.metrics.receipt(metric);
    Ok(())
}

/// Whether a correlation missing now may still be written: one of our submits awaits its
/// answer, or other replicas (whose submits we do not see) write to the same store.
fn could_be_in_flight(core: &Core) -> bool {
    core.store.shared() || core.inflight() > 0
}

/// A receipt that matches no message of ours, shown to the script's handler as it came (no
/// account): answered as it says, and what it forwards is matched once more, without the
/// handler (the script may have repaired the id).
async fn unmatched(
    core: &Arc<Core>,
    upstream: &str,
    id_format: MessageIdFormat,
    dsm: DeliverSm,
    hooked: Hooked,
) -> Result<(), CommandStatus> {
    match hooked.ask(dsm, None, false).await.forwarded(core)? {
        Some(dsm) => again(core, upstream, id_format, dsm).await,
        None => Ok(()),
    }
}

/// [`on_upstream_deliver`] boxed: called from inside it (a handler's repaired receipt).
fn again<'a>(
    core: &'a Arc<Core>,
    upstream: &'a str,
    id_format: MessageIdFormat,
    dsm: DeliverSm,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CommandStatus>> + Send + 'a>> {
    Box::pin(on_upstream_deliver(core, upstream, id_format, dsm))
}

/// Answer the upstream now and match the receipt again from a task (see the module doc).
fn park(core: &Arc<Core>, p: Pending, hooked: Option<Hooked>) -> Result<(), CommandStatus> {
    if PARKED.fetch_add(1, Ordering::AcqRel) >= MAX_PARKED {
        PARKED.fetch_sub(1, Ordering::AcqRel);
        core.metrics.receipt("park_full");
        return Err(CommandStatus::ESME_RX_T_APPN);
    }
    core.metrics.receipt("parked");
    let core = core.clone();
    tokio::spawn(async move {
        rematch(&core, p, hooked).await;
        PARKED.fetch_sub(1, Ordering::AcqRel);
    });
    Ok(())
}

async fn rematch(core: &Arc<Core>, p: Pending, hooked: Option<Hooked>) {
    for ms in PARK_RETRIES {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = core.stop.cancelled() => break,
        }
        match core.store.find_correlation(&p.upstream, std::slice::from_ref(&p.key)).await {
            Ok(Some((_, c))) => {
                let (upstream, id) = (p.upstream.clone(), p.upstream_id.clone());
                if let Err(status) = matched(core, p, c, hooked, true).await {
                    // Answered already: nobody left to refuse it to.
                    tracing::warn!(upstream, id, %status, "parked receipt matched but not queued: lost");
                    core.metrics.receipt("parked_lost");
                }
                return;
            }
            Ok(None) if !could_be_in_flight(core) => break,
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "store lookup of a parked receipt failed"),
        }
    }
    if let Some(hooked) = hooked {
        // Still nothing: the script sees it as it came (it may repair the id), with nobody left
        // to refuse it to.
        match hooked.ask(p.dsm, None, true).await {
            Asked::Forward(dsm) => {
                if let Err(status) = again(core, &p.upstream, p.id_format, dsm).await {
                    tracing::warn!(upstream = %p.upstream, %status, "parked receipt not queued: lost");
                    core.metrics.receipt("parked_lost");
                }
            }
            Asked::Drop => core.metrics.receipt("handler_answered"),
            Asked::Refuse(_) => core.metrics.receipt("handler_rejected"),
        }
        return;
    }
    tracing::warn!(upstream = %p.upstream, id = %p.upstream_id, "receipt for an unknown message: dropped");
    core.metrics.receipt("unmatched");
}

/// A receipt whose correlation `corr` was found: forwarded with our id, or dropped when its
/// submit did not ask for it. With the script's deliver hook, the handler sees it with our id
/// first; `answered`: the upstream has its answer already (parked).
async fn matched(
    core: &Core,
    p: Pending,
    corr: Correlation,
    hooked: Option<Hooked>,
    answered: bool,
) -> Result<(), CommandStatus> {
    let Pending { upstream, mut dsm, upstream_id, key, mut state, kind, mut parsed, id_format } = p;
    let mut rewritten = false;
    if let Some(hooked) = hooked {
        set_our_id(&mut dsm, &upstream_id, &corr.our_id, parsed.take());
        rewritten = true;
        let m = ReceiptMatch { account: corr.account.clone(), upstream_id: upstream_id.clone() };
        match hooked.ask(dsm, Some(m), answered).await {
            Asked::Forward(changed) => {
                dsm = changed;
                // A changed stat (a script normalising an upstream's words) counts as such.
                state = dsm.tlvs.message_state().and_then(MessageState::from_u8).or_else(|| {
                    Receipt::parse(&decode_text(dsm.data_coding, dsm.payload())).ok().and_then(|r| r.state())
                });
            }
            Asked::Refuse(status) if !answered => {
                core.metrics.receipt("handler_rejected");
                return Err(status);
            }
            // Not forwarded; what it reports is still recorded, as for a receipt not asked for.
            dropped => {
                let why =
                    if matches!(dropped, Asked::Drop) { "handler_answered" } else { "handler_rejected" };
                let final_ = kind == kind::SMSC_RECEIPT && is_final(state);
                if let (true, Some(st)) = (final_, state) {
                    crate::forward::receipt(core, &corr.account, &corr.our_id, st).await;
                    if let Err(e) =
                        core.store.take_correlation(&upstream, std::slice::from_ref(&key), true).await
                    {
                        tracing::debug!(error = %e, "correlation of a dropped receipt not removed: it expires");
                    }
                }
                core.metrics.receipt(why);
                return Ok(());
            }
        }
    }
    let p = Pending { upstream, dsm, upstream_id, key, id_format, state, kind, parsed };
    // Only an SMSC receipt in a known final state ends the correlation; acknowledgements,
    // notifications and states we do not know leave it for the final receipt.
    let final_ = p.kind == kind::SMSC_RECEIPT && is_final(p.state);
    // The final state for query_sm, whether or not the ESME wanted this receipt. Written beside
    // the queueing rather than before it: on Redis both share one round trip (one after the
    // other was a second round trip per receipt before the upstream's answer). The record does
    // not depend on the queueing: a receipt the upstream resends (queueing failed) records the
    // same state again.
    let state = p.state;
    let record = async {
        if let (true, Some(st)) = (final_, state) {
            crate::forward::receipt(core, &corr.account, &corr.our_id, st).await;
        }
    };
    let ((), r) = futures::join!(record, forward(core, p, &corr, final_, rewritten));
    r
}

/// The rest of [`matched`]: the receipt queued for (or sent to) the ESME with our id, or
/// dropped when its submit did not ask for it. `rewritten`: our id is in it already.
async fn forward(
    core: &Core,
    p: Pending,
    corr: &Correlation,
    final_: bool,
    rewritten: bool,
) -> Result<(), CommandStatus> {
    let Pending { upstream, mut dsm, upstream_id, key, state, kind, parsed, .. } = p;
    let upstream = upstream.as_str();
    // A final receipt's correlation goes with its queueing (enqueue_final); one not wanted
    // goes now.
    if !wanted(corr.registered_delivery, kind, state) {
        if final_ {
            if let Err(e) = core.store.take_correlation(upstream, std::slice::from_ref(&key), true).await {
                tracing::debug!(error = %e, "correlation of an unwanted receipt not removed: it expires");
            }
        }
        core.metrics.receipt("not_requested");
        return Ok(());
    }
    // The ESME must only ever see our id: TLV and text.
    if !rewritten {
        set_our_id(&mut dsm, &upstream_id, &corr.our_id, parsed);
    }
    let forget = final_.then_some((upstream, key.as_str()));
    if let Some(sink) = core.sink.get() {
        if let Some(taken) = sink.receipt(upstream, corr, &dsm, state, forget).await {
            taken?;
            core.metrics.receipt("webhook");
            return Ok(());
        }
    }
    enqueue(core, &corr.account, dsm, Some(corr.our_id.clone()), forget).await?;
    core.metrics.receipt("queued");
    Ok(())
}

/// Put `our_id` in place of the upstream's in the receipted_message_id TLV and the text.
fn set_our_id(dsm: &mut DeliverSm, upstream_id: &str, our_id: &str, parsed: Option<Option<Receipt>>) {
    let new_text = rewrite_text(dsm.data_coding, dsm.payload(), upstream_id, our_id, parsed);
    if dsm.tlvs.receipted_message_id().is_some() || new_text.is_none() {
        dsm.tlvs.set_receipted_message_id(our_id.as_bytes());
    }
    if let Some(new_text) = new_text {
        if dsm.short_message.is_empty() && dsm.tlvs.message_payload().is_some() {
            dsm.tlvs.set_message_payload(new_text);
        } else if new_text.len() > MAX_SHORT_MESSAGE {
            // Our id is longer than the upstream's and the text was near the limit.
            dsm.short_message = Bytes::new();
            dsm.tlvs.set_message_payload(new_text);
        } else {
            dsm.short_message = new_text;
        }
    }
}

/// The receipt text with our id in place of the upstream's, in the text's own data_coding;
/// None when it cannot be written back (the id then only goes in the receipted_message_id TLV).
fn rewrite_text(
    data_coding: u8,
    payload: &[u8],
    upstream_id: &str,
    our_id: &str,
    parsed: Option<Option<Receipt>>,
) -> Option<Bytes> {
    let ucs2 = DataCoding(data_coding).alphabet() == Alphabet::Ucs2;
    if !ucs2 {
        if let Some(t) = splice_id(payload, upstream_id, our_id) {
            return Some(t);
        }
    }
    let text = decode_text(data_coding, payload);
    let parsed = parsed.unwrap_or_else(|| Receipt::parse(&text).ok());
    let new = match parsed {
        Some(mut r) => {
            r.id = our_id.to_owned();
            r.to_text()
        }
        None => text.replace(upstream_id.trim_matches(|c: char| c.is_whitespace() || c == '\0'), our_id),
    };
    encode_text(data_coding, &new).map(Bytes::from)
}

/// The receipt text with our id in place of the upstream's, when it starts with
/// `id:<upstream id> ` as most SMSCs (and our sim) write it: a splice that keeps the rest as
/// the upstream wrote it, instead of a parse and a re-render per receipt.
fn splice_id(text: &[u8], upstream_id: &str, our_id: &str) -> Option<Bytes> {
    let rest = text.strip_prefix(b"id:")?;
    let end = rest.iter().position(|c| *c == b' ')?;
    if rest[..end] != *upstream_id.as_bytes() {
        return None;
    }
    let mut out = BytesMut::with_capacity(3 + our_id.len() + rest.len() - end);
    out.extend_from_slice(b"id:");
    out.extend_from_slice(our_id.as_bytes());
    out.extend_from_slice(&rest[end..]);
    Some(out.freeze())
}

async fn on_mo(core: &Core, upstream: &str, dsm: DeliverSm) -> Result<(), CommandStatus> {
    let cfg = core.config.get();
    let account = cfg
        .routing
        .mo
        .iter()
        .find(|r| {
            r.destination_prefix.as_deref().is_none_or(|p| dsm.destination.addr.starts_with(p.as_bytes()))
                && r.upstream.as_deref().is_none_or(|u| u == upstream)
        })
        .map(|r| r.account.clone());
    let Some(account) = account else {
        tracing::warn!(upstream, dest = %String::from_utf8_lossy(&dsm.destination.addr), "MO with no routing.mo match: refused");
        core.metrics.receipt("mo_unrouted");
        return Err(CommandStatus::ESME_RINVDSTADR);
    };
    if let Some(sink) = core.sink.get() {
        if let Some(taken) = sink.mo(upstream, &account, &dsm).await {
            taken?;
            core.metrics.receipt("mo_webhook");
            return Ok(());
        }
    }
    enqueue(core, &account, dsm, None, None).await?;
    core.metrics.receipt("mo_queued");
    Ok(())
}

/// Queue `dsm` for `account`, within `queues.max_per_account`; `forget`: the (upstream, id) of
/// the correlation a final receipt matched, removed in the same step.
async fn enqueue(
    core: &Core,
    account: &str,
    dsm: DeliverSm,
    our_id: Option<String>,
    forget: Option<(&str, &str)>,
) -> Result<(), CommandStatus> {
    // Removed by a reload (its queue is being purged): the upstream keeps it and redelivers,
    // so it is not lost if the account comes back.
    let Some(state) = core.accounts.get(account) else {
        tracing::warn!(account, "deliver_sm for an account that is not configured: refused for now");
        core.metrics.receipt("account_removed");
        return Err(CommandStatus::ESME_RX_T_APPN);
    };
    let max = core.config.get().queues.max_per_account;
    if !core.takes_delivery(account) {
        // Shutting down with no way to hand it on: the upstream keeps it and redelivers.
        core.metrics.receipt("refused_draining");
        return Err(CommandStatus::ESME_RX_T_APPN);
    }
    let mut buf = BytesMut::new();
    if let Err(e) = Pdu::new(0, Body::DeliverSm(dsm)).encode(&mut buf) {
        tracing::warn!(error = %e, "deliver_sm not encodable: dropped");
        return Err(CommandStatus::ESME_RSYSERR);
    }
    let d = Delivery { pdu: buf.freeze(), our_id };
    let queued = match forget {
        Some((upstream, id)) => core.store.enqueue_final_within(account, d, upstream, id, max).await,
        None => core.store.enqueue_within(account, d, max).await,
    };
    match queued {
        Ok(()) => {}
        Err(StoreError::Full) => {
            // Back-pressure: the upstream holds it and retries; nothing is lost here.
            tracing::warn!(account, max, "delivery queue full: refused upstream with ESME_RMSGQFUL");
            core.metrics.receipt("queue_full");
            return Err(CommandStatus::ESME_RMSGQFUL);
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot queue delivery");
            return Err(CommandStatus::ESME_RX_T_APPN);
        }
    }
    state.wake.notify_one();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_delivery_rules() {
        let r = kind::SMSC_RECEIPT;
        let d = Some(MessageState::Delivered);
        let u = Some(MessageState::Undeliverable);
        let e = Some(MessageState::Enroute);
        assert!(!wanted(0, r, d) && !wanted(0, r, u));
        assert!(wanted(1, r, d) && wanted(1, r, u));
        assert!(!wanted(2, r, d) && wanted(2, r, u));
        assert!(!wanted(1, r, e) && wanted(0x11, r, e));
        // A state we do not know (BUFFRED, SENT, ...) is not final: an intermediate receipt.
        assert!(!wanted(1, r, None) && !wanted(2, r, None) && wanted(0x10, r, None));
        // Notifications and acknowledgements: only the bit that asks for each.
        assert!(wanted(0x10, kind::INTERMEDIATE, d) && !wanted(0x03, kind::INTERMEDIATE, e));
        assert!(wanted(0x04, kind::SME_DELIVERY_ACK, None) && !wanted(0x1B, kind::SME_DELIVERY_ACK, None));
        assert!(wanted(0x08, kind::SME_MANUAL_ACK, None) && !wanted(0x17, kind::SME_MANUAL_ACK, None));
    }

    #[test]
    fn finality() {
        for s in MessageState::ALL {
            assert_eq!(is_final(Some(s)), s != MessageState::Enroute, "{s}");
        }
        assert!(!is_final(None));
        for word in ["BUFFRED", "SENT", "ACKED", "ENROUTE", "PENDING"] {
            assert!(!is_final(MessageState::from_stat_word(word)), "{word}");
        }
    }

    #[test]
    fn id_spliced_only_from_the_usual_form() {
        let t = b"id:12345 sub:001 dlvrd:001 stat:DELIVRD err:000 text:hi";
        let got = splice_id(t, "12345", "ab-9").expect("usual form");
        assert_eq!(&got[..], b"id:ab-9 sub:001 dlvrd:001 stat:DELIVRD err:000 text:hi");
        assert_eq!(Receipt::parse(std::str::from_utf8(&got).unwrap()).unwrap().id, "ab-9");
        // Another id in the text, other key spellings, no rest: left to the parser.
        assert!(splice_id(t, "1234", "x").is_none());
        assert!(splice_id(b"Id:12345 stat:DELIVRD", "12345", "x").is_none());
        assert!(splice_id(b"id: 12345 stat:DELIVRD", "12345", "x").is_none());
        assert!(splice_id(b"id:12345", "12345", "x").is_none());
    }

    /// Issue 14: a UCS2 receipt is read and rewritten in UCS2; a Latin-1 (or any 8-bit) one
    /// keeps every octet but the id, where a UTF-8 round trip turned 0xE9 into U+FFFD.
    #[test]
    fn texts_are_rewritten_in_their_own_data_coding() {
        let text = "id:u1 sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 stat:DELIVRD err:000 text:caf\u{e9}";
        let ucs = ucs2::encode(text);
        let got = rewrite_text(0x08, &ucs, "u1", "ours", None).expect("rewritten");
        assert_eq!(ucs2::decode(&got), text.replace("id:u1", "id:ours"));
        let latin = latin1::encode(&text.replace("id:", "ID:")).expect("latin-1");
        let got = rewrite_text(0x03, &latin, "u1", "ours", None).expect("rewritten");
        assert_eq!(got.last(), Some(&0xE9), "{got:?}");
        assert!(got.starts_with(b"id:ours "), "{got:?}");
        // Not a receipt text at all: only the id is replaced, the other octets stay.
        let got = rewrite_text(0x00, b"\xffmsg u1 done", "u1", "ours", None).expect("rewritten");
        assert_eq!(&got[..], b"\xffmsg ours done");
    }
}
