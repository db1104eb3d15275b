//! Where correlation records and queued deliveries (receipts, MO) live.
//!
//! The trait is shaped for a shared store (Redis) as much as for memory: every method is async
//! and fallible; records are plain data ([`Correlation`], [`Delivery`] holds an encoded PDU);
//! the delivery queue is consumer-style (`next_for` hands an item out without removing it; `ack`
//! removes it, `nack` puts it back), so a crash between handing out and acking loses nothing.
//! Correlations expire after the configured TTL.

pub mod memory;

use bytes::Bytes;
use futures::future::BoxFuture;

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

    /// Queue a delivery for `account`.
    fn enqueue<'a>(&'a self, account: &'a str, d: Delivery) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Hand out the oldest queued delivery of `account`; it stays owed until `ack`/`nack`.
    fn next_for<'a>(
        &'a self,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Option<(DeliveryId, Delivery)>, StoreError>>;

    /// Delivered: forget it.
    fn ack<'a>(&'a self, account: &'a str, id: DeliveryId) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Not delivered: queue it again (at the front, to keep order roughly).
    fn nack<'a>(&'a self, account: &'a str, id: DeliveryId) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Deliveries owed to `account` (queued + handed out).
    fn pending<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Deliveries owed to every account.
    fn pending_total(&self) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Correlations held (for metrics).
    fn correlations(&self) -> BoxFuture<'_, Result<usize, StoreError>>;
}
