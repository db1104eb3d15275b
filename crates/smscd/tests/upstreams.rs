//! Upstream binds against a third-party SMSC (npm smpp's server, tests/peers/smsc_node.js):
//! receipts through a real upstream, a refused bind, and an upstream dying mid-traffic.

mod common;

use common::*;
use futures::future::join_all;
use smpp::session::BindKind;
use smpp::{Body, CommandStatus};
use std::collections::BTreeSet;
use std::time::Duration;

async fn node_smsc(extra: &[&str]) -> (Peer, u16) {
    let mut args: Vec<String> =
        ["--port", "0", "--system-id", "up", "--password", "uppw"].map(String::from).to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = Peer::spawn(Lang::Node, "smsc_node.js", &args);
    let ev = p.expect_event("listening").await;
    let port = ev["port"].as_u64().expect("port") as u16;
    (p, port)
}

fn id_of(p: &smpp::Pdu) -> String {
    match &p.body {
        Body::SubmitSmResp(r) => String::from_utf8_lossy(&r.message_id).into_owned(),
        other => panic!("not a submit_sm_resp: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_from_a_real_upstream_carry_our_ids() {
    let (mut node, port) = node_smsc(&["--receipt-delay-ms", "5"]).await;
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.binds = vec![upstream("node", port, "up", "uppw")];
    cfg.routing.default_chain = vec!["bind:node".into()];
    let d = Daemon::start(cfg).await;
    let core = d.core().clone();
    eventually("bound upstream", Duration::from_secs(10), || {
        core.upstreams.get("node").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let mut e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let resps = join_all((0..10).map(|_| e.session.request(submit("3161", 1)))).await;
    let ours: BTreeSet<String> = resps
        .iter()
        .map(|r| {
            let r = r.as_ref().expect("resp");
            assert_eq!(r.command_status, CommandStatus::ESME_ROK);
            id_of(r)
        })
        .collect();
    let mut got = BTreeSet::new();
    while got.len() < 10 {
        let d = within("receipt", e.delivered.recv()).await.expect("receipt");
        let text = String::from_utf8_lossy(&d.short_message).into_owned();
        let rid = receipt_id(&d);
        assert!(text.starts_with(&format!("id:{rid} ")), "text {text} vs TLV {rid}");
        got.insert(rid);
    }
    assert_eq!(got, ours);
    // The upstream's ids are not ours.
    let node_ids: BTreeSet<String> = {
        let mut ids = BTreeSet::new();
        while ids.len() < 10 {
            let ev = node.next_event().await.expect("event");
            if ev["event"] == "submit" {
                ids.insert(ev["message_id"].as_str().expect("id").to_owned());
            }
        }
        ids
    };
    assert!(node_ids.is_disjoint(&ours));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_bind_fails_over_to_sim() {
    let (mut node, port) = node_smsc(&[]).await;
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.binds = vec![upstream("node", port, "up", "wrong")];
    cfg.routing.default_chain = vec!["bind:node".into(), "sim".into()];
    let d = Daemon::start(cfg).await;
    let ev = node.expect_event("bind_rejected").await;
    assert_eq!(ev["status"], 14, "ESME_RINVPASWD");
    let mut e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let r = within("submit", e.session.request(submit("3161", 1))).await.expect("resp");
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    let dl = within("receipt", e.delivered.recv()).await.expect("receipt");
    assert_eq!(receipt_id(&dl), id_of(&r));
    let m = d.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_submits_total", &["route=\"sim\"", "ESME_ROK"]), 1.0);
    assert_eq!(metric_sum(&m, "smscd_upstream_binds", &["upstream=\"node\""]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dying_mid_traffic_fails_over_and_loses_nothing_acknowledged() {
    let (mut node, port) = node_smsc(&[]).await;
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.binds = vec![upstream("node", port, "up", "uppw")];
    cfg.routing.default_chain = vec!["bind:node".into(), "sim".into()];
    let d = Daemon::start(cfg).await;
    let core = d.core().clone();
    eventually("bound upstream", Duration::from_secs(10), || {
        core.upstreams.get("node").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let total = 400;
    let session = e.session.clone();
    let traffic = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for chunk in 0..(total / 20) {
            let batch = join_all((0..20).map(|_| session.request(submit("3161", 0)))).await;
            for r in batch {
                statuses.push(r.map(|p| p.command_status));
            }
            if chunk == 2 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        statuses
    });
    // Kill the upstream once it has taken some of the traffic.
    let mut node_seen = 0;
    while node_seen < 40 {
        let ev = node.next_event().await.expect("event");
        if ev["event"] == "submit" {
            node_seen += 1;
        }
    }
    node.kill();
    let statuses = within("traffic", traffic).await.expect("traffic task");
    assert_eq!(statuses.len(), total);
    for s in &statuses {
        assert_eq!(s.as_ref().ok(), Some(&CommandStatus::ESME_ROK), "every submit acknowledged: {s:?}");
    }
    // Every acknowledged submit was taken by a target: the node (counted by its resps) or the sim.
    let m = d.metrics().await;
    let via_node = metric_sum(&m, "smscd_submits_total", &["route=\"node\"", "ESME_ROK"]);
    let via_sim = metric_sum(&m, "smscd_submits_total", &["route=\"sim\"", "ESME_ROK"]);
    assert_eq!(via_node + via_sim, total as f64, "{m}");
    assert!(via_node >= 40.0 && via_sim > 0.0, "node {via_node} sim {via_sim}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mo_from_an_upstream_reaches_the_account_by_routing_mo() {
    let (mut node, port) = node_smsc(&[]).await;
    let mut cfg = base_config(vec![account("esme", "secret"), account("other", "pw")]);
    cfg.binds = vec![upstream("node", port, "up", "uppw")];
    cfg.routing.mo = vec![
        smsc_api::smscd_config::MoRule {
            destination_prefix: Some("999".into()),
            upstream: None,
            account: "other".into(),
        },
        smsc_api::smscd_config::MoRule {
            destination_prefix: Some("12345".into()),
            upstream: None,
            account: "esme".into(),
        },
    ];
    let d = Daemon::start(cfg).await;
    let core = d.core().clone();
    eventually("bound upstream", Duration::from_secs(10), || {
        core.upstreams.get("node").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let mut e = bind(d.smpp, BindKind::Receiver, "esme", "secret").await.expect("bind");
    node.send_control(
        r#"{"cmd":"deliver","source_addr":"31600000000","dest_addr":"12345","text":"hi there"}"#,
    )
    .await;
    let ev = node.expect_event("mo_sent").await;
    assert_eq!(ev["status"], 0, "{}", node.context());
    let mo = within("MO", e.delivered.recv()).await.expect("MO");
    assert!(!mo.is_delivery_receipt());
    assert_eq!(&mo.short_message[..], b"hi there");
    assert_eq!(&mo.destination.addr[..], b"12345");
    // No rule matches: the upstream is refused.
    node.send_control(r#"{"cmd":"deliver","source_addr":"31600000000","dest_addr":"555","text":"x"}"#).await;
    let ev = node.expect_event("mo_sent").await;
    assert_eq!(ev["status"], 0x0B, "ESME_RINVDSTADR: {}", node.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_account_window_answers_msgqful() {
    // B answers after its receipt-less sim path; A defers to B, so A's per-session window counts.
    let b = Daemon::start(base_config(vec![account("up", "uppw")])).await;
    let mut a_cfg = base_config(vec![{
        let mut a = account("esme", "secret");
        a.window = 2;
        a
    }]);
    a_cfg.binds = vec![upstream("b", b.smpp.port(), "up", "uppw")];
    a_cfg.routing.default_chain = vec!["bind:b".into()];
    let a = Daemon::start(a_cfg).await;
    let core = a.core().clone();
    eventually("bound upstream", Duration::from_secs(10), || {
        core.upstreams.get("b").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let e = bind(a.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let resps = join_all((0..40).map(|_| e.session.request(submit("3161", 0)))).await;
    let statuses: Vec<CommandStatus> = resps.into_iter().map(|r| r.expect("resp").command_status).collect();
    let ok = statuses.iter().filter(|s| s.is_ok()).count();
    let full = statuses.iter().filter(|s| **s == CommandStatus::ESME_RMSGQFUL).count();
    assert_eq!(ok + full, 40, "{statuses:?}");
    assert!(ok >= 2 && full > 0, "ok {ok} full {full}");
    // The session is still usable afterwards.
    let r = within("submit", e.session.request(submit("3161", 0))).await.expect("resp");
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
}

/// An upstream that answers every submit_sm with ESME_RTHROTTLED (no third-party peer does).
struct Throttling;

impl smpp::session::Handler for Throttling {
    fn on_request(&mut self, _req: smpp::session::Request<'_>) -> smpp::session::Reply {
        smpp::session::Reply::Error(CommandStatus::ESME_RTHROTTLED)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_upstream_is_backed_off_and_the_chain_moves_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let cfg = smpp::session::SessionConfig::default();
                if let Ok(b) = smpp::session::smsc::accept(s, Some(peer), cfg).await {
                    if let Ok(session) =
                        b.accept(bytes::Bytes::from_static(b"throttler"), None, Throttling).await
                    {
                        session.closed().await;
                    }
                }
            });
        }
    });
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.binds = vec![upstream("t", port, "x", "y")];
    cfg.routing.default_chain = vec!["bind:t".into(), "sim".into()];
    let d = Daemon::start(cfg).await;
    let core = d.core().clone();
    eventually("bound upstream", Duration::from_secs(10), || {
        core.upstreams.get("t").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    for _ in 0..50 {
        let r = within("submit", e.session.request(submit("3161", 0))).await.expect("resp");
        assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    }
    let m = d.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_submits_total", &["route=\"sim\"", "ESME_ROK"]), 50.0);
    // Backed off after the first refusal: not asked 50 times.
    let asked = metric_sum(&m, "smscd_upstream_submits_total", &["upstream=\"t\"", "ESME_RTHROTTLED"]);
    assert!((1.0..10.0).contains(&asked), "upstream asked {asked} times\n{m}");
}
