//! Active/standby leader election on a coordination.k8s.io/v1 Lease, client-go semantics.
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
//! - [`LeaderHandle::release`] (and cancelling the shutdown token) publishes `false`, removes our
//!   role label, then releases the Lease (holder cleared, leaseDurationSeconds 1, guarded by
//!   resourceVersion) so a standby takes over at its next attempt.
//! - The Pod named by `POD_NAME` carries `smsc.io/role=active` while leading ([`labels`]).
//! - RBAC for smscd's ServiceAccount: leases get/update (this name) and create; pods get/patch;
//!   pods list to clear a crashed leader's label at once (without it the operator clears it).
//!
//! Why not a crate: `kube-leader-election` expires leases by comparing the remote renewTime with
//! the local wall clock, has no renew deadline (step-down) and does not guard writes by
//! resourceVersion; `kube-lease-manager` uses server-side apply and clock-skew tolerance instead of
//! observed-time expiry, and has no separate renew deadline either; kube-runtime 5 has no leader
//! election. The semantics above fit in a few hundred lines with a pure, tested decision.

pub mod decision;
pub mod labels;
pub mod lease;

pub use decision::{decide, Action, Observed, Record, Timing, TimingError};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use lease::{CallError, LeaseApi};
use smsc_api::smscd_config::LeaderElectionConfig;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Field manager of every write smscd makes to the API.
pub const FIELD_MANAGER: &str = "smscd";

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader_election.namespace is not set and POD_NAMESPACE is empty")]
    NoNamespace,
    #[error("leader_election.identity is not set and POD_NAME is empty")]
    NoIdentity,
    #[error(transparent)]
    Timing(#[from] TimingError),
    #[error("kubernetes client: {0}")]
    Client(String),
}

/// The election settings with the environment defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedLeaderConfig {
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    /// The Pod to label `smsc.io/role=active` (`POD_NAME`); `None`: no labelling.
    pub pod_name: Option<String>,
    pub timing: Timing,
}

impl ResolvedLeaderConfig {
    /// Resolve from the config file and the process environment (`POD_NAMESPACE`, `POD_NAME`).
    pub fn resolve(cfg: &LeaderElectionConfig) -> Result<Self, LeaderError> {
        Self::resolve_with(cfg, |k| std::env::var(k).ok())
    }

