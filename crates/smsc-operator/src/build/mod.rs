//! Desired children, built by pure functions from the SmscCluster and the [`Plan`] made for it.
//! One module per child.

pub mod configmap;
pub mod deployment;
pub mod hpa;
pub mod lease;
pub mod pdb;
pub mod rbac;
pub mod service;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use smsc_api::crd::{ChecklistItem, SmscCluster, Topology};

use crate::checklist::{self, ChecklistInput, Decision, Rollout, UpstreamBinds};
use crate::error::{Error, Result};
use crate::labels;

/// Seconds added to preStop + drain, so SIGKILL never lands on a replica that is still draining.
pub const GRACE_MARGIN_SECONDS: i64 = 5;

/// What the operator decided for one SmscCluster, before building anything.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub name: String,
    pub namespace: String,
    /// None when rendering offline (no uid yet).
    pub owner: Option<OwnerReference>,
    pub image: String,
    pub checklist: Vec<ChecklistItem>,
    pub decision: Decision,
    pub termination_grace_period_seconds: i64,
    /// Versions of the Secrets smscd reads through its environment (fetched; None offline). A
    /// change rolls the Pods: environment variables are read once, at start.
    pub secrets_version: Option<String>,
    /// The Service selects `smsc.io/role=active` (see service.rs). Always in ActiveStandby; in
    /// ActiveActive once every Pod carries the static label (decided by the reconcile).
    pub service_selects_role: bool,
    /// How the Deployment replaces Pods, from the upstreams' bind capacity.
    pub rollout: Rollout,
}

impl Plan {
    /// Topology the children are built for (ActiveStandby while refused; nothing is applied then).
    pub fn topology(&self) -> Topology {
        match self.decision {
            Decision::Run(t) => t,
            Decision::Refused { .. } => Topology::ActiveStandby,
        }
    }

    /// The HPA owns `spec.replicas` only when asked for and running active/active.
    pub fn autoscaled(&self, cluster: &SmscCluster) -> bool {
        cluster.spec.autoscaling.enabled && self.topology() == Topology::ActiveActive
    }

    /// Child metadata: name, namespace, recommended labels, owner reference.
    pub fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels::labels(&self.name)),
            owner_references: self.owner.clone().map(|o| vec![o]),
            ..ObjectMeta::default()
        }
    }
}

/// The validate step: checklist, topology decision, image. Pure.
pub fn plan(cluster: &SmscCluster, default_image: &str, default_namespace: &str) -> Result<Plan> {
    let spec = &cluster.spec;
    let name =
        cluster.metadata.name.clone().ok_or_else(|| Error::InvalidSpec("metadata.name is missing".into()))?;
    let namespace = cluster.namespace().unwrap_or_else(|| default_namespace.to_string());
    let pre_stop = i64::from(spec.shutdown.pre_stop_sleep_seconds.max(0));
    let drain = i64::from(spec.shutdown.drain_seconds.max(0));
    let grace = pre_stop + drain + GRACE_MARGIN_SECONDS;
    let max_replicas = if spec.autoscaling.enabled {
        spec.autoscaling.max_replicas.unwrap_or(spec.replicas).max(spec.replicas)
    } else {
        spec.replicas
    };
    let input = ChecklistInput {
        max_replicas,
        topology: spec.topology,
        upstreams: spec
            .upstreams
            .iter()
            .map(|u| UpstreamBinds {
                name: u.name.clone(),
                binds_per_replica: u.binds_per_replica,
                max_binds: u.max_binds,
            })
            .collect(),
        dlr_store_shared: spec.dlr_store.type_ == smsc_api::crd::DlrStoreType::Redis,
        store_and_forward: spec.routing.store_and_forward
            || spec.routing.rules.iter().any(|r| r.store_and_forward == Some(true)),
        load_balancer_pins_connections: spec.scale_out_checklist.load_balancer_pins_connections,
        esmes_reconnect_with_backoff: spec.scale_out_checklist.esmes_reconnect_with_backoff,
        termination_grace_period_seconds: grace,
        pre_stop_sleep_seconds: pre_stop,
        drain_seconds: drain,
    };
    let items = checklist::evaluate(&input);
    let decision = checklist::decide(spec.topology, &items, input.dlr_store_shared);
    let rollout = match decision {
        Decision::Run(t) => checklist::rollout(t, &input),
        Decision::Refused { .. } => Rollout::Surge,
    };
    let image = spec.image.clone().unwrap_or_else(|| default_image.to_string());
    if image.is_empty() {
        return Err(Error::InvalidSpec("no image: set spec.image or the operator's --smscd-image".into()));
    }
    Ok(Plan {
        owner: cluster.controller_owner_ref(&()),
        name,
        namespace,
        image,
        checklist: items,
        decision,
        termination_grace_period_seconds: grace,
        secrets_version: None,
        service_selects_role: true,
        rollout,
    })
}

