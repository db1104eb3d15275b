//! Optional leader election among operator replicas on a coordination.k8s.io Lease
//! (client-go semantics: acquire when free or expired, renew every retry period, give up at the
//! renew deadline, release on clean shutdown). Writes are guarded by resourceVersion.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// Every API call gets this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn timed<T>(f: impl std::future::Future<Output = kube::Result<T>>) -> Option<kube::Result<T>> {
    tokio::time::timeout(CALL_TIMEOUT, f).await.ok()
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else { return true };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed.0 + SignedDuration::from_secs(secs) < now
}

/// One acquire-or-renew attempt. True: we hold the Lease now.
pub async fn try_acquire_or_renew(api: &Api<Lease>, cfg: &LeaderConfig) -> bool {
    let now = Timestamp::now();
    let duration = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(15);
    let existing = match timed(api.get_opt(&cfg.lease_name)).await {
        Some(Ok(l)) => l,
        _ => return false,
    };
    match existing {
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(cfg.lease_name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            matches!(timed(api.create(&PostParams::default(), &lease)).await, Some(Ok(_)))
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let ours = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
            let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
            if !ours && !free && !expired(&spec, now) {
                return false;
            }
            let mut new = spec.clone();
            if !ours {
                new.acquire_time = Some(MicroTime(now));
                new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            new.holder_identity = Some(cfg.identity.clone());
            new.lease_duration_seconds = Some(duration);
            new.renew_time = Some(MicroTime(now));
            lease.spec = Some(new);
            // replace() sends the resourceVersion we read: a concurrent writer makes it fail.
            matches!(timed(api.replace(&cfg.lease_name, &PostParams::default(), &lease)).await, Some(Ok(_)))
        }
    }
}

/// Wait until we hold the Lease.
pub async fn acquire(api: &Api<Lease>, cfg: &LeaderConfig) {
    loop {
        if try_acquire_or_renew(api, cfg).await {
            tracing::info!(lease = %cfg.lease_name, identity = %cfg.identity, "became leader");
            return;
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
}

/// Renew until a renewal has failed for the whole renew deadline; then return (leadership lost).
pub async fn hold(api: &Api<Lease>, cfg: &LeaderConfig) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.retry_period).await;
        if try_acquire_or_renew(api, cfg).await {
            last_ok = tokio::time::Instant::now();
        } else if last_ok.elapsed() >= cfg.renew_deadline {
            tracing::error!(lease = %cfg.lease_name, "leadership lost");
            return;
        }
    }
}

/// Give the Lease up so another replica takes over without waiting for expiry.
pub async fn release(api: &Api<Lease>, cfg: &LeaderConfig) {
    if let Some(Ok(Some(mut lease))) = timed(api.get_opt(&cfg.lease_name)).await {
        let ours =
            lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(cfg.identity.as_str());
        if ours {
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
            }
            let _ = timed(api.replace(&cfg.lease_name, &PostParams::default(), &lease)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_renew_time_and_duration() {
        let now = Timestamp::from_second(1000).unwrap_or_else(|e| panic!("{e}"));
        let at = |s| Some(MicroTime(Timestamp::from_second(s).unwrap_or_else(|e| panic!("{e}"))));
        let spec =
            LeaseSpec { renew_time: at(990), lease_duration_seconds: Some(15), ..LeaseSpec::default() };
        assert!(!expired(&spec, now));
        let spec =
            LeaseSpec { renew_time: at(980), lease_duration_seconds: Some(15), ..LeaseSpec::default() };
        assert!(expired(&spec, now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
