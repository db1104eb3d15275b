//! [`MessageQueue`] on Redis, shared by every replica: any replica drains it, and one that dies
//! while sending gives its messages up to another when their lease ends.
//!
//! Keys (`P` = `store.key_prefix`; the `{account}` hash tag keeps one account's keys in one
//! slot, so every script below touches one slot, as Redis Cluster wants):
//! - `P:saf:{A}:due`: sorted set of the account's held ids, scored by due time (unix ms). A
//!   claim moves the score to the lease's end, so the id is out of reach of other claimers
//!   until then and comes back by itself if the claimer never reports.
//! - `P:saf:{A}:m:<id>`: hash `pdu` (the encoded submit_sm), `sub`, `due`, `exp` (unix ms),
//!   `att` (attempts), `cl` (claimed until, unix ms), `rt` (route label); once final `st` (see
//!   [`Final::code`]) and `fin` (unix ms), the `pdu` dropped and the key expiring after
//!   `keep_final`. A relayed id (taken by an upstream, no final receipt yet) has `rl` (unix ms)
//!   and no `pdu`, expiring after `keep_relayed`.
//! - `P:saf:{A}:sub`: sorted set of the held ids by accepted time (the oldest one's age).
//! - `P:saf:{A}:routes`: hash route label -> held count (the per-route depth gauge).
//!
//! Each operation is one Lua script (atomic, one round trip). The claim script reads the hashes
//! of the ids it claims by name (built from the prefix, same slot) rather than from KEYS, since
//! which ids are due is only known inside the script; the batched relayed record does the same,
//! so one round trip covers a batch.

use super::queue::{Change, Final, Lookup, MessageQueue, Queued, Replacement, Stats};
use super::redis::RedisStore;
use super::StoreError;
use bytes::Bytes;
use futures::future::BoxFuture;
use redis::{Script, Value};
use std::sync::Arc;
use std::time::Duration;

/// KEYS: zset, hash, sub zset, routes. ARGV: max, id, due, submitted, route, then field/value
/// pairs. 1 added, 0 full, -1 id taken.
const PUT_LUA: &str = r#"
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('HSET', KEYS[2], unpack(ARGV, 6))
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('HINCRBY', KEYS[4], ARGV[5], 1)
return 1
"#;

/// Lua shared by the scripts that take a held message out of the queue: KEYS[1] zset, KEYS[2]
/// hash, KEYS[3] sub zset, KEYS[4] routes; `id`. Only when it is still held (has a `pdu`).
const UNHOLD_LUA: &str = r#"
local function unhold(id)
  local r = redis.call('HMGET', KEYS[2], 'pdu', 'rt')
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[3], id)
  if r[1] then
    redis.call('HDEL', KEYS[2], 'pdu')
    if r[2] and redis.call('HINCRBY', KEYS[4], r[2], -1) <= 0 then redis.call('HDEL', KEYS[4], r[2]) end
  end
end
"#;

/// KEYS: zset, sub zset. ARGV: now, lease end, max, hash key prefix. Flat reply, 7 per message:
/// id, pdu, sub, due, exp, att, rt.
const CLAIM_LUA: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local k = ARGV[4] .. id
  local r = redis.call('HMGET', k, 'pdu', 'sub', 'due', 'exp', 'att', 'rt', 'st')
  if r[1] and not r[7] then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', k, 'cl', ARGV[2])
    table.insert(out, id)
    for i = 1, 6 do table.insert(out, r[i] or '') end
  else
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  end
end
return out
"#;

/// KEYS: zset, hash. ARGV: id, due, attempts.
const RETRY_LUA: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('HEXISTS', KEYS[2], 'st') == 1 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], 'due', ARGV[2], 'att', ARGV[3], 'cl', 0)
return 1
"#;