/// Every child of one SmscCluster. PDB and HPA are absent when not wanted (and then pruned).
#[derive(Clone, Debug)]
pub struct Children {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub pdb: Option<PodDisruptionBudget>,
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// smscd's election Lease (active/standby only; never pruned: it goes with the SmscCluster).
    pub lease: Option<Lease>,
}

pub fn children(cluster: &SmscCluster, plan: &Plan) -> Result<Children> {
    let rendered = configmap::render(cluster, plan)?;
    Ok(Children {
        service_account: rbac::service_account(plan),
        role: rbac::role(plan),
        role_binding: rbac::role_binding(plan),
        config_map: configmap::build(plan, &rendered)?,
        deployment: deployment::build(cluster, plan, &rendered)?,
        service: service::build(cluster, plan),
        pdb: pdb::build(cluster, plan),
        hpa: hpa::build(cluster, plan),
        lease: lease::build(plan),
    })
}

impl Children {
    /// All children as YAML documents, in apply order (for `smsc-operator render`).
    pub fn to_yaml(&self) -> Result<String> {
        fn doc<T: serde::Serialize>(out: &mut String, obj: &T) -> Result<()> {
            let text = serde_saphyr::to_string(obj).map_err(|e| Error::Render(e.to_string()))?;
            out.push_str("---\n");
            out.push_str(&text);
            if !text.ends_with('\n') {
                out.push('\n');
            }
            Ok(())
        }
        let mut out = String::new();
        doc(&mut out, &self.service_account)?;
        doc(&mut out, &self.role)?;
        doc(&mut out, &self.role_binding)?;
        doc(&mut out, &self.config_map)?;
        doc(&mut out, &self.deployment)?;
        doc(&mut out, &self.service)?;
        if let Some(p) = &self.pdb {
            doc(&mut out, p)?;
        }
        if let Some(h) = &self.hpa {
            doc(&mut out, h)?;
        }
        if let Some(l) = &self.lease {
            doc(&mut out, l)?;
        }
        Ok(out)
    }
}

/// A port from the spec as u16 (the schema bounds it; this keeps a bad stored value from panicking).
pub(crate) fn port(value: i32, field: &str) -> Result<u16> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::InvalidSpec(format!("{field}: {value} is not a port")))
}

/// Test helpers: clusters from YAML fixtures.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn cluster(yaml: &str) -> SmscCluster {
        let mut c: SmscCluster = match serde_saphyr::from_str(yaml) {
            Ok(c) => c,
            Err(e) => panic!("fixture does not parse: {e}"),
        };
        c.metadata.uid = Some("uid-1".into());
        c
    }

    pub fn load(name: &str) -> SmscCluster {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => cluster(&text),
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }

    pub fn plan_for(c: &SmscCluster) -> Plan {
        match super::plan(c, "smscd:test", "default") {
            Ok(p) => p,
            Err(e) => panic!("plan: {e}"),
        }
    }
}
