//! The operator chart: `helm lint`, what `helm template` renders (cluster-wide and per
//! namespace), and an install on the real API server whose RBAC lets the operator grant smscd
//! its Role (RBAC refuses to let a subject grant what it does not hold).

use std::path::PathBuf;

use anyhow::{ensure, Context};
use serde_json::Value;
use smsc_e2e::{control_plane, repo_root, ControlPlane};

fn chart() -> PathBuf {
    repo_root().join("charts/smsc-operator")
}

/// `helm template` with these `--set`s, as JSON objects (kubectl parses the YAML).
fn render(cp: &ControlPlane, release: &str, namespace: &str, sets: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut helm = cp.helm()?;
    helm.args(["template", release]).arg(chart()).args(["--namespace", namespace]);
    for s in sets {
        helm.args(["--set", s]);
    }
    let yaml = cp.run(&mut helm)?;
    let file = std::env::temp_dir().join(format!("smsc-chart-{}-{release}.yaml", std::process::id()));
    std::fs::write(&file, yaml).context("writing the rendered chart")?;
    let out = cp.run(cp.kubectl()?.args(["create", "--dry-run=client", "-o", "json", "-f"]).arg(&file));
    let _ = std::fs::remove_file(&file);
    // One JSON object per document, one after the other.
    Ok(serde_json::Deserializer::from_str(&out?).into_iter::<Value>().collect::<Result<Vec<_>, _>>()?)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// Does some rule grant `verb` on `resource` in `group`?
fn grants(rules: &Value, group: &str, resource: &str, verb: &str) -> bool {
    rules.as_array().is_some_and(|rs| {
        rs.iter().any(|r| {
            strs(&r["apiGroups"]).contains(&group)
                && strs(&r["resources"]).contains(&resource)
                && strs(&r["verbs"]).contains(&verb)
        })
    })
}

fn operator_args(docs: &[Value]) -> anyhow::Result<Vec<String>> {
    let dep = of_kind(docs, "Deployment");
    ensure!(dep.len() == 1, "one Deployment, got {}", dep.len());
    let c = &dep[0]["spec"]["template"]["spec"]["containers"][0];
    Ok(strs(&c["args"]).into_iter().map(String::from).collect())
}

#[tokio::test]
async fn helm_lint_passes() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    cp.run(cp.helm()?.arg("lint").arg(chart()).arg("--strict"))?;
    cp.run(cp.helm()?.arg("lint").arg(chart()).args([
        "--strict",
        "--set",
        "watchNamespaces={team-a,team-b}",
    ]))?;
    // values.schema.json catches a bad value before anything renders.
    let bad = cp.run(cp.helm()?.args(["template", "x"]).arg(chart()).args(["--set", "log.format=xml"]));
    ensure!(bad.as_ref().is_err_and(|e| e.to_string().contains("/log/format")), "log.format=xml: {bad:?}");
    Ok(())
}

