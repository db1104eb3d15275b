//! The shared receipt store on a real Redis (`redis-server` from Debian, tools/deps.sh apt):
//! the store's own semantics, then several smscd replicas (the built binary, so a replica can be
//! SIGKILLed) sharing one Redis and one upstream (an in-process smscd whose sim issues the
//! receipts, and which hands them round-robin to the replicas' upstream binds).
//!
//! A missing redis-server fails the test with a message. Every wait polls with a deadline.

mod common;

use common::replicas::{free_port, Ports, Ready, RedisServer, Replica};
use common::*;
use smpp::session::{esme, BindKind, Handler, Reply, Request, SessionConfig};
use smpp::{Bind, Body, CommandStatus, DeliverSm};
use smscd::store::memory_queue::MemoryQueue;
use smscd::store::queue::{Final, Lookup, MessageQueue};
use smscd::store::redis::{pack_id, RedisStore};
use smscd::store::redis_queue::RedisQueue;
use smscd::store::{Correlation, Delivery, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("redis url");
    within("redis connect", client.get_multiplexed_async_connection()).await.expect("redis connect")
}

async fn xlen(url: &str, key: &str) -> usize {
    let mut c = redis_conn(url).await;
    redis::cmd("XLEN").arg(key).query_async(&mut c).await.expect("XLEN")
}

