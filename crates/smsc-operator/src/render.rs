//! `smsc-operator render`: the children of an SmscCluster file as YAML, with no cluster.

use smsc_api::crd::SmscCluster;

use crate::build;
use crate::error::{Error, Result};

/// The children of every SmscCluster in `yaml`, as YAML documents. Other documents in the file
/// (the Secrets a sample ships with, say) are skipped. An ActiveActive the checklist refuses is an
/// error, as it would be in the cluster.
pub fn render(yaml: &str, smscd_image: &str) -> Result<String> {
    let mut out = Vec::new();
    for (n, doc) in documents(yaml).into_iter().enumerate() {
        let value: serde_json::Value = serde_saphyr::from_str(doc)
            .map_err(|e| Error::InvalidSpec(format!("document {}: not YAML: {e}", n + 1)))?;
        if value.is_null() || value.get("kind").and_then(|k| k.as_str()) != Some("SmscCluster") {
            continue;
        }
        out.push(render_one(doc, smscd_image)?);
    }
    if out.is_empty() {
        return Err(Error::InvalidSpec("no SmscCluster in the input".into()));
    }
    Ok(out.join("---\n"))
}

/// Split a multi-document YAML stream on its `---` separator lines.
fn documents(yaml: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in yaml.split_inclusive('\n') {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") {
            docs.push(&yaml[start..at]);
            start = at + line.len();
        }
        at += line.len();
    }
    docs.push(&yaml[start..]);
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

fn render_one(yaml: &str, smscd_image: &str) -> Result<String> {
    let cluster: SmscCluster =
        serde_saphyr::from_str(yaml).map_err(|e| Error::InvalidSpec(format!("not an SmscCluster: {e}")))?;
    let plan = build::plan(&cluster, smscd_image, "default")?;
    if let Some(note) = plan.decision.refused_note() {
        return Err(Error::InvalidSpec(note));
    }
    build::children(&cluster, &plan)?.to_yaml()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn renders_every_child_without_secrets_or_owner() {
        let out = render(&fixture("full.yaml"), "smscd:dev").unwrap_or_else(|e| panic!("{e}"));
        for kind in [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
        ] {
            assert!(out.contains(&format!("kind: {kind}")), "{kind} missing:\n{out}");
        }
        assert!(!out.contains("ownerReferences"));
        assert!(out.contains("${SMPP_BIND_ALPHA_ONE_PASSWORD}"));
        assert!(out.contains("registry.example/smscd:1.2.3"));
        assert_eq!(out.matches("\n---\n").count() + 1, 8, "{out}");
    }

    #[test]
    fn refused_active_active_is_an_error() {
        let yaml =
            fixture("single-bind.yaml").replace("replicas: 2\n", "replicas: 2\n  topology: ActiveActive\n");
        let err = render(&yaml, "smscd:dev").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("UpstreamBindCapacity"), "{err}");
        assert!(render("not: [valid", "x").is_err());
    }

    #[test]
    fn samples_with_their_secrets_render() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../config/samples/single-bind-upstream.yaml");
        let yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let out = render(&yaml, "smscd:dev").unwrap_or_else(|e| panic!("{e}"));
        assert!(out.contains("kind: Deployment"), "{out}");
        assert!(!out.contains("kind: Secret"), "Secrets are inputs, not children:\n{out}");
        let err = render("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n", "x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no SmscCluster"), "{err}");
    }
}
