//! Held submits (store-and-forward): the message store that [`crate::forward`] drains.
//!
//! One queue per account, ordered by due time. A replica `claim`s due messages for a lease: they
//! stay in the store, pushed out of reach until the lease ends, so a replica that dies while
//! sending them gives them up to another one (at-least-once). After the attempt the claimer
//! either `finish`es the message (delivered, expired, undeliverable: the record stays as a
//! tombstone for query_sm for `keep_final`) or `retry`s it at a later due time. `cancel` and
//! `replace` act only on a message that is waiting (not claimed, not final).
//!
//! Two implementations behave the same: [`super::memory_queue`] (one replica) and
//! [`super::redis_queue`] (shared by every replica). tests/store_and_forward.rs checks both.

use super::StoreError;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::time::Duration;

/// A held submit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// Our message id, the one the ESME got.
    pub id: String,
    /// The submit_sm PDU, encoded (sequence 0).
    pub submit: Bytes,
    /// Unix ms we accepted it.
    pub submitted_ms: u64,
    /// Unix ms it may be sent from (schedule_delivery_time, or the next retry).
    pub due_ms: u64,
    /// Unix ms it expires (validity_period, cut to the configured maximum).
    pub expires_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// The route it was held on, for metrics: `rule-<n>` (the n-th routing rule, from 0) or
    /// `default` (see [`crate::router::Router::route_label`]).
    pub route: String,
}

/// How a held submit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Final {
    Delivered,
    Expired,
    /// Cancelled (cancel_sm).
    Deleted,
    /// Refused for good by the upstream.
    Undeliverable,
    /// The rest come only from a relayed message's final receipt (SMPP 3.4 section 5.2.28).
    Accepted,
    Unknown,
    Rejected,
}

impl Final {
    pub fn code(self) -> &'static str {
        match self {
            Final::Delivered => "D",
            Final::Expired => "X",
            Final::Deleted => "C",
            Final::Undeliverable => "U",
            Final::Accepted => "A",
            Final::Unknown => "K",
            Final::Rejected => "R",
        }
    }

    pub fn from_code(c: &str) -> Option<Final> {
        Some(match c {
            "D" => Final::Delivered,
            "X" => Final::Expired,
            "C" => Final::Deleted,
            "U" => Final::Undeliverable,
            "A" => Final::Accepted,
            "K" => Final::Unknown,
            "R" => Final::Rejected,
            _ => return None,
        })
    }

    /// SMPP message_state (section 5.2.28).
    pub fn message_state(self) -> u8 {
        match self {
            Final::Delivered => 2,
            Final::Expired => 3,
            Final::Deleted => 4,
            Final::Undeliverable => 5,
            Final::Accepted => 6,
            Final::Unknown => 7,
            Final::Rejected => 8,
        }
    }

    /// The final state a receipt reports; None for ENROUTE (not final).
    pub fn from_state(s: smpp::receipt::MessageState) -> Option<Final> {
        use smpp::receipt::MessageState as S;
        Some(match s {
            S::Enroute => return None,
            S::Delivered => Final::Delivered,
            S::Expired => Final::Expired,
            S::Deleted => Final::Deleted,
            S::Undeliverable => Final::Undeliverable,
            S::Accepted => Final::Accepted,
            S::Unknown => Final::Unknown,
            S::Rejected => Final::Rejected,
        })
    }
}

/// What the metrics and the admin view read of one account's held submits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Held (waiting or claimed).
    pub held: usize,
    /// The earliest due time among them (unix ms).
    pub first_due_ms: Option<u64>,
    /// When the oldest of them was accepted (unix ms).
    pub oldest_ms: Option<u64>,
    /// Held per route label (see [`Queued::route`]), routes with none left out.
    pub by_route: Vec<(String, usize)>,
}

/// What the store knows of one id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Waiting (queued or scheduled), or being sent now (`claimed`).
    Waiting { message: Queued, claimed: bool },
    /// Taken by an upstream (relayed at once, or a held one sent) at unix ms `at`, and no final
    /// receipt seen yet: ENROUTE.
    Relayed { at_ms: u64 },
    /// Ended at unix ms `at`.
    Ended { state: Final, at_ms: u64 },
}

/// Outcome of `cancel` / `replace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Done,
    /// No such id for this account (or its tombstone is gone).
    Unknown,
    /// Already final.
    Ended,
    /// Being sent right now.
    InFlight,
}

/// What `replace` changes (None: kept).
#[derive(Clone, Debug, Default)]
pub struct Replacement {
    pub submit: Bytes,
    pub due_ms: Option<u64>,
    pub expires_ms: Option<u64>,
}

pub trait MessageQueue: Send + Sync + 'static {
    /// Hold `m` for `account` unless it already holds `max`: then [`StoreError::Full`].
    fn put<'a>(
        &'a self,
        account: &'a str,
        m: &'a Queued,
        max: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Take up to `max` messages of `account` due at `now_ms` for `lease`, earliest due first.
    fn claim<'a>(
        &'a self,
        account: &'a str,
        now_ms: u64,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Queued>, StoreError>>;

    /// Give a claimed message back, due again at `due_ms`, its attempts set to `attempts`.
    fn retry<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        due_ms: u64,
        attempts: u32,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Record that `id` was taken by an upstream at `now_ms` (ENROUTE for query_sm) and keep that
    /// for `keep`: out of the queue if it was held; a final state already recorded (a receipt
    /// that came first) stays.
    fn relayed<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// [`relayed`](Self::relayed) for each of `ids`, in as few round trips as the store allows
    /// (the drain records what the upstreams took in batches).
    fn relayed_many<'a>(
        &'a self,
        account: &'a str,
        ids: &'a [String],
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            for id in ids {
                self.relayed(account, id, now_ms, keep).await?;
            }
            Ok(())
        })
    }

    /// [`relayed`](MessageQueue::relayed) for an id that was never held (a submit relayed at
    /// once): the same record, without looking for the id in the queue (on Redis a third of the
    /// commands: this runs once per relayed submit).
    fn relayed_at_once<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.relayed(account, id, now_ms, keep)
    }

    /// End a message: out of the queue, its state kept for `keep` (query_sm). Also for an id
    /// that was never held (a relayed message's final receipt).
    fn finish<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        state: Final,
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// What is known of `id`; None when nothing.
    fn lookup<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lookup>, StoreError>>;

    /// Cancel a waiting message (ended as [`Final::Deleted`], kept for `keep`).
    fn cancel<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<Change, StoreError>>;

    /// Replace a waiting message's content and times.
    fn replace<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        r: &'a Replacement,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Change, StoreError>>;

    /// Messages held for `account` (waiting or claimed) and the earliest due time among them.
    fn depth<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<(usize, Option<u64>), StoreError>>;

    /// Counts for the metrics: held, earliest due, oldest accepted, held per route.
    fn stats<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Stats, StoreError>>;

    /// Up to `max` held messages of `account`, earliest due first (the admin view).
    fn list<'a>(&'a self, account: &'a str, max: usize) -> BoxFuture<'a, Result<Vec<Queued>, StoreError>>;
}
