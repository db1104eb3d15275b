//! PodSecurity `restricted`: in namespaces labelled
//! `pod-security.kubernetes.io/enforce=restricted` (the API server's PodSecurity admission, on by
//! default), the ReplicaSets of the operator's smscd Deployments create their Pods, and so does
//! the operator chart's own Deployment. A cluster whose override breaks the standard gets no
//! Pods and a `FailedCreate` naming PodSecurity, which shows the namespace really enforces.
//!
//! The controller runs in-process, as in tests/operator.rs. kwok runs no containers: what is
//! tested is admission (the securityContext, volumes and sysctls of the Pod), not smscd on a
//! read-only root filesystem.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use smsc_api::crd::SmscCluster;
use smsc_e2e::{control_plane, repo_root, wait_for, TestNamespace};
use smsc_operator::controller::{self, Context, Settings};
use smsc_operator::labels;
use smsc_operator::metrics::Metrics;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(90);

/// The controller running in this process, watching one namespace; stopped on drop.
struct Operator {
    _stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Operator {
    async fn start(ns: &TestNamespace) -> anyhow::Result<Operator> {
        let client = control_plane().await?.client().await?;
        let settings = Settings {
            smscd_image: "smscd:e2e".into(),
            namespace: Some(ns.name().to_string()),
            instance: Some("e2e".into()),
        };
        let ctx = Context::new(client, settings, std::sync::Arc::new(Metrics::default()));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(ctx, async move {
            let _ = rx.await;
        }));
        Ok(Operator { _stop: tx, task })
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh namespace enforcing the `restricted` standard at the API server's version.
async fn restricted_namespace(prefix: &str) -> anyhow::Result<TestNamespace> {
    let cp = control_plane().await?;
    let ns = cp.namespace(prefix).await?;
    let nss: Api<Namespace> = Api::all(ns.client());
    let labels = json!({ "metadata": { "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    } } });
    nss.patch(ns.name(), &PatchParams::default(), &Patch::Merge(&labels)).await?;
    Ok(ns)
}

/// One replica, the built-in simulator as the only route, plus `spec` merged in.
fn cluster(name: &str, spec: serde_json::Value) -> anyhow::Result<SmscCluster> {
    let mut c = json!({
        "apiVersion": "smsc.io/v1alpha1", "kind": "SmscCluster",
        "metadata": { "name": name },
        "spec": {
            "replicas": 1,
            "routing": { "defaultChain": ["sim"] },
            "service": { "type": "ClusterIP" },
        }
    });
    if let (Some(base), Some(extra)) = (c["spec"].as_object_mut(), spec.as_object()) {
        base.extend(extra.clone());
    }
    Ok(serde_json::from_value(c)?)
}

/// The ReplicaSet of the cluster's Deployment, once the Deployment controller made it.
async fn replica_set(ns: &TestNamespace, cluster: &str) -> anyhow::Result<ReplicaSet> {
    let api: Api<ReplicaSet> = ns.api();
    let selector = labels::selector_string(&labels::selector(cluster));
    Ok(wait_for(&format!("the ReplicaSet of {cluster}"), WAIT, || {
        let (api, selector) = (api.clone(), selector.clone());
        async move {
            let list = api.list(&ListParams::default().labels(&selector)).await?;
            Ok::<_, kube::Error>(list.items.into_iter().next())
        }
    })
    .await?)
}

/// Pods owned by this ReplicaSet.
async fn pods_of(ns: &TestNamespace, rs: &ReplicaSet) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = ns.api();
    let uid = rs.uid().context("ReplicaSet without uid")?;
    Ok(pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.owner_references().iter().any(|o| o.uid == uid))
        .collect())
}

/// `FailedCreate` Events about this ReplicaSet, their notes.
async fn failed_creates(ns: &TestNamespace, rs: &ReplicaSet) -> anyhow::Result<Vec<String>> {
    let events: Api<Event> = ns.api();
    let name = rs.name_any();
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("FailedCreate")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
        })
        .map(|e| e.note.unwrap_or_default())
        .collect())
}

