//! The state every part of the running daemon shares.

use crate::accounts::Accounts;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::msgid::IdGen;
use crate::router::Router;
use crate::sim::Sim;
use crate::store::memory_queue::MemoryQueue;
use crate::store::queue::MessageQueue;
use crate::store::Store;
use crate::upstream::Upstreams;
use smsc_api::smscd_config::{SmscdConfig, StoreConfig};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub struct Core {
    pub ids: IdGen,
    pub accounts: Accounts,
    pub router: Live<Router>,
    pub config: Live<SmscdConfig>,
    pub upstreams: Upstreams,
    pub sim: Sim,
    pub store: Arc<dyn Store>,
    /// Held submits (store-and-forward, [`crate::forward`]).
    pub queue: Arc<dyn MessageQueue>,
    pub metrics: Metrics,
    /// Per-address connection counts and failed binds (plain and TLS listeners).
    pub peers: Arc<crate::peers::PeerLimits>,
    /// Listener up and not draining.
    pub ready: AtomicBool,
    /// The accept loops, for liveness.
    pub listeners: Arc<crate::health::Listeners>,
    /// Shutting down: new submits are refused, work in flight finishes.
    pub draining: AtomicBool,
    /// Late in the drain, as the upstreams unbind: receipts and MO are refused (transient)
    /// rather than queued for ESMEs about to be unbound.
    pub deliveries_closed: AtomicBool,
    /// Allowed to serve ESMEs and bind upstream: always with no leader election, else only while
    /// this replica holds the Lease (see `daemon::follow_leadership`).
    pub active: AtomicBool,
    /// Deferred submits not answered yet (every ESME session).
    inflight: AtomicUsize,
    inflight_done: Notify,
    /// Ends background loops (delivery, sim, housekeeping) at the very end of shutdown.
    pub stop: CancellationToken,
    /// Receipts and MO that go elsewhere than SMPP (the HTTP API's webhooks), when set.
    pub sink: std::sync::OnceLock<Arc<dyn crate::sink::DeliverySink>>,
    /// Scripted handlers, when the config has a `handlers` section.
    pub handlers: Option<Arc<crate::handlers::Handlers>>,
}

impl Core {
    pub fn new(config: &SmscdConfig, store: Arc<dyn Store>) -> Core {
        Core {
            ids: IdGen::default(),
            accounts: Accounts::default(),
            router: Live::new(Router::new(&config.routing)),
            config: Live::new(config.clone()),
            upstreams: Upstreams::default(),
            sim: Sim::new(config.sim.clone()),
            store,
            queue: Arc::new(MemoryQueue::default()),
            metrics: Metrics::new(),
            peers: Arc::default(),
            ready: AtomicBool::new(false),
            listeners: Arc::default(),
            draining: AtomicBool::new(false),
            deliveries_closed: AtomicBool::new(false),
            active: AtomicBool::new(true),
            inflight: AtomicUsize::new(0),
            inflight_done: Notify::new(),
            stop: CancellationToken::new(),
            sink: std::sync::OnceLock::new(),
            handlers: None,
        }
    }

    /// The message store for held submits (the memory one by default).
    pub fn with_queue(mut self, queue: Arc<dyn MessageQueue>) -> Core {
        self.queue = queue;
        self
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether a receipt or MO for `account` may be taken now (answered 0 to the upstream).
    /// Always while running. While draining only if it can still reach an ESME: the store
    /// outlives this process (Redis: another replica delivers it), or an ESME of the account is
    /// bound to take it before we exit; and never once the upstreams are being unbound. Otherwise
    /// the upstream gets ESME_RX_T_APPN and redelivers, to another replica or after our restart.
    pub fn takes_delivery(&self, account: &str) -> bool {
        if !self.is_draining() {
            return true;
        }
        if self.deliveries_closed.load(Ordering::Acquire) {
            return false;
        }
        let shared = matches!(self.config.get().store, StoreConfig::Redis { .. });
        shared || self.accounts.get(account).is_some_and(|a| a.has_receiver())
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Count a deferred submit until the guard drops.
    pub fn inflight_guard(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.clone())
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Wait until no deferred submit is in flight.
    pub async fn inflight_drained(&self) {
        loop {
            let notified = self.inflight_done.notified();
            if self.inflight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub struct InflightGuard(Arc<Core>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.inflight_done.notify_waiters();
        }
    }
}