/// KEYS: zset, hash, sub zset, routes. ARGV: id, state code, now, keep ms.
const FINISH_LUA: &str = r#"
unhold(ARGV[1])
redis.call('HSET', KEYS[2], 'st', ARGV[2], 'fin', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"#;

/// KEYS: zset, hash, sub zset, routes. ARGV: id, now, keep ms. A final state already there
/// (its receipt came first) stays.
const RELAYED_LUA: &str = r#"
unhold(ARGV[1])
if redis.call('HEXISTS', KEYS[2], 'st') == 1 then return 0 end
redis.call('HSET', KEYS[2], 'rl', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"#;

/// RELAYED_LUA for many ids at once, their hashes named from the prefix as in CLAIM_LUA. KEYS:
/// zset, sub zset, routes. ARGV: now, keep ms, hash key prefix, then the ids.
const RELAYED_MANY_LUA: &str = r#"
redis.call('ZREM', KEYS[1], unpack(ARGV, 4))
redis.call('ZREM', KEYS[2], unpack(ARGV, 4))
local held = {}
for i = 4, #ARGV do
  local k = ARGV[3] .. ARGV[i]
  local r = redis.call('HMGET', k, 'pdu', 'rt', 'st')
  if r[1] then
    redis.call('HDEL', k, 'pdu')
    if r[2] then held[r[2]] = (held[r[2]] or 0) + 1 end
  end
  if not r[3] then
    redis.call('HSET', k, 'rl', ARGV[1])
    redis.call('PEXPIRE', k, ARGV[2])
  end
end
for rt, n in pairs(held) do
  if redis.call('HINCRBY', KEYS[3], rt, -n) <= 0 then redis.call('HDEL', KEYS[3], rt) end
end
return 1
"#;

/// Ids per RELAYED_MANY_LUA call, at most (Lua's `unpack` has a stack limit of about 8000).
const RELAYED_CHUNK: usize = 1000;

/// KEYS: hash. ARGV: now, keep ms. [`RELAYED_LUA`] for an id never held: nothing to take out
/// of the queue; a final state already there (its receipt came first) stays.
const RELAYED_AT_ONCE_LUA: &str = r#"
if redis.call('HEXISTS', KEYS[1], 'st') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'rl', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// KEYS: zset, hash, sub zset, routes. ARGV: id, now, keep ms, then (replace only) pdu, due or
/// '', exp or ''. 1 done, 0 unknown, 2 ended (or relayed: with the upstream, out of reach),
/// 3 in flight.
const CHANGE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local r = redis.call('HMGET', KEYS[2], 'st', 'cl', 'pdu')
if r[1] or not r[3] then return 2 end
if tonumber(r[2] or '0') > tonumber(ARGV[2]) then return 3 end
if ARGV[4] == nil then
  unhold(ARGV[1])
  redis.call('HSET', KEYS[2], 'st', 'C', 'fin', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
redis.call('HSET', KEYS[2], 'pdu', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], 'due', ARGV[5])
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'exp', ARGV[6]) end
return 1
"#;

pub struct RedisQueue {
    store: Arc<RedisStore>,
    prefix: String,
    put: Script,
    claim: Script,
    retry: Script,
    finish: Script,
    relayed: Script,
    relayed_many: Script,
    relayed_at_once: Script,
    change: Script,
}

impl RedisQueue {
    /// On `store`'s connection.
    pub fn new(store: Arc<RedisStore>, key_prefix: &str) -> RedisQueue {
        RedisQueue {
            store,
            prefix: key_prefix.to_owned(),
            put: Script::new(PUT_LUA),
            claim: Script::new(CLAIM_LUA),
            retry: Script::new(RETRY_LUA),
            finish: Script::new(&format!("{UNHOLD_LUA}{FINISH_LUA}")),
            relayed: Script::new(&format!("{UNHOLD_LUA}{RELAYED_LUA}")),
            relayed_many: Script::new(RELAYED_MANY_LUA),
            relayed_at_once: Script::new(RELAYED_AT_ONCE_LUA),
            change: Script::new(&format!("{UNHOLD_LUA}{CHANGE_LUA}")),
        }
    }

    fn due_key(&self, account: &str) -> String {
        format!("{}:saf:{{{account}}}:due", self.prefix)
    }

    fn sub_key(&self, account: &str) -> String {
        format!("{}:saf:{{{account}}}:sub", self.prefix)
    }

    fn routes_key(&self, account: &str) -> String {
        format!("{}:saf:{{{account}}}:routes", self.prefix)
    }

    /// The four keys of the scripts that change one message.
    fn keys(&self, inv: &mut redis::ScriptInvocation<'_>, account: &str, id: &str) {
        inv.key(self.due_key(account))
            .key(self.msg_key(account, id))
            .key(self.sub_key(account))
            .key(self.routes_key(account));
    }

    fn msg_prefix(&self, account: &str) -> String {
        format!("{}:saf:{{{account}}}:m:", self.prefix)
    }

    fn msg_key(&self, account: &str, id: &str) -> String {
        format!("{}{id}", self.msg_prefix(account))
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.store.conn().await?;
        let r = inv.invoke_async(&mut conn).await;
        self.store.note(r)
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.store.conn().await?;
        let r = cmd.query_async(&mut conn).await;
        self.store.note(r)
    }

    async fn changed(
        &self,
        mut inv: redis::ScriptInvocation<'_>,
        account: &str,
        id: &str,
    ) -> Result<Change, StoreError> {
        self.keys(&mut inv, account, id);
        let code: i64 = self.invoke(inv).await?;
        Ok(match code {
            1 => Change::Done,
            2 => Change::Ended,
            3 => Change::InFlight,
            _ => Change::Unknown,
        })
    }
}

fn num(v: &Value) -> u64 {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        Value::Int(i) => u64::try_from(*i).unwrap_or(0),
        _ => 0,
    }
}

