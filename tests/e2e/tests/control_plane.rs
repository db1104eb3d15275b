//! The test control plane itself: it must behave like a real cluster in the ways the operator
//! relies on (scheduling on kwok nodes, readiness, EndpointSlices, garbage collection, Leases,
//! PodDisruptionBudgets) and Helm must install into it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde_json::json;
use smsc_e2e::{control_plane, fixture, pinned_version, wait_for, TestNamespace};

const WAIT: Duration = Duration::from_secs(90);

fn labels(app: &str) -> BTreeMap<String, String> {
    [("app".to_string(), app.to_string())].into()
}

/// A Deployment of `replicas` Pods spread over hostnames (hard) and zones (soft).
fn spread_deployment(name: &str, replicas: i32) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "labels": labels(name) },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": labels(name) },
            "template": {
                "metadata": { "labels": labels(name) },
                "spec": {
                    "topologySpreadConstraints": [
                        { "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                          "whenUnsatisfiable": "DoNotSchedule",
                          "labelSelector": { "matchLabels": labels(name) } },
                        { "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                          "whenUnsatisfiable": "ScheduleAnyway",
                          "labelSelector": { "matchLabels": labels(name) } }
                    ],
                    "containers": [{
                        "name": "app",
                        "image": "registry.invalid/app:1",
                        "ports": [{ "containerPort": 2775, "name": "smpp" }]
                    }]
                }
            }
        }
    }))?)
}

async fn wait_deployment_ready(ns: &TestNamespace, name: &str, replicas: i32) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = ns.api();
    wait_for(&format!("Deployment {name} to have {replicas} ready replicas"), WAIT, || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get(name).await?;
            let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
            Ok::<_, kube::Error>((ready == replicas).then_some(()))
        }
    })
    .await?;
    Ok(())
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn readyz_and_version() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let client = cp.client().await?;

    let req = http::Request::get("/readyz").body(Vec::new())?;
    let readyz = client.request_text(req).await?;
    ensure!(readyz.trim() == "ok", "/readyz answered {readyz:?}");

    let want = pinned_version("KUBE_VERSION")?;
    let version = client.apiserver_version().await?;
    ensure!(version.git_version == want, "/version gitVersion {} != {want}", version.git_version);
    let minor = want.trim_start_matches("v1.").split('.').next().context("KUBE_VERSION has no minor")?;
    ensure!(version.major == "1" && version.minor == minor, "/version: {version:?}");
    ensure!(cp.server().starts_with("https://127.0.0.1:"), "server {}", cp.server());
    Ok(())
}

