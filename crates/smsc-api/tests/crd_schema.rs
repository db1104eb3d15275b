//! The CRD schema offline: defaults, and every CEL rule compiled, costed and evaluated
//! (kube's CEL validator, the same rules the API server runs) against the samples.

use std::path::{Path, PathBuf};

use kube::core::cel::{compile_schema, estimate_rule_cost, Validator};
use kube::CustomResourceExt;
use serde_json::Value;
use smsc_api::crd::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema() -> Value {
    let crd = SmscCluster::crd();
    let s = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(s.expect("the derived CRD has a schema")).expect("schema to JSON")
}

/// The YAML documents of a file.
fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn smsc_doc(path: &Path) -> Value {
    docs(path)
        .into_iter()
        .find(|d| d["kind"] == "SmscCluster")
        .unwrap_or_else(|| panic!("{} has no SmscCluster", path.display()))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// `# key: value` header lines of an invalid sample.
fn header(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let prefix = format!("# {key}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{} has no `{prefix}` line", path.display()))
}

#[test]
fn minimal_yaml_gets_the_documented_defaults() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minimal.yaml"))
            .expect("fixture");
    let smsc: SmscCluster = serde_saphyr::from_str(&text).expect("minimal SmscCluster parses");
    let s = &smsc.spec;
    assert_eq!(s.replicas, 2);
    assert_eq!(s.topology, Topology::Auto);
    assert_eq!(s.image, None);
    assert!(!s.paused);
    assert_eq!(s.smpp.port, 2775);
    assert!(s.smpp.tls.is_none() && s.smpp.accounts.is_empty());
    assert_eq!(s.dlr_store.type_, DlrStoreType::Memory);
    assert_eq!(s.dlr_store.ttl, "72h");
    assert_eq!(s.service.type_, ServiceType::LoadBalancer);
    assert_eq!(s.service.external_traffic_policy, ExternalTrafficPolicy::Local);
    assert!(!s.scale_out_checklist.load_balancer_pins_connections);
    assert!(!s.scale_out_checklist.esmes_reconnect_with_backoff);
    assert_eq!((s.shutdown.pre_stop_sleep_seconds, s.shutdown.drain_seconds), (10, 30));
    assert!(!s.autoscaling.enabled);
    assert_eq!(s.autoscaling.target_cpu_utilization_percentage, 70);
    assert_eq!(s.autoscaling.scale_down_stabilization_seconds, 300);
    assert!(s.pod_disruption_budget.enabled);
    assert_eq!(s.pod_disruption_budget.min_available, 1);
    let le = &s.leader_election;
    assert_eq!((le.lease_duration_seconds, le.renew_deadline_seconds, le.retry_period_seconds), (15, 10, 2));
    assert!(s.pod.topology_spread_constraints.is_none());
    assert!(smsc.status.is_none());
}

#[test]
fn nested_defaults_apply_inside_list_items() {
    let text = "apiVersion: smsc.io/v1alpha1\nkind: SmscCluster\nmetadata: {name: x}\nspec:\n  upstreams:\n  - {name: a, host: h, credentialsSecretRef: {name: c}}\n  smpp:\n    tls: {secretName: t}\n    accounts:\n    - {systemId: e, passwordSecretRef: {name: p, key: k}}\n";
    let smsc: SmscCluster = serde_saphyr::from_str(text).expect("parses");
    let u = &smsc.spec.upstreams[0];
    assert_eq!((u.port, u.window, u.binds_per_replica, u.bind_type), (2775, 10, 1, BindType::Transceiver));
    assert_eq!(u.max_binds, None);
    assert_eq!(
        (u.credentials_secret_ref.system_id_key.as_str(), u.credentials_secret_ref.password_key.as_str()),
        ("systemId", "password")
    );
    assert_eq!(smsc.spec.smpp.tls.as_ref().map(|t| t.port), Some(8775));
    assert_eq!(smsc.spec.smpp.accounts[0].window, 64);
}

