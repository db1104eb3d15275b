//! The shared receipt store on a Redis that fails over (issue 18), with real processes only:
//! `redis-server` from Debian's package as masters, replicas, Cluster nodes and (with
//! `--sentinel`) sentinels; `redis-cli --cluster create` builds the Cluster; two smscd replicas
//! run from the built binary; an in-process smscd's sim is the upstream that issues receipts
//! round-robin to both replicas' binds (as in tests/redis_store.rs).
//!
//! The failover tests kill -9 a master under relay traffic with receipts and check that every
//! submit smscd acknowledged gets its receipt (they use `store.wait`, the configuration that
//! promises it; docs/redis-store.md), and print the outage and duplicates. Every wait polls with
//! a deadline; a missing redis-server fails with a message.

mod common;

use common::replicas::{free_port, Ports, Ready, Replica};
use common::*;
use smpp::session::BindKind;
use smpp::{Body, CommandStatus};
use smscd::store::StoreError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

// ---- redis processes ------------------------------------------------------------------------------

/// One redis-server (or sentinel) on 127.0.0.1 with its own directory; killed on drop.
struct Node {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Node {
    /// A data node; `extra` are more redis-server arguments (replicaof, cluster mode).
    fn server(root: &Path, name: &str, extra: &[String]) -> Node {
        let port = free_port();
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut args: Vec<String> = ["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--appendonly", "no", "--protected-mode", "no"].map(String::from));
        args.extend(["--dir".to_string(), dir.display().to_string()]);
        args.extend(extra.iter().cloned());
        let mut n = Node { child: None, port, dir, args };
        n.spawn();
        n
    }

    /// A sentinel watching `master_port` as `mymaster` (quorum 2, down after 1 s).
    fn sentinel(root: &Path, name: &str, master_port: u16) -> Node {
        let port = free_port();
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
             sentinel monitor mymaster 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 10000\n\
             sentinel parallel-syncs mymaster 2\n",
            dir.display()
        );
        std::fs::write(&conf, text).expect("sentinel.conf");
        let mut n =
            Node { child: None, port, dir, args: vec![conf.display().to_string(), "--sentinel".into()] };
        n.spawn();
        n
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("log file");
        let child = match Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot start redis-server ({e}): install it with `tools/deps.sh apt` (make test does)"
            ),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while cli(self.port, &["PING"]).trim() != "PONG" {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("redis-server exited: {st}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p <port> <args>`: its output ("" when it could not run).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `field\nvalue\n` pairs (what redis-cli prints for a map or a flat array) as a map.
fn pairs(out: &str) -> BTreeMap<String, String> {
    let lines: Vec<&str> = out.lines().collect();
    lines.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].to_string(), c[1].to_string())).collect()
}