#[tokio::test]
async fn template_defaults_are_cluster_wide_and_hardened() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let docs = render(cp, "op", "smsc-system", &[])?;
    ensure!(of_kind(&docs, "Role").is_empty(), "no Roles without watchNamespaces");
    let binding = of_kind(&docs, "ClusterRoleBinding");
    ensure!(binding.len() == 1, "one ClusterRoleBinding");
    ensure!(binding[0]["subjects"][0]["namespace"] == "smsc-system");
    let role = of_kind(&docs, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "op-smsc-operator")
        .context("the operator's ClusterRole")?;
    let rules = &role["rules"];
    for (group, resource, verb) in [
        ("smsc.io", "smscclusters", "watch"),
        ("smsc.io", "smscclusters/status", "patch"),
        ("apps", "deployments", "patch"),
        ("apps", "deployments", "delete"),
        ("policy", "poddisruptionbudgets", "create"),
        ("autoscaling", "horizontalpodautoscalers", "create"),
        ("", "configmaps", "create"),
        ("", "services", "create"),
        ("", "serviceaccounts", "create"),
        ("rbac.authorization.k8s.io", "roles", "create"),
        ("rbac.authorization.k8s.io", "rolebindings", "create"),
        ("", "pods", "patch"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
        ("coordination.k8s.io", "leases", "patch"),
        ("", "events", "create"),
        ("", "secrets", "get"),
    ] {
        ensure!(grants(rules, group, resource, verb), "ClusterRole lacks {verb} {group}/{resource}");
    }
    for (group, resource, verb) in
        [("", "secrets", "list"), ("rbac.authorization.k8s.io", "roles", "escalate"), ("", "pods", "delete")]
    {
        ensure!(
            !grants(rules, group, resource, verb),
            "ClusterRole grants more than needed: {verb} {group}/{resource}"
        );
    }

    let args = operator_args(&docs)?;
    for want in ["--smscd-image=smscd:0.1.0", "--log-format=json", "--leader-elect"] {
        ensure!(args.iter().any(|a| a == want), "args {args:?} lack {want}");
    }
    ensure!(!args.iter().any(|a| a.starts_with("--namespace")), "no --namespace by default: {args:?}");
    let dep = of_kind(&docs, "Deployment")[0];
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    ensure!(pod["securityContext"]["runAsNonRoot"] == true);
    ensure!(c["securityContext"]["readOnlyRootFilesystem"] == true);
    ensure!(c["securityContext"]["allowPrivilegeEscalation"] == false);
    ensure!(c["livenessProbe"]["httpGet"]["path"] == "/healthz");
    ensure!(c["readinessProbe"]["httpGet"]["path"] == "/readyz");
    ensure!(c["resources"]["requests"]["cpu"].is_string(), "resources set");
    ensure!(of_kind(&docs, "Service").len() == 1, "metrics Service");
    Ok(())
}

#[tokio::test]
async fn template_with_namespaces_uses_roles_only_there() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let docs = render(cp, "op", "smsc-system", &["watchNamespaces={team-a,team-b}"])?;
    ensure!(of_kind(&docs, "ClusterRoleBinding").is_empty(), "nothing bound cluster-wide");
    let cluster_roles: Vec<&str> =
        of_kind(&docs, "ClusterRole").iter().filter_map(|r| r["metadata"]["name"].as_str()).collect();
    ensure!(
        cluster_roles == ["op-smsc-operator-edit", "op-smsc-operator-view"],
        "only the aggregated roles: {cluster_roles:?}"
    );
    let roles = of_kind(&docs, "Role");
    let mut where_: Vec<(&str, &str)> = roles
        .iter()
        .filter_map(|r| Some((r["metadata"]["namespace"].as_str()?, r["metadata"]["name"].as_str()?)))
        .collect();
    where_.sort();
    ensure!(
        where_
            == [
                ("smsc-system", "op-smsc-operator-leader-election"),
                ("team-a", "op-smsc-operator"),
                ("team-b", "op-smsc-operator")
            ],
        "Roles: {where_:?}"
    );
    let bindings = of_kind(&docs, "RoleBinding");
    ensure!(bindings.len() == 3, "one RoleBinding per Role");
    ensure!(bindings.iter().all(|b| b["subjects"][0]["namespace"] == "smsc-system"));
    let args = operator_args(&docs)?;
    for want in ["--namespace=team-a", "--namespace=team-b"] {
        ensure!(args.iter().any(|a| a == want), "args {args:?} lack {want}");
    }
    Ok(())
}