/// The API server fills defaults from the schema; the operator reads them through serde. The two
/// must agree, or an object would mean different things before and after a round trip.
#[test]
fn schema_defaults_agree_with_serde_defaults() {
    let schema = schema();
    let minimal = smsc_doc(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minimal.yaml"));
    let by_schema = kube::core::cel::apply_defaults(&schema, &minimal);
    let by_schema: SmscCluster = serde_json::from_value(by_schema).expect("schema-defaulted object parses");
    let by_serde: SmscCluster = serde_json::from_value(minimal).expect("minimal parses");
    assert_eq!(by_schema.spec, by_serde.spec);
}

/// Every `x-kubernetes-validations` rule with the schema node it sits on, and its path.
fn rules(node: &Value, path: &str, out: &mut Vec<(String, Value, String)>) {
    if let Some(vs) = node.get("x-kubernetes-validations").and_then(Value::as_array) {
        for v in vs {
            out.push((path.to_string(), node.clone(), v["rule"].as_str().unwrap_or_default().to_string()));
        }
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            rules(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        rules(items, &format!("{path}[]"), out);
    }
    if let Some(ap) = node.get("additionalProperties").filter(|v| v.is_object()) {
        rules(ap, &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_cel_rule_compiles_names_its_field_and_fits_the_cost_budget() {
    let schema = schema();
    let mut all = Vec::new();
    rules(&schema, "", &mut all);
    assert!(all.len() >= 11, "expected the CEL rules, found {}", all.len());
    for (path, node, rule) in &all {
        let compiled = compile_schema(node);
        assert!(
            !compiled.has_errors(),
            "{path}: rule {rule:?} does not compile: {:?}",
            compiled.compilation_errors()
        );
        // Cost only: kube-cel's scope check does not know comprehension variables (`all(c, ..)`).
        let warnings = estimate_rule_cost(rule, &compiled);
        assert!(warnings.is_empty(), "{path}: rule {rule:?}: {warnings:?}");
        let v = node["x-kubernetes-validations"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["rule"] == rule.as_str()))
            .expect("the rule is there");
        let message =
            v.get("message").or(v.get("messageExpression")).and_then(Value::as_str).unwrap_or_default();
        assert!(
            message.contains("spec."),
            "{path}: rule {rule:?} has no message naming its field: {message:?}"
        );
    }
}

#[test]
fn samples_parse_and_pass_every_cel_rule() {
    let schema = schema();
    let validator = Validator::new();
    let samples = yaml_files(&repo().join("config/samples"));
    assert!(samples.len() >= 3);
    for path in samples {
        let doc = smsc_doc(&path);
        let typed: Result<SmscCluster, _> = serde_json::from_value(doc.clone());
        assert!(typed.is_ok(), "{}: {:?}", path.display(), typed.err());
        if let Err(errs) = validator.validate(&schema, &doc, None) {
            panic!("{} fails CEL: {errs:?}", path.display());
        }
    }
}

/// Each invalid example with `# rule: cel` is refused offline with a message naming the field in
/// its `# expect-error:` line; together they trip every CEL rule in the schema.
#[test]
fn invalid_samples_trip_every_cel_rule() {
    let schema = schema();
    let validator = Validator::new();
    let mut tripped = std::collections::BTreeSet::new();
    for path in yaml_files(&repo().join("config/samples/invalid")) {
        let kind = header(&path, "rule");
        assert!(kind == "cel" || kind == "schema", "{}: rule must be cel or schema", path.display());
        if kind != "cel" {
            continue;
        }
        let expect = header(&path, "expect-error");
        let doc = smsc_doc(&path);
        let errs = match validator.validate(&schema, &doc, None) {
            Ok(()) => panic!("{} passed CEL validation", path.display()),
            Err(e) => e.into_vec(),
        };
        let named = errs.iter().any(|e| {
            let text = e.to_string();
            text.contains(&expect) || e.message.contains(&expect.replace("[0]", "[]"))
        });
        assert!(named, "{}: no error names {expect:?}: {errs:?}", path.display());
        tripped.extend(errs.into_iter().map(|e| e.rule));
    }
    let mut all = Vec::new();
    rules(&schema, "", &mut all);
    let untested: Vec<&String> = all.iter().map(|(_, _, r)| r).filter(|r| !tripped.contains(*r)).collect();
    assert!(untested.is_empty(), "CEL rules no invalid example trips: {untested:?}");
}