#[tokio::test]
async fn deployment_pods_spread_become_ready_and_fill_endpointslices() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let ns = cp.namespace("e2e-deploy").await?;
    let deployments: Api<Deployment> = ns.api();
    deployments.create(&PostParams::default(), &spread_deployment("web", 3)?).await?;

    let services: Api<Service> = ns.api();
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "web" },
        "spec": { "selector": labels("web"), "ports": [{ "name": "smpp", "port": 2775, "targetPort": "smpp" }] }
    }))?;
    services.create(&PostParams::default(), &svc).await?;

    wait_deployment_ready(&ns, "web", 3).await?;

    // The Deployment owns a ReplicaSet, which owns the Pods.
    let rs_list = ns.api::<ReplicaSet>().list(&ListParams::default().labels("app=web")).await?;
    ensure!(rs_list.items.len() == 1, "want one ReplicaSet, got {}", rs_list.items.len());
    let rs = &rs_list.items[0];
    let owner = rs.metadata.owner_references.as_ref().and_then(|o| o.first()).context("RS owner")?;
    ensure!(owner.kind == "Deployment" && owner.name == "web", "RS owner {owner:?}");
    let rs_name = rs.metadata.name.clone().context("RS name")?;

    let pods = ns.api::<Pod>().list(&ListParams::default().labels("app=web")).await?;
    ensure!(pods.items.len() == 3, "want 3 pods, got {}", pods.items.len());
    let mut nodes = BTreeSet::new();
    let mut ips = BTreeSet::new();
    for p in &pods.items {
        let name = p.metadata.name.as_deref().unwrap_or("?");
        ensure!(pod_ready(p), "pod {name} not Ready");
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        ensure!(phase == Some("Running"), "pod {name} phase {phase:?}");
        let po = p.metadata.owner_references.as_ref().and_then(|o| o.first()).context("pod owner")?;
        ensure!(po.kind == "ReplicaSet" && po.name == rs_name, "pod {name} owner {po:?}");
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).context("pod not scheduled")?;
        nodes.insert(node);
        ips.insert(p.status.as_ref().and_then(|s| s.pod_ip.clone()).context("pod has no IP")?);
    }
    // maxSkew 1 on the hostname with three Nodes: one Pod on each.
    ensure!(nodes.len() == 3, "pods not spread over hostnames: {nodes:?}");

    // The Service's EndpointSlices list exactly the Ready Pods.
    let slices: Api<EndpointSlice> = ns.api();
    let want = ips.clone();
    wait_for("EndpointSlices of Service web to list the 3 ready Pods", WAIT, || {
        let slices = slices.clone();
        let want = want.clone();
        async move {
            let list = slices.list(&ListParams::default().labels("kubernetes.io/service-name=web")).await?;
            let got: BTreeSet<String> = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .flat_map(|e| e.addresses.iter().cloned())
                .collect();
            Ok::<_, kube::Error>((got == want).then_some(()))
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let ns = cp.namespace("e2e-gc").await?;
    let deployments: Api<Deployment> = ns.api();
    deployments.create(&PostParams::default(), &spread_deployment("gc", 2)?).await?;
    wait_deployment_ready(&ns, "gc", 2).await?;

    // A ConfigMap owned by the Deployment, as the operator's children are owned by its CR.
    let d = deployments.get("gc").await?;
    let uid = d.metadata.uid.clone().context("deployment uid")?;
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "gc-config", "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "gc", "uid": uid,
            "controller": true, "blockOwnerDeletion": true }] },
        "data": { "k": "v" }
    }))?;
    let cms: Api<ConfigMap> = ns.api();
    cms.create(&PostParams::default(), &cm).await?;

    deployments.delete("gc", &DeleteParams::background()).await?;

    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    wait_for("the GC to delete the ReplicaSet, Pods and ConfigMap", WAIT, || {
        let (rss, pods, cms) = (rss.clone(), pods.clone(), cms.clone());
        async move {
            let lp = ListParams::default().labels("app=gc");
            let left = rss.list(&lp).await?.items.len()
                + pods.list(&lp).await?.items.len()
                + usize::from(cms.get_opt("gc-config").await?.is_some());
            Ok::<_, kube::Error>((left == 0).then_some(()))
        }
    })
    .await?;
    Ok(())
}

fn lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: kube::api::ObjectMeta { name: Some(name.to_string()), ..Default::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(Timestamp::now())),
            renew_time: Some(MicroTime(Timestamp::now())),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn lease_create_renew_conflict_and_takeover() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let ns = cp.namespace("e2e-lease").await?;
    let leases: Api<Lease> = ns.api();
    let pp = PostParams::default();

    let created = leases.create(&pp, &lease("smsc-leader", "pod-a")).await?;
    let rv0 = created.metadata.resource_version.clone().context("no resourceVersion")?;

    // Renew: an update guarded by the resourceVersion we read.
    let mut renew = created.clone();
    if let Some(spec) = renew.spec.as_mut() {
        spec.renew_time = Some(MicroTime(Timestamp::now()));
    }
    let renewed = leases.replace("smsc-leader", &pp, &renew).await?;
    let rv1 = renewed.metadata.resource_version.clone().context("no resourceVersion")?;
    ensure!(rv1 != rv0, "renew did not change the resourceVersion");

    // A contender still holding the old resourceVersion loses with 409 Conflict.
    let mut stale = created.clone();
    if let Some(spec) = stale.spec.as_mut() {
        spec.holder_identity = Some("pod-b".into());
    }
    match leases.replace("smsc-leader", &pp, &stale).await {
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        other => anyhow::bail!("stale update: want 409 Conflict, got {other:?}"),
    }

    // Take-over with the current resourceVersion (as after the holder's lease expired).
    let mut takeover = leases.get("smsc-leader").await?;
    if let Some(spec) = takeover.spec.as_mut() {
        spec.holder_identity = Some("pod-b".into());
        spec.acquire_time = Some(MicroTime(Timestamp::now()));
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    let taken = leases.replace("smsc-leader", &pp, &takeover).await?;
    let spec = taken.spec.context("lease spec")?;
    ensure!(spec.holder_identity.as_deref() == Some("pod-b"), "holder {:?}", spec.holder_identity);
    ensure!(spec.lease_transitions == Some(1), "transitions {:?}", spec.lease_transitions);
    Ok(())
}

