//! Binds over the daemon's life (issue 14 items 5, 14, 15, 16): receipts arriving during the
//! drain, closing every bind on a step-down even when the peers do not answer, and upstream
//! reloads that keep receipts and never hold up SIGTERM.
//!
//! Carriers are the smpp crate's SMSC role (scripted ids, deliver_sm sent when the test wants)
//! or a "mute" one on raw TCP that binds and then never answers anything, on 127.0.0.1.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use smpp::session::{smsc, BindKind, Handler, Reply, Request, Session, SessionConfig};
use smpp::{Address, Bind, BindResp, Body, CommandStatus, DeliverSm, Pdu, SubmitSmResp};
use smsc_api::smscd_config::{LeaderElectionConfig, MoRule, SmscdConfig, StoreConfig};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Answers submit_sm with `U1`, `U2`, ...
struct Scripted(Arc<AtomicU32>);

impl Handler for Scripted {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        match req.pdu.body {
            Body::SubmitSm(_) => {
                let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
                Reply::Ok(Body::SubmitSmResp(SubmitSmResp {
                    message_id: Bytes::from(format!("U{n}")),
                    ..SubmitSmResp::default()
                }))
            }
            _ => Reply::Error(CommandStatus::ESME_RINVCMDID),
        }
    }
}

/// A scripted carrier: its port, and every session bound to it as it binds.
async fn scripted_carrier() -> (u16, mpsc::UnboundedReceiver<Session>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let ids = Arc::new(AtomicU32::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, peer)) = listener.accept().await {
            let (ids, tx) = (ids.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(b) = smsc::accept(s, Some(peer), SessionConfig::default()).await {
                    if let Ok(session) =
                        b.accept(Bytes::from_static(b"carrier"), Some(0x34), Scripted(ids)).await
                    {
                        let _ = tx.send(session);
                    }
                }
            });
        }
    });
    (port, rx)
}

async fn write_pdu(s: &mut TcpStream, pdu: &Pdu) -> std::io::Result<()> {
    let mut b = BytesMut::new();
    pdu.encode(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    s.write_all(&b).await
}

async fn read_pdu(s: &mut TcpStream) -> std::io::Result<Pdu> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    let mut frame = vec![0u8; n.max(4)];
    frame[..4].copy_from_slice(&len);
    s.read_exact(&mut frame[4..]).await?;
    Pdu::decode(Bytes::from(frame)).map_err(|e| std::io::Error::other(e.to_string()))
}

/// What a mute peer saw.
#[derive(Debug)]
enum Seen {
    Bound,
    /// The other side sent unbind (never answered).
    Unbind,
    /// The connection ended (EOF or reset).
    Closed(Instant),
}

/// Reads (and never answers) until the connection ends, reporting unbinds and the end.
async fn stay_mute(mut s: TcpStream, tx: mpsc::UnboundedSender<Seen>) {
    loop {
        match read_pdu(&mut s).await {
            Ok(p) if matches!(p.body, Body::Unbind) => drop(tx.send(Seen::Unbind)),
            Ok(_) => {}
            Err(_) => {
                let _ = tx.send(Seen::Closed(Instant::now()));
                return;
            }
        }
    }
}

/// A carrier that accepts one bind per connection and then never answers anything (nor unbind).
async fn mute_carrier() -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(bind) = read_pdu(&mut s).await else { return };
                let resp = Pdu::new(
                    bind.sequence_number,
                    Body::BindTransceiverResp(BindResp {
                        system_id: Bytes::from_static(b"mute"),
                        ..BindResp::default()
                    }),
                );
                if write_pdu(&mut s, &resp).await.is_ok() {
                    let _ = tx.send(Seen::Bound);
                    stay_mute(s, tx).await;
                }
            });
        }
    });
    (port, rx)
}

