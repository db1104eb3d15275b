//! The PodDisruptionBudget: keeps a survivor through voluntary drains.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use smsc_api::crd::SmscCluster;

use super::Plan;
use crate::labels;

/// Unhealthy (not Ready) Pods may always be evicted.
pub const UNHEALTHY_POD_EVICTION_POLICY: &str = "AlwaysAllow";

/// None when disabled or when at most one replica can run (a PDB would then block every drain).
pub fn build(cluster: &SmscCluster, plan: &Plan) -> Option<PodDisruptionBudget> {
    let spec = &cluster.spec;
    let floor = if plan.autoscaled(cluster) { spec.autoscaling.min_replicas } else { spec.replicas };
    if !spec.pod_disruption_budget.enabled || floor <= 1 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: plan.meta(plan.name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(spec.pod_disruption_budget.min_available)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector(&plan.name)),
                ..LabelSelector::default()
            }),
            // A Pod that is not Ready protects nothing: evicting it must not wait for it to
            // become Ready (the default, IfHealthyBudget, can block a drain behind a crash loop).
            unhealthy_pod_eviction_policy: Some(UNHEALTHY_POD_EVICTION_POLICY.into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{load, plan_for};

    #[test]
    fn min_available_from_spec() {
        let c = load("full.yaml");
        let pdb = build(&c, &plan_for(&c)).and_then(|p| p.spec).unwrap_or_else(|| panic!("no pdb"));
        assert_eq!(pdb.min_available, Some(IntOrString::Int(2)));
        assert_eq!(pdb.unhealthy_pod_eviction_policy.as_deref(), Some("AlwaysAllow"));
        assert_eq!(
            pdb.selector
                .and_then(|s| s.match_labels)
                .unwrap_or_default()
                .get("app.kubernetes.io/instance")
                .map(String::as_str),
            Some("sms")
        );
    }

    #[test]
    fn none_for_one_replica_or_disabled() {
        let mut c = load("minimal.yaml");
        assert!(build(&c, &plan_for(&c)).is_some());
        c.spec.replicas = 1;
        assert!(build(&c, &plan_for(&c)).is_none());
        c.spec.replicas = 3;
        c.spec.pod_disruption_budget.enabled = false;
        assert!(build(&c, &plan_for(&c)).is_none());
    }
}
