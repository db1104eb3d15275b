//! The smscd Deployment.
//!
//! # Pod security
//!
//! The Pods meet the `restricted` Pod Security Standard out of the box: the Pod runs as UID, GID
//! and fsGroup 65532 (the `USER` of deploy/Dockerfile.smscd) with `runAsNonRoot` and the
//! RuntimeDefault seccomp profile; the container forbids privilege escalation, drops every
//! capability, and has a read-only root filesystem. `spec.pod.securityContext` and
//! `spec.pod.containerSecurityContext` merge over these defaults field by field (see
//! [`pod_security_context`] and [`container_security_context`]).
//!
//! What smscd needs from the filesystem (checked in crates/smscd/src, non-test code): it only
//! reads (its config and the TLS files, both re-read on change, from read-only mounts, and
//! `/proc/sys/kernel/hostname` for its Redis consumer name); it logs to stderr, opens no Unix
//! sockets and creates no temporary files, and neither do its TLS (rustls) or Redis clients. So
//! the read-only root costs it nothing; `/tmp` is an emptyDir anyway (capped at
//! [`TMP_SIZE_LIMIT`]) for whatever a future dependency or a debugging session writes there.
//!
//! Listeners: SMPP (`spec.smpp.port`, 2775), SMPP over TLS (`spec.smpp.tls.port`, 8775) and the
//! admin port 8080, all unprivileged by default. A non-root process cannot bind below 1024 even
//! with `NET_BIND_SERVICE` in its bounding set (Kubernetes sets no ambient capabilities), so when
//! an SMPP port is below 1024 the Pod gets the namespaced sysctl
//! `net.ipv4.ip_unprivileged_port_start` lowered to that port, which both the kubelet (a safe
//! sysctl) and the restricted standard allow.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, SleepAction, Sysctl, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use smsc_api::crd::{DlrStoreType, SmscCluster, Topology};
use smsc_api::names::{ADMIN_PORT, ROLE_ACTIVE, ROLE_LABEL};

use super::configmap::{
    account_password_env, bind_env, http_account_secret_env, http_accounts, redis_secret_envs, Rendered,
    HANDLERS_DIR, HTTP_TLS_DIR, HTTP_TOKENS_DIR, TLS_DIR, UPSTREAM_CA_DIR,
};
use super::{port, Plan};
use crate::checklist::Rollout;
use crate::error::Result;
use crate::labels;

pub const CONTAINER: &str = "smscd";

/// UID, GID and fsGroup of the smscd Pods: the `USER` of deploy/Dockerfile.smscd
/// (distroless `nonroot`).
pub const SMSCD_UID: i64 = 65532;

/// The writable scratch directory on the read-only root filesystem, and its cap.
pub const TMP_DIR: &str = "/tmp";
pub const TMP_SIZE_LIMIT: &str = "64Mi";

/// The sysctl that lets a non-root process bind ports from its value up.
pub const UNPRIVILEGED_PORT_SYSCTL: &str = "net.ipv4.ip_unprivileged_port_start";

/// The Deployment strategy for [`Rollout`] (see there, and crate::checklist::rollout).
pub fn strategy(rollout: Rollout) -> DeploymentStrategy {
    let rolling = |surge, unavailable| DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_unavailable: Some(IntOrString::Int(unavailable)),
            max_surge: Some(IntOrString::Int(surge)),
        }),
    };
    match rollout {
        Rollout::Surge => rolling(1, 0),
        Rollout::ReplaceFirst => rolling(0, 1),
        Rollout::Recreate => DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None },
    }
}

