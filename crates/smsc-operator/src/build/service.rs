//! The L4 Service ESMEs connect through.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use smsc_api::crd::{ExternalTrafficPolicy, ServiceType, SmscCluster, Topology};
use smsc_api::names::{ROLE_ACTIVE, ROLE_LABEL};

use super::Plan;
use crate::labels;

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

pub fn build(cluster: &SmscCluster, plan: &Plan) -> Service {
    let spec = &cluster.spec;
    let svc = &spec.service;
    let mut ports = vec![service_port("smpp", spec.smpp.port)];
    if let Some(tls) = &spec.smpp.tls {
        ports.push(service_port("smpp-tls", tls.port));
    }
    if spec.http.enabled {
        ports.push(service_port("http", spec.http.service_port.unwrap_or(spec.http.port)));
    }
    let mut selector = labels::selector(&plan.name);
    // Only Pods that take binds carry the role label: the ActiveStandby Lease holder (it labels
    // itself) and every ActiveActive Pod (from its template). A cluster whose ActiveActive Pods
    // predate that label keeps the plain selector until they are replaced.
    if plan.topology() == Topology::ActiveStandby || plan.service_selects_role {
        selector.insert(ROLE_LABEL.to_string(), ROLE_ACTIVE.to_string());
    }
    let type_ = match svc.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    // The API server rejects externalTrafficPolicy on ClusterIP Services.
    let etp = (svc.type_ != ServiceType::ClusterIP).then(|| match svc.external_traffic_policy {
        ExternalTrafficPolicy::Cluster => "Cluster".to_string(),
        ExternalTrafficPolicy::Local => "Local".to_string(),
    });
    let mut meta = plan.meta(plan.name.clone());
    if !svc.annotations.is_empty() {
        meta.annotations = Some(svc.annotations.clone());
    }
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            external_traffic_policy: etp,
            load_balancer_source_ranges: (svc.type_ == ServiceType::LoadBalancer
                && !svc.load_balancer_source_ranges.is_empty())
            .then(|| svc.load_balancer_source_ranges.clone()),
            ports: Some(ports),
            selector: Some(selector),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{load, plan_for};

    #[test]
    fn active_active_service_selects_every_replica() {
        let c = load("full.yaml");
        let s = build(&c, &plan_for(&c));
        let spec = s.spec.unwrap_or_default();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        let ports: Vec<_> = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port))
            .collect();
        assert_eq!(ports, vec![("smpp".into(), 2775), ("smpp-tls".into(), 8775)]);
        // Every ActiveActive Pod carries the role label: the selector is the ActiveStandby one.
        assert_eq!(spec.selector.unwrap_or_default().get("smsc.io/role").map(String::as_str), Some("active"));
        assert_eq!(spec.load_balancer_source_ranges, Some(vec!["192.0.2.0/24".to_string()]));
        assert!(s.metadata.annotations.unwrap_or_default().contains_key("lb.example/idle-timeout"));
    }

    #[test]
    fn active_active_pods_from_before_the_role_label_keep_the_plain_selector() {
        let c = load("full.yaml");
        let mut plan = plan_for(&c);
        assert_eq!(plan.topology(), Topology::ActiveActive);
        plan.service_selects_role = false;
        let selector = build(&c, &plan).spec.and_then(|s| s.selector).unwrap_or_default();
        assert!(!selector.contains_key("smsc.io/role"), "{selector:?}");
        // ActiveStandby always selects the holder.
        let c = load("single-bind.yaml");
        let mut plan = plan_for(&c);
        plan.service_selects_role = false;
        let selector = build(&c, &plan).spec.and_then(|s| s.selector).unwrap_or_default();
        assert_eq!(selector.get("smsc.io/role").map(String::as_str), Some("active"));
    }

    #[test]
    fn active_standby_selects_the_lease_holder_and_cluster_ip_has_no_policy() {
        let mut c = load("single-bind.yaml");
        c.spec.service.type_ = ServiceType::ClusterIP;
        let s = build(&c, &plan_for(&c));
        let spec = s.spec.unwrap_or_default();
        assert_eq!(spec.selector.unwrap_or_default().get("smsc.io/role").map(String::as_str), Some("active"));
        assert_eq!(spec.external_traffic_policy, None);
        assert_eq!(spec.ports.unwrap_or_default().len(), 1);
    }
}
