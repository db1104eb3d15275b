//! The operator's controller, run in-process against the real control plane: children and their
//! fields, updates (removed fields included), self-healing, garbage collection, the checklist
//! moving a cluster to active/standby, `kubectl scale`, no writes from a restarted operator, no
//! takeover of another owner's object, and failures shown as `Degraded`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use smsc_api::crd::{ConditionStatus, ConditionType, SmscCluster, SmscClusterStatus, Topology};
use smsc_e2e::{control_plane, repo_root, wait_for, TestNamespace};
use smsc_operator::controller::{self, Context, Settings};
use smsc_operator::metrics::Metrics;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(90);

/// The controller running in this process, watching one namespace.
struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Operator {
    async fn start(ns: &TestNamespace) -> anyhow::Result<Operator> {
        let metrics = Arc::new(Metrics::default());
        // Counted like the binary's client (main.rs), so tests can see what it asked for.
        let config = control_plane().await?.config().await?;
        let client = kube::client::ClientBuilder::try_from(config)?
            .with_layer(&smsc_operator::requests::layer(metrics.clone()))
            .build();
        let settings = Settings {
            smscd_image: "smscd:e2e".into(),
            namespace: Some(ns.name().to_string()),
            instance: Some("e2e".into()),
        };
        let ctx = Context::new(client, settings, metrics.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(ctx, async move {
            let _ = rx.await;
        }));
        Ok(Operator { stop: Some(tx), task, metrics })
    }

    fn reconciles(&self) -> u64 {
        self.metrics.reconciles.get()
    }

    /// Requests sent so far with this verb on this resource.
    fn requests(&self, verb: &str, resource: &str) -> u64 {
        let labels = smsc_operator::metrics::RequestLabels { verb: verb.into(), resource: resource.into() };
        self.metrics.requests.get_or_create(&labels).get()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_secs(20), &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn setup(prefix: &str) -> anyhow::Result<(TestNamespace, Operator)> {
    let cp = control_plane().await?;
    smsc_e2e::smsc::install_crd(cp.client().await?, WAIT).await?;
    let ns = cp.namespace(prefix).await?;
    let op = Operator::start(&ns).await?;
    Ok((ns, op))
}

/// `kubectl apply` a sample from config/samples into the namespace.
async fn apply_sample(ns: &TestNamespace, sample: &str) -> anyhow::Result<()> {
    let path = repo_root().join("config/samples").join(sample);
    let cp = control_plane().await?;
    cp.run(cp.kubectl()?.args(["apply", "-n", ns.name(), "-f"]).arg(&path))?;
    Ok(())
}

async fn create_secrets(ns: &TestNamespace, names: &[(&str, &[&str])]) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Secret> = ns.api();
    for (name, keys) in names {
        let data: BTreeMap<String, String> = keys.iter().map(|k| (k.to_string(), "x".to_string())).collect();
        let s = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name }, "stringData": data
        }))?;
        api.create(&PostParams::default(), &s).await?;
    }
    Ok(())
}

/// A small cluster: one upstream, memory store unless `redis`, checklist declarations ticked.
fn cluster(
    name: &str,
    replicas: i32,
    max_binds: Option<i32>,
    autoscaling: bool,
) -> anyhow::Result<SmscCluster> {
    let mut upstream = json!({
        "name": "alpha", "host": "smsc-a.example.net",
        "credentialsSecretRef": { "name": "alpha-creds" },
    });
    if let Some(m) = max_binds {
        upstream["maxBinds"] = json!(m);
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "smsc.io/v1alpha1", "kind": "SmscCluster",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "smpp": { "accounts": [{ "systemId": "shop", "passwordSecretRef": { "name": "shop", "key": "password" } }] },
            "upstreams": [upstream],
            "routing": { "defaultChain": ["alpha"] },
            "dlrStore": { "type": "Redis", "redis": { "urlSecretRef": { "name": "redis", "key": "url" } } },
            "scaleOutChecklist": { "loadBalancerPinsConnections": true, "esmesReconnectWithBackoff": true },
            "autoscaling": { "enabled": autoscaling, "minReplicas": 2, "maxReplicas": 3 },
            "pod": { "resources": { "requests": { "cpu": "100m" } } },
            "service": { "type": "ClusterIP" },
        }
    }))?)
}

async fn create_cluster(ns: &TestNamespace, c: &SmscCluster) -> anyhow::Result<()> {
    create_secrets(
        ns,
        &[("alpha-creds", &["systemId", "password"]), ("shop", &["password"]), ("redis", &["url"])],
    )
    .await?;
    let api: Api<SmscCluster> = ns.api();
    api.create(&PostParams::default(), c).await?;
    Ok(())
}

async fn patch_spec(ns: &TestNamespace, name: &str, spec: serde_json::Value) -> anyhow::Result<()> {
    let api: Api<SmscCluster> = ns.api();
    api.patch(name, &PatchParams::default(), &Patch::Merge(&json!({ "spec": spec }))).await?;
    Ok(())
}

/// Wait until the named object exists and `check` accepts it.
async fn wait_obj<K, F>(ns: &TestNamespace, name: &str, what: &str, check: F) -> anyhow::Result<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    F: Fn(&K) -> bool,
{
    let api: Api<K> = ns.api();
    let check = &check;
    Ok(wait_for(what, WAIT, || {
        let api = api.clone();
        async move {
            let obj = api.get_opt(name).await?;
            Ok::<_, kube::Error>(obj.filter(|o| check(o)))
        }
    })
    .await?)
}

async fn wait_gone<K>(ns: &TestNamespace, name: &str, what: &str) -> anyhow::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = ns.api();
    wait_for(what, WAIT, || {
        let api = api.clone();
        async move { Ok::<_, kube::Error>(api.get_opt(name).await?.is_none().then_some(())) }
    })
    .await?;
    Ok(())
}

async fn wait_status<F>(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    check: F,
) -> anyhow::Result<SmscClusterStatus>
where
    F: Fn(&SmscClusterStatus) -> bool,
{
    let c: SmscCluster =
        wait_obj(ns, name, what, |c: &SmscCluster| c.status.as_ref().is_some_and(&check)).await?;
    c.status.context("no status")
}

fn cond(s: &SmscClusterStatus, t: ConditionType) -> Option<(ConditionStatus, String)> {
    s.conditions.iter().find(|c| c.type_ == t).map(|c| (c.status, c.reason.clone()))
}