/// An ESME that binds and then never answers anything (nor unbind).
async fn mute_esme(
    addr: std::net::SocketAddr,
    system_id: &str,
    password: &str,
) -> mpsc::UnboundedReceiver<Seen> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let bind = Bind {
        system_id: Bytes::from(system_id.to_owned()),
        password: Bytes::from(password.to_owned()),
        interface_version: 0x34,
        ..Bind::default()
    };
    write_pdu(&mut s, &Pdu::new(1, Body::BindTransceiver(bind))).await.expect("bind");
    let resp = within("bind_resp", read_pdu(&mut s)).await.expect("bind_resp");
    assert_eq!(resp.command_status, CommandStatus::ESME_ROK, "mute ESME bound");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(stay_mute(s, tx));
    rx
}

/// The next event of a mute peer that is not `Unbind`.
async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    loop {
        match within("mute peer event", rx.recv()).await.expect("mute peer alive") {
            Seen::Unbind => continue,
            other => return other,
        }
    }
}

async fn closed_at(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Instant {
    match next_seen(rx).await {
        Seen::Closed(at) => at,
        other => panic!("expected the connection to end, got {other:?}"),
    }
}

fn deliver_sm(esm_class: u8, dest: &str, text: &str) -> Body {
    Body::DeliverSm(DeliverSm {
        source: Address::new(1, 1, "3161"),
        destination: Address::new(0, 0, dest.to_owned()),
        esm_class,
        short_message: Bytes::from(text.to_owned()),
        ..DeliverSm::default()
    })
}

fn receipt(upstream_id: &str) -> Body {
    let text = format!(
        "id:{upstream_id} sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 stat:DELIVRD err:000 text:"
    );
    deliver_sm(0x04, "12345", &text)
}

/// The id in a receipt's text.
fn text_id(d: &DeliverSm) -> String {
    smpp::receipt::Receipt::parse(&String::from_utf8_lossy(&d.short_message))
        .map(|r| r.id)
        .unwrap_or_default()
}

/// The deliver_sm_resp status the carrier gets.
async fn carrier_sends(up: &Session, body: Body) -> CommandStatus {
    within("deliver_sm_resp", up.request(body)).await.expect("deliver_sm_resp").command_status
}

async fn submit_ok(e: &Esme) -> String {
    let r = within("submit", e.session.request(submit("3161", 1))).await.expect("resp");
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    match &r.body {
        Body::SubmitSmResp(r) => String::from_utf8_lossy(&r.message_id).into_owned(),
        other => panic!("not a submit_sm_resp: {other:?}"),
    }
}

fn reloads_applied(d: &Daemon) -> u64 {
    let label = smscd::metrics::ResultLabel { result: "applied".into() };
    d.core().metrics.reloads.get_or_create(&label).get()
}

/// Publish `cfg` and wait until the daemon applied it.
async fn reload(d: &Daemon, cfg: SmscdConfig) {
    let before = reloads_applied(d);
    d.reload.send_replace(Arc::new(cfg));
    eventually("reload applied", Duration::from_secs(10), || reloads_applied(d) > before).await;
}

/// Item 5: while draining, a receipt for an account with an ESME still bound is delivered to
/// it; one for an account with none bound (memory store: nobody could deliver it after we
/// exit) is refused with ESME_RX_T_APPN so the carrier redelivers it, never acked and lost. The
/// upstream is unbound before the ESMEs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_in_the_drain_are_delivered_or_refused_never_acked_and_lost() {
    let (port, mut carrier_sessions) = scripted_carrier().await;
    let mut cfg = base_config(vec![account("held", "pw"), account("gone", "pw"), account("other", "pw")]);
    cfg.binds = vec![upstream("up", port, "x", "y")];
    cfg.routing.default_chain = vec!["bind:up".into()];
    cfg.routing.mo =
        vec![MoRule { destination_prefix: Some("999".into()), upstream: None, account: "other".into() }];
    cfg.shutdown.drain_secs = 4;
    let mut d = Daemon::start(cfg).await;
    let up = within("carrier bound", carrier_sessions.recv()).await.expect("carrier session");
    let core = d.core().clone();
    eventually("bound upstream", Duration::from_secs(10), || {
        core.upstreams.get("up").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;

    let mut held = bind(d.smpp, BindKind::Transceiver, "held", "pw").await.expect("bind held");
    let gone = bind(d.smpp, BindKind::Transceiver, "gone", "pw").await.expect("bind gone");
    let held_id = submit_ok(&held).await; // U1 at the carrier
    submit_ok(&gone).await; // U2
    gone.session.unbind().await;
    // An MO for an account nobody binds keeps the drain's first phase waiting for it.
    assert_eq!(carrier_sends(&up, deliver_sm(0, "999001", "mo")).await, CommandStatus::ESME_ROK);

    d.token.cancel();
    eventually("draining", Duration::from_secs(5), || core.is_draining()).await;
    let up_closed = {
        let up = up.clone();
        tokio::spawn(async move {
            up.closed().await;
            Instant::now()
        })
    };
    assert_eq!(
        carrier_sends(&up, receipt("U2")).await,
        CommandStatus::ESME_RX_T_APPN,
        "a receipt nobody can take during the drain must be refused, transiently"
    );
    assert_eq!(carrier_sends(&up, receipt("U1")).await, CommandStatus::ESME_ROK);
    let got = within("receipt during the drain", held.delivered.recv()).await.expect("receipt");
    assert_eq!(text_id(&got), held_id);

    within("ESME unbound", held.session.closed()).await;
    let esme_closed = Instant::now();
    let up_closed = within("carrier unbound", up_closed).await.expect("carrier watcher");
    assert!(up_closed <= esme_closed, "the upstream must be unbound before the ESMEs");
    d.shutdown().await;
}

fn leader_config() -> LeaderElectionConfig {
    LeaderElectionConfig {
        lease_name: "smsc".into(),
        namespace: Some("ns".into()),
        identity: Some("me".into()),
        lease_duration_secs: 15,
        renew_deadline_secs: 10,
        retry_period_secs: 2,
        step_down_secs: None,
    }
}

/// Item 14: losing the lead closes every bind within the step-down budget (3 s here), even
/// when neither the carrier nor the ESME answers the unbind: after half the budget their
/// connections are dropped. That includes a bind a reload took out of routing that is still
/// bound receive-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_closes_every_bind_within_its_budget_when_peers_do_not_answer() {
    let (mute_port, mut mute) = mute_carrier().await;
    let (old_port, mut old) = mute_carrier().await;
    let mut cfg = base_config(vec![account("esme", "pw")]);
    cfg.binds = vec![upstream("mute", mute_port, "x", "y"), upstream("old", old_port, "x", "y")];
    cfg.routing.default_chain = vec!["bind:mute".into()];
    cfg.leader_election = Some(leader_config());
    let budget = leader_config().step_down();
    let (reload_tx, reloads) = watch::channel(Arc::new(cfg.clone()));
    let (lead, leadership) = watch::channel(false);
    let token = CancellationToken::new();
    let relay =
        smscd::daemon::start_with_leadership(Arc::new(cfg.clone()), reloads, token.clone(), Some(leadership))
            .await
            .expect("relay starts");
    lead.send(true).expect("leadership receiver alive");
    assert!(matches!(next_seen(&mut mute).await, Seen::Bound));
    assert!(matches!(next_seen(&mut old).await, Seen::Bound));
    let mut esme = mute_esme(relay.smpp_addr, "esme", "pw").await;

    // `old` leaves routing: it stays bound, receive-only.
    let mut without_old = cfg.clone();
    without_old.binds.truncate(1);
    let core = relay.core.clone();
    reload_tx.send_replace(Arc::new(without_old));
    eventually("old out of routing", Duration::from_secs(10), || core.upstreams.get("old").is_none()).await;
    assert_eq!(core.upstreams.retiring_sessions(), 1, "old stays bound receive-only");

    let lost = Instant::now();
    lead.send(false).expect("leadership receiver alive");
    for (name, rx) in [("carrier", &mut mute), ("retiring carrier", &mut old), ("ESME", &mut esme)] {
        let took = closed_at(rx).await - lost;
        eprintln!("step-down figure: {name} connection closed {took:?} after the lead was lost");
        assert!(took < budget, "{name}: closed {took:?} after the step-down, budget {budget:?}");
    }
    token.cancel();
    within("relay shutdown", relay.wait()).await.expect("relay ended cleanly");
}

/// Item 15: an ESME bind and a reload racing a step-down end with nothing bound: the reload's
/// upstreams wait for the step-down and then see the replica inactive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_during_a_step_down_binds_nothing() {
    let (mute_port, mut mute) = mute_carrier().await;
    let (new_port, mut new) = mute_carrier().await;
    let mut cfg = base_config(vec![account("esme", "pw")]);
    cfg.binds = vec![upstream("mute", mute_port, "x", "y")];
    cfg.routing.default_chain = vec!["bind:mute".into()];
    cfg.leader_election = Some(leader_config());
    let (reload_tx, reloads) = watch::channel(Arc::new(cfg.clone()));
    let (lead, leadership) = watch::channel(false);
    let token = CancellationToken::new();
    let relay =
        smscd::daemon::start_with_leadership(Arc::new(cfg.clone()), reloads, token.clone(), Some(leadership))
            .await
            .expect("relay starts");
    lead.send(true).expect("leadership receiver alive");
    assert!(matches!(next_seen(&mut mute).await, Seen::Bound));

    // The step-down takes a while (the carrier does not answer its unbind); a reload adding an
    // upstream arrives meanwhile.
    lead.send(false).expect("leadership receiver alive");
    let mut more = cfg.clone();
    more.binds.push(upstream("new", new_port, "x", "y"));
    reload_tx.send_replace(Arc::new(more));
    closed_at(&mut mute).await;
    let core = relay.core.clone();
    eventually("reload applied", Duration::from_secs(10), || {
        core.config.get().binds.len() == 2 && !core.is_active()
    })
    .await;
    // Leading again binds the new upstream: proof the reload was taken in, just not acted on.
    assert!(core.upstreams.get("new").is_none(), "a standby must not start upstreams");
    lead.send(true).expect("leadership receiver alive");
    assert!(matches!(next_seen(&mut new).await, Seen::Bound));
    token.cancel();
    within("relay shutdown", relay.wait()).await.expect("relay ended cleanly");
}

