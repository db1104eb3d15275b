//! Reading the outside world: what the spec refers to (Secrets), who holds the Lease, and what
//! the Deployment and the HPA report. Reads only; nothing here writes.

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use smsc_api::crd::{DlrStoreType, SmscCluster};
use smsc_api::names::{ROLE_ACTIVE, ROLE_LABEL};

use super::cache::{cached, hash_of, trim_meta};
use super::compact::CompactPod;
use super::context::Context;
use crate::build;
use crate::error::{Error, Result, Verb};
use crate::labels;
use crate::status::{AutoscalerObs, DeploymentObs};

/// What the spec's Secret references found.
pub(super) struct SecretsObs {
    /// Referenced keys that do not exist (the Pods could not start).
    pub missing: Vec<String>,
    /// uid and resourceVersion of every Secret smscd reads through its environment, hashed: a
    /// rotation changes it and rolls the Pods. Versions rather than values, so the annotation
    /// says nothing about a password. Secrets mounted as files (TLS, upstream CA) are left out:
    /// smscd reloads those files itself.
    pub env_version: String,
}

/// Reads every Secret the spec refers to (GET by name: the operator may not list Secrets).
pub(super) async fn secrets(ctx: &Context, cluster: &SmscCluster, ns: &str) -> Result<SecretsObs> {
    let spec = &cluster.spec;
    // (Secret, key, read through the environment)
    let mut refs: Vec<(String, Option<String>, bool)> = Vec::new();
    for u in &spec.upstreams {
        let c = &u.credentials_secret_ref;
        refs.push((c.name.clone(), Some(c.system_id_key.clone()), true));
        refs.push((c.name.clone(), Some(c.password_key.clone()), true));
        if let Some(ca) = u.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
            refs.push((ca.name.clone(), Some(ca.key.clone()), false));
        }
    }
    for a in &spec.smpp.accounts {
        refs.push((a.password_secret_ref.name.clone(), Some(a.password_secret_ref.key.clone()), true));
    }
    if let (DlrStoreType::Redis, Some(r)) = (spec.dlr_store.type_, &spec.dlr_store.redis) {
        for (_, s) in crate::build::configmap::redis_secret_envs(r) {
            refs.push((s.name.clone(), Some(s.key.clone()), true));
        }
    }
    for a in crate::build::configmap::http_accounts(spec) {
        if let Some(s) = &a.secret_ref {
            refs.push((s.name.clone(), Some(s.key.clone()), true));
        }
    }
    if let Some(t) = &spec.smpp.tls {
        refs.push((t.secret_name.clone(), None, false));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut cache: HashMap<String, Option<Secret>> = HashMap::new();
    let mut missing = Vec::new();
    let mut versions: std::collections::BTreeSet<(String, String, String)> = Default::default();
    for (name, key, env) in refs {
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
        if env {
            if let Some(s) = cache.get(&name).and_then(|s| s.as_ref()) {
                let (uid, rv) = (s.metadata.uid.clone(), s.metadata.resource_version.clone());
                versions.insert((name.clone(), uid.unwrap_or_default(), rv.unwrap_or_default()));
            }
        }
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
    Ok(SecretsObs { missing, env_version: env_version(&versions) })
}

/// The `spec.handlers.configMapRef` ConfigMap or key, as `name/key`, when it does not exist: the
/// kubelet cannot mount the script, and the Pods wait in ContainerCreating with no reason a Pod
/// status shows. Read by name (GET) like the Secrets: the user's ConfigMap is not one of the
/// children the operator watches.
pub(super) async fn handlers_config_map_missing(
    ctx: &Context,
    cluster: &SmscCluster,
    ns: &str,
) -> Result<Option<String>> {
    let Some(r) = cluster.spec.handlers.as_ref().and_then(|h| h.config_map_ref.as_ref()) else {
        return Ok(None);
    };
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let cm = api.get_opt(&r.name).await.map_err(|e| Error::kube(Verb::Get, "ConfigMap", &r.name, e))?;
    Ok(config_map_key_missing(cm.as_ref(), &r.key).then(|| format!("{}/{}", r.name, r.key)))
}

/// Is `key` absent from the ConfigMap (or the ConfigMap itself absent)?
fn config_map_key_missing(cm: Option<&ConfigMap>, key: &str) -> bool {
    !cm.is_some_and(|cm| {
        cm.data.as_ref().is_some_and(|d| d.contains_key(key))
            || cm.binary_data.as_ref().is_some_and(|d| d.contains_key(key))
    })
}

/// A short digest of (name, uid, resourceVersion) triples, in name order.
fn env_version(versions: &std::collections::BTreeSet<(String, String, String)>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, uid, rv) in versions {
        for part in [name, uid, rv] {
            h.update(part.as_bytes());
            h.update([0]);
        }
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The holder of `lease` at `now`: named, and renewed within its duration. A holder that stopped
/// renewing (crashed, partitioned) is no holder, so `status.activePod` does not name it. Uses the
/// renewTime the holder wrote, so it assumes clocks agree to well within the lease duration
/// (NTP on the nodes); the electors themselves do not rely on that.
pub fn current_holder(lease: &Lease, now: k8s_openapi::jiff::Timestamp) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration =
        k8s_openapi::jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds?.max(0)));
    (renewed.checked_add(duration).ok()? > now).then_some(holder)
}