/// The Pod's securityContext: the restricted defaults with `spec.pod.securityContext` merged over
/// them field by field (a field the user sets replaces that field; `sysctls` merge by name), and
/// `net.ipv4.ip_unprivileged_port_start` when a listener is below 1024.
pub fn pod_security_context(user: Option<&PodSecurityContext>, lowest_port: u16) -> PodSecurityContext {
    let low_port = (lowest_port < 1024)
        .then(|| Sysctl { name: UNPRIVILEGED_PORT_SYSCTL.into(), value: lowest_port.to_string() });
    let d = PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(SMSCD_UID),
        run_as_group: Some(SMSCD_UID),
        fs_group: Some(SMSCD_UID),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        sysctls: low_port.map(|s| vec![s]),
        ..PodSecurityContext::default()
    };
    let Some(u) = user.cloned() else {
        return d;
    };
    let sysctls = match (u.sysctls, d.sysctls) {
        (Some(mut mine), Some(ours)) => {
            let missing: Vec<Sysctl> =
                ours.into_iter().filter(|o| !mine.iter().any(|m| m.name == o.name)).collect();
            mine.extend(missing);
            Some(mine)
        }
        (mine, ours) => mine.or(ours),
    };
    // Every field listed (no `..`): a field a new k8s-openapi adds fails to compile until it is
    // decided here.
    PodSecurityContext {
        app_armor_profile: u.app_armor_profile.or(d.app_armor_profile),
        fs_group: u.fs_group.or(d.fs_group),
        fs_group_change_policy: u.fs_group_change_policy.or(d.fs_group_change_policy),
        run_as_group: u.run_as_group.or(d.run_as_group),
        run_as_non_root: u.run_as_non_root.or(d.run_as_non_root),
        run_as_user: u.run_as_user.or(d.run_as_user),
        se_linux_change_policy: u.se_linux_change_policy.or(d.se_linux_change_policy),
        se_linux_options: u.se_linux_options.or(d.se_linux_options),
        seccomp_profile: u.seccomp_profile.or(d.seccomp_profile),
        supplemental_groups: u.supplemental_groups.or(d.supplemental_groups),
        supplemental_groups_policy: u.supplemental_groups_policy.or(d.supplemental_groups_policy),
        sysctls,
        windows_options: u.windows_options.or(d.windows_options),
    }
}

/// The smscd container's securityContext: the restricted defaults with
/// `spec.pod.containerSecurityContext` merged over them field by field (`capabilities.add` and
/// `capabilities.drop` separately, so adding a capability keeps `drop: [ALL]`).
pub fn container_security_context(user: Option<&SecurityContext>) -> SecurityContext {
    let d = SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { add: None, drop: Some(vec!["ALL".into()]) }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    };
    let Some(u) = user.cloned() else {
        return d;
    };
    let capabilities = match (u.capabilities, d.capabilities) {
        (Some(mine), Some(ours)) => {
            Some(Capabilities { add: mine.add.or(ours.add), drop: mine.drop.or(ours.drop) })
        }
        (mine, ours) => mine.or(ours),
    };
    SecurityContext {
        allow_privilege_escalation: u.allow_privilege_escalation.or(d.allow_privilege_escalation),
        app_armor_profile: u.app_armor_profile.or(d.app_armor_profile),
        capabilities,
        privileged: u.privileged.or(d.privileged),
        proc_mount: u.proc_mount.or(d.proc_mount),
        read_only_root_filesystem: u.read_only_root_filesystem.or(d.read_only_root_filesystem),
        run_as_group: u.run_as_group.or(d.run_as_group),
        run_as_non_root: u.run_as_non_root.or(d.run_as_non_root),
        run_as_user: u.run_as_user.or(d.run_as_user),
        se_linux_options: u.se_linux_options.or(d.se_linux_options),
        seccomp_profile: u.seccomp_profile.or(d.seccomp_profile),
        windows_options: u.windows_options.or(d.windows_options),
    }
}

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
        for (name, s) in redis_secret_envs(r) {
            env.push(secret_env(name.to_string(), &s.name, &s.key));
        }
    }
    for (i, a) in http_accounts(spec).iter().enumerate() {
        if let Some(s) = &a.secret_ref {
            env.push(secret_env(http_account_secret_env(i), &s.name, &s.key));
        }
    }
    env
}

