//! Leader election on a coordination.k8s.io/v1 Lease, client-go semantics, shared by smscd
//! (active/standby data plane) and the operator (one reconciling replica).
//!
//! - lease duration > renew deadline > retry period ([`Timing`]); every API call has a timeout
//!   shorter than the retry period ([`Timing::call_timeout`]).
//! - A standby acquires a Lease that is absent (create; AlreadyExists = lost), free (no holder,
//!   as left by a release) or expired: `leaseDurationSeconds` passed since WE observed the record
//!   change (our monotonic clock, like client-go's `observedTime`; the remote `renewTime` is never
//!   compared with our clock). Acquire and renew are replaces guarded by the resourceVersion we
//!   read; a 409 on acquire or renew makes us read the Lease again: another holder there means
//!   someone else won and we are (or become) standby; still us (a metadata edit, or a write of
//!   ours whose answer we missed) and we keep leading, within our renew deadline as always.
//!   `leaseTransitions` is incremented on every change of holder.
//! - The leader renews every retry period. When no renewal has succeeded for the renew deadline
//!   (counted from when the last successful renewal was SENT) it publishes `false` at that
//!   deadline, even while a call hangs: before any standby may acquire, which takes the lease
//!   duration from its observation of that renewal.
//! - [`Handle::release`] (and cancelling the shutdown token) publishes `false`, runs the
//!   caller's `before_release` hook, then releases the Lease (holder cleared,
//!   leaseDurationSeconds 1, guarded by resourceVersion) so a standby takes over at its next
//!   attempt.
//! - RBAC: leases get/update (this name) and create.
//!
//! Why not a published crate: `kube-leader-election` expires leases by comparing the remote renewTime with
//! the local wall clock, has no renew deadline (step-down) and does not guard writes by
//! resourceVersion; `kube-lease-manager` uses server-side apply and clock-skew tolerance instead of
//! observed-time expiry, and has no separate renew deadline either; kube-runtime 5 has no leader
//! election. The semantics above fit in a few hundred lines with a pure, tested decision.

pub mod decision;
pub mod lease;

pub use decision::{decide, Action, Observed, Record, Timing, TimingError};

use k8s_openapi::api::coordination::v1::Lease;
use lease::{CallError, LeaseApi};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// One election: which Lease, who we are, its timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    pub timing: Timing,
    /// Field manager of our Lease writes.
    pub field_manager: String,
}

