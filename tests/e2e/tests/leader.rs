//! smscd leader election (crates/smscd/src/leader on crates/lease-elector) against the real
//! control plane: two electors on one Lease with a short timing (lease 4 s, renew deadline 3 s,
//! retry 1 s).
//!
//! Leadership is recorded from each elector's watch channel with timestamps, so the assertions
//! are about order and intervals, not sleeps. Pods named like the identities are created so the
//! role label can be followed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use smsc_api::names::{ROLE_ACTIVE, ROLE_LABEL};
use smsc_e2e::{control_plane, wait_for, TestNamespace};
use smscd::leader::{spawn, LeaderHandle, ResolvedLeaderConfig, Timing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LEASE: &str = "smscd-leader";
const WAIT: Duration = Duration::from_secs(60);

fn timing() -> anyhow::Result<Timing> {
    Ok(Timing::new(Duration::from_secs(4), Duration::from_secs(3), Duration::from_secs(1))?)
}

fn resolved(ns: &TestNamespace, id: &str) -> anyhow::Result<ResolvedLeaderConfig> {
    Ok(ResolvedLeaderConfig {
        lease_name: LEASE.into(),
        namespace: ns.name().into(),
        identity: id.into(),
        pod_name: Some(id.into()),
        timing: timing()?,
    })
}

/// Every change of one elector's leadership, with when we saw it.
#[derive(Clone, Default)]
struct History(Arc<Mutex<Vec<(Instant, bool)>>>);

impl History {
    fn follow(mut rx: watch::Receiver<bool>) -> Self {
        let h = History::default();
        let events = h.0.clone();
        tokio::spawn(async move {
            loop {
                let v = *rx.borrow_and_update();
                if let Ok(mut e) = events.lock() {
                    if e.last().map(|(_, last)| *last) != Some(v) {
                        e.push((Instant::now(), v));
                    }
                }
                if rx.changed().await.is_err() {
                    // Sender gone (stopped or aborted): no longer acting.
                    if let Ok(mut e) = events.lock() {
                        if e.last().map(|(_, l)| *l) == Some(true) {
                            e.push((Instant::now(), false));
                        }
                    }
                    return;
                }
            }
        });
        h
    }

    fn events(&self) -> Vec<(Instant, bool)> {
        self.0.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Intervals during which this elector led (open ones end at `now`).
    fn intervals(&self, now: Instant) -> Vec<(Instant, Instant)> {
        let mut out = Vec::new();
        let mut start = None;
        for (t, v) in self.events() {
            match (v, start) {
                (true, None) => start = Some(t),
                (false, Some(s)) => {
                    out.push((s, t));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push((s, now));
        }
        out
    }

    fn first(&self, value: bool, after: Instant) -> Option<Instant> {
        self.events().into_iter().find(|(t, v)| *v == value && *t >= after).map(|(t, _)| t)
    }
}

/// Never two leaders at once, by our observation of both channels.
fn assert_no_overlap(a: &History, b: &History) -> anyhow::Result<()> {
    let now = Instant::now();
    for (s1, e1) in a.intervals(now) {
        for (s2, e2) in b.intervals(now) {
            ensure!(e1 <= s2 || e2 <= s1, "both led at once: a {s1:?}..{e1:?}, b {s2:?}..{e2:?}");
        }
    }
    Ok(())
}

async fn wait_until(rx: &mut watch::Receiver<bool>, want: bool, within: Duration) -> anyhow::Result<Instant> {
    tokio::time::timeout(within, rx.wait_for(|v| *v == want))
        .await
        .with_context(|| format!("waiting {within:?} for leadership == {want}"))?
        .context("elector stopped")?;
    Ok(Instant::now())
}

/// `true` when `h` does not become leader within `d` (an observation window, not a sync sleep).
async fn stays_standby(h: &LeaderHandle, d: Duration) -> bool {
    let mut rx = h.watch();
    let led = tokio::time::timeout(d, rx.wait_for(|v| *v)).await.is_ok();
    !led
}

async fn create_pod(ns: &TestNamespace, name: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = ns.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": "smscd" } },
        "spec": { "containers": [{ "name": "smscd", "image": "registry.invalid/smscd:1" }] }
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    Ok(())
}

/// Wait until exactly `want` carries the active role label.
async fn wait_active_pod(ns: &TestNamespace, want: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = ns.api();
    let want = want.to_string();
    wait_for(&format!("only pod {want} labelled active"), WAIT, || {
        let (pods, want) = (pods.clone(), want.clone());
        async move {
            let lp = ListParams::default().labels(&format!("{ROLE_LABEL}={ROLE_ACTIVE}"));
            let names: Vec<String> =
                pods.list(&lp).await?.items.into_iter().filter_map(|p| p.metadata.name).collect();
            Ok::<_, kube::Error>((names == [want]).then_some(()))
        }
    })
    .await?;
    Ok(())
}

async fn lease_transitions(ns: &TestNamespace) -> anyhow::Result<(String, i32)> {
    let leases: Api<Lease> = ns.api();
    let spec = leases.get(LEASE).await?.spec.unwrap_or_default();
    Ok((spec.holder_identity.unwrap_or_default(), spec.lease_transitions.unwrap_or(0)))
}

/// Start `a`, wait for it to lead, then start `b` (so the roles are known).
async fn two_electors(
    ns: &TestNamespace,
    client_a: kube::Client,
) -> anyhow::Result<(LeaderHandle, History, LeaderHandle, History)> {
    for id in ["smscd-a", "smscd-b"] {
        create_pod(ns, id).await?;
    }
    let a = spawn(client_a, resolved(ns, "smscd-a")?, CancellationToken::new());
    let ha = History::follow(a.watch());
    wait_until(&mut a.watch(), true, WAIT).await.context("a to lead")?;
    let b = spawn(ns.client(), resolved(ns, "smscd-b")?, CancellationToken::new());
    let hb = History::follow(b.watch());
    Ok((a, ha, b, hb))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_and_release_hands_over_at_once() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let ns = cp.namespace("leader-release").await?;
    let (a, ha, b, hb) = two_electors(&ns, ns.client()).await?;
    wait_active_pod(&ns, "smscd-a").await?;
    // b must stay standby across several of its attempts and more than a lease duration.
    ensure!(stays_standby(&b, Duration::from_secs(6)).await, "b became leader while a held the lease");
    ensure!(a.is_leader(), "a lost the lease without reason");
    let (holder, t0) = lease_transitions(&ns).await?;
    ensure!(holder == "smscd-a", "lease holder {holder}");

    let start = Instant::now();
    a.release().await;
    let released = Instant::now();
    let took = wait_until(&mut b.watch(), true, Duration::from_secs(10)).await?;
    eprintln!(
        "leader-figure release: takeover {:?} after release() was called ({:?} after it returned)",
        took - start,
        took - released
    );
    // At once: the standby's next attempt (retry 1 s + up to 10% jitter), not a lease duration.
    ensure!(took - start < Duration::from_millis(2500), "takeover took {:?}", took - start);
    let (holder, t1) = lease_transitions(&ns).await?;
    ensure!(holder == "smscd-b" && t1 == t0 + 1, "after release: holder {holder}, transitions {t0} -> {t1}");
    wait_active_pod(&ns, "smscd-b").await?;
    assert_no_overlap(&ha, &hb)?;
    b.release().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_after_the_lease_duration() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let ns = cp.namespace("leader-kill").await?;
    let (a, ha, b, hb) = two_electors(&ns, ns.client()).await?;
    wait_active_pod(&ns, "smscd-a").await?;
    // Let b observe a few renewals first.
    ensure!(stays_standby(&b, Duration::from_secs(3)).await, "b became leader while a held the lease");
    let killed = Instant::now();
    a.abort();
    let took = wait_until(&mut b.watch(), true, Duration::from_secs(15)).await? - killed;
    eprintln!("leader-figure kill: takeover {took:?} after the leader was aborted (lease duration 4 s)");
    // b counts the lease duration from its last observed renewal, which is up to one retry
    // period (plus jitter) before the kill, and retries every retry period.
    ensure!(took >= Duration::from_millis(2500), "took over too early: {took:?}");
    ensure!(took <= Duration::from_millis(6500), "took over too late: {took:?}");
    let (holder, transitions) = lease_transitions(&ns).await?;
    ensure!(holder == "smscd-b" && transitions == 1, "holder {holder}, transitions {transitions}");
    // a's label stayed behind (it crashed); b cleared it.
    wait_active_pod(&ns, "smscd-b").await?;
    assert_no_overlap(&ha, &hb)?;
    b.release().await;
    Ok(())
}

/// A TCP forwarder to the API server that can be cut: existing connections are dropped and new
/// ones closed at once, so every call through it fails.
struct Partition {
    addr: std::net::SocketAddr,
    cut: CancellationToken,
}

async fn partitionable_proxy(server: &str) -> anyhow::Result<Partition> {
    let uri: http::Uri = server.parse()?;
    let upstream = format!(
        "{}:{}",
        uri.host().context("server host")?.trim_matches(|c| c == '[' || c == ']'),
        uri.port_u16().unwrap_or(443)
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cut = CancellationToken::new();
    let c = cut.clone();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            if c.is_cancelled() {
                let _ = down.shutdown().await;
                continue;
            }
            let (c, upstream) = (c.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut up) = TcpStream::connect(&upstream).await else { return };
                tokio::select! {
                    _ = c.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                }
            });
        }
    });
    Ok(Partition { addr, cut })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_steps_down_before_the_other_acquires() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let ns = cp.namespace("leader-partition").await?;
    let proxy = partitionable_proxy(cp.server()).await?;
    let mut config = cp.config().await?;
    config.cluster_url = format!("https://{}", proxy.addr).parse()?;
    let client_a = kube::Client::try_from(config)?;
    let (a, ha, b, hb) = two_electors(&ns, client_a).await?;
    wait_active_pod(&ns, "smscd-a").await?;
    ensure!(stays_standby(&b, Duration::from_secs(3)).await, "b became leader while a held the lease");

    let cut_at = Instant::now();
    proxy.cut.cancel();
    let down = wait_until(&mut a.watch(), false, Duration::from_secs(10)).await?;
    let up = wait_until(&mut b.watch(), true, Duration::from_secs(15)).await?;
    // Use the recorded timestamps (taken by the followers as the changes arrived).
    let down_at = ha.first(false, cut_at).unwrap_or(down);
    let up_at = hb.first(true, cut_at).unwrap_or(up);
    eprintln!(
        "leader-figure partition: a stepped down {:?} after the cut (renew deadline 3 s), b took over {:?} after the cut; gap {:?}",
        down_at - cut_at,
        up_at - cut_at,
        up_at.saturating_duration_since(down_at)
    );
    if down_at >= up_at {
        bail!("a stepped down at {down_at:?}, not before b acquired at {up_at:?}");
    }
    // By the renew deadline: its last successful renewal was before the cut.
    ensure!(down_at - cut_at <= Duration::from_millis(3300), "stepped down late: {:?}", down_at - cut_at);
    assert_no_overlap(&ha, &hb)?;
    let (holder, _) = lease_transitions(&ns).await?;
    ensure!(holder == "smscd-b", "holder {holder}");
    // b (connected) moves the label; a cannot reach the API to clear its own, b clears it.
    wait_active_pod(&ns, "smscd-b").await?;
    a.abort();
    b.release().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_start_elects_exactly_one() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let ns = cp.namespace("leader-race").await?;
    for id in ["smscd-a", "smscd-b"] {
        create_pod(&ns, id).await?;
    }
    // Both find no Lease and create it: one create wins, the other gets AlreadyExists.
    let a = spawn(ns.client(), resolved(&ns, "smscd-a")?, CancellationToken::new());
    let b = spawn(ns.client(), resolved(&ns, "smscd-b")?, CancellationToken::new());
    let (ha, hb) = (History::follow(a.watch()), History::follow(b.watch()));
    let (mut ra, mut rb) = (a.watch(), b.watch());
    tokio::time::timeout(WAIT, async {
        tokio::select! {
            _ = ra.wait_for(|v| *v) => {}
            _ = rb.wait_for(|v| *v) => {}
        }
    })
    .await
    .context("nobody became leader")?;
    // Watch over more than a lease duration: the roles must not move or overlap.
    let (leader, standby, leader_id) = if a.is_leader() { (&a, &b, "smscd-a") } else { (&b, &a, "smscd-b") };
    ensure!(stays_standby(standby, Duration::from_secs(6)).await, "both became leader");
    ensure!(leader.is_leader(), "the leader lost the lease without reason");
    let (holder, transitions) = lease_transitions(&ns).await?;
    ensure!(holder == leader_id && transitions == 0, "holder {holder}, transitions {transitions}");
    wait_active_pod(&ns, leader_id).await?;
    assert_no_overlap(&ha, &hb)?;
    a.release().await;
    b.release().await;
    Ok(())
}

