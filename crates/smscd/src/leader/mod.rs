//! Active/standby leader election on a coordination.k8s.io/v1 Lease: the shared elector
//! (crates/lease-elector: client-go semantics, observed-time expiry, a renew deadline,
//! resourceVersion-guarded writes, a 409 re-read before stepping down) plus what is smscd's own:
//!
//! - the settings come from `leader_election` and the Pod's environment ([`ResolvedLeaderConfig`]);
//! - the Pod named by `POD_NAME` carries `smsc.io/role=active` while leading ([`labels`]); on
//!   release the label is removed before the Lease is handed over;
//! - RBAC for smscd's ServiceAccount: leases get/update (this name) and create; pods get/patch;
//!   pods list to clear a crashed leader's label at once (without it the operator clears it).

pub mod labels;

pub use lease_elector::{decide, decision, lease, Action, Observed, Record, Timing, TimingError};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use smsc_api::smscd_config::LeaderElectionConfig;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::warn;

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
    elector: lease_elector::Handle,
    labeler: Option<AbortHandle>,
}

impl LeaderHandle {
    /// `true` while we are the leader and may act. Starts `false`; also `false` once the elector
    /// has stopped (the channel then reports closed on `changed()`).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.elector.watch()
    }

    pub fn is_leader(&self) -> bool {
        self.elector.is_leader()
    }

    /// Clean shutdown: stop acting, drop the role label, release the Lease so a standby takes over
    /// at once. Call it after the drain (the lease keeps the standby out meanwhile).
    pub async fn release(self) {
        self.elector.release().await;
    }

    /// Stop at once without releasing anything, as a crash would (for tests): the Lease stays
    /// ours until it expires, and the role label stays until the next leader clears it.
    pub fn abort(self) {
        self.elector.abort();
        if let Some(l) = &self.labeler {
            l.abort();
        }
    }
}

type Labeller = Arc<Mutex<Option<JoinHandle<()>>>>;

/// Start the elector (and the Pod labeller when `cfg.pod_name` is set). Cancelling `shutdown`
/// does what [`LeaderHandle::release`] does.
pub fn spawn(client: kube::Client, cfg: ResolvedLeaderConfig, shutdown: CancellationToken) -> LeaderHandle {
    let t = cfg.timing;
    // The labeller stops on its own token, cancelled on release (not by `shutdown`), so the
    // elector waits for the label to be gone before it hands the Lease over.
    let label_stop = CancellationToken::new();
    let labeller: Labeller = Arc::default();
    let hook: Option<lease_elector::BeforeRelease> = cfg.pod_name.is_some().then(|| {
        let (stop, task) = (label_stop.clone(), labeller.clone());
        let hook: lease_elector::BeforeRelease =
            Box::new(move || Box::pin(stop_labeller(stop, task, t.call_timeout() * 8)));
        hook
    });
    let elector = lease_elector::spawn(
        client.clone(),
        lease_elector::Config {
            lease_name: cfg.lease_name.clone(),
            namespace: cfg.namespace.clone(),
            identity: cfg.identity.clone(),
            timing: t,
            field_manager: FIELD_MANAGER.into(),
        },
        shutdown,
        hook,
    );
    let abort = cfg.pod_name.clone().map(|pod| {
        let pods: Api<Pod> = Api::namespaced(client, &cfg.namespace);
        let follow = labels::follow(
            pods,
            pod,
            elector.watch(),
            t.call_timeout(),
            t.retry_period,
            t.lease_duration,
            label_stop,
        );
        let task = tokio::spawn(follow);
        let abort = task.abort_handle();
        *labeller.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        abort
    });
    LeaderHandle { elector, labeler: abort }
}

/// Let the labeller finish its current patches and remove our label; each call is bounded.
async fn stop_labeller(stop: CancellationToken, task: Labeller, limit: Duration) {
    stop.cancel();
    let Some(task) = task.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
    let abort = task.abort_handle();
    if tokio::time::timeout(limit, task).await.is_err() {
        warn!("role label: the labeller did not finish in time");
        abort.abort();
    }
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
