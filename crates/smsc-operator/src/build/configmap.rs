//! The ConfigMap holding smscd's config file. Secrets appear only as `${VAR}` references; the
//! Deployment fills those variables from Secrets (see [`secret_env`]).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};
use smsc_api::crd::{DlrStoreType, RedisSpec, SecretKeyRef, SmscCluster, Topology, SIM_TARGET};
use smsc_api::smscd_config::{
    AccountConfig, AdminConfig, BindConfig, LeaderElectionConfig, ReconnectConfig, RedisClusterConfig,
    RedisSentinelConfig, RedisWaitConfig, RoutingConfig, RoutingRule, RuleMatch, ServerConfig,
    ServerTlsConfig, ShutdownConfig, SimConfig, SmscdConfig, StoreAndForwardConfig, StoreConfig,
    UpstreamTlsConfig,
};
use smsc_api::smscd_config::{HandlersConfig, HttpAccountConfig, HttpConfig, HttpTlsConfig};

use super::{port, Plan};
use crate::error::{Error, Result};
use crate::labels;

/// Where the SMPP TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/smscd-tls";
/// Where upstream CA bundles are mounted, one directory per upstream.
pub const UPSTREAM_CA_DIR: &str = "/etc/smscd-upstream-ca";
pub const REDIS_URL_ENV: &str = "SMSC_REDIS_URL";
/// The Sentinel master's / the Cluster nodes' password.
pub const REDIS_PASSWORD_ENV: &str = "SMSC_REDIS_PASSWORD";
pub const REDIS_SENTINEL_PASSWORD_ENV: &str = "SMSC_REDIS_SENTINEL_PASSWORD";

/// The environment variables the store's config names, each with the Secret key it comes from.
pub fn redis_secret_envs(r: &RedisSpec) -> Vec<(&'static str, &SecretKeyRef)> {
    let mut out = Vec::new();
    if let Some(u) = &r.url_secret_ref {
        out.push((REDIS_URL_ENV, u));
    }
    if let Some(s) = &r.sentinel {
        if let Some(p) = &s.password_secret_ref {
            out.push((REDIS_PASSWORD_ENV, p));
        }
        if let Some(p) = &s.sentinel_password_secret_ref {
            out.push((REDIS_SENTINEL_PASSWORD_ENV, p));
        }
    }
    if let Some(p) = r.cluster.as_ref().and_then(|c| c.password_secret_ref.as_ref()) {
        out.push((REDIS_PASSWORD_ENV, p));
    }
    out
}

/// The store's `redis` config: the form the spec names, passwords as `${VAR}` (filled from
/// Secrets, see [`redis_secret_envs`]).
fn redis_store(r: &RedisSpec, key_prefix: String, ttl: Duration) -> Result<StoreConfig> {
    let given = usize::from(r.url_secret_ref.is_some())
        + usize::from(r.sentinel.is_some())
        + usize::from(r.cluster.is_some());
    if given != 1 {
        return Err(Error::InvalidSpec(
            "spec.dlrStore.redis: set exactly one of urlSecretRef, sentinel or cluster".into(),
        ));
    }
    let sentinel = r.sentinel.as_ref().map(|s| RedisSentinelConfig {
        master_name: s.master_name.clone(),
        sentinels: s.sentinels.clone(),
        username: None,
        password: s.password_secret_ref.as_ref().map(|_| var(REDIS_PASSWORD_ENV)),
        sentinel_password: s.sentinel_password_secret_ref.as_ref().map(|_| var(REDIS_SENTINEL_PASSWORD_ENV)),
        tls: s.tls,
        db: 0,
    });
    let cluster = r.cluster.as_ref().map(|c| RedisClusterConfig {
        nodes: c.nodes.clone(),
        username: None,
        password: c.password_secret_ref.as_ref().map(|_| var(REDIS_PASSWORD_ENV)),
        tls: c.tls,
    });
    let wait = r.wait.as_ref().map(|w| RedisWaitConfig {
        replicas: u32::try_from(w.replicas).unwrap_or(1).max(1),
        timeout_ms: w.timeout_ms.and_then(|t| u64::try_from(t).ok()).filter(|t| *t > 0).unwrap_or(100),
    });
    Ok(StoreConfig::Redis {
        url: if r.url_secret_ref.is_some() { var(REDIS_URL_ENV) } else { String::new() },
        sentinel,
        cluster,
        wait,
        key_prefix,
        ttl,
    })
}