fn bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A message from `id` and the HMGET reply `pdu, sub, due, exp, att, rt`.
fn message(id: String, f: &[Value]) -> Option<Queued> {
    let [pdu, sub, due, exp, att, rt, ..] = f else { return None };
    Some(Queued {
        id,
        submit: bytes(pdu).filter(|b| !b.is_empty())?,
        submitted_ms: num(sub),
        due_ms: num(due),
        expires_ms: num(exp),
        attempts: u32::try_from(num(att)).unwrap_or(u32::MAX),
        // Held before routes were recorded: `default`.
        route: text(rt).filter(|r| !r.is_empty()).unwrap_or_else(|| "default".to_owned()),
    })
}

impl MessageQueue for RedisQueue {
    fn put<'a>(
        &'a self,
        account: &'a str,
        m: &'a Queued,
        max: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut inv = self.put.prepare_invoke();
            self.keys(&mut inv, account, &m.id);
            inv.arg(max.min(i64::MAX as usize) as i64).arg(&m.id).arg(m.due_ms);
            inv.arg(m.submitted_ms).arg(&m.route);
            inv.arg("rt").arg(&m.route).arg("pdu").arg(m.submit.as_ref()).arg("sub").arg(m.submitted_ms);
            inv.arg("due")
                .arg(m.due_ms)
                .arg("exp")
                .arg(m.expires_ms)
                .arg("att")
                .arg(m.attempts)
                .arg("cl")
                .arg(0);
            match self.invoke::<i64>(inv).await? {
                1 => Ok(()),
                0 => Err(StoreError::Full),
                _ => Err(StoreError::Unavailable(format!("message id {} already held", m.id))),
            }
        })
    }

    fn claim<'a>(
        &'a self,
        account: &'a str,
        now_ms: u64,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Queued>, StoreError>> {
        Box::pin(async move {
            let until = now_ms.saturating_add(lease.as_millis() as u64);
            let mut inv = self.claim.prepare_invoke();
            inv.key(self.due_key(account)).key(self.sub_key(account));
            inv.arg(now_ms).arg(until).arg(max).arg(self.msg_prefix(account));
            let flat: Vec<Value> = self.invoke(inv).await?;
            Ok(flat
                .chunks(7)
                .filter_map(|c| {
                    let (id, rest) = c.split_first()?;
                    message(text(id)?, rest)
                })
                .collect())
        })
    }

    fn retry<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        due_ms: u64,
        attempts: u32,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut inv = self.retry.prepare_invoke();
            inv.key(self.due_key(account)).key(self.msg_key(account, id));
            inv.arg(id).arg(due_ms).arg(attempts);
            self.invoke::<i64>(inv).await.map(|_| ())
        })
    }

    fn finish<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        state: Final,
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut inv = self.finish.prepare_invoke();
            self.keys(&mut inv, account, id);
            inv.arg(id).arg(state.code()).arg(now_ms).arg(keep.as_millis().max(1) as u64);
            self.invoke::<i64>(inv).await.map(|_| ())
        })
    }

    fn relayed<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut inv = self.relayed.prepare_invoke();
            self.keys(&mut inv, account, id);
            inv.arg(id).arg(now_ms).arg(keep.as_millis().max(1) as u64);
            self.invoke::<i64>(inv).await.map(|_| ())
        })
    }

    fn relayed_many<'a>(
        &'a self,
        account: &'a str,
        ids: &'a [String],
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            for chunk in ids.chunks(RELAYED_CHUNK) {
                let mut inv = self.relayed_many.prepare_invoke();
                inv.key(self.due_key(account)).key(self.sub_key(account)).key(self.routes_key(account));
                inv.arg(now_ms).arg(keep.as_millis().max(1) as u64).arg(self.msg_prefix(account));
                for id in chunk {
                    inv.arg(id);
                }
                self.invoke::<i64>(inv).await?;
            }
            Ok(())
        })
    }

    fn relayed_at_once<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut inv = self.relayed_at_once.prepare_invoke();
            inv.key(self.msg_key(account, id)).arg(now_ms).arg(keep.as_millis().max(1) as u64);
            self.invoke::<i64>(inv).await.map(|_| ())
        })
    }

    fn lookup<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lookup>, StoreError>> {
        Box::pin(async move {
            let cmd = redis::cmd("HMGET")
                .arg(self.msg_key(account, id))
                .arg(&["pdu", "sub", "due", "exp", "att", "rt", "cl", "st", "fin", "rl"])
                .clone();
            let f: Vec<Value> = self.query(&cmd).await?;
            if let Some(state) = f.get(7).and_then(text).and_then(|s| Final::from_code(&s)) {
                return Ok(Some(Lookup::Ended { state, at_ms: f.get(8).map_or(0, num) }));
            }
            let claimed = f.get(6).map_or(0, num) > now_ms;
            if let Some(message) = message(id.to_owned(), &f) {
                return Ok(Some(Lookup::Waiting { message, claimed }));
            }
            Ok(f.get(9).and_then(bytes).map(|_| Lookup::Relayed { at_ms: f.get(9).map_or(0, num) }))
        })
    }

    fn cancel<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<Change, StoreError>> {
        Box::pin(async move {
            let mut inv = self.change.prepare_invoke();
            inv.arg(id).arg(now_ms).arg(keep.as_millis().max(1) as u64);
            self.changed(inv, account, id).await
        })
    }

    fn replace<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        r: &'a Replacement,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Change, StoreError>> {
        Box::pin(async move {
            let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
            let mut inv = self.change.prepare_invoke();
            inv.arg(id).arg(now_ms).arg(0).arg(r.submit.as_ref()).arg(opt(r.due_ms)).arg(opt(r.expires_ms));
            self.changed(inv, account, id).await
        })
    }

    fn depth<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<(usize, Option<u64>), StoreError>> {
        Box::pin(async move {
            let key = self.due_key(account);
            let n: usize = self.query(redis::cmd("ZCARD").arg(&key)).await?;
            let first: Vec<(String, f64)> =
                self.query(redis::cmd("ZRANGE").arg(&key).arg(0).arg(0).arg("WITHSCORES")).await?;
            Ok((n, first.first().map(|(_, s)| *s as u64)))
        })
    }

    fn stats<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Stats, StoreError>> {
        Box::pin(async move {
            let due = self.due_key(account);
            let mut pipe = redis::pipe();
            pipe.cmd("ZCARD").arg(&due);
            pipe.cmd("ZRANGE").arg(&due).arg(0).arg(0).arg("WITHSCORES");
            pipe.cmd("ZRANGE").arg(self.sub_key(account)).arg(0).arg(0).arg("WITHSCORES");
            pipe.cmd("HGETALL").arg(self.routes_key(account));
            let mut conn = self.store.conn().await?;
            let r = pipe.query_async(&mut conn).await;
            type Reply =
                (usize, Vec<(String, f64)>, Vec<(String, f64)>, std::collections::HashMap<String, i64>);
            let (held, first, oldest, routes): Reply = self.store.note(r)?;
            let mut by_route: Vec<(String, usize)> = routes
                .into_iter()
                .filter_map(|(r, n)| usize::try_from(n).ok().filter(|n| *n > 0).map(|n| (r, n)))
                .collect();
            by_route.sort();
            Ok(Stats {
                held,
                first_due_ms: first.first().map(|(_, s)| *s as u64),
                oldest_ms: oldest.first().map(|(_, s)| *s as u64),
                by_route,
            })
        })
    }

    fn list<'a>(&'a self, account: &'a str, max: usize) -> BoxFuture<'a, Result<Vec<Queued>, StoreError>> {
        Box::pin(async move {
            if max == 0 {
                return Ok(Vec::new());
            }
            let ids: Vec<String> =
                self.query(redis::cmd("ZRANGE").arg(self.due_key(account)).arg(0).arg(max - 1)).await?;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET")
                    .arg(self.msg_key(account, id))
                    .arg(&["pdu", "sub", "due", "exp", "att", "rt"]);
            }
            let mut conn = self.store.conn().await?;
            let r = pipe.query_async(&mut conn).await;
            let rows: Vec<Vec<Value>> = self.store.note(r)?;
            Ok(ids.into_iter().zip(rows).filter_map(|(id, f)| message(id, &f)).collect())
        })
    }
}