fn template_hash(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get("smsc.io/restart-hash").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_gives_the_expected_children_and_status() -> anyhow::Result<()> {
    let (ns, op) = setup("op-sample").await?;
    apply_sample(&ns, "activeactive-redis.yaml").await?;
    let name = "smsc-aa";

    let d: Deployment = wait_obj(&ns, name, "the Deployment", |_| true).await?;
    let spec = d.spec.clone().context("deployment spec")?;
    assert_eq!(spec.replicas, Some(3));
    let ru = spec.strategy.and_then(|s| s.rolling_update).context("rolling update")?;
    // 3 replicas x 2 binds = the upstream's 6: a surge Pod would need 2 more, so an old Pod goes
    // first (issue 13 item 15; smscd's bind permits hold the carrier's count during the drain).
    assert_eq!(serde_json::to_value(&ru)?, json!({ "maxSurge": 0, "maxUnavailable": 1 }));
    let pod = spec.template.spec.context("pod spec")?;
    assert_eq!(pod.termination_grace_period_seconds, Some(45));
    assert_eq!(pod.service_account_name.as_deref(), Some("smsc-aa-smscd"));
    let keys: Vec<_> =
        pod.topology_spread_constraints.unwrap_or_default().into_iter().map(|t| t.topology_key).collect();
    assert_eq!(keys, vec!["kubernetes.io/hostname", "topology.kubernetes.io/zone"]);
    let owner = d.owner_references().first().context("owner ref")?.clone();
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("SmscCluster", name, Some(true))
    );
    assert_eq!(d.labels().get("app.kubernetes.io/managed-by").map(String::as_str), Some("smsc-operator"));

    let cm: ConfigMap = wait_obj(&ns, "smsc-aa-config", "the ConfigMap", |_| true).await?;
    let text = cm.data.unwrap_or_default().get("smscd.yaml").cloned().context("smscd.yaml")?;
    assert!(text.contains("${SMPP_BIND_CARRIER_A_PASSWORD}") && text.contains("${SMSC_REDIS_URL}"), "{text}");
    assert!(!text.contains("changeme") && !text.contains("s3cret"), "secret values leaked:\n{text}");
    assert!(!text.contains("leader_election"), "{text}");
    // The carrier's limit reaches smscd, which holds a bind permit per session against it.
    assert!(text.contains("max_binds: 6"), "{text}");

    let svc: Service = wait_obj(&ns, name, "the Service", |_| true).await?;
    let sspec = svc.spec.context("service spec")?;
    assert_eq!(sspec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(sspec.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(sspec.ports.unwrap_or_default()[0].port, 2775);
    // Every ActiveActive Pod carries the role label (issue 13 item 5): one selector for both
    // topologies.
    assert_eq!(sspec.selector.unwrap_or_default().get("smsc.io/role").map(String::as_str), Some("active"));
    let pod_labels =
        d.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.clone());
    let pod_labels = pod_labels.unwrap_or_default();
    assert_eq!(pod_labels.get("smsc.io/role").map(String::as_str), Some("active"));
    assert_eq!(pod_labels.get("smsc.io/topology").map(String::as_str), Some("ActiveActive"));

    let pdb: PodDisruptionBudget = wait_obj(&ns, name, "the PDB", |_| true).await?;
    let pdb_spec = pdb.spec.context("pdb spec")?;
    assert_eq!(pdb_spec.unhealthy_pod_eviction_policy.as_deref(), Some("AlwaysAllow"));
    assert_eq!(serde_json::to_value(pdb_spec.min_available)?, json!(1));
    wait_obj::<ServiceAccount, _>(&ns, "smsc-aa-smscd", "the ServiceAccount", |_| true).await?;
    let role: Role = wait_obj(&ns, "smsc-aa-smscd", "the Role", |_| true).await?;
    assert_eq!(role.rules.unwrap_or_default().len(), 3);
    wait_obj::<RoleBinding, _>(&ns, "smsc-aa-smscd", "the RoleBinding", |_| true).await?;
    let hpas: Api<HorizontalPodAutoscaler> = ns.api();
    assert!(hpas.get_opt(name).await?.is_none(), "no HPA unless asked for");

    // Readiness comes from kwok and can flap with the fake nodes' heartbeats: count Pods, not Ready ones.
    let st = wait_status(&ns, name, "status with 3 replicas", |s| s.replicas == 3).await?;
    assert_eq!(st.topology, Some(Topology::ActiveActive));
    let image = pod.containers.iter().find(|c| c.name == "smscd").and_then(|c| c.image.clone());
    assert_eq!(st.image, image, "status.image is the Deployment's smscd image");
    assert_eq!(st.ready_text, Some(format!("{}/3", st.ready_replicas)));
    assert_eq!(st.checklist.len(), 5);
    assert!(st.checklist.iter().all(|i| i.satisfied), "{:?}", st.checklist);
    assert_eq!(
        cond(&st, ConditionType::ScaleOutSafe),
        Some((ConditionStatus::True, "ChecklistPassed".into()))
    );
    assert_eq!(cond(&st, ConditionType::Degraded).map(|c| c.0), Some(ConditionStatus::False));
    assert!(cond(&st, ConditionType::Available).is_some() && cond(&st, ConditionType::Progressing).is_some());
    assert_eq!(
        st.selector.as_deref(),
        Some("app.kubernetes.io/instance=smsc-aa,app.kubernetes.io/name=smscd")
    );
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_changes_update_children_and_only_cold_settings_roll_pods() -> anyhow::Result<()> {
    let (ns, op) = setup("op-update").await?;
    create_cluster(&ns, &cluster("sms", 2, None, false)?).await?;
    let d0: Deployment = wait_obj(&ns, "sms", "the Deployment", |_| true).await?;
    let hash0 = template_hash(&d0).context("hash")?;

    // Accounts and routing hot-reload: the ConfigMap changes, the Pod template does not.
    patch_spec(
        &ns,
        "sms",
        json!({ "smpp": { "accounts": [
        { "systemId": "shop", "passwordSecretRef": { "name": "shop", "key": "password" }, "window": 7 }
    ] } }),
    )
    .await?;
    wait_obj(&ns, "sms-config", "the ConfigMap with window 7", |cm: &ConfigMap| {
        cm.data.as_ref().and_then(|d| d.get("smscd.yaml")).is_some_and(|t| t.contains("window: 7"))
    })
    .await?;
    let d1: Deployment = ns.api::<Deployment>().get("sms").await?;
    assert_eq!(template_hash(&d1).as_deref(), Some(hash0.as_str()));
    assert_eq!(d1.metadata.generation, d0.metadata.generation, "hot-reloadable change rolled the Pods");

    // The SMPP port needs a restart: new hash, new Service port.
    patch_spec(&ns, "sms", json!({ "smpp": { "port": 2800 } })).await?;
    let d2: Deployment = wait_obj(&ns, "sms", "a new restart hash", |d: &Deployment| {
        template_hash(d).is_some_and(|h| h != hash0)
    })
    .await?;
    assert!(d2.metadata.generation > d1.metadata.generation);
    wait_obj(&ns, "sms", "the Service on 2800", |s: &Service| {
        s.spec.as_ref().and_then(|s| s.ports.as_ref()).is_some_and(|p| p[0].port == 2800)
    })
    .await?;

    // Replicas to 1: the PDB goes.
    patch_spec(&ns, "sms", json!({ "replicas": 1 })).await?;
    wait_gone::<PodDisruptionBudget>(&ns, "sms", "the PDB to be pruned").await?;
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_child_comes_back_and_deleting_the_cluster_removes_everything() -> anyhow::Result<()> {
    let (ns, op) = setup("op-heal").await?;
    create_cluster(&ns, &cluster("sms", 2, None, false)?).await?;
    let svc: Service = wait_obj(&ns, "sms", "the Service", |_| true).await?;
    let old_uid = svc.uid().context("uid")?;
    ns.api::<Service>().delete("sms", &DeleteParams::default()).await?;
    wait_obj(&ns, "sms", "the Service to come back", |s: &Service| s.uid().is_some_and(|u| u != old_uid))
        .await?;
    ns.api::<ConfigMap>().delete("sms-config", &DeleteParams::default()).await?;
    wait_obj(&ns, "sms-config", "the ConfigMap to come back", |_: &ConfigMap| true).await?;
    wait_obj(&ns, "sms", "the PDB", |_: &PodDisruptionBudget| true).await?;

    ns.api::<SmscCluster>().delete("sms", &DeleteParams::background()).await?;
    wait_gone::<Deployment>(&ns, "sms", "the Deployment to be collected").await?;
    wait_gone::<Service>(&ns, "sms", "the Service to be collected").await?;
    wait_gone::<ConfigMap>(&ns, "sms-config", "the ConfigMap to be collected").await?;
    wait_gone::<PodDisruptionBudget>(&ns, "sms", "the PDB to be collected").await?;
    wait_gone::<Role>(&ns, "sms-smscd", "the Role to be collected").await?;
    wait_gone::<RoleBinding>(&ns, "sms-smscd", "the RoleBinding to be collected").await?;
    wait_gone::<ServiceAccount>(&ns, "sms-smscd", "the ServiceAccount to be collected").await?;
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_bind_upstream_moves_the_cluster_to_active_standby() -> anyhow::Result<()> {
    let (ns, op) = setup("op-standby").await?;
    create_cluster(&ns, &cluster("sms", 2, None, true)?).await?;
    let hpa: HorizontalPodAutoscaler = wait_obj(&ns, "sms", "the HPA", |_| true).await?;
    let hspec = hpa.spec.context("hpa spec")?;
    assert_eq!((hspec.min_replicas, hspec.max_replicas), (Some(2), 3));
    assert_eq!(
        hspec.behavior.and_then(|b| b.scale_down).and_then(|s| s.stabilization_window_seconds),
        Some(300)
    );
    let st = wait_status(&ns, "sms", "ActiveActive", |s| s.topology == Some(Topology::ActiveActive)).await?;
    assert_eq!(cond(&st, ConditionType::ScaleOutSafe).map(|c| c.0), Some(ConditionStatus::True));

    patch_spec(
        &ns,
        "sms",
        json!({ "upstreams": [{
        "name": "alpha", "host": "smsc-a.example.net",
        "credentialsSecretRef": { "name": "alpha-creds" }, "maxBinds": 1
    }] }),
    )
    .await?;
    let st =
        wait_status(&ns, "sms", "ActiveStandby", |s| s.topology == Some(Topology::ActiveStandby)).await?;
    assert_eq!(
        cond(&st, ConditionType::ScaleOutSafe),
        Some((ConditionStatus::False, "ChecklistUnmet".into()))
    );
    let item = st.checklist.iter().find(|i| !i.satisfied).context("an unmet item")?;
    assert!(item.message.contains("alpha"), "{}", item.message);
    wait_gone::<HorizontalPodAutoscaler>(&ns, "sms", "the HPA to be removed").await?;
    let svc: Service = wait_obj(&ns, "sms", "the Service selecting the active Pod", |s: &Service| {
        s.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|m| m.contains_key("smsc.io/role"))
    })
    .await?;
    assert_eq!(
        svc.spec.and_then(|s| s.selector).unwrap_or_default().get("smsc.io/role").map(String::as_str),
        Some("active")
    );
    wait_obj(&ns, "sms-config", "leader_election in the config", |cm: &ConfigMap| {
        cm.data
            .as_ref()
            .and_then(|d| d.get("smscd.yaml"))
            .is_some_and(|t| t.contains("lease_name: sms-leader"))
    })
    .await?;
    let d: Deployment = ns.api::<Deployment>().get("sms").await?;
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(2), "replicas back with the operator");

    let events: Api<Event> = ns.api();
    wait_for("a TopologyChanged Event", WAIT, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await?;
            Ok::<_, kube::Error>(
                list.items
                    .into_iter()
                    .find(|e| {
                        e.reason.as_deref() == Some("TopologyChanged")
                            && e.note.as_deref().is_some_and(|n| n.contains("ActiveStandby"))
                    })
                    .map(|_| ()),
            )
        }
    })
    .await?;

    // The Lease holder becomes status.activePod; a stale role label on another Pod is removed.
    let pods: Api<Pod> = ns.api();
    // The topology change rolled the Pods (leader election is a restart setting): wait it out.
    wait_obj(&ns, "sms", "the rollout to finish", |d: &Deployment| {
        let st = d.status.clone().unwrap_or_default();
        st.observed_generation == d.metadata.generation
            && st.updated_replicas == Some(2)
            && st.replicas == Some(2)
    })
    .await?;
    let list = wait_for("two current Pods", WAIT, || {
        let pods = pods.clone();
        async move {
            let l = pods.list(&ListParams::default().labels("app.kubernetes.io/instance=sms")).await?;
            let live: Vec<Pod> =
                l.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            Ok::<_, kube::Error>((live.len() == 2).then_some(live))
        }
    })
    .await?;
    let (holder, other) = (list[0].name_any(), list[1].name_any());
    // The operator created the Lease (labelled, owned, no holder); a holder written into it
    // becomes status.activePod.
    wait_obj(&ns, "sms-leader", "the Lease", |_: &Lease| true).await?;
    let renewed = |ago: i64| {
        let now = k8s_openapi::jiff::Timestamp::now();
        MicroTime(now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(ago)).unwrap_or(now))
    };
    let spec = LeaseSpec {
        holder_identity: Some(holder.clone()),
        lease_duration_seconds: Some(3600),
        renew_time: Some(renewed(0)),
        ..Default::default()
    };
    ns.api::<Lease>()
        .patch("sms-leader", &PatchParams::default(), &Patch::Merge(&json!({ "spec": spec })))
        .await?;
    let st =
        wait_status(&ns, "sms", "activePod", |s| s.active_pod.as_deref() == Some(holder.as_str())).await?;
    assert!(st.active_pod.is_some());
    // Both Pods labelled: the other one's stale label goes, the holder's stays (issue 13 item 10:
    // a label is removed only after the live Lease says the Pod does not hold it).
    let active = json!({ "metadata": { "labels": { "smsc.io/role": "active" } } });
    for p in [&holder, &other] {
        pods.patch(p, &PatchParams::default(), &Patch::Merge(&active)).await?;
    }
    wait_obj(&ns, &other, "the stale role label to be removed", |p: &Pod| {
        !p.labels().contains_key("smsc.io/role")
    })
    .await?;
    let h = pods.get(&holder).await?;
    assert_eq!(
        h.labels().get("smsc.io/role").map(String::as_str),
        Some("active"),
        "the holder lost its label"
    );

    // A holder that stopped renewing is no holder: status.activePod clears and its label goes.
    let stale = json!({ "spec": { "renewTime": renewed(7200) } });
    ns.api::<Lease>().patch("sms-leader", &PatchParams::default(), &Patch::Merge(&stale)).await?;
    let ask = json!({ "metadata": { "annotations": { "smsc.io/reconcile-requested-at": "expired" } } });
    ns.api::<SmscCluster>().patch("sms", &PatchParams::default(), &Patch::Merge(&ask)).await?;
    wait_status(&ns, "sms", "activePod cleared for an expired holder", |s| s.active_pod.is_none()).await?;
    wait_obj(&ns, &holder, "the expired holder's role label to be removed", |p: &Pod| {
        !p.labels().contains_key("smsc.io/role")
    })
    .await?;

    // Explicit ActiveActive is refused: Degraded, Warning Event, children untouched.
    let before: Deployment = ns.api::<Deployment>().get("sms").await?;
    let cm_before: ConfigMap = ns.api::<ConfigMap>().get("sms-config").await?;
    patch_spec(&ns, "sms", json!({ "topology": "ActiveActive" })).await?;
    let st = wait_status(&ns, "sms", "Degraded", |s| {
        cond(s, ConditionType::Degraded) == Some((ConditionStatus::True, "ActiveActiveRefused".into()))
    })
    .await?;
    assert_eq!(st.topology, Some(Topology::ActiveStandby));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Deployment = ns.api::<Deployment>().get("sms").await?;
    let cm_after: ConfigMap = ns.api::<ConfigMap>().get("sms-config").await?;
    assert_eq!(before.spec, after.spec, "refused topology must leave the Deployment alone");
    assert_eq!(cm_before.resource_version(), cm_after.resource_version());
    op.stop().await;
    Ok(())
}

