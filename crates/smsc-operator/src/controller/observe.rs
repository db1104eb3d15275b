//! Reading the outside world: what the spec refers to (Secrets), who holds the Lease, and what
//! the Deployment and the HPA report. Reads only; nothing here writes.

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use smsc_api::crd::{DlrStoreType, SmscCluster};

use super::cache::hash_of;
use super::context::Context;
use crate::build;
use crate::error::{Error, Result, Verb};
use crate::labels;
use crate::status::{AutoscalerObs, DeploymentObs};

/// Secret keys the spec refers to that do not exist (the Pods could not start).
pub(super) async fn missing_secrets(ctx: &Context, cluster: &SmscCluster, ns: &str) -> Result<Vec<String>> {
    let spec = &cluster.spec;
    let mut refs: Vec<(String, Option<String>)> = Vec::new();
    for u in &spec.upstreams {
        let c = &u.credentials_secret_ref;
        refs.push((c.name.clone(), Some(c.system_id_key.clone())));
        refs.push((c.name.clone(), Some(c.password_key.clone())));
        if let Some(ca) = u.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
            refs.push((ca.name.clone(), Some(ca.key.clone())));
        }
    }
    for a in &spec.smpp.accounts {
        refs.push((a.password_secret_ref.name.clone(), Some(a.password_secret_ref.key.clone())));
    }
    if let (DlrStoreType::Redis, Some(r)) = (spec.dlr_store.type_, &spec.dlr_store.redis) {
        refs.push((r.url_secret_ref.name.clone(), Some(r.url_secret_ref.key.clone())));
    }
    if let Some(t) = &spec.smpp.tls {
        refs.push((t.secret_name.clone(), None));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut cache: HashMap<String, Option<Secret>> = HashMap::new();
    let mut missing = Vec::new();
    for (name, key) in refs {
        if !cache.contains_key(&name) {
            let s = api.get_opt(&name).await.map_err(|e| Error::kube(Verb::Get, "Secret", &name, e))?;
            cache.insert(name.clone(), s);
        }
        let present = match (cache.get(&name).and_then(|s| s.as_ref()), &key) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(s), Some(k)) => {
                s.data.as_ref().is_some_and(|d| d.contains_key(k))
                    || s.string_data.as_ref().is_some_and(|d| d.contains_key(k))
            }
        };
        if !present {
            let item = match key {
                Some(k) => format!("{name}/{k}"),
                None => name,
            };
            if !missing.contains(&item) {
                missing.push(item);
            }
        }
    }
    Ok(missing)
}

/// The Lease holder, if the Lease exists and names one.
pub(super) fn lease_holder(ctx: &Context, ns: &str, cluster: &str) -> Option<String> {
    let lease = ctx.stores.leases.get(&ObjectRef::new(&labels::lease_name(cluster)).within(ns))?;
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone()).filter(|h| !h.is_empty())
}

/// The HPA's ScalingActive condition.
pub(super) fn autoscaler_obs(h: &HorizontalPodAutoscaler) -> AutoscalerObs {
    let conds = h.status.as_ref().and_then(|s| s.conditions.as_ref());
    AutoscalerObs::from_conditions(
        &h.name_any(),
        conds
            .into_iter()
            .flatten()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_deref(), c.message.as_deref())),
    )
}

pub(super) fn deployment_obs(d: &Deployment) -> DeploymentObs {
    let st = d.status.clone().unwrap_or_default();
    DeploymentObs {
        generation: d.metadata.generation,
        observed_generation: st.observed_generation,
        desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        replicas: st.replicas.unwrap_or(0),
        ready: st.ready_replicas.unwrap_or(0),
        updated: st.updated_replicas.unwrap_or(0),
        available: st.available_replicas.unwrap_or(0),
        image: d.spec.as_ref().and_then(|s| {
            let cs = &s.template.spec.as_ref()?.containers;
            cs.iter().find(|c| c.name == build::deployment::CONTAINER).or(cs.first())?.image.clone()
        }),
    }
}

/// What a reconcile reads of a Deployment (plus its labels and annotations, which an apply
/// would restore): the fingerprint that decides whether a Deployment event triggers a reconcile.
pub(super) fn deployment_material(d: &Deployment) -> u64 {
    hash_of(&(
        deployment_obs(d),
        &d.metadata.labels,
        &d.metadata.annotations,
        d.metadata.deletion_timestamp.is_some(),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::cache::{trim_deployment, LAST_APPLIED};
    use super::*;
    use serde_json::json;

    #[test]
    fn trimmed_deployments_keep_what_the_reconcile_reads() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "sms", "namespace": "default", "generation": 2,
                "annotations": { LAST_APPLIED: "{}", "keep": "1" },
                "managedFields": [{ "manager": "x", "operation": "Apply" }] },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": { "replicas": 2, "readyReplicas": 1, "conditions": [{ "type": "Available", "status": "True" }] },
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let before = deployment_obs(&d);
        trim_deployment(&mut d);
        assert_eq!(deployment_obs(&d), before);
        assert!(d.metadata.managed_fields.is_none());
        assert_eq!(d.metadata.annotations.as_ref().map(|a| a.len()), Some(1));
        assert!(d.status.as_ref().is_some_and(|s| s.conditions.is_none()));
    }
}