#[tokio::test]
async fn pdb_reports_disruptions_allowed() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let ns = cp.namespace("e2e-pdb").await?;
    ns.api::<Deployment>().create(&PostParams::default(), &spread_deployment("pdb", 3)?).await?;
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": { "name": "pdb" },
        "spec": { "minAvailable": 1, "selector": { "matchLabels": labels("pdb") } }
    }))?;
    let pdbs: Api<PodDisruptionBudget> = ns.api();
    pdbs.create(&PostParams::default(), &pdb).await?;
    wait_deployment_ready(&ns, "pdb", 3).await?;

    let allowed = wait_for("the PDB to allow 2 disruptions", WAIT, || {
        let pdbs = pdbs.clone();
        async move {
            let p = pdbs.get("pdb").await?;
            let s = p.status.unwrap_or_default();
            let current = s.observed_generation == p.metadata.generation && s.current_healthy == 3;
            Ok::<_, kube::Error>(current.then_some(s.disruptions_allowed))
        }
    })
    .await?;
    ensure!(allowed == 2, "disruptionsAllowed {allowed}");
    Ok(())
}

#[tokio::test]
async fn helm_install_and_uninstall_a_chart() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let ns = cp.namespace("e2e-helm").await?;
    let chart = fixture("tiny-chart");

    let out = cp.run(cp.helm()?.args(["install", "tiny"]).arg(&chart).args([
        "--namespace",
        ns.name(),
        "--set",
        "greeting=hi",
        "--wait",
        "--timeout",
        "90s",
    ]))?;
    ensure!(out.contains("STATUS: deployed"), "helm install said:\n{out}");

    let cms: Api<ConfigMap> = ns.api();
    let cm = cms.get("tiny-config").await?;
    let greeting = cm.data.as_ref().and_then(|d| d.get("greeting")).map(String::as_str);
    ensure!(greeting == Some("hi"), "greeting {greeting:?}");
    let d = ns.api::<Deployment>().get("tiny").await?;
    let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
    ensure!(ready == 2, "helm --wait returned with {ready} ready replicas");

    let list = cp.run(cp.helm()?.args(["list", "--namespace", ns.name(), "--short"]))?;
    ensure!(list.lines().any(|l| l.trim() == "tiny"), "helm list: {list}");

    cp.run(cp.helm()?.args(["uninstall", "tiny", "--namespace", ns.name(), "--wait", "--timeout", "90s"]))?;
    wait_for("helm uninstall to remove the chart's objects", WAIT, || {
        let (cms, ds) = (cms.clone(), ns.api::<Deployment>());
        async move {
            let gone = cms.get_opt("tiny-config").await?.is_none() && ds.get_opt("tiny").await?.is_none();
            Ok::<_, kube::Error>(gone.then_some(()))
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn three_kwok_nodes_over_two_zones() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(cp.client().await?);
    let list = nodes.list(&ListParams::default().labels("type=kwok")).await?;
    let mut zones = BTreeSet::new();
    for n in &list.items {
        let name = n.metadata.name.clone().unwrap_or_default();
        let l = n.metadata.labels.clone().unwrap_or_default();
        ensure!(l.get("kubernetes.io/hostname") == Some(&name), "node {name} hostname label: {l:?}");
        zones.insert(l.get("topology.kubernetes.io/zone").cloned().context("zone label")?);
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        ensure!(ready, "node {name} not Ready");
    }
    ensure!(list.items.len() == 3, "want 3 kwok nodes, got {}", list.items.len());
    ensure!(zones.len() == 2, "want two zones, got {zones:?}");
    Ok(())
}

#[tokio::test]
async fn cluster_up_again_reuses_the_running_cluster() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let dir = cp.kubeconfig().parent().context("kubeconfig has no parent")?;
    if !dir.join("state").exists() {
        eprintln!("skipped: {} is not managed by tools/cluster.sh", cp.kubeconfig().display());
        return Ok(());
    }
    let out = std::process::Command::new(smsc_e2e::repo_root().join("tools/cluster.sh"))
        .arg("up")
        .env("SMSC_CLUSTER_DIR", dir)
        .stdin(std::process::Stdio::null())
        .output()?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "cluster.sh up failed: {stderr}");
    ensure!(stderr.contains("already up"), "cluster.sh up did not reuse: {stderr}");
    let want = format!("export KUBECONFIG={}", cp.kubeconfig().display());
    ensure!(stdout.lines().last() == Some(want.as_str()), "last line {stdout:?}, want {want:?}");
    Ok(())
}