/// `field:value` lines (INFO, CLUSTER INFO).
fn info_field(out: &str, field: &str) -> Option<String> {
    out.lines().find_map(|l| l.trim().strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

fn poll_sync(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "not reached within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn poll_until<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "not reached within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Master + 2 replicas + 3 sentinels, waited for until the sentinels know both replicas and
/// each other (a failover needs that).
struct SentinelSet {
    master: Node,
    replicas: Vec<Node>,
    sentinels: Vec<Node>,
}

impl SentinelSet {
    fn start(root: &Path) -> SentinelSet {
        let master = Node::server(root, "master", &[]);
        let of = ["--replicaof".to_string(), "127.0.0.1".into(), master.port.to_string()];
        let replicas: Vec<Node> = (0..2).map(|i| Node::server(root, &format!("replica{i}"), &of)).collect();
        let sentinels: Vec<Node> =
            (0..3).map(|i| Node::sentinel(root, &format!("sentinel{i}"), master.port)).collect();
        for s in &sentinels {
            poll_sync("sentinels know 2 replicas and 2 other sentinels", Duration::from_secs(30), || {
                let m = pairs(&cli(s.port, &["SENTINEL", "MASTER", "mymaster"]));
                m.get("num-slaves").map(String::as_str) == Some("2")
                    && m.get("num-other-sentinels").map(String::as_str) == Some("2")
            });
        }
        SentinelSet { master, replicas, sentinels }
    }

    fn sentinels_yaml(&self) -> String {
        let list: Vec<String> = self.sentinels.iter().map(|s| format!("\"{}\"", s.addr())).collect();
        list.join(", ")
    }

    /// The master's port as the sentinels now say.
    fn master_port(&self) -> Option<u16> {
        let out = cli(self.sentinels[0].port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]);
        out.lines().nth(1)?.trim().parse().ok()
    }
}

/// 3 masters + 3 replicas made into one Cluster by `redis-cli --cluster create`.
struct ClusterSet {
    nodes: Vec<Node>,
}

impl ClusterSet {
    fn start(root: &Path) -> ClusterSet {
        let mode = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
        ]
        .map(String::from);
        let nodes: Vec<Node> = (0..6).map(|i| Node::server(root, &format!("node{i}"), &mode)).collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(Node::addr));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let c = ClusterSet { nodes };
        c.wait_ok();
        c
    }

    fn wait_ok(&self) {
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            poll_sync("cluster_state:ok on every node", Duration::from_secs(30), || {
                info_field(&cli(n.port, &["CLUSTER", "INFO"]), "cluster_state").as_deref() == Some("ok")
            });
        }
    }

    fn nodes_yaml(&self) -> String {
        // Two seeds are enough (the client reads the whole map from one).
        format!("\"{}\", \"{}\"", self.nodes[0].addr(), self.nodes[1].addr())
    }

    /// Index of the node that is master of `key`'s slot now (None while no live master has it).
    fn master_of(&self, key: &str) -> Option<usize> {
        let live = self.nodes.iter().find(|n| n.child.is_some()).expect("a live node");
        let slot: u16 = cli(live.port, &["CLUSTER", "KEYSLOT", key]).trim().parse().expect("slot");
        let nodes = cli(live.port, &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let covers = f[8..].iter().any(|r| match r.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => r.parse::<u16>().is_ok_and(|s| s == slot),
            });
            if covers {
                let port: u16 = f[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok()).expect("port");
                return self.nodes.iter().position(|n| n.port == port);
            }
        }
        None
    }
}

// ---- smscd replicas -------------------------------------------------------------------------------

/// The shared upstream: an in-process smscd whose sim issues receipts to account `up`.
async fn upstream_sim() -> Daemon {
    let mut up = account("up", "uppw");
    up.window = 64;
    let mut cfg = base_config(vec![up]);
    cfg.sim.receipt_delay_ms = 20;
    // A carrier retries a receipt for hours; smscd's default (10 attempts, 200 ms apart) would
    // dead-letter the receipts our replicas refuse during a failover longer than 2 s.
    cfg.queues.max_attempts = 1_000;
    Daemon::start(cfg).await
}

/// An smscd replica with `store` as its store config, its only upstream `up` on `upstream`;
/// ready (store up) and bound upstream.
async fn replica(name: &str, dir: &Path, store: &str, upstream: u16) -> Replica {
    let config = |p: Ports| {
        format!(
            r#"server: {{ bind_address: 127.0.0.1, port: {smpp}, bind_timeout_secs: 5 }}
admin: {{ bind_address: 127.0.0.1, port: {admin} }}
accounts:
  - {{ system_id: esme, password: secret, window: 64 }}
binds:
  - {{ name: up, host: 127.0.0.1, port: {upstream}, system_id: up, password: uppw, bind_type: transceiver,
      window: 32, reconnect: {{ min_ms: 50, max_ms: 500 }} }}
routing: {{ default_chain: ["bind:up"] }}
store: {store}
shutdown: {{ drain_secs: 2 }}
"#,
            smpp = p.smpp,
            admin = p.admin
        )
    };
    let env = [(smscd::store::redis::CLAIM_IDLE_ENV, "5".to_owned())];
    Replica::start(name, dir, config, &env, Ready { store_up: true, bound: Some("up"), ..Ready::default() })
        .await
}

fn message_id(p: &smpp::Pdu) -> Option<String> {
    match &p.body {
        Body::SubmitSmResp(r) if p.command_status.is_ok() => {
            Some(String::from_utf8_lossy(&r.message_id).into_owned())
        }
        _ => None,
    }
}

/// Receive until every id in `want` arrived (or the limit passes); counts per id.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<smpp::DeliverSm>,
    want: &BTreeSet<String>,
    limit: Duration,
) -> BTreeMap<String, usize> {
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !want.iter().all(|id| got.contains_key(id)) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(d)) => *got.entry(receipt_id(&d)).or_default() += 1,
            Ok(None) | Err(_) => break,
        }
    }
    got
}

