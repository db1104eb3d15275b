//! One reconcile: fetch -> validate -> build (pure) -> apply -> status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use smsc_api::crd::{ConditionStatus, ConditionType, SmscCluster, SmscClusterStatus, Topology};
use tracing::Instrument;

use super::apply::apply_children;
use super::cache::cached;
use super::context::{key, Context};
use super::observe::{
    active_active_selects_role, autoscaler_obs, deployment_obs, handlers_config_map_missing, lease_holder,
    pod_problem, secrets,
};
use super::pods::fix_role_labels;
use crate::build;
use crate::checklist::{names, Decision};
use crate::error::{Error, Result, Verb};
use crate::labels::{self, MANAGER};
use crate::status::{self, AutoscalerObs, Inputs};

/// Resync period. Pods that stop or start being stuck trigger a reconcile through their watch
/// (see `observe::pod_material`), so unready Pods need no faster polling.
const RESYNC: Duration = Duration::from_secs(300);

/// Exponential back-off per object: 1 s, 2 s, 4 s ... capped at 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_secs((1u64 << exp).min(300))
}

/// Publish the status: the condition gauge always (a restarted operator patches nothing on a
/// settled cluster), the status subresource only when it changed.
async fn patch_status(ctx: &Context, cluster: &SmscCluster, new: &SmscClusterStatus) -> Result<()> {
    let name = cluster.name_any();
    let status_str = |s: ConditionStatus| match s {
        ConditionStatus::True => "True",
        ConditionStatus::False => "False",
        ConditionStatus::Unknown => "Unknown",
    };
    let conditions = new.conditions.iter().map(|c| (c.type_.as_str(), status_str(c.status)));
    ctx.metrics.set_conditions(&cluster.namespace().unwrap_or_default(), &name, conditions);
    if cluster.status.as_ref() == Some(new) {
        return Ok(());
    }
    let api: Api<SmscCluster> = Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": format!("{}/{}", smsc_api::names::GROUP, smsc_api::crd::VERSION),
        "kind": "SmscCluster",
        "status": new,
    });
    api.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|e| Error::kube(Verb::PatchStatus, "SmscCluster", &name, e))?;
    Ok(())
}

fn was(old: Option<&SmscClusterStatus>, t: ConditionType, reason: &str) -> bool {
    old.and_then(|s| status::condition(s, t))
        .is_some_and(|c| c.status == ConditionStatus::True && c.reason == reason)
}

/// The typed SmscCluster, or [`Error::Malformed`] when the stored object does not fit the types.
pub fn parse(obj: &DynamicObject) -> Result<SmscCluster> {
    serde_json::to_value(obj)
        .and_then(serde_json::from_value)
        .map_err(|source| Error::Malformed { name: key(obj), source })
}