/// The ReplicaSet's `ReplicaFailure` condition message, if it has one.
fn replica_failure(rs: &ReplicaSet) -> Option<String> {
    rs.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "ReplicaFailure" && c.status == "True"))
        .map(|c| c.message.clone().unwrap_or_default())
}

/// Wait until the cluster's ReplicaSet owns `want` Pods; then it must report no failure.
async fn assert_pods_created(ns: &TestNamespace, cluster: &str, want: usize) -> anyhow::Result<Vec<Pod>> {
    let rs = replica_set(ns, cluster).await?;
    let rs_api: Api<ReplicaSet> = ns.api();
    let rs_name = rs.name_any();
    let pods = wait_for(&format!("{want} Pods of {cluster}"), WAIT, || {
        let rs = rs.clone();
        let rs_api = rs_api.clone();
        let rs_name = rs_name.clone();
        async move {
            let pods = pods_of(ns, &rs).await?;
            if pods.len() >= want {
                return Ok(Some(pods));
            }
            // Reported as the last error at the deadline when admission refuses them.
            let now = rs_api.get(&rs_name).await?;
            match replica_failure(&now) {
                Some(msg) => Err(anyhow::anyhow!("ReplicaFailure: {msg}")),
                None => Ok(None),
            }
        }
    })
    .await?;
    let rs = rs_api.get(&rs_name).await?;
    ensure!(replica_failure(&rs).is_none(), "{cluster}: ReplicaFailure {:?}", replica_failure(&rs));
    let failed = failed_creates(ns, &rs).await?;
    ensure!(failed.is_empty(), "{cluster}: FailedCreate events {failed:?}");
    Ok(pods)
}

#[tokio::test]
async fn smscd_pods_are_admitted_in_a_restricted_namespace() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    smsc_e2e::smsc::install_crd(cp.client().await?, WAIT).await?;
    let ns = restricted_namespace("podsec").await?;
    let _op = Operator::start(&ns).await?;
    let api: Api<SmscCluster> = ns.api();

    // The defaults, with a TLS listener (a Secret volume) next to the /tmp emptyDir.
    let tls: Api<k8s_openapi::api::core::v1::Secret> = ns.api();
    tls.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": { "name": "smpp-tls" },
            "stringData": { "tls.crt": "x", "tls.key": "x" },
        }))?,
    )
    .await?;
    api.create(
        &PostParams::default(),
        &cluster("sms", json!({ "smpp": { "tls": { "secretName": "smpp-tls" } } }))?,
    )
    .await?;
    // An override of one field (the rest of the defaults stay), and a privileged SMPP port (the
    // unprivileged-port sysctl, which `restricted` allows).
    api.create(
        &PostParams::default(),
        &cluster(
            "sms-low",
            json!({ "smpp": { "port": 25 }, "pod": { "securityContext": { "runAsUser": 1000 } } }),
        )?,
    )
    .await?;

    let pods = assert_pods_created(&ns, "sms", 1).await?;
    let spec = pods[0].spec.clone().context("Pod without spec")?;
    let psc = spec.security_context.clone().context("no Pod securityContext")?;
    ensure!(psc.run_as_user == Some(65532) && psc.run_as_non_root == Some(true), "{psc:?}");
    let csc = spec.containers[0].security_context.clone().context("no container securityContext")?;
    ensure!(csc.read_only_root_filesystem == Some(true), "{csc:?}");

    let pods = assert_pods_created(&ns, "sms-low", 1).await?;
    let psc = pods[0].spec.clone().and_then(|s| s.security_context).context("no Pod securityContext")?;
    ensure!(psc.run_as_user == Some(1000) && psc.run_as_group == Some(65532), "{psc:?}");
    let sysctls: Vec<_> = psc.sysctls.unwrap_or_default().into_iter().map(|s| (s.name, s.value)).collect();
    ensure!(
        sysctls == [("net.ipv4.ip_unprivileged_port_start".to_string(), "25".to_string())],
        "{sysctls:?}"
    );
    Ok(())
}