/// The Lease smscd elects on belongs to its cluster: the operator creates it with the cluster's
/// labels and an owner reference, smscd's election (crates/smscd/src/leader) acquires it and keeps
/// both, the holder shows as status.activePod, and the Lease goes with the SmscCluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_belongs_to_its_cluster_and_smscd_elects_on_it() -> anyhow::Result<()> {
    let (ns, op) = setup("op-lease").await?;
    // maxBinds 1 with 2 replicas: the checklist fails, the cluster runs active/standby.
    create_cluster(&ns, &cluster("sms", 2, Some(1), false)?).await?;
    let uid = ns.api::<SmscCluster>().get("sms").await?.uid().context("uid")?;
    let lease: Lease = wait_obj(&ns, "sms-leader", "the Lease", |_: &Lease| true).await?;
    let belongs = |l: &Lease| {
        let labelled = l.labels().get("app.kubernetes.io/instance").map(String::as_str) == Some("sms")
            && l.labels().get("app.kubernetes.io/managed-by").map(String::as_str) == Some("smsc-operator");
        let owned = l
            .owner_references()
            .iter()
            .any(|o| o.kind == "SmscCluster" && o.uid == uid && o.controller == Some(true));
        labelled && owned
    };
    assert!(belongs(&lease), "labels and owner: {:?}", lease.metadata);
    assert!(
        lease.spec.as_ref().and_then(|s| s.holder_identity.as_ref()).is_none(),
        "created without a holder"
    );

    // smscd's election acquires the pre-created Lease and keeps its labels and owner.
    let client = control_plane().await?.client().await?;
    let cfg = smscd::leader::ResolvedLeaderConfig {
        lease_name: "sms-leader".into(),
        namespace: ns.name().into(),
        identity: "sms-pod-a".into(),
        pod_name: None,
        timing: smscd::leader::Timing::new(
            Duration::from_secs(4),
            Duration::from_secs(3),
            Duration::from_secs(1),
        )?,
    };
    let elector = smscd::leader::spawn(client, cfg, tokio_util::sync::CancellationToken::new());
    let mut leading = elector.watch();
    tokio::time::timeout(WAIT, leading.wait_for(|l| *l)).await.context("smscd never led")??;
    let held: Lease = wait_obj(&ns, "sms-leader", "the Lease held by sms-pod-a", |l: &Lease| {
        l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some("sms-pod-a")
    })
    .await?;
    assert!(belongs(&held), "smscd's writes kept labels and owner: {:?}", held.metadata);
    // Watched by label: the holder reaches the status.
    wait_status(&ns, "sms", "activePod sms-pod-a", |s| s.active_pod.as_deref() == Some("sms-pod-a")).await?;
    elector.release().await;

    ns.api::<SmscCluster>().delete("sms", &DeleteParams::background()).await?;
    wait_gone::<Lease>(&ns, "sms-leader", "the Lease to be collected with its cluster").await?;
    op.stop().await;
    Ok(())
}

