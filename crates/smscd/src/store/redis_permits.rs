//! Bind permits on Redis (see `crate::permits` for what they are for).
//!
//! Keys: `P:permit:{<carrier>}:<slot>` for slot 0..max, a string holding the holder's name with a
//! `PX` expiry of the permit's ttl. The carrier (`system_id@host:port`) is the hash tag, so every
//! slot of one carrier lives in one Redis Cluster slot and a script may touch them all. Each
//! operation is one script, so two replicas never take the same slot: acquiring is `SET NX` on the
//! first free slot; renewing extends the holder's own key, or takes it back when it expired and
//! nobody took it; releasing deletes it only when the holder still has it.

use super::redis::RedisStore;
use super::StoreError;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// KEYS: every slot's key, slot 0 first. ARGV: holder, ttl in ms. Returns the slot taken (the
/// holder's own one first), or -1 when every slot is held.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    redis.call('PEXPIRE', k, ARGV[2])
    return i - 1
  end
end
for i, k in ipairs(KEYS) do
  if redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) then return i - 1 end
end
return -1
"#,
    )
});

/// KEYS[1]: the slot's key. ARGV: holder, ttl in ms. 1 when the holder has it (renewed or taken
/// back), 0 when another holder has it.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// KEYS[1]: the slot's key. ARGV[1]: holder. Deletes it when the holder still has it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

fn key(prefix: &str, carrier: &str, slot: u32) -> String {
    format!("{prefix}:permit:{{{carrier}}}:{slot}")
}

fn ms(ttl: Duration) -> u64 {
    ttl.as_millis().clamp(1, u128::from(u32::MAX)) as u64
}

pub(super) async fn acquire(
    store: &RedisStore,
    carrier: &str,
    max: u32,
    holder: &str,
    ttl: Duration,
) -> Result<Option<u32>, StoreError> {
    let mut inv = ACQUIRE.prepare_invoke();
    for slot in 0..max {
        inv.key(key(store.prefix(), carrier, slot));
    }
    inv.arg(holder).arg(ms(ttl));
    let mut conn = store.conn().await?;
    let r: Result<i64, _> = inv.invoke_async(&mut conn).await;
    Ok(u32::try_from(store.note(r)?).ok())
}

pub(super) async fn renew(
    store: &RedisStore,
    carrier: &str,
    slot: u32,
    holder: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let mut inv = RENEW.prepare_invoke();
    inv.key(key(store.prefix(), carrier, slot)).arg(holder).arg(ms(ttl));
    let mut conn = store.conn().await?;
    let r: Result<i64, _> = inv.invoke_async(&mut conn).await;
    Ok(store.note(r)? == 1)
}

pub(super) async fn release(
    store: &RedisStore,
    carrier: &str,
    slot: u32,
    holder: &str,
) -> Result<(), StoreError> {
    let mut inv = RELEASE.prepare_invoke();
    inv.key(key(store.prefix(), carrier, slot)).arg(holder);
    let mut conn = store.conn().await?;
    let r: Result<i64, _> = inv.invoke_async(&mut conn).await;
    store.note(r).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_of_a_carrier_shares_one_hash_tag() {
        assert_eq!(key("smsc", "relay@10.0.0.1:2775", 3), "smsc:permit:{relay@10.0.0.1:2775}:3");
    }
}
