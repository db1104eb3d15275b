//! The SmscCluster CRD on a real API server: it installs, the samples apply and come back with
//! the defaults filled in, every invalid example is refused with a message naming the field,
//! the scale subresource works and `kubectl get smsc` shows the printer columns.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::Value;
use smsc_api::crd::{
    ChecklistItem, ChecklistItemName, Condition, ConditionStatus, ConditionType, SmscCluster,
    SmscClusterStatus, Topology,
};
use smsc_e2e::{control_plane, repo_root, wait_for, ControlPlane};

const CRD_NAME: &str = "smscclusters.smsc.io";

fn crd_file() -> PathBuf {
    repo_root().join("config/crd/smsc.io_smscclusters.yaml")
}

/// Apply the committed CRD once per test binary and wait until it is served.
fn install_crd(cp: &ControlPlane) -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let res = DONE.get_or_init(|| {
        let file = crd_file();
        cp.run(
            cp.kubectl()
                .map_err(|e| e.to_string())?
                .args(["apply", "--server-side", "--force-conflicts"])
                .args(["--field-manager", "smsc-e2e-crd", "-f"])
                .arg(&file),
        )
        .map_err(|e| e.to_string())?;
        cp.run(cp.kubectl().map_err(|e| e.to_string())?.args([
            "wait",
            "--for",
            "condition=Established",
            "--timeout",
            "60s",
            &format!("crd/{CRD_NAME}"),
        ]))
        .map_err(|e| e.to_string())?;
        Ok(())
    });
    res.clone().map_err(|e| anyhow::anyhow!("installing the CRD: {e}"))
}

fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The SmscCluster document of a sample file (kubectl parses the YAML: no YAML crate needed).
fn smsc_doc(cp: &ControlPlane, path: &Path) -> anyhow::Result<Value> {
    let out = cp.run(cp.kubectl()?.args(["create", "--dry-run=client", "-o", "json", "-f"]).arg(path))?;
    // One JSON object per document, one after the other.
    let docs = serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    docs.into_iter()
        .find(|d| d["kind"] == "SmscCluster")
        .with_context(|| format!("{} has no SmscCluster", path.display()))
}

fn header(path: &Path, key: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let prefix = format!("# {key}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("{} has no `{prefix}` line", path.display()))
}

#[tokio::test]
async fn crd_installs_with_status_scale_and_printer_columns() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    install_crd(cp)?;
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client().await?);
    let crd = crds.get(CRD_NAME).await?;
    ensure!(
        crd.spec.names.short_names.as_deref() == Some(&["smsc".to_string()][..]),
        "short name: {:?}",
        crd.spec.names
    );
    ensure!(crd.spec.scope == "Namespaced");
    let v = crd.spec.versions.iter().find(|v| v.name == "v1alpha1").context("v1alpha1 is served")?;
    let sub = v.subresources.as_ref().context("subresources")?;
    ensure!(sub.status.is_some(), "status subresource");
    let scale = sub.scale.as_ref().context("scale subresource")?;
    ensure!(scale.spec_replicas_path == ".spec.replicas");
    ensure!(scale.status_replicas_path == ".status.replicas");
    ensure!(scale.label_selector_path.as_deref() == Some(".status.selector"));
    let cols: Vec<&str> = v.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    ensure!(
        cols == ["Available", "Topology", "Active", "Ready", "Age", "Image", "Paused"],
        "printer columns: {cols:?}"
    );
    let wide: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority.unwrap_or(0) > 0)
        .map(|c| c.name.as_str())
        .collect();
    ensure!(wide == ["Image", "Paused"], "-o wide only: {wide:?}");
    Ok(())
}