/// The test control plane serves no metrics API, so kube-controller-manager's HPA controller
/// cannot compute a replica count and reports ScalingActive=False: the SmscCluster shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_scaling_active_false_shows_in_the_status() -> anyhow::Result<()> {
    let (ns, op) = setup("op-hpa").await?;
    create_cluster(&ns, &cluster("sms", 2, None, true)?).await?;
    let scaling_active = |h: &HorizontalPodAutoscaler| {
        h.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "ScalingActive").cloned())
    };
    let hpa: HorizontalPodAutoscaler = wait_obj(&ns, "sms", "the HPA's ScalingActive=False", |h| {
        scaling_active(h).is_some_and(|c| c.status == "False")
    })
    .await?;
    let hc = scaling_active(&hpa).context("ScalingActive")?;
    let reason = hc.reason.clone().unwrap_or_default();
    let st = wait_status(&ns, "sms", "AutoscalingActive False with the HPA's reason", |s| {
        cond(s, ConditionType::AutoscalingActive) == Some((ConditionStatus::False, reason.clone()))
    })
    .await?;
    let c =
        st.conditions.iter().find(|c| c.type_ == ConditionType::AutoscalingActive).context("condition")?;
    assert!(c.message.starts_with("HorizontalPodAutoscaler sms: "), "{}", c.message);
    assert!(c.message.len() > "HorizontalPodAutoscaler sms: ".len(), "no HPA message: {}", c.message);

    // Autoscaling off: the HPA goes, and so does the condition.
    patch_spec(&ns, "sms", json!({ "autoscaling": { "enabled": false } })).await?;
    wait_status(&ns, "sms", "no AutoscalingActive condition", |s| {
        cond(s, ConditionType::AutoscalingActive).is_none()
    })
    .await?;
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_changes_the_deployment() -> anyhow::Result<()> {
    let (ns, op) = setup("op-scale").await?;
    create_cluster(&ns, &cluster("sms", 2, None, false)?).await?;
    wait_status(&ns, "sms", "2 replicas", |s| s.replicas == 2).await?;
    let cp = control_plane().await?;
    cp.run(cp.kubectl()?.args(["scale", "-n", ns.name(), "smscclusters/sms", "--replicas=3"]))?;
    wait_obj(&ns, "sms", "Deployment replicas 3", |d: &Deployment| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(3)
    })
    .await?;
    let st = wait_status(&ns, "sms", "3 replicas", |s| s.replicas == 3).await?;
    ensure!(st.selector.is_some(), "the scale subresource needs status.selector");
    op.stop().await;
    Ok(())
}