/// What a relay run through a failover gave.
struct Run {
    accepted: usize,
    refused: BTreeMap<String, usize>,
    lost: Vec<String>,
    duplicates: usize,
    stray: usize,
    /// Kill to both replicas ready again with the store up.
    outage: Duration,
}

/// Two replicas (transmitter on A, receiver on B) relay with receipts; once receipts flow,
/// `fail` kills a master; traffic goes on until 200 more submits were accepted after both
/// replicas' stores are up again. A refused submit is retried (what an ESME does on a
/// transient error). During the outage a submit without a receipt request must still pass.
async fn relay_through(a: &Replica, b: &Replica, fail: impl FnOnce()) -> Run {
    let mut rx = bind(b.smpp, BindKind::Receiver, "esme", "secret").await.expect("receiver on B");
    let tx = Arc::new(bind(a.smpp, BindKind::Transmitter, "esme", "secret").await.expect("transmitter on A"));
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (tx, stop, accepted) = (tx.clone(), stop.clone(), accepted.clone());
        tokio::spawn(async move {
            let mut ids = BTreeSet::new();
            let mut refused: BTreeMap<String, usize> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(STEP, tx.session.request(submit("3161000", 1))).await {
                    Ok(Ok(resp)) => match message_id(&resp) {
                        Some(id) => {
                            ids.insert(id);
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            *refused.entry(format!("{:?}", resp.command_status)).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    },
                    other => panic!("submit failed: {other:?}"),
                }
            }
            (ids, refused)
        })
    };
    let b_admin = b.admin;
    poll_until("receipts flowing", Duration::from_secs(30), || async move {
        metric_sum(
            &http_get(b_admin, "/metrics").await.1,
            "smscd_deliveries_total",
            &["result=\"delivered\""],
        ) >= 50.0
    })
    .await;
    let down_at = Instant::now();
    // `fail` may wait for the promotion (blocking): keep the runtime's other worker serving.
    tokio::task::block_in_place(fail);
    // Receipt-less traffic is not held up by the store's failover.
    let plain =
        within("submit without receipt", tx.session.request(submit("3161001", 0))).await.expect("resp");
    assert_eq!(plain.command_status, CommandStatus::ESME_ROK, "a submit without receipt during the failover");
    for rep in [a, b] {
        let (code, body) = http_get(rep.admin, "/readyz").await;
        assert_eq!(code, 200, "replica {} not Ready during the failover: {body}", rep.name);
    }
    // Both replicas' stores answer again and a receipt-requesting submit passes.
    let before = accepted.load(Ordering::Relaxed);
    let acc = accepted.clone();
    poll_until("a submit with receipt accepted after the failover", Duration::from_secs(60), || {
        let n = acc.load(Ordering::Relaxed);
        async move { n > before }
    })
    .await;
    for rep in [a, b] {
        let admin = rep.admin;
        poll_until("store up after the failover", Duration::from_secs(60), || async move {
            metric_sum(&http_get(admin, "/metrics").await.1, "smscd_store_up", &[]) == 1.0
        })
        .await;
    }
    let outage = down_at.elapsed();
    let before = accepted.load(Ordering::Relaxed);
    let acc = accepted.clone();
    poll_until("200 more submits after the failover", Duration::from_secs(60), || {
        let n = acc.load(Ordering::Relaxed);
        async move { n >= before + 200 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (ids, refused) = within("submits", sender).await.expect("sender");
    let got = collect(&mut rx.delivered, &ids, Duration::from_secs(60)).await;
    let lost: Vec<String> = ids.iter().filter(|id| !got.contains_key(*id)).cloned().collect();
    Run {
        accepted: ids.len(),
        refused,
        lost,
        duplicates: got.values().map(|c| c - 1).sum(),
        stray: got.keys().filter(|k| !ids.contains(*k)).count(),
        outage,
    }
}

// ---- Sentinel -------------------------------------------------------------------------------------

/// kill -9 of the master under relay traffic: the sentinels promote a replica, both smscd
/// replicas follow it (re-resolve, reconnect, count the failover), and with `WAIT 1` every
/// acknowledged submit's receipt reaches the ESME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_under_traffic_loses_no_acknowledged_receipt() {
    let dir = tempfile::tempdir().expect("dir");
    let mut set = SentinelSet::start(dir.path());
    let old_master = set.master.port;
    let up = upstream_sim().await;
    let store = format!(
        "{{ type: redis, key_prefix: s, ttl: 1h, wait: {{ replicas: 1, timeout_ms: 200 }}, \
         sentinel: {{ master_name: mymaster, sentinels: [{}] }} }}",
        set.sentinels_yaml()
    );
    let a = replica("replica-a", dir.path(), &store, up.smpp.port()).await;
    let b = replica("replica-b", dir.path(), &store, up.smpp.port()).await;
    let run = relay_through(&a, &b, || set.master.kill()).await;
    let promoted = set.master_port();
    println!(
        "sentinel failover (WAIT 1): kill -9 of the master to both replicas' store up {:?}; {} submits accepted, refused meanwhile {:?}, lost {}, duplicates {}, stray {}; master {old_master} -> {promoted:?}",
        run.outage, run.accepted, run.refused, run.lost.len(), run.duplicates, run.stray
    );
    assert!(promoted.is_some_and(|p| p != old_master), "the sentinels promoted a replica: {promoted:?}");
    assert!(set.replicas.iter().any(|r| Some(r.port) == promoted));
    for rep in [&a, &b] {
        let n = rep.metric("smscd_store_failovers_total", &[]).await;
        assert!(n >= 1.0, "replica {} counted {n} failovers\n{}", rep.name, rep.logs());
    }
    assert_eq!(
        up.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("smscd_dead_lettered") && !l.ends_with(" 0"))
            .count(),
        0,
        "the upstream gave receipts up"
    );
    let logs: String = set.sentinels.iter().map(|s| s.log()).collect::<Vec<_>>().join("\n----\n");
    assert!(
        run.lost.is_empty(),
        "lost receipts {:?}\nA:\n{}\nB:\n{}\nsentinels:\n{logs}",
        run.lost,
        a.logs(),
        b.logs()
    );
    assert_eq!(run.stray, 0);
    // docs/redis-store.md: duplicates only for deliveries in flight at the kill (window 64 per
    // session, one session).
    assert!(run.duplicates <= 64, "{} duplicates", run.duplicates);
}

