//! Where correlation records and queued deliveries (receipts, MO) live.
//!
//! The trait is shaped for a shared store (Redis) as much as for memory: every method is async
//! and fallible; records are plain data ([`Correlation`], [`Delivery`] holds an encoded PDU);
//! the delivery queue is consumer-style (`next_for` hands an item out without removing it; `ack`
//! removes it, `nack` puts it back), so a crash between handing out and acking loses nothing.
//! `next_batch` and `ack_many` do the same for many items at once: one round trip for a shared
//! store instead of one per item.
//! Correlations expire after the configured TTL.
//!
//! Queues are bounded (issue 14): `enqueue_within` refuses an item once the account owes `max`
//! ([`StoreError::Full`], which the upstream hears as ESME_RMSGQFUL), `age_out` drops items
//! older than the correlation TTL, `dead_letter` moves an item the ESME refused for good to the
//! account's dead-letter list (bounded), and `purge` forgets a removed account's queue. Both
//! stores behave the same (tests/redis_store.rs runs the same checks on each).

pub mod memory;
pub mod memory_queue;
pub mod queue;
pub mod redis;
pub mod redis_queue;

use bytes::Bytes;
use futures::future::BoxFuture;
use smsc_api::smscd_config::StoreConfig;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What we remember about a submit the upstream accepted, keyed by (upstream, upstream id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Correlation {
    pub account: String,
    /// Our id, the one the ESME got.
    pub our_id: String,
    /// Unix milliseconds of our submit_sm_resp.
    pub submitted_at_ms: u64,
    pub registered_delivery: u8,
}

/// A deliver_sm waiting for an account's receiver: the PDU body encoded with sequence 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub pdu: Bytes,
    /// Our message id for receipts, None for MO (logs only).
    pub our_id: Option<String>,
}

/// A handed-out delivery's ticket for `ack`/`nack`.
pub type DeliveryId = u64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The account's queue holds its maximum: nothing was written.
    #[error("queue full")]
    Full,
}

pub trait Store: Send + Sync + 'static {
    /// Remember a correlation; `upstream_id` is already normalised.
    fn put_correlation<'a>(
        &'a self,
        upstream: &'a str,
        upstream_id: &'a str,
        c: Correlation,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Look up the first of `candidates` (normalised ids, best first) under `upstream`; remove it
    /// when `remove` (a final receipt), keep it otherwise (an intermediate one).
    fn take_correlation<'a>(
        &'a self,
        upstream: &'a str,
        candidates: &'a [String],
        remove: bool,
    ) -> BoxFuture<'a, Result<Option<Correlation>, StoreError>>;

    /// Look up the first of `candidates` that is stored under `upstream`, without changing it:
    /// which candidate matched (an index into `candidates`) and the record.
    fn find_correlation<'a>(
        &'a self,
        upstream: &'a str,
        candidates: &'a [String],
    ) -> BoxFuture<'a, Result<Option<(usize, Correlation)>, StoreError>> {
        Box::pin(async move {
            for (i, id) in candidates.iter().enumerate() {
                if let Some(c) = self.take_correlation(upstream, std::slice::from_ref(id), false).await? {
                    return Ok(Some((i, c)));
                }
            }
            Ok(None)
        })
    }

    /// Queue a delivery for `account`.
    /// Queue `d` for `account`, without a bound (see [`Store::enqueue_within`]).
    fn enqueue<'a>(&'a self, account: &'a str, d: Delivery) -> BoxFuture<'a, Result<(), StoreError>> {
        self.enqueue_within(account, d, usize::MAX)
    }

    /// Queue `d` for `account` unless the account already owes `max` deliveries (queued and
    /// handed out): then [`StoreError::Full`] and nothing is written.
    fn enqueue_within<'a>(
        &'a self,
        account: &'a str,
        d: Delivery,
        max: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Queue a final receipt for `account` and forget the correlation it matched (`upstream`,
    /// `upstream_id` as [`find_correlation`](Store::find_correlation) found it), both or neither:
    /// until the receipt is queued a resent receipt still matches, and once it is, a resent one
    /// finds nothing and is dropped rather than delivered twice. Nothing is kept afterwards.
    fn enqueue_final<'a>(
        &'a self,
        account: &'a str,
        d: Delivery,
        upstream: &'a str,
        upstream_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.enqueue_final_within(account, d, upstream, upstream_id, usize::MAX)
    }

    /// [`Store::enqueue_final`] bounded like [`Store::enqueue_within`]: when full, neither the
    /// queue nor the correlation changes (a resent receipt still matches).
    fn enqueue_final_within<'a>(
        &'a self,
        account: &'a str,
        d: Delivery,
        upstream: &'a str,
        upstream_id: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Hand out the oldest queued delivery of `account`; it stays owed until `ack`/`nack`.
    fn next_for<'a>(
        &'a self,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Option<(DeliveryId, Delivery)>, StoreError>>;

    /// Hand out up to `max` of the oldest queued deliveries of `account`, like `next_for` each.
    fn next_batch<'a>(
        &'a self,
        account: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<(DeliveryId, Delivery)>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            while out.len() < max {
                match self.next_for(account).await {
                    Ok(Some(item)) => out.push(item),
                    Ok(None) => break,
                    // What was handed out already is owed: return it, the error shows next time.
                    Err(_) if !out.is_empty() => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
    }

    /// Delivered: forget it.
    fn ack<'a>(&'a self, account: &'a str, id: DeliveryId) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Delivered, all of them: forget them. Every id is tried; the last error is returned.
    fn ack_many<'a>(
        &'a self,
        account: &'a str,
        ids: &'a [DeliveryId],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut last = Ok(());
            for id in ids {
                if let Err(e) = self.ack(account, *id).await {
                    last = Err(e);
                }
            }
            last
        })
    }

    /// Not delivered: queue it again (at the front, to keep order roughly).
    fn nack<'a>(&'a self, account: &'a str, id: DeliveryId) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The ESME will never take it (a permanent status, or too many attempts): remove the
    /// handed-out delivery `id` from the queue and keep it on the account's dead-letter list,
    /// which holds at most `keep` (the oldest go).
    fn dead_letter<'a>(
        &'a self,
        account: &'a str,
        id: DeliveryId,
        reason: &'a str,
        keep: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Dead letters held for `account`.
    fn dead_letters<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Drop the deliveries of `account` queued longer than `older_than` ago (queued or handed
    /// out); how many.
    fn age_out<'a>(
        &'a self,
        account: &'a str,
        older_than: Duration,
    ) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Forget everything queued for `account` (a removed account) and its dead letters; how many
    /// deliveries were dropped.
    fn purge<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Whether other replicas share this store (a correlation may be written by another one).
    fn shared(&self) -> bool {
        false
    }

    /// Deliveries owed to `account` (queued + handed out).
    fn pending<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Deliveries owed to every account.
    fn pending_total(&self) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Correlations held (for metrics).
    fn correlations(&self) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Take one of the `max` bind permits of `carrier` for `holder` (see `crate::permits`): the
    /// slot number, or None when all are held (by live holders: a permit not renewed within `ttl`
    /// is free again). A holder that already has one gets it back renewed.
    fn acquire_permit<'a>(
        &'a self,
        carrier: &'a str,
        max: u32,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<u32>, StoreError>>;

    /// Keep `holder`'s permit `slot` for another `ttl`: false when another holder has it now (it
    /// expired and was taken: the bind must go). A permit that expired and is still free is taken
    /// back.
    fn renew_permit<'a>(
        &'a self,
        carrier: &'a str,
        slot: u32,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Give `holder`'s permit `slot` back (nothing when another holder has it).
    fn release_permit<'a>(
        &'a self,
        carrier: &'a str,
        slot: u32,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Whether the store answers now (for /readyz, the `smscd_store_up` gauge and refusing
    /// submits that want a receipt). Additive: in-process stores are always up.
    fn healthy(&self) -> bool {
        true
    }

    /// While not [`healthy`](Store::healthy): why, if known (names the config key to look at
    /// when it is a config matter, e.g. a wrong Sentinel master name).
    fn down_reason(&self) -> Option<String> {
        None
    }

    /// Failovers of the store followed since start (Redis Sentinel: the master moved).
    fn failovers(&self) -> u64 {
        0
    }
}