/// What only the operator writes: resourceVersions of the SmscCluster and of the children without
/// a status, generations (spec changes) of those whose status other controllers write.
async fn versions(ns: &TestNamespace) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let generation = |g: Option<i64>| g.map(|g| g.to_string());
    Ok(vec![
        ("SmscCluster".to_string(), ns.api::<SmscCluster>().get("sms").await?.resource_version()),
        ("Service".into(), ns.api::<Service>().get("sms").await?.resource_version()),
        ("ConfigMap".into(), ns.api::<ConfigMap>().get("sms-config").await?.resource_version()),
        ("ServiceAccount".into(), ns.api::<ServiceAccount>().get("sms-smscd").await?.resource_version()),
        ("Role".into(), ns.api::<Role>().get("sms-smscd").await?.resource_version()),
        ("RoleBinding".into(), ns.api::<RoleBinding>().get("sms-smscd").await?.resource_version()),
        ("Deployment".into(), generation(ns.api::<Deployment>().get("sms").await?.metadata.generation)),
        ("PDB".into(), generation(ns.api::<PodDisruptionBudget>().get("sms").await?.metadata.generation)),
        ("HPA".into(), generation(ns.api::<HorizontalPodAutoscaler>().get("sms").await?.metadata.generation)),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_operator_makes_zero_writes_on_an_unchanged_cluster() -> anyhow::Result<()> {
    let (ns, op) = setup("op-restart").await?;
    create_cluster(&ns, &cluster("sms", 2, None, true)?).await?;
    wait_obj(&ns, "sms", "the HPA", |_: &HorizontalPodAutoscaler| true).await?;
    wait_status(&ns, "sms", "2 replicas (the HPA's minimum)", |s| s.replicas == 2).await?;
    // Settled: two reads a few seconds apart agree.
    let settled = wait_for("the cluster to settle", WAIT, || async {
        let a = versions(&ns).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let b = versions(&ns).await?;
        Ok::<_, anyhow::Error>((a == b).then_some(b))
    })
    .await?;
    op.stop().await;

    let op2 = Operator::start(&ns).await?;
    wait_for("the new operator to reconcile", WAIT, || {
        let n = op2.reconciles();
        async move { Ok::<_, anyhow::Error>((n >= 1).then_some(())) }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let now = versions(&ns).await?;
    assert_eq!(settled, now, "a restarted operator wrote to an unchanged cluster");
    assert_eq!(op2.metrics.writes.get(), 0);
    op2.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_cluster_is_left_alone_and_a_missing_secret_degrades_it() -> anyhow::Result<()> {
    let (ns, op) = setup("op-paused").await?;
    create_cluster(&ns, &cluster("sms", 2, None, false)?).await?;
    let svc: Service = wait_obj(&ns, "sms", "the Service", |_| true).await?;
    wait_status(&ns, "sms", "not degraded", |s| {
        cond(s, ConditionType::Degraded).is_some_and(|c| c.0 == ConditionStatus::False)
    })
    .await?;

    patch_spec(&ns, "sms", json!({ "paused": true, "smpp": { "port": 2801 } })).await?;
    wait_status(&ns, "sms", "ReconciliationPaused", |s| {
        cond(s, ConditionType::ReconciliationPaused) == Some((ConditionStatus::True, "Paused".into()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still: Service = ns.api::<Service>().get("sms").await?;
    assert_eq!(still.resource_version(), svc.resource_version(), "a paused cluster's children changed");

    patch_spec(&ns, "sms", json!({ "paused": false })).await?;
    wait_obj(&ns, "sms", "the Service on 2801 once unpaused", |s: &Service| {
        s.spec.as_ref().and_then(|s| s.ports.as_ref()).is_some_and(|p| p[0].port == 2801)
    })
    .await?;

    ns.api::<k8s_openapi::api::core::v1::Secret>().delete("redis", &DeleteParams::default()).await?;
    // Secrets are not watched: a spec change triggers the next look.
    patch_spec(&ns, "sms", json!({ "shutdown": { "drainSeconds": 31 } })).await?;
    let st = wait_status(&ns, "sms", "Degraded SecretMissing", |s| {
        cond(s, ConditionType::Degraded) == Some((ConditionStatus::True, "SecretMissing".into()))
    })
    .await?;
    let msg = st.conditions.iter().find(|c| c.type_ == ConditionType::Degraded).map(|c| c.message.clone());
    assert!(msg.is_some_and(|m| m.contains("redis/url")));
    op.stop().await;
    Ok(())
}

/// Restart the operator, wait for its first reconciles, and return the writes it made.
async fn writes_after_restart(ns: &TestNamespace, op: Operator) -> anyhow::Result<(Operator, u64)> {
    op.stop().await;
    let op = Operator::start(ns).await?;
    wait_for("the new operator to reconcile", WAIT, || {
        let n = op.reconciles();
        async move { Ok::<_, anyhow::Error>((n >= 1).then_some(())) }
    })
    .await?;
    // Absence of writes can only be observed over a while.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let w = op.metrics.writes.get();
    Ok((op, w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_field_removes_it_and_normalised_values_cause_no_write() -> anyhow::Result<()> {
    let (ns, op) = setup("op-remove").await?;
    create_cluster(&ns, &cluster("sms", 2, None, false)?).await?;
    wait_obj(&ns, "sms", "the Deployment", |_: &Deployment| true).await?;
    patch_spec(
        &ns,
        "sms",
        json!({
            "pod": {
                // The API server stores 500m: that must not cost a write per reconcile.
                "resources": { "requests": { "cpu": "0.5", "memory": "64Mi" }, "limits": { "memory": "128Mi" } },
                "nodeSelector": { "pool": "sms" },
                "tolerations": [{ "key": "smsc", "operator": "Exists", "effect": "NoSchedule" }],
                "affinity": { "nodeAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [
                    { "weight": 1, "preference": { "matchExpressions": [
                        { "key": "zone", "operator": "In", "values": ["a"] }] } }] } },
                "priorityClassName": "smsc-high",
                "labels": { "team": "sms" },
                "annotations": { "note": "x" },
            },
            "service": {
                "type": "LoadBalancer",
                "annotations": { "lb.example/idle-timeout": "60" },
                "loadBalancerSourceRanges": ["192.0.2.0/24"],
            },
        }),
    )
    .await?;
    let pod_spec = |d: &Deployment| d.spec.as_ref().and_then(|s| s.template.spec.clone()).unwrap_or_default();
    let pod_meta =
        |d: &Deployment| d.spec.as_ref().and_then(|s| s.template.metadata.clone()).unwrap_or_default();
    let cpu = |d: &Deployment| {
        let r = pod_spec(d).containers.first().and_then(|c| c.resources.clone()).unwrap_or_default();
        r.requests.and_then(|r| r.get("cpu").map(|q| q.0.clone()))
    };
    wait_obj(&ns, "sms", "the Deployment with every field", |d: &Deployment| {
        let p = pod_spec(d);
        cpu(d).is_some()
            && p.node_selector.is_some()
            && p.tolerations.is_some()
            && p.affinity.is_some()
            && p.priority_class_name.is_some()
            && pod_meta(d).labels.unwrap_or_default().contains_key("team")
            && pod_meta(d).annotations.unwrap_or_default().contains_key("note")
    })
    .await?;
    wait_obj(&ns, "sms", "the Service with every field", |s: &Service| {
        s.annotations().contains_key("lb.example/idle-timeout")
            && s.spec.as_ref().is_some_and(|s| s.load_balancer_source_ranges.is_some())
    })
    .await?;

    let (op, writes) = writes_after_restart(&ns, op).await?;
    let d: Deployment = ns.api().get("sms").await?;
    ensure!(cpu(&d).as_deref() == Some("500m"), "the server normalises 0.5: {:?}", cpu(&d));
    ensure!(writes == 0, "{writes} writes on an unchanged cluster whose spec says cpu 0.5");

    patch_spec(
        &ns,
        "sms",
        json!({
            "pod": { "resources": null, "nodeSelector": null, "tolerations": null, "affinity": null,
                     "priorityClassName": null, "labels": null, "annotations": null },
            "service": { "annotations": null, "loadBalancerSourceRanges": null },
        }),
    )
    .await?;
    let d = wait_obj(&ns, "sms", "the Deployment without the removed fields", |d: &Deployment| {
        let p = pod_spec(d);
        cpu(d).is_none()
            && p.node_selector.is_none()
            && p.tolerations.is_none()
            && p.affinity.is_none()
            && p.priority_class_name.is_none()
            && !pod_meta(d).labels.unwrap_or_default().contains_key("team")
            && !pod_meta(d).annotations.unwrap_or_default().contains_key("note")
    })
    .await?;
    ensure!(
        pod_meta(&d).labels.unwrap_or_default().contains_key("app.kubernetes.io/instance"),
        "own labels stay"
    );
    wait_obj(&ns, "sms", "the Service without the removed fields", |s: &Service| {
        !s.annotations().contains_key("lb.example/idle-timeout")
            && s.spec.as_ref().is_some_and(|s| s.load_balancer_source_ranges.is_none())
    })
    .await?;
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owners_object_is_not_taken_over_and_degrades_the_cluster() -> anyhow::Result<()> {
    let (ns, op) = setup("op-foreign").await?;
    // Someone else's ConfigMap with the name the cluster's would get.
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "sms-config", "labels": { "app": "billing" } },
        "data": { "smscd.yaml": "not ours" },
    }))?;
    ns.api::<ConfigMap>().create(&PostParams::default(), &foreign).await?;
    create_cluster(&ns, &cluster("sms", 2, None, false)?).await?;
    let st = wait_status(&ns, "sms", "Degraded ChildNotOwned", |s| {
        cond(s, ConditionType::Degraded) == Some((ConditionStatus::True, "ChildNotOwned".into()))
    })
    .await?;
    let msg = st.conditions.iter().find(|c| c.type_ == ConditionType::Degraded).map(|c| c.message.clone());
    ensure!(msg.as_deref().is_some_and(|m| m.contains("ConfigMap") && m.contains("sms-config")), "{msg:?}");
    let cm: ConfigMap = ns.api().get("sms-config").await?;
    ensure!(cm.data.clone().unwrap_or_default().get("smscd.yaml").map(String::as_str) == Some("not ours"));
    ensure!(cm.owner_references().is_empty() && !cm.labels().contains_key("app.kubernetes.io/managed-by"));
    ensure!(ns.api::<Deployment>().get_opt("sms").await?.is_none(), "nothing after the refused child");
    // Its owner deletes it: the cluster makes its own and recovers.
    ns.api::<ConfigMap>().delete("sms-config", &DeleteParams::default()).await?;
    patch_spec(&ns, "sms", json!({ "shutdown": { "drainSeconds": 31 } })).await?;
    wait_status(&ns, "sms", "not degraded once the name is free", |s| {
        cond(s, ConditionType::Degraded).is_some_and(|c| c.0 == ConditionStatus::False)
    })
    .await?;
    op.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_failure_and_invalid_spec_show_as_degraded() -> anyhow::Result<()> {
    let (ns, op) = setup("op-failure").await?;
    // No Pod may be created in the namespace: the ReplicaSet reports FailedCreate.
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "metadata": { "name": "no-pods" }, "spec": { "hard": { "pods": "0" } },
    }))?;
    ns.api::<k8s_openapi::api::core::v1::ResourceQuota>().create(&PostParams::default(), &quota).await?;
    create_cluster(&ns, &cluster("sms", 2, None, false)?).await?;
    let st = wait_status(&ns, "sms", "Degraded ReplicaFailure", |s| {
        cond(s, ConditionType::Degraded) == Some((ConditionStatus::True, "ReplicaFailure".into()))
    })
    .await?;
    let msg = st.conditions.iter().find(|c| c.type_ == ConditionType::Degraded).map(|c| c.message.clone());
    ensure!(msg.as_deref().is_some_and(|m| m.contains("quota")), "{msg:?}");
    ns.api::<k8s_openapi::api::core::v1::ResourceQuota>().delete("no-pods", &DeleteParams::default()).await?;
    wait_status(&ns, "sms", "not degraded once Pods can be created", |s| {
        cond(s, ConditionType::Degraded).is_some_and(|c| c.0 == ConditionStatus::False)
    })
    .await?;

    // Admitted by the schema's pattern, but it overflows: the reconcile fails, and says so.
    patch_spec(&ns, "sms", json!({ "dlrStore": { "ttl": "99999999999999999999h" } })).await?;
    let st = wait_status(&ns, "sms", "Degraded InvalidSpec", |s| {
        cond(s, ConditionType::Degraded) == Some((ConditionStatus::True, "InvalidSpec".into()))
    })
    .await?;
    let msg = st.conditions.iter().find(|c| c.type_ == ConditionType::Degraded).map(|c| c.message.clone());
    ensure!(msg.as_deref().is_some_and(|m| m.contains("spec.dlrStore.ttl")), "{msg:?}");
    op.stop().await;
    Ok(())
}

fn secrets_version(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get("smsc.io/secrets-version").cloned()
}

/// issue 13 item 8: smscd reads account passwords, upstream credentials and the Redis URL from
/// its environment, once, at start. A rotated Secret therefore rolls the Pods: the Pod template
/// carries the versions of those Secrets. The operator may only `get` Secrets (no watch), so it
/// notices at its next reconcile; `smsc.io/reconcile-requested-at` asks for one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_rolls_the_pods() -> anyhow::Result<()> {
    let (ns, op) = setup("op-rotate").await?;
    create_cluster(&ns, &cluster("sms", 2, None, false)?).await?;
    let d0: Deployment =
        wait_obj(&ns, "sms", "the Deployment", |d: &Deployment| secrets_version(d).is_some()).await?;
    let v0 = secrets_version(&d0).context("version")?;
    let hash0 = template_hash(&d0).context("hash")?;

    // A new password for the ESME account.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = ns.api();
    let rotate = json!({ "stringData": { "password": "rotated" } });
    secrets.patch("shop", &PatchParams::default(), &Patch::Merge(&rotate)).await?;
    let clusters: Api<SmscCluster> = ns.api();
    let ask = json!({ "metadata": { "annotations": { "smsc.io/reconcile-requested-at": "1" } } });
    clusters.patch("sms", &PatchParams::default(), &Patch::Merge(&ask)).await?;
    let d1: Deployment = wait_obj(&ns, "sms", "a new secrets version", |d: &Deployment| {
        secrets_version(d).is_some_and(|v| v != v0)
    })
    .await?;
    assert!(d1.metadata.generation > d0.metadata.generation, "the Pod template changed: a rollout");
    assert_eq!(template_hash(&d1).as_deref(), Some(hash0.as_str()), "only the Secret changed");

    // An unrelated Secret changing rolls nothing; the same request value asks for nothing new.
    create_secrets(&ns, &[("unrelated", &["k"])]).await?;
    let v1 = secrets_version(&d1).context("version")?;
    let ask2 = json!({ "metadata": { "annotations": { "smsc.io/reconcile-requested-at": "2" } } });
    clusters.patch("sms", &PatchParams::default(), &Patch::Merge(&ask2)).await?;
    // The status shows the reconcile ran (observedGeneration is unchanged, so wait on the version
    // staying put over a reconcile that certainly happened: the Redis URL rotates next).
    let rotate_redis = json!({ "stringData": { "url": "redis://10.0.0.9:6379" } });
    secrets.patch("redis", &PatchParams::default(), &Patch::Merge(&rotate_redis)).await?;
    let ask3 = json!({ "metadata": { "annotations": { "smsc.io/reconcile-requested-at": "3" } } });
    clusters.patch("sms", &PatchParams::default(), &Patch::Merge(&ask3)).await?;
    let d2: Deployment = wait_obj(&ns, "sms", "the Redis URL's rotation", |d: &Deployment| {
        secrets_version(d).is_some_and(|v| v != v1)
    })
    .await?;
    assert_eq!(
        d2.metadata.generation.map(|g| g - 1),
        d1.metadata.generation,
        "one rollout for the Redis URL, none for the unrelated Secret"
    );
    op.stop().await;
    Ok(())
}

/// Issue 15 item 5: `spec.handlers` on the control plane. An inline script lands in the
/// operator's ConfigMap beside smscd.yaml, which names it; editing it changes the ConfigMap only:
/// the restart hash and the Deployment's generation stay (no Pod restarts; the kubelet swaps the
/// mounted file and smscd reloads it). A configMapRef script is mounted as a volume, no subPath.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_script_edits_change_the_config_map_and_roll_no_pods() -> anyhow::Result<()> {
    let (ns, op) = setup("op-handlers").await?;
    let script = |id: &str| {
        format!(
            "from siphon import smpp\n@smpp.on_pdu(\"submit_sm\")\nasync def on_submit(pdu, session):\n    return pdu.reply(message_id=\"{id}\")\n"
        )
    };
    let mut c = cluster("sms", 2, None, false)?;
    c.spec.handlers = Some(serde_json::from_value(json!({ "script": script("first"), "timeoutMs": 200 }))?);
    create_cluster(&ns, &c).await?;
    let cm: ConfigMap = wait_obj(&ns, "sms-config", "the ConfigMap with the script", |cm: &ConfigMap| {
        cm.data.as_ref().is_some_and(|d| d.contains_key("handlers.py"))
    })
    .await?;
    let data = cm.data.unwrap_or_default();
    assert_eq!(data.get("handlers.py"), Some(&script("first")));
    let config = data.get("smscd.yaml").context("smscd.yaml")?;
    assert!(
        config.contains("script: /etc/smscd/handlers.py") && config.contains("timeout_ms: 200"),
        "{config}"
    );
    let d0: Deployment = wait_obj(&ns, "sms", "the Deployment", |_| true).await?;
    let hash0 = template_hash(&d0).context("hash")?;

    patch_spec(&ns, "sms", json!({ "handlers": { "script": script("second"), "onError": "Continue" } }))
        .await?;
    wait_obj(&ns, "sms-config", "the edited script", |cm: &ConfigMap| {
        cm.data.as_ref().and_then(|d| d.get("handlers.py")).is_some_and(|s| s.contains("\"second\""))
            && cm
                .data
                .as_ref()
                .and_then(|d| d.get("smscd.yaml"))
                .is_some_and(|s| s.contains("on_error: continue"))
    })
    .await?;
    let d1: Deployment = ns.api::<Deployment>().get("sms").await?;
    assert_eq!(template_hash(&d1).as_deref(), Some(hash0.as_str()));
    assert_eq!(d1.metadata.generation, d0.metadata.generation, "a script edit rolled the Pods");

    // From a ConfigMap of the user's: a directory mount of that key (the template changes once,
    // for the new volume), and the operator's ConfigMap no longer carries a script.
    patch_spec(
        &ns,
        "sms",
        json!({ "handlers": { "script": null, "configMapRef": { "name": "policy", "key": "rules.py" } } }),
    )
    .await?;
    let d2: Deployment = wait_obj(&ns, "sms", "the handlers volume", |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.volumes.as_ref())
            .is_some_and(|v| v.iter().any(|v| v.config_map.as_ref().is_some_and(|c| c.name == "policy")))
    })
    .await?;
    let pod = d2.spec.and_then(|s| s.template.spec).context("pod spec")?;
    let mount =
        pod.containers[0].volume_mounts.iter().flatten().find(|m| m.name == "handlers").context("mount")?;
    assert_eq!((mount.mount_path.as_str(), mount.sub_path.as_deref()), ("/etc/smscd-handlers", None));
    let cm: ConfigMap = wait_obj(&ns, "sms-config", "the ConfigMap without the script", |cm: &ConfigMap| {
        cm.data.as_ref().is_some_and(|d| !d.contains_key("handlers.py"))
    })
    .await?;
    let config = cm.data.unwrap_or_default().get("smscd.yaml").cloned().unwrap_or_default();
    assert!(config.contains("script: /etc/smscd-handlers/rules.py"), "{config}");

    // "policy" does not exist: the Pods could not mount it, and the status says which key.
    let st = wait_status(&ns, "sms", "Degraded ConfigMapMissing", |s| {
        cond(s, ConditionType::Degraded) == Some((ConditionStatus::True, "ConfigMapMissing".into()))
    })
    .await?;
    let msg = st.conditions.iter().find(|c| c.type_ == ConditionType::Degraded).map(|c| c.message.clone());
    ensure!(
        msg.as_deref()
            .is_some_and(|m| m.contains("policy/rules.py") && m.contains("spec.handlers.configMapRef")),
        "{msg:?}"
    );
    let policy: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "policy" }, "data": { "rules.py": script("third") },
    }))?;
    ns.api::<ConfigMap>().create(&PostParams::default(), &policy).await?;
    // Like a Secret, a user's ConfigMap is not watched: ask for a reconcile as after a rotation.
    let ask = json!({ "metadata": { "annotations": { smsc_operator::labels::RECONCILE_REQUEST_ANNOTATION: "1" } } });
    ns.api::<SmscCluster>().patch("sms", &PatchParams::default(), &Patch::Merge(&ask)).await?;
    wait_status(&ns, "sms", "not degraded once the ConfigMap exists", |s| {
        cond(s, ConditionType::Degraded).is_some_and(|c| c.0 == ConditionStatus::False)
    })
    .await?;
    op.stop().await;
    Ok(())
}

