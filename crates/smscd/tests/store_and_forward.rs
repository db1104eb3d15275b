//! Store-and-forward (issue 16): submits no target can take now are accepted, held and sent when
//! the carrier comes back; validity, scheduled delivery, query_sm / cancel_sm / replace_sm on
//! held messages; the Redis message store shared by two replicas, one SIGKILLed.
//!
//! The carrier is real SMPP on 127.0.0.1: an in-process smscd whose sim issues receipts (so
//! every receipt travels carrier -> smscd -> ESME), or the tests' [`Carrier`] where the test
//! reads what arrived. "Down" is a port nobody listens on yet; "back" starts it there.
//! Every wait polls with a deadline.

mod common;

use bytes::Bytes;
use common::replicas::{free_port, Ports, Ready, RedisServer, Replica, BIN};
use common::*;
use smpp::session::BindKind;
use smpp::{Body, CommandStatus, DeliverSm, Pdu, QuerySm, ReplaceSm, SubmitSm};
use smsc_api::smscd_config::{SmscdConfig, StoreConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// smscd for account `esme`, its only upstream `carrier` on `carrier_port`, store-and-forward on
/// for the default chain, retries fast.
fn relay_config(carrier_port: u16) -> SmscdConfig {
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.binds = vec![upstream("carrier", carrier_port, "up", "uppw")];
    cfg.routing.default_chain = vec!["bind:carrier".into()];
    cfg.routing.store_and_forward = true;
    cfg.store_and_forward.retry_min = Duration::from_millis(100);
    cfg.store_and_forward.retry_max = Duration::from_millis(500);
    cfg.server.submit_timeout_ms = 2000;
    cfg.store_and_forward.lease = Duration::from_secs(3);
    cfg
}

/// The carrier: an smscd whose sim issues a DELIVRD receipt for every submit, on `port`.
async fn carrier_sim(port: u16) -> Daemon {
    let mut up = account("up", "uppw");
    up.window = 64;
    let mut cfg = base_config(vec![up]);
    cfg.server.port = port;
    cfg.sim.receipt_delay_ms = 10;
    Daemon::start(cfg).await
}

fn with(sm: Body, f: impl FnOnce(&mut SubmitSm)) -> Body {
    match sm {
        Body::SubmitSm(mut s) => {
            f(&mut s);
            Body::SubmitSm(s)
        }
        other => other,
    }
}

fn message_id(p: &Pdu) -> Option<String> {
    match &p.body {
        Body::SubmitSmResp(r) if p.command_status.is_ok() => {
            Some(String::from_utf8_lossy(&r.message_id).into_owned())
        }
        _ => None,
    }
}

async fn send(e: &Esme, body: Body) -> Pdu {
    within("request", e.session.request(body)).await.expect("response")
}

/// Submit `n` texts `m<i>` to `dest` (registered_delivery 1), each accepted: the ids.
async fn submit_held(e: &Esme, n: usize, dest: &str, validity: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let body = with(submit_text(dest, 1, &format!("m{i}")), |s| {
            s.validity_period = Bytes::from(validity.to_owned())
        });
        let resp = send(e, body).await;
        match message_id(&resp) {
            Some(id) => ids.push(id),
            None => panic!("submit {i} refused: {:?}", resp.command_status),
        }
    }
    ids
}

