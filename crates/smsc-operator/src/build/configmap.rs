//! The ConfigMap holding smscd's config file. Secrets appear only as `${VAR}` references; the
//! Deployment fills those variables from Secrets (see [`secret_env`]).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};
use smsc_api::crd::{DlrStoreType, SmscCluster, Topology, SIM_TARGET};
use smsc_api::smscd_config::{
    AccountConfig, AdminConfig, BindConfig, LeaderElectionConfig, ReconnectConfig, RoutingConfig,
    RoutingRule, RuleMatch, ServerConfig, ServerTlsConfig, ShutdownConfig, SimConfig, SmscdConfig,
    StoreConfig, UpstreamTlsConfig,
};

use super::{port, Plan};
use crate::error::{Error, Result};
use crate::labels;

/// Where the SMPP TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/smscd-tls";
/// Where upstream CA bundles are mounted, one directory per upstream.
pub const UPSTREAM_CA_DIR: &str = "/etc/smscd-upstream-ca";
pub const REDIS_URL_ENV: &str = "SMSC_REDIS_URL";

/// `SMPP_BIND_<NAME>_<FIELD>`, with NAME as smscd derives it from the bind name.
pub fn bind_env(upstream: &str, field: &str) -> String {
    format!("{}{}_{field}", smsc_api::names::BIND_ENV_PREFIX, upstream.to_ascii_uppercase().replace('-', "_"))
}

/// `SMSC_ACCOUNT_<N>_PASSWORD`, N the account's index (system_ids may hold any character).
pub fn account_password_env(index: usize) -> String {
    format!("SMSC_ACCOUNT_{index}_PASSWORD")
}

fn var(name: &str) -> String {
    format!("${{{name}}}")
}

/// The rendered config: the file and the hash of what smscd cannot hot-reload.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub config: SmscdConfig,
    pub yaml: String,
    pub restart_hash: String,
}

/// `72h`, `1h30m`, `500ms`, `2d`: the formats the CRD schema admits.
pub fn parse_ttl(text: &str) -> Result<Duration> {
    let bad = || Error::InvalidSpec(format!("spec.dlrStore.ttl: {text:?} is not a duration like 72h or 30m"));
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ms" => {
                total += Duration::from_millis(n);
                rest = &rest[unit_len..];
                continue;
            }
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        total += Duration::from_secs(n.checked_mul(secs).ok_or_else(bad)?);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn chain(targets: &[String]) -> Vec<String> {
    targets.iter().map(|t| if t == SIM_TARGET { t.clone() } else { format!("bind:{t}") }).collect()
}

fn positive_u32(v: Option<i32>) -> Option<u32> {
    v.and_then(|n| u32::try_from(n).ok())
}

fn usize_of(v: i32) -> usize {
    usize::try_from(v.max(1)).unwrap_or(1)
}

