//! The apply engine: server-side apply of the desired children (skipped when nothing differs),
//! pruning of children no longer wanted, and the hand-off of `spec.replicas` to the HPA.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use smsc_api::crd::SmscCluster;

use super::cache::{cached, Cached};
use super::context::Context;
use crate::build::{Children, Plan};
use crate::error::{Error, Result, Verb};
use crate::labels::{self, MANAGER};

/// Field manager that keeps `spec.replicas` while the HPA takes it over.
const HANDOFF_MANAGER: &str = "smsc-operator-hpa-handoff";

/// Is every field set in `desired` equal in `observed`? Server defaults (fields only in
/// `observed`) are ignored, so an unchanged child is not written again.
pub fn is_subset(desired: &serde_json::Value, observed: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (desired, observed) {
        (Value::Null, _) => true,
        (Value::Object(d), Value::Object(o)) => d.iter().all(|(k, v)| match o.get(k) {
            Some(ov) => is_subset(v, ov),
            None => {
                v.is_null()
                    || v.as_object().is_some_and(|m| m.is_empty())
                    || v.as_array().is_some_and(|a| a.is_empty())
            }
        }),
        (Value::Array(d), Value::Array(o)) => {
            d.len() == o.len() && d.iter().zip(o).all(|(a, b)| is_subset(a, b))
        }
        (d, o) => d == o,
    }
}

fn kind_of<K: k8s_openapi::Resource>() -> &'static str {
    K::KIND
}

/// Server-side apply unless the observed object already holds every desired field.
async fn apply<K>(ctx: &Context, ns: &str, desired: &K) -> Result<Option<K>>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Cached
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    apply_with(ctx, ns, desired, false).await
}

/// `always`: apply even when nothing differs (to drop fields this manager should no longer own).
async fn apply_with<K>(ctx: &Context, ns: &str, desired: &K, always: bool) -> Result<Option<K>>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Cached
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = desired.meta().name.clone().unwrap_or_default();
    let observed = cached::<K>(&ctx.stores, ns, &name);
    if let Some(obs) = observed.as_ref().filter(|_| !always) {
        let d = serde_json::to_value(desired).map_err(|e| Error::Render(e.to_string()))?;
        let o = serde_json::to_value(obs).map_err(|e| Error::Render(e.to_string()))?;
        if is_subset(&d, &o) {
            return Ok(observed);
        }
    }
    ctx.metrics.writes.inc();
    tracing::info!(kind = kind_of::<K>(), %ns, %name, "applying");
    let applied = api
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(desired))
        .await
        .map_err(|e| Error::kube(Verb::Apply, kind_of::<K>(), &name, e))?;
    Ok(Some(applied))
}

/// Delete children of this kind that carry the cluster's labels and owner but are not wanted.
async fn prune<K>(ctx: &Context, ns: &str, cluster: &str, uid: Option<&str>, keep: Option<&str>) -> Result<()>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Cached
        + k8s_openapi::Resource
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let ours = labels::labels(cluster);
    let wanted = [labels::INSTANCE_LABEL, labels::MANAGED_BY_LABEL];
    let list = K::store(&ctx.stores).state_filter(|o| {
        o.namespace().as_deref() == Some(ns) && wanted.iter().all(|k| o.labels().get(*k) == ours.get(*k))
    });
    for obj in list {
        let name = obj.name_any();
        let owned = obj.owner_references().iter().any(|o| Some(o.uid.as_str()) == uid);
        if !owned || Some(name.as_str()) == keep {
            continue;
        }
        ctx.metrics.writes.inc();
        tracing::info!(kind = kind_of::<K>(), %ns, %name, "deleting orphan");
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(Verb::Delete, kind_of::<K>(), name, e)),
        }
    }
    Ok(())
}

/// Before the Deployment is applied without `spec.replicas`, a second manager takes the field
/// over at its current value: dropping it outright would reset it to 1 until the HPA acts.
/// Reads the Deployment from the API server: the cache drops managedFields.
async fn hand_replicas_to_hpa(ctx: &Context, ns: &str, desired: &Deployment) -> Result<Handoff> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let name = desired.name_any();
    let Some(obs) = api.get_opt(&name).await.map_err(|e| Error::kube(Verb::Get, "Deployment", &name, e))?
    else {
        return Ok(Handoff::NoDeployment);
    };
    let we_own_replicas = obs.managed_fields().iter().any(|m| {
        m.manager.as_deref() == Some(MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get("f:spec").and_then(|s| s.get("f:replicas")).is_some())
    });
    let Some(replicas) = obs.spec.as_ref().and_then(|s| s.replicas) else { return Ok(Handoff::Nothing) };
    if !we_own_replicas {
        return Ok(Handoff::Nothing);
    }
    let patch = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "replicas": replicas },
    });
    ctx.metrics.writes.inc();
    api.patch(&name, &PatchParams::apply(HANDOFF_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|e| Error::kube(Verb::Apply, "Deployment", &name, e))?;
    Ok(Handoff::HandedOff)
}

enum Handoff {
    /// Not created yet: create it with spec.replicas, hand over on the next pass.
    NoDeployment,
    /// Done: the Deployment must now be applied even if nothing else differs, to release the field.
    HandedOff,
    Nothing,
}

pub(super) async fn apply_children(
    ctx: &Context,
    cluster: &SmscCluster,
    plan: &Plan,
    children: &Children,
) -> Result<Option<Deployment>> {
    let ns = plan.namespace.as_str();
    apply(ctx, ns, &children.service_account).await?;
    apply(ctx, ns, &children.role).await?;
    apply(ctx, ns, &children.role_binding).await?;
    apply(ctx, ns, &children.config_map).await?;
    let mut desired = children.deployment.clone();
    let mut always = false;
    if plan.autoscaled(cluster) {
        match hand_replicas_to_hpa(ctx, ns, &desired).await? {
            Handoff::NoDeployment => {
                // Start at spec.replicas rather than the API default of 1.
                let a = &cluster.spec.autoscaling;
                let max = a.max_replicas.unwrap_or(i32::MAX).max(a.min_replicas);
                if let Some(spec) = desired.spec.as_mut() {
                    spec.replicas = Some(cluster.spec.replicas.clamp(a.min_replicas, max));
                }
            }
            Handoff::HandedOff => always = true,
            Handoff::Nothing => {}
        }
    }
    let deployment = apply_with(ctx, ns, &desired, always).await?;
    apply(ctx, ns, &children.service).await?;
    let uid = cluster.metadata.uid.as_deref();
    match &children.pdb {
        Some(p) => {
            apply(ctx, ns, p).await?;
        }
        None => prune::<PodDisruptionBudget>(ctx, ns, &plan.name, uid, None).await?,
    }
    match &children.hpa {
        Some(h) => {
            apply(ctx, ns, h).await?;
        }
        None => prune::<HorizontalPodAutoscaler>(ctx, ns, &plan.name, uid, None).await?,
    }
    if let Some(l) = &children.lease {
        apply(ctx, ns, l).await?;
    }
    Ok(deployment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_defaults_but_not_changes() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 2775}], "empty": {}, "none": null}});
        let observed =
            json!({"spec": {"replicas": 2, "ports": [{"port": 2775, "protocol": "TCP"}], "extra": 1}});
        assert!(is_subset(&desired, &observed));
        assert!(!is_subset(&json!({"spec": {"replicas": 3}}), &observed));
        assert!(!is_subset(&json!({"spec": {"ports": [{"port": 2775}, {"port": 8775}]}}), &observed));
        assert!(!is_subset(&json!({"spec": {"missing": 1}}), &observed));
    }
}
