//! Shared [`Store`] on Redis: a receipt that comes back on any replica reaches the account's
//! ESME on whichever replica it is bound to (or waits in Redis while it is bound nowhere).
//!
//! Client: `redis` (redis-rs) with `tokio-comp` + `connection-manager`. It is the de facto Rust
//! client (maintained under the redis-rs org with Redis Ltd. involvement, the most used by far);
//! `ConnectionManager` is one multiplexed connection that reconnects by itself after a failure,
//! which is what we want (every command is short; nothing here blocks server-side). 0.32 is
//! the last line that builds with the workspace's rust-version 1.85. `rediss://` goes through
//! rustls with the system roots (SSL_CERT_FILE honoured).
//!
//! Where Redis is (one instance, a Sentinel master set, a Redis Cluster) and how the connection
//! follows failovers: [`link`]. With Redis Cluster the account's keys carry the account as a
//! hash tag (`P:q:{<account>}`, `P:dead:{<account>}`) so the scripts and MULTIs on one account
//! stay in one slot; a correlation lives in the slot of its own key, so a final receipt is
//! queued by the script and its correlation deleted by a second command (see
//! [`RedisStore::add`]). Optional `WAIT` after correlation writes and enqueues: `store.wait`.
//!
//! Keys (`P` = `store.key_prefix`):
//! - `P:corr:<upstream>:<normalised id>`: string (see [`pack_correlation`]: account, our id,
//!   submit time (ms), registered_delivery), one `SET … PX`; expires after `store.ttl`. A final
//!   receipt is queued and its record deleted in one `MULTI XADD DEL EXEC` ([`Store::enqueue_final`]):
//!   until then a receipt the upstream redelivers still matches, after it one finds nothing (it
//!   was queued), and no taken record stays behind. `take_correlation` with `remove` (a final
//!   receipt nobody asked for) keeps the record for [`TAKEN_GRACE`] instead. Hashes written by
//!   older versions are still read.
//! - `P:q:<account>`: one stream per account, fields `pdu` (deliver_sm encoded with sequence 0)
//!   and `id` (our id, receipts only). Consumer group `P`; consumer = replica identity.
//!   Bounded ([`ENQUEUE_LUA`]): an entry is added only while the stream holds fewer than
//!   `queues.max_per_account` (acked entries are deleted, so its length is what is owed);
//!   entries older than the correlation TTL are trimmed (`XTRIM MINID`, [`Store::age_out`]).
//! - `P:dead:<account>`: the account's dead letters (entries the ESME refused for good or that
//!   ran out of attempts), the queue entry's fields plus `reason`, capped at
//!   `queues.dead_letters_per_account` (`XADD MAXLEN`). Read them with `XRANGE`.
//!
//! Delivery ids: a stream id `<ms>-<seq>` is packed into the u64 [`DeliveryId`] as
//! `ms << 22 | seq` (42 bits of ms: good until 2109; seq below 2^22 = 4 194 304 entries in one
//! millisecond of one stream, which XADD `*` never reaches in practice).
//!
//! Queue semantics (see docs/redis-store.md): `next_for`/`next_batch` serve, in order, entries this replica
//! already owns and must retry (nacked, claimed from a dead replica, left from a previous run
//! under the same identity), then new entries (`>`). Every [`claim_idle`](RedisStore) (default
//! 30 s) it XAUTOCLAIMs entries idle longer than that from any consumer: a replica that died
//! with unacknowledged entries, or that holds retries while its ESME went elsewhere. Before a
//! retry is sent, a script checks that this replica still owns the entry (else another one
//! claimed it and will send it) and resets its idle time; entries in flight to an ESME get the
//! same idle reset every quarter of the claim idle time (a heartbeat), so a slow ESME (deliver_sm
//! answered after more than the claim idle time) does not get the entry from a second replica.
//! New entries are read up to a batch per XREADGROUP. `ack`/`ack_many` = XACK + XDEL of all the
//! ids in one MULTI; an ack that fails (Redis away) is remembered and replayed on reconnection,
//! so a delivered entry is not resent.

pub mod link;
mod permits;

