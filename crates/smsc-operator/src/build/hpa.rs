//! The HorizontalPodAutoscaler: only when asked for and the topology is active/active, since
//! every new replica opens its own upstream binds.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior,
    HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget, ResourceMetricSource,
};
use smsc_api::crd::SmscCluster;

use super::Plan;

pub fn build(cluster: &SmscCluster, plan: &Plan) -> Option<HorizontalPodAutoscaler> {
    if !plan.autoscaled(cluster) {
        return None;
    }
    let a = &cluster.spec.autoscaling;
    let max = a.max_replicas.unwrap_or(cluster.spec.replicas).max(a.min_replicas);
    Some(HorizontalPodAutoscaler {
        metadata: plan.meta(plan.name.clone()),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: plan.name.clone(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(a.scale_down_stabilization_seconds),
                    ..HPAScalingRules::default()
                }),
                ..HorizontalPodAutoscalerBehavior::default()
            }),
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{load, plan_for};

    #[test]
    fn cpu_target_bounds_and_stabilisation() {
        let c = load("full.yaml");
        let spec = build(&c, &plan_for(&c)).and_then(|h| h.spec).unwrap_or_else(|| panic!("no hpa"));
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(3), 4));
        assert_eq!(spec.scale_target_ref.name, "sms");
        let m = spec.metrics.unwrap_or_default();
        assert_eq!(m[0].resource.as_ref().and_then(|r| r.target.average_utilization), Some(60));
        assert_eq!(
            spec.behavior.and_then(|b| b.scale_down).and_then(|s| s.stabilization_window_seconds),
            Some(300)
        );
    }

    #[test]
    fn none_unless_enabled_and_active_active() {
        let c = load("single-bind.yaml");
        assert!(c.spec.autoscaling.enabled);
        assert!(build(&c, &plan_for(&c)).is_none(), "checklist fails: ActiveStandby, no HPA");
        let mut c = load("full.yaml");
        c.spec.autoscaling.enabled = false;
        assert!(build(&c, &plan_for(&c)).is_none());
    }
}
