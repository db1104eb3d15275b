//! Receipts from a scripted upstream (the smpp crate's SMSC role, on 127.0.0.1): the test picks
//! the upstream's submit_sm_resp ids and sends the deliver_sm it wants, so id formats,
//! notification types and receipt states can be driven exactly (issue 14).

mod common;

use bytes::Bytes;
use common::*;
use smpp::session::{esme, smsc, BindKind, Handler, Reply, Request, Session, SessionConfig};
use smpp::{Address, Bind, Body, CommandStatus, DeliverSm, DeliverSmResp, SubmitSmResp};
use smsc_api::smscd_config::{MessageIdFormat, MoRule, SmscdConfig};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Answers submit_sm with the next scripted id. With `overtake` (its own session), the final
/// receipt for that id is sent first and the submit_sm_resp only once smscd answered it: a
/// receipt that overtakes its submit_sm_resp, as fast multi-threaded SMSCs send them.
struct Scripted {
    ids: Arc<Mutex<VecDeque<String>>>,
    overtake: Option<(Arc<OnceLock<Session>>, mpsc::UnboundedSender<CommandStatus>)>,
}

impl Handler for Scripted {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        if !matches!(req.pdu.body, Body::SubmitSm(_)) {
            return Reply::Error(CommandStatus::ESME_RINVCMDID);
        }
        let next = self.ids.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        let Some(id) = next else { return Reply::Error(CommandStatus::ESME_RSUBMITFAIL) };
        let resp = Body::SubmitSmResp(SubmitSmResp {
            message_id: Bytes::from(id.clone()),
            ..SubmitSmResp::default()
        });
        let Some((session, statuses)) = self.overtake.clone() else { return Reply::Ok(resp) };
        let (_, responder) = req.defer();
        tokio::spawn(async move {
            let mut s = None;
            eventually("upstream session known", Duration::from_secs(10), || {
                s = session.get().cloned();
                s.is_some()
            })
            .await;
            let s = s.expect("session");
            let _ = statuses.send(deliver(&s, 0x04, &receipt_text(&id, "DELIVRD")).await);
            let _ = responder.respond(resp);
        });
        Reply::Deferred
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
    setup_with(ids, format, None, |_| {}).await
}

/// [`setup`] with an overtaking upstream (see [`Scripted`]) and config changes.
async fn setup_with(
    ids: &[&str],
    format: MessageIdFormat,
    overtake: Option<mpsc::UnboundedSender<CommandStatus>>,
    edit: impl FnOnce(&mut SmscdConfig),
) -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let script = Arc::new(Mutex::new(ids.iter().map(|s| s.to_string()).collect::<VecDeque<_>>()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, peer)) = listener.accept().await {
            let (ids, tx, overtake) = (script.clone(), tx.clone(), overtake.clone());
            tokio::spawn(async move {
                let slot = Arc::new(OnceLock::new());
                let handler = Scripted { ids, overtake: overtake.map(|t| (slot.clone(), t)) };
                if let Ok(b) = smsc::accept(s, Some(peer), SessionConfig::default()).await {
                    if let Ok(session) = b.accept(Bytes::from_static(b"scripted"), Some(0x34), handler).await
                    {
                        let _ = slot.set(session.clone());
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
    edit(&mut cfg);
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

/// A deliver_sm of the default message type (MO) with this text; its status.
async fn mo(up: &Session, text: &str) -> CommandStatus {
    deliver(up, 0x00, text).await
}

/// Issue 14: a receipt that overtakes its submit_sm_resp (the upstream answers the submit only
/// once smscd answered the receipt) is answered at once and parked, not retried inside the
/// upstream's window: its correlation is written when the submit_sm_resp arrives, and the
/// parked receipt then reaches the ESME with our id. Retrying in the window (before) waited
/// for a submit_sm_resp that could only come after the answer, and dropped the receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_overtaking_its_submit_resp_is_parked_and_delivered() {
    let (tx, mut statuses) = mpsc::unbounded_channel();
    let mut s = setup_with(&["u1"], MessageIdFormat::Same, Some(tx), |_| {}).await;
    let ours = submit_ok(&s.esme, 1).await;
    assert_eq!(within("receipt answered", statuses.recv()).await, Some(CommandStatus::ESME_ROK));
    assert_eq!(next_receipt(&mut s.esme).await, (0x04, ours));
    let m = s.daemon.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["parked"]), 1.0, "{m}");
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["unmatched"]), 0.0, "{m}");
    // Nothing in flight (a single replica's memory store): an unknown id is not parked.
    assert_eq!(deliver(&s.upstream, 0x04, &receipt_text("nope", "DELIVRD")).await, CommandStatus::ESME_ROK);
    let m = s.daemon.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["unmatched"]), 1.0, "{m}");
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["parked"]), 1.0, "{m}");
    s.daemon.shutdown().await;
}