/// Server-side apply of each sample; what comes back is the sample with the schema defaults
/// filled in, which must be exactly what serde's defaults make of the file.
#[tokio::test]
async fn samples_apply_and_read_back_with_defaults() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    install_crd(cp)?;
    let ns = cp.namespace("crd-samples").await?;
    let api: Api<SmscCluster> = ns.api();
    let samples = yaml_files(&repo_root().join("config/samples"))?;
    ensure!(samples.len() >= 3, "samples: {samples:?}");
    for path in samples {
        cp.run(cp.kubectl()?.args(["apply", "--server-side", "-n", ns.name(), "-f"]).arg(&path))
            .with_context(|| format!("applying {}", path.display()))?;
        let doc = smsc_doc(cp, &path)?;
        let name = doc["metadata"]["name"].as_str().context("sample has a name")?;
        let local: SmscCluster = serde_json::from_value(doc.clone())?;
        let stored = api.get(name).await?;
        ensure!(
            stored.spec == local.spec,
            "{}: stored spec differs from the file with serde defaults:\nstored: {:#?}\nlocal: {:#?}",
            path.display(),
            stored.spec,
            local.spec
        );
        // The defaults are really in the stored object, not only filled in by serde on read.
        let raw = cp.run(cp.kubectl()?.args(["get", "smsc", name, "-n", ns.name(), "-o", "json"]))?;
        let raw: Value = serde_json::from_str(&raw)?;
        let spec = &raw["spec"];
        for (ptr, want) in [
            ("/shutdown/preStopSleepSeconds", Value::from(10)),
            ("/shutdown/drainSeconds", Value::from(30)),
            ("/leaderElection/leaseDurationSeconds", Value::from(15)),
            ("/podDisruptionBudget/minAvailable", Value::from(1)),
            ("/service/type", Value::from("LoadBalancer")),
            ("/service/externalTrafficPolicy", Value::from("Local")),
            ("/smpp/port", Value::from(2775)),
            ("/upstreams/0/port", Value::from(2775)),
            ("/upstreams/0/credentialsSecretRef/passwordKey", Value::from("password")),
        ] {
            ensure!(
                spec.pointer(ptr) == Some(&want),
                "{}: spec{ptr} = {:?}, want {want}",
                path.display(),
                spec.pointer(ptr)
            );
        }
    }
    Ok(())
}