/// Where `spec.http.tlsSecretName` is mounted (tls.crt, tls.key).
pub const HTTP_TLS_DIR: &str = "/etc/smscd-http-tls";
/// Where `spec.http.tokensSecretRef` is mounted, as the file `tokens`.
pub const HTTP_TOKENS_DIR: &str = "/etc/smscd-http-tokens";

/// The key of the operator's ConfigMap holding an inline `spec.handlers.script`; the config
/// volume mounts the whole ConfigMap (no subPath), so it is `CONFIG_DIR/handlers.py` in the Pod
/// and the kubelet swaps it in place with the config.
pub const HANDLERS_SCRIPT_KEY: &str = "handlers.py";
/// Where `spec.handlers.configMapRef` is mounted, its key as the file name.
pub const HANDLERS_DIR: &str = "/etc/smscd-handlers";

/// `SMSC_HTTP_ACCOUNT_<N>_SECRET`, N the index in `spec.http.accounts`: the webhook signing key.
pub fn http_account_secret_env(index: usize) -> String {
    format!("SMSC_HTTP_ACCOUNT_{index}_SECRET")
}

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
    /// An inline `spec.handlers.script`, for the ConfigMap's [`HANDLERS_SCRIPT_KEY`].
    pub handlers_script: Option<String>,
}

/// `72h`, `1h30m`, `500ms`, `2d`: the formats the CRD schema admits.
pub fn parse_ttl(text: &str) -> Result<Duration> {
    parse_duration("spec.dlrStore.ttl", text)
}

/// [`parse_ttl`] for the field `field` (named in the error).
pub fn parse_duration(field: &str, text: &str) -> Result<Duration> {
    let bad = || Error::InvalidSpec(format!("{field}: {text:?} is not a duration like 72h or 30m"));
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

/// `spec.http` as smscd's `http:` section: listening on every address of the Pod.
fn http(spec: &smsc_api::crd::SmscClusterSpec) -> Result<HttpConfig> {
    let h = &spec.http;
    if !h.enabled {
        return Ok(HttpConfig::default());
    }
    let p = port(h.port, "spec.http.port")?;
    let taken = [Some(spec.smpp.port), spec.smpp.tls.as_ref().map(|t| t.port)];
    if taken.contains(&Some(h.port)) {
        return Err(Error::InvalidSpec(format!("spec.http.port: {} is already an SMPP port", h.port)));
    }
    Ok(HttpConfig {
        enabled: true,
        bind_address: "0.0.0.0".into(),
        port: p,
        tls: h.tls_secret_name.as_ref().map(|_| HttpTlsConfig {
            cert_file: format!("{HTTP_TLS_DIR}/tls.crt"),
            key_file: format!("{HTTP_TLS_DIR}/tls.key"),
        }),
        tokens_file: h.tokens_secret_ref.as_ref().map(|_| format!("{HTTP_TOKENS_DIR}/tokens")),
        accounts: h
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a)| HttpAccountConfig {
                account: a.account.clone(),
                dlr_url: a.dlr_url.clone(),
                mo_url: a.mo_url.clone(),
                secret: a.secret_ref.as_ref().map(|_| var(&http_account_secret_env(i))),
                tokens: Vec::new(),
            })
            .collect(),
        ..HttpConfig::default()
    })
}

/// `spec.http.accounts` that are rendered (the HTTP API is on), with their index.
pub fn http_accounts(spec: &smsc_api::crd::SmscClusterSpec) -> &[smsc_api::crd::HttpAccountSpec] {
    if spec.http.enabled {
        spec.http.accounts.as_slice()
    } else {
        &[]
    }
}