/// One of the default spread constraints. `nodeTaintsPolicy: Honor`: a node the Pods cannot go
/// to (a tainted control-plane node, a dedicated pool) is no domain of the skew; with the API's
/// default (Ignore) it would count as an empty hostname domain, and with more replicas than
/// schedulable nodes the hard hostname rule would leave Pods Pending.
fn spread(key: &str, when: &str, selector: &BTreeMap<String, String>) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.to_string(),
        when_unsatisfiable: when.to_string(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector.clone()),
            ..LabelSelector::default()
        }),
        node_taints_policy: Some("Honor".to_string()),
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
    let topology = plan.topology();
    pod_labels.insert(labels::TOPOLOGY_LABEL.to_string(), topology.as_str().to_string());
    // Every ActiveActive Pod takes binds, so it carries the role label the Service selects from
    // the start; in ActiveStandby only the Lease holder labels itself. One selector for both
    // topologies means a switch between them never changes it (no gap, no standby selected).
    if topology == Topology::ActiveActive {
        pod_labels.insert(ROLE_LABEL.to_string(), ROLE_ACTIVE.to_string());
    } else {
        pod_labels.remove(ROLE_LABEL);
    }
    let mut annotations = pod.annotations.clone();
    annotations.insert(labels::RESTART_HASH_ANNOTATION.to_string(), rendered.restart_hash.clone());
    if let Some(v) = &plan.secrets_version {
        annotations.insert(labels::SECRETS_VERSION_ANNOTATION.to_string(), v.clone());
    }

    let smpp_port = port(spec.smpp.port, "spec.smpp.port")?;
    let mut lowest_port = smpp_port.min(ADMIN_PORT);
    let mut ports = vec![container_port("smpp", smpp_port)];
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
    // The only writable directory on the read-only root filesystem (see the module doc).
    volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(Quantity(TMP_SIZE_LIMIT.into())),
        }),
        ..Volume::default()
    });
    mounts.push(VolumeMount { name: "tmp".into(), mount_path: TMP_DIR.into(), ..VolumeMount::default() });
    if let Some(tls) = &spec.smpp.tls {
        let tls_port = port(tls.port, "spec.smpp.tls.port")?;
        lowest_port = lowest_port.min(tls_port);
        ports.push(container_port("smpp-tls", tls_port));
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
    if spec.http.enabled {
        let http_port = port(spec.http.port, "spec.http.port")?;
        lowest_port = lowest_port.min(http_port);
        ports.push(container_port("http", http_port));
        let secret_mount = |name: &str, secret: &str, items: Option<Vec<KeyToPath>>, dir: &str| {
            (
                Volume {
                    name: name.into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret.to_owned()),
                        items,
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                VolumeMount {
                    name: name.into(),
                    mount_path: dir.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
            )
        };
        if let Some(secret) = &spec.http.tls_secret_name {
            let (v, m) = secret_mount("http-tls", secret, None, HTTP_TLS_DIR);
            volumes.push(v);
            mounts.push(m);
        }
        if let Some(r) = &spec.http.tokens_secret_ref {
            let items = vec![KeyToPath { key: r.key.clone(), path: "tokens".into(), mode: None }];
            let (v, m) = secret_mount("http-tokens", &r.name, Some(items), HTTP_TOKENS_DIR);
            volumes.push(v);
            mounts.push(m);
        }
    }
    // The user's ConfigMap as a directory (never subPath: the kubelet does not update a subPath
    // mount), so an edited script reaches the running smscd, which polls it. An inline script is
    // a key of the config volume already.
    if let Some(r) = spec.handlers.as_ref().and_then(|h| h.config_map_ref.as_ref()) {
        volumes.push(Volume {
            name: "handlers".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: r.name.clone(),
                items: Some(vec![KeyToPath { key: r.key.clone(), path: r.key.clone(), mode: None }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "handlers".into(),
            mount_path: HANDLERS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
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
        security_context: Some(container_security_context(pod.container_security_context.as_ref())),
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
            strategy: Some(strategy(plan.rollout)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(labels::rbac_name(&plan.name)),
                    // smscd talks to the API server only for its Lease (ActiveStandby): without
                    // one, no token is mounted for a compromised process to use.
                    automount_service_account_token: Some(plan.topology() == Topology::ActiveStandby),
                    termination_grace_period_seconds: Some(plan.termination_grace_period_seconds),
                    security_context: Some(pod_security_context(pod.security_context.as_ref(), lowest_port)),
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
    fn an_old_pod_goes_first_when_a_surge_pod_would_exceed_max_binds() {
        let rolling = |c: &SmscCluster| {
            let s = deployment(c).spec.and_then(|s| s.strategy).unwrap_or_else(|| panic!("no strategy"));
            let ru = s.rolling_update.unwrap_or_else(|| panic!("no rolling update"));
            (s.type_, ru.max_surge, ru.max_unavailable)
        };
        let mut c = load("full.yaml");
        // Up to 4 replicas (autoscaling) x 2 binds; a fifth Pod's 2 more still fit in 10.
        c.spec.upstreams[0].max_binds = Some(10);
        assert_eq!(
            rolling(&c),
            (Some("RollingUpdate".into()), Some(IntOrString::Int(1)), Some(IntOrString::Int(0)))
        );
        // 4 x 2 = 8 of 8: a surge Pod would hold 10 binds mid-rollout.
        c.spec.upstreams[0].max_binds = Some(8);
        assert_eq!(
            rolling(&c),
            (Some("RollingUpdate".into()), Some(IntOrString::Int(0)), Some(IntOrString::Int(1)))
        );
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
        assert!(spread.iter().all(|c| c.node_taints_policy.as_deref() == Some("Honor")), "{spread:?}");
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
    fn a_new_secrets_version_changes_the_pod_template() {
        let c = load("full.yaml");
        let mut plan = plan_for(&c);
        let r = render(&c, &plan).unwrap_or_else(|e| panic!("{e}"));
        let ann = |plan: &Plan| {
            let d = build(&c, plan, &r).unwrap_or_else(|e| panic!("{e}"));
            d.spec
                .and_then(|s| s.template.metadata)
                .and_then(|m| m.annotations)
                .and_then(|a| a.get(labels::SECRETS_VERSION_ANNOTATION).cloned())
        };
        assert_eq!(ann(&plan), None, "offline: no version");
        plan.secrets_version = Some("a".into());
        assert_eq!(ann(&plan).as_deref(), Some("a"));
        plan.secrets_version = Some("b".into());
        assert_eq!(ann(&plan).as_deref(), Some("b"));
    }

    #[test]
    fn active_active_pods_carry_the_role_label_and_every_pod_its_topology() {
        for fixture in ["minimal.yaml", "full.yaml"] {
            let c = load(fixture);
            let topology = plan_for(&c).topology();
            let labels = deployment(&c)
                .spec
                .and_then(|s| s.template.metadata)
                .and_then(|m| m.labels)
                .unwrap_or_default();
            assert_eq!(labels.get("smsc.io/topology").map(String::as_str), Some(topology.as_str()));
            let role = labels.get("smsc.io/role").map(String::as_str);
            match topology {
                Topology::ActiveActive => assert_eq!(role, Some("active"), "{fixture}"),
                Topology::ActiveStandby => assert_eq!(role, None, "{fixture}: only the holder, by itself"),
                Topology::Auto => unreachable!("a plan never runs Auto"),
            }
        }
    }

    #[test]
    fn service_account_token_only_for_the_lease() {
        for fixture in ["minimal.yaml", "full.yaml"] {
            let c = load(fixture);
            let lease = plan_for(&c).topology() == Topology::ActiveStandby;
            let p = pod_spec(&deployment(&c));
            assert_eq!(p.automount_service_account_token, Some(lease), "{fixture}: lease {lease}");
        }
        // Both cases are covered by the two fixtures.
        let topologies: Vec<Topology> =
            ["minimal.yaml", "full.yaml"].iter().map(|f| plan_for(&load(f)).topology()).collect();
        assert!(
            topologies.contains(&Topology::ActiveStandby) && topologies.contains(&Topology::ActiveActive)
        );
    }

    /// Issue 17: spec.http renders the config section, a container port, its Secrets and a
    /// Service port; the restart hash changes with it (a listener is read at start).
    #[test]
    fn http_api_gets_its_port_secrets_service_port_and_config() {
        let mut c = load("single-bind.yaml");
        let plan = plan_for(&c);
        let before = render(&c, &plan).unwrap_or_else(|e| panic!("{e}"));
        assert!(!before.config.http.enabled && !before.yaml.contains("http:"), "{}", before.yaml);
        c.spec.http = smsc_api::crd::HttpSpec {
            enabled: true,
            port: 8443,
            service_port: Some(443),
            tls_secret_name: Some("web-tls".into()),
            tokens_secret_ref: Some(smsc_api::crd::SecretKeyRef {
                name: "api".into(),
                key: "tokens.txt".into(),
            }),
            accounts: Vec::new(),
        };
        let r = render(&c, &plan).unwrap_or_else(|e| panic!("{e}"));
        let h = &r.config.http;
        assert!(h.enabled && h.port == 8443 && h.bind_address == "0.0.0.0");
        assert_eq!(h.tls.as_ref().map(|t| t.cert_file.as_str()), Some("/etc/smscd-http-tls/tls.crt"));
        assert_eq!(h.tokens_file.as_deref(), Some("/etc/smscd-http-tokens/tokens"));
        assert_ne!(r.restart_hash, before.restart_hash);
        let d = build(&c, &plan, &r).unwrap_or_else(|e| panic!("{e}"));
        let p = pod_spec(&d);
        let ports: Vec<_> = p.containers[0]
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.container_port))
            .collect();
        assert!(ports.contains(&("http".into(), 8443)), "{ports:?}");
        let vols = p.volumes.unwrap_or_default();
        let tokens =
            vols.iter().find(|v| v.name == "http-tokens").and_then(|v| v.secret.clone()).expect("tokens");
        assert_eq!(tokens.secret_name.as_deref(), Some("api"));
        assert_eq!(tokens.items.unwrap_or_default()[0].key, "tokens.txt");
        assert!(vols.iter().any(|v| v.name == "http-tls"));
        let svc = crate::build::service::build(&c, &plan).spec.and_then(|s| s.ports).unwrap_or_default();
        let http = svc.iter().find(|p| p.name.as_deref() == Some("http")).expect("Service port http");
        assert_eq!(http.port, 443);
        assert_eq!(http.target_port, Some(IntOrString::String("http".into())));
        // A port that is already SMPP's is refused, naming the field.
        c.spec.http.port = c.spec.smpp.port;
        let e = render(&c, &plan).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("spec.http.port"), "{e}");
    }

    /// Issue 15 item 5: a configMapRef script is the user's ConfigMap mounted as a directory
    /// (no subPath: the kubelet updates it in place); an inline one adds no volume; editing an
    /// inline script leaves the Pod template as it was (no restart).
    #[test]
    fn handlers_script_is_mounted_without_sub_path_and_edits_keep_the_pod_template() {
        let c = load("handlers-configmap.yaml");
        let p = pod_spec(&deployment(&c));
        let vol = p.volumes.clone().unwrap_or_default().into_iter().find(|v| v.name == "handlers");
        let cm = vol.and_then(|v| v.config_map).unwrap_or_else(|| panic!("no handlers volume"));
        assert_eq!(cm.name, "policy");
        let items = cm.items.unwrap_or_default();
        assert_eq!(
            items.iter().map(|i| (i.key.as_str(), i.path.as_str())).collect::<Vec<_>>(),
            [("smpp_script.py", "smpp_script.py")]
        );
        let mounts = p.containers[0].volume_mounts.clone().unwrap_or_default();
        let m = mounts.iter().find(|m| m.name == "handlers").unwrap_or_else(|| panic!("no handlers mount"));
        assert_eq!(
            (m.mount_path.as_str(), m.sub_path.as_deref(), m.read_only),
            ("/etc/smscd-handlers", None, Some(true))
        );
        assert!(mounts.iter().all(|m| m.sub_path.is_none()), "{mounts:?}");

        let inline = load("handlers-inline.yaml");
        let p = pod_spec(&deployment(&inline));
        let vols: Vec<_> = p.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect();
        assert_eq!(vols, vec!["config", "tmp"], "the script is a key of the config volume");
        let mut edited = inline.clone();
        if let Some(h) = edited.spec.handlers.as_mut() {
            h.script = Some("from siphon import smpp\n".into());
            h.timeout_ms = 20;
        }
        assert_eq!(
            deployment(&inline).spec.map(|s| s.template),
            deployment(&edited).spec.map(|s| s.template)
        );
    }

    /// Issue 17: each `spec.http.accounts[].secretRef` reaches smscd as the variable its config
    /// names; none while the HTTP API is off.
    #[test]
    fn http_account_secrets_come_from_their_secret_refs() {
        let c = load("http-accounts.yaml");
        let secret = |c: &SmscCluster, n: &str| {
            pod_spec(&deployment(c)).containers[0]
                .env
                .clone()
                .unwrap_or_default()
                .into_iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value_from)
                .and_then(|v| v.secret_key_ref)
                .map(|s| (s.name, s.key))
        };
        assert_eq!(secret(&c, "SMSC_HTTP_ACCOUNT_0_SECRET"), Some(("bank-webhooks".into(), "hmac".into())));
        assert_eq!(secret(&c, "SMSC_HTTP_ACCOUNT_1_SECRET"), None, "shop signs nothing");
        let mut off = c;
        off.spec.http.enabled = false;
        assert_eq!(secret(&off, "SMSC_HTTP_ACCOUNT_0_SECRET"), None);
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
        assert_eq!(vols, vec!["config", "tmp", "smpp-tls", "upstream-ca-beta"]);
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

    fn security(d: &Deployment) -> (PodSecurityContext, SecurityContext) {
        let p = pod_spec(d);
        let ctr = p.containers[0].security_context.clone().unwrap_or_else(|| panic!("no container context"));
        (p.security_context.unwrap_or_else(|| panic!("no pod context")), ctr)
    }

    /// The fields the `restricted` Pod Security Standard checks, as the defaults set them.
    fn assert_restricted(pod: &PodSecurityContext, ctr: &SecurityContext) {
        assert_eq!(pod.run_as_non_root, Some(true));
        assert_eq!(pod.seccomp_profile.as_ref().map(|p| p.type_.as_str()), Some("RuntimeDefault"));
        assert_eq!(ctr.allow_privilege_escalation, Some(false));
        assert_eq!(ctr.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_string()]));
        assert_eq!(ctr.run_as_non_root, Some(true));
        assert_eq!(ctr.privileged, None);
    }

    #[test]
    fn pods_are_restricted_by_default_with_a_writable_tmp() {
        let d = deployment(&load("minimal.yaml"));
        let (pod, ctr) = security(&d);
        assert_restricted(&pod, &ctr);
        assert_eq!(
            (pod.run_as_user, pod.run_as_group, pod.fs_group),
            (Some(65532), Some(65532), Some(65532))
        );
        assert_eq!(ctr.read_only_root_filesystem, Some(true));
        assert_eq!(ctr.capabilities.and_then(|c| c.add), None);
        // 2775 and 8080: nothing privileged to bind, so no sysctl.
        assert_eq!(pod.sysctls, None);
        let p = pod_spec(&d);
        let tmp = p.volumes.unwrap_or_default().into_iter().find(|v| v.name == "tmp");
        let empty = tmp.and_then(|v| v.empty_dir).unwrap_or_else(|| panic!("no tmp emptyDir"));
        assert_eq!(empty.size_limit, Some(Quantity("64Mi".into())));
        let mounts = p.containers[0].volume_mounts.clone().unwrap_or_default();
        let m = mounts.iter().find(|m| m.name == "tmp").unwrap_or_else(|| panic!("no tmp mount"));
        assert_eq!((m.mount_path.as_str(), m.read_only), ("/tmp", None));
        // Every other mount is read-only.
        assert!(mounts.iter().filter(|m| m.name != "tmp").all(|m| m.read_only == Some(true)), "{mounts:?}");
    }

    #[test]
    fn overrides_merge_field_by_field_over_the_defaults() {
        let mut c = load("full.yaml");
        c.spec.pod.security_context = Some(PodSecurityContext {
            run_as_user: Some(1000),
            supplemental_groups: Some(vec![5]),
            ..PodSecurityContext::default()
        });
        c.spec.pod.container_security_context = Some(SecurityContext {
            capabilities: Some(Capabilities { add: Some(vec!["NET_BIND_SERVICE".into()]), drop: None }),
            read_only_root_filesystem: Some(false),
            ..SecurityContext::default()
        });
        let (pod, ctr) = security(&deployment(&c));
        // What was set replaced its field only; the rest of the restricted defaults stayed.
        assert_eq!((pod.run_as_user, pod.run_as_group, pod.fs_group), (Some(1000), Some(65532), Some(65532)));
        assert_eq!(pod.supplemental_groups, Some(vec![5]));
        assert_eq!(ctr.read_only_root_filesystem, Some(false));
        assert_eq!(
            ctr.capabilities.as_ref().and_then(|c| c.add.clone()),
            Some(vec!["NET_BIND_SERVICE".into()])
        );
        assert_restricted(&pod, &ctr);

        // A value the user sets wins even where it breaks the standard (the namespace's admission
        // decides), and an explicit empty list replaces the default one.
        c.spec.pod.container_security_context = Some(SecurityContext {
            allow_privilege_escalation: Some(true),
            capabilities: Some(Capabilities { add: None, drop: Some(vec![]) }),
            ..SecurityContext::default()
        });
        c.spec.pod.security_context = Some(PodSecurityContext {
            seccomp_profile: Some(SeccompProfile {
                type_: "Localhost".into(),
                localhost_profile: Some("smscd.json".into()),
            }),
            ..PodSecurityContext::default()
        });
        let (pod, ctr) = security(&deployment(&c));
        assert_eq!(ctr.allow_privilege_escalation, Some(true));
        assert_eq!(ctr.capabilities.and_then(|c| c.drop), Some(vec![]));
        assert_eq!(ctr.read_only_root_filesystem, Some(true));
        let seccomp = pod.seccomp_profile.unwrap_or_else(|| panic!("no seccomp"));
        assert_eq!(
            (seccomp.type_.as_str(), seccomp.localhost_profile.as_deref()),
            ("Localhost", Some("smscd.json"))
        );
        assert_eq!(pod.run_as_non_root, Some(true));
    }

    #[test]
    fn a_privileged_smpp_port_lowers_the_unprivileged_port_start() {
        let sysctls = |c: &SmscCluster| {
            security(&deployment(c))
                .0
                .sysctls
                .unwrap_or_default()
                .into_iter()
                .map(|s| (s.name, s.value))
                .collect::<Vec<_>>()
        };
        let mut c = load("full.yaml");
        c.spec.smpp.port = 25;
        assert_eq!(sysctls(&c), vec![(UNPRIVILEGED_PORT_SYSCTL.to_string(), "25".to_string())]);
        // The lower of the two listeners; the TLS port counts too.
        c.spec.smpp.port = 2775;
        if let Some(t) = c.spec.smpp.tls.as_mut() {
            t.port = 465;
        }
        assert_eq!(sysctls(&c), vec![(UNPRIVILEGED_PORT_SYSCTL.to_string(), "465".to_string())]);
        // The user's sysctls merge by name: theirs are kept, and theirs win for the same name.
        let user = |name: &str, value: &str| Sysctl { name: name.into(), value: value.into() };
        c.spec.pod.security_context = Some(PodSecurityContext {
            sysctls: Some(vec![user("net.ipv4.tcp_syncookies", "1")]),
            ..PodSecurityContext::default()
        });
        assert_eq!(
            sysctls(&c),
            vec![
                ("net.ipv4.tcp_syncookies".to_string(), "1".to_string()),
                (UNPRIVILEGED_PORT_SYSCTL.to_string(), "465".to_string())
            ]
        );
        c.spec.pod.security_context = Some(PodSecurityContext {
            sysctls: Some(vec![user(UNPRIVILEGED_PORT_SYSCTL, "0")]),
            ..PodSecurityContext::default()
        });
        assert_eq!(sysctls(&c), vec![(UNPRIVILEGED_PORT_SYSCTL.to_string(), "0".to_string())]);
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
