//! The Pod role label: the leader's Pod carries `smsc.io/role=active` (the Service selects it)
//! and a pod-deletion-cost that makes rolling updates replace it last; standby Pods carry neither. JSON merge patches under field manager `smscd`, each call
//! under a timeout, all best effort: a failure is retried, never fatal to the election.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use smsc_api::names::{ROLE_ACTIVE, ROLE_LABEL};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

fn patch_params() -> PatchParams {
    PatchParams { field_manager: Some(super::FIELD_MANAGER.to_string()), ..PatchParams::default() }
}

/// The ReplicaSet controller removes Pods with the lowest deletion cost first, so a rolling update
/// replaces the standbys before the active Pod: one Lease handover per rollout, not one per Pod.
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
pub const ACTIVE_DELETION_COST: &str = "1000";

/// The role label and the deletion cost that goes with it, in one patch.
pub fn role_patch(value: Option<&str>) -> serde_json::Value {
    // A null value removes the key in a JSON merge patch.
    let cost = value.map(|_| ACTIVE_DELETION_COST);
    json!({ "metadata": { "labels": { ROLE_LABEL: value }, "annotations": { DELETION_COST_ANNOTATION: cost } } })
}

async fn set_label(pods: &Api<Pod>, pod: &str, value: Option<&str>, within: Duration) -> Result<(), String> {
    let patch = role_patch(value);
    match tokio::time::timeout(within, pods.patch(pod, &patch_params(), &Patch::Merge(&patch))).await {
        Ok(Ok(_)) => Ok(()),
        // The Pod is gone: nothing to label.
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Ok(()),
        Ok(Err(e)) => Err(format!("patching pod {pod}: {e}")),
        Err(_) => Err(format!("patching pod {pod}: timed out after {within:?}")),
    }
}

/// Label our Pod active and clear the label from every other Pod that still carries it (a crashed
/// or partitioned former leader cannot clear its own).
pub async fn mark_active(pods: &Api<Pod>, pod: &str, within: Duration) -> Result<(), String> {
    set_label(pods, pod, Some(ROLE_ACTIVE), within).await?;
    let lp = ListParams::default().labels(&format!("{ROLE_LABEL}={ROLE_ACTIVE}"));
    let list = match tokio::time::timeout(within, pods.list(&lp)).await {
        Ok(Ok(l)) => l,
        // Without `list` on pods (RBAC) we cannot find others; the operator clears them too.
        Ok(Err(kube::Error::Api(s))) if s.code == 403 => {
            debug!("cannot list pods to clear stale role labels: {}", s.message);
            return Ok(());
        }
        Ok(Err(e)) => return Err(format!("listing active pods: {e}")),
        Err(_) => return Err(format!("listing active pods: timed out after {within:?}")),
    };
    let mut first_err = Ok(());
    for other in list.items.iter().filter_map(|p| p.metadata.name.as_deref()).filter(|n| *n != pod) {
        info!(pod = other, "clearing the active role label from a former leader");
        if let Err(e) = set_label(pods, other, None, within).await {
            first_err = first_err.and(Err(e));
        }
    }
    first_err
}

/// Remove the role label from our Pod.
pub async fn mark_standby(pods: &Api<Pod>, pod: &str, within: Duration) -> Result<(), String> {
    set_label(pods, pod, None, within).await
}

/// Keep our Pod's label in line with `leading`: apply each change, retry failures every `retry`,
/// re-assert every `reassert` while leading. When `stop` fires (or the sender is gone) remove the
/// label one last time and return: being the only writer of our label, sequentially, no patch of
/// ours can land after that removal.
pub async fn follow(
    pods: Api<Pod>,
    pod: String,
    mut leading: watch::Receiver<bool>,
    within: Duration,
    retry: Duration,
    reassert: Duration,
    stop: CancellationToken,
) {
    loop {
        let want = *leading.borrow_and_update();
        let res = if want {
            mark_active(&pods, &pod, within).await
        } else {
            mark_standby(&pods, &pod, within).await
        };
        let wait = match &res {
            Err(e) => {
                warn!(pod = %pod, leading = want, "role label: {e}");
                retry
            }
            Ok(()) => {
                debug!(pod = %pod, leading = want, "role label applied");
                if want {
                    reassert
                } else {
                    Duration::MAX
                }
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = leading.changed() => if changed.is_err() { break },
            _ = sleep_for(wait) => {}
        }
    }
    if let Err(e) = mark_standby(&pods, &pod, within).await {
        warn!(pod = %pod, "role label on shutdown: {e}");
    }
}

async fn sleep_for(d: Duration) {
    if d == Duration::MAX {
        std::future::pending::<()>().await;
    } else {
        tokio::time::sleep(d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_active_pod_costs_more_to_delete() {
        let active = role_patch(Some(ROLE_ACTIVE));
        assert_eq!(active["metadata"]["labels"][ROLE_LABEL], ROLE_ACTIVE);
        assert_eq!(active["metadata"]["annotations"][DELETION_COST_ANNOTATION], ACTIVE_DELETION_COST);
        let standby = role_patch(None);
        assert!(standby["metadata"]["labels"][ROLE_LABEL].is_null());
        assert!(standby["metadata"]["annotations"][DELETION_COST_ANNOTATION].is_null());
        assert!(
            standby["metadata"]["annotations"]
                .as_object()
                .is_some_and(|m| m.contains_key(DELETION_COST_ANNOTATION)),
            "removed, not left out"
        );
    }
}
