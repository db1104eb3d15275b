//! `smpp.cache`'s storage: in process with a memory store, in Redis with a Redis store, so that
//! every replica sees the same keys (the document keeps cross-message state there).
//!
//! Redis keys are `<store.key_prefix>cache:{<key>}`: under the store's prefix, and the key itself
//! is the hash tag, so under Redis Cluster each key lands on a slot of its own (every operation
//! is on one key). This module keeps its own connection (the store's kind: one instance, Sentinel
//! or Cluster, crate::store::redis::Link) rather than widening the `Store` trait for four commands.

use crate::store::redis::{Link, Target};
use smsc_api::smscd_config::StoreConfig;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One cache operation.
#[derive(Clone, Debug)]
pub enum Op {
    Get(String),
    Set(String, String, Option<Duration>),
    Incr(String, i64, Option<Duration>),
    Delete(String),
}

/// What an operation gives back to Python.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheValue {
    None,
    Str(String),
    Int(i64),
    Bool(bool),
}

pub enum Cache {
    Memory(Mutex<HashMap<String, (String, Option<Instant>)>>),
    Redis { link: Option<Box<Link>>, prefix: String },
}

/// Memory: keys kept at most this many; past it expired ones are swept, then the op refused.
const MEMORY_MAX_KEYS: usize = 1_000_000;

impl Cache {
    pub fn new(store: &StoreConfig) -> Cache {
        match store {
            StoreConfig::Memory { .. } => Cache::Memory(Mutex::new(HashMap::new())),
            StoreConfig::Redis { url, sentinel, cluster, key_prefix, .. } => {
                let target = Target::configured(url, sentinel.as_ref(), cluster.as_ref());
                let link = match target {
                    Ok(t) => Some(Box::new(Link::new(t))),
                    Err(e) => {
                        tracing::error!(error = %e, "smpp.cache: bad Redis store config; cache operations will fail");
                        None
                    }
                };
                Cache::Redis { link, prefix: format!("{key_prefix}cache:") }
            }
        }
    }

    /// Answer at once when the storage is in process (None: use [`Cache::run`]).
    pub fn try_now(&self, op: &Op) -> Option<Result<CacheValue, String>> {
        let Cache::Memory(map) = self else { return None };
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let live = |e: &(String, Option<Instant>)| e.1.is_none_or(|t| t > now);
        let expiry = |ttl: &Option<Duration>| ttl.map(|t| now + t);
        if m.len() >= MEMORY_MAX_KEYS {
            m.retain(|_, e| live(e));
        }
        let full = m.len() >= MEMORY_MAX_KEYS;
        Some(match op {
            Op::Get(k) => {
                Ok(m.get(k).filter(|e| live(e)).map_or(CacheValue::None, |e| CacheValue::Str(e.0.clone())))
            }
            Op::Set(k, v, ttl) => {
                if full && !m.contains_key(k) {
                    return Some(Err(format!("memory cache full ({MEMORY_MAX_KEYS} keys)")));
                }
                m.insert(k.clone(), (v.clone(), expiry(ttl)));
                Ok(CacheValue::Bool(true))
            }
            Op::Incr(k, by, ttl) => {
                let current = m.get(k).filter(|e| live(e)).cloned();
                let (n, exp) = match current {
                    Some((v, exp)) => match v.parse::<i64>() {
                        Ok(n) => match n.checked_add(*by) {
                            Some(n) => (n, exp),
                            None => return Some(Err(format!("incrementing `{k}` overflows"))),
                        },
                        Err(_) => return Some(Err(format!("value of `{k}` is not an integer"))),
                    },
                    None => {
                        if full {
                            return Some(Err(format!("memory cache full ({MEMORY_MAX_KEYS} keys)")));
                        }
                        (*by, expiry(ttl))
                    }
                };
                m.insert(k.clone(), (n.to_string(), exp));
                Ok(CacheValue::Int(n))
            }
            Op::Delete(k) => Ok(CacheValue::Bool(m.remove(k).is_some_and(|e| live(&e)))),
        })
    }

    /// Run `op` against Redis.
    pub async fn run(&self, op: Op) -> Result<CacheValue, String> {
        let Cache::Redis { link, prefix } = self else {
            return self.try_now(&op).unwrap_or(Ok(CacheValue::None));
        };
        let Some(link) = link else { return Err("no usable Redis store config".into()) };
        let mut c = link.conn().await.map_err(|e| e.to_string())?;
        let key = |k: &str| format!("{prefix}{{{k}}}");
        let r: redis::RedisResult<CacheValue> = match op {
            Op::Get(k) => redis::cmd("GET")
                .arg(key(&k))
                .query_async::<Option<String>>(&mut c)
                .await
                .map(|v| v.map_or(CacheValue::None, CacheValue::Str)),
            Op::Set(k, v, ttl) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key(&k)).arg(v);
                if let Some(t) = ttl {
                    cmd.arg("PX").arg(t.as_millis().max(1) as u64);
                }
                cmd.query_async::<()>(&mut c).await.map(|_| CacheValue::Bool(true))
            }
            Op::Incr(k, by, ttl) => {
                let k = key(&k);
                let mut p = redis::pipe();
                p.atomic().cmd("INCRBY").arg(&k).arg(by);
                if let Some(t) = ttl {
                    // NX: the TTL is set when the counter is made, not pushed back by each incr.
                    p.cmd("PEXPIRE").arg(&k).arg(t.as_millis().max(1) as u64).arg("NX").ignore();
                }
                p.query_async::<(i64,)>(&mut c).await.map(|(n,)| CacheValue::Int(n))
            }
            Op::Delete(k) => redis::cmd("DEL")
                .arg(key(&k))
                .query_async::<i64>(&mut c)
                .await
                .map(|n| CacheValue::Bool(n > 0)),
        };
        r.map_err(|e| {
            link.saw(&e);
            e.to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_ops() {
        let c = Cache::new(&StoreConfig::default());
        let now = |op: Op| c.try_now(&op).expect("memory answers at once");
        assert_eq!(now(Op::Get("a".into())), Ok(CacheValue::None));
        assert_eq!(now(Op::Incr("a".into(), 2, None)), Ok(CacheValue::Int(2)));
        assert_eq!(now(Op::Incr("a".into(), 3, None)), Ok(CacheValue::Int(5)));
        assert_eq!(now(Op::Get("a".into())), Ok(CacheValue::Str("5".into())));
        assert_eq!(now(Op::Set("b".into(), "x".into(), None)), Ok(CacheValue::Bool(true)));
        assert!(now(Op::Incr("b".into(), 1, None)).is_err());
        assert_eq!(now(Op::Delete("b".into())), Ok(CacheValue::Bool(true)));
        assert_eq!(now(Op::Delete("b".into())), Ok(CacheValue::Bool(false)));
        assert_eq!(
            now(Op::Set("t".into(), "y".into(), Some(Duration::from_nanos(1)))),
            Ok(CacheValue::Bool(true))
        );
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(now(Op::Get("t".into())), Ok(CacheValue::None));
    }
}