/// A store built from the config: `memory` is set for the in-process store (its owner sweeps
/// expired correlations).
pub struct Built {
    pub store: Arc<dyn Store>,
    pub memory: Option<Arc<memory::MemoryStore>>,
    /// Held submits (store-and-forward), in the same place as the rest.
    pub queue: Arc<dyn queue::MessageQueue>,
}

/// Build the configured store. `identity` names this replica in the Redis consumer group
/// (see [`self::redis::default_identity`]); a second store built in the same process (tests
/// running several daemons) gets a `-<n>` suffix so the two never share pending entries.
pub fn build(config: &StoreConfig, identity: &str) -> Result<Built, StoreError> {
    static BUILT: AtomicUsize = AtomicUsize::new(0);
    match config {
        StoreConfig::Memory { ttl } => {
            // Said at every start, so nobody mistakes it for a durable store (issue 14).
            tracing::warn!(
                "memory store: correlations and queued receipts/MO live in this process only; receipts \
                 owed at a restart (or a crash) are lost. Use `store: {{ type: redis, ... }}` to keep them"
            );
            let m = Arc::new(memory::MemoryStore::new(*ttl));
            Ok(Built {
                store: m.clone(),
                memory: Some(m),
                queue: Arc::new(memory_queue::MemoryQueue::default()),
            })
        }
        StoreConfig::Redis { url, sentinel, cluster, wait, key_prefix, ttl } => {
            let n = BUILT.fetch_add(1, Ordering::Relaxed);
            let consumer = if n == 0 { identity.to_owned() } else { format!("{identity}-{n}") };
            let claim_idle = self::redis::claim_idle_from_env();
            let target = self::redis::Target::configured(url, sentinel.as_ref(), cluster.as_ref())
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let form = target.form();
            let link = self::redis::Link::new(target);
            let r = self::redis::RedisStore::with_link(
                link,
                key_prefix,
                *ttl,
                consumer,
                claim_idle,
                wait.clone(),
            );
            tracing::info!(consumer = %r.consumer(), ?claim_idle, form, wait = ?wait, "redis store");
            let queue = Arc::new(redis_queue::RedisQueue::new(r.clone(), key_prefix));
            Ok(Built { store: r, memory: None, queue })
        }
    }
}
