//! What the HTTP API remembers about each message part it accepted: who sent it where, its
//! state (for `GET /v1/messages/{id}`), and where its receipt goes (a per-message callback).
//! Written before the part is dispatched, so a receipt can never arrive before its record; kept
//! for the store's `ttl`.
//!
//! In the process with `store: memory`; in Redis with `store: redis` (any replica answers a
//! GET and sends a receipt's webhook). Redis keys (`P` = `store.key_prefix`):
//! `P:http:{<account>}:m:<id>`, a JSON string with `PX ttl`; the `{account}` hash tag keeps an
//! account's keys in one Redis Cluster slot. The same redis-rs client as store/redis.rs, on a
//! connection of its own so these keys stay out of that module.

use crate::store::redis::{Conn, Link, Target};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use smsc_api::smscd_config::StoreConfig;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a message's receipts are sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Callback {
    /// POSTed as JSON to this URL.
    Json { url: String },
    /// Kannel's dlr-url: a GET of this URL with its `%` placeholders filled, for the events
    /// `mask` (dlr-mask) asks for.
    Kannel { url: String, mask: u8 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub account: String,
    pub from: String,
    pub to: String,
    /// This part's number and the message's part count (1 and 1 for a short message).
    pub part: u8,
    pub parts: u8,
    /// accepted, failed, enroute, delivered, expired, deleted, undeliverable, rejected, unknown.
    pub state: String,
    pub submitted_at_ms: u64,
    pub updated_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,
    /// The receipt's `err` code, when one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_error: Option<String>,
}

pub enum Records {
    Memory(Mutex<MemoryRecords>),
    Redis {
        /// The store's own kind of connection (one instance, Sentinel or Cluster).
        link: Box<Link>,
        prefix: String,
        ttl: Duration,
    },
}

/// Records the memory store keeps at most: the oldest go first beyond it (about 300 bytes
/// each), so a busy replica does not hold a `ttl` (72 h by default) of records in memory.
pub const MAX_MEMORY_RECORDS: usize = 1_000_000;

#[derive(Default)]
pub struct MemoryRecords {
    map: HashMap<(String, String), (Record, Instant)>,
    /// Keys in insertion order (all records live `ttl`, so also in expiry order).
    order: VecDeque<(String, String)>,
    ttl: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Records {
    /// Records beside the configured store.
    pub fn new(store: &StoreConfig) -> Result<Records, StoreError> {
        match store {
            StoreConfig::Memory { ttl } => {
                Ok(Records::Memory(Mutex::new(MemoryRecords { ttl: *ttl, ..Default::default() })))
            }
            StoreConfig::Redis { url, sentinel, cluster, key_prefix, ttl, .. } => {
                let target =
                    Target::configured(url, sentinel.as_ref(), cluster.as_ref()).map_err(unavailable)?;
                // Connected on first use: smscd starts while Redis is away, like the store.
                Ok(Records::Redis {
                    link: Box::new(Link::new(target)),
                    prefix: key_prefix.clone(),
                    ttl: *ttl,
                })
            }
        }
    }

    async fn conn(link: &Link) -> Result<Conn, StoreError> {
        link.conn().await.map_err(unavailable)
    }

    fn key(prefix: &str, account: &str, id: &str) -> String {
        format!("{prefix}:http:{{{account}}}:m:{id}")
    }

    pub async fn put_many(&self, records: &[Record]) -> Result<(), StoreError> {
        match self {
            Records::Memory(m) => {
                let mut m = lock(m);
                let now = Instant::now();
                let exp = now + m.ttl;
                for r in records {
                    let key = (r.account.clone(), r.id.clone());
                    if m.map.insert(key.clone(), (r.clone(), exp)).is_none() {
                        m.order.push_back(key);
                    }
                }
                // Expired and over-the-bound records go from the front, a few per write.
                while let Some(front) = m.order.front() {
                    let expired = m.map.get(front).is_none_or(|(_, e)| *e <= now);
                    if !expired && m.map.len() <= MAX_MEMORY_RECORDS {
                        break;
                    }
                    if let Some(k) = m.order.pop_front() {
                        m.map.remove(&k);
                    }
                }
                Ok(())
            }
            Records::Redis { link, prefix, ttl } => {
                let mut pipe = redis::pipe();
                for r in records {
                    let v = serde_json::to_string(r).map_err(unavailable)?;
                    pipe.cmd("SET")
                        .arg(Self::key(prefix, &r.account, &r.id))
                        .arg(v)
                        .arg("PX")
                        .arg(ttl.as_millis() as u64)
                        .ignore();
                }
                let mut c = Self::conn(link).await?;
                pipe.query_async::<()>(&mut c).await.map_err(|e| {
                    link.saw(&e);
                    unavailable(e)
                })
            }
        }
    }

    pub async fn get(&self, account: &str, id: &str) -> Result<Option<Record>, StoreError> {
        match self {
            Records::Memory(m) => {
                let m = lock(m);
                let now = Instant::now();
                Ok(m.map
                    .get(&(account.to_owned(), id.to_owned()))
                    .filter(|(_, e)| *e > now)
                    .map(|(r, _)| r.clone()))
            }
            Records::Redis { link, prefix, .. } => {
                let mut c = Self::conn(link).await?;
                let v: Option<String> =
                    redis::cmd("GET").arg(Self::key(prefix, account, id)).query_async(&mut c).await.map_err(
                        |e| {
                            link.saw(&e);
                            unavailable(e)
                        },
                    )?;
                // A record we cannot read is no record (written by a newer version, say).
                Ok(v.and_then(|v| serde_json::from_str(&v).ok()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> Record {
        Record {
            id: id.into(),
            account: "a".into(),
            from: "1".into(),
            to: "2".into(),
            part: 1,
            parts: 1,
            state: "accepted".into(),
            submitted_at_ms: 1,
            updated_at_ms: 1,
            error: None,
            callback: Some(Callback::Kannel { url: "http://x/%d".into(), mask: 3 }),
            receipt_error: None,
        }
    }

    #[tokio::test]
    async fn memory_records_are_per_account() {
        let r = Records::new(&StoreConfig::Memory { ttl: Duration::from_secs(60) }).unwrap();
        r.put_many(&[rec("x")]).await.unwrap();
        assert_eq!(r.get("a", "x").await.unwrap(), Some(rec("x")));
        assert_eq!(r.get("b", "x").await.unwrap(), None, "another account's id is not found");
        // Expired records are gone, and leave the map as later ones are written.
        let short = Records::new(&StoreConfig::Memory { ttl: Duration::ZERO }).unwrap();
        short.put_many(&[rec("a")]).await.unwrap();
        assert_eq!(short.get("a", "a").await.unwrap(), None);
        short.put_many(&[rec("b")]).await.unwrap();
        if let Records::Memory(m) = &short {
            assert!(lock(m).map.len() <= 1 && lock(m).order.len() <= 1);
        }
        let json = serde_json::to_string(&rec("x")).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), rec("x"));
    }
}