/// `spec.handlers` as smscd's `handlers:` section: the script is a file of the config volume
/// (inline) or of the user's ConfigMap's volume; never part of the restart hash.
fn handlers(spec: &smsc_api::crd::SmscClusterSpec) -> Result<Option<HandlersConfig>> {
    let Some(h) = &spec.handlers else {
        return Ok(None);
    };
    let script = match (&h.script, &h.config_map_ref) {
        (Some(_), None) => format!("{}/{HANDLERS_SCRIPT_KEY}", labels::CONFIG_DIR),
        (None, Some(r)) => format!("{HANDLERS_DIR}/{}", r.key),
        _ => {
            return Err(Error::InvalidSpec(
                "spec.handlers: set exactly one of script (the script inline) or configMapRef".into(),
            ))
        }
    };
    let ms = |v: i32, field: &str, min: i32| {
        u64::try_from(v)
            .ok()
            .filter(|v| *v >= u64::from(min.unsigned_abs()))
            .ok_or_else(|| Error::InvalidSpec(format!("spec.handlers.{field}: {v} is below {min}")))
    };
    let timeout_ms = ms(h.timeout_ms, "timeoutMs", 1)?;
    let submit_timeout_ms = ServerConfig::default().submit_timeout_ms;
    if timeout_ms >= submit_timeout_ms {
        return Err(Error::InvalidSpec(format!(
            "spec.handlers.timeoutMs: must be below smscd's submit timeout ({submit_timeout_ms} ms)"
        )));
    }
    Ok(Some(HandlersConfig {
        script,
        timeout_ms,
        import_timeout_ms: ms(h.import_timeout_ms, "importTimeoutMs", 1)?,
        on_error: h.on_error.into(),
        window: usize::try_from(ms(h.window, "window", 1)?).unwrap_or(1),
        reload_interval_ms: ms(h.reload_interval_ms, "reloadIntervalMs", 10)?,
    }))
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
            max_binds: positive_u32(u.max_binds),
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
                store_and_forward: r.store_and_forward,
            })
            .collect(),
        store_and_forward: spec.routing.store_and_forward,
        ..RoutingConfig::default()
    };
    let saf = &spec.store_and_forward;
    let store_and_forward = StoreAndForwardConfig {
        max_validity: parse_duration("spec.storeAndForward.maxValidity", &saf.max_validity)?,
        retry_min: parse_duration("spec.storeAndForward.retryMin", &saf.retry_min)?,
        retry_max: parse_duration("spec.storeAndForward.retryMax", &saf.retry_max)?,
        max_per_account: usize::try_from(saf.max_per_account.max(1)).unwrap_or(1),
        ..StoreAndForwardConfig::default()
    };
    if store_and_forward.retry_max < store_and_forward.retry_min {
        return Err(Error::InvalidSpec(
            "spec.storeAndForward.retryMax: must be at least spec.storeAndForward.retryMin".into(),
        ));
    }
    let ttl = parse_ttl(&spec.dlr_store.ttl)?;
    let store = match (spec.dlr_store.type_, &spec.dlr_store.redis) {
        (DlrStoreType::Memory, _) => StoreConfig::Memory { ttl },
        (DlrStoreType::Redis, Some(r)) => redis_store(
            r,
            r.key_prefix.clone().unwrap_or_else(|| format!("{}/{}", plan.namespace, plan.name)),
            ttl,
        )?,
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
        store_and_forward,
        // smscd's default is loopback; the kubelet's probes and the metrics scraper come from
        // outside the Pod.
        admin: AdminConfig { bind_address: "0.0.0.0".into(), ..AdminConfig::default() },
        shutdown: ShutdownConfig { drain_secs: u64::try_from(spec.shutdown.drain_seconds).unwrap_or(0) },
        leader_election,
        http: http(spec)?,
        handlers: handlers(spec)?,
    };
    let yaml = serde_saphyr::to_string(&config).map_err(|e| Error::Render(e.to_string()))?;
    let restart_hash = restart_hash(&config)?;
    let handlers_script = spec.handlers.as_ref().and_then(|h| h.script.clone());
    Ok(Rendered { config, yaml, restart_hash, handlers_script })
}

