//! The apply engine: server-side apply of the desired children (skipped when nothing differs),
//! pruning of children no longer wanted, and the hand-off of `spec.replicas` to the HPA.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use smsc_api::crd::SmscCluster;

use super::cache::{cached, Cached, Stored};
use super::context::Context;
use super::drift::{self, APPLIED_HASH_ANNOTATION};
use crate::build::{Children, Plan};
use crate::error::{Error, Result, Verb};
use crate::labels::{self, MANAGER};

/// Field manager that keeps `spec.replicas` while the HPA takes it over.
const HANDOFF_MANAGER: &str = "smsc-operator-hpa-handoff";

fn kind_of<K: k8s_openapi::Resource>() -> &'static str {
    K::KIND
}

/// Server-side apply unless the observed object is what applying would give (see [`drift`]).
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
/// Never over an object of the same name that this cluster does not own.
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
    let desired_value = serde_json::to_value(desired).map_err(|e| Error::Render(e.to_string()))?;
    let hash = drift::hash(&desired_value);
    let mut desired = desired.clone();
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH_ANNOTATION.into(), hash.clone());
    let observed = cached::<K>(&ctx.stores, ns, &name);
    match &observed {
        Some(obs) => {
            refuse_foreign::<K>(ns, obs.meta(), desired.meta())?;
            let o = serde_json::to_value(obs).map_err(|e| Error::Render(e.to_string()))?;
            if !always && drift::up_to_date(&desired_value, &hash, &o) {
                return Ok(observed);
            }
        }
        None => {
            // The caches hold only objects with our labels: one of the same name without them
            // belongs to someone else, unless it carries our owner reference.
            let existing = api
                .get_metadata_opt(&name)
                .await
                .map_err(|e| Error::kube(Verb::Get, kind_of::<K>(), &name, e))?;
            if let Some(existing) = existing {
                refuse_foreign::<K>(ns, &existing.metadata, desired.meta())?;
            }
        }
    }
    ctx.metrics.writes.inc();
    tracing::info!(kind = kind_of::<K>(), %ns, %name, "applying");
    let applied = api
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired))
        .await
        .map_err(|e| Error::kube(Verb::Apply, kind_of::<K>(), &name, e))?;
    Ok(Some(applied))
}

/// [`Error::NotOwned`] unless `existing` may be applied over: it carries the owner reference of
/// the cluster `desired` is built for. The one exception is a Lease with no owner at all: smscd
/// creates its cluster's Lease when it starts first, and the operator adopts it.
fn refuse_foreign<K: k8s_openapi::Resource>(
    ns: &str,
    existing: &ObjectMeta,
    desired: &ObjectMeta,
) -> Result<()> {
    let ours: Vec<&str> = desired.owner_references.iter().flatten().map(|o| o.uid.as_str()).collect();
    let owners = existing.owner_references.as_deref().unwrap_or_default();
    if ours.is_empty() || owners.iter().any(|o| ours.contains(&o.uid.as_str())) {
        return Ok(());
    }
    if owners.is_empty() && K::KIND == <Lease as k8s_openapi::Resource>::KIND {
        return Ok(());
    }
    let holder = if owners.is_empty() {
        "it has no owner reference".to_string()
    } else {
        let list: Vec<String> = owners.iter().map(|o| format!("{} {}", o.kind, o.name)).collect();
        format!("owned by {}", list.join(", "))
    };
    let name = existing.name.clone().unwrap_or_default();
    Err(Error::NotOwned { kind: K::KIND, name: format!("{ns}/{name}"), holder })
}

/// Delete children of this kind that carry the cluster's labels and owner but are not wanted.
async fn prune<K>(ctx: &Context, ns: &str, cluster: &str, uid: Option<&str>, keep: Option<&str>) -> Result<()>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Stored
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
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn meta(owner_uid: Option<&str>) -> ObjectMeta {
        let owners = owner_uid.map(|uid| {
            json!([{ "apiVersion": "smsc.io/v1alpha1", "kind": "SmscCluster", "name": "sms", "uid": uid }])
        });
        serde_json::from_value(json!({ "name": "sms-config", "ownerReferences": owners }))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_our_own_objects_are_applied_over() {
        let desired = meta(Some("uid-1"));
        assert!(refuse_foreign::<ConfigMap>("ns", &meta(Some("uid-1")), &desired).is_ok());
        let err = refuse_foreign::<ConfigMap>("ns", &meta(None), &desired).err();
        let err = err.unwrap_or_else(|| panic!("took over an object with no owner"));
        assert_eq!(err.reason(), "ChildNotOwned");
        assert!(err.to_string().contains("ConfigMap ns/sms-config"), "{err}");
        // A cluster deleted and created again under the same name has a new uid.
        let err = refuse_foreign::<ConfigMap>("ns", &meta(Some("uid-0")), &desired).err();
        assert!(err.is_some_and(|e| e.to_string().contains("owned by SmscCluster sms")));
        // smscd's own Lease, created before the operator's, is adopted; another owner's is not.
        assert!(refuse_foreign::<Lease>("ns", &meta(None), &desired).is_ok());
        assert!(refuse_foreign::<Lease>("ns", &meta(Some("uid-0")), &desired).is_err());
        // Offline rendering has no owner: nothing to check.
        assert!(refuse_foreign::<ConfigMap>("ns", &meta(None), &meta(None)).is_ok());
    }
}