pub fn render(cluster: &SmscCluster, plan: &Plan) -> Result<Rendered> {
    let spec = &cluster.spec;
    let tls = match &spec.smpp.tls {
        Some(t) => Some(ServerTlsConfig {
            port: port(t.port, "spec.smpp.tls.port")?,
            cert_file: format!("{TLS_DIR}/tls.crt"),
            key_file: format!("{TLS_DIR}/tls.key"),
        }),
        None => None,
    };
    let server =
        ServerConfig { port: port(spec.smpp.port, "spec.smpp.port")?, tls, ..ServerConfig::default() };
    let mut binds = Vec::with_capacity(spec.upstreams.len());
    for u in &spec.upstreams {
        binds.push(BindConfig {
            name: u.name.clone(),
            host: u.host.clone(),
            port: port(u.port, "spec.upstreams[].port")?,
            system_id: var(&bind_env(&u.name, "SYSTEM_ID")),
            password: var(&bind_env(&u.name, "PASSWORD")),
            system_type: u.system_type.clone().unwrap_or_default(),
            bind_type: u.bind_type.into(),
            max_msg_per_sec: positive_u32(u.max_msg_per_sec),
            window: usize_of(u.window),
            binds: usize_of(u.binds_per_replica),
            enquire_link_secs: 30,
            reconnect: ReconnectConfig::default(),
            tls: u.tls.as_ref().map(|t| UpstreamTlsConfig {
                ca_file: t.ca_secret_ref.as_ref().map(|_| format!("{UPSTREAM_CA_DIR}/{}/ca.crt", u.name)),
                server_name: t.server_name.clone(),
            }),
            message_id_format: u.message_id_format.map(Into::into).unwrap_or_default(),
        });
    }
    let accounts = spec
        .smpp
        .accounts
        .iter()
        .enumerate()
        .map(|(i, a)| AccountConfig {
            system_id: a.system_id.clone(),
            password: var(&account_password_env(i)),
            allowed_cidrs: a.allowed_cidrs.clone(),
            bind_types: a.bind_types.iter().map(|&b| b.into()).collect(),
            max_msg_per_sec: positive_u32(a.max_msg_per_sec),
            window: usize_of(a.window),
            max_binds: positive_u32(a.max_binds),
        })
        .collect();
    let routing = RoutingConfig {
        default_chain: chain(&spec.routing.default_chain),
        rules: spec
            .routing
            .rules
            .iter()
            .map(|r| RoutingRule {
                matches: RuleMatch {
                    account: r.account.clone(),
                    destination_prefix: r.destination_prefix.clone(),
                    source_prefix: r.source_prefix.clone(),
                },
                chain: chain(&r.chain),
            })
            .collect(),
        ..RoutingConfig::default()
    };
    let ttl = parse_ttl(&spec.dlr_store.ttl)?;
    let store = match (spec.dlr_store.type_, &spec.dlr_store.redis) {
        (DlrStoreType::Memory, _) => StoreConfig::Memory { ttl },
        (DlrStoreType::Redis, Some(r)) => StoreConfig::Redis {
            url: var(REDIS_URL_ENV),
            key_prefix: r.key_prefix.clone().unwrap_or_else(|| format!("{}/{}", plan.namespace, plan.name)),
            ttl,
        },
        (DlrStoreType::Redis, None) => {
            return Err(Error::InvalidSpec("spec.dlrStore.redis is required for type Redis".into()))
        }
    };
    let le = &spec.leader_election;
    let leader_election = (plan.topology() == Topology::ActiveStandby).then(|| LeaderElectionConfig {
        lease_name: labels::lease_name(&plan.name),
        namespace: None,
        identity: None,
        lease_duration_secs: u64::try_from(le.lease_duration_seconds).unwrap_or(15),
        renew_deadline_secs: u64::try_from(le.renew_deadline_seconds).unwrap_or(10),
        retry_period_secs: u64::try_from(le.retry_period_seconds).unwrap_or(2),
        step_down_secs: None,
    });
    let config = SmscdConfig {
        server,
        binds,
        accounts,
        routing,
        sim: SimConfig::default(),
        store,
        queues: Default::default(),
        // smscd's default is loopback; the kubelet's probes and the metrics scraper come from
        // outside the Pod.
        admin: AdminConfig { bind_address: "0.0.0.0".into(), ..AdminConfig::default() },
        shutdown: ShutdownConfig { drain_secs: u64::try_from(spec.shutdown.drain_seconds).unwrap_or(0) },
        leader_election,
        handlers: None,
    };
    let yaml = serde_saphyr::to_string(&config).map_err(|e| Error::Render(e.to_string()))?;
    let restart_hash = restart_hash(&config)?;
    Ok(Rendered { config, yaml, restart_hash })
}