/// Hash of the settings smscd reads only at start (listeners, TLS files, admin port, store,
/// election, drain, whether handlers run at all); accounts, routing, binds, throttles, the HTTP
/// accounts' webhooks and everything of the handlers but their presence (script, timeouts)
/// hot-reload and are left out, so changing them does not roll the Pods. The script's text is
/// not in the config at all: it is a file smscd polls.
pub fn restart_hash(config: &SmscdConfig) -> Result<String> {
    let http = HttpConfig { accounts: Vec::new(), ..config.http.clone() };
    let mut restart_only = serde_json::json!({
        "server": config.server,
        "admin": config.admin,
        "store": config.store,
        "leader_election": config.leader_election,
        "shutdown": config.shutdown,
        "http": http,
    });
    // Only when present, so clusters without handlers keep the hash they had before them.
    if config.handlers.is_some() {
        restart_only["handlers"] = serde_json::Value::Bool(true);
    }
    let bytes = serde_json::to_vec(&restart_only).map_err(|e| Error::Render(e.to_string()))?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

pub fn build(plan: &Plan, rendered: &Rendered) -> Result<ConfigMap> {
    Ok(ConfigMap {
        metadata: plan.meta(labels::config_map_name(&plan.name)),
        data: Some(
            [
                (labels::CONFIG_KEY, Some(&rendered.yaml)),
                (HANDLERS_SCRIPT_KEY, rendered.handlers_script.as_ref()),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?.clone())))
            .collect::<BTreeMap<_, _>>(),
        ),
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
    fn store_and_forward_policy_renders_and_bad_durations_name_the_field() {
        let mut c = load("minimal.yaml");
        c.spec.routing.store_and_forward = true;
        c.spec.store_and_forward.max_validity = "2h".into();
        c.spec.store_and_forward.retry_max = "30s".into();
        c.spec.store_and_forward.max_per_account = 500;
        let r = render(&c, &plan_for(&c)).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.config.routing.store_and_forward);
        assert_eq!(r.config.store_and_forward.max_validity, Duration::from_secs(7200));
        assert_eq!(r.config.store_and_forward.retry_max, Duration::from_secs(30));
        assert_eq!(r.config.store_and_forward.max_per_account, 500);
        let back: SmscdConfig = serde_saphyr::from_str(&r.yaml).unwrap_or_else(|e| panic!("{e}\n{}", r.yaml));
        assert_eq!(back, r.config);
        c.spec.store_and_forward.retry_min = "1x".into();
        let e = render(&c, &plan_for(&c)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("spec.storeAndForward.retryMin"), "{e}");
        c.spec.store_and_forward.retry_min = "1m".into();
        let e = render(&c, &plan_for(&c)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("spec.storeAndForward.retryMax: must be at least"), "{e}");
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

    /// Issue 18: `dlrStore.redis` in its Sentinel and Cluster forms renders smscd's store config
    /// with passwords as references, and the Deployment fills them from the Secrets.
    #[test]
    fn redis_sentinel_and_cluster_forms_render() {
        let base = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/single-bind.yaml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let sentinel = base.replace(
            "urlSecretRef: { name: redis, key: url }",
            "sentinel: { masterName: mymaster, sentinels: [\"redis-node-0.redis-headless:26379\", \"redis-node-1.redis-headless\"], passwordSecretRef: { name: redis, key: redis-password }, sentinelPasswordSecretRef: { name: redis, key: redis-password } }\n      wait: { replicas: 1 }",
        );
        let c = crate::build::fixtures::cluster(&sentinel);
        let r = render(&c, &plan_for(&c)).unwrap_or_else(|e| panic!("{e}"));
        let StoreConfig::Redis { url, sentinel: Some(s), cluster: None, wait: Some(w), .. } = &r.config.store
        else {
            panic!("{:?}", r.config.store)
        };
        assert_eq!(url, "");
        assert_eq!((s.master_name.as_str(), s.sentinels.len()), ("mymaster", 2));
        assert_eq!(s.password.as_deref(), Some("${SMSC_REDIS_PASSWORD}"));
        assert_eq!(s.sentinel_password.as_deref(), Some("${SMSC_REDIS_SENTINEL_PASSWORD}"));
        assert_eq!((w.replicas, w.timeout_ms), (1, 100));
        let back: SmscdConfig = serde_saphyr::from_str(&r.yaml).unwrap_or_else(|e| panic!("{e}\n{}", r.yaml));
        assert_eq!(back, r.config);
        let envs: Vec<&str> =
            redis_secret_envs(c.spec.dlr_store.redis.as_ref().unwrap_or_else(|| panic!("redis")))
                .into_iter()
                .map(|(n, _)| n)
                .collect();
        assert_eq!(envs, [REDIS_PASSWORD_ENV, REDIS_SENTINEL_PASSWORD_ENV]);

        let cluster = base.replace(
            "urlSecretRef: { name: redis, key: url }",
            "cluster: { nodes: [\"redis-cluster-0.redis-cluster-headless:6379\"], passwordSecretRef: { name: rc, key: redis-password }, tls: true }",
        );
        let c = crate::build::fixtures::cluster(&cluster);
        let r2 = render(&c, &plan_for(&c)).unwrap_or_else(|e| panic!("{e}"));
        let StoreConfig::Redis { cluster: Some(cl), sentinel: None, wait: None, .. } = &r2.config.store
        else {
            panic!("{:?}", r2.config.store)
        };
        assert!(cl.tls && cl.password.as_deref() == Some("${SMSC_REDIS_PASSWORD}"));
        assert_ne!(r.restart_hash, r2.restart_hash, "the store form rolls the Pods");

        // Two forms at once: the CRD's rule refuses it; the build does too (older API servers).
        let both = base.replace(
            "urlSecretRef: { name: redis, key: url }",
            "urlSecretRef: { name: redis, key: url }\n      cluster: { nodes: [\"h:6379\"] }",
        );
        let c = crate::build::fixtures::cluster(&both);
        let e = render(&c, &plan_for(&c)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("spec.dlrStore.redis: set exactly one of"), "{e}");
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

    /// Issue 15 item 5: an inline script is a key of the operator's ConfigMap beside the config,
    /// which names it; neither its text nor the hot-reloadable settings are in the restart hash.
    #[test]
    fn inline_handlers_script_is_a_config_map_key_outside_the_restart_hash() {
        let c = load("handlers-inline.yaml");
        let plan = plan_for(&c);
        let r = render(&c, &plan).unwrap_or_else(|e| panic!("{e}"));
        let h = r.config.handlers.clone().unwrap_or_else(|| panic!("no handlers:\n{}", r.yaml));
        assert_eq!(h.script, "/etc/smscd/handlers.py");
        assert_eq!(
            (h.timeout_ms, h.import_timeout_ms, h.window, h.reload_interval_ms),
            (250, 5000, 64, 1000)
        );
        assert_eq!(h.on_error, smsc_api::smscd_config::OnHandlerError::Continue);
        assert!(!r.yaml.contains("replace-me"), "the script is not in smscd.yaml:\n{}", r.yaml);
        let back: SmscdConfig = serde_saphyr::from_str(&r.yaml).unwrap_or_else(|e| panic!("{e}\n{}", r.yaml));
        assert_eq!(back, r.config);
        let data = build(&plan, &r).unwrap_or_else(|e| panic!("{e}")).data.unwrap_or_default();
        let script = data.get(HANDLERS_SCRIPT_KEY).cloned().unwrap_or_default();
        assert!(
            script.starts_with("from siphon import smpp\n") && script.contains("\"replace-me\""),
            "{script}"
        );

        // An edit of the script or of a setting smscd reloads: same hash, new ConfigMap.
        let mut edited = c.clone();
        if let Some(h) = edited.spec.handlers.as_mut() {
            h.script = h.script.as_ref().map(|s| s.replace("replace-me", "edited"));
            h.timeout_ms = 50;
            h.on_error = smsc_api::crd::HandlerOnError::Reject;
        }
        let r2 = render(&edited, &plan).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r2.restart_hash, r.restart_hash);
        let data2 = build(&plan, &r2).unwrap_or_else(|e| panic!("{e}")).data.unwrap_or_default();
        assert!(data2.get(HANDLERS_SCRIPT_KEY).is_some_and(|s| s.contains("\"edited\"")));
        // smscd starts its interpreter only at start: adding or removing the section rolls.
        let mut none = c.clone();
        none.spec.handlers = None;
        let r3 = render(&none, &plan).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(r3.restart_hash, r.restart_hash);
        assert!(r3.config.handlers.is_none() && r3.handlers_script.is_none());
        let data3 = build(&plan, &r3).unwrap_or_else(|e| panic!("{e}")).data.unwrap_or_default();
        assert_eq!(data3.keys().collect::<Vec<_>>(), ["smscd.yaml"]);
    }

    /// Without `spec.handlers` and `spec.http.accounts` the hash is the one the operator
    /// computed before they existed, so upgrading the operator rolls no Pod (the value is what
    /// `smsc-operator render -f tests/fixtures/<fixture>` printed before them).
    #[test]
    fn no_handlers_keeps_the_earlier_restart_hash() {
        for (fixture, hash) in [("full.yaml", "4dff781f193276a4"), ("single-bind.yaml", "f6f87718ea412055")] {
            let c = load(fixture);
            let r = render(&c, &plan_for(&c)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.restart_hash, hash, "{fixture}");
        }
    }

    #[test]
    fn handlers_from_a_config_map_and_both_or_neither_refused() {
        let c = load("handlers-configmap.yaml");
        let r = render(&c, &plan_for(&c)).unwrap_or_else(|e| panic!("{e}"));
        let h = r.config.handlers.clone().unwrap_or_else(|| panic!("no handlers"));
        assert_eq!(h.script, "/etc/smscd-handlers/smpp_script.py");
        assert_eq!((h.timeout_ms, h.on_error), (100, smsc_api::smscd_config::OnHandlerError::Reject));
        assert!(r.handlers_script.is_none());
        let mut both = c.clone();
        if let Some(h) = both.spec.handlers.as_mut() {
            h.script = Some("pass".into());
        }
        let mut neither = c.clone();
        if let Some(h) = neither.spec.handlers.as_mut() {
            h.config_map_ref = None;
        }
        for bad in [both, neither] {
            let e = render(&bad, &plan_for(&bad)).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("spec.handlers: set exactly one of script"), "{e}");
        }
        let mut slow = c;
        if let Some(h) = slow.spec.handlers.as_mut() {
            h.timeout_ms = 10_000;
        }
        let e = render(&slow, &plan_for(&slow)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("spec.handlers.timeoutMs"), "{e}");
    }

    /// Issue 17: `spec.http.accounts` become smscd's `http.accounts` with the signing key as a
    /// reference; they hot-reload, so they stay out of the restart hash; with the API off they
    /// are not rendered.
    #[test]
    fn http_accounts_render_with_secret_references() {
        let c = load("http-accounts.yaml");
        let plan = plan_for(&c);
        let r = render(&c, &plan).unwrap_or_else(|e| panic!("{e}"));
        let a = &r.config.http.accounts;
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].account, "bank");
        assert_eq!(a[0].dlr_url.as_deref(), Some("https://bank.example.com/sms/dlr"));
        assert_eq!(a[0].mo_url.as_deref(), Some("https://bank.example.com/sms/mo"));
        assert_eq!(a[0].secret.as_deref(), Some("${SMSC_HTTP_ACCOUNT_0_SECRET}"));
        assert_eq!(
            (a[1].account.as_str(), a[1].secret.as_deref(), a[1].mo_url.as_deref()),
            ("shop", None, None)
        );
        let back: SmscdConfig = serde_saphyr::from_str(&r.yaml).unwrap_or_else(|e| panic!("{e}\n{}", r.yaml));
        assert_eq!(back, r.config);
        let mut fewer = c.clone();
        fewer.spec.http.accounts.truncate(1);
        fewer.spec.http.accounts[0].dlr_url = Some("https://elsewhere.example/dlr".into());
        assert_eq!(render(&fewer, &plan).unwrap_or_else(|e| panic!("{e}")).restart_hash, r.restart_hash);
        let mut off = c;
        off.spec.http.enabled = false;
        let r2 = render(&off, &plan).unwrap_or_else(|e| panic!("{e}"));
        assert!(r2.config.http.accounts.is_empty() && !r2.yaml.contains("http:"), "{}", r2.yaml);
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
        assert_eq!(http_account_secret_env(1), "SMSC_HTTP_ACCOUNT_1_SECRET");
    }
}