/// Installed for real, the operator's ServiceAccount may create exactly the Role the operator
/// gives smscd (crates/smsc-operator/src/build/rbac.rs): without holding those permissions
/// itself, RBAC would refuse it as an escalation.
#[tokio::test]
async fn installed_chart_lets_the_operator_grant_smscd_its_role() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let ns = cp.namespace("chart-install").await?;
    let release = format!("r{}", std::process::id());
    cp.run(cp.helm()?.args(["install", &release]).arg(chart()).args([
        "--namespace",
        ns.name(),
        "--set",
        "aggregateToDefaultRoles=false",
    ]))?;
    let result = async {
        let sa = format!("system:serviceaccount:{}:{release}-smsc-operator", ns.name());
        for (verb, resource) in
            [("patch", "pods"), ("create", "leases.coordination.k8s.io"), ("update", "leases.coordination.k8s.io"), ("create", "roles.rbac.authorization.k8s.io"), ("patch", "deployments.apps"), ("get", "secrets")]
        {
            let out = cp.run(cp.kubectl()?.args(["auth", "can-i", verb, resource, "-n", ns.name(), "--as", &sa]))?;
            ensure!(out.trim() == "yes", "operator cannot {verb} {resource}: {out}");
        }
        let no = cp.run(cp.kubectl()?.args(["auth", "can-i", "list", "secrets", "-n", ns.name(), "--as", &sa]));
        ensure!(no.is_err(), "operator may list Secrets: {no:?}");

        let role = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": { "name": "smscd-like", "namespace": ns.name() },
            "rules": [
                { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["x-leader"], "verbs": ["get", "update"] },
                { "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"] },
                { "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"] }
            ]
        });
        let file = std::env::temp_dir().join(format!("smsc-role-{}.json", std::process::id()));
        std::fs::write(&file, role.to_string())?;
        let created = cp.run(cp.kubectl()?.args(["create", "--as", &sa, "-f"]).arg(&file));
        let _ = std::fs::remove_file(&file);
        created.context("the operator's ServiceAccount creating smscd's Role")?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let uninstall = cp.run(cp.helm()?.args(["uninstall", &release, "--namespace", ns.name()]));
    result?;
    uninstall?;
    Ok(())
}

/// One template, rendered with these `--set`s and parsed (its kinds need CRDs that kubectl's
/// client-side dry run cannot map); None when the template renders nothing.
fn render_one(cp: &ControlPlane, template: &str, sets: &[&str]) -> anyhow::Result<Option<Value>> {
    let mut helm = cp.helm()?;
    helm.args(["template", "op"]).arg(chart()).args(["--namespace", "smsc-system", "--show-only", template]);
    for s in sets {
        helm.args(["--set", s]);
    }
    match cp.run(&mut helm) {
        Ok(yaml) => Ok(Some(serde_saphyr::from_str(&yaml).context("parsing the rendered template")?)),
        // helm refuses --show-only of a template that rendered nothing.
        Err(e) if e.to_string().contains("could not find template") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn service_and_pod_monitors_are_optional_and_select_the_operator() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    for t in ["templates/servicemonitor.yaml", "templates/podmonitor.yaml"] {
        ensure!(render_one(cp, t, &[])?.is_none(), "{t} renders nothing by default");
    }
    let sm = render_one(
        cp,
        "templates/servicemonitor.yaml",
        &["metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom"],
    )?
    .context("no ServiceMonitor")?;
    ensure!(sm["kind"] == "ServiceMonitor" && sm["apiVersion"] == "monitoring.coreos.com/v1", "{sm}");
    ensure!(sm["metadata"]["labels"]["release"] == "prom", "{sm}");
    ensure!(sm["spec"]["endpoints"][0]["port"] == "http-metrics", "{sm}");
    ensure!(sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "op", "{sm}");
    ensure!(sm["spec"]["namespaceSelector"]["matchNames"][0] == "smsc-system", "{sm}");
    // It selects the metrics Service, so it needs one.
    let no_service = render_one(
        cp,
        "templates/servicemonitor.yaml",
        &["metrics.serviceMonitor.enabled=true", "metrics.service.enabled=false"],
    );
    ensure!(no_service.is_err_and(|e| e.to_string().contains("metrics.service.enabled")));

    let pm = render_one(
        cp,
        "templates/podmonitor.yaml",
        &["metrics.podMonitor.enabled=true", "metrics.podMonitor.interval=15s"],
    )?
    .context("no PodMonitor")?;
    ensure!(pm["kind"] == "PodMonitor", "{pm}");
    ensure!(pm["spec"]["podMetricsEndpoints"][0]["port"] == "http-metrics", "{pm}");
    ensure!(pm["spec"]["podMetricsEndpoints"][0]["interval"] == "15s", "{pm}");
    ensure!(pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "smsc-operator", "{pm}");
    // The schema refuses what Prometheus would not parse.
    let bad = cp.run(
        cp.helm()?.args(["template", "x"]).arg(chart()).args(["--set", "metrics.podMonitor.interval=often"]),
    );
    ensure!(bad.as_ref().is_err_and(|e| e.to_string().contains("/metrics/podMonitor/interval")), "{bad:?}");
    Ok(())
}
