//! The operator chart: `helm lint`, what `helm template` renders (cluster-wide and per
//! namespace), and an install on the real API server whose RBAC lets the operator grant smscd
//! its Role (RBAC refuses to let a subject grant what it does not hold).

use std::path::PathBuf;
use std::time::Duration;

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
    // Tests of one binary run at once: each render its own file.
    static RENDERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("smsc-chart-{}-{release}-{n}.yaml", std::process::id()));
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
    ensure!(binding.len() == 2, "the operator's and the CRD's ClusterRoleBinding");
    ensure!(binding.iter().all(|b| b["subjects"][0]["namespace"] == "smsc-system"));
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
    for want in ["--smscd-image=smscd:0.1.0", "--log-format=json", "--leader-elect", "--manage-crd=true"] {
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
    let policy = of_kind(&docs, "ValidatingAdmissionPolicy");
    ensure!(
        policy.len() == 1 && policy[0]["spec"]["failurePolicy"] == "Fail",
        "smscd Pod policy: {policy:?}"
    );
    let binding = of_kind(&docs, "ValidatingAdmissionPolicyBinding");
    ensure!(binding.len() == 1 && binding[0]["spec"]["policyName"] == policy[0]["metadata"]["name"]);
    ensure!(binding[0]["spec"]["matchResources"].is_null(), "every namespace when watching all");
    let off = render(cp, "op", "smsc-system", &["smscdPodPolicy.enabled=false"])?;
    ensure!(of_kind(&off, "ValidatingAdmissionPolicy").is_empty(), "smscdPodPolicy.enabled=false");
    Ok(())
}

#[tokio::test]
async fn template_with_namespaces_uses_roles_only_there() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let docs = render(cp, "op", "smsc-system", &["watchNamespaces={team-a,team-b}"])?;
    // Cluster-wide only what cannot be namespaced: the CRD (by name) and the aggregated roles.
    let bound: Vec<&str> =
        of_kind(&docs, "ClusterRoleBinding").iter().filter_map(|r| r["roleRef"]["name"].as_str()).collect();
    ensure!(bound == ["op-smsc-operator-crd"], "bound cluster-wide: {bound:?}");
    let cluster_roles: Vec<&str> =
        of_kind(&docs, "ClusterRole").iter().filter_map(|r| r["metadata"]["name"].as_str()).collect();
    ensure!(
        cluster_roles == ["op-smsc-operator-crd", "op-smsc-operator-edit", "op-smsc-operator-view"],
        "only the CRD and the aggregated roles: {cluster_roles:?}"
    );
    let crd_role =
        of_kind(&docs, "ClusterRole").into_iter().find(|r| r["metadata"]["name"] == "op-smsc-operator-crd");
    let crd_rules = &crd_role.context("the CRD ClusterRole")?["rules"];
    ensure!(
        strs(&crd_rules[0]["resourceNames"]) == ["smscclusters.smsc.io"],
        "the CRD role names it: {crd_rules}"
    );
    ensure!(strs(&crd_rules[0]["verbs"]) == ["get", "patch"], "no create: {crd_rules}");
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
    let binding = of_kind(&docs, "ValidatingAdmissionPolicyBinding");
    ensure!(binding.len() == 1, "one smscd Pod policy binding");
    let only = &binding[0]["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0];
    ensure!(strs(&only["values"]) == ["team-a", "team-b"], "policy bound to the watched namespaces: {only}");
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
        // Its own CRD, by name (crd.rs), and no other.
        let crd = cp.run(cp.kubectl()?.args(["auth", "can-i", "patch", "customresourcedefinitions/smscclusters.smsc.io", "--as", &sa]))?;
        ensure!(crd.trim() == "yes", "operator cannot patch its CRD: {crd}");
        let other = cp.run(cp.kubectl()?.args(["auth", "can-i", "patch", "customresourcedefinitions/other.example.com", "--as", &sa]));
        ensure!(other.is_err(), "operator may patch any CRD: {other:?}");

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

/// Runs `kubectl patch pod` as `who` with a strategic merge patch (containers merge by name, as
/// an image change must); server-side dry run when `dry`.
fn patch_pod_as(
    cp: &ControlPlane,
    ns: &str,
    who: &str,
    pod: &str,
    patch: &Value,
    dry: bool,
) -> anyhow::Result<String> {
    let mut cmd = cp.kubectl()?;
    cmd.args(["patch", "pod", pod, "-n", ns, "--as", who, "--type", "strategic", "-p", &patch.to_string()]);
    if dry {
        cmd.arg("--dry-run=server");
    }
    Ok(cp.run(&mut cmd)?)
}

fn smscd_like_pod(name: &str, cluster: Option<&str>) -> Value {
    let labels = match cluster {
        Some(c) => serde_json::json!({ "app.kubernetes.io/name": "smscd", "app.kubernetes.io/instance": c }),
        None => serde_json::json!({ "app": "billing" }),
    };
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": labels },
        "spec": { "containers": [{ "name": "c", "image": "localhost/smscd:dev" }] }
    })
}