/// The current Lease holder, from the cache.
pub(super) fn lease_holder(ctx: &Context, ns: &str, cluster: &str) -> Option<String> {
    let lease = ctx.stores.leases.get(&ObjectRef::new(&labels::lease_name(cluster)).within(ns))?;
    current_holder(&lease, k8s_openapi::jiff::Timestamp::now())
}

/// The current Lease holder, read from the API server now (the cache may lag a new holder).
pub(super) async fn live_lease_holder(ctx: &Context, ns: &str, cluster: &str) -> Result<Option<String>> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), ns);
    let name = labels::lease_name(cluster);
    let lease = api.get_opt(&name).await.map_err(|e| Error::kube(Verb::Get, "Lease", &name, e))?;
    Ok(lease.and_then(|l| current_holder(&l, k8s_openapi::jiff::Timestamp::now())))
}

/// Does the Service select `smsc.io/role=active` in ActiveActive? Yes once every Pod carries the
/// label from its template: a new cluster (no Service yet), a Service that already does, or a
/// Deployment fully rolled out to a template with the label. Until then (Pods from before the
/// label) the plain selector stays, so no Pod that takes binds is left out.
pub(super) fn active_active_selects_role(ctx: &Context, ns: &str, cluster: &str) -> bool {
    let Some(svc) = cached::<Service>(&ctx.stores, ns, cluster) else { return true };
    let selects = |s: &Service| {
        s.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|m| m.contains_key(ROLE_LABEL))
    };
    if selects(&svc) {
        return true;
    }
    cached::<Deployment>(&ctx.stores, ns, cluster).is_some_and(|d| rolled_out_with_role(&d))
}

/// Every replica of `d` comes from its current template, is ready, and that template labels
/// Pods `smsc.io/role=active`.
fn rolled_out_with_role(d: &Deployment) -> bool {
    let Some(spec) = d.spec.as_ref() else { return false };
    let labelled = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .is_some_and(|l| l.get(ROLE_LABEL).map(String::as_str) == Some(ROLE_ACTIVE));
    let st = d.status.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1);
    labelled
        && st.observed_generation == d.metadata.generation
        && st.updated_replicas.unwrap_or(0) == want
        && st.replicas.unwrap_or(0) == want
        && st.ready_replicas.unwrap_or(0) == want
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
        failure: deployment_failure(&d.name_any(), st.conditions.iter().flatten()),
    }
}

/// A Deployment condition that means it cannot get on by itself: a ReplicaSet that cannot create
/// Pods (`ReplicaFailure`, e.g. a ResourceQuota) or a rollout past its progress deadline.
fn is_failure(c: &DeploymentCondition) -> bool {
    match c.type_.as_str() {
        "ReplicaFailure" => c.status == "True",
        "Progressing" => c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"),
        _ => false,
    }
}