/// A Pod whose container is stuck (here CrashLoopBackOff, written to its status as a kubelet
/// would: kwok runs no containers) degrades its cluster, and the cluster recovers with the Pod.
/// The waiting reason comes from the operator's Pod watch: no Pod is listed besides the watch's
/// own list, however long the Pod stays unready (a LIST per reconcile, every 10 s per unready
/// cluster, was what kept the operator busy at 1,000 clusters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_pod_degrades_the_cluster_from_the_pod_watch_without_listing_pods() -> anyhow::Result<()> {
    let (ns, op) = setup("op-stuck").await?;
    create_cluster(&ns, &cluster("sms", 1, None, false)?).await?;
    let pod = wait_for("the cluster's Pod", WAIT, || async {
        let pods =
            ns.api::<Pod>().list(&ListParams::default().labels("app.kubernetes.io/instance=sms")).await?;
        Ok::<_, anyhow::Error>(
            pods.items.into_iter().find(|p| p.status.as_ref().is_some_and(|s| s.pod_ip.is_some())),
        )
    })
    .await?;
    wait_status(&ns, "sms", "not degraded", |s| {
        cond(s, ConditionType::Degraded).is_some_and(|c| c.0 == ConditionStatus::False)
    })
    .await?;
    let lists_before = op.requests("list", "pods");

    let status = |ready: bool, state: serde_json::Value| {
        json!({ "status": {
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } },
                           { "type": "ContainersReady", "status": if ready { "True" } else { "False" } }],
            "containerStatuses": [{ "name": "smscd", "image": "smscd:e2e", "imageID": "", "ready": ready,
                "restartCount": 3, "state": state }],
        } })
    };
    let crash = status(
        false,
        json!({ "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container" } }),
    );
    ns.api::<Pod>().patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&crash)).await?;
    let st = wait_status(&ns, "sms", "Degraded CrashLoopBackOff", |s| {
        cond(s, ConditionType::Degraded) == Some((ConditionStatus::True, "CrashLoopBackOff".into()))
    })
    .await?;
    let msg = st.conditions.iter().find(|c| c.type_ == ConditionType::Degraded).map(|c| c.message.clone());
    ensure!(
        msg.as_deref().is_some_and(|m| m.contains(&pod.name_any()) && m.contains("back-off 40s")),
        "{msg:?}"
    );

    let running = status(true, json!({ "running": { "startedAt": "2026-01-01T00:00:00Z" } }));
    ns.api::<Pod>().patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&running)).await?;
    wait_status(&ns, "sms", "not degraded once the container runs", |s| {
        cond(s, ConditionType::Degraded).is_some_and(|c| c.0 == ConditionStatus::False)
    })
    .await?;
    assert_eq!(op.requests("list", "pods"), lists_before, "Pods were listed outside the watch");
    op.stop().await;
    Ok(())
}