/// One reconcile, as a tracing span carrying the cluster's namespace and name. A failure shows
/// in the status as `Degraded` (see [`Error::shows_in_status`]) before the back-off.
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action> {
    let span = tracing::info_span!("reconcile", namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
    async move {
        let started = Instant::now();
        ctx.metrics.reconciles.inc();
        let res = reconcile_inner(&obj, &ctx).await;
        ctx.metrics.duration.observe(started.elapsed().as_secs_f64());
        match &res {
            Ok(_) => ctx.clear_failures(&key(&obj)),
            Err(err) if err.shows_in_status() => report_failure(&obj, &ctx, err).await,
            Err(_) => {}
        }
        res
    }
    .instrument(span)
    .await
}

/// `Degraded=True` with the error's reason and message; the rest of the status stays as it was.
async fn report_failure(obj: &DynamicObject, ctx: &Context, err: &Error) {
    let Ok(cluster) = parse(obj) else { return };
    if cluster.metadata.deletion_timestamp.is_some() {
        return;
    }
    let new = status::failed(
        cluster.status.as_ref(),
        cluster.metadata.generation,
        err.reason(),
        err.to_string(),
        &status::now(),
    );
    if let Err(e) = patch_status(ctx, &cluster, &new).await {
        tracing::warn!(error = %e, "could not report the failure in the status");
    }
}

async fn reconcile_inner(obj: &DynamicObject, ctx: &Context) -> Result<Action> {
    let cluster = match parse(obj) {
        Ok(c) => c,
        Err(err) => {
            // Retrying cannot help: wait for the object to change.
            tracing::warn!(error = %err, "skipping malformed SmscCluster");
            ctx.metrics.error(err.metric_label());
            ctx.event(obj, EventType::Warning, err.reason(), err.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    if cluster.metadata.deletion_timestamp.is_some() {
        ctx.forget(&key(obj));
        // Children go with it through their owner references.
        return Ok(Action::await_change());
    }
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let old = cluster.status.as_ref();
    ctx.stores.synced().await?;

    // Validate (pure).
    let plan = build::plan(&cluster, &ctx.settings.smscd_image, &ns)?;
    let selector = labels::selector_string(&labels::selector(&name));

    if cluster.spec.paused {
        let d = cached::<Deployment>(&ctx.stores, &ns, &name);
        let inputs = Inputs {
            generation: cluster.metadata.generation,
            paused: true,
            checklist: &plan.checklist,
            decision: &plan.decision,
            selector,
            deployment: d.as_ref().map(deployment_obs),
            active_pod: old.and_then(|s| s.active_pod.clone()),
            problem: None,
            autoscaler: cached::<HorizontalPodAutoscaler>(&ctx.stores, &ns, &name)
                .as_ref()
                .map(autoscaler_obs),
        };
        let new = status::compute(old, &inputs, &status::now());
        patch_status(ctx, &cluster, &new).await?;
        return Ok(Action::await_change());
    }

    // Fetch what the spec refers to.
    let found = secrets(ctx, &cluster, &ns).await?;
    let service_selects_role = active_active_selects_role(ctx, &ns, &name);
    let plan = build::Plan { secrets_version: Some(found.env_version), service_selects_role, ..plan };
    let missing = found.missing;
    let secrets_problem = (!missing.is_empty()).then(|| {
        ("SecretMissing".to_string(), format!("referenced Secret keys do not exist: {}", missing.join(", ")))
    });
    let config_map_problem = handlers_config_map_missing(ctx, &cluster, &ns).await?.map(|item| {
        let what =
            format!("the handlers script ConfigMap key {item} (spec.handlers.configMapRef) does not exist");
        ("ConfigMapMissing".to_string(), what)
    });

    let deployment = match &plan.decision {
        d @ Decision::Refused { .. } => {
            // Leave the running children exactly as they are.
            let reason = d.refused_reason().unwrap_or_default();
            if !was(old, ConditionType::Degraded, &reason) {
                let note = d.refused_note().unwrap_or_default();
                tracing::warn!(%ns, %name, %note);
                ctx.event(obj, EventType::Warning, &reason, note).await;
            }
            cached::<Deployment>(&ctx.stores, &ns, &name)
        }
        Decision::Run(topology) => {
            let children = build::children(&cluster, &plan)?;
            let d = apply_children(ctx, &cluster, &plan, &children).await?;
            let before = ctx.written_topology(&key(obj)).or(old.and_then(|s| s.topology));
            if before != Some(*topology) {
                let (type_, note) = match (topology, cluster.spec.topology) {
                    (Topology::ActiveStandby, Topology::Auto) => {
                        let unmet: Vec<_> =
                            plan.checklist.iter().filter(|i| !i.satisfied).map(|i| i.name).collect();
                        (
                            EventType::Warning,
                            format!("running ActiveStandby: unmet checklist items {}", names(&unmet)),
                        )
                    }
                    (t, _) => (EventType::Normal, format!("running {}", t.as_str())),
                };
                ctx.event(obj, type_, "TopologyChanged", note).await;
            }
            d
        }
    };

    let topology = match plan.decision {
        Decision::Run(t) => Some(t),
        Decision::Refused { .. } => old.and_then(|s| s.topology),
    };
    let holder = if topology == Some(Topology::ActiveStandby) { lease_holder(ctx, &ns, &name) } else { None };
    let autoscaler = match plan.decision {
        Decision::Run(_) if plan.autoscaled(&cluster) => Some(
            cached::<HorizontalPodAutoscaler>(&ctx.stores, &ns, &name)
                .as_ref()
                .map(autoscaler_obs)
                .unwrap_or_else(AutoscalerObs::missing),
        ),
        _ => None,
    };
    if topology == Some(Topology::ActiveStandby) {
        fix_role_labels(ctx, &ns, &name, holder.as_deref()).await?;
    }

    let observed = deployment.as_ref().map(deployment_obs);
    // A missing Secret or ConfigMap explains Pods that cannot start: it comes first.
    let problem = match secrets_problem.or(config_map_problem) {
        Some(p) => Some(p),
        None => pod_problem(ctx, &ns, &name, observed.as_ref()),
    };
    if let Some((reason, message)) = &problem {
        if !was(old, ConditionType::Degraded, reason) {
            ctx.event(obj, EventType::Warning, reason, message.clone()).await;
        }
    }

    let inputs = Inputs {
        generation: cluster.metadata.generation,
        paused: false,
        checklist: &plan.checklist,
        decision: &plan.decision,
        selector,
        deployment: observed.clone(),
        active_pod: holder,
        problem,
        autoscaler,
    };
    let new = status::compute(old, &inputs, &status::now());
    patch_status(ctx, &cluster, &new).await?;
    if let Some(t) = new.topology {
        ctx.set_written_topology(key(obj), t);
    }
    Ok(Action::requeue(RESYNC))
}

pub fn error_policy(obj: Arc<DynamicObject>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.record_failure(&key(&obj));
    let wait = backoff(n);
    ctx.metrics.error(err.metric_label());
    tracing::warn!(object = %key(&obj), error = %err, retry_in = ?wait, "reconcile failed");
    let (reason, note) = (err.reason(), err.to_string());
    let ctx2 = ctx.clone();
    tokio::spawn(async move { ctx2.event(&obj, EventType::Warning, reason, note).await });
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backoff_doubles_and_caps() {
        let secs: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    fn dynamic(spec: serde_json::Value) -> DynamicObject {
        let obj = json!({
            "apiVersion": "smsc.io/v1alpha1", "kind": "SmscCluster",
            "metadata": { "name": "sms", "namespace": "default" },
            "spec": spec,
        });
        serde_json::from_value(obj).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn malformed_objects_are_reported_not_fatal() {
        let ok = parse(&dynamic(json!({ "replicas": 3 }))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.spec.replicas, 3);
        let err = parse(&dynamic(json!({ "replicas": "three", "topology": "Sideways" }))).err();
        let err = err.unwrap_or_else(|| panic!("parsed a malformed object"));
        assert_eq!(err.metric_label(), "malformed_object");
        assert!(err.to_string().contains("default/sms"), "{err}");
    }
}