/// The first failure among the conditions, as (reason, message) for `Degraded`.
fn deployment_failure<'a>(
    name: &str,
    conditions: impl Iterator<Item = &'a DeploymentCondition>,
) -> Option<(String, String)> {
    let c = conditions.filter(|c| is_failure(c)).min_by_key(|c| c.type_ != "ReplicaFailure")?;
    let reason = if c.type_ == "ReplicaFailure" { "ReplicaFailure" } else { "ProgressDeadlineExceeded" };
    let detail = c.message.as_deref().or(c.reason.as_deref()).unwrap_or_default();
    Some((reason.to_string(), format!("Deployment {name}: {detail}")))
}

/// Deployments in the cache: the reconcile reads the spec (to compare), the replica counts and
/// the failure conditions, not the timestamps kube-controller-manager keeps rewriting (each
/// rewrite would otherwise look like a change).
pub(super) fn trim_deployment(d: &mut Deployment) {
    trim_meta(&mut d.metadata);
    if let Some(st) = d.status.as_mut() {
        let failures: Vec<DeploymentCondition> = st
            .conditions
            .take()
            .into_iter()
            .flatten()
            .filter(is_failure)
            .map(|c| DeploymentCondition { last_update_time: None, last_transition_time: None, ..c })
            .collect();
        st.conditions = (!failures.is_empty()).then_some(failures);
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

/// Container waiting reasons that do not clear without a change (image, config, a crash loop),
/// and the condition reason each becomes.
const STUCK: [(&str, &str); 5] = [
    ("ErrImagePull", "ImagePullFailed"),
    ("ImagePullBackOff", "ImagePullFailed"),
    ("InvalidImageName", "ImagePullFailed"),
    ("CrashLoopBackOff", "CrashLoopBackOff"),
    ("CreateContainerConfigError", "CreateContainerConfigError"),
];

/// Why the cluster's Pods do not start, while some of the Deployment's Pods exist but are not
/// ready. Read from the Pod cache (its watch keeps each Pod's stuck reason, see
/// [`super::compact::CompactPod`]), so a cluster whose Pods stay unready costs no request: a
/// LIST per reconcile was 1,000 LISTs every 10 s at 1,000 clusters.
pub(super) fn pod_problem(
    ctx: &Context,
    ns: &str,
    cluster: &str,
    deployment: Option<&DeploymentObs>,
) -> Option<(String, String)> {
    if !deployment.is_some_and(unready_pods) {
        return None;
    }
    let selector = labels::selector(cluster);
    let mut pods = ctx.stores.pods.state_filter(|p| {
        p.stuck.is_some()
            && p.namespace().as_deref() == Some(ns)
            && selector.iter().all(|(k, v)| p.labels().get(k) == Some(v))
    });
    // The first stuck Pod by name, so the message does not flap with the cache's order.
    pods.sort_by_key(|p| p.name_any());
    pods.first().and_then(|p| p.stuck.clone())
}

/// What of a Pod can change a reconcile's outcome: its role label and whether (and why) a
/// container is stuck. A Pod event triggers a reconcile only when this changes, so status churn
/// (probes, restarts counted, IPs) costs nothing.
pub(super) fn pod_material(p: &CompactPod) -> String {
    let role = p.labels().get(ROLE_LABEL).map(String::as_str).unwrap_or_default();
    let stuck = p.stuck.as_ref().map(|(r, m)| format!("{r}\u{1f}{m}")).unwrap_or_default();
    format!("{role}\u{1f}{stuck}")
}

/// Does the Deployment have Pods that are not ready?
pub(super) fn unready_pods(d: &DeploymentObs) -> bool {
    d.replicas > d.ready
}

/// The Pod's first container (init containers first) waiting for a reason in [`STUCK`]: the
/// condition reason and the message naming the Pod and the container.
pub(super) fn stuck_pod(p: &Pod) -> Option<(String, String)> {
    let st = p.status.as_ref()?;
    let containers =
        st.init_container_statuses.iter().flatten().chain(st.container_statuses.iter().flatten());
    containers.into_iter().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let why = waiting.reason.as_deref()?;
        let (_, reason) = STUCK.iter().find(|(w, _)| *w == why)?;
        let detail = waiting.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        Some((reason.to_string(), format!("Pod {} container {}: {why}{detail}", p.name_any(), c.name)))
    })
}

#[cfg(test)]
mod tests {
    use super::super::cache::LAST_APPLIED;
    use super::*;
    use serde_json::json;

