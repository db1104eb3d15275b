//! Receipts from a scripted upstream (the smpp crate's SMSC role, on 127.0.0.1): the test picks
//! the upstream's submit_sm_resp ids and sends the deliver_sm it wants, so id formats,
//! notification types and receipt states can be driven exactly (issue 14).

mod common;

use bytes::Bytes;
use common::*;
use smpp::session::{smsc, BindKind, Handler, Reply, Request, Session, SessionConfig};
use smpp::{Address, Body, CommandStatus, DeliverSm, SubmitSmResp};
use smsc_api::smscd_config::{MessageIdFormat, MoRule};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Answers submit_sm with the next scripted id.
struct Scripted(Arc<Mutex<VecDeque<String>>>);

impl Handler for Scripted {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        match req.pdu.body {
            Body::SubmitSm(_) => {
                let next = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                match next {
                    Some(id) => Reply::Ok(Body::SubmitSmResp(SubmitSmResp {
                        message_id: Bytes::from(id),
                        ..SubmitSmResp::default()
                    })),
                    None => Reply::Error(CommandStatus::ESME_RSUBMITFAIL),
                }
            }
            _ => Reply::Error(CommandStatus::ESME_RINVCMDID),
        }
    }
}

/// An smscd with account `esme` whose default chain is one upstream (`up`) answering submits
/// with `ids`, its receipt ids declared as `format`; the upstream's session to smscd.
struct Setup {
    daemon: Daemon,
    upstream: Session,
    esme: Esme,
}

async fn setup(ids: &[&str], format: MessageIdFormat) -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let script = Arc::new(Mutex::new(ids.iter().map(|s| s.to_string()).collect::<VecDeque<_>>()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, peer)) = listener.accept().await {
            let (script, tx) = (script.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(b) = smsc::accept(s, Some(peer), SessionConfig::default()).await {
                    if let Ok(session) =
                        b.accept(Bytes::from_static(b"scripted"), Some(0x34), Scripted(script)).await
                    {
                        let _ = tx.send(session.clone());
                        session.closed().await;
                    }
                }
            });
        }
    });
    let mut cfg = base_config(vec![account("esme", "secret")]);
    let mut up = upstream("up", port, "x", "y");
    up.message_id_format = format;
    cfg.binds = vec![up];
    cfg.routing.default_chain = vec!["bind:up".into()];
    // Every MO goes to the ESME: a notification routed as MO would show up there.
    cfg.routing.mo = vec![MoRule { destination_prefix: None, upstream: None, account: "esme".into() }];
    let daemon = Daemon::start(cfg).await;
    let upstream = within("upstream bound", rx.recv()).await.expect("upstream session");
    let core = daemon.core().clone();
    eventually("bound upstream", Duration::from_secs(10), || {
        core.upstreams.get("up").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let esme = bind(daemon.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    Setup { daemon, upstream, esme }
}

/// Our id for a submit asking for `registered_delivery`.
async fn submit_ok(e: &Esme, registered_delivery: u8) -> String {
    let r = within("submit", e.session.request(submit("3161", registered_delivery))).await.expect("resp");
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    match &r.body {
        Body::SubmitSmResp(r) => String::from_utf8_lossy(&r.message_id).into_owned(),
        other => panic!("not a submit_sm_resp: {other:?}"),
    }
}

/// A deliver_sm from the upstream with this esm_class and text; its status.
async fn deliver(up: &Session, esm_class: u8, text: &str) -> CommandStatus {
    deliver_tlv(up, esm_class, text, None, None).await
}

/// A deliver_sm with a receipted_message_id and/or message_state TLV too.
async fn deliver_tlv(
    up: &Session,
    esm_class: u8,
    text: &str,
    receipted_id: Option<&str>,
    message_state: Option<u8>,
) -> CommandStatus {
    let mut d = DeliverSm {
        source: Address::new(1, 1, "3161"),
        destination: Address::new(0, 0, "12345"),
        esm_class,
        short_message: Bytes::from(text.to_owned()),
        ..DeliverSm::default()
    };
    if let Some(id) = receipted_id {
        d.tlvs.set_receipted_message_id(id.as_bytes());
    }
    if let Some(s) = message_state {
        d.tlvs.set_message_state(s);
    }
    within("deliver_sm", up.request(Body::DeliverSm(d))).await.expect("deliver_sm_resp").command_status
}

fn receipt_text(id: &str, stat: &str) -> String {
    format!("id:{id} sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 stat:{stat} err:000 text:")
}

/// The id in the text of the next deliver_sm the ESME gets.
async fn next_receipt(e: &mut Esme) -> (u8, String) {
    let d = within("receipt", e.delivered.recv()).await.expect("receipt");
    let text = String::from_utf8_lossy(&d.short_message).into_owned();
    let id = smpp::receipt::Receipt::parse(&text).map(|r| r.id).unwrap_or_default();
    (d.esm_class, id)
}

/// Issue 14: A = 0x4d2, B = 0x1234; the upstream writes receipts in decimal. A's receipt says
/// `1234`. Trying every base matched B (stored as "1234"); the declared format matches A only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hex_to_decimal_receipt_never_lands_on_the_message_with_that_hex_id() {
    let mut s = setup(&["4D2", "1234"], MessageIdFormat::HexToDecimal).await;
    let a = submit_ok(&s.esme, 1).await;
    let b = submit_ok(&s.esme, 1).await;
    assert_eq!(deliver(&s.upstream, 0x04, &receipt_text("1234", "DELIVRD")).await, CommandStatus::ESME_ROK);
    assert_eq!(next_receipt(&mut s.esme).await.1, a, "0x4d2 = 1234 is A's");
    assert_eq!(
        deliver(&s.upstream, 0x04, &receipt_text("0004660", "DELIVRD")).await,
        CommandStatus::ESME_ROK
    );
    assert_eq!(next_receipt(&mut s.esme).await.1, b, "0x1234 = 4660 is B's");
    // A receipt id that is not decimal matches nothing, rather than a guess.
    assert_eq!(deliver(&s.upstream, 0x04, &receipt_text("4d2", "DELIVRD")).await, CommandStatus::ESME_ROK);
    let m = s.daemon.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["unmatched"]), 1.0, "{m}");
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["queued"]), 2.0, "{m}");
    s.daemon.shutdown().await;
}