/// Pending entries per consumer of group `group` on `key`.
async fn pending_by_consumer(url: &str, key: &str, group: &str) -> BTreeMap<String, usize> {
    let mut c = redis_conn(url).await;
    let v: redis::Value =
        redis::cmd("XPENDING").arg(key).arg(group).query_async(&mut c).await.expect("XPENDING");
    let mut out = BTreeMap::new();
    if let redis::Value::Array(parts) = v {
        if let Some(redis::Value::Array(consumers)) = parts.get(3) {
            for c in consumers {
                if let Ok((name, n)) = redis::from_redis_value::<(String, String)>(c) {
                    out.insert(name, n.parse().unwrap_or(0));
                }
            }
        }
    }
    out
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

// ---- the store on its own ---------------------------------------------------------------------------

fn corr(id: &str) -> Correlation {
    Correlation { account: "acc".into(), our_id: id.into(), submitted_at_ms: 7, registered_delivery: 1 }
}

/// `corr("old")` in the hash layout older smscd versions wrote, at `key`.
async fn put_old_hash(c: &mut redis::aio::MultiplexedConnection, key: &str) {
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg(&["a", "acc", "o", "old", "t", "7", "r", "1"])
        .query_async(c)
        .await
        .expect("HSET");
}

fn delivery(n: u8) -> Delivery {
    Delivery { pdu: bytes::Bytes::from(vec![n; 3]), our_id: Some(format!("id{n}")) }
}

fn store(r: &RedisServer, prefix: &str, consumer: &str, claim_idle: Duration) -> Arc<RedisStore> {
    RedisStore::new(&r.url(), prefix, Duration::from_secs(3600), consumer.into(), claim_idle).expect("store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_correlation_by_candidates_ttl_and_grace() {
    let r = RedisServer::start();
    let s = store(&r, "u1", "c1", Duration::from_secs(30));
    s.put_correlation("up", "7b", corr("ours")).await.expect("put");
    let cands: Vec<String> = vec!["123".into(), "7b".into()];
    // Intermediate: kept; other upstream: not found.
    assert_eq!(s.take_correlation("up", &cands, false).await.expect("take"), Some(corr("ours")));
    assert_eq!(s.take_correlation("other", &cands, true).await.expect("take"), None);
    assert_eq!(s.take_correlation("up", &cands, true).await.expect("take"), Some(corr("ours")));
    // Final: kept for the grace only (a redelivered receipt still matches), TTL shortened.
    let mut c = redis_conn(&r.url()).await;
    let ttl: i64 = redis::cmd("PTTL").arg("u1:corr:up:7b").query_async(&mut c).await.expect("PTTL");
    assert!(ttl > 0 && ttl <= 300_000, "ttl {ttl}");
    // A redelivered final receipt still matches and leaves the record as it is.
    assert_eq!(s.take_correlation("up", &cands, true).await.expect("take"), Some(corr("ours")));
    let ttl2: i64 = redis::cmd("PTTL").arg("u1:corr:up:7b").query_async(&mut c).await.expect("PTTL");
    assert!(ttl2 > 0 && ttl2 <= ttl, "ttl {ttl2} after {ttl}");
    // Matched by its best candidate (the plain GETEX path): the same grace.
    s.put_correlation("up", "5", corr("five")).await.expect("put");
    assert_eq!(s.take_correlation("up", &["5".into()], false).await.expect("take"), Some(corr("five")));
    let ttl: i64 = redis::cmd("PTTL").arg("u1:corr:up:5").query_async(&mut c).await.expect("PTTL");
    assert!(ttl > 300_000, "ttl {ttl}");
    assert_eq!(s.take_correlation("up", &["5".into()], true).await.expect("take"), Some(corr("five")));
    let ttl: i64 = redis::cmd("PTTL").arg("u1:corr:up:5").query_async(&mut c).await.expect("PTTL");
    assert!(ttl > 0 && ttl <= 300_000, "ttl {ttl}");
    // A record in the hash layout of older versions (written before an upgrade) still matches.
    put_old_hash(&mut c, "u1:corr:up:9").await;
    let _: () =
        redis::cmd("PEXPIRE").arg("u1:corr:up:9").arg(3_600_000).query_async(&mut c).await.expect("PEXPIRE");
    assert_eq!(s.take_correlation("up", &["9".into()], true).await.expect("take"), Some(corr("old")));
    let ttl: i64 = redis::cmd("PTTL").arg("u1:corr:up:9").query_async(&mut c).await.expect("PTTL");
    assert!(ttl > 0 && ttl <= 300_000, "ttl {ttl}");
    // The TTL applies.
    let short =
        RedisStore::new(&r.url(), "u1s", Duration::from_millis(200), "c".into(), Duration::from_secs(30))
            .expect("store");
    short.put_correlation("up", "1", corr("x")).await.expect("put");
    assert!(short.take_correlation("up", &["1".into()], false).await.expect("take").is_some());
    let s2 = short.clone();
    poll_until("correlation expired", Duration::from_secs(10), || {
        let s2 = s2.clone();
        async move { s2.take_correlation("up", &["1".into()], false).await.ok().flatten().is_none() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_final_receipt_queued_and_correlation_deleted_in_one_step() {
    let r = RedisServer::start();
    let s = store(&r, "f1", "c1", Duration::from_secs(30));
    let mut c = redis_conn(&r.url()).await;
    s.put_correlation("up", "7b", corr("ours")).await.expect("put");
    let cands: Vec<String> = vec!["123".into(), "7b".into()];
    let (i, found) = s.find_correlation("up", &cands).await.expect("find").expect("found");
    assert_eq!((cands[i].as_str(), found), ("7b", corr("ours")));
    // Finding leaves the record and its TTL (an hour) as they were.
    let ttl: i64 = redis::cmd("PTTL").arg("f1:corr:up:7b").query_async(&mut c).await.expect("PTTL");
    assert!(ttl > 300_000, "ttl {ttl}");
    assert_eq!(s.find_correlation("other", &cands).await.expect("find"), None);
    s.enqueue_final("acc", delivery(1), "up", &cands[i]).await.expect("enqueue_final");
    let exists: i64 = redis::cmd("EXISTS").arg("f1:corr:up:7b").query_async(&mut c).await.expect("EXISTS");
    assert_eq!(exists, 0, "the correlation goes with the queueing");
    assert_eq!(s.next_for("acc").await.expect("next").map(|(_, d)| d), Some(delivery(1)));
    // A resent receipt finds nothing now (dropped, not delivered twice).
    assert_eq!(s.find_correlation("up", &cands).await.expect("find"), None);
    // An old hash record (written before an upgrade) is found by its candidate and deleted too.
    put_old_hash(&mut c, "f1:corr:up:9").await;
    let cands = vec!["8".to_string(), "9".to_string()];
    assert_eq!(s.find_correlation("up", &cands).await.expect("find"), Some((1, corr("old"))));
    s.enqueue_final("acc", delivery(2), "up", "9").await.expect("enqueue_final");
    let exists: i64 = redis::cmd("EXISTS").arg("f1:corr:up:9").query_async(&mut c).await.expect("EXISTS");
    assert_eq!(exists, 0);
    // Redis away: an error (the caller answers the upstream ESME_RX_T_APPN, so it resends).
    s.put_correlation("up", "5", corr("five")).await.expect("put");
    drop(r);
    let e = s.enqueue_final("acc", delivery(3), "up", "5").await;
    assert!(e.is_err(), "{e:?}");
}

/// The query_sm record of a submit relayed at once, written beside its correlation (so its
/// final receipt may be recorded first): ENROUTE until a final state, and a final state already
/// there stays; nothing is held. Checked on Redis and on memory alike.
async fn relayed_at_once_semantics(q: &dyn MessageQueue) {
    let (keep_relayed, keep_final) = (Duration::from_secs(3600), Duration::from_secs(60));
    q.relayed_at_once("acc", "r1", 1_000, keep_relayed).await.expect("relayed");
    assert_eq!(q.lookup("acc", "r1", 1_001).await.expect("lookup"), Some(Lookup::Relayed { at_ms: 1_000 }));
    q.finish("acc", "r1", Final::Delivered, 2_000, keep_final).await.expect("finish");
    let ended = Some(Lookup::Ended { state: Final::Delivered, at_ms: 2_000 });
    assert_eq!(q.lookup("acc", "r1", 2_001).await.expect("lookup"), ended);
    // The receipt came first: the later record leaves its state.
    q.finish("acc", "r2", Final::Rejected, 3_000, keep_final).await.expect("finish");
    q.relayed_at_once("acc", "r2", 3_001, keep_relayed).await.expect("relayed");
    let ended = Some(Lookup::Ended { state: Final::Rejected, at_ms: 3_000 });
    assert_eq!(q.lookup("acc", "r2", 3_002).await.expect("lookup"), ended);
    assert_eq!(q.depth("acc").await.expect("depth"), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_at_once_record_on_redis_and_memory_alike() {
    relayed_at_once_semantics(&MemoryQueue::default()).await;
    let r = RedisServer::start();
    let q = RedisQueue::new(store(&r, "ra", "c1", Duration::from_secs(30)), "ra");
    relayed_at_once_semantics(&q).await;
    // Each record expires: ENROUTE after keep_relayed, a final state after keep_final, also
    // when the relayed record came after it (the final state and its expiry stay).
    let mut c = redis_conn(&r.url()).await;
    q.relayed_at_once("acc", "r3", 4_000, Duration::from_secs(3600)).await.expect("relayed");
    for (id, lo, hi) in [("r1", 1, 60_000), ("r2", 1, 60_000), ("r3", 60_001, 3_600_000)] {
        let key = format!("ra:saf:{{acc}}:m:{id}");
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut c).await.expect("PTTL");
        assert!((lo..=hi).contains(&ttl), "{key}: ttl {ttl}");
    }
}

/// Issue 14: the bounds every store keeps, checked on Redis and on memory alike: a full queue
/// refuses (and a refused final receipt keeps its correlation), dead letters leave the queue
/// and are capped, ageing out drops what is older than asked, and purging forgets the account.
async fn bounded_queue_semantics(s: &dyn Store) {
    s.enqueue_within("acc", delivery(1), 2).await.expect("enqueue");
    s.enqueue_within("acc", delivery(2), 2).await.expect("enqueue");
    assert!(matches!(s.enqueue_within("acc", delivery(3), 2).await, Err(StoreError::Full)));
    // Handed out still counts: the account owes it.
    let (id1, _) = s.next_for("acc").await.expect("next").expect("an entry");
    assert!(matches!(s.enqueue_within("acc", delivery(3), 2).await, Err(StoreError::Full)));
    s.put_correlation("up", "9", corr("nine")).await.expect("put");
    assert!(matches!(s.enqueue_final_within("acc", delivery(9), "up", "9", 2).await, Err(StoreError::Full)));
    assert_eq!(s.find_correlation("up", &["9".into()]).await.expect("find"), Some((0, corr("nine"))));
    assert_eq!(s.pending("acc").await.expect("pending"), 2);
    // Dead-lettered: out of the queue (room again), onto the dead letters.
    s.dead_letter("acc", id1, "refused", 1).await.expect("dead letter");
    assert_eq!(s.pending("acc").await.expect("pending"), 1);
    assert_eq!(s.dead_letters("acc").await.expect("dead"), 1);
    s.enqueue_final_within("acc", delivery(9), "up", "9", 2).await.expect("enqueue final");
    assert_eq!(s.find_correlation("up", &["9".into()]).await.expect("find"), None);
    let batch = s.next_batch("acc", 10).await.expect("batch");
    assert_eq!(batch.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), vec![delivery(2), delivery(9)]);
    // At most `keep` dead letters: the oldest go.
    s.dead_letter("acc", batch[0].0, "attempts", 1).await.expect("dead letter");
    assert_eq!(s.dead_letters("acc").await.expect("dead"), 1);
    s.nack("acc", batch[1].0).await.expect("nack");
    // Ageing out: nothing is an hour old; everything is older than zero once a millisecond passed.
    assert_eq!(s.age_out("acc", Duration::from_secs(3600)).await.expect("age out"), 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut aged = 0;
    while aged == 0 {
        assert!(Instant::now() < deadline, "nothing aged out");
        aged = s.age_out("acc", Duration::ZERO).await.expect("age out");
    }
    assert_eq!(aged, 1);
    assert_eq!(s.pending("acc").await.expect("pending"), 0);
    // Purged: queue and dead letters gone.
    s.enqueue("acc", delivery(4)).await.expect("enqueue");
    assert_eq!(s.purge("acc").await.expect("purge"), 1);
    assert_eq!(s.pending("acc").await.expect("pending"), 0);
    assert_eq!(s.dead_letters("acc").await.expect("dead"), 0);
    assert!(s.next_for("acc").await.expect("next").is_none());
    // The account can queue again afterwards.
    s.enqueue("acc", delivery(5)).await.expect("enqueue");
    assert_eq!(s.next_for("acc").await.expect("next").map(|(_, d)| d), Some(delivery(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_queues_are_bounded_on_redis_and_memory_alike() {
    let r = RedisServer::start();
    let s = store(&r, "b1", "c1", Duration::from_secs(30));
    bounded_queue_semantics(s.as_ref()).await;
    let mut c = redis_conn(&r.url()).await;
    let reason: Vec<(String, std::collections::HashMap<String, String>)> =
        redis::cmd("XRANGE").arg("b1:dead:acc").arg("-").arg("+").query_async(&mut c).await.expect("XRANGE");
    assert!(reason.is_empty(), "purged with the queue: {reason:?}");
    let m = smscd::store::memory::MemoryStore::new(Duration::from_secs(3600));
    bounded_queue_semantics(&m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_queue_is_shared_and_consumer_style() {
    let r = RedisServer::start();
    let a = store(&r, "u2", "a", Duration::from_secs(30));
    let b = store(&r, "u2", "b", Duration::from_secs(30));
    a.enqueue("acc", delivery(1)).await.expect("enqueue");
    a.enqueue("acc", delivery(2)).await.expect("enqueue");
    // Queued on A, served by B; each entry to one consumer only.
    let (id1, d1) = b.next_for("acc").await.expect("next").expect("an entry");
    assert_eq!(d1, delivery(1));
    let (id2, d2) = a.next_for("acc").await.expect("next").expect("an entry");
    assert_eq!(d2, delivery(2));
    assert!(a.next_for("acc").await.expect("next").is_none());
    assert!(b.next_for("acc").await.expect("next").is_none());
    assert_eq!(b.pending("acc").await.expect("pending"), 2);
    assert_eq!(b.pending_total().await.expect("total"), 1, "B holds one in flight");
    // nack: B gets the same entry again (it still owns it), nobody else does.
    b.nack("acc", id1).await.expect("nack");
    assert!(a.next_for("acc").await.expect("next").is_none());
    let (again, d) = b.next_for("acc").await.expect("next").expect("retry");
    assert_eq!((again, d), (id1, delivery(1)));
    b.ack("acc", id1).await.expect("ack");
    a.ack("acc", id2).await.expect("ack");
    assert_eq!(a.pending("acc").await.expect("pending"), 0);
    assert_eq!(xlen(&r.url(), "u2:q:acc").await, 0, "acked entries are deleted");
    assert!(pack_id("1-1").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_batches_hand_out_in_order_retries_first_and_ack_together() {
    let r = RedisServer::start();
    let a = store(&r, "u2b", "a", Duration::from_secs(30));
    let b = store(&r, "u2b", "b", Duration::from_secs(30));
    for n in 1..=6 {
        a.enqueue("acc", delivery(n)).await.expect("enqueue");
    }
    let first = a.next_batch("acc", 4).await.expect("batch");
    assert_eq!(
        first.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
        (1..=4).map(delivery).collect::<Vec<_>>()
    );
    // Each entry to one consumer only.
    let other = b.next_batch("acc", 10).await.expect("batch");
    assert_eq!(other.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), vec![delivery(5), delivery(6)]);
    assert!(a.next_batch("acc", 10).await.expect("batch").is_empty());
    assert_eq!(a.pending_total().await.expect("total"), 4);
    // A nacked entry comes back before new ones.
    a.nack("acc", first[2].0).await.expect("nack");
    a.enqueue("acc", delivery(7)).await.expect("enqueue");
    let again = a.next_batch("acc", 10).await.expect("batch");
    assert_eq!(again, vec![(first[2].0, delivery(3)), (again[1].0, delivery(7))]);
    let ids: Vec<_> = first.iter().chain(&again[1..]).map(|(id, _)| *id).collect();
    a.ack_many("acc", &ids).await.expect("ack many");
    assert_eq!(a.pending_total().await.expect("total"), 0);
    assert_eq!(xlen(&r.url(), "u2b:q:acc").await, 2, "B's two are still owed");
    let ids: Vec<_> = other.iter().map(|(id, _)| *id).collect();
    b.ack_many("acc", &ids).await.expect("ack many");
    assert_eq!(xlen(&r.url(), "u2b:q:acc").await, 0, "acked entries are deleted");
    assert!(pending_by_consumer(&r.url(), "u2b:q:acc", "u2b").await.values().all(|n| *n == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_claims_entries_of_a_dead_consumer_after_the_idle_bound() {
    let r = RedisServer::start();
    let idle = Duration::from_secs(1);
    let dead = store(&r, "u3", "dead", idle);
    for n in 1..=3 {
        dead.enqueue("acc", delivery(n)).await.expect("enqueue");
    }
    // Handed out, never acked: the replica "dies".
    for _ in 0..3 {
        assert!(dead.next_for("acc").await.expect("next").is_some());
    }
    drop(dead);
    let live = store(&r, "u3", "live", idle);
    let started = Instant::now();
    let mut got = BTreeSet::new();
    while got.len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(10), "claimed only {got:?}");
        match live.next_for("acc").await.expect("next") {
            Some((id, d)) => {
                got.insert(d.our_id.clone().expect("our id"));
                live.ack("acc", id).await.expect("ack");
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(started.elapsed() >= idle, "claimed before the idle bound");
    assert_eq!(got, ["id1", "id2", "id3"].map(String::from).into());
    assert!(live.next_for("acc").await.expect("next").is_none());
    // A consumer restarted under the same identity gets its own pending entries back at once.
    let again = store(&r, "u3", "same", Duration::from_secs(600));
    again.enqueue("acc", delivery(9)).await.expect("enqueue");
    assert!(again.next_for("acc").await.expect("next").is_some());
    drop(again);
    let reborn = store(&r, "u3", "same", Duration::from_secs(600));
    let (_, d) = reborn.next_for("acc").await.expect("next").expect("own pending entry");
    assert_eq!(d, delivery(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_does_not_claim_an_entry_in_flight_on_a_live_replica() {
    let r = RedisServer::start();
    let idle = Duration::from_secs(1);
    let slow = store(&r, "u5", "slow", idle);
    let other = store(&r, "u5", "other", idle);
    slow.enqueue("acc", delivery(1)).await.expect("enqueue");
    let (id, _) = slow.next_for("acc").await.expect("next").expect("entry");
    // In flight to a slow ESME for three idle bounds: the heartbeat keeps it with `slow`.
    let until = Instant::now() + idle * 3;
    while Instant::now() < until {
        assert!(other.next_for("acc").await.expect("next").is_none(), "claimed while in flight");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slow.ack("acc", id).await.expect("ack");
    assert_eq!(slow.pending("acc").await.expect("pending"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_reports_down_fails_clearly_and_recovers_with_acks_replayed() {
    let mut r = RedisServer::start();
    let s = store(&r, "u4", "c", Duration::from_secs(600));
    let s2 = s.clone();
    poll_until("store up", Duration::from_secs(10), || {
        let s2 = s2.clone();
        async move { s2.healthy() }
    })
    .await;
    s.enqueue("acc", delivery(1)).await.expect("enqueue");
    let (id, _) = s.next_for("acc").await.expect("next").expect("entry");
    r.kill();
    // Delivered to the ESME, ack fails: remembered.
    assert!(matches!(s.ack("acc", id).await, Err(StoreError::Unavailable(_))));
    assert!(matches!(s.enqueue("acc", delivery(2)).await, Err(StoreError::Unavailable(_))));
    let s2 = s.clone();
    poll_until("store down", Duration::from_secs(10), || {
        let s2 = s2.clone();
        async move { !s2.healthy() }
    })
    .await;
    r.spawn();
    let s2 = s.clone();
    poll_until("store up again", Duration::from_secs(20), || {
        let s2 = s2.clone();
        async move { s2.healthy() }
    })
    .await;
    let url = r.url();
    poll_until("ack replayed", Duration::from_secs(10), || {
        let url = url.clone();
        async move { xlen(&url, "u4:q:acc").await == 0 }
    })
    .await;
    s.enqueue("acc", delivery(3)).await.expect("enqueue after restart");
    let (_, d) = s.next_for("acc").await.expect("next").expect("entry");
    assert_eq!(d, delivery(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_speaks_tls_with_a_rediss_url() {
    let dir = tempfile::tempdir().expect("dir");
    // A CA (what the client trusts) and a server certificate for 127.0.0.1 signed by it.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let (ca, cert, key) =
        (dir.path().join("ca.crt"), dir.path().join("redis.crt"), dir.path().join("redis.key"));
    std::fs::write(&ca, ca_cert.pem()).expect("write ca");
    std::fs::write(&cert, leaf.pem()).expect("write cert");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("write key");
    let port = free_port();
    let spawned = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", "0", "--tls-port", &port.to_string(), "--save", ""])
        .args(["--tls-auth-clients", "no", "--protected-mode", "no"])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            panic!("cannot start redis-server ({e}): install it with `tools/deps.sh apt` (make test does)")
        }
    };
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(child);
    // The system roots the client loads honour SSL_CERT_FILE: trust the test CA.
    std::env::set_var("SSL_CERT_FILE", &ca);
    let s = RedisStore::new(
        &format!("rediss://127.0.0.1:{port}/"),
        "tls",
        Duration::from_secs(60),
        "c".into(),
        Duration::from_secs(30),
    )
    .expect("store");
    let deadline = Instant::now() + Duration::from_secs(20);
    let put = loop {
        match s.put_correlation("up", "1", corr("ours")).await {
            Ok(()) => break Ok(()),
            Err(e) if Instant::now() > deadline => break Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    put.expect("correlation over TLS");
    assert_eq!(s.take_correlation("up", &["1".into()], true).await.expect("take"), Some(corr("ours")));
    s.enqueue("acc", delivery(1)).await.expect("enqueue");
    let (id, d) = s.next_for("acc").await.expect("next").expect("entry");
    assert_eq!(d, delivery(1));
    s.ack("acc", id).await.expect("ack");
}

// ---- smscd replicas --------------------------------------------------------------------------------

/// The shared upstream: an in-process smscd whose sim issues receipts to account `up`.
async fn upstream_sim() -> Daemon {
    upstream_sim_with_delay(20).await
}

async fn upstream_sim_with_delay(receipt_delay_ms: u64) -> Daemon {
    let mut up = account("up", "uppw");
    up.window = 64;
    let mut cfg = base_config(vec![up]);
    cfg.sim.receipt_delay_ms = receipt_delay_ms;
    Daemon::start(cfg).await
}

/// An smscd replica on the Redis store at `redis_url`, its only upstream `up` on `upstream`,
/// `claim_idle_secs` for taking over a dead replica's deliveries; ready and bound upstream.
async fn replica(name: &str, dir: &Path, redis_url: &str, upstream: u16, claim_idle_secs: u64) -> Replica {
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
store: {{ type: redis, url: "${{TEST_REDIS_URL}}", key_prefix: t, ttl: 1h }}
shutdown: {{ drain_secs: 2 }}
"#,
            smpp = p.smpp,
            admin = p.admin
        )
    };
    let env = [
        ("TEST_REDIS_URL", redis_url.to_owned()),
        (smscd::store::redis::CLAIM_IDLE_ENV, claim_idle_secs.to_string()),
    ];
    Replica::start(name, dir, config, &env, Ready { bound: Some("up"), ..Ready::default() }).await
}

fn message_id(p: &smpp::Pdu) -> Option<String> {
    match &p.body {
        Body::SubmitSmResp(r) if p.command_status.is_ok() => {
            Some(String::from_utf8_lossy(&r.message_id).into_owned())
        }
        _ => None,
    }
}

/// Submit `n` (registered_delivery 1), each answered OK; the ids.
async fn submit_n(e: &Esme, n: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for i in 0..n {
        let resp = within("submit", e.session.request(submit("3161000", 1))).await.expect("submit_sm_resp");
        match message_id(&resp) {
            Some(id) => ids.insert(id),
            None => panic!("submit {i} refused: {:?}", resp.command_status),
        };
    }
    ids
}

/// Receive until every id in `want` arrived (or the limit passes); counts per id.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<DeliverSm>,
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

fn missing(want: &BTreeSet<String>, got: &BTreeMap<String, usize>) -> Vec<String> {
    want.iter().filter(|id| !got.contains_key(*id)).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmitter_on_a_receiver_on_b_gets_every_receipt() {
    let r = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let up = upstream_sim().await;
    let a = replica("replica-a", dir.path(), &r.url(), up.smpp.port(), 30).await;
    let b = replica("replica-b", dir.path(), &r.url(), up.smpp.port(), 30).await;
    let mut rx = bind(b.smpp, BindKind::Receiver, "esme", "secret").await.expect("receiver on B");
    let tx = bind(a.smpp, BindKind::Transmitter, "esme", "secret").await.expect("transmitter on A");
    let n = 60;
    let ids = submit_n(&tx, n).await;
    assert_eq!(ids.len(), n);
    let got = collect(&mut rx.delivered, &ids, Duration::from_secs(30)).await;
    assert!(
        missing(&ids, &got).is_empty(),
        "missing {:?}\nA:\n{}\nB:\n{}",
        missing(&ids, &got),
        a.logs(),
        b.logs()
    );
    let dups: usize = got.values().map(|c| c - 1).sum();
    assert_eq!(dups, 0, "duplicates in the normal case: {got:?}");
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), ids, "only our ids");
    // The upstream really returned receipts on both replicas' binds; only B delivered.
    let on_a = a.metric("smscd_upstream_receipts_total", &["result=\"queued\""]).await;
    let on_b = b.metric("smscd_upstream_receipts_total", &["result=\"queued\""]).await;
    assert_eq!(on_a + on_b, n as f64);
    assert!(on_a > 0.0 && on_b > 0.0, "receipts landed on A {on_a}, B {on_b}");
    assert_eq!(b.metric("smscd_deliveries_total", &["result=\"delivered\""]).await, n as f64);
    // The gauge follows within a housekeeping tick (1 s).
    let a_admin = a.admin;
    poll_until("A's smscd_store_up gauge at 1", Duration::from_secs(10), || async move {
        metric_sum(&http_get(a_admin, "/metrics").await.1, "smscd_store_up", &[]) == 1.0
    })
    .await;
}

/// Receipts sent by the upstream at once (sim delay 0), so they often reach the other replica
/// while the correlation write on the submitting one is still in flight: still every receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_racing_the_correlation_write_still_arrives() {
    let r = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let up = upstream_sim_with_delay(0).await;
    let a = replica("replica-a", dir.path(), &r.url(), up.smpp.port(), 30).await;
    let b = replica("replica-b", dir.path(), &r.url(), up.smpp.port(), 30).await;
    let mut rx = bind(b.smpp, BindKind::Receiver, "esme", "secret").await.expect("receiver on B");
    let tx = bind(a.smpp, BindKind::Transmitter, "esme", "secret").await.expect("transmitter on A");
    let ids = submit_n(&tx, 60).await;
    let got = collect(&mut rx.delivered, &ids, Duration::from_secs(30)).await;
    assert!(
        missing(&ids, &got).is_empty(),
        "missing {:?}\nA:\n{}\nB:\n{}",
        missing(&ids, &got),
        a.logs(),
        b.logs()
    );
    assert_eq!(got.values().map(|c| c - 1).sum::<usize>(), 0, "duplicates: {got:?}");
    for rep in [&a, &b] {
        assert_eq!(rep.metric("smscd_upstream_receipts_total", &["result=\"unmatched\""]).await, 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esme_rebinding_to_the_other_replica_gets_every_receipt() {
    let r = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let up = upstream_sim().await;
    // Entries A handed out when the ESME left are retried by A, or claimed by B after this.
    let claim_idle = 3;
    let a = replica("replica-a", dir.path(), &r.url(), up.smpp.port(), claim_idle).await;
    let b = replica("replica-b", dir.path(), &r.url(), up.smpp.port(), claim_idle).await;
    let e = bind(a.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind A");
    // Unbind before any receipt can be delivered... (sim delay 20 ms: some may go out first; the
    // ESME keeps those.)
    let n = 40;
    let ids = submit_n(&e, n).await;
    within("unbind", e.session.unbind()).await;
    let mut early: BTreeMap<String, usize> = BTreeMap::new();
    let mut erx = e.delivered;
    while let Ok(d) = erx.try_recv() {
        *early.entry(receipt_id(&d)).or_default() += 1;
    }
    // Everything else waits in Redis while the ESME is bound nowhere.
    let url = r.url();
    let waiting = n - early.len();
    poll_until("receipts queued in Redis", Duration::from_secs(20), || {
        let url = url.clone();
        async move { xlen(&url, "t:q:esme").await >= waiting }
    })
    .await;
    let mut e2 = bind(b.smpp, BindKind::Transceiver, "esme", "secret").await.expect("rebind on B");
    let rest: BTreeSet<String> = ids.iter().filter(|id| !early.contains_key(*id)).cloned().collect();
    let got = collect(&mut e2.delivered, &rest, Duration::from_secs(30)).await;
    assert!(
        missing(&rest, &got).is_empty(),
        "missing {:?}\nA:\n{}\nB:\n{}",
        missing(&rest, &got),
        a.logs(),
        b.logs()
    );
    let dups: usize =
        got.values().map(|c| c - 1).sum::<usize>() + got.keys().filter(|k| early.contains_key(*k)).count();
    assert_eq!(dups, 0, "duplicates: early {early:?} later {got:?}");
    poll_until("stream drained", Duration::from_secs(10), || {
        let url = url.clone();
        async move { xlen(&url, "t:q:esme").await == 0 }
    })
    .await;
}

/// Answers every deliver_sm with ESME_RX_T_APPN (transient): the replica keeps retrying and
/// never acknowledges.
struct Refuse(Arc<AtomicUsize>);

impl Handler for Refuse {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        match req.pdu.body {
            Body::DeliverSm(_) => {
                self.0.fetch_add(1, Ordering::Relaxed);
                Reply::Error(CommandStatus::ESME_RX_T_APPN)
            }
            _ => Reply::Error(CommandStatus::ESME_RINVCMDID),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_holding_unacknowledged_receipts_the_other_delivers_them() {
    let r = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let up = upstream_sim().await;
    let claim_idle = 2;
    let mut a = replica("replica-a", dir.path(), &r.url(), up.smpp.port(), claim_idle).await;
    let b = replica("replica-b", dir.path(), &r.url(), up.smpp.port(), claim_idle).await;
    // A refusing receiver on A: A reads every receipt and holds it unacknowledged.
    let refused = Arc::new(AtomicUsize::new(0));
    let bind_pdu = smpp::Bind {
        system_id: bytes::Bytes::from_static(b"esme"),
        password: bytes::Bytes::from_static(b"secret"),
        ..Bind::default()
    };
    let cfg = SessionConfig { bind_timeout: Duration::from_secs(5), ..SessionConfig::default() };
    let (_refuser, _) = within(
        "bind refuser",
        esme::connect(a.smpp, BindKind::Receiver, bind_pdu, cfg, Refuse(refused.clone())),
    )
    .await
    .expect("refusing receiver on A");
    let tx = bind(b.smpp, BindKind::Transmitter, "esme", "secret").await.expect("transmitter on B");
    let n = 30;
    let ids = submit_n(&tx, n).await;
    let url = r.url();
    poll_until("A holds every receipt unacknowledged", Duration::from_secs(30), || {
        let url = url.clone();
        async move { pending_by_consumer(&url, "t:q:esme", "t").await.get("replica-a").copied() == Some(n) }
    })
    .await;
    assert!(refused.load(Ordering::Relaxed) > 0);
    a.sigkill();
    let killed_at = Instant::now();
    let mut rx = bind(b.smpp, BindKind::Receiver, "esme", "secret").await.expect("receiver on B");
    let got = collect(&mut rx.delivered, &ids, Duration::from_secs(30)).await;
    assert!(missing(&ids, &got).is_empty(), "missing {:?}\nB:\n{}", missing(&ids, &got), b.logs());
    let dups: usize = got.values().map(|c| c - 1).sum();
    assert_eq!(dups, 0, "duplicates: {got:?}");
    println!(
        "killed replica: {n} receipts held by replica-a delivered by replica-b {:?} after SIGKILL (claim idle {claim_idle}s)",
        killed_at.elapsed()
    );
    poll_until("stream drained", Duration::from_secs(10), || {
        let url = url.clone();
        async move { xlen(&url, "t:q:esme").await == 0 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_traffic_loses_no_acknowledged_receipt() {
    let mut r = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let up = upstream_sim().await;
    let a = replica("replica-a", dir.path(), &r.url(), up.smpp.port(), 5).await;
    let b = replica("replica-b", dir.path(), &r.url(), up.smpp.port(), 5).await;
    let mut rx = bind(b.smpp, BindKind::Receiver, "esme", "secret").await.expect("receiver on B");
    let tx = Arc::new(bind(a.smpp, BindKind::Transmitter, "esme", "secret").await.expect("transmitter on A"));
    // Submit in the background, before, during and after the restart, until told to stop; a
    // refused submit is retried (what an ESME does on a transient error), so every message
    // ends up accepted exactly once.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ids, refused)
        })
    };
    // Restart once traffic and receipts flow.
    let b_admin = b.admin;
    poll_until("receipts flowing", Duration::from_secs(30), || async move {
        metric_sum(
            &http_get(b_admin, "/metrics").await.1,
            "smscd_deliveries_total",
            &["result=\"delivered\""],
        ) >= 50.0
    })
    .await;
    let at_kill = accepted.load(Ordering::Relaxed);
    let down_at = Instant::now();
    r.kill();
    // The replicas notice (gauge, the /readyz body) but stay Ready: one Redis outage must not
    // empty the Service of every replica (issue 13 item 16) ...
    for rep in [&a, &b] {
        // Each replica's health check notices on its own tick: wait for each one's gauge.
        let admin = rep.admin;
        poll_until("the replica's smscd_store_up gauge at 0", Duration::from_secs(10), || async move {
            metric_sum(&http_get(admin, "/metrics").await.1, "smscd_store_up", &[]) == 0.0
        })
        .await;
        let (code, body) = http_get(rep.admin, "/readyz").await;
        assert_eq!(code, 200, "replica {} not Ready with the store down: {body}", rep.name);
        assert!(body.contains("store unavailable"), "{body}");
    }
    r.spawn();
    // ... and come back by themselves.
    for rep in [&a, &b] {
        let admin = rep.admin;
        poll_until("replica's store up again", Duration::from_secs(20), || async move {
            metric_sum(&http_get(admin, "/metrics").await.1, "smscd_store_up", &[]) == 1.0
        })
        .await;
    }
    let outage = down_at.elapsed();
    let before = accepted.load(Ordering::Relaxed);
    // Traffic goes on after the restart too.
    let acc = accepted.clone();
    poll_until("200 more submits after the restart", Duration::from_secs(30), || {
        let n = acc.load(Ordering::Relaxed);
        async move { n >= before + 200 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (ids, refused) = within("submits", sender).await.expect("sender");
    let got = collect(&mut rx.delivered, &ids, Duration::from_secs(60)).await;
    let lost = missing(&ids, &got);
    let dups: usize = got.values().map(|c| c - 1).sum();
    let stray = got.keys().filter(|k| !ids.contains(*k)).count();
    println!(
        "redis restart: kill to both replicas' store up again {outage:?}; {} submits accepted ({at_kill} before the kill, {before} when ready again), refused while down {refused:?}, receipts delivered {} (distinct {}), lost {}, duplicates {dups}, stray {stray}",
        ids.len(),
        got.values().sum::<usize>(),
        got.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost receipts {lost:?}\nA:\n{}\nB:\n{}", a.logs(), b.logs());
    assert_eq!(stray, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_still_serves_one_replica() {
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.sim.receipt_delay_ms = 0;
    let d = Daemon::start(cfg).await;
    let mut e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let ids = submit_n(&e, 10).await;
    let got = collect(&mut e.delivered, &ids, Duration::from_secs(20)).await;
    assert!(missing(&ids, &got).is_empty());
    assert_eq!(http_get(d.admin, "/readyz").await.0, 200);
    assert_eq!(metric_sum(&d.metrics().await, "smscd_store_up", &[]), 1.0);
}

/// Send `sig` (STOP, CONT) to redis-server.
fn signal(r: &RedisServer, sig: &str) {
    let pid = r.child.as_ref().map(|c| c.id()).expect("redis-server running");
    let ok =
        Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} redis-server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_is_not_acknowledged_when_its_correlation_cannot_be_stored() {
    let redis = RedisServer::start();
    let carrier = Carrier::start(Answer::After(Duration::ZERO)).await;
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.store = smsc_api::smscd_config::StoreConfig::Redis {
        url: redis.url(),
        sentinel: None,
        cluster: None,
        wait: None,
        key_prefix: "budget".into(),
        ttl: Duration::from_secs(3600),
    };
    cfg.server.submit_timeout_ms = 1000;
    cfg.binds = vec![upstream("c", carrier.port, "relay", "pw")];
    cfg.routing.default_chain = vec!["bind:c".into()];
    let d = Daemon::start(cfg).await;
    let core = d.core().clone();
    eventually("bound to the carrier", Duration::from_secs(10), || {
        core.upstreams.get("c").is_some_and(|u| u.bound_sessions() == 1)
    })
    .await;
    let e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let stored = within("submit", e.session.request(submit("3161", 1))).await.expect("resp");
    assert_eq!(stored.command_status, CommandStatus::ESME_ROK);
    // Redis stops answering (its connections stay open): the carrier still takes the next
    // submit, but its correlation cannot be written.
    signal(&redis, "STOP");
    let started = Instant::now();
    let lost = within("submit", e.session.request(submit("3161", 1))).await.expect("resp");
    let took = started.elapsed();
    signal(&redis, "CONT");
    assert_eq!(carrier.count(), 2, "the carrier took it: the store write is what failed");
    // No OK for a receipt that could never be matched; transient, within the budget.
    assert_eq!(lost.command_status, CommandStatus::ESME_RSYSERR);
    assert!(took < Duration::from_millis(1500), "answered after {took:?}, budget 1 s");
}

// ---- bind permits (issue 13 item 15) -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_permits_on_redis_are_exclusive_renewed_and_lapse() {
    let r = RedisServer::start();
    let s = store(&r, "permits", "c1", Duration::from_secs(30));
    let long = Duration::from_secs(60);
    let take = |h: &'static str| {
        let s = s.clone();
        async move { s.acquire_permit("relay@127.0.0.1:2775", 2, h, long).await.expect("acquire") }
    };
    assert_eq!(take("a").await, Some(0));
    assert_eq!(take("b").await, Some(1));
    assert_eq!(take("c").await, None, "both permits held");
    assert_eq!(take("a").await, Some(0), "a holder gets its own permit back");
    assert!(s.renew_permit("relay@127.0.0.1:2775", 1, "b", long).await.expect("renew"));
    assert!(!s.renew_permit("relay@127.0.0.1:2775", 1, "c", long).await.expect("renew"), "b's, not c's");
    s.release_permit("relay@127.0.0.1:2775", 1, "c").await.expect("release");
    assert_eq!(take("c").await, None, "c cannot release b's permit");
    s.release_permit("relay@127.0.0.1:2775", 1, "b").await.expect("release");
    assert_eq!(take("c").await, Some(1));
    // Another carrier account has its own permits.
    assert_eq!(s.acquire_permit("relay@127.0.0.1:2776", 1, "d", long).await.expect("acquire"), Some(0));

    // A permit not renewed lapses: another holder takes it, and the old holder hears it is lost.
    let short = Duration::from_millis(200);
    assert_eq!(s.acquire_permit("single@h:1", 1, "old", short).await.expect("acquire"), Some(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.acquire_permit("single@h:1", 1, "new", long).await.expect("acquire").is_none() {
        assert!(Instant::now() < deadline, "the lapsed permit was never free");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!s.renew_permit("single@h:1", 0, "old", long).await.expect("renew"), "old lost it");
}

/// A relay of the sample (`config/samples/activeactive-redis.yaml`: 3 replicas x 2 binds to an
/// upstream that allows 6) on one Redis, for the rollout test.
async fn permit_relay(redis: &RedisServer, carrier: &Daemon) -> Daemon {
    let mut cfg = base_config(vec![account("esme", "pw")]);
    let mut up = upstream("carrier", carrier.smpp.port(), "relay", "rpw");
    up.binds = 2;
    up.max_binds = Some(6);
    cfg.binds = vec![up];
    cfg.routing.default_chain = vec!["bind:carrier".into()];
    cfg.store = smsc_api::smscd_config::StoreConfig::Redis {
        url: redis.url(),
        sentinel: None,
        cluster: None,
        wait: None,
        key_prefix: "rollout".into(),
        ttl: Duration::from_secs(3600),
    };
    cfg.shutdown.drain_secs = 2;
    Daemon::start(cfg).await
}

/// Issue 13 item 15: a rolling update of the sample never has more than maxBinds binds at the
/// carrier, whichever way the Deployment rolls. The carrier (an in-process smscd) counts the
/// relay account's sessions; a sampler keeps the highest count seen. A surge replica started
/// while the six binds are held waits for a permit, unready, until an old replica has drained
/// and unbound; a replica replaced old-first (what the operator renders for the sample) binds
/// once its predecessor has gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_of_the_sample_never_exceeds_max_binds_at_the_carrier() {
    let redis = RedisServer::start();
    let carrier = Daemon::start(base_config(vec![account("relay", "rpw")])).await;
    let at_carrier = carrier.core().accounts.get("relay").expect("carrier account");
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (at_carrier, peak) = (at_carrier.clone(), peak.clone());
        tokio::spawn(async move {
            // Bounded: 10 minutes of samples at most; aborted at the end of the test.
            for _ in 0..600_000 {
                peak.fetch_max(at_carrier.binds() as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let six_bound = |what: &'static str| {
        let at_carrier = at_carrier.clone();
        async move { eventually(what, Duration::from_secs(30), || at_carrier.binds() == 6).await }
    };

    let mut old = Vec::new();
    for _ in 0..3 {
        old.push(permit_relay(&redis, &carrier).await);
    }
    six_bound("the three replicas' six binds").await;

    // Surge: a fourth replica finds every permit held. It binds nothing and is not ready.
    let surge = permit_relay(&redis, &carrier).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_sum(&surge.metrics().await, "smscd_upstream_permit_waits", &[]) < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the surge replica's sessions never waited for permits ({} binds at the carrier):\n{}",
            at_carrier.binds(),
            surge.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = http_get(surge.admin, "/readyz").await;
    assert_eq!(status, 503, "a replica that cannot bind upstream is not ready: {body}");
    assert!(body.contains("bind permit"), "{body}");
    assert_eq!(surge.core().upstreams.get("carrier").map(|u| u.bound_sessions()), Some(0));

    // An old replica drains and unbinds: its two permits go to the surge replica.
    old.remove(0).shutdown().await;
    six_bound("the surge replica's binds after an old one unbound").await;
    eventually("the surge replica bound twice", Duration::from_secs(30), || {
        surge.core().upstreams.get("carrier").is_some_and(|u| u.bound_sessions() == 2)
    })
    .await;
    assert_eq!(http_get(surge.admin, "/readyz").await.0, 200, "ready once bound");

    // Old-first, as the operator rolls the sample: each old replica goes, then its successor
    // starts and takes the permits it gave back.
    let mut new = vec![surge];
    while let Some(mut o) = old.pop() {
        o.shutdown().await;
        new.push(permit_relay(&redis, &carrier).await);
        six_bound("a successor's binds").await;
    }
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= 6, "the carrier saw {peak} binds of the relay account at once (maxBinds 6)");
    assert_eq!(at_carrier.binds(), 6);
    for mut d in new {
        d.shutdown().await;
    }
}
