//! Receipts and MO turned into webhooks: the [`DeliverySink`] the HTTP API installs.
//!
//! A receipt goes to a webhook when its message was submitted over HTTP (it has a
//! [`Record`]): to the message's own callback, else to the account's `dlr_url`; with neither
//! only the record's state changes. A receipt of an SMPP submit has no record and goes to the
//! account's SMPP receivers as before. An MO goes to the account's `mo_url` when it has one.

use super::records::{Callback, Record, Records};
use super::webhook::{self, Hook};
use crate::core::Core;
use crate::sink::{DeliverySink, Taken};
use crate::store::Correlation;
use futures::future::BoxFuture;
use serde_json::json;
use smpp::concat::Udh;
use smpp::receipt::{MessageState, Receipt};
use smpp::text::DataCoding;
use smpp::{CommandStatus, DeliverSm};
use std::sync::{Arc, Weak};
use tokio::sync::Notify;

pub struct Events {
    pub core: Weak<Core>,
    pub records: Arc<Records>,
    pub wake: Arc<Notify>,
}

/// The record's `state` word for a receipt's message_state.
pub fn state_word(s: Option<MessageState>) -> &'static str {
    match s {
        Some(MessageState::Enroute) => "enroute",
        Some(MessageState::Delivered) => "delivered",
        Some(MessageState::Expired) => "expired",
        Some(MessageState::Deleted) => "deleted",
        Some(MessageState::Undeliverable) => "undeliverable",
        Some(MessageState::Accepted) => "accepted_by_handset",
        Some(MessageState::Unknown) => "unknown",
        Some(MessageState::Rejected) => "rejected",
        None => "enroute",
    }
}

/// Kannel's dlr value (`%d`) for a receipt: 1 delivered, 2 failed, 4 buffered (not final).
pub fn kannel_dlr(s: Option<MessageState>) -> u8 {
    match s {
        Some(MessageState::Delivered) => 1,
        Some(st) if st.is_final() => 2,
        _ => 4,
    }
}

impl Events {
    async fn on_receipt(
        &self,
        core: &Core,
        upstream: &str,
        corr: &Correlation,
        dsm: &DeliverSm,
        state: Option<MessageState>,
        forget: Option<(&str, &str)>,
    ) -> Taken {
        let rec = match self.records.get(&corr.account, &corr.our_id).await {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP message record not read: receipt refused for now");
                return Some(Err(CommandStatus::ESME_RX_T_APPN));
            }
        };
        let text = crate::receipts::decode_text(dsm.data_coding, dsm.payload());
        let parsed = Receipt::parse(&text).ok();
        let now = crate::sim::unix_ms();
        let mut updated = rec.clone();
        updated.state = state_word(state).to_owned();
        updated.updated_at_ms = now;
        updated.receipt_error = parsed.as_ref().and_then(|r| r.err.clone());
        if let Err(e) = self.records.put_many(std::slice::from_ref(&updated)).await {
            tracing::warn!(error = %e, "HTTP message record not updated: receipt refused for now");
            return Some(Err(CommandStatus::ESME_RX_T_APPN));
        }
        let hook = match &rec.callback {
            Some(Callback::Kannel { url, mask }) => {
                let d = kannel_dlr(state);
                if mask & d == 0 {
                    None
                } else {
                    let fill = super::kannel::Fill { record: &updated, dlr: d, reply: &text, upstream };
                    Some(Hook {
                        method: "GET".into(),
                        url: fill.url(url),
                        body: String::new(),
                        id: Some(rec.id.clone()),
                    })
                }
            }
            Some(Callback::Json { url }) => {
                Some(self.receipt_hook(url, &updated, state, parsed.as_ref(), &text))
            }
            None => {
                let cfg = core.config.get();
                cfg.http
                    .account(&corr.account)
                    .and_then(|a| a.dlr_url.clone())
                    .map(|url| self.receipt_hook(&url, &updated, state, parsed.as_ref(), &text))
            }
        };
        match hook {
            Some(h) => Some(webhook::enqueue(core, &self.wake, &corr.account, &h, forget).await),
            None => {
                // Nobody to tell: the state is recorded; a final receipt ends the correlation.
                if let Some((up, key)) = forget {
                    let _ = core.store.take_correlation(up, &[key.to_owned()], true).await;
                }
                Some(Ok(()))
            }
        }
    }

    fn receipt_hook(
        &self,
        url: &str,
        rec: &Record,
        state: Option<MessageState>,
        parsed: Option<&Receipt>,
        text: &str,
    ) -> Hook {
        let body = json!({
            "type": "receipt",
            "id": rec.id,
            "account": rec.account,
            "from": rec.from,
            "to": rec.to,
            "part": rec.part,
            "parts": rec.parts,
            "state": state_word(state),
            "final": state.is_some_and(MessageState::is_final),
            "stat": parsed.map(|r| r.stat.to_string()),
            "err": parsed.and_then(|r| r.err.clone()),
            "submitted_at_ms": rec.submitted_at_ms,
            "received_at_ms": rec.updated_at_ms,
            "receipt_text": text,
        });
        Hook { method: "POST".into(), url: url.to_owned(), body: body.to_string(), id: Some(rec.id.clone()) }
    }

    async fn on_mo(&self, core: &Core, upstream: &str, account: &str, dsm: &DeliverSm) -> Taken {
        let url = core.config.get().http.account(account).and_then(|a| a.mo_url.clone())?;
        let payload = dsm.payload();
        let udhi = dsm.esm_class & smpp::concat::ESM_CLASS_UDHI != 0;
        let (udh, content) = match udhi.then(|| Udh::parse(payload)) {
            Some(Ok((udh, rest))) => (Some(udh), rest),
            _ => (None, &payload[..]),
        };
        let dc = DataCoding(dsm.data_coding);
        let concat = udh.as_ref().and_then(Udh::concat);
        let mut body = json!({
            "type": "mo",
            "id": core.ids.next_id(),
            "account": account,
            "from": String::from_utf8_lossy(&dsm.source.addr),
            "to": String::from_utf8_lossy(&dsm.destination.addr),
            "data_coding": dsm.data_coding,
            "upstream": upstream,
            "received_at_ms": crate::sim::unix_ms(),
        });
        if dc.is_text() {
            body["text"] = json!(smpp::text::decode(dc, content));
        } else {
            body["binary_hex"] = json!(hex(content));
        }
        if let Some(u) = &udh {
            body["udh_hex"] = json!(hex(&u.to_bytes()));
        }
        if let Some(c) = concat {
            body["concat"] = json!({ "reference": c.reference, "total": c.total, "seqnum": c.seqnum });
        }
        let hook = Hook { method: "POST".into(), url, body: body.to_string(), id: None };
        Some(webhook::enqueue(core, &self.wake, account, &hook, None).await)
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl DeliverySink for Events {
    fn receipt<'a>(
        &'a self,
        upstream: &'a str,
        corr: &'a Correlation,
        dsm: &'a DeliverSm,
        state: Option<MessageState>,
        forget: Option<(&'a str, &'a str)>,
    ) -> BoxFuture<'a, Taken> {
        Box::pin(async move {
            let core = self.core.upgrade()?;
            self.on_receipt(&core, upstream, corr, dsm, state, forget).await
        })
    }

    fn mo<'a>(&'a self, upstream: &'a str, account: &'a str, dsm: &'a DeliverSm) -> BoxFuture<'a, Taken> {
        Box::pin(async move {
            let core = self.core.upgrade()?;
            self.on_mo(&core, upstream, account, dsm).await
        })
    }
}