/// Receipts until every id in `want` has one (or `limit` passes): receipts per id, and stat words.
async fn receipts(
    rx: &mut mpsc::UnboundedReceiver<DeliverSm>,
    want: &BTreeSet<String>,
    limit: Duration,
) -> (BTreeMap<String, usize>, BTreeMap<String, String>) {
    let (mut got, mut stat) = (BTreeMap::new(), BTreeMap::new());
    let deadline = tokio::time::Instant::now() + limit;
    while !want.iter().all(|id| got.contains_key(id)) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(d)) => {
                let id = receipt_id(&d);
                *got.entry(id.clone()).or_insert(0) += 1;
                let text = String::from_utf8_lossy(&d.short_message).into_owned();
                let word = text.split("stat:").nth(1).and_then(|t| t.split_whitespace().next()).unwrap_or("");
                stat.insert(id, word.to_owned());
            }
            Ok(None) | Err(_) => break,
        }
    }
    (got, stat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_while_the_carrier_is_down_then_delivered_once_with_every_receipt() {
    let port = free_port();
    let relay = Daemon::start(relay_config(port)).await;
    let mut esme = bind(relay.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let n = 40;
    let ids = submit_held(&esme, n, "3161000", "").await;
    let want: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(want.len(), n, "distinct ids");
    relay.wait_metric("smscd_held_submits", &["account=\"esme\""], n as f64, Duration::from_secs(10)).await;
    // The admin view lists them, earliest due first.
    let (code, body) = http_get(relay.admin, "/queue/esme").await;
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(view["esme"]["held"], n, "{body}");
    let listed: Vec<&str> = view["esme"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(listed.len(), n, "{body}");
    assert!(listed.iter().all(|id| want.contains(*id)), "{body}");

    let carrier = carrier_sim(port).await;
    let (got, stat) = receipts(&mut esme.delivered, &want, Duration::from_secs(60)).await;
    let missing: Vec<_> = want.iter().filter(|id| !got.contains_key(*id)).collect();
    assert!(missing.is_empty(), "no receipt for {missing:?}");
    assert!(got.values().all(|c| *c == 1), "one receipt each: {got:?}");
    assert!(stat.values().all(|s| s == "DELIVRD"), "{stat:?}");
    // Exactly once at the carrier (no crash here, so no duplicate).
    let at_carrier = carrier.metric("smscd_submits_total", &["account=\"up\"", "status=\"ESME_ROK\""]).await;
    assert_eq!(at_carrier, n as f64);
    relay.wait_metric("smscd_held_submits", &["account=\"esme\""], 0.0, Duration::from_secs(10)).await;
    // The final state stays visible to query_sm.
    let q =
        send(&esme, Body::QuerySm(QuerySm { message_id: Bytes::from(ids[0].clone()), ..Default::default() }))
            .await;
    match q.body {
        Body::QuerySmResp(r) if q.command_status.is_ok() => {
            assert_eq!(r.message_state, 2, "DELIVERED");
            assert_eq!(r.final_date.len(), 16, "final_date set");
        }
        other => panic!("query_sm: {:?} {other:?}", q.command_status),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validity_shorter_than_the_outage_expires_with_receipts_and_nothing_sent_late() {
    let port = free_port();
    let relay = Daemon::start(relay_config(port)).await;
    let mut esme = bind(relay.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let n = 10;
    // Two seconds, relative.
    let ids = submit_held(&esme, n, "3161000", "000000000002000R").await;
    let want: BTreeSet<String> = ids.into_iter().collect();
    let (got, stat) = receipts(&mut esme.delivered, &want, Duration::from_secs(20)).await;
    assert_eq!(got.len(), n, "an expiry receipt each: {got:?}");
    assert!(stat.values().all(|s| s == "EXPIRED"), "{stat:?}");
    relay.wait_metric("smscd_held_submits", &["account=\"esme\""], 0.0, Duration::from_secs(5)).await;
    assert_eq!(relay.metric("smscd_store_and_forward_total", &["result=\"expired\""]).await, n as f64);
    // The carrier returns: nothing is left to send it.
    let carrier = Carrier::start_on(port, Answer::After(Duration::ZERO)).await;
    let core = relay.core().clone();
    eventually("relay bound to the carrier", Duration::from_secs(10), || {
        core.upstreams.get("carrier").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let probe = send(&esme, submit_text("3161000", 0, "probe")).await;
    assert!(probe.command_status.is_ok());
    eventually("probe at the carrier", Duration::from_secs(10), || carrier.count() >= 1).await;
    assert_eq!(carrier.texts(), vec!["probe".to_owned()], "only the probe reached the carrier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_submit_is_sent_when_due_not_before() {
    let carrier = Carrier::start(Answer::After(Duration::ZERO)).await;
    let relay = Daemon::start(relay_config(carrier.port)).await;
    let core = relay.core().clone();
    eventually("relay bound", Duration::from_secs(10), || {
        core.upstreams.get("carrier").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let esme = bind(relay.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let accepted = Instant::now();
    let body = with(submit_text("3161000", 0, "later"), |s| {
        s.schedule_delivery_time = Bytes::from_static(b"000000000005000R")
    });
    let resp = send(&esme, body).await;
    assert!(message_id(&resp).is_some(), "{:?}", resp.command_status);
    let now = send(&esme, submit_text("3161000", 0, "now")).await;
    assert!(now.command_status.is_ok());
    eventually("both at the carrier", Duration::from_secs(30), || carrier.count() >= 2).await;
    let at =
        carrier.received.lock().unwrap().iter().find(|(_, t)| t == "later").map(|(t, _)| *t).expect("later");
    assert_eq!(carrier.texts(), vec!["now".to_owned(), "later".to_owned()]);
    // Not before it was due (the lower bound only: it cannot be early unless scheduling is wrong).
    let waited = at.into_std().saturating_duration_since(accepted);
    assert!(waited >= Duration::from_millis(4900), "sent after {waited:?}, scheduled for 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_cancel_replace_on_held_messages_and_bad_inputs() {
    let port = free_port();
    let mut cfg = relay_config(port);
    cfg.store_and_forward.max_per_account = 4;
    let relay = Daemon::start(cfg).await;
    let esme = bind(relay.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");

    // Bad time fields, on any route: their statuses, nothing held.
    for (sched, valid, status) in [
        ("261302143000000+", "", CommandStatus::ESME_RINVSCHED),
        ("", "2612021430", CommandStatus::ESME_RINVEXPIRY),
        ("", "261202143000000X", CommandStatus::ESME_RINVEXPIRY),
        ("000000000010000R", "000000000005000R", CommandStatus::ESME_RINVSCHED),
    ] {
        let body = with(submit_text("3161000", 0, "bad"), |s| {
            s.schedule_delivery_time = Bytes::from(sched.to_owned());
            s.validity_period = Bytes::from(valid.to_owned());
        });
        assert_eq!(send(&esme, body).await.command_status, status, "{sched:?} {valid:?}");
    }

    let ids = submit_held(&esme, 3, "3161000", "").await;
    let body = with(submit_text("3162000", 0, "sched"), |s| {
        s.schedule_delivery_time = Bytes::from_static(b"000001000000000R")
    });
    let scheduled = message_id(&send(&esme, body).await).expect("scheduled accepted");
    // The account's cap (4): the next is refused.
    assert_eq!(
        send(&esme, submit_text("3161000", 0, "full")).await.command_status,
        CommandStatus::ESME_RMSGQFUL
    );

    let query =
        |id: &str| Body::QuerySm(QuerySm { message_id: Bytes::from(id.to_owned()), ..Default::default() });
    let cancel = |id: &str| {
        Body::CancelSm(smpp::CancelSm { message_id: Bytes::from(id.to_owned()), ..Default::default() })
    };
    for id in [&ids[0], &scheduled] {
        let q = send(&esme, query(id)).await;
        match q.body {
            Body::QuerySmResp(r) if q.command_status.is_ok() => {
                assert_eq!(r.message_state, 1, "ENROUTE");
                assert!(r.final_date.is_empty());
            }
            other => panic!("query_sm: {:?} {other:?}", q.command_status),
        }
    }
    assert_eq!(send(&esme, query("nope")).await.command_status, CommandStatus::ESME_RQUERYFAIL);
    assert_eq!(send(&esme, cancel("nope")).await.command_status, CommandStatus::ESME_RINVMSGID);
    assert_eq!(send(&esme, cancel("")).await.command_status, CommandStatus::ESME_RCANCELFAIL);

    // Cancel the scheduled one and the first; a second cancel fails.
    assert!(send(&esme, cancel(&scheduled)).await.command_status.is_ok());
    assert!(send(&esme, cancel(&ids[0])).await.command_status.is_ok());
    assert_eq!(send(&esme, cancel(&ids[0])).await.command_status, CommandStatus::ESME_RCANCELFAIL);
    let q = send(&esme, query(&ids[0])).await;
    match q.body {
        Body::QuerySmResp(r) => {
            assert_eq!((q.command_status, r.message_state), (CommandStatus::ESME_ROK, 4), "DELETED")
        }
        other => panic!("{other:?}"),
    }

    // Replace the second's text; a bad validity changes nothing.
    let replace = |id: &str, text: &str, validity: &str| {
        Body::ReplaceSm(ReplaceSm {
            message_id: Bytes::from(id.to_owned()),
            short_message: Bytes::from(text.to_owned()),
            validity_period: Bytes::from(validity.to_owned()),
            ..Default::default()
        })
    };
    assert_eq!(
        send(&esme, replace(&ids[1], "x", "bad")).await.command_status,
        CommandStatus::ESME_RINVEXPIRY
    );
    assert!(send(&esme, replace(&ids[1], "replaced", "")).await.command_status.is_ok());
    assert_eq!(send(&esme, replace("nope", "x", "")).await.command_status, CommandStatus::ESME_RINVMSGID);
    assert_eq!(
        send(&esme, replace(&scheduled, "x", "")).await.command_status,
        CommandStatus::ESME_RREPLACEFAIL
    );

    // The carrier returns: the replaced text and the third go; the cancelled never do.
    let carrier = Carrier::start_on(port, Answer::After(Duration::ZERO)).await;
    eventually("two at the carrier", Duration::from_secs(30), || carrier.count() >= 2).await;
    relay.wait_metric("smscd_held_submits", &["account=\"esme\""], 0.0, Duration::from_secs(10)).await;
    let mut texts = carrier.texts();
    texts.sort();
    assert_eq!(texts, vec!["m2".to_owned(), "replaced".to_owned()]);
    assert_eq!(
        send(&esme, cancel(&ids[1])).await.command_status,
        CommandStatus::ESME_RCANCELFAIL,
        "delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_without_store_and_forward_still_refuse_while_down() {
    let port = free_port();
    let mut cfg = relay_config(port);
    cfg.routing.store_and_forward = false;
    let relay = Daemon::start(cfg).await;
    let esme = bind(relay.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let r = send(&esme, submit_text("3161000", 0, "x")).await;
    assert!(!r.command_status.is_ok(), "refused, not held");
    assert_eq!(relay.metric("smscd_held_submits", &["account=\"esme\""]).await, 0.0);
}

// ---- two replicas on one Redis ------------------------------------------------------------------

/// An smscd replica on the Redis store at `redis_port`, its only upstream `carrier` on
/// `carrier`, store-and-forward on; ready (its carrier may be down).
async fn replica(name: &str, dir: &Path, redis_port: u16, carrier: u16) -> Replica {
    let config = |p: Ports| {
        format!(
            r#"server: {{ bind_address: 127.0.0.1, port: {smpp}, bind_timeout_secs: 5, submit_timeout_ms: 2000 }}
admin: {{ bind_address: 127.0.0.1, port: {admin} }}
accounts:
  - {{ system_id: esme, password: secret, window: 64 }}
binds:
  - {{ name: carrier, host: 127.0.0.1, port: {carrier}, system_id: up, password: uppw, bind_type: transceiver,
      window: 32, reconnect: {{ min_ms: 50, max_ms: 500 }} }}
routing: {{ default_chain: ["bind:carrier"], store_and_forward: true }}
store_and_forward: {{ retry_min: 100ms, retry_max: 500ms, lease: 3s }}
store: {{ type: redis, url: "redis://127.0.0.1:{redis_port}/", key_prefix: saf, ttl: 1h }}
shutdown: {{ drain_secs: 2 }}
"#,
            smpp = p.smpp,
            admin = p.admin
        )
    };
    Replica::start(name, dir, config, &[], Ready::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_redis_the_accepting_one_sigkilled_the_other_delivers_everything() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut a = replica("saf-a", dir.path(), redis.port, port).await;
    let b = replica("saf-b", dir.path(), redis.port, port).await;
    // The ESME's receiver is on B; A only accepts.
    let mut rx = bind(b.smpp, BindKind::Receiver, "esme", "secret").await.expect("bind B");
    let tx = bind(a.smpp, BindKind::Transmitter, "esme", "secret").await.expect("bind A");
    let n = 60;
    let ids = submit_held(&tx, n, "3161000", "").await;
    let want: BTreeSet<String> = ids.into_iter().collect();
    assert_eq!(want.len(), n);
    // Held in Redis, visible to both (each replica's gauge reads the shared queue).
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.metric("smscd_held_submits", &["account=\"esme\""]).await != n as f64 {
        assert!(Instant::now() < deadline, "B does not see the held submits\n{}", b.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.sigkill();
    let carrier = carrier_sim(port).await;
    let (got, stat) = receipts(&mut rx.delivered, &want, Duration::from_secs(60)).await;
    let missing: Vec<_> = want.iter().filter(|id| !got.contains_key(*id)).collect();
    assert!(missing.is_empty(), "no receipt for {} of {n}: {missing:?}\n{}", missing.len(), b.logs());
    assert!(stat.values().all(|s| s == "DELIVRD"), "{stat:?}");
    // At least once; a duplicate needs A to have sent before it died, and the carrier was down.
    let at_carrier = carrier.metric("smscd_submits_total", &["account=\"up\"", "status=\"ESME_ROK\""]).await;
    assert_eq!(at_carrier, n as f64, "each exactly once at the carrier");
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.metric("smscd_held_submits", &["account=\"esme\""]).await != 0.0 {
        assert!(Instant::now() < deadline, "held submits left\n{}", b.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(tx);
}

// ---- the drain: many destinations at once, each in order -------------------------------------

/// Issue 16: the drain keeps order per destination while many destinations drain at once. While
/// the carrier is down, 1 002 messages to A and 3 to each of five other destinations are held,
/// scheduled for one moment, then tried once due (each destination's first is not taken and the
/// rest are given back behind it). The carrier comes up answering nothing: A's first message and the first of each
/// other destination are sent, none a second (each waits for the one before it), and the others
/// do not wait behind A. Then it answers everything: each destination's messages arrive in the
/// order they were held, each once, A's last two (more than one claim of 1 000, so in a later
/// claim) behind its first thousand. On Redis. Before forward/drain.rs, the rest of a
/// destination were given back with a shorter wait than the first one's growing backoff, so
/// they went before it (the carrier's first six were a74 and b0-1..b4-1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_waiting_on_the_carrier_does_not_hold_up_the_others_and_each_stays_in_order() {
    let redis = RedisServer::start();
    let port = free_port();
    let mut cfg = relay_config(port);
    cfg.store = StoreConfig::Redis {
        url: redis.url(),
        sentinel: None,
        cluster: None,
        wait: None,
        key_prefix: "drain".into(),
        ttl: Duration::from_secs(3600),
    };
    // The first submit is not answered; see the wait below.
    let submit_timeout_ms = 10_000;
    cfg.server.submit_timeout_ms = submit_timeout_ms;
    cfg.store_and_forward.lease = Duration::from_secs(60);
    // A pass claims what is due when it begins and ends when its slowest send does (a known
    // limit, forward/drain.rs): a destination's first message whose retry fell due just after
    // the pass that meets the carrier began would wait for that pass's unanswered sends. With
    // retries due at once every destination's first is in that pass, whenever the carrier
    // comes back.
    cfg.store_and_forward.retry_min = Duration::from_millis(1);
    cfg.store_and_forward.retry_max = Duration::from_millis(1);
    let relay = Daemon::start(cfg).await;
    let esme = bind(relay.smpp, BindKind::Transmitter, "esme", "secret").await.expect("bind");
    let (a_count, others, per_other) = (1002, 5, 3);
    // Held in this order: A's, then the others' interleaved.
    let mut order: Vec<(String, String)> =
        (0..a_count).map(|i| ("3162000".into(), format!("a{i}"))).collect();
    for i in 0..per_other {
        for d in 0..others {
            order.push((format!("316300{d}"), format!("b{d}-{i}")));
        }
    }
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (dest, text) in &order {
        want.entry(dest.clone()).or_default().push(text.clone());
    }
    // All scheduled for one moment after the last is held, so none is tried before every one
    // is held: a message held after its destination's first was given back to wait is due
    // before it and can go first (a known gap, docs/delivery-guarantees.md), which is not what
    // this test is about.
    let due_ms = unix_ms() + 15_000;
    let schedule = Bytes::from(smpp::time::format_absolute(due_ms));
    for (dest, text) in &order {
        let body = with(submit_text(dest, 0, text), |s| s.schedule_delivery_time = schedule.clone());
        let resp = send(&esme, body).await;
        assert!(message_id(&resp).is_some(), "{text} not held: {:?}", resp.command_status);
    }
    assert!(unix_ms() + 1000 < due_ms, "holding took longer than the schedule leaves for it");
    let total = order.len();
    relay
        .wait_metric("smscd_held_submits", &["account=\"esme\""], total as f64, Duration::from_secs(10))
        .await;
    // Due, and tried while the carrier is down: each destination's first given back to wait,
    // the rest behind it.
    let retried = ["account=\"esme\"", "result=\"retried\""];
    let deadline = Instant::now() + Duration::from_secs(60);
    while relay.metric("smscd_store_and_forward_total", &retried).await < total as f64 {
        assert!(Instant::now() < deadline, "the held messages were not tried with the carrier down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let carrier = Carrier::start_on(port, Answer::Never).await;
    // A's first message and the first of each other destination, none answered.
    let first: BTreeSet<String> =
        std::iter::once("a0".to_owned()).chain((0..others).map(|d| format!("b{d}-0"))).collect();
    // The relay binds when its reconnect backoff says (slow on a loaded machine), so the clock
    // starts at the first submit. A drain that waited for its answer could send nothing else
    // until that send gave up, at four fifths of the submit timeout (dispatch's `send_by`):
    // half of it tells the two apart.
    eventually("the first held message at the carrier", Duration::from_secs(60), || carrier.count() >= 1)
        .await;
    let deadline = Instant::now() + Duration::from_millis(submit_timeout_ms / 2);
    while carrier.count() < first.len() {
        assert!(
            Instant::now() < deadline,
            "the others wait behind an unanswered message: the carrier got {:?}",
            carrier.texts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got: BTreeSet<String> = carrier.texts().into_iter().collect();
    assert_eq!(got, first, "one message per destination while none is answered");

    carrier.answer_all_from_now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while carrier.count() < total {
        assert!(Instant::now() < deadline, "{} of {total} at the carrier", carrier.count());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let texts = carrier.texts();
    for (dest, sent) in &want {
        let arrived: Vec<&String> = texts.iter().filter(|t| sent.contains(t)).collect();
        let sent: Vec<&String> = sent.iter().collect();
        assert_eq!(arrived, sent, "destination {dest}: arrival order (each once)");
    }
    assert_eq!(texts.len(), total, "nothing sent twice");
    relay.wait_metric("smscd_held_submits", &["account=\"esme\""], 0.0, Duration::from_secs(10)).await;
}

// ---- submit_multi and data_sm -------------------------------------------------------------------

/// Answers every submit_sm and data_sm OK, counting them; keeps its session for sending MO.
struct Upstream {
    submits: Arc<std::sync::atomic::AtomicUsize>,
}

impl smpp::session::Handler for Upstream {
    fn on_request(&mut self, req: smpp::session::Request<'_>) -> smpp::session::Reply {
        match &req.pdu.body {
            Body::SubmitSm(_) => {
                let n = self.submits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                smpp::session::Reply::Ok(Body::SubmitSmResp(smpp::SubmitSmResp {
                    message_id: Bytes::from(format!("u{n}")),
                    ..Default::default()
                }))
            }
            _ => smpp::session::Reply::Error(CommandStatus::ESME_RINVCMDID),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_multi_fans_out_with_unsuccess_smes_and_data_sm_goes_both_ways() {
    use smpp::{Address, DataSm, DestAddress, SubmitMulti};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let mut cfg = relay_config(port);
    cfg.routing.store_and_forward = false;
    // Destinations 999... go to an upstream nobody listens for: never taken.
    cfg.binds.push(upstream("nowhere", free_port(), "x", "y"));
    cfg.routing.rules = vec![prefix_rule("999", "bind:nowhere", None)];
    cfg.routing.mo = vec![smsc_api::smscd_config::MoRule {
        destination_prefix: None,
        upstream: None,
        account: "esme".into(),
    }];
    let relay = Daemon::start(cfg).await;
    let submits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (s, peer) = within("relay binds", listener.accept()).await.expect("accept");
    let incoming =
        within("bind", smpp::session::smsc::accept(s, Some(peer), smpp::session::SessionConfig::default()))
            .await
            .expect("bind");
    let carrier = incoming
        .accept(Bytes::from_static(b"up"), None, Upstream { submits: submits.clone() })
        .await
        .expect("bind_resp");
    let core = relay.core().clone();
    eventually("relay bound", Duration::from_secs(10), || {
        core.upstreams.get("carrier").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let mut esme = bind(relay.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let count = || submits.load(std::sync::atomic::Ordering::SeqCst);

    let multi = |dests: Vec<DestAddress>| {
        Body::SubmitMulti(SubmitMulti {
            source: Address::new(0, 0, "12345"),
            destinations: dests,
            short_message: Bytes::from_static(b"fan"),
            ..Default::default()
        })
    };
    let sme = |a: &str| DestAddress::Sme(Address::new(1, 1, a.to_owned()));
    let r = send(&esme, multi(vec![sme("3161001"), sme("3161002"), sme("99900")])).await;
    match r.body {
        Body::SubmitMultiResp(resp) if r.command_status.is_ok() => {
            assert!(!resp.message_id.is_empty());
            assert_eq!(resp.unsuccess_smes.len(), 1, "{resp:?}");
            assert_eq!(&resp.unsuccess_smes[0].address.addr[..], b"99900");
            assert_eq!(resp.unsuccess_smes[0].error_status_code, CommandStatus::ESME_RSUBMITFAIL);
        }
        other => panic!("submit_multi: {:?} {other:?}", r.command_status),
    }
    assert_eq!(count(), 2, "one submit_sm per good destination");
    // A distribution list is refused whole; every destination bad: refused; none: refused.
    let dl = multi(vec![sme("3161003"), DestAddress::DistributionList(Bytes::from_static(b"friends"))]);
    assert_eq!(send(&esme, dl).await.command_status, CommandStatus::ESME_RINVDLNAME);
    assert_eq!(send(&esme, multi(vec![sme("99901")])).await.command_status, CommandStatus::ESME_RSUBMITFAIL);
    assert_eq!(count(), 2, "nothing sent for refused submit_multi");

    // data_sm from the ESME: relayed as a submit, answered data_sm_resp with our id.
    let mut d = DataSm {
        source: Address::new(0, 0, "12345"),
        destination: Address::new(1, 1, "3161004"),
        ..Default::default()
    };
    d.tlvs.set_message_payload(Bytes::from_static(b"payload"));
    let r = send(&esme, Body::DataSm(d)).await;
    match r.body {
        Body::DataSmResp(resp) if r.command_status.is_ok() => assert!(!resp.message_id.is_empty()),
        other => panic!("data_sm: {:?} {other:?}", r.command_status),
    }
    assert_eq!(count(), 3);

    // data_sm from the upstream (an MO): answered data_sm_resp, delivered to the ESME.
    let mut mo = DataSm {
        source: Address::new(1, 1, "3161005"),
        destination: Address::new(0, 0, "12345"),
        ..Default::default()
    };
    mo.tlvs.set_message_payload(Bytes::from_static(b"hello from a phone"));
    let r = within("data_sm upstream", carrier.request(Body::DataSm(mo))).await.expect("data_sm_resp");
    assert!(matches!(r.body, Body::DataSmResp(_)) && r.command_status.is_ok(), "{r:?}");
    let got = within("MO at the ESME", esme.delivered.recv()).await.expect("deliver_sm");
    assert_eq!(got.payload().as_ref(), b"hello from a phone");
    assert_eq!(&got.source.addr[..], b"3161005");
}

// ---- observability: per-route depth, oldest age, retries, expiries; `smscd queue` ------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_metrics_per_account_and_route_oldest_age_retries_expiries_and_the_queue_cli() {
    let port = free_port();
    let mut cfg = relay_config(port);
    // Destinations 3162... go by rule 0 (same carrier), the rest by the default chain.
    cfg.routing.rules = vec![prefix_rule("3162", "bind:carrier", Some(true))];
    let relay = Daemon::start(cfg).await;
    let esme = bind(relay.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let kept = submit_held(&esme, 3, "3161000", "").await;
    // Two on the rule's route that expire in 2 s.
    submit_held(&esme, 2, "3162000", "000000000002000R").await;
    let held = |route: &str| format!("route=\"{route}\"");
    let (default, rule) = (held("default"), held("rule-0"));
    relay
        .wait_metric("smscd_held_submits", &["account=\"esme\"", &default], 3.0, Duration::from_secs(10))
        .await;
    relay.wait_metric("smscd_held_submits", &["account=\"esme\"", &rule], 2.0, Duration::from_secs(10)).await;
    // The rule's two expire; the default's three stay, retried while the carrier is down.
    relay.wait_metric("smscd_held_submits", &["account=\"esme\"", &rule], 0.0, Duration::from_secs(20)).await;
    let expired = ["account=\"esme\"", rule.as_str(), "result=\"expired\""];
    assert_eq!(relay.metric("smscd_store_and_forward_total", &expired).await, 2.0);
    let retried = ["account=\"esme\"", default.as_str(), "result=\"retried\""];
    assert!(
        relay.metric("smscd_store_and_forward_total", &retried).await >= 3.0,
        "each retried at least once"
    );
    let expired_default = ["account=\"esme\"", default.as_str(), "result=\"expired\""];
    assert_eq!(relay.metric("smscd_store_and_forward_total", &expired_default).await, 0.0);
    // The oldest held submit was accepted more than 2 s ago (the expiries took that long).
    let oldest = relay.metric("smscd_held_oldest_seconds", &["account=\"esme\""]).await;
    assert!(oldest >= 2.0, "oldest held submit's age: {oldest}");

    // `smscd queue` asks the admin listener and prints a table.
    let admin = relay.admin.to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new(BIN).args(&args).env_clear().output().expect("smscd queue")
        })
    };
    let out = run(vec!["queue".into(), "--admin".into(), admin.clone()]).await.expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["ACCOUNT", "HELD", "OLDEST", "OVERDUE", "ROUTES"], "{stdout}");
    let row = lines.iter().find(|l| l.first() == Some(&"esme")).expect("esme's row");
    assert_eq!((row[1], row[4]), ("3", "default=3"), "{stdout}");
    for id in &kept {
        let line = stdout
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("{id} listed\n{stdout}"));
        assert!(line.contains("3161000") && line.contains("default"), "{line}");
    }
    // One account, and a daemon that is not there: exit 1 with the reason.
    let out = run(vec!["queue".into(), "esme".into(), "--admin".into(), admin]).await.expect("join");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&kept[0]));
    let out = run(vec!["queue".into(), "--admin".into(), format!("127.0.0.1:{}", free_port())])
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"), "{out:?}");
}

// ---- query_sm for relayed messages; submit_multi held ------------------------------------------

fn query_of(id: &str) -> Body {
    Body::QuerySm(QuerySm { message_id: Bytes::from(id.to_owned()), ..Default::default() })
}

/// query_sm's (status, message_state, final_date).
async fn query_state(e: &Esme, id: &str) -> (CommandStatus, u8, String) {
    let q = send(e, query_of(id)).await;
    match q.body {
        Body::QuerySmResp(r) => {
            (q.command_status, r.message_state, String::from_utf8_lossy(&r.final_date).into_owned())
        }
        _ => (q.command_status, 0, String::new()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_sm_answers_for_relayed_messages_enroute_until_the_receipt_then_final() {
    let port = free_port();
    // The carrier's receipts come 1.5 s after the submit: long enough to see ENROUTE first.
    let mut up = account("up", "uppw");
    up.window = 64;
    let mut ccfg = base_config(vec![up]);
    ccfg.server.port = port;
    ccfg.sim.receipt_delay_ms = 1500;
    let _carrier = Daemon::start(ccfg).await;
    let mut cfg = relay_config(port);
    // Relayed at once: this route does not even store and forward.
    cfg.routing.store_and_forward = false;
    let relay = Daemon::start(cfg).await;
    let core = relay.core().clone();
    eventually("relay bound", Duration::from_secs(10), || {
        core.upstreams.get("carrier").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let mut esme = bind(relay.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let with_receipt = message_id(&send(&esme, submit_text("3161000", 1, "r")).await).expect("accepted");
    let without = message_id(&send(&esme, submit_text("3161000", 0, "n")).await).expect("accepted");
    for id in [&with_receipt, &without] {
        assert_eq!(query_state(&esme, id).await, (CommandStatus::ESME_ROK, 1, String::new()), "ENROUTE");
    }
    let want: BTreeSet<String> = [with_receipt.clone()].into();
    let (got, _) = receipts(&mut esme.delivered, &want, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "the receipt");
    let (status, state, final_date) = query_state(&esme, &with_receipt).await;
    assert_eq!((status, state), (CommandStatus::ESME_ROK, 2), "DELIVERED after the receipt");
    assert_eq!(final_date.len(), 16, "final_date: {final_date:?}");
    // No receipt asked for: nothing tells the outcome, it stays ENROUTE.
    assert_eq!(query_state(&esme, &without).await.1, 1);
    // With the submit relayed, cancel and replace are too late.
    let cancel =
        Body::CancelSm(smpp::CancelSm { message_id: Bytes::from(without.clone()), ..Default::default() });
    assert_eq!(send(&esme, cancel).await.command_status, CommandStatus::ESME_RCANCELFAIL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_sm_of_a_relayed_message_answers_on_either_replica_on_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut up = account("up", "uppw");
    up.window = 64;
    let mut ccfg = base_config(vec![up]);
    ccfg.server.port = port;
    ccfg.sim.receipt_delay_ms = 1500;
    let _carrier = Daemon::start(ccfg).await;
    let a = replica("q-a", dir.path(), redis.port, port).await;
    let b = replica("q-b", dir.path(), redis.port, port).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.metric("smscd_upstream_binds", &["upstream=\"carrier\""]).await < 1.0 {
        assert!(Instant::now() < deadline, "A not bound to the carrier\n{}", a.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rx = bind(b.smpp, BindKind::Receiver, "esme", "secret").await.expect("bind B");
    // Transmitters: the receipt must go to `rx` only.
    let tx = bind(a.smpp, BindKind::Transmitter, "esme", "secret").await.expect("bind A");
    let qb = bind(b.smpp, BindKind::Transmitter, "esme", "secret").await.expect("bind B tx");
    let id = message_id(&send(&tx, submit_text("3161000", 1, "r")).await).expect("accepted");
    // Relayed by A, asked of B.
    assert_eq!(query_state(&qb, &id).await, (CommandStatus::ESME_ROK, 1, String::new()), "ENROUTE on B");
    let want: BTreeSet<String> = [id.clone()].into();
    let (got, stat) = receipts(&mut rx.delivered, &want, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "the receipt, at B");
    let (_, state) = stat.into_iter().next().expect("stat");
    assert_eq!(state, "DELIVRD");
    for (e, name) in [(&tx, "A"), (&qb, "B")] {
        let (status, state, final_date) = query_state(e, &id).await;
        assert_eq!(
            (status, state, final_date.len()),
            (CommandStatus::ESME_ROK, 2, 16),
            "DELIVERED on {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_multi_holds_the_destinations_no_target_takes_now_when_the_route_opts_in() {
    use smpp::{Address, DestAddress, SubmitMulti};
    let now = Carrier::start(Answer::After(Duration::ZERO)).await;
    let later_port = free_port();
    let mut cfg = relay_config(now.port);
    cfg.routing.store_and_forward = false;
    cfg.binds.push(upstream("later", later_port, "x", "y"));
    // 999... go to a carrier that is down, on a route that stores and forwards.
    cfg.routing.rules = vec![prefix_rule("999", "bind:later", Some(true))];
    let relay = Daemon::start(cfg).await;
    let core = relay.core().clone();
    eventually("relay bound", Duration::from_secs(10), || {
        core.upstreams.get("carrier").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let esme = bind(relay.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let sme = |a: &str| DestAddress::Sme(Address::new(1, 1, a.to_owned()));
    let multi = Body::SubmitMulti(SubmitMulti {
        source: Address::new(0, 0, "12345"),
        destinations: vec![sme("3161001"), sme("99900")],
        short_message: Bytes::from_static(b"fan"),
        ..Default::default()
    });
    let r = send(&esme, multi).await;
    let id = match r.body {
        Body::SubmitMultiResp(resp) if r.command_status.is_ok() => {
            assert!(resp.unsuccess_smes.is_empty(), "held, not unsuccessful: {resp:?}");
            String::from_utf8_lossy(&resp.message_id).into_owned()
        }
        other => panic!("submit_multi: {:?} {other:?}", r.command_status),
    };
    eventually("the first at its carrier", Duration::from_secs(10), || now.count() == 1).await;
    relay
        .wait_metric(
            "smscd_held_submits",
            &["account=\"esme\"", "route=\"rule-0\""],
            1.0,
            Duration::from_secs(10),
        )
        .await;
    let held = format!("{id}.1");
    let (code, body) = http_get(relay.admin, "/queue/esme").await;
    assert_eq!(code, 200);
    assert!(body.contains(&held) && body.contains("99900"), "{body}");
    assert_eq!(query_state(&esme, &held).await.1, 1, "held: ENROUTE");
    // Its carrier comes up: it is sent there, under the submit_multi's id.
    let later = Carrier::start_on(later_port, Answer::After(Duration::ZERO)).await;
    eventually("the held one at its carrier", Duration::from_secs(30), || later.count() == 1).await;
    relay.wait_metric("smscd_held_submits", &["account=\"esme\""], 0.0, Duration::from_secs(10)).await;
    assert_eq!(later.texts(), vec!["fan".to_owned()]);
    assert_eq!(now.count(), 1, "nothing sent twice");
}

// ---- a third-party ESME (npm smpp) --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_esme_queries_replaces_and_cancels_a_held_message_and_gets_spec_statuses() {
    let port = free_port();
    let relay = Daemon::start(relay_config(port)).await;
    let ops = "query,replace_bad_validity,replace,query,cancel,query,cancel,cancel_unknown,query_unknown,multi,multi_dl,data_sm";
    let args =
        esme_args(relay.smpp.port(), "esme", "secret", &["--submit", "1", "--ops", ops, "--timeout", "20"]);
    let mut esme = Peer::spawn(Lang::Node, "esme_node.js", &args);
    let code = esme.finish().await;
    assert_eq!(code, 0, "ESME run failed\n{}", esme.context());
    let got: Vec<(String, i64, Option<i64>)> = esme
        .events_named("op")
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap_or("").to_owned(),
                e["status"].as_i64().unwrap_or(-1),
                e["message_state"].as_i64(),
            )
        })
        .collect();
    let want: Vec<(&str, i64, Option<i64>)> = vec![
        ("query", 0, Some(1)),
        ("replace_bad_validity", 0x62, None),
        ("replace", 0, None),
        ("query", 0, Some(1)),
        ("cancel", 0, None),
        ("query", 0, Some(4)),
        ("cancel", 0x11, None),
        ("cancel_unknown", 0x0C, None),
        ("query_unknown", 0x67, None),
        // Both destinations held (the route stores and forwards, the carrier is down).
        ("multi", 0, None),
        ("multi_dl", 0x34, None),
        ("data_sm", 0, None),
    ];
    assert_eq!(got.len(), want.len(), "{}", esme.context());
    for ((op, status, state), (wop, wstatus, wstate)) in got.iter().zip(&want) {
        assert_eq!((op.as_str(), *status), (*wop, *wstatus), "{}", esme.context());
        if let Some(s) = wstate {
            assert_eq!(state, &Some(*s), "{op}: {}", esme.context());
        }
    }
    // Bad time fields on a submit_sm: ESME_RINVEXPIRY / ESME_RINVSCHED.
    for (flag, value, status) in
        [("--validity", "261202143000000X", 0x62), ("--schedule", "261302143000000+", 0x61)]
    {
        let args = esme_args(
            relay.smpp.port(),
            "esme",
            "secret",
            &["--submit", "1", flag, value, "--timeout", "10"],
        );
        let mut esme = Peer::spawn(Lang::Node, "esme_node.js", &args);
        esme.finish().await;
        let resp = esme.events_named("submit_resp");
        assert_eq!(resp.len(), 1, "{}", esme.context());
        assert_eq!(resp[0]["status"], status, "{}", esme.context());
    }
}

/// A routing rule: destinations starting with `prefix` go to `target`, with its own
/// store-and-forward choice (None: the default chain's).
fn prefix_rule(
    prefix: &str,
    target: &str,
    store_and_forward: Option<bool>,
) -> smsc_api::smscd_config::RoutingRule {
    smsc_api::smscd_config::RoutingRule {
        matches: smsc_api::smscd_config::RuleMatch {
            destination_prefix: Some(prefix.into()),
            ..Default::default()
        },
        chain: vec![target.into()],
        store_and_forward,
    }
}