/// Every invalid example is refused, by server-side apply and by plain create, and the message
/// names the field given in its `# expect-error:` line.
#[tokio::test]
async fn invalid_examples_are_refused_naming_the_field() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    install_crd(cp)?;
    let ns = cp.namespace("crd-invalid").await?;
    let files = yaml_files(&repo_root().join("config/samples/invalid"))?;
    ensure!(files.len() >= 15, "invalid examples: {files:?}");
    let mut failures = Vec::new();
    for path in &files {
        let expect = header(path, "expect-error")?;
        for verb in [&["apply", "--server-side"][..], &["create"][..]] {
            let out = cp.run(cp.kubectl()?.args(verb).args(["-n", ns.name(), "-f"]).arg(path));
            match out {
                Ok(o) => failures.push(format!(
                    "{} was accepted by `kubectl {}`: {o}",
                    path.display(),
                    verb.join(" ")
                )),
                Err(e) => {
                    let text = e.to_string();
                    if !text.contains(&expect) {
                        failures.push(format!(
                            "{}: `kubectl {}` error does not name {expect:?}: {text}",
                            path.display(),
                            verb.join(" ")
                        ));
                    }
                }
            }
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// `kubectl scale` goes through the scale subresource to spec.replicas.
#[tokio::test]
async fn kubectl_scale_sets_spec_replicas() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    install_crd(cp)?;
    let ns = cp.namespace("crd-scale").await?;
    let sample = repo_root().join("config/samples/single-bind-upstream.yaml");
    cp.run(cp.kubectl()?.args(["apply", "--server-side", "-n", ns.name(), "-f"]).arg(&sample))?;
    cp.run(cp.kubectl()?.args(["scale", "smsc/smsc-single-bind", "--replicas", "3", "-n", ns.name()]))?;
    let api: Api<SmscCluster> = ns.api();
    ensure!(api.get("smsc-single-bind").await?.spec.replicas == 3, "spec.replicas after kubectl scale");
    let scale = cp.run(cp.kubectl()?.args([
        "get",
        "smsc/smsc-single-bind",
        "-n",
        ns.name(),
        "--subresource",
        "scale",
        "-o",
        "jsonpath={.spec.replicas}",
    ]))?;
    ensure!(scale.trim() == "3", "scale subresource spec.replicas: {scale:?}");
    Ok(())
}

/// The status the controller writes (typed, with conditions and checklist) is accepted by the
/// schema, and `kubectl get smsc` shows it in the printer columns.
#[tokio::test]
async fn status_is_accepted_and_printer_columns_show_it() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    install_crd(cp)?;
    let ns = cp.namespace("crd-status").await?;
    let sample = repo_root().join("config/samples/single-bind-upstream.yaml");
    cp.run(cp.kubectl()?.args(["apply", "--server-side", "-n", ns.name(), "-f"]).arg(&sample))?;
    let api: Api<SmscCluster> = ns.api();
    // Whole seconds: metav1.Time is stored at second precision.
    let now = Time(Timestamp::from_second(Timestamp::now().as_second())?);
    let status = SmscClusterStatus {
        observed_generation: Some(1),
        topology: Some(Topology::ActiveStandby),
        replicas: 2,
        ready_replicas: 1,
        ready_text: Some("1/2".into()),
        image: Some("smscd:e2e".into()),
        active_pod: Some("smsc-single-bind-abc-0".into()),
        selector: Some("app.kubernetes.io/instance=smsc-single-bind".into()),
        checklist: vec![ChecklistItem {
            name: ChecklistItemName::UpstreamBindCapacity,
            satisfied: false,
            message: "carrier-b allows 1 bind; 2 replicas x 1 need 2".into(),
        }],
        conditions: vec![
            Condition {
                type_: ConditionType::ScaleOutSafe,
                status: ConditionStatus::False,
                reason: "UpstreamBindCapacity".into(),
                message: "carrier-b allows 1 bind".into(),
                last_transition_time: now.clone(),
                observed_generation: Some(1),
            },
            Condition {
                type_: ConditionType::Available,
                status: ConditionStatus::True,
                reason: "ReplicasAvailable".into(),
                message: "1 of 2 replicas available".into(),
                last_transition_time: now,
                observed_generation: Some(1),
            },
        ],
    };
    let patch = serde_json::json!({
        "apiVersion": "smsc.io/v1alpha1",
        "kind": "SmscCluster",
        "status": status,
    });
    api.patch_status("smsc-single-bind", &PatchParams::apply("smsc-e2e").force(), &Patch::Apply(&patch))
        .await?;
    let stored = api.get_status("smsc-single-bind").await?;
    ensure!(stored.status.as_ref() == Some(&status), "status round trip: {:#?}", stored.status);

    let out = wait_for("kubectl get smsc to show the status", Duration::from_secs(10), || async {
        let out = cp.run(cp.kubectl()?.args(["get", "smsc", "-n", ns.name()]))?;
        Ok::<_, smsc_e2e::Error>(out.contains("ActiveStandby").then_some(out))
    })
    .await?;
    let mut lines = out.lines();
    let head: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    ensure!(head == ["NAME", "AVAILABLE", "TOPOLOGY", "ACTIVE", "READY", "AGE"], "header: {head:?}");
    let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    ensure!(
        row.get(..5)
            == Some(&["smsc-single-bind", "True", "ActiveStandby", "smsc-single-bind-abc-0", "1/2"][..]),
        "row: {row:?}"
    );
    let wide = cp.run(cp.kubectl()?.args(["get", "smsc", "-o", "wide", "-n", ns.name()]))?;
    let mut lines = wide.lines();
    let head: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    ensure!(
        head == ["NAME", "AVAILABLE", "TOPOLOGY", "ACTIVE", "READY", "AGE", "IMAGE", "PAUSED"],
        "wide header: {head:?}"
    );
    let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    ensure!(row.get(6..) == Some(&["smscd:e2e", "false"][..]), "wide row: {row:?}");
    Ok(())
}