/// Issue 14: intermediate notifications (esm_class 0x20) and SME acknowledgements (0x08, 0x10)
/// report on a submitted message: correlated like receipts and forwarded only when the submit's
/// registered_delivery asked for them, never routed as MO (which would hand the ESME the
/// upstream's id as if a subscriber had sent it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_correlated_or_dropped_never_mo() {
    let mut s = setup(&["u1", "u2"], MessageIdFormat::Same).await;
    let a = submit_ok(&s.esme, 0x01).await; // final receipt only
    let b = submit_ok(&s.esme, 0x1D).await; // final, both SME acks, intermediate
    let up = &s.upstream;
    let ok = CommandStatus::ESME_ROK;
    // A did not ask for any of these: each is answered and dropped.
    assert_eq!(deliver_tlv(up, 0x20, &receipt_text("u1", "ENROUTE"), Some("u1"), Some(1)).await, ok);
    assert_eq!(deliver_tlv(up, 0x08, "delivered", Some("u1"), None).await, ok);
    assert_eq!(deliver_tlv(up, 0x10, "read", Some("u1"), None).await, ok);
    // B asked for all of them: forwarded with our id, in their own message type.
    assert_eq!(deliver_tlv(up, 0x20, &receipt_text("u2", "ENROUTE"), Some("u2"), Some(1)).await, ok);
    assert_eq!(next_receipt(&mut s.esme).await, (0x20, b.clone()));
    assert_eq!(deliver_tlv(up, 0x08, "id:u2 stat:DELIVRD", Some("u2"), None).await, ok);
    assert_eq!(next_receipt(&mut s.esme).await, (0x08, b.clone()));
    // None of them ended a correlation: the final receipts still match.
    assert_eq!(deliver(up, 0x04, &receipt_text("u1", "DELIVRD")).await, ok);
    assert_eq!(next_receipt(&mut s.esme).await, (0x04, a));
    assert_eq!(deliver(up, 0x04, &receipt_text("u2", "DELIVRD")).await, ok);
    assert_eq!(next_receipt(&mut s.esme).await, (0x04, b));
    let m = s.daemon.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["mo_queued"]), 0.0, "{m}");
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["not_requested"]), 3.0, "{m}");
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["queued"]), 4.0, "{m}");
    // A reserved message type is refused, not guessed at.
    assert_eq!(deliver(up, 0x0C, "x").await, CommandStatus::ESME_RINVESMCLASS);
    // A real MO still reaches the ESME.
    assert_eq!(deliver(up, 0x00, "hello").await, ok);
    let mo = within("MO", s.esme.delivered.recv()).await.expect("MO");
    assert_eq!((mo.esm_class, &mo.short_message[..]), (0x00, &b"hello"[..]));
    s.daemon.shutdown().await;
}

/// Issue 14: a stat word that is not a known final state (BUFFRED, SENT, ACKED, ...) does not
/// end the correlation: the final receipt that follows still reaches the ESME. A final
/// message_state TLV (0x0427) does end it, whatever the text says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stat_words_are_not_final() {
    let mut s = setup(&["u1", "u2", "u3"], MessageIdFormat::Same).await;
    let a = submit_ok(&s.esme, 0x01).await;
    let b = submit_ok(&s.esme, 0x11).await;
    let c = submit_ok(&s.esme, 0x01).await;
    let up = &s.upstream;
    let ok = CommandStatus::ESME_ROK;
    for word in ["BUFFRED", "SENT", "ACKED"] {
        assert_eq!(deliver(up, 0x04, &receipt_text("u1", word)).await, ok);
    }
    // B asked for intermediate receipts: it gets the BUFFRED one.
    assert_eq!(deliver(up, 0x04, &receipt_text("u2", "BUFFRED")).await, ok);
    assert_eq!(next_receipt(&mut s.esme).await, (0x04, b.clone()));
    assert_eq!(deliver(up, 0x04, &receipt_text("u1", "DELIVRD")).await, ok);
    assert_eq!(next_receipt(&mut s.esme).await, (0x04, a));
    assert_eq!(deliver(up, 0x04, &receipt_text("u2", "UNDELIV")).await, ok);
    assert_eq!(next_receipt(&mut s.esme).await, (0x04, b));
    // A final message_state TLV (5, UNDELIVERABLE) beside an unknown word: final.
    assert_eq!(deliver_tlv(up, 0x04, &receipt_text("u3", "FAILED"), None, Some(5)).await, ok);
    assert_eq!(next_receipt(&mut s.esme).await, (0x04, c));
    assert_eq!(deliver(up, 0x04, &receipt_text("u3", "DELIVRD")).await, ok);
    let m = s.daemon.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["unmatched"]), 1.0, "{m}");
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["queued"]), 4.0, "{m}");
    s.daemon.shutdown().await;
}