use super::{Correlation, Delivery, DeliveryId, Store, StoreError};
use bytes::Bytes;
use futures::future::BoxFuture;
pub use link::{is_server_reply, Conn, Link, Target};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{RedisError, Script, Value};
use smsc_api::smscd_config::RedisWaitConfig;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long a correlation stays after a final receipt matched it (see the module doc).
pub const TAKEN_GRACE: Duration = Duration::from_secs(300);
/// Default idle time after which another replica's unacknowledged entries are claimed.
pub const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(30);
/// Environment override of the claim idle time, in seconds.
pub const CLAIM_IDLE_ENV: &str = "SMSCD_STORE_CLAIM_IDLE_SECS";
const SEQ_BITS: u32 = 22;
const MS_BITS: u32 = 42;
/// Own entries re-read from Redis / claimed per round trip.
const BATCH: usize = 100;
/// Entries acknowledged per command when replaying acks.
const ACK_CHUNK: usize = 500;
/// How long a correlation write is retried before its receipt is given up.
const PUT_RETRY_FOR: Duration = Duration::from_secs(10);
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// KEYS: candidate correlation keys, best first. ARGV[1]: "1" to take (final receipt),
/// ARGV[2]: grace in ms. Returns the packed record (see [`pack_correlation`]), the HMGET reply
/// [account, our id, submit ms, registered_delivery] for a record in the old hash layout, or nil.
/// Taking marks the record `T` and sets the grace expiry in one SET, so a redelivered final
/// receipt finds it marked and writes nothing.
const TAKE_LUA: &str = r#"
for _, k in ipairs(KEYS) do
  local v = redis.pcall('GET', k)
  if type(v) == 'string' then
    if ARGV[1] == '1' and string.byte(v, 1) == 76 then
      redis.call('SET', k, 'T' .. string.sub(v, 2), 'PX', ARGV[2])
    end
    return v
  elseif type(v) == 'table' then
    -- WRONGTYPE: a hash written by an older smscd (records live for the whole TTL).
    local h = redis.call('HMGET', k, 'a', 'o', 't', 'r')
    if h[1] then
      if ARGV[1] == '1' then
        local left = redis.call('PTTL', k)
        if left < 0 or left > tonumber(ARGV[2]) then redis.call('PEXPIRE', k, ARGV[2]) end
      end
      return h
    end
  end
end
return false
"#;

/// KEYS[1]: stream, KEYS[2] (final receipts only): the correlation to delete with it. ARGV[1]:
/// the most entries the stream may hold, then the entry's fields and values. Returns 1 when
/// added, 0 (nothing written) when the stream is full.
const ENQUEUE_LUA: &str = r#"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
if KEYS[2] then redis.call('DEL', KEYS[2]) end
return 1
"#;

/// KEYS[1]: stream, KEYS[2]: dead-letter stream. ARGV: group, entry id, most dead letters
/// kept, reason. Copies the entry to the dead letters, then acknowledges and deletes it.
const DEAD_LUA: &str = r#"
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 1 then
  local args = {KEYS[2], 'MAXLEN', ARGV[3], '*'}
  for _, v in ipairs(e[1][2]) do table.insert(args, v) end
  table.insert(args, 'reason')
  table.insert(args, ARGV[4])
  redis.call('XADD', unpack(args))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return #e
"#;

/// KEYS[1]: stream. ARGV: group, entry id, consumer. When the entry is still pending on this
/// consumer, claim it again (resets idle time, counts a delivery) and return it; else nil.
const RETRY_LUA: &str = r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 1 and p[1][2] == ARGV[3] then
  return redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2])
end
return false
"#;

/// An entry as XCLAIM returns it: id and fields.
type RawEntry = (String, HashMap<String, Value>);
/// HMGET a o t r (the hash layout of older versions).
type RawCorrelation = (String, String, Option<u64>, Option<u8>);

/// A correlation as one string, `L<submit ms>:<registered_delivery>:<our id length>:<our id><account>`
/// (`T` instead of `L` once a final receipt took it): one `SET … PX` writes it, one `GET` reads it.
/// The length prefix lets our id and the account hold any character.
pub fn pack_correlation(c: &Correlation) -> String {
    format!("L{}:{}:{}:{}{}", c.submitted_at_ms, c.registered_delivery, c.our_id.len(), c.our_id, c.account)
}

/// The inverse of [`pack_correlation`] (either mark); None when malformed.
pub fn unpack_correlation(v: &[u8]) -> Option<Correlation> {
    let v = std::str::from_utf8(v).ok()?;
    let rest = v.strip_prefix('L').or_else(|| v.strip_prefix('T'))?;
    let mut parts = rest.splitn(4, ':');
    let submitted_at_ms = parts.next()?.parse().ok()?;
    let registered_delivery = parts.next()?.parse().ok()?;
    let len: usize = parts.next()?.parse().ok()?;
    let tail = parts.next()?;
    let (our_id, account) = (tail.get(..len)?, tail.get(len..)?);
    Some(Correlation {
        account: account.to_owned(),
        our_id: our_id.to_owned(),
        submitted_at_ms,
        registered_delivery,
    })
}

fn correlation_from(v: Value) -> Result<Option<Correlation>, RedisError> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => unpack_correlation(&b)
            .map(Some)
            .ok_or_else(|| RedisError::from((redis::ErrorKind::TypeError, "malformed correlation record"))),
        v => {
            let (account, our_id, t, r): RawCorrelation = redis::from_redis_value(&v)?;
            Ok(Some(Correlation {
                account,
                our_id,
                submitted_at_ms: t.unwrap_or(0),
                registered_delivery: r.unwrap_or(1),
            }))
        }
    }
}

/// KEYS[1]: stream. ARGV: group, consumer, ids... Resets the idle time of the ids still pending
/// on this consumer (deliveries in flight to a slow ESME), so no other replica claims them.
const HEARTBEAT_LUA: &str = r#"
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return 0
"#;

