//! deliver_sm from upstreams (and the sim): receipts are correlated back to our id and queued
//! for the submitting account; MO messages are queued for the account `routing.mo` names.
//!
//! The upstream's deliver_sm is answered only after the delivery is queued (the caller answers
//! with our result), so a crash before that makes the upstream resend it.

use crate::core::Core;
use crate::store::{Correlation, Delivery};
use bytes::{Bytes, BytesMut};
use smpp::receipt::{MessageIdFormat, MessageState, Receipt};
use smpp::{Body, CommandStatus, DeliverSm, Pdu};
use std::time::Duration;

/// How long an unmatched receipt is retried: the upstream may send the receipt before our
/// dispatch task has stored the correlation for the submit_sm_resp just received.
const UNMATCHED_RETRIES: [u64; 5] = [20, 50, 100, 250, 500];

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
/// `id_format` says; Ok means "queued or deliberately dropped: answer 0".
pub async fn on_upstream_deliver(
    core: &Core,
    upstream: &str,
    id_format: MessageIdFormat,
    dsm: DeliverSm,
) -> Result<(), CommandStatus> {
    match dsm.esm_class & smpp::pdu::esm_class::MESSAGE_TYPE_MASK {
        kind::SMSC_RECEIPT | kind::SME_DELIVERY_ACK | kind::SME_MANUAL_ACK | kind::INTERMEDIATE => {
            on_receipt(core, upstream, id_format, dsm).await
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

async fn on_receipt(
    core: &Core,
    upstream: &str,
    id_format: MessageIdFormat,
    mut dsm: DeliverSm,
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
        parsed = Some(Receipt::parse(&String::from_utf8_lossy(dsm.payload())).ok());
    }
    let from_text = parsed.as_ref().and_then(Option::as_ref);
    let Some(upstream_id) = tlv_id.or_else(|| from_text.map(|r| r.id.clone())) else {
        tracing::warn!(upstream, "receipt without a message id: dropped");
        core.metrics.receipt("no_id");
        return Ok(());
    };
    let state = tlv_state.or_else(|| from_text.and_then(Receipt::state));
    let kind = dsm.esm_class & smpp::pdu::esm_class::MESSAGE_TYPE_MASK;
    // Only an SMSC receipt in a known final state ends the correlation; acknowledgements,
    // notifications and states we do not know leave it for the final receipt.
    let final_ = kind == kind::SMSC_RECEIPT && is_final(state);
    // One key, in the base of the submit_sm_resp id: never a guess at another base.
    let Some(key) = id_format.receipt_key(&upstream_id) else {
        tracing::warn!(upstream, id = %upstream_id, format = ?id_format,
            "receipt id not in the declared message_id_format: dropped");
        core.metrics.receipt("unmatched");
        return Ok(());
    };
    let keys = [key];
    let Some((_, corr)) = lookup(core, upstream, &keys).await? else {
        tracing::warn!(upstream, id = %upstream_id, "receipt for an unknown message: dropped");
        core.metrics.receipt("unmatched");
        return Ok(());
    };
    let key = keys[0].as_str();
    // A final receipt's correlation goes with its queueing (enqueue_final); one not wanted
    // goes now.
    if !wanted(corr.registered_delivery, kind, state) {
        if final_ {
            if let Err(e) = core.store.take_correlation(upstream, &keys, true).await {
                tracing::debug!(error = %e, "correlation of an unwanted receipt not removed: it expires");
            }
        }
        core.metrics.receipt("not_requested");
        return Ok(());
    }
    // The ESME must only ever see our id: TLV and text.
    let new_text = match splice_id(dsm.payload(), &upstream_id, &corr.our_id) {
        Some(t) => t,
        None => {
            let text = String::from_utf8_lossy(dsm.payload()).into_owned();
            let parsed = parsed.unwrap_or_else(|| Receipt::parse(&text).ok());
            Bytes::from(match parsed {
                Some(mut r) => {
                    r.id = corr.our_id.clone();
                    r.to_text()
                }
                None => text.replace(
                    upstream_id.trim_matches(|c: char| c.is_whitespace() || c == '\0'),
                    &corr.our_id,
                ),
            })
        }
    };
    if dsm.tlvs.receipted_message_id().is_some() {
        dsm.tlvs.set_receipted_message_id(corr.our_id.as_bytes());
    }
    if dsm.short_message.is_empty() && dsm.tlvs.message_payload().is_some() {
        dsm.tlvs.set_message_payload(new_text);
    } else {
        dsm.short_message = new_text;
    }
    let forget = final_.then_some((upstream, key));
    enqueue(core, &corr.account, dsm, Some(corr.our_id), forget).await?;
    core.metrics.receipt("queued");
    Ok(())
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

/// The correlation stored under `key` (one element), looked up again for a while when missing.
async fn lookup(
    core: &Core,
    upstream: &str,
    candidates: &[String],
) -> Result<Option<(usize, Correlation)>, CommandStatus> {
    let mut retries = UNMATCHED_RETRIES.iter();
    loop {
        match core.store.find_correlation(upstream, candidates).await {
            Ok(Some(c)) => return Ok(Some(c)),
            Ok(None) => match retries.next() {
                Some(ms) if !core.stop.is_cancelled() => tokio::time::sleep(Duration::from_millis(*ms)).await,
                _ => return Ok(None),
            },
            Err(e) => {
                tracing::warn!(error = %e, "store lookup failed");
                // Transient for the upstream: it will resend.
                return Err(CommandStatus::ESME_RX_T_APPN);
            }
        }
    }
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
    enqueue(core, &account, dsm, None, None).await?;
    core.metrics.receipt("mo_queued");
    Ok(())
}

/// Queue `dsm` for `account`; `forget`: the (upstream, id) of the correlation a final receipt
/// matched, removed in the same step.
async fn enqueue(
    core: &Core,
    account: &str,
    dsm: DeliverSm,
    our_id: Option<String>,
    forget: Option<(&str, &str)>,
) -> Result<(), CommandStatus> {
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
        Some((upstream, id)) => core.store.enqueue_final(account, d, upstream, id).await,
        None => core.store.enqueue(account, d).await,
    };
    if let Err(e) = queued {
        tracing::warn!(error = %e, "cannot queue delivery");
        return Err(CommandStatus::ESME_RX_T_APPN);
    }
    if let Some(a) = core.accounts.get(account) {
        a.wake.notify_one();
    }
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
}