/// Work to finish, after we stopped leading, before the Lease is handed over.
pub type BeforeRelease = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A running elector.
pub struct Handle {
    leading: watch::Receiver<bool>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Handle {
    /// `true` while we are the leader and may act. Starts `false`; also `false` once the elector
    /// has stopped (the channel then reports closed on `changed()`).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Clean shutdown: stop acting, run the `before_release` hook, release the Lease so a
    /// standby takes over at once.
    pub async fn release(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Stop at once without releasing anything, as a crash would (for tests): the Lease stays
    /// ours until it expires.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Start the elector. Cancelling `shutdown` does what [`Handle::release`] does.
pub fn spawn(
    client: kube::Client,
    cfg: Config,
    shutdown: CancellationToken,
    before_release: Option<BeforeRelease>,
) -> Handle {
    let (tx, rx) = watch::channel(false);
    let stop = shutdown.child_token();
    let elector = Elector {
        lease: LeaseApi::new(client, &cfg.namespace, &cfg.lease_name, &cfg.field_manager),
        before_release,
        obs: Observed::new(Instant::now()),
        current: None,
        tx,
        cfg,
    };
    let task = tokio::spawn(elector.run(stop.clone()));
    Handle { leading: rx, stop, task }
}

struct Elector {
    lease: LeaseApi,
    /// Run before the Lease is handed over on release (e.g. removing a label that says we lead).
    before_release: Option<BeforeRelease>,
    obs: Observed,
    /// The Lease as last read or written (its resourceVersion guards our next write).
    current: Option<Lease>,
    tx: watch::Sender<bool>,
    cfg: Config,
}

impl Elector {
    async fn run(mut self, stop: CancellationToken) {
        info!(lease = %self.cfg.lease_name, namespace = %self.cfg.namespace, identity = %self.cfg.identity, "leader election started");
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                next = self.tick() => next,
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
        }
        self.release().await;
    }

    fn deadline(&self) -> Option<Instant> {
        self.obs.last_renewed.map(|t| t + self.cfg.timing.renew_deadline)
    }

    /// A call's timeout: the call timeout, cut at the renew deadline while leading. `None`: the
    /// deadline has passed.
    fn within(&self) -> Option<Duration> {
        let t = self.cfg.timing.call_timeout();
        match self.deadline() {
            None => Some(t),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                (!left.is_zero()).then(|| t.min(left))
            }
        }
    }

    fn lead(&mut self, sent: Instant, lease: Lease) {
        self.obs.observe(Instant::now(), Some(lease::record_of(&lease)));
        self.obs.last_renewed = Some(sent);
        self.current = Some(lease);
        if !*self.tx.borrow() {
            info!(identity = %self.cfg.identity, "became leader");
            self.tx.send_replace(true);
        }
    }

    fn step_down(&mut self, why: &str) {
        self.obs.last_renewed = None;
        if *self.tx.borrow() {
            warn!(identity = %self.cfg.identity, "stepping down: {why}");
            self.tx.send_replace(false);
        }
    }

    /// One attempt; returns when to try next.
    async fn tick(&mut self) -> Instant {
        let timing = self.cfg.timing;
        let me = self.cfg.identity.clone();
        let retry_at = Instant::now() + timing.retry_period;
        let next = match self.attempt(&me, &timing).await {
            Some(expires_at) => expires_at.min(Instant::now() + jittered(timing.retry_period)),
            None => retry_at,
        };
        // Whatever happened, never act past the renew deadline, and wake up for it.
        match self.deadline() {
            Some(d) if Instant::now() >= d => {
                self.step_down("renewal has not succeeded within the renew deadline");
                next
            }
            Some(d) => next.min(d),
            None => next,
        }
    }

    /// Read, decide, write. `Some(t)`: standby waiting for a lease that expires at `t`.
    async fn attempt(&mut self, me: &str, timing: &Timing) -> Option<Instant> {
        let within = self.within()?;
        match self.lease.get(within).await {
            Ok(l) => {
                self.obs.observe(Instant::now(), l.as_ref().map(lease::record_of));
                self.current = l;
            }
            Err(e) => {
                warn!("reading lease {}: {e}", self.cfg.lease_name);
                return None;
            }
        }
        let action = decide(Instant::now(), &self.obs, me, timing);
        let within = self.within()?;
        let sent = Instant::now();
        let res = match (&action, &self.current) {
            (Action::Wait { expires_at }, _) => return Some(*expires_at),
            (Action::StepDown, _) => {
                self.step_down("the lease names another holder, or the renew deadline passed");
                return None;
            }
            (Action::Create, _) => self.lease.create(me, timing.lease_duration, within).await,
            (Action::Acquire { transitions }, Some(cur)) => {
                self.lease.hold(cur, me, timing.lease_duration, Some(*transitions), within).await
            }
            (Action::Renew, Some(cur)) => self.lease.hold(cur, me, timing.lease_duration, None, within).await,
            // decide() only acquires or renews a lease it has read.
            (Action::Acquire { .. } | Action::Renew, None) => return None,
        };
        match res {
            Ok(l) => self.lead(sent, l),
            Err(CallError::Lost(msg)) => self.after_conflict(&msg).await,
            Err(e) => warn!(?action, "writing lease {}: {e}", self.cfg.lease_name),
        }
        None
    }

    /// A 409 says the resourceVersion moved since our read, not who holds the Lease: a write of
    /// ours whose answer we missed, or someone editing its metadata, moves it too. Read it again
    /// and step down only if it names another holder (or cannot be read past the deadline:
    /// `tick` sees to that); still ours, the next attempt renews over the fresh version.
    async fn after_conflict(&mut self, msg: &str) {
        let Some(within) = self.within() else { return };
        match self.lease.get(within).await {
            Ok(l) => {
                self.obs.observe(Instant::now(), l.as_ref().map(lease::record_of));
                let ours = l.as_ref().is_some_and(|l| lease::record_of(l).holder == self.cfg.identity);
                self.current = l;
                if ours {
                    info!(lease = %self.cfg.lease_name, "lease changed under our write but still names us: {msg}");
                } else {
                    self.step_down(&format!("lost the lease: {msg}"));
                }
            }
            Err(e) => warn!("re-reading lease {} after a conflict: {e}", self.cfg.lease_name),
        }
    }

    /// Stop acting, run the `before_release` hook, then hand the Lease over if it is (still) ours.
    async fn release(&mut self) {
        self.step_down("shutting down");
        let t = self.cfg.timing.call_timeout();
        if let Some(hook) = self.before_release.take() {
            hook().await;
        }
        // Two tries: the first may meet a resourceVersion moved by a write of ours whose answer
        // we never saw (cancelled mid-call).
        for _ in 0..2 {
            let Some(cur) = self.current.take() else { break };
            if lease::record_of(&cur).holder != self.cfg.identity {
                break;
            }
            match self.lease.release(&cur, t).await {
                Ok(_) => {
                    info!(lease = %self.cfg.lease_name, "lease released");
                    return;
                }
                Err(CallError::Lost(_)) => match self.lease.get(t).await {
                    Ok(l) => self.current = l,
                    Err(e) => warn!("releasing lease: {e}"),
                },
                Err(e) => {
                    warn!("releasing lease: {e}");
                    return;
                }
            }
        }
    }
}

/// The retry period plus up to 10%, so standbys do not poll in lockstep.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + fastrand::f64() * 0.1)
}
