//! The smscd Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, SecretKeySelector,
    SecretVolumeSource, SleepAction, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use smsc_api::crd::{DlrStoreType, SmscCluster};
use smsc_api::names::ADMIN_PORT;

use super::configmap::{account_password_env, bind_env, Rendered, REDIS_URL_ENV, TLS_DIR, UPSTREAM_CA_DIR};
use super::{port, Plan};
use crate::error::Result;
use crate::labels;

pub const CONTAINER: &str = "smscd";

fn secret_env(name: String, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.to_string(), api_version: None }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Every variable the rendered config refers to, each from its Secret key, plus the Pod identity.
pub fn env(cluster: &SmscCluster) -> Vec<EnvVar> {
    let spec = &cluster.spec;
    let mut env =
        vec![field_env("POD_NAME", "metadata.name"), field_env("POD_NAMESPACE", "metadata.namespace")];
    for u in &spec.upstreams {
        let c = &u.credentials_secret_ref;
        env.push(secret_env(bind_env(&u.name, "SYSTEM_ID"), &c.name, &c.system_id_key));
        env.push(secret_env(bind_env(&u.name, "PASSWORD"), &c.name, &c.password_key));
    }
    for (i, a) in spec.smpp.accounts.iter().enumerate() {
        env.push(secret_env(
            account_password_env(i),
            &a.password_secret_ref.name,
            &a.password_secret_ref.key,
        ));
    }
    if let (DlrStoreType::Redis, Some(r)) = (spec.dlr_store.type_, &spec.dlr_store.redis) {
        env.push(secret_env(REDIS_URL_ENV.to_string(), &r.url_secret_ref.name, &r.url_secret_ref.key));
    }
    env
}

fn spread(key: &str, when: &str, selector: &BTreeMap<String, String>) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.to_string(),
        when_unsatisfiable: when.to_string(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector.clone()),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