    #[test]
    fn trimmed_deployments_keep_what_the_reconcile_reads() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "sms", "namespace": "default", "generation": 2,
                "annotations": { LAST_APPLIED: "{}", "keep": "1" },
                "managedFields": [{ "manager": "x", "operation": "Apply" }] },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": { "replicas": 2, "readyReplicas": 1, "conditions": [
                { "type": "Available", "status": "True" },
                { "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                  "message": "pods \"sms-1\" is forbidden: exceeded quota", "lastUpdateTime": "2026-01-01T00:00:00Z" },
            ] },
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let before = deployment_obs(&d);
        assert_eq!(
            before.failure,
            Some((
                "ReplicaFailure".into(),
                "Deployment sms: pods \"sms-1\" is forbidden: exceeded quota".into()
            ))
        );
        trim_deployment(&mut d);
        assert_eq!(deployment_obs(&d), before);
        assert!(d.metadata.managed_fields.is_none());
        assert_eq!(d.metadata.annotations.as_ref().map(|a| a.len()), Some(1));
        let conds = d.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        assert_eq!(conds.len(), 1, "only the failure is kept");
        assert!(conds[0].last_update_time.is_none(), "without the timestamps kcm rewrites");
    }

    #[test]
    fn progress_deadline_exceeded_is_a_failure_progressing_is_not() {
        let cond = |t: &str, s: &str, r: &str| DeploymentCondition {
            type_: t.into(),
            status: s.into(),
            reason: Some(r.into()),
            message: Some(format!("{t} {r}")),
            ..Default::default()
        };
        let ok = [
            cond("Progressing", "True", "NewReplicaSetAvailable"),
            cond("Available", "True", "MinimumReplicasAvailable"),
        ];
        assert_eq!(deployment_failure("sms", ok.iter()), None);
        let stuck = [cond("Progressing", "False", "ProgressDeadlineExceeded")];
        let f = deployment_failure("sms", stuck.iter()).map(|f| f.0);
        assert_eq!(f.as_deref(), Some("ProgressDeadlineExceeded"));
        let both = [
            cond("Progressing", "False", "ProgressDeadlineExceeded"),
            cond("ReplicaFailure", "True", "FailedCreate"),
        ];
        assert_eq!(deployment_failure("sms", both.iter()).map(|f| f.0).as_deref(), Some("ReplicaFailure"));
    }

    fn pod(name: &str, waiting: Option<(&str, &str)>) -> Pod {
        let state = match waiting {
            Some((r, m)) => json!({ "waiting": { "reason": r, "message": m } }),
            None => json!({ "running": {} }),
        };
        serde_json::from_value(json!({
            "metadata": { "name": name },
            "status": { "containerStatuses": [{ "name": "smscd", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": state }] },
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn stuck_containers_name_the_pod_and_the_reason() {
        assert_eq!(stuck_pod(&pod("a", None)), None);
        assert_eq!(stuck_pod(&pod("b", Some(("ContainerCreating", "")))), None);
        let pull = stuck_pod(&pod("b", Some(("ErrImagePull", "not found"))));
        assert_eq!(
            pull,
            Some(("ImagePullFailed".into(), "Pod b container smscd: ErrImagePull: not found".into()))
        );
        let crash = stuck_pod(&pod("c", Some(("CrashLoopBackOff", "back-off 10s")))).map(|p| p.0);
        assert_eq!(crash.as_deref(), Some("CrashLoopBackOff"));
        let config = stuck_pod(&pod("d", Some(("CreateContainerConfigError", "secret \"x\" not found"))));
        assert!(config.is_some_and(|c| c.0 == "CreateContainerConfigError" && c.1.contains("secret")));
    }

    /// Status churn does not reconcile; a new role or a container getting (un)stuck does.
    #[test]
    fn pod_material_changes_only_with_the_role_or_a_stuck_reason() {
        let m = |p: Pod| pod_material(&CompactPod::new(p));
        let base = m(pod("a", Some(("ContainerCreating", ""))));
        assert_eq!(base, m(pod("a", None)), "not stuck either way");
        let stuck = m(pod("a", Some(("ErrImagePull", "not found"))));
        assert_ne!(base, stuck);
        assert_ne!(stuck, m(pod("a", Some(("ErrImagePull", "timeout")))), "the message is shown");
        let mut active = pod("a", None);
        active.metadata.labels = Some([(ROLE_LABEL.to_string(), ROLE_ACTIVE.to_string())].into());
        assert_ne!(base, m(active));
    }
}

#[cfg(test)]
mod config_map_tests {
    use super::config_map_key_missing;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[test]
    fn a_missing_config_map_or_key_is_missing() {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "h" }, "data": { "smpp_script.py": "" }, "binaryData": { "b.py": "" },
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(config_map_key_missing(None, "smpp_script.py"));
        assert!(config_map_key_missing(Some(&cm), "other.py"));
        assert!(!config_map_key_missing(Some(&cm), "smpp_script.py"));
        assert!(!config_map_key_missing(Some(&cm), "b.py"));
    }
}

#[cfg(test)]
mod secrets_tests {
    use super::env_version;
    use std::collections::BTreeSet;

    fn v(items: &[(&str, &str, &str)]) -> String {
        let set: BTreeSet<(String, String, String)> =
            items.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
        env_version(&set)
    }

    #[test]
    fn a_rotated_or_recreated_secret_changes_the_version() {
        let base = v(&[("esme", "u1", "10"), ("redis", "u2", "20")]);
        assert_eq!(base, v(&[("redis", "u2", "20"), ("esme", "u1", "10")]), "order does not matter");
        assert_ne!(base, v(&[("esme", "u1", "11"), ("redis", "u2", "20")]), "data updated");
        assert_ne!(base, v(&[("esme", "u9", "10"), ("redis", "u2", "20")]), "deleted and created again");
        assert_ne!(v(&[("ab", "", "c")]), v(&[("a", "b", "c")]), "parts are delimited");
        assert_eq!(base.len(), 16);
    }
}

#[cfg(test)]
mod holder_tests {
    use super::current_holder;
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    fn lease(holder: &str, renewed: Timestamp, secs: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(secs),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn an_expired_or_empty_holder_holds_nothing() {
        let now = Timestamp::from_second(1_000_000).unwrap_or_else(|e| panic!("{e}"));
        let ago = |s: i64| now.checked_sub(SignedDuration::from_secs(s)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(current_holder(&lease("a", ago(5), 15), now).as_deref(), Some("a"));
        assert_eq!(current_holder(&lease("a", ago(15), 15), now), None, "expired at the duration");
        assert_eq!(current_holder(&lease("a", ago(3600), 15), now), None);
        assert_eq!(current_holder(&lease("", ago(1), 15), now), None, "released");
        let mut no_renew = lease("a", now, 15);
        if let Some(s) = no_renew.spec.as_mut() {
            s.renew_time = None;
        }
        assert_eq!(current_holder(&no_renew, now), None);
        assert_eq!(current_holder(&Lease::default(), now), None);
    }
}

#[cfg(test)]
mod selector_tests {
    use super::rolled_out_with_role;
    use k8s_openapi::api::apps::v1::Deployment;

    fn deployment(role: bool, generation: i64, observed: i64, updated: i32, ready: i32) -> Deployment {
        let labels =
            if role { serde_json::json!({ "smsc.io/role": "active" }) } else { serde_json::json!({}) };
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "d", "generation": generation },
            "spec": {
                "replicas": 2,
                "selector": {},
                "template": { "metadata": { "labels": labels } }
            },
            "status": {
                "observedGeneration": observed, "replicas": 2, "updatedReplicas": updated, "readyReplicas": ready
            }
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_role_selector_waits_for_every_pod_to_carry_the_label() {
        assert!(rolled_out_with_role(&deployment(true, 3, 3, 2, 2)));
        assert!(!rolled_out_with_role(&deployment(false, 3, 3, 2, 2)), "template without the label");
        assert!(!rolled_out_with_role(&deployment(true, 3, 2, 2, 2)), "new template not seen yet");
        assert!(!rolled_out_with_role(&deployment(true, 3, 3, 1, 2)), "an old Pod is left");
        assert!(!rolled_out_with_role(&deployment(true, 3, 3, 2, 1)), "a new Pod is not ready");
    }
}