/// The negative: the same namespace refuses a Pod that allows privilege escalation, so the
/// positive test above would fail on Pods that are not restricted.
#[tokio::test]
async fn an_override_breaking_the_standard_gets_failed_create() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    smsc_e2e::smsc::install_crd(cp.client().await?, WAIT).await?;
    let ns = restricted_namespace("podsec-neg").await?;
    let _op = Operator::start(&ns).await?;
    let api: Api<SmscCluster> = ns.api();
    api.create(
        &PostParams::default(),
        &cluster(
            "sms",
            json!({ "pod": { "containerSecurityContext": { "allowPrivilegeEscalation": true } } }),
        )?,
    )
    .await?;

    let rs = replica_set(&ns, "sms").await?;
    let rs_api: Api<ReplicaSet> = ns.api();
    let name = rs.name_any();
    let msg = wait_for("ReplicaFailure on the ReplicaSet", WAIT, || {
        let (rs_api, name) = (rs_api.clone(), name.clone());
        async move { Ok::<_, kube::Error>(replica_failure(&rs_api.get(&name).await?)) }
    })
    .await?;
    ensure!(
        msg.contains("violates PodSecurity") && msg.contains("allowPrivilegeEscalation"),
        "ReplicaFailure message: {msg}"
    );
    let events = wait_for("a FailedCreate Event", WAIT, || {
        let rs = rs.clone();
        let ns = &ns;
        async move {
            let e = failed_creates(ns, &rs).await?;
            Ok::<_, anyhow::Error>((!e.is_empty()).then_some(e))
        }
    })
    .await?;
    ensure!(events.iter().any(|n| n.contains("violates PodSecurity")), "FailedCreate events: {events:?}");
    let pods = pods_of(&ns, &rs).await?;
    ensure!(
        pods.is_empty(),
        "Pods were created: {:?}",
        pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    Ok(())
}

/// The operator chart's own Deployment (its default podSecurityContext/securityContext) in a
/// restricted namespace.
#[tokio::test]
async fn operator_chart_pods_are_admitted_in_a_restricted_namespace() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let ns = restricted_namespace("podsec-chart").await?;
    let release = format!("ps{}", std::process::id());
    cp.run(cp.helm()?.args(["install", &release]).arg(repo_root().join("charts/smsc-operator")).args([
        "--namespace",
        ns.name(),
        "--set",
        "aggregateToDefaultRoles=false",
    ]))?;
    let result = async {
        let rs_api: Api<ReplicaSet> = ns.api();
        let selector = format!("app.kubernetes.io/instance={release}");
        let rs = wait_for("the operator's ReplicaSet", WAIT, || {
            let (rs_api, selector) = (rs_api.clone(), selector.clone());
            async move {
                let list = rs_api.list(&ListParams::default().labels(&selector)).await?;
                Ok::<_, kube::Error>(list.items.into_iter().next())
            }
        })
        .await?;
        let name = rs.name_any();
        wait_for("the operator's Pod", WAIT, || {
            let (rs, rs_api, name) = (rs.clone(), rs_api.clone(), name.clone());
            let ns = &ns;
            async move {
                if !pods_of(ns, &rs).await?.is_empty() {
                    return Ok(Some(()));
                }
                match replica_failure(&rs_api.get(&name).await?) {
                    Some(msg) => Err(anyhow::anyhow!("ReplicaFailure: {msg}")),
                    None => Ok(None),
                }
            }
        })
        .await?;
        let failed = failed_creates(&ns, &rs).await?;
        ensure!(failed.is_empty(), "FailedCreate events {failed:?}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let uninstall = cp.run(cp.helm()?.args(["uninstall", &release, "--namespace", ns.name()]));
    result?;
    uninstall?;
    Ok(())
}