/// What this replica holds of one account's stream.
#[derive(Debug, Default)]
struct Local {
    group_ready: bool,
    /// Own pending entries re-read after start (left from a previous run under this identity).
    own_loaded: bool,
    /// Handed out by `next_for`, not yet acked/nacked.
    out: HashSet<String>,
    /// Owned by this replica in Redis, to be sent (again).
    retry: VecDeque<String>,
    last_claim: Option<Instant>,
    claim_cursor: String,
}

pub struct RedisStore {
    link: Link,
    /// `WAIT <replicas> <timeout>` after correlation writes and enqueues (`store.wait`).
    wait: Option<RedisWaitConfig>,
    /// Why the store is down, for the log and /readyz (None while up).
    down_reason: Mutex<Option<String>>,
    prefix: String,
    group: String,
    ttl: Duration,
    consumer: String,
    claim_idle: Duration,
    up: AtomicBool,
    local: Mutex<HashMap<String, Local>>,
    /// Acks that failed (Redis away): replayed when it answers again.
    unacked: Mutex<Vec<(String, String)>>,
    take: Script,
    retry: Script,
    heartbeat: Script,
    enqueue: Script,
    dead: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).field("consumer", &self.consumer).finish()
    }
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `<ms>-<seq>` -> `ms << 22 | seq`; None when out of the packed range.
pub fn pack_id(id: &str) -> Option<DeliveryId> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    (ms < 1 << MS_BITS && seq < 1 << SEQ_BITS).then_some(ms << SEQ_BITS | seq)
}

pub fn unpack_id(id: DeliveryId) -> String {
    format!("{}-{}", id >> SEQ_BITS, id & ((1 << SEQ_BITS) - 1))
}