/// issue 13 item 4: smscd's ServiceAccount holds `patch pods` on its namespace (RBAC cannot
/// narrow it by label), for the role label that keeps failover working without the operator.
/// The chart's ValidatingAdmissionPolicy narrows it: the role label (and the deletion cost) of
/// its own cluster's Pods, nothing else. Without the policy, every "denied" below succeeds.
#[tokio::test]
async fn installed_chart_confines_smscd_to_its_own_pods_role_label() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use kube::api::PostParams;

    let cp = control_plane().await?;
    let ns = cp.namespace("smscd-policy").await?;
    let release = format!("p{}", std::process::id());
    cp.run(cp.helm()?.args(["install", &release]).arg(chart()).args([
        "--namespace",
        ns.name(),
        "--set",
        "aggregateToDefaultRoles=false",
    ]))?;
    let result = async {
        // smscd's ServiceAccount, Role and RoleBinding exactly as the operator builds them for
        // SmscCluster `a`.
        let cluster: smsc_api::crd::SmscCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "smsc.io/v1alpha1",
            "kind": "SmscCluster",
            "metadata": { "name": "a", "namespace": ns.name() },
            "spec": { "routing": { "defaultChain": ["sim"] } }
        }))?;
        let plan = smsc_operator::build::plan(&cluster, "localhost/smscd:dev", ns.name())?;
        let pp = PostParams::default();
        ns.api::<ServiceAccount>().create(&pp, &smsc_operator::build::rbac::service_account(&plan)).await?;
        ns.api::<Role>().create(&pp, &smsc_operator::build::rbac::role(&plan)).await?;
        ns.api::<RoleBinding>().create(&pp, &smsc_operator::build::rbac::role_binding(&plan)).await?;
        let pods = ns.api::<Pod>();
        for (name, cluster) in [("a-0", Some("a")), ("a-1", Some("a")), ("b-0", Some("b")), ("billing", None)] {
            pods.create(&pp, &serde_json::from_value(smscd_like_pod(name, cluster))?).await?;
        }
        let smscd_a = format!("system:serviceaccount:{}:a-smscd", ns.name());
        let active = serde_json::json!({ "metadata": { "labels": { "smsc.io/role": "active" } } });
        let image = serde_json::json!({ "spec": { "containers": [{ "name": "c", "image": "evil/image:1" }] } });

        // RBAC alone allows the image change: the policy must be what refuses it. Policies take
        // effect a moment after they are created; a dry run asks without changing anything.
        let denied = smsc_e2e::wait_for("the smscd Pod policy to refuse an image change", Duration::from_secs(60), || {
            let r = patch_pod_as(cp, ns.name(), &smscd_a, "a-1", &image, true);
            async move { Ok::<_, std::convert::Infallible>(r.err().map(|e| e.to_string())) }
        })
        .await?;
        ensure!(denied.contains("may not change a Pod's spec"), "image change refused for another reason: {denied}");

        // Allowed: the role label and the deletion cost on its own cluster's Pods.
        patch_pod_as(cp, ns.name(), &smscd_a, "a-0", &active, false).context("labelling its own Pod active")?;
        let cost = serde_json::json!({ "metadata": { "annotations": { "controller.kubernetes.io/pod-deletion-cost": "100" } } });
        patch_pod_as(cp, ns.name(), &smscd_a, "a-0", &cost, false).context("setting its Pod's deletion cost")?;
        let clear = serde_json::json!({ "metadata": { "labels": { "smsc.io/role": null } } });
        patch_pod_as(cp, ns.name(), &smscd_a, "a-0", &clear, false).context("clearing its own Pod's label")?;

        // Denied, each with the reason.
        let other_label = serde_json::json!({ "metadata": { "labels": { "team": "x" } } });
        let bad_role = serde_json::json!({ "metadata": { "labels": { "smsc.io/role": "standby" } } });
        let other_annotation = serde_json::json!({ "metadata": { "annotations": { "x": "y" } } });
        for (pod, patch, why) in [
            ("a-1", &image, "may not change a Pod's spec"),
            ("a-1", &other_label, "may only change the smsc.io/role label"),
            ("a-1", &bad_role, "to active or remove it"),
            ("a-1", &other_annotation, "pod-deletion-cost annotation"),
            ("b-0", &active, "a Pod of SmscCluster b"),
            ("billing", &active, "a Pod that is not smscd"),
        ] {
            let r = patch_pod_as(cp, ns.name(), &smscd_a, pod, patch, false);
            match r {
                Ok(out) => anyhow::bail!("smscd of a may patch {pod} with {patch}: {out}"),
                Err(e) => ensure!(e.to_string().contains(why), "patching {pod} with {patch}: {e}"),
            }
        }
        let a1 = pods.get("a-1").await?;
        let img = a1.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone());
        ensure!(img.as_deref() == Some("localhost/smscd:dev"), "a-1's image changed: {img:?}");

        // The policy compiles without type-check warnings.
        let policy = cp.run(cp.kubectl()?.args([
            "get",
            "validatingadmissionpolicy",
            &format!("{release}-smsc-operator-smscd-pods"),
            "-o",
            "json",
        ]))?;
        let policy: Value = serde_json::from_str(&policy)?;
        let warnings = &policy["status"]["typeChecking"]["expressionWarnings"];
        ensure!(warnings.is_null() || warnings.as_array().is_some_and(Vec::is_empty), "type-check warnings: {warnings}");
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
