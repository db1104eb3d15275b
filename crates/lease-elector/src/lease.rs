//! The Lease API calls, each under a timeout. Writes are replaces guarded by the resourceVersion
//! we read (optimistic concurrency): a 409 means another writer won since our read.

use super::decision::Record;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::time::Duration;

/// Outcome of a failed call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// 409 on update (resourceVersion moved) or on create (AlreadyExists): someone else won.
    #[error("lost the race: {0}")]
    Lost(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Api(String),
}

fn map_err(e: kube::Error) -> CallError {
    match e {
        kube::Error::Api(s) if s.code == 409 => CallError::Lost(s.message.clone()),
        other => CallError::Api(other.to_string()),
    }
}

async fn bounded<T>(
    within: Duration,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(within, fut).await {
        Ok(r) => r.map_err(map_err),
        Err(_) => Err(CallError::Timeout(within)),
    }
}

/// The election-relevant view of a Lease.
pub fn record_of(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity.unwrap_or_default(),
        lease_duration_secs: spec.lease_duration_seconds.unwrap_or(0),
        transitions: spec.lease_transitions.unwrap_or(0),
        renew_time: spec.renew_time.map(|t| t.0.to_string()),
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX).max(1)
}

/// One Lease, by name, in one namespace.
#[derive(Clone)]
pub struct LeaseApi {
    api: Api<Lease>,
    name: String,
    field_manager: String,
}

impl LeaseApi {
    /// Writes carry `field_manager`.
    pub fn new(client: kube::Client, namespace: &str, name: &str, field_manager: &str) -> Self {
        LeaseApi {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            field_manager: field_manager.into(),
        }
    }

    pub async fn get(&self, within: Duration) -> Result<Option<Lease>, CallError> {
        bounded(within, self.api.get_opt(&self.name)).await
    }

    /// Create the Lease with us as holder (leaseTransitions 0).
    pub async fn create(
        &self,
        me: &str,
        lease_duration: Duration,
        within: Duration,
    ) -> Result<Lease, CallError> {
        let now = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(me.to_string()),
                lease_duration_seconds: Some(secs(lease_duration)),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        bounded(within, self.api.create(&self.post_params(), &lease)).await
    }

    /// Acquire or renew: write us as holder over `current` (its resourceVersion guards the write).
    /// `transitions` is `Some(n)` on a takeover (new acquireTime), `None` on a renewal.
    pub async fn hold(
        &self,
        current: &Lease,
        me: &str,
        lease_duration: Duration,
        transitions: Option<i32>,
        within: Duration,
    ) -> Result<Lease, CallError> {
        let now = MicroTime(Timestamp::now());
        let mut next = current.clone();
        let mut spec = next.spec.take().unwrap_or_default();
        spec.holder_identity = Some(me.to_string());
        spec.lease_duration_seconds = Some(secs(lease_duration));
        spec.renew_time = Some(now.clone());
        match transitions {
            Some(n) => {
                spec.acquire_time = Some(now);
                spec.lease_transitions = Some(n);
            }
            None if spec.acquire_time.is_none() => spec.acquire_time = Some(now),
            None => {}
        }
        next.spec = Some(spec);
        self.replace(next, within).await
    }

    /// Release (client-go semantics): no holder, leaseDurationSeconds 1, renew/acquire time now,
    /// transitions kept, guarded by `current`'s resourceVersion. A standby then acquires at once.
    pub async fn release(&self, current: &Lease, within: Duration) -> Result<Lease, CallError> {
        let now = MicroTime(Timestamp::now());
        let mut next = current.clone();
        let mut spec = next.spec.take().unwrap_or_default();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        next.spec = Some(spec);
        self.replace(next, within).await
    }

    fn post_params(&self) -> PostParams {
        PostParams { field_manager: Some(self.field_manager.clone()), ..PostParams::default() }
    }

    async fn replace(&self, lease: Lease, within: Duration) -> Result<Lease, CallError> {
        if lease.metadata.resource_version.is_none() {
            // Without a resourceVersion the replace would be unconditional: refuse.
            return Err(CallError::Api("lease has no resourceVersion".into()));
        }
        bounded(within, self.api.replace(&self.name, &self.post_params(), &lease)).await
    }
}