/// The replica's consumer name: POD_NAME, else hostname-pid.
pub fn default_identity() -> String {
    if let Ok(p) = std::env::var("POD_NAME") {
        if !p.trim().is_empty() {
            return p.trim().to_owned();
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "smscd".into());
    format!("{host}-{}", std::process::id())
}

/// Claim idle time from [`CLAIM_IDLE_ENV`], else [`DEFAULT_CLAIM_IDLE`].
pub fn claim_idle_from_env() -> Duration {
    std::env::var(CLAIM_IDLE_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_CLAIM_IDLE, Duration::from_secs)
}

impl RedisStore {
    /// No connection is made here: the first command (or the health task) connects, and the
    /// connection manager reconnects after failures, so smscd starts while Redis is down.
    pub fn new(
        url: &str,
        key_prefix: &str,
        ttl: Duration,
        consumer: String,
        claim_idle: Duration,
    ) -> Result<Arc<RedisStore>, StoreError> {
        let target = Target::url(url).map_err(unavailable)?;
        Ok(RedisStore::with_link(Link::new(target), key_prefix, ttl, consumer, claim_idle, None))
    }

    /// The store on any [`Link`] (Sentinel, Cluster), with an optional `WAIT` after writes.
    pub fn with_link(
        link: Link,
        key_prefix: &str,
        ttl: Duration,
        consumer: String,
        claim_idle: Duration,
        wait: Option<RedisWaitConfig>,
    ) -> Arc<RedisStore> {
        let store = Arc::new(RedisStore {
            link,
            wait,
            down_reason: Mutex::new(None),
            prefix: key_prefix.to_owned(),
            group: key_prefix.to_owned(),
            ttl,
            consumer,
            claim_idle,
            up: AtomicBool::new(false),
            local: Mutex::new(HashMap::new()),
            unacked: Mutex::new(Vec::new()),
            take: Script::new(TAKE_LUA),
            retry: Script::new(RETRY_LUA),
            heartbeat: Script::new(HEARTBEAT_LUA),
            enqueue: Script::new(ENQUEUE_LUA),
            dead: Script::new(DEAD_LUA),
        });
        tokio::spawn(health(Arc::downgrade(&store)));
        store
    }

    /// The connection, for other state kept in the same Redis (keep each operation's keys in
    /// one hash slot: Redis Cluster).
    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn corr_key(&self, upstream: &str, id: &str) -> String {
        format!("{}:corr:{upstream}:{id}", self.prefix)
    }

    /// The account's queue. On Redis Cluster the account is a hash tag, so the queue and its
    /// dead letters share a slot (one script or MULTI touches both); elsewhere the key keeps
    /// the layout of earlier versions (queues survive an upgrade).
    pub fn stream(&self, account: &str) -> String {
        if self.link.is_cluster() {
            format!("{}:q:{{{account}}}", self.prefix)
        } else {
            format!("{}:q:{account}", self.prefix)
        }
    }

    pub fn dead_stream(&self, account: &str) -> String {
        if self.link.is_cluster() {
            format!("{}:dead:{{{account}}}", self.prefix)
        } else {
            format!("{}:dead:{account}", self.prefix)
        }
    }

    /// Run `cmd`, then (with `store.wait`) `WAIT` on the same node in the same round trip: an
    /// error when fewer replicas than asked took the write (the write itself stays).
    async fn query_acked<T: redis::FromRedisValue>(
        &self,
        conn: &mut Conn,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let Some(w) = &self.wait else { return cmd.query_async(conn).await };
        let mut p = redis::pipe();
        // The cluster client routes a pipeline by its first key: WAIT goes to cmd's master.
        p.add_command(cmd.clone()).cmd("WAIT").arg(w.replicas).arg(w.timeout_ms);
        let (v, acked): (T, i64) = p.query_async(conn).await?;
        if acked < i64::from(w.replicas) {
            return Err(RedisError::from((
                // Counted as an outage (not a reply): the store reads down until the next health tick
                // (1 s), so receipt-requesting submits are refused before they reach an upstream.
                redis::ErrorKind::IoError,
                "WAIT",
                format!(
                    "store.wait: {acked} of {} replicas acknowledged within {} ms",
                    w.replicas, w.timeout_ms
                ),
            )));
        }
        Ok(v)
    }

    /// Queue `d` for `account` (fields `pdu` and, for receipts, `id`) unless the stream holds
    /// `max` entries; with `forget`, delete that correlation in the same step.
    async fn add(
        &self,
        account: &str,
        d: &Delivery,
        max: usize,
        forget: Option<String>,
    ) -> Result<(), StoreError> {
        // On Redis Cluster the correlation is in another slot than the queue: the script
        // queues, a DEL follows (see the module doc for what that costs).
        let (in_script, after) = match forget {
            Some(k) if self.link.is_cluster() => (None, Some(k)),
            k => (k, None),
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.enqueue.get_hash()).arg(1 + usize::from(in_script.is_some())).arg(self.stream(account));
        if let Some(k) = in_script {
            cmd.arg(k);
        }
        cmd.arg(max.min(i64::MAX as usize) as i64).arg("pdu").arg(d.pdu.as_ref());
        if let Some(id) = &d.our_id {
            cmd.arg("id").arg(id);
        }
        let mut conn = self.conn().await?;
        let mut r: Result<i64, _> = self.query_acked(&mut conn, &cmd).await;
        if r.as_ref().is_err_and(|e| e.kind() == redis::ErrorKind::NoScriptError) {
            // A new master (failover) or a flushed script cache: load it and run it again.
            r = match self.enqueue.prepare_invoke().key(self.stream(account)).load_async(&mut conn).await {
                Ok(_) => self.query_acked(&mut conn, &cmd).await,
                Err(e) => Err(e),
            };
        }
        match r {
            // Queued, but fewer replicas than `store.wait` asks have it: answering the upstream
            // with an error would only get the receipt queued twice (a resend finds the
            // correlation gone), so it counts as queued.
            Err(e) if e.detail().is_some_and(|d| d.starts_with("store.wait")) => {
                tracing::warn!(account, error = %e, "receipt queued with fewer replica acknowledgements than asked");
            }
            r => {
                if self.note(r)? == 0 {
                    return Err(StoreError::Full);
                }
            }
        }
        if let Some(k) = after {
            // The receipt is queued whatever happens here: a correlation left behind expires
            // with its TTL; only a resend of this very receipt could match it (at most one
            // duplicate, docs/redis-store.md).
            if let Err(e) = self.run::<i64>(redis::cmd("DEL").arg(&k)).await {
                tracing::warn!(key = %k, error = %e, "correlation of a queued receipt not deleted");
            }
        }
        Ok(())
    }

    pub(super) async fn conn(&self) -> Result<Conn, StoreError> {
        self.link.conn().await.map_err(|e| {
            self.up.store(false, Ordering::Relaxed);
            unavailable(e)
        })
    }

    /// Run a command, keeping the health flag in step with the outcome.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut c = self.conn().await?;
        let r = cmd.query_async(&mut c).await;
        self.note(r)
    }

    pub(super) fn note<T>(&self, r: Result<T, RedisError>) -> Result<T, StoreError> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                self.link.saw(&e);
                if !is_server_reply(&e) {
                    self.up.store(false, Ordering::Relaxed);
                }
                Err(unavailable(e))
            }
        }
    }

    async fn ensure_group(&self, account: &str, force: bool) -> Result<(), StoreError> {
        if !force && lock(&self.local).get(account).is_some_and(|l| l.group_ready) {
            return Ok(());
        }
        // From 0: entries queued before any replica read this account are served too.
        let cmd = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.stream(account))
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .clone();
        match self.run::<Value>(&cmd).await {
            Ok(_) => {}
            Err(StoreError::Unavailable(e)) if e.contains("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        lock(&self.local).entry(account.to_owned()).or_default().group_ready = true;
        Ok(())
    }

    /// Re-read this consumer's pending entries (a previous run under the same identity).
    async fn load_own(&self, account: &str) -> Result<(), StoreError> {
        let mut from = "0".to_owned();
        loop {
            let cmd = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.group)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(BATCH)
                .arg("STREAMS")
                .arg(self.stream(account))
                .arg(&from)
                .clone();
            let reply: Option<StreamReadReply> = self.read_group(account, &cmd).await?;
            let ids: Vec<String> =
                reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).map(|e| e.id).collect();
            let Some(last) = ids.last().cloned() else { break };
            let mut locals = lock(&self.local);
            let l = locals.entry(account.to_owned()).or_default();
            for id in ids {
                if !l.out.contains(&id) && !l.retry.contains(&id) {
                    l.retry.push_back(id);
                }
            }
            from = last;
        }
        lock(&self.local).entry(account.to_owned()).or_default().own_loaded = true;
        Ok(())
    }

    /// XREADGROUP, recreating the group once when Redis lost it (restart without persistence).
    async fn read_group(
        &self,
        account: &str,
        cmd: &redis::Cmd,
    ) -> Result<Option<StreamReadReply>, StoreError> {
        match self.run(cmd).await {
            Err(StoreError::Unavailable(e)) if e.contains("NOGROUP") => {
                self.ensure_group(account, true).await?;
                self.run(cmd).await
            }
            r => r,
        }
    }

    /// XAUTOCLAIM entries idle longer than claim_idle (dead replicas, or retries another
    /// replica holds while the ESME is bound here) into this consumer's retries.
    async fn autoclaim(&self, account: &str) -> Result<(), StoreError> {
        let cursor = {
            let mut locals = lock(&self.local);
            let l = locals.entry(account.to_owned()).or_default();
            // Check at a quarter of the idle bound: an entry is claimed at most 1.25x it late.
            if l.last_claim.is_some_and(|t| t.elapsed() < self.claim_idle / 4) {
                return Ok(());
            }
            l.last_claim = Some(Instant::now());
            if l.claim_cursor.is_empty() {
                "0-0".to_owned()
            } else {
                l.claim_cursor.clone()
            }
        };
        let cmd = redis::cmd("XAUTOCLAIM")
            .arg(self.stream(account))
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg(BATCH)
            .arg("JUSTID")
            .clone();
        let reply: StreamAutoClaimReply = match self.run(&cmd).await {
            Ok(r) => r,
            Err(StoreError::Unavailable(e)) if e.contains("NOGROUP") => {
                self.ensure_group(account, true).await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let unacked: HashSet<String> =
            lock(&self.unacked).iter().filter(|(a, _)| a == account).map(|(_, id)| id.clone()).collect();
        let mut locals = lock(&self.local);
        let l = locals.entry(account.to_owned()).or_default();
        l.claim_cursor = reply.next_stream_id;
        for e in reply.claimed {
            // Ours in flight (claiming only reset its idle time), already queued, or delivered
            // with an ack still to replay: nothing to send.
            if l.out.contains(&e.id) || l.retry.contains(&e.id) || unacked.contains(&e.id) {
                continue;
            }
            tracing::info!(account, id = %e.id, "claimed an idle delivery from another consumer");
            l.retry.push_back(e.id);
        }
        Ok(())
    }

    async fn next_retry(&self, account: &str) -> Result<Option<(DeliveryId, Delivery)>, StoreError> {
        loop {
            let Some(id) = lock(&self.local).get_mut(account).and_then(|l| l.retry.pop_front()) else {
                return Ok(None);
            };
            let mut c = self.conn().await?;
            let r: Result<Option<Vec<RawEntry>>, _> = self
                .retry
                .key(self.stream(account))
                .arg(&self.group)
                .arg(&id)
                .arg(&self.consumer)
                .invoke_async(&mut c)
                .await;
            let entries = match self.note(r) {
                Ok(e) => e,
                Err(e) => {
                    // Keep it for the next attempt.
                    if let Some(l) = lock(&self.local).get_mut(account) {
                        l.retry.push_front(id);
                    }
                    return Err(e);
                }
            };
            // Another replica claimed it (it sends it), or it was deleted meanwhile.
            let Some((id, map)) = entries.and_then(|mut v| v.pop()) else { continue };
            let entry = StreamId { id, map };
            if let Some(item) = self.hand_out(account, entry).await {
                return Ok(Some(item));
            }
        }
    }

    /// Turn a read entry into a hand-out; entries without a payload or unpackable ids are
    /// dropped from the group (logged).
    async fn hand_out(&self, account: &str, e: StreamId) -> Option<(DeliveryId, Delivery)> {
        let pdu = e.map.get("pdu").and_then(|v| redis::from_redis_value::<Vec<u8>>(v).ok());
        let our_id = e.map.get("id").and_then(|v| redis::from_redis_value::<String>(v).ok());
        let packed = pack_id(&e.id);
        match (pdu, packed) {
            (Some(pdu), Some(n)) => {
                lock(&self.local).entry(account.to_owned()).or_default().out.insert(e.id);
                Some((n, Delivery { pdu: Bytes::from(pdu), our_id }))
            }
            (pdu, _) => {
                tracing::error!(account, id = %e.id, has_pdu = pdu.is_some(), "unusable queue entry: removed");
                let _ = self.ack_raw(account, &e.id).await;
                None
            }
        }
    }

    async fn ack_raw(&self, account: &str, id: &str) -> Result<(), StoreError> {
        self.ack_ids(account, std::slice::from_ref(&id)).await
    }

    /// XACK + XDEL of many entries of one stream: one round trip.
    async fn ack_ids<S: AsRef<str>>(&self, account: &str, ids: &[S]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = self.stream(account);
        let mut p = redis::pipe();
        p.atomic().cmd("XACK").arg(&key).arg(&self.group);
        for id in ids {
            p.arg(id.as_ref());
        }
        p.ignore().cmd("XDEL").arg(&key);
        for id in ids {
            p.arg(id.as_ref());
        }
        p.ignore();
        let mut c = self.conn().await?;
        let r: Result<(), _> = p.query_async(&mut c).await;
        self.note(r)
    }

    /// Keep the entries in flight from looking idle (see [`HEARTBEAT_LUA`]).
    async fn heartbeat(&self) {
        let held: Vec<(String, Vec<String>)> = lock(&self.local)
            .iter()
            .filter(|(_, l)| !l.out.is_empty())
            .map(|(a, l)| (a.clone(), l.out.iter().cloned().collect()))
            .collect();
        for (account, ids) in held {
            let Ok(mut c) = self.conn().await else { return };
            let mut inv = self.heartbeat.prepare_invoke();
            inv.key(self.stream(&account)).arg(&self.group).arg(&self.consumer);
            for id in &ids {
                inv.arg(id);
            }
            let r: Result<Value, _> = inv.invoke_async(&mut c).await;
            if let Err(e) = self.note(r) {
                tracing::debug!(account, error = %e, "heartbeat failed");
            }
        }
    }

    /// Replay acks that failed while Redis was away.
    async fn replay_acks(&self) {
        let todo: Vec<(String, String)> = std::mem::take(&mut *lock(&self.unacked));
        let mut by_account: HashMap<String, Vec<String>> = HashMap::new();
        for (account, id) in todo {
            by_account.entry(account).or_default().push(id);
        }
        let mut left = Vec::new();
        for (account, ids) in by_account {
            for chunk in ids.chunks(ACK_CHUNK) {
                if self.ack_ids(&account, chunk).await.is_err() {
                    left.extend(chunk.iter().map(|id| (account.clone(), id.clone())));
                }
            }
        }
        if !left.is_empty() {
            lock(&self.unacked).extend(left);
        }
    }

    /// Up to `max` items: this replica's retries first (one script call each: rare), then new
    /// entries, all in one XREADGROUP.
    async fn next_many(&self, account: &str, max: usize) -> Result<Vec<(DeliveryId, Delivery)>, StoreError> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        self.ensure_group(account, false).await?;
        if !lock(&self.local).get(account).is_some_and(|l| l.own_loaded) {
            self.load_own(account).await?;
        }
        self.autoclaim(account).await?;
        while out.len() < max {
            match self.next_retry(account).await {
                Ok(Some(item)) => out.push(item),
                Ok(None) => break,
                // Handed out already (in `out` locally): return them, they must be settled.
                Err(_) if !out.is_empty() => return Ok(out),
                Err(e) => return Err(e),
            }
        }
        while out.len() < max {
            // No BLOCK: the connection is shared (multiplexed); the delivery loop polls.
            let cmd = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.group)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(max - out.len())
                .arg("STREAMS")
                .arg(self.stream(account))
                .arg(">")
                .clone();
            let entries: Vec<StreamId> = match self.read_group(account, &cmd).await {
                Ok(reply) => reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect(),
                Err(_) if !out.is_empty() => return Ok(out),
                Err(e) => return Err(e),
            };
            if entries.is_empty() {
                break;
            }
            let before = out.len();
            for e in entries {
                if let Some(item) = self.hand_out(account, e).await {
                    out.push(item);
                }
            }
            // Only unusable entries (dropped): read on; otherwise one round trip is enough.
            if out.len() > before {
                break;
            }
        }
        Ok(out)
    }
}