/// Issue 14: receipt texts are handled by their data_coding. A UCS2 receipt (no TLVs) is
/// matched and rewritten in UCS2 (read as UTF-8 it had no id and was dropped); a Latin-1 one
/// keeps its octets (0xE9 became U+FFFD); a text that our longer id pushes past 254 octets
/// moves to message_payload (it failed to encode and the upstream got ESME_RSYSERR, resending
/// it for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_texts_are_rewritten_by_data_coding_and_never_overflow() {
    let mut s = setup(&["u1", "u2", "u3"], MessageIdFormat::Same).await;
    let (a, b, c) = (submit_ok(&s.esme, 1).await, submit_ok(&s.esme, 1).await, submit_ok(&s.esme, 1).await);
    let up = &s.upstream;
    let send = |id: &str, data_coding: u8, text: Vec<u8>| {
        let d = DeliverSm {
            source: Address::new(1, 1, "3161"),
            destination: Address::new(0, 0, "12345"),
            esm_class: 0x04,
            data_coding,
            short_message: Bytes::from(text),
            ..DeliverSm::default()
        };
        let _ = id;
        async move { within("deliver_sm", up.request(Body::DeliverSm(d))).await.expect("resp").command_status }
    };
    let text = receipt_text("u1", "DELIVRD") + "caf\u{e9}";
    assert_eq!(send("u1", 0x08, smpp::text::ucs2::encode(&text)).await, CommandStatus::ESME_ROK);
    let got = within("UCS2 receipt", s.esme.delivered.recv()).await.expect("receipt");
    assert_eq!(got.data_coding, 0x08);
    assert_eq!(smpp::text::ucs2::decode(&got.short_message), text.replace("id:u1", &format!("id:{a}")));

    let mut latin =
        smpp::text::latin1::encode(&receipt_text("u2", "DELIVRD").replace("id:", "ID:")).expect("l1");
    latin.extend_from_slice(b"caf\xe9");
    assert_eq!(send("u2", 0x03, latin).await, CommandStatus::ESME_ROK);
    let got = within("Latin-1 receipt", s.esme.delivered.recv()).await.expect("receipt");
    assert!(got.short_message.starts_with(format!("id:{b} ").as_bytes()), "{got:?}");
    assert!(got.short_message.ends_with(b"text:caf\xe9"), "{got:?}");

    let mut long = receipt_text("u3", "DELIVRD").into_bytes();
    long.resize(254, b'x');
    assert_eq!(send("u3", 0x01, long.clone()).await, CommandStatus::ESME_ROK);
    let got = within("long receipt", s.esme.delivered.recv()).await.expect("receipt");
    assert!(got.short_message.is_empty(), "{got:?}");
    let payload = got.tlvs.message_payload().expect("message_payload");
    assert!(payload.len() > 254 && payload.starts_with(format!("id:{c} ").as_bytes()), "{payload:?}");
    assert_eq!(payload[payload.len() - 10..], long[long.len() - 10..]);
    s.daemon.shutdown().await;
}

/// Issue 14: a reload that removes an account purges its queue, and MO or receipts for it get
/// ESME_RX_T_APPN (transient: the upstream keeps them) instead of being queued for nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_account_is_purged_and_its_traffic_refused_transiently() {
    let s = setup(&["u1"], MessageIdFormat::Same).await;
    let _ours = submit_ok(&s.esme, 1).await;
    s.esme.session.unbind().await;
    let core = s.daemon.core().clone();
    eventually("ESME gone", Duration::from_secs(10), || {
        core.accounts.get("esme").is_some_and(|a| !a.has_receiver())
    })
    .await;
    for n in 0..3 {
        assert_eq!(mo(&s.upstream, &format!("mo {n}")).await, CommandStatus::ESME_ROK);
    }
    assert_eq!(core.store.pending("esme").await.expect("pending"), 3);
    // The reload drops the account; the MO rule still names it (a reload racing the routing).
    let mut cfg = (*core.config.get()).clone();
    cfg.accounts.clear();
    s.daemon.reload.send(Arc::new(cfg)).expect("reload");
    let mut daemon = s.daemon;
    let mut m = String::new();
    for _ in 0..500 {
        m = daemon.metrics().await;
        if metric_sum(&m, "smscd_queue_dropped_total", &["account_removed"]) == 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric_sum(&m, "smscd_queue_dropped_total", &["account_removed"]), 3.0, "{m}");
    assert_eq!(core.store.pending("esme").await.expect("pending"), 0);
    assert_eq!(mo(&s.upstream, "late mo").await, CommandStatus::ESME_RX_T_APPN);
    assert_eq!(
        deliver(&s.upstream, 0x04, &receipt_text("u1", "DELIVRD")).await,
        CommandStatus::ESME_RX_T_APPN
    );
    let m = daemon.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["account_removed"]), 2.0, "{m}");
    daemon.shutdown().await;
}