    /// Resolve with `env` standing for the environment.
    pub fn resolve_with(
        cfg: &LeaderElectionConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, LeaderError> {
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let pod_name = non_empty(env("POD_NAME"));
        let namespace = non_empty(cfg.namespace.clone())
            .or_else(|| non_empty(env("POD_NAMESPACE")))
            .ok_or(LeaderError::NoNamespace)?;
        let identity =
            non_empty(cfg.identity.clone()).or_else(|| pod_name.clone()).ok_or(LeaderError::NoIdentity)?;
        let timing = Timing::new(
            Duration::from_secs(cfg.lease_duration_secs),
            Duration::from_secs(cfg.renew_deadline_secs),
            Duration::from_secs(cfg.retry_period_secs),
        )?;
        Ok(ResolvedLeaderConfig { lease_name: cfg.lease_name.clone(), namespace, identity, pod_name, timing })
    }
}

/// A client from the in-cluster config, or `KUBECONFIG` / `~/.kube/config` outside a cluster.
pub async fn default_client() -> Result<kube::Client, LeaderError> {
    kube::Client::try_default().await.map_err(|e| LeaderError::Client(e.to_string()))
}

/// Resolve `cfg`, build the default client and [`spawn`] the elector.
pub async fn start(
    cfg: &LeaderElectionConfig,
    shutdown: CancellationToken,
) -> Result<LeaderHandle, LeaderError> {
    let resolved = ResolvedLeaderConfig::resolve(cfg)?;
    Ok(spawn(default_client().await?, resolved, shutdown))
}

/// A running elector.
pub struct LeaderHandle {
    leading: watch::Receiver<bool>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    labeler: Option<AbortHandle>,
}

impl LeaderHandle {
    /// `true` while we are the leader and may act. Starts `false`; also `false` once the elector
    /// has stopped (the channel then reports closed on `changed()`).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Clean shutdown: stop acting, drop the role label, release the Lease so a standby takes over
    /// at once. Call it after the drain (the lease keeps the standby out meanwhile).
    pub async fn release(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Stop at once without releasing anything, as a crash would (for tests): the Lease stays
    /// ours until it expires, and the role label stays until the next leader clears it.
    pub fn abort(self) {
        self.task.abort();
        if let Some(l) = &self.labeler {
            l.abort();
        }
    }
}

/// Start the elector (and the Pod labeller when `cfg.pod_name` is set). Cancelling `shutdown`
/// does what [`LeaderHandle::release`] does.
pub fn spawn(client: kube::Client, cfg: ResolvedLeaderConfig, shutdown: CancellationToken) -> LeaderHandle {
    let (tx, rx) = watch::channel(false);
    let stop = shutdown.child_token();
    let t = cfg.timing;
    // The labeller stops on its own token, cancelled by the elector's release (not by `stop`), so
    // the elector can wait for the label to be gone before it hands the Lease over.
    let label_stop = CancellationToken::new();
    let labeler = cfg.pod_name.clone().map(|pod| {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &cfg.namespace);
        tokio::spawn(labels::follow(
            pods,
            pod,
            rx.clone(),
            t.call_timeout(),
            t.retry_period,
            t.lease_duration,
            label_stop.clone(),
        ))
    });
    let abort_labeler = labeler.as_ref().map(JoinHandle::abort_handle);
    let elector = Elector {
        lease: LeaseApi::new(client, &cfg.namespace, &cfg.lease_name),
        labeler: labeler.map(|h| (h, label_stop)),
        obs: Observed::new(Instant::now()),
        current: None,
        tx,
        cfg,
    };
    let task = tokio::spawn(elector.run(stop.clone()));
    LeaderHandle { leading: rx, stop, task, labeler: abort_labeler }
}

struct Elector {
    lease: LeaseApi,
    /// The Pod labeller and its stop token.
    labeler: Option<(JoinHandle<()>, CancellationToken)>,
    obs: Observed,
    /// The Lease as last read or written (its resourceVersion guards our next write).
    current: Option<Lease>,
    tx: watch::Sender<bool>,
    cfg: ResolvedLeaderConfig,
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

    /// Stop acting, drop our label, then hand the Lease over if it is (still) ours.
    async fn release(&mut self) {
        self.step_down("shutting down");
        let t = self.cfg.timing.call_timeout();
        if let Some((task, stop)) = self.labeler.take() {
            // It finishes its current patches, then removes our label; each call is bounded.
            stop.cancel();
            let abort = task.abort_handle();
            if tokio::time::timeout(t * 8, task).await.is_err() {
                warn!("role label: the labeller did not finish in time");
                abort.abort();
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ns: Option<&str>, id: Option<&str>) -> LeaderElectionConfig {
        LeaderElectionConfig {
            lease_name: "smsc".into(),
            namespace: ns.map(Into::into),
            identity: id.map(Into::into),
            lease_duration_secs: 15,
            renew_deadline_secs: 10,
            retry_period_secs: 2,
            step_down_secs: None,
        }
    }

    #[test]
    fn resolve_uses_config_then_environment() {
        let env = |k: &str| match k {
            "POD_NAMESPACE" => Some("env-ns".to_string()),
            "POD_NAME" => Some("pod-0".to_string()),
            _ => None,
        };
        let r = ResolvedLeaderConfig::resolve_with(&cfg(None, None), env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.namespace.as_str(), r.identity.as_str()), ("env-ns", "pod-0"));
        assert_eq!(r.pod_name.as_deref(), Some("pod-0"));
        let r = ResolvedLeaderConfig::resolve_with(&cfg(Some("ns"), Some("me")), env)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.namespace.as_str(), r.identity.as_str()), ("ns", "me"));
        assert!(matches!(
            ResolvedLeaderConfig::resolve_with(&cfg(None, Some("me")), |_| None),
            Err(LeaderError::NoNamespace)
        ));
        assert!(matches!(
            ResolvedLeaderConfig::resolve_with(&cfg(Some("ns"), None), |_| None),
            Err(LeaderError::NoIdentity)
        ));
        let mut bad = cfg(Some("ns"), Some("me"));
        bad.renew_deadline_secs = 15;
        assert!(matches!(ResolvedLeaderConfig::resolve_with(&bad, |_| None), Err(LeaderError::Timing(_))));
    }
}
