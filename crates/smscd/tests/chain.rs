//! End to end through two daemons: third-party ESME -> smscd A -> smscd B (upstream, sim target)
//! -> receipts back through A to the ESME, which only ever sees A's ids.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

async fn two_hops() -> (Daemon, Daemon) {
    let mut b_cfg = base_config(vec![account("a_up", "uppw")]);
    b_cfg.sim.receipt_delay_ms = 20;
    let b = Daemon::start(b_cfg).await;
    let mut a_cfg = base_config(vec![account("esme", "secret")]);
    a_cfg.binds = vec![upstream("b", b.smpp.port(), "a_up", "uppw")];
    a_cfg.routing.default_chain = vec!["bind:b".into()];
    let a = Daemon::start(a_cfg).await;
    let core = a.core().clone();
    eventually("A bound to B", Duration::from_secs(10), || {
        core.upstreams.get("b").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    (a, b)
}

async fn check_run(mut esme: Peer, n: usize, b: &Daemon) {
    let code = esme.finish().await;
    assert_eq!(code, 0, "ESME run failed\n{}", esme.context());
    let submitted: BTreeSet<String> = esme
        .events_named("submit_resp")
        .iter()
        .map(|e| {
            assert_eq!(e["status"], 0, "{}", esme.context());
            e["message_id"].as_str().expect("message_id").to_owned()
        })
        .collect();
    assert_eq!(submitted.len(), n, "distinct ids\n{}", esme.context());
    let receipts = esme.events_named("deliver");
    assert_eq!(receipts.len(), n, "{}", esme.context());
    let mut tlv_ids = BTreeSet::new();
    for r in &receipts {
        assert_eq!(r["receipt"], true);
        let tlv = r["receipted_message_id"].as_str().expect("receipted_message_id").to_owned();
        let text_id = r["id"].as_str().expect("text id").to_owned();
        assert_eq!(tlv, text_id, "TLV and text ids differ: {r}");
        assert_eq!(r["stat"], "DELIVRD");
        tlv_ids.insert(tlv);
    }
    assert_eq!(tlv_ids, submitted, "receipt ids are exactly the submit ids");
    // B really carried the traffic (and issued its own ids, which the ESME never saw).
    let m = b.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_submits_total", &["account=\"a_up\"", "status=\"ESME_ROK\""]), n as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpplib_esme_through_two_daemons_gets_every_receipt_with_our_ids() {
    let (a, b) = two_hops().await;
    let n = 20;
    let args = esme_args(
        a.smpp.port(),
        "esme",
        "secret",
        &["--submit", "20", "--registered-delivery", "1", "--wait-receipts", "20", "--timeout", "20"],
    );
    let esme = Peer::spawn(Lang::Python, "esme_smpplib.py", &args);
    check_run(esme, n, &b).await;
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_esme_through_two_daemons_gets_every_receipt_with_our_ids() {
    let (a, b) = two_hops().await;
    let n = 20;
    let args = esme_args(
        a.smpp.port(),
        "esme",
        "secret",
        &["--submit", "20", "--registered-delivery", "1", "--wait-receipts", "20", "--timeout", "20"],
    );
    let esme = Peer::spawn(Lang::Node, "esme_node.js", &args);
    check_run(esme, n, &b).await;
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_only_receipts_drop_delivered_ones() {
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.sim.receipt_delay_ms = 0;
    cfg.sim.outcomes = [("DELIVRD".to_string(), 1.0)].into();
    let d = Daemon::start(cfg).await;
    let mut e = bind(d.smpp, smpp::session::BindKind::Transceiver, "esme", "secret").await.expect("bind");
    // registered_delivery 2 (failures only) then 1: only the second one's receipt arrives.
    let r2 = within("submit", e.session.request(submit("3161", 2))).await.expect("resp");
    let r1 = within("submit", e.session.request(submit("3161", 1))).await.expect("resp");
    let id_of = |p: &smpp::Pdu| match &p.body {
        smpp::Body::SubmitSmResp(r) => String::from_utf8_lossy(&r.message_id).into_owned(),
        other => panic!("{other:?}"),
    };
    let (_id2, id1) = (id_of(&r2), id_of(&r1));
    let got = within("receipt", e.delivered.recv()).await.expect("receipt");
    assert_eq!(receipt_id(&got), id1);
    // Nothing else arrives: the DELIVRD receipt for rd=2 was dropped.
    let more = tokio::time::timeout(Duration::from_millis(300), e.delivered.recv()).await;
    assert!(more.is_err(), "unexpected delivery {more:?}");
}

/// Answers the first deliver_sm with ESME_RX_T_APPN, the rest with 0.
struct RejectFirst(bool, tokio::sync::mpsc::UnboundedSender<smpp::DeliverSm>);

impl smpp::session::Handler for RejectFirst {
    fn on_request(&mut self, req: smpp::session::Request<'_>) -> smpp::session::Reply {
        match req.pdu.body {
            smpp::Body::DeliverSm(_) if !self.0 => {
                self.0 = true;
                smpp::session::Reply::Error(smpp::CommandStatus::ESME_RX_T_APPN)
            }
            smpp::Body::DeliverSm(d) => {
                let _ = self.1.send(d);
                smpp::session::Reply::Ok(smpp::Body::DeliverSmResp(Default::default()))
            }
            _ => smpp::session::Reply::Error(smpp::CommandStatus::ESME_RINVCMDID),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_wait_for_a_receiver_and_are_retried_until_acknowledged() {
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.sim.receipt_delay_ms = 0;
    let d = Daemon::start(cfg).await;
    let tx = bind(d.smpp, smpp::session::BindKind::Transmitter, "esme", "secret").await.expect("bind");
    let r = within("submit", tx.session.request(submit("3161", 1))).await.expect("resp");
    let id = match &r.body {
        smpp::Body::SubmitSmResp(s) => String::from_utf8_lossy(&s.message_id).into_owned(),
        other => panic!("{other:?}"),
    };
    // No receiver yet: the receipt waits in the store.
    let core = d.core().clone();
    let mut pending = 0;
    for _ in 0..500 {
        pending = core.store.pending("esme").await.expect("store");
        if pending == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pending, 1);
    // A receiver that refuses the first attempt still gets it, on the retry.
    let (dtx, mut drx) = tokio::sync::mpsc::unbounded_channel();
    let b = smpp::Bind {
        system_id: bytes::Bytes::from_static(b"esme"),
        password: bytes::Bytes::from_static(b"secret"),
        ..smpp::Bind::default()
    };
    let (_rx_session, _) = within(
        "rx bind",
        smpp::session::esme::connect(
            d.smpp,
            smpp::session::BindKind::Receiver,
            b,
            smpp::session::SessionConfig::default(),
            RejectFirst(false, dtx),
        ),
    )
    .await
    .expect("rx bind");
    let got = within("receipt", drx.recv()).await.expect("receipt");
    assert_eq!(receipt_id(&got), id);
    for _ in 0..500 {
        pending = core.store.pending("esme").await.expect("store");
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pending, 0, "acknowledged receipt left the queue");
    let m = d.metrics().await;
    assert!(metric_sum(&m, "smscd_deliveries_total", &["result=\"retried\""]) >= 1.0, "{m}");
}