pub fn build(cluster: &SmscCluster, plan: &Plan, rendered: &Rendered) -> Result<Deployment> {
    let spec = &cluster.spec;
    let pod = &spec.pod;
    let selector = labels::selector(&plan.name);

    // The operator's labels win over the user's: the selector must keep matching.
    let mut pod_labels = pod.labels.clone();
    pod_labels.extend(labels::labels(&plan.name));
    let mut annotations = pod.annotations.clone();
    annotations.insert(labels::RESTART_HASH_ANNOTATION.to_string(), rendered.restart_hash.clone());

    let mut ports = vec![container_port("smpp", port(spec.smpp.port, "spec.smpp.port")?)];
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: labels::config_map_name(&plan.name),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: labels::CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    if let Some(tls) = &spec.smpp.tls {
        ports.push(container_port("smpp-tls", port(tls.port, "spec.smpp.tls.port")?));
        volumes.push(Volume {
            name: "smpp-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "smpp-tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    for u in &spec.upstreams {
        if let Some(ca) = u.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
            let name = format!("upstream-ca-{}", u.name);
            volumes.push(Volume {
                name: name.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(ca.name.clone()),
                    items: Some(vec![KeyToPath { key: ca.key.clone(), path: "ca.crt".into(), mode: None }]),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
            mounts.push(VolumeMount {
                name,
                mount_path: format!("{UPSTREAM_CA_DIR}/{}", u.name),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
    }
    ports.push(container_port("admin", ADMIN_PORT));

    let pre_stop = spec.shutdown.pre_stop_sleep_seconds;
    let container = Container {
        name: CONTAINER.into(),
        image: Some(plan.image.clone()),
        args: Some(vec!["--config".into(), format!("{}/{}", labels::CONFIG_DIR, labels::CONFIG_KEY)]),
        ports: Some(ports),
        env: Some(env(cluster)),
        volume_mounts: Some(mounts),
        resources: pod.resources.clone(),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        // The sleep action needs no shell in the image.
        lifecycle: (pre_stop > 0).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: i64::from(pre_stop) }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        ..Container::default()
    };

    let spread_constraints = match &pod.topology_spread_constraints {
        Some(user) => user.clone(),
        None => vec![
            spread("kubernetes.io/hostname", "DoNotSchedule", &selector),
            spread("topology.kubernetes.io/zone", "ScheduleAnyway", &selector),
        ],
    };

    let non_empty = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    Ok(Deployment {
        metadata: plan.meta(plan.name.clone()),
        spec: Some(DeploymentSpec {
            // Left out while the HPA owns it, so the two never fight over it.
            replicas: (!plan.autoscaled(cluster)).then_some(spec.replicas),
            selector: LabelSelector { match_labels: Some(selector), ..LabelSelector::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(labels::rbac_name(&plan.name)),
                    termination_grace_period_seconds: Some(plan.termination_grace_period_seconds),
                    containers: vec![container],
                    volumes: Some(volumes),
                    topology_spread_constraints: (!spread_constraints.is_empty())
                        .then_some(spread_constraints),
                    node_selector: non_empty(&pod.node_selector),
                    tolerations: (!pod.tolerations.is_empty()).then(|| pod.tolerations.clone()),
                    affinity: pod.affinity.clone(),
                    priority_class_name: pod.priority_class_name.clone(),
                    image_pull_secrets: (!pod.image_pull_secrets.is_empty())
                        .then(|| pod.image_pull_secrets.clone()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::configmap::render;
    use crate::build::fixtures::{load, plan_for};

    fn deployment(c: &SmscCluster) -> Deployment {
        let plan = plan_for(c);
        let r = render(c, &plan).unwrap_or_else(|e| panic!("{e}"));
        build(c, &plan, &r).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pod_spec(d: &Deployment) -> PodSpec {
        d.spec.clone().and_then(|s| s.template.spec).unwrap_or_else(|| panic!("no pod spec"))
    }

    #[test]
    fn minimal_deployment_has_the_reference_fields() {
        let c = load("minimal.yaml");
        let d = deployment(&c);
        let spec = d.spec.clone().unwrap_or_else(|| panic!("no spec"));
        assert_eq!(spec.replicas, Some(2));
        let ru = spec.strategy.and_then(|s| s.rolling_update).unwrap_or_else(|| panic!("no rolling update"));
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(ru.max_surge, Some(IntOrString::Int(1)));
        let p = pod_spec(&d);
        assert_eq!(p.termination_grace_period_seconds, Some(10 + 30 + 5));
        let spread = p.topology_spread_constraints.unwrap_or_default();
        assert_eq!(spread.len(), 2);
        assert_eq!(
            (spread[0].topology_key.as_str(), spread[0].when_unsatisfiable.as_str()),
            ("kubernetes.io/hostname", "DoNotSchedule")
        );
        assert_eq!(
            (spread[1].topology_key.as_str(), spread[1].when_unsatisfiable.as_str()),
            ("topology.kubernetes.io/zone", "ScheduleAnyway")
        );
        let ctr = &p.containers[0];
        assert_eq!(ctr.image.as_deref(), Some("smscd:test"));
        assert_eq!(ctr.args.clone().unwrap_or_default(), vec!["--config", "/etc/smscd/smscd.yaml"]);
        let ready =
            ctr.readiness_probe.clone().and_then(|p| p.http_get).unwrap_or_else(|| panic!("no readiness"));
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        assert_eq!(ready.port, IntOrString::String("admin".into()));
        let live =
            ctr.liveness_probe.clone().and_then(|p| p.http_get).unwrap_or_else(|| panic!("no liveness"));
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        let sleep = ctr.lifecycle.clone().and_then(|l| l.pre_stop).and_then(|h| h.sleep);
        assert_eq!(sleep.map(|s| s.seconds), Some(10));
        let env = ctr.env.clone().unwrap_or_default();
        let field = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value_from.clone())
                .and_then(|v| v.field_ref)
                .map(|f| f.field_path)
        };
        assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
        assert_eq!(field("POD_NAMESPACE").as_deref(), Some("metadata.namespace"));
        let mount = &ctr.volume_mounts.clone().unwrap_or_default()[0];
        assert_eq!(mount.mount_path, "/etc/smscd");
        assert_eq!(
            p.volumes.unwrap_or_default()[0].config_map.as_ref().map(|c| c.name.as_str()),
            Some("sms-config")
        );
        assert_eq!(p.service_account_name.as_deref(), Some("sms-smscd"));
        let meta = d.metadata;
        assert_eq!(meta.owner_references.unwrap_or_default()[0].uid, "uid-1");
        assert_eq!(
            meta.labels.unwrap_or_default().get("app.kubernetes.io/managed-by").map(String::as_str),
            Some("smsc-operator")
        );
    }

    #[test]
    fn hpa_owns_replicas_and_secrets_come_from_secret_refs() {
        let c = load("full.yaml");
        let d = deployment(&c);
        assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), None);
        let p = pod_spec(&d);
        let ctr = &p.containers[0];
        let env = ctr.env.clone().unwrap_or_default();
        let secret = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value_from.clone())
                .and_then(|v| v.secret_key_ref)
                .map(|s| (s.name, s.key))
        };
        assert_eq!(secret("SMPP_BIND_ALPHA_ONE_SYSTEM_ID"), Some(("alpha-creds".into(), "systemId".into())));
        assert_eq!(secret("SMPP_BIND_BETA_PASSWORD"), Some(("beta-creds".into(), "pass".into())));
        assert_eq!(secret("SMSC_ACCOUNT_0_PASSWORD"), Some(("esme-shop".into(), "password".into())));
        assert_eq!(secret("SMSC_REDIS_URL"), Some(("redis".into(), "url".into())));
        assert!(env.iter().all(|e| e.value.is_none()), "no literal values: {env:?}");
        let ports: Vec<_> = ctr
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.container_port))
            .collect();
        assert_eq!(ports, vec![("smpp".into(), 2775), ("smpp-tls".into(), 8775), ("admin".into(), 8080)]);
        assert_eq!(p.termination_grace_period_seconds, Some(5 + 20 + 5));
        let tmpl = d.spec.and_then(|s| s.template.metadata).unwrap_or_default();
        let labels = tmpl.labels.unwrap_or_default();
        assert_eq!(labels.get("team").map(String::as_str), Some("messaging"));
        assert_eq!(labels.get("app.kubernetes.io/instance").map(String::as_str), Some("sms"));
        let ann = tmpl.annotations.unwrap_or_default();
        assert!(ann.contains_key("smsc.io/restart-hash") && ann.contains_key("prometheus.io/scrape"));
        assert_eq!(p.priority_class_name.as_deref(), Some("high"));
        assert_eq!(p.node_selector.unwrap_or_default().get("pool").map(String::as_str), Some("sms"));
        let vols: Vec<_> = p.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect();
        assert_eq!(vols, vec!["config", "smpp-tls", "upstream-ca-beta"]);
    }

    #[test]
    fn user_spread_replaces_the_default_and_hpa_off_keeps_replicas() {
        let mut c = load("full.yaml");
        c.spec.pod.topology_spread_constraints = Some(vec![]);
        c.spec.autoscaling.enabled = false;
        let d = deployment(&c);
        assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(3));
        assert_eq!(pod_spec(&d).topology_spread_constraints, None);
    }

    #[test]
    fn hot_reloadable_change_keeps_the_pod_template() {
        let c = load("full.yaml");
        let mut hot = c.clone();
        hot.spec.routing.default_chain = vec!["beta".into()];
        hot.spec.smpp.accounts[0].window = 9;
        assert_eq!(deployment(&c).spec.map(|s| s.template), deployment(&hot).spec.map(|s| s.template));
        let mut cold = c.clone();
        cold.spec.smpp.port = 2776;
        assert_ne!(deployment(&c).spec.map(|s| s.template), deployment(&cold).spec.map(|s| s.template));
    }
}