/// Issue 14: at `queues.max_per_account` the upstream gets ESME_RMSGQFUL (it keeps the MO and
/// retries) instead of an ever-growing queue; once the ESME took what was queued, it fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_pushes_back_upstream_with_msgqful() {
    let s = setup_with(&[], MessageIdFormat::Same, None, |c| c.queues.max_per_account = 2).await;
    s.esme.session.unbind().await;
    let core = s.daemon.core().clone();
    eventually("ESME gone", Duration::from_secs(10), || {
        core.accounts.get("esme").is_some_and(|a| !a.has_receiver())
    })
    .await;
    assert_eq!(mo(&s.upstream, "one").await, CommandStatus::ESME_ROK);
    assert_eq!(mo(&s.upstream, "two").await, CommandStatus::ESME_ROK);
    assert_eq!(mo(&s.upstream, "three").await, CommandStatus::ESME_RMSGQFUL);
    let m = s.daemon.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_upstream_receipts_total", &["queue_full"]), 1.0, "{m}");
    let mut e = bind(s.daemon.smpp, BindKind::Receiver, "esme", "secret").await.expect("bind");
    for want in ["one", "two"] {
        let d = within("MO", e.delivered.recv()).await.expect("MO");
        assert_eq!(&d.short_message[..], want.as_bytes());
    }
    eventually("queue drained", Duration::from_secs(10), || {
        futures::executor::block_on(core.store.pending("esme")).is_ok_and(|n| n == 0)
    })
    .await;
    assert_eq!(mo(&s.upstream, "three").await, CommandStatus::ESME_ROK);
    let mut daemon = s.daemon;
    daemon.shutdown().await;
}

/// An ESME answering every deliver_sm with `status` (and counting them).
struct Refuse(CommandStatus, mpsc::UnboundedSender<DeliverSm>);

impl Handler for Refuse {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        match req.pdu.body {
            Body::DeliverSm(d) => {
                let _ = self.1.send(d);
                if self.0.is_ok() {
                    Reply::Ok(Body::DeliverSmResp(DeliverSmResp::default()))
                } else {
                    Reply::Error(self.0)
                }
            }
            _ => Reply::Error(CommandStatus::ESME_RINVCMDID),
        }
    }
}

/// Issue 14: a delivery the ESME refuses for good (ESME_RX_P_APPN) is dead-lettered after one
/// attempt; one refused transiently (ESME_RX_T_APPN) after `queues.max_attempts`; neither is
/// retried for ever (before, both went back to the queue every 200 ms without end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_deliveries_end_in_the_dead_letters() {
    let s = setup_with(&[], MessageIdFormat::Same, None, |c| c.queues.max_attempts = 3).await;
    s.esme.session.unbind().await;
    let core = s.daemon.core().clone();
    for (status, text, tries, reason) in [
        (CommandStatus::ESME_RX_P_APPN, "permanent", 1, "refused"),
        (CommandStatus::ESME_RX_T_APPN, "transient", 3, "attempts"),
    ] {
        eventually("no receiver", Duration::from_secs(10), || {
            core.accounts.get("esme").is_some_and(|a| !a.has_receiver())
        })
        .await;
        assert_eq!(mo(&s.upstream, text).await, CommandStatus::ESME_ROK);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let b = Bind {
            system_id: Bytes::from_static(b"esme"),
            password: Bytes::from_static(b"secret"),
            ..Bind::default()
        };
        let (session, _) = within(
            "bind",
            esme::connect(s.daemon.smpp, BindKind::Receiver, b, SessionConfig::default(), Refuse(status, tx)),
        )
        .await
        .expect("bind");
        for _ in 0..tries {
            let d = within("attempt", rx.recv()).await.expect("deliver_sm");
            assert_eq!(&d.short_message[..], text.as_bytes());
        }
        let mut m = String::new();
        for _ in 0..500 {
            m = s.daemon.metrics().await;
            if metric_sum(&m, "smscd_dead_lettered_total", &[reason]) == 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metric_sum(&m, "smscd_dead_lettered_total", &[reason]), 1.0, "{m}");
        eventually("dead-lettered, not owed", Duration::from_secs(10), || {
            futures::executor::block_on(core.store.pending("esme")).is_ok_and(|n| n == 0)
        })
        .await;
        session.unbind().await;
    }
    // Left the queue: never sent again. Only the transient one was retried (twice).
    assert_eq!(core.store.dead_letters("esme").await.expect("dead letters"), 2);
    let m = s.daemon.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_deliveries_total", &["retried"]), 2.0, "{m}");
    assert_eq!(metric_sum(&m, "smscd_dead_letters", &["esme"]), 2.0, "{m}");
    let mut daemon = s.daemon;
    daemon.shutdown().await;
}
