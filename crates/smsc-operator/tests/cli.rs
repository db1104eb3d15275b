//! The `smsc-operator` binary: `render` offline, and the controller process on the control plane
//! (health and metrics endpoints, leader election Lease, clean exit on SIGTERM).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt};
use smsc_api::crd::SmscCluster;
use smsc_e2e::{control_plane, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_smsc-operator");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn render_prints_every_child_as_yaml() -> anyhow::Result<()> {
    let out = Command::new(BIN).args(["render", "-f"]).arg(fixture("full.yaml")).output()?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout)?;
    for kind in ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service"] {
        ensure!(text.contains(&format!("kind: {kind}\n")), "{kind} missing");
    }
    ensure!(text.contains("kind: PodDisruptionBudget") && text.contains("kind: HorizontalPodAutoscaler"));
    ensure!(text.contains("secretKeyRef") && text.contains("${SMSC_ACCOUNT_0_PASSWORD}"));
    Ok(())
}

#[test]
fn render_fails_cleanly_on_a_bad_file() -> anyhow::Result<()> {
    let out = Command::new(BIN).args(["render", "-f", "/nonexistent/smsc.yaml"]).output()?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/smsc.yaml"));
    Ok(())
}

fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_health_and_metrics_holds_the_lease_and_stops_on_sigterm() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let client = cp.client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = SmscCluster::crd();
    crds.patch("smscclusters.smsc.io", &PatchParams::apply("smsc-e2e").force(), &Patch::Apply(&crd)).await?;
    let ns = cp.namespace("op-bin").await?;
    let port = free_port()?;
    let mut child = Command::new(BIN)
        .args(["--namespace", ns.name(), "--leader-elect", "--leader-elect-namespace", ns.name()])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}"), "--log-format", "json"])
        .env("KUBECONFIG", cp.kubeconfig())
        .env("POD_NAME", "operator-0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let result = async {
        wait_for("/readyz", Duration::from_secs(60), || async {
            Ok::<_, anyhow::Error>(http_get(port, "/readyz").ok().filter(|r| r.starts_with("HTTP/1.1 200")))
        })
        .await?;
        ensure!(http_get(port, "/healthz")?.starts_with("HTTP/1.1 200"));
        // Readiness does not wait for the Lease: leadership shows on /metrics.
        let metrics = wait_for("smsc_operator_leader 1", Duration::from_secs(60), || async {
            Ok::<_, anyhow::Error>(
                http_get(port, "/metrics").ok().filter(|m| m.contains("\nsmsc_operator_leader 1\n")),
            )
        })
        .await?;
        ensure!(metrics.contains("smsc_operator_reconciles_total"), "{metrics}");
        let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());
        let lease = leases.get("smsc-operator-leader").await?;
        ensure!(lease.spec.and_then(|s| s.holder_identity).as_deref() == Some("operator-0"));

        // SIGTERM: a clean exit that releases the Lease.
        // SAFETY: plain kill(2) on the child we spawned.
        let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        ensure!(rc == 0, "kill failed");
        let status = wait_for("the operator to exit", Duration::from_secs(30), || {
            let r = child.try_wait();
            async move { r.map_err(anyhow::Error::from) }
        })
        .await?;
        ensure!(status.success(), "exit status {status}");
        let lease = leases.get("smsc-operator-leader").await?;
        ensure!(lease.spec.and_then(|s| s.holder_identity).is_none(), "Lease not released");
        Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result.context("operator binary")
}

/// A replica that waits for the leader Lease (held by another) is ready all the same, so a rolling
/// update of the operator's Deployment is not stalled by the old replica's Lease; /metrics says it
/// does not lead. Once the holder lets go it takes over and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_waiting_for_the_lease_is_ready_and_reports_leader_0() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let client = cp.client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = SmscCluster::crd();
    crds.patch("smscclusters.smsc.io", &PatchParams::apply("smsc-e2e").force(), &Patch::Apply(&crd)).await?;
    let ns = cp.namespace("op-standby").await?;
    // Another replica holds the Lease, freshly renewed, for an hour.
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());
    let now = k8s_openapi::jiff::Timestamp::now();
    let held: Lease = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "smsc-operator-leader" },
        "spec": { "holderIdentity": "operator-other", "leaseDurationSeconds": 3600,
                  "acquireTime": MicroTime(now), "renewTime": MicroTime(now), "leaseTransitions": 0 },
    }))?;
    leases.create(&PostParams::default(), &held).await?;
    let port = free_port()?;
    let mut child = Command::new(BIN)
        .args(["--namespace", ns.name(), "--leader-elect", "--leader-elect-namespace", ns.name()])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}"), "--log-format", "json"])
        .env("KUBECONFIG", cp.kubeconfig())
        .env("POD_NAME", "operator-1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = async {
        wait_for("/readyz of the replica without the Lease", Duration::from_secs(60), || async {
            Ok::<_, anyhow::Error>(http_get(port, "/readyz").ok().filter(|r| r.starts_with("HTTP/1.1 200")))
        })
        .await?;
        let metrics = http_get(port, "/metrics")?;
        ensure!(metrics.contains("\nsmsc_operator_leader 0\n"), "{metrics}");
        let lease = leases.get("smsc-operator-leader").await?;
        ensure!(lease.spec.and_then(|s| s.holder_identity).as_deref() == Some("operator-other"));

        // The holder releases (as a clean shutdown does): this replica leads, and is ready again
        // once its caches have synced.
        let release = serde_json::json!({ "spec": { "holderIdentity": null, "leaseDurationSeconds": 1 } });
        leases.patch("smsc-operator-leader", &PatchParams::default(), &Patch::Merge(&release)).await?;
        wait_for("smsc_operator_leader 1", Duration::from_secs(60), || async {
            Ok::<_, anyhow::Error>(
                http_get(port, "/metrics").ok().filter(|m| m.contains("\nsmsc_operator_leader 1\n")),
            )
        })
        .await?;
        wait_for("/readyz of the leader", Duration::from_secs(60), || async {
            Ok::<_, anyhow::Error>(http_get(port, "/readyz").ok().filter(|r| r.starts_with("HTTP/1.1 200")))
        })
        .await?;
        Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result.context("operator binary waiting for the Lease")
}