/// Hash of the settings smscd reads only at start (listeners, TLS files, admin port, store,
/// election, drain); accounts, routing, binds and throttles hot-reload and are left out, so
/// changing them does not roll the Pods.
pub fn restart_hash(config: &SmscdConfig) -> Result<String> {
    let restart_only = serde_json::json!({
        "server": config.server,
        "admin": config.admin,
        "store": config.store,
        "leader_election": config.leader_election,
        "shutdown": config.shutdown,
    });
    let bytes = serde_json::to_vec(&restart_only).map_err(|e| Error::Render(e.to_string()))?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

pub fn build(plan: &Plan, rendered: &Rendered) -> Result<ConfigMap> {
    Ok(ConfigMap {
        metadata: plan.meta(labels::config_map_name(&plan.name)),
        data: Some(BTreeMap::from([(labels::CONFIG_KEY.to_string(), rendered.yaml.clone())])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{load, plan_for};

    #[test]
    fn minimal_cluster_renders_defaults_and_loads_back() {
        let c = load("minimal.yaml");
        let plan = plan_for(&c);
        let r = render(&c, &plan).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.config.server.port, 2775);
        // The probes and the scraper reach the admin port from outside the Pod.
        assert_eq!(r.config.admin.bind_address, "0.0.0.0");
        assert_eq!(r.config.admin.port, smsc_api::names::ADMIN_PORT);
        assert_eq!(r.config.store, StoreConfig::Memory { ttl: Duration::from_secs(72 * 3600) });
        let back: SmscdConfig = serde_saphyr::from_str(&r.yaml).unwrap_or_else(|e| panic!("{e}\n{}", r.yaml));
        assert_eq!(back, r.config);
        let cm = build(&plan, &r).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cm.metadata.name.as_deref(), Some("sms-config"));
        assert!(cm.data.unwrap_or_default().contains_key("smscd.yaml"));
    }

    #[test]
    fn secrets_stay_references() {
        let c = load("full.yaml");
        let r = render(&c, &plan_for(&c)).unwrap_or_else(|e| panic!("{e}"));
        let alpha = &r.config.binds[0];
        assert_eq!(alpha.system_id, "${SMPP_BIND_ALPHA_ONE_SYSTEM_ID}");
        assert_eq!(alpha.password, "${SMPP_BIND_ALPHA_ONE_PASSWORD}");
        assert_eq!(alpha.binds, 2);
        assert_eq!(r.config.accounts[0].password, "${SMSC_ACCOUNT_0_PASSWORD}");
        assert!(matches!(&r.config.store, StoreConfig::Redis { url, key_prefix, .. }
            if url == "${SMSC_REDIS_URL}" && key_prefix == "prod/sms"));
        assert!(!r.yaml.contains("s3cret"), "{}", r.yaml);
        assert_eq!(r.config.routing.default_chain, vec!["bind:alpha-one".to_string(), "sim".to_string()]);
        assert_eq!(r.config.routing.rules[0].chain, vec!["bind:beta".to_string()]);
        assert_eq!(r.config.routing.rules[0].matches.destination_prefix.as_deref(), Some("44"));
        assert_eq!(r.config.server.tls.as_ref().map(|t| t.port), Some(8775));
        assert_eq!(
            r.config.binds[1].tls.as_ref().and_then(|t| t.ca_file.clone()).as_deref(),
            Some("/etc/smscd-upstream-ca/beta/ca.crt")
        );
    }

    #[test]
    fn leader_election_only_in_active_standby() {
        let mut c = load("full.yaml");
        let r = render(&c, &plan_for(&c)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan_for(&c).topology(), Topology::ActiveActive);
        assert!(r.config.leader_election.is_none());
        c.spec.topology = Topology::ActiveStandby;
        let r2 = render(&c, &plan_for(&c)).unwrap_or_else(|e| panic!("{e}"));
        let le = r2.config.leader_election.clone().unwrap_or_else(|| panic!("no election"));
        assert_eq!(le.lease_name, "sms-leader");
        assert_eq!((le.lease_duration_secs, le.renew_deadline_secs, le.retry_period_secs), (20, 12, 3));
        assert_ne!(r.restart_hash, r2.restart_hash);
    }

    #[test]
    fn hot_reloadable_changes_keep_the_restart_hash() {
        let c = load("full.yaml");
        let base = render(&c, &plan_for(&c)).unwrap_or_else(|e| panic!("{e}")).restart_hash;
        let mut hot = c.clone();
        hot.spec.smpp.accounts[0].window = 7;
        hot.spec.smpp.accounts[0].max_msg_per_sec = Some(5);
        hot.spec.routing.default_chain = vec!["beta".into()];
        hot.spec.upstreams[0].max_msg_per_sec = Some(1);
        assert_eq!(render(&hot, &plan_for(&hot)).unwrap_or_else(|e| panic!("{e}")).restart_hash, base);
        let mut cold = c.clone();
        cold.spec.smpp.port = 2776;
        assert_ne!(render(&cold, &plan_for(&cold)).unwrap_or_else(|e| panic!("{e}")).restart_hash, base);
        let mut cold = c;
        if let Some(t) = cold.spec.smpp.tls.as_mut() {
            t.port = 9000;
        }
        assert_ne!(render(&cold, &plan_for(&cold)).unwrap_or_else(|e| panic!("{e}")).restart_hash, base);
    }

    #[test]
    fn ttl_formats() {
        assert_eq!(parse_ttl("72h").ok(), Some(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_ttl("1h30m").ok(), Some(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("2d").ok(), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_ttl("1s500ms").ok(), Some(Duration::from_millis(1500)));
        for bad in ["", "h", "10", "10x", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names() {
        assert_eq!(bind_env("eu-west", "PASSWORD"), "SMPP_BIND_EU_WEST_PASSWORD");
        assert_eq!(account_password_env(3), "SMSC_ACCOUNT_3_PASSWORD");
    }
}