/// A TCP forwarder to the API server that adds `delay` to every chunk either way: a slow network,
/// so a read and the write it guards are at least two delays apart at the server.
async fn slow_proxy(server: &str, delay: Duration) -> anyhow::Result<std::net::SocketAddr> {
    let uri: http::Uri = server.parse()?;
    let upstream = format!(
        "{}:{}",
        uri.host().context("server host")?.trim_matches(|c| c == '[' || c == ']'),
        uri.port_u16().unwrap_or(443)
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(up) = TcpStream::connect(&upstream).await else { return };
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::join!(delayed_copy(dr, uw, delay), delayed_copy(ur, dw, delay));
            });
        }
    });
    Ok(addr)
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // The network's latency, not a synchronisation.
        tokio::time::sleep(delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn renew_time(l: &Lease) -> Option<String> {
    l.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0.to_string())
}

/// Issue 14 item 15: a 409 on renew says the resourceVersion moved, not that someone else holds
/// the Lease. While the Lease's metadata is edited faster than the leader's read-then-write (over
/// a slow link), every renewal gets a 409; the leader reads the Lease again, finds itself still
/// the holder and keeps leading (within its renew deadline), instead of stepping down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_on_renew_rereads_the_lease_instead_of_stepping_down() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let ns = cp.namespace("leader-conflict").await?;
    let proxy = slow_proxy(cp.server(), Duration::from_millis(60)).await?;
    let mut config = cp.config().await?;
    config.cluster_url = format!("https://{}", proxy).parse()?;
    let client_a = kube::Client::try_from(config)?;
    // A renew deadline well above the edits below, so only a step-down on 409 can end the lead.
    let timing = Timing::new(Duration::from_secs(8), Duration::from_secs(6), Duration::from_secs(1))?;
    let cfg = ResolvedLeaderConfig { timing, pod_name: None, ..resolved(&ns, "smscd-a")? };
    let a = spawn(client_a, cfg, CancellationToken::new());
    let ha = History::follow(a.watch());
    wait_until(&mut a.watch(), true, WAIT).await.context("a to lead")?;

    let leases: Api<Lease> = ns.api();
    let before = renew_time(&leases.get(LEASE).await?);
    let edits_until = Instant::now() + Duration::from_millis(2500);
    let mut edits = 0u32;
    while Instant::now() < edits_until {
        edits += 1;
        let patch = json!({ "metadata": { "annotations": { "test/edit": edits.to_string() } } });
        leases.patch(LEASE, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    let during = renew_time(&leases.get(LEASE).await?);
    eprintln!("leader-figure conflict: {edits} metadata edits in 2.5 s; renewTime {before:?} -> {during:?}");
    // Every renewal in those 2.5 s (two at least) met a moved resourceVersion.
    ensure!(
        during == before,
        "a renewal got through the edits: {before:?} -> {during:?}; the test did not provoke a 409"
    );
    // Once the edits stop, the leader renews again.
    wait_for("a renewal after the edits", WAIT, || {
        let leases = leases.clone();
        let before = before.clone();
        async move { Ok::<_, kube::Error>((renew_time(&leases.get(LEASE).await?) != before).then_some(())) }
    })
    .await?;
    let stepped_down = ha.events().iter().skip(1).any(|(_, v)| !*v);
    ensure!(!stepped_down, "a stepped down on a 409 while it still held the Lease: {:?}", ha.events());
    ensure!(a.is_leader(), "a no longer leads");
    let (holder, transitions) = lease_transitions(&ns).await?;
    ensure!(holder == "smscd-a" && transitions == 0, "holder {holder}, transitions {transitions}");
    a.release().await;
    Ok(())
}