/// PING every second: keeps `up` current for /readyz and the gauge, reconnects, replays acks;
/// every quarter of the claim idle time, heartbeats the entries in flight.
async fn health(store: Weak<RedisStore>) {
    let mut last_beat = Instant::now();
    loop {
        let Some(s) = store.upgrade() else { return };
        let checked = s.link.check().await;
        let ok = checked.is_ok();
        let was = s.up.swap(ok, Ordering::Relaxed);
        let reason = checked.err();
        let changed = *lock(&s.down_reason) != reason;
        if ok != was || changed {
            match &reason {
                None => tracing::info!(consumer = %s.consumer, "redis store up"),
                Some(e) => tracing::warn!(consumer = %s.consumer, error = %e, "redis store down"),
            }
        }
        *lock(&s.down_reason) = reason;
        if ok && !lock(&s.unacked).is_empty() {
            s.replay_acks().await;
        }
        if ok && last_beat.elapsed() >= s.claim_idle / 4 {
            last_beat = Instant::now();
            s.heartbeat().await;
        }
        let every = HEALTH_EVERY.min(s.claim_idle / 4);
        drop(s);
        tokio::time::sleep(every).await;
    }
}

impl Store for RedisStore {
    fn put_correlation<'a>(
        &'a self,
        upstream: &'a str,
        upstream_id: &'a str,
        c: Correlation,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let cmd = redis::cmd("SET")
                .arg(self.corr_key(upstream, upstream_id))
                .arg(pack_correlation(&c))
                .arg("PX")
                .arg(self.ttl.as_millis().max(1) as u64)
                .clone();
            // The upstream already has the message: a failure here loses its receipt, so ride
            // out a short outage (a Redis restart) before giving up.
            let deadline = Instant::now() + PUT_RETRY_FOR;
            loop {
                let r = match self.conn().await {
                    Ok(mut conn) => {
                        // With `store.wait` a write fewer replicas took is written again (SET is
                        // idempotent) until they have it or the deadline passes.
                        let r: Result<(), _> = self.query_acked(&mut conn, &cmd).await;
                        self.note(r)
                    }
                    Err(e) => Err(e),
                };
                match r {
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    r => return r,
                }
            }
        })
    }

    fn take_correlation<'a>(
        &'a self,
        upstream: &'a str,
        candidates: &'a [String],
        remove: bool,
    ) -> BoxFuture<'a, Result<Option<Correlation>, StoreError>> {
        Box::pin(async move {
            let Some(first) = candidates.first() else { return Ok(None) };
            if candidates.len() > 1 && self.link.is_cluster() {
                // The candidates' keys are in different slots: one at a time.
                for c in candidates {
                    if let Some(found) =
                        self.take_correlation(upstream, std::slice::from_ref(c), remove).await?
                    {
                        return Ok(Some(found));
                    }
                }
                return Ok(None);
            }
            let grace = TAKEN_GRACE.min(self.ttl).as_millis().max(1) as u64;
            // Nearly every receipt matches its best candidate: one plain GET (GETEX for a final
            // receipt, which sets the grace expiry) costs Redis a fraction of a script call. A
            // miss, more candidates or an old hash record (WRONGTYPE) go to the script, which
            // looks at every candidate again.
            let mut cmd = redis::cmd(if remove { "GETEX" } else { "GET" });
            cmd.arg(self.corr_key(upstream, first));
            if remove {
                cmd.arg("PX").arg(grace);
            }
            let mut conn = self.conn().await?;
            let r: Result<Value, _> = cmd.query_async(&mut conn).await;
            match r {
                Ok(Value::Nil) if candidates.len() == 1 => return Ok(None),
                Ok(Value::Nil) => {}
                Err(e) if is_server_reply(&e) => {}
                r => return self.note(r.and_then(correlation_from)),
            }
            let mut inv = self.take.prepare_invoke();
            for id in candidates {
                inv.key(self.corr_key(upstream, id));
            }
            inv.arg(if remove { "1" } else { "0" }).arg(grace);
            let r: Result<Value, _> = inv.invoke_async(&mut conn).await;
            self.note(r.and_then(correlation_from))
        })
    }

    fn enqueue_within<'a>(
        &'a self,
        account: &'a str,
        d: Delivery,
        max: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.add(account, &d, max, None).await })
    }

    fn enqueue_final_within<'a>(
        &'a self,
        account: &'a str,
        d: Delivery,
        upstream: &'a str,
        upstream_id: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        // One script: the entry and the deletion happen together or not at all.
        Box::pin(async move { self.add(account, &d, max, Some(self.corr_key(upstream, upstream_id))).await })
    }

    fn next_for<'a>(
        &'a self,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Option<(DeliveryId, Delivery)>, StoreError>> {
        Box::pin(async move { Ok(self.next_many(account, 1).await?.pop()) })
    }

    fn next_batch<'a>(
        &'a self,
        account: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<(DeliveryId, Delivery)>, StoreError>> {
        Box::pin(self.next_many(account, max))
    }

    fn ack<'a>(&'a self, account: &'a str, id: DeliveryId) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let sid = unpack_id(id);
            if let Some(l) = lock(&self.local).get_mut(account) {
                l.out.remove(&sid);
            }
            let r = self.ack_raw(account, &sid).await;
            if r.is_err() {
                lock(&self.unacked).push((account.to_owned(), sid));
            }
            r
        })
    }

    fn ack_many<'a>(
        &'a self,
        account: &'a str,
        ids: &'a [DeliveryId],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let sids: Vec<String> = ids.iter().map(|id| unpack_id(*id)).collect();
            if let Some(l) = lock(&self.local).get_mut(account) {
                for sid in &sids {
                    l.out.remove(sid);
                }
            }
            let r = self.ack_ids(account, &sids).await;
            if r.is_err() {
                lock(&self.unacked).extend(sids.into_iter().map(|sid| (account.to_owned(), sid)));
            }
            r
        })
    }

    fn nack<'a>(&'a self, account: &'a str, id: DeliveryId) -> BoxFuture<'a, Result<(), StoreError>> {
        // Still pending on this consumer in Redis: only the local bookkeeping moves.
        let sid = unpack_id(id);
        if let Some(l) = lock(&self.local).get_mut(account) {
            if l.out.remove(&sid) && !l.retry.contains(&sid) {
                l.retry.push_front(sid);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn dead_letter<'a>(
        &'a self,
        account: &'a str,
        id: DeliveryId,
        reason: &'a str,
        keep: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let sid = unpack_id(id);
            let mut inv = self.dead.prepare_invoke();
            inv.key(self.stream(account)).key(self.dead_stream(account));
            inv.arg(&self.group).arg(&sid).arg(keep).arg(reason);
            let mut conn = self.conn().await?;
            let r: Result<i64, _> = inv.invoke_async(&mut conn).await;
            self.note(r)?;
            if let Some(l) = lock(&self.local).get_mut(account) {
                l.out.remove(&sid);
                l.retry.retain(|r| *r != sid);
            }
            Ok(())
        })
    }

    fn dead_letters<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move { self.run(redis::cmd("XLEN").arg(self.dead_stream(account))).await })
    }

    fn age_out<'a>(
        &'a self,
        account: &'a str,
        older_than: Duration,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let cutoff = now_ms.saturating_sub(older_than.as_millis() as u64);
            // Stream ids are the enqueue time in ms: everything below the cutoff is too old.
            self.run(redis::cmd("XTRIM").arg(self.stream(account)).arg("MINID").arg(cutoff)).await
        })
    }

    fn purge<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            let mut p = redis::pipe();
            p.atomic()
                .cmd("XLEN")
                .arg(self.stream(account))
                .cmd("DEL")
                .arg(self.stream(account))
                .arg(self.dead_stream(account))
                .ignore();
            let mut conn = self.conn().await?;
            let r: Result<(usize,), _> = p.query_async(&mut conn).await;
            let (n,) = self.note(r)?;
            lock(&self.local).remove(account);
            Ok(n)
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn pending<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            // Acked entries are deleted, so the stream's length is what the account is owed.
            let n: usize = self.run(redis::cmd("XLEN").arg(self.stream(account))).await?;
            Ok(n)
        })
    }

    /// What this replica has handed out and not settled: the drain waits for these only;
    /// queued entries and retries are safe in Redis and another replica (or this one on its
    /// return) serves them.
    fn pending_total(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        let n = lock(&self.local).values().map(|l| l.out.len()).sum();
        Box::pin(std::future::ready(Ok(n)))
    }

    fn acquire_permit<'a>(
        &'a self,
        carrier: &'a str,
        max: u32,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<u32>, StoreError>> {
        Box::pin(permits::acquire(self, carrier, max, holder, ttl))
    }

    fn renew_permit<'a>(
        &'a self,
        carrier: &'a str,
        slot: u32,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(permits::renew(self, carrier, slot, holder, ttl))
    }

    fn release_permit<'a>(
        &'a self,
        carrier: &'a str,
        slot: u32,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(permits::release(self, carrier, slot, holder))
    }

    /// Not counted on Redis (it would take a SCAN of every key): always 0.
    fn correlations(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(std::future::ready(Ok(0)))
    }

    fn healthy(&self) -> bool {
        self.is_up()
    }

    fn down_reason(&self) -> Option<String> {
        if self.is_up() {
            return None;
        }
        lock(&self.down_reason).clone()
    }

    fn failovers(&self) -> u64 {
        self.link.failovers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations_pack_and_unpack() {
        for (account, our_id) in [("acc", "1f3a"), ("a:b", "x:y:"), ("", ""), ("ünï", "9")] {
            let c = Correlation {
                account: account.into(),
                our_id: our_id.into(),
                submitted_at_ms: 1_732_560_000_123,
                registered_delivery: 0x11,
            };
            let packed = pack_correlation(&c);
            assert_eq!(unpack_correlation(packed.as_bytes()), Some(c.clone()));
            let taken = format!("T{}", &packed[1..]);
            assert_eq!(unpack_correlation(taken.as_bytes()), Some(c));
        }
        for bad in ["", "L", "X1:1:1:ab", "L1:1:5:ab", "Lx:1:1:ab", "L1:1:1", "L1:300:1:ab"] {
            assert_eq!(unpack_correlation(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(unpack_correlation(&[b'L', 0xff]), None);
    }

    #[test]
    fn stream_ids_pack_and_unpack() {
        for id in ["0-0", "1732560000000-0", "1732560000000-4194303", "4398046511103-7"] {
            let n = pack_id(id).unwrap();
            assert_eq!(unpack_id(n), id);
        }
        assert!(pack_id("1-4194304").is_none());
        assert!(pack_id("4398046511104-0").is_none());
        assert!(pack_id("x-1").is_none() && pack_id("12").is_none());
        assert!(pack_id("5-1").unwrap() < pack_id("5-2").unwrap());
        assert!(pack_id("5-4000000").unwrap() < pack_id("6-0").unwrap());
    }
}