// ---- Cluster --------------------------------------------------------------------------------------

/// 3 masters + 3 replicas; the master holding the account's queue is killed and its replica
/// promoted; receipts cross the two smscd replicas before, during and after; with `WAIT 1`
/// nothing acknowledged is lost. The killed node is started again (as Kubernetes would) and
/// rejoins as a replica, so `WAIT 1` can be met on every slot again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_loses_no_acknowledged_receipt() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cluster = ClusterSet::start(dir.path());
    let up = upstream_sim().await;
    let store = format!(
        "{{ type: redis, key_prefix: c, ttl: 1h, wait: {{ replicas: 1, timeout_ms: 200 }}, cluster: {{ nodes: [{}] }} }}",
        cluster.nodes_yaml()
    );
    let a = replica("replica-a", dir.path(), &store, up.smpp.port()).await;
    let b = replica("replica-b", dir.path(), &store, up.smpp.port()).await;
    let victim = cluster.master_of("c:q:{esme}").expect("the queue's master");
    let run = relay_through(&a, &b, || {
        cluster.nodes[victim].kill();
        poll_sync("the victim's replica promoted", Duration::from_secs(30), || {
            cluster.master_of("c:q:{esme}").is_some_and(|m| m != victim)
        });
        cluster.nodes[victim].spawn();
    })
    .await;
    cluster.wait_ok();
    println!(
        "cluster failover (WAIT 1): kill -9 of the queue's master to both replicas' store up {:?}; {} submits accepted, refused meanwhile {:?}, lost {}, duplicates {}, stray {}",
        run.outage, run.accepted, run.refused, run.lost.len(), run.duplicates, run.stray
    );
    // The account's queue and dead letters share a slot (hash tag); the queue is where the
    // account's tag says.
    let live = cluster.nodes.iter().find(|n| n.child.is_some()).expect("node").port;
    assert_eq!(
        cli(live, &["CLUSTER", "KEYSLOT", "c:q:{esme}"]),
        cli(live, &["CLUSTER", "KEYSLOT", "c:dead:{esme}"])
    );
    assert!(run.lost.is_empty(), "lost receipts {:?}\nA:\n{}\nB:\n{}", run.lost, a.logs(), b.logs());
    assert_eq!(run.stray, 0);
    assert!(run.duplicates <= 64, "{} duplicates", run.duplicates);
}