/// Item 16: a removed upstream leaves routing at once but stays bound receive-only until the
/// correlations of what it accepted expire (the store's ttl, 3 s here): a receipt that comes
/// later than a quiet second still reaches the ESME; then it unbinds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_upstream_keeps_receiving_until_its_correlations_expire() {
    let (port, mut carrier_sessions) = scripted_carrier().await;
    let mut cfg = base_config(vec![account("esme", "pw")]);
    cfg.binds = vec![upstream("up", port, "x", "y")];
    cfg.routing.default_chain = vec!["bind:up".into(), "sim".into()];
    cfg.store = StoreConfig::Memory { ttl: Duration::from_secs(3) };
    let d = Daemon::start(cfg.clone()).await;
    let up = within("carrier bound", carrier_sessions.recv()).await.expect("carrier session");
    let core = d.core().clone();
    eventually("bound upstream", Duration::from_secs(10), || {
        core.upstreams.get("up").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let mut esme = bind(d.smpp, BindKind::Transceiver, "esme", "pw").await.expect("bind");
    let ours = submit_ok(&esme).await;

    let mut removed = cfg.clone();
    removed.binds.clear();
    removed.routing.default_chain = vec!["sim".into()];
    reload(&d, removed).await;
    let removed_at = Instant::now();
    assert!(core.upstreams.get("up").is_none(), "out of routing");
    // The carrier's receipt comes late: 1.5 s of carrier-side delay, modelled (the old rule
    // unbound a removed upstream after one quiet second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(carrier_sends(&up, receipt("U1")).await, CommandStatus::ESME_ROK);
    let got = within("late receipt", esme.delivered.recv()).await.expect("receipt");
    assert_eq!(text_id(&got), ours);

    within("retired upstream unbinds after the ttl", up.closed()).await;
    assert!(removed_at.elapsed() >= Duration::from_millis(2500), "unbound before its correlations expired");
    eventually("no retiring session left", Duration::from_secs(10), || {
        core.upstreams.retiring_sessions() == 0
    })
    .await;
}

/// Item 16: rate and window changes apply to the running sessions, without a rebind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_window_changes_apply_in_place_without_a_rebind() {
    let (port, mut carrier_sessions) = scripted_carrier().await;
    let mut cfg = base_config(vec![account("esme", "pw")]);
    let mut up = upstream("up", port, "x", "y");
    up.max_msg_per_sec = Some(1000);
    cfg.binds = vec![up];
    cfg.routing.default_chain = vec!["bind:up".into()];
    let d = Daemon::start(cfg.clone()).await;
    let session = within("carrier bound", carrier_sessions.recv()).await.expect("carrier session");
    let esme = bind(d.smpp, BindKind::Transceiver, "esme", "pw").await.expect("bind");
    let ok_of = |rs: Vec<Result<Pdu, smpp::session::SessionError>>| {
        rs.into_iter().filter(|r| r.as_ref().is_ok_and(|p| p.command_status.is_ok())).count()
    };
    let burst = futures::future::join_all((0..5).map(|_| esme.session.request(submit("3161", 0)))).await;
    assert_eq!(ok_of(burst), 5, "1000/s lets a burst of 5 through");

    let relay_side = d.core().upstreams.get("up").expect("upstream");
    eventually("window slots free", Duration::from_secs(10), || relay_side.free_slots() == 10).await;

    let mut slow = cfg.clone();
    slow.binds[0].max_msg_per_sec = Some(1);
    slow.binds[0].window = 3;
    reload(&d, slow).await;
    assert!(Arc::ptr_eq(&relay_side, &d.core().upstreams.get("up").expect("upstream")), "the same upstream");
    eventually("window of 3", Duration::from_secs(10), || relay_side.free_slots() == 3).await;
    // The bind's rate is paced (one send per 1/rate, throttle.rs): at 1/s a burst of 5 gets one
    // send now and one per second after it while a submit may wait for its turn (the window wait,
    // 2 s); the rest are throttled. At the old 1000/s all 5 went through.
    let t = Instant::now();
    let burst = futures::future::join_all((0..5).map(|_| esme.session.request(submit("3161", 0)))).await;
    let ok = ok_of(burst);
    assert!((1..=3).contains(&ok), "1/s paces a burst of 5: {ok} went through");
    assert!(
        ok == 1 || t.elapsed() >= Duration::from_millis(900 * (ok as u64 - 1)),
        "{ok} sends in {:?}",
        t.elapsed()
    );
    assert!(session.close_reason().is_none(), "the carrier's session stays bound");
    assert!(carrier_sessions.try_recv().is_err(), "no new bind");
}