// ---- bad input ------------------------------------------------------------------------------------

fn sentinel_store(master_name: &str, sentinels: &[String]) -> smsc_api::smscd_config::StoreConfig {
    smsc_api::smscd_config::StoreConfig::Redis {
        url: String::new(),
        sentinel: Some(smsc_api::smscd_config::RedisSentinelConfig {
            master_name: master_name.into(),
            sentinels: sentinels.to_vec(),
            username: None,
            password: None,
            sentinel_password: None,
            tls: false,
            db: 0,
        }),
        cluster: None,
        wait: None,
        key_prefix: "bad".into(),
        ttl: Duration::from_secs(60),
    }
}

/// The store stays down with a reason naming the config key, refuses writes cleanly, and the
/// daemon keeps running (Ready, receipt-less traffic flows).
async fn down_with_reason(store: smsc_api::smscd_config::StoreConfig, key: &str) {
    let built = smscd::store::build(&store, "bad-input").expect("built (no connection made yet)");
    let s = built.store;
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        s.enqueue("a", smscd::store::Delivery { pdu: bytes::Bytes::from_static(b"x"), our_id: None }),
    )
    .await;
    assert!(matches!(r, Ok(Err(StoreError::Unavailable(_)))), "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let reason = loop {
        if let Some(r) = s.down_reason() {
            break r;
        }
        assert!(Instant::now() < deadline, "no down reason");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!s.healthy());
    println!("down reason: {reason}");
    assert!(reason.contains(key), "`{reason}` names {key}");
    // The daemon with that store: up, Ready, says why in /readyz, passes receipt-less submits
    // and refuses receipt-requesting ones with a transient status.
    let carrier = Carrier::start(Answer::After(Duration::ZERO)).await;
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.store = store;
    cfg.binds = vec![upstream("c", carrier.port, "relay", "pw")];
    cfg.routing.default_chain = vec!["bind:c".into()];
    let d = Daemon::start(cfg).await;
    let core = d.core().clone();
    eventually("bound to the carrier", Duration::from_secs(10), || {
        core.upstreams.get("c").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let admin = d.admin;
    let want = key.to_string();
    poll_until("/readyz names the key", Duration::from_secs(15), || {
        let want = want.clone();
        async move {
            let (code, body) = http_get(admin, "/readyz").await;
            code == 200 && body.contains(&want)
        }
    })
    .await;
    let e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let plain = within("submit", e.session.request(submit("3161", 0))).await.expect("resp");
    assert_eq!(plain.command_status, CommandStatus::ESME_ROK);
    let wants = within("submit", e.session.request(submit("3161", 1))).await.expect("resp");
    assert_eq!(wants.command_status, CommandStatus::ESME_RSYSERR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_master_name_is_a_clear_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let master = Node::server(dir.path(), "master", &[]);
    let sentinel = Node::sentinel(dir.path(), "sentinel", master.port);
    down_with_reason(sentinel_store("nosuchmaster", &[sentinel.addr()]), "store.sentinel.master_name").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_sentinels_are_a_clear_error_naming_the_key() {
    // Ports nobody listens on (bound then released).
    let nobody = vec![format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port())];
    down_with_reason(sentinel_store("mymaster", &nobody), "store.sentinel.sentinels").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_with_uncovered_slots_is_a_clear_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let mode = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"].map(String::from);
    let node = Node::server(dir.path(), "node", &mode);
    // Half the slots: the cluster is down (cluster-require-full-coverage, the default).
    assert_eq!(cli(node.port, &["CLUSTER", "ADDSLOTSRANGE", "0", "8191"]).trim(), "OK");
    let store = smsc_api::smscd_config::StoreConfig::Redis {
        url: String::new(),
        sentinel: None,
        cluster: Some(smsc_api::smscd_config::RedisClusterConfig {
            nodes: vec![node.addr()],
            username: None,
            password: None,
            tls: false,
        }),
        wait: None,
        key_prefix: "bad".into(),
        ttl: Duration::from_secs(60),
    };
    down_with_reason(store, "store.cluster").await;
}