/// Item 16: SIGTERM right after a reload that changed upstreams whose carriers do not answer
/// their unbind: the reload does not wait for those unbinds, and shutdown stops them all at
/// once, within its drain time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_not_held_up_by_upstream_unbinds() {
    let (p1, mut m1) = mute_carrier().await;
    let (p2, mut m2) = mute_carrier().await;
    let mut cfg = base_config(vec![account("esme", "pw")]);
    cfg.binds = vec![upstream("m1", p1, "x", "y"), upstream("m2", p2, "x", "y")];
    cfg.routing.default_chain = vec!["bind:m1".into(), "bind:m2".into()];
    cfg.shutdown.drain_secs = 2;
    let mut d = Daemon::start(cfg.clone()).await;
    assert!(matches!(next_seen(&mut m1).await, Seen::Bound));
    assert!(matches!(next_seen(&mut m2).await, Seen::Bound));

    let mut changed = cfg.clone();
    for b in &mut changed.binds {
        b.password = "new".into();
    }
    d.reload.send_replace(Arc::new(changed));
    // Both old sessions are asked to unbind (the new ones bind), which the carriers ignore.
    for rx in [&mut m1, &mut m2] {
        loop {
            if matches!(within("unbind", rx.recv()).await.expect("carrier alive"), Seen::Unbind) {
                break;
            }
        }
    }
    let t = Instant::now();
    d.shutdown().await;
    let took = t.elapsed();
    eprintln!("shutdown figure: {took:?} with drain_secs 2 and two carriers ignoring unbind");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
}
