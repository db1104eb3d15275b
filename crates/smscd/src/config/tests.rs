use super::*;
use smsc_api::smscd_config::{BindType, StoreConfig};

const REFERENCE: &str = r#"server: { bind_address: "0.0.0.0", port: 2775 }
binds:
  - { name: alpha, host: smsc-a.example.net, port: 2775, system_id: ${SMPP_ALPHA_SYSTEM_ID},
      password: ${SMPP_ALPHA_PASSWORD}, bind_type: transceiver, max_msg_per_sec: 50 }
routing: { default_chain: ["bind:alpha"] }
"#;

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn load(text: &str, pairs: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let v = vars(pairs);
    let listed: Vec<String> = v.keys().cloned().collect();
    load_str(text, "smpp.yaml", &listed, &|k| v.get(k).cloned())
}

fn errors(text: &str, pairs: &[(&str, &str)]) -> Vec<String> {
    match load(text, pairs) {
        Ok(l) => panic!("expected errors, loaded {:?}", l.config),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

fn ref_env() -> Vec<(&'static str, &'static str)> {
    vec![("SMPP_ALPHA_SYSTEM_ID", "alpha_esme"), ("SMPP_ALPHA_PASSWORD", "chan:#e")]
}

#[test]
fn reference_file_loads_unchanged() {
    let loaded = load(REFERENCE, &ref_env()).expect("reference loads");
    let c = &loaded.config;
    assert_eq!(c.server.port, 2775);
    let b = &c.binds[0];
    assert_eq!(b.name, "alpha");
    assert_eq!(b.system_id, "alpha_esme");
    assert_eq!(b.password, "chan:#e");
    assert_eq!(b.bind_type, BindType::Transceiver);
    assert_eq!(b.max_msg_per_sec, Some(50));
    assert_eq!(c.routing.default_chain, vec!["bind:alpha".to_string()]);
    // No accounts: warned, not refused.
    assert!(loaded.warnings.iter().any(|w| w.contains("no accounts")), "{:?}", loaded.warnings);
}

#[test]
fn missing_variable_names_it_and_its_line() {
    let e = errors(REFERENCE, &[("SMPP_ALPHA_SYSTEM_ID", "x")]);
    assert_eq!(e, vec!["smpp.yaml:4: environment variable SMPP_ALPHA_PASSWORD is not set".to_string()]);
}

#[test]
fn typo_names_file_line_and_key() {
    let text = "server:\n  port: 2775\nbinds:\n  - name: a\n    hots: x\n    system_id: s\n";
    let e = errors(text, &[]);
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("smpp.yaml:5: binds[0]"), "{e:?}");
    assert!(e[0].contains("unknown field `hots`"), "{e:?}");
}

#[test]
fn bad_type_names_key_and_line() {
    let text = "server:\n  bind_address: 0.0.0.0\n  port: 70000\n";
    let e = errors(text, &[]);
    assert!(e[0].starts_with("smpp.yaml:3: server.port: invalid value"), "{e:?}");
}

#[test]
fn syntax_error_has_a_line() {
    let e = errors("server:\n  port: [1\nbinds: x\n", &[]);
    assert!(e[0].starts_with("smpp.yaml:"), "{e:?}");
}

#[test]
fn store_errors_point_into_store() {
    let text = "accounts: []\n\nstore:\n  type: redis\n  url: redis://u:p@h\n  ttl: forever\n";
    let e = errors(text, &[]);
    assert!(e[0].starts_with("smpp.yaml:3: store"), "{e:?}");
}

#[test]
fn empty_file_is_all_defaults() {
    let l = load("# nothing yet\n", &[]).expect("loads");
    assert_eq!(l.config, SmscdConfig::default());
}

const FULL: &str = r#"server:
  port: 2775
  tls: ~
binds:
  - name: alpha
    host: a.example
    system_id: sa
    password: pw
    reconnect: { min_ms: 100, max_ms: 1000 }
  - name: beta
    host: b.example
    system_id: sb
accounts:
  - system_id: shop
    password: secret
    allowed_cidrs: ["10.0.0.0/8", "192.0.2.7"]
    bind_types: [transmitter, transceiver]
routing:
  default_chain: ["bind:alpha", sim]
  rules:
    - match: { account: shop, destination_prefix: "+44" }
      chain: ["bind:beta", "bind:alpha"]
sim: { receipt_delay_ms: 10, outcomes: { DELIVRD: 0.9, UNDELIV: 0.1 } }
store: { type: redis, url: "redis://r.example:6379", ttl: 1h }
leader_election: { lease_name: smsc, lease_duration_secs: 15, renew_deadline_secs: 10, retry_period_secs: 2 }
"#;

#[test]
fn full_file_loads_without_warnings() {
    let l = load(FULL, &[]).expect("loads");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(l.config.accounts[0].allowed_cidrs.len(), 2);
    assert!(matches!(l.config.store, StoreConfig::Redis { .. }));
}

/// Issue 14: an MO rule naming an account that is not declared would acknowledge MO upstream
/// and deliver it to nobody: refused with file, line and key.
#[test]
fn mo_rule_must_name_a_declared_account() {
    let text = "accounts: [{ system_id: shop, password: p }]\nrouting:\n  default_chain: [sim]\n  mo:\n    - { destination_prefix: \"44\", account: shop }\n    - { destination_prefix: \"45\", account: shpo }\n";
    let e = errors(text, &[]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("smpp.yaml:6: routing.mo[1].account: no account `shpo`"), "{e:?}");
    assert!(load(&text.replace("shpo", "shop"), &[]).is_ok());
}

/// Issue 14: with the memory store a replica taking over the Lease has none of the receipts
/// owed, so active/standby (leader_election) requires the Redis store.
#[test]
fn memory_store_with_leader_election_is_refused() {
    let with_redis = FULL;
    assert!(load(with_redis, &[]).is_ok());
    let text = FULL
        .replace("{ type: redis, url: \"redis://r.example:6379\", ttl: 1h }", "{ type: memory, ttl: 1h }");
    let e = errors(&text, &[]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("smpp.yaml:25: leader_election: needs `store: { type: redis"), "{e:?}");
    // Without election the memory store runs (one replica).
    let single = text.lines().filter(|l| !l.starts_with("leader_election")).collect::<Vec<_>>().join("\n");
    assert!(load(&single, &[]).is_ok());
}

#[test]
fn store_and_forward_policy_is_checked_and_loads() {
    let text = "server: { submit_timeout_ms: 5000 }\nstore_and_forward: { max_per_account: 0, retry_min: 2s, retry_max: 1s, lease: 5s, max_validity: 400days }\n";
    let e = errors(text, &[]).join("\n");
    assert!(e.contains("store_and_forward.max_per_account: must be at least 1"), "{e}");
    assert!(e.contains("store_and_forward.retry_max: must be at least store_and_forward.retry_min"), "{e}");
    assert!(e.contains("store_and_forward.lease: must be above server.submit_timeout_ms (5000 ms)"), "{e}");
    assert!(e.contains("store_and_forward.max_validity: 34560000 is above the limit"), "{e}");
    let l = load(
        "routing: { default_chain: [sim], store_and_forward: true, rules: [{ match: { account: a }, chain: [sim], store_and_forward: false }] }\nstore_and_forward: { max_validity: 2h, retry_min: 500ms }\n",
        &[],
    )
    .expect("loads");
    assert!(l.config.routing.store_and_forward);
    assert_eq!(l.config.routing.rules[0].store_and_forward, Some(false));
    assert_eq!(l.config.store_and_forward.max_validity, std::time::Duration::from_secs(7200));
    assert_eq!(l.config.store_and_forward.retry_min, std::time::Duration::from_millis(500));
    assert!(
        l.warnings.iter().any(|w| w.to_string().contains("routing.store_and_forward")),
        "memory store warns: {:?}",
        l.warnings
    );
}

#[test]
fn queue_bounds_are_checked() {
    let text = "queues: { max_per_account: 0, max_attempts: 0 }\n";
    let e = errors(text, &[]).join("\n");
    assert!(e.contains("smpp.yaml:1: queues.max_per_account: must be at least 1"), "{e}");
    assert!(e.contains("smpp.yaml:1: queues.max_attempts: must be at least 1"), "{e}");
    let l = load("queues: { max_per_account: 5, max_attempts: 3, dead_letters_per_account: 0 }\n", &[])
        .expect("loads");
    assert_eq!((l.config.queues.max_per_account, l.config.queues.max_attempts), (5, 3));
}

#[test]
fn validation_errors_are_all_reported_with_lines() {
    let text = FULL
        .replace("min_ms: 100", "min_ms: 5000")
        .replace("192.0.2.7", "192.0.2.300")
        .replace("\"bind:beta\"", "\"bind:gamma\"")
        .replace("UNDELIV: 0.1", "UNDELIV: -1")
        .replace("retry_period_secs: 2", "retry_period_secs: 12")
        .replace("name: beta", "name: alpha");
    let e = errors(&text, &[]);
    let has = |line: &str, key: &str| e.iter().any(|l| l.starts_with(&format!("smpp.yaml:{line}: {key}: ")));
    assert!(has("9", "binds[0].reconnect"), "{e:?}");
    assert!(has("10", "binds[1].name"), "{e:?}");
    assert!(has("16", "accounts[0].allowed_cidrs[1]"), "{e:?}");
    assert!(e.iter().any(|l| l.contains("account `shop`")), "{e:?}");
    assert!(has("22", "routing.rules[0].chain[0]"), "{e:?}");
    assert!(has("23", "sim.outcomes.UNDELIV"), "{e:?}");
    assert!(has("25", "leader_election.retry_period_secs"), "{e:?}");
}

#[test]
fn zero_weights_ports_windows_and_lease_order() {
    let text = "server: { port: 0 }\nsim: { outcomes: { DELIVRD: 0 } }\nbinds: [{ name: a, host: h, system_id: s, window: 0 }]\nrouting: { default_chain: [\"bind:a\"] }\nleader_election: { lease_name: l, lease_duration_secs: 10, renew_deadline_secs: 10 }\n";
    let e = errors(text, &[]).join("\n");
    for needle in [
        "smpp.yaml:1: server.port:",
        "smpp.yaml:2: sim.outcomes:",
        "smpp.yaml:3: binds[0].window:",
        "smpp.yaml:5: leader_election.renew_deadline_secs:",
    ] {
        assert!(e.contains(needle), "{needle} not in {e}");
    }
}

/// Issue 13 item 15: `max_binds` bounds the binds of every replica together, so one replica's
/// `binds` above it could never all bind.
#[test]
fn max_binds_must_cover_one_replicas_binds() {
    let text = "binds:\n  - { name: a, host: h, system_id: s, binds: 3, max_binds: 2 }\n  - { name: b, host: h, system_id: t, max_binds: 0 }\nrouting: { default_chain: [\"bind:a\", \"bind:b\"] }\n";
    let e = errors(text, &[]);
    assert!(
        e.iter().any(|l| l.starts_with("smpp.yaml:2: binds[0].binds: 3 sessions exceed max_binds (2)")),
        "{e:?}"
    );
    assert!(e.iter().any(|l| l.starts_with("smpp.yaml:3: binds[1].max_binds: must be at least 1")), "{e:?}");
    let ok = "binds: [{ name: a, host: h, system_id: s, binds: 2, max_binds: 2 }]\nrouting: { default_chain: [\"bind:a\"] }\n";
    assert!(load(ok, &[]).is_ok());
}

/// Issue 14 item 14: closing the binds on step-down must fit between the renew deadline and
/// the lease duration, or the next leader binds while ours are still open.
#[test]
fn step_down_budget_must_fit_before_a_standby_takes_over() {
    // Leader election needs the shared store (line 2 here, so the election stays on line 1).
    const STORE: &str = "store: { type: redis, url: \"redis://r.example:6379\" }\n";
    let le = |extra: &str| {
        format!(
            "leader_election: {{ lease_name: l, lease_duration_secs: 15, renew_deadline_secs: 10{extra} }}\n{STORE}"
        )
    };
    for bad in [", step_down_secs: 5", ", step_down_secs: 9", ", step_down_secs: 0"] {
        let e = errors(&le(bad), &[]).join("\n");
        assert!(e.contains("smpp.yaml:1: leader_election.step_down_secs:"), "{bad}: {e}");
    }
    let l = load(&le(", step_down_secs: 4"), &[]).expect("4 s fits in 15 - 10");
    let cfg = l.config.leader_election.expect("leader_election");
    assert_eq!(cfg.step_down(), std::time::Duration::from_secs(4));
    // The default fits whatever the gap.
    let l = load(&le(""), &[]).expect("default");
    assert_eq!(l.config.leader_election.map(|c| c.step_down()), Some(std::time::Duration::from_secs(3)));
    let tight = format!("leader_election: {{ lease_name: l, lease_duration_secs: 4, renew_deadline_secs: 3, retry_period_secs: 1 }}\n{STORE}");
    let l = load(&tight, &[]).expect("tight timing");
    assert_eq!(l.config.leader_election.map(|c| c.step_down()), Some(std::time::Duration::from_millis(600)));
}

#[test]
fn missing_tls_files_are_errors() {
    let text = "server: { tls: { cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem } }\n";
    let e = errors(text, &[]).join("\n");
    assert!(e.contains("smpp.yaml:1: server.tls.cert_file: file `/nonexistent/c.pem` does not exist"), "{e}");
    assert!(e.contains("server.tls.key_file"), "{e}");
}

#[test]
fn unused_bind_and_unknown_rule_account_warn() {
    let text = "accounts: [{ system_id: a, password: p }]\nbinds:\n  - { name: idle, host: h, system_id: s }\nrouting: { default_chain: [sim], rules: [{ match: { account: nobody }, chain: [sim] }] }\n";
    let l = load(text, &[]).expect("loads");
    assert!(
        l.warnings.iter().any(|w| w.starts_with("smpp.yaml:3: binds[0]: bind `idle`")),
        "{:?}",
        l.warnings
    );
    assert!(l.warnings.iter().any(|w| w.contains("routing.rules[0].match.account")), "{:?}", l.warnings);
}

#[test]
fn env_binds_override_and_declare() {
    let mut env = ref_env();
    env.extend([
        ("SMPP_BIND_ALPHA_PASSWORD", "override"),
        ("SMPP_BIND_BETA_HOST", "b.example"),
        ("SMPP_BIND_BETA_SYSTEM_ID", "sb"),
    ]);
    let text = REFERENCE.replace("[\"bind:alpha\"]", "[\"bind:alpha\", \"bind:beta\"]");
    let l = load(&text, &env).expect("loads");
    assert_eq!(l.config.binds[0].password, "override");
    assert_eq!(l.config.binds[1].name, "beta");
    assert_eq!(l.config.binds[1].host, "b.example");
}

#[test]
fn bad_env_bind_value_names_the_variable() {
    let mut env = ref_env();
    env.push(("SMPP_BIND_ALPHA_WINDOW", "0"));
    let e = errors(REFERENCE, &env);
    assert_eq!(
        e,
        vec!["environment variable SMPP_BIND_ALPHA_WINDOW: binds[0].window: must be at least 1".to_string()]
    );
    let mut env = ref_env();
    env.push(("SMPP_BIND_ALPHA_PORT", "x"));
    let e = errors(REFERENCE, &env);
    assert!(
        e[0].starts_with("environment variable SMPP_BIND_ALPHA_PORT: binds[0].port: invalid value"),
        "{e:?}"
    );
}

#[test]
fn lookup_only_load_overrides_declared_binds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("smpp.yaml");
    std::fs::write(&path, REFERENCE).expect("write");
    let v = vars(&[
        ("SMPP_ALPHA_SYSTEM_ID", "id"),
        ("SMPP_ALPHA_PASSWORD", "pw"),
        ("SMPP_BIND_ALPHA_HOST", "other.example"),
    ]);
    let l = load_file(&path, &|k| v.get(k).cloned()).expect("loads");
    assert_eq!(l.config.binds[0].host, "other.example");
    let e =
        load_file(&dir.path().join("nope.yaml"), &|_| None).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("nope.yaml"), "{e}");
}

#[test]
fn masking_hides_secrets() {
    let text = "binds: [{ name: a, host: h, system_id: s, password: pw }]\naccounts: [{ system_id: x, password: secret }]\nrouting: { default_chain: [\"bind:a\"] }\nstore: { type: redis, url: \"redis://user:hunter2@r:6379/0\" }\n";
    let l = load(text, &[]).expect("loads");
    let m = masked(&l.config);
    let printed = serde_norway::to_string(&m).expect("serialises");
    assert!(
        !printed.contains("hunter2") && !printed.contains("secret") && !printed.contains(": pw"),
        "{printed}"
    );
    assert!(printed.contains("redis://user:***@r:6379/0"), "{printed}");
    // The masked print loads back (secrets aside) to the same shape.
    let again = load(&printed, &[]).expect("masked output loads");
    assert_eq!(again.config, m);
}

#[test]
fn empty_default_chain_warns_when_there_are_accounts() {
    let l = load("accounts: [{ system_id: a, password: p }]\n", &[]).expect("loads");
    assert!(l.warnings.iter().any(|w| w.contains("routing.default_chain: empty")), "{:?}", l.warnings);
    let l = load("accounts: [{ system_id: a, password: p }]\nrouting: { default_chain: [sim] }\n", &[])
        .expect("loads");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

/// Issue 14: values that size a Duration added to an Instant, a semaphore, a channel or a task
/// count are refused with file, line and key, instead of panicking the daemon later.
#[test]
fn huge_values_are_refused_with_file_line_and_key() {
    let max = u64::MAX;
    let text = format!(
        "server:\n  max_connections: {max}\n  enquire_link_secs: {max}\n  bind_timeout_secs: {max}\n\
         binds:\n  - name: a\n    host: h\n    system_id: s\n    enquire_link_secs: {max}\n    window: {max}\n\
         \x20   binds: {max}\n    reconnect: {{ min_ms: 1, max_ms: {max} }}\n\
         accounts:\n  - {{ system_id: e, password: p, window: {max} }}\n\
         routing: {{ default_chain: [\"bind:a\"] }}\n\
         sim: {{ receipt_delay_ms: {max} }}\n\
         store: {{ type: memory, ttl: 100000days }}\n\
         shutdown: {{ drain_secs: {max} }}\n\
         leader_election: {{ lease_name: l, lease_duration_secs: {max} }}\n"
    );
    let e = errors(&text, &[]);
    for (line, key) in [
        (2, "server.max_connections"),
        (3, "server.enquire_link_secs"),
        (4, "server.bind_timeout_secs"),
        (9, "binds[0].enquire_link_secs"),
        (10, "binds[0].window"),
        (11, "binds[0].binds"),
        (12, "binds[0].reconnect.max_ms"),
        (14, "accounts[0].window"),
        (16, "sim.receipt_delay_ms"),
        (17, "store.ttl"),
        (18, "shutdown.drain_secs"),
        (19, "leader_election.lease_duration_secs"),
    ] {
        let prefix = format!("smpp.yaml:{line}: {key}: ");
        assert!(
            e.iter().any(|l| l.starts_with(&prefix) && l.contains("above the limit")),
            "no `{prefix}...above the limit` in {e:#?}"
        );
    }
}

#[test]
fn tls_only_needs_a_tls_listener() {
    let e = errors("server:\n  plain_listener: false\n", &[]).join("\n");
    assert!(e.contains("smpp.yaml:2: server.plain_listener: false with no server.tls"), "{e}");
    // TLS only: the plain port is unused, so it may even equal the TLS or admin port.
    let dir = std::env::temp_dir().join(format!("smscd-tls-only-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&cert, "x").expect("write");
    std::fs::write(&key, "x").expect("write");
    let mut cfg = SmscdConfig::default();
    cfg.server.plain_listener = false;
    cfg.server.port = cfg.admin.port;
    cfg.server.tls = Some(smsc_api::smscd_config::ServerTlsConfig {
        port: 8775,
        cert_file: cert.display().to_string(),
        key_file: key.display().to_string(),
    });
    let found = validate::validate(&cfg);
    assert!(found.errors.is_empty(), "{:?}", found.errors);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn submit_timeout_defaults_to_10s_and_is_bounded() {
    assert_eq!(SmscdConfig::default().server.submit_timeout_ms, 10_000);
    let e = errors("server:\n  submit_timeout_ms: 5\n", &[]).join("\n");
    assert!(e.contains("smpp.yaml:2: server.submit_timeout_ms: must be at least 100"), "{e}");
    let e = errors("server:\n  submit_timeout_ms: 99999999999\n", &[]).join("\n");
    assert!(e.contains("smpp.yaml:2: server.submit_timeout_ms: 99999999999 is above the limit"), "{e}");
}

#[test]
fn admin_listens_on_loopback_by_default() {
    let l = load("accounts: []\n", &[]).expect("loads");
    assert_eq!(l.config.admin.bind_address, "127.0.0.1");
}

/// Issue 18: the Sentinel and Cluster forms load (passwords from the environment) and their
/// mistakes are refused with file, line and key.
#[test]
fn redis_sentinel_and_cluster_forms() {
    let sentinel = "store:\n  type: redis\n  sentinel:\n    master_name: mymaster\n    sentinels: [\"s0:26379\", s1]\n    password: ${REDIS_PASSWORD}\n  wait: { replicas: 1 }\n";
    let l = load(sentinel, &[("REDIS_PASSWORD", "pw")]).expect("sentinel form loads");
    let StoreConfig::Redis { sentinel: Some(s), wait: Some(w), url, .. } = &l.config.store else {
        panic!("{:?}", l.config.store)
    };
    assert_eq!((s.password.as_deref(), s.sentinels.len(), url.as_str()), (Some("pw"), 2, ""));
    assert_eq!((w.replicas, w.timeout_ms), (1, 100));
    let cluster = "store:\n  type: redis\n  cluster: { nodes: [\"n0:6379\", \"[::1]:7000\"], password: x }\n";
    assert!(matches!(
        load(cluster, &[]).expect("cluster form").config.store,
        StoreConfig::Redis { cluster: Some(_), .. }
    ));

    let e = errors("store:\n  type: redis\n  url: redis://h\n  cluster: { nodes: [h] }\n", &[]);
    assert!(e[0].starts_with("smpp.yaml:1: store: give exactly one of `url`"), "{e:?}");
    let e = errors("store:\n  type: redis\n", &[]);
    assert!(e[0].starts_with("smpp.yaml:1: store: give exactly one of"), "{e:?}");
    let e =
        errors("store:\n  type: redis\n  sentinel:\n    master_name: \"\"\n    sentinels: [\"s0:x\"]\n", &[]);
    assert!(
        e.iter().any(|l| l.starts_with("smpp.yaml:4: store.sentinel.master_name: must not be empty")),
        "{e:?}"
    );
    assert!(
        e.iter().any(|l| l.starts_with("smpp.yaml:5: store.sentinel.sentinels[0]: `s0:x`: the port")),
        "{e:?}"
    );
    let e = errors("store:\n  type: redis\n  sentinel:\n    master_name: m\n    sentinels: []\n", &[]);
    assert!(
        e.iter().any(|l| l.starts_with("smpp.yaml:5: store.sentinel.sentinels: name at least one")),
        "{e:?}"
    );
    let e = errors(
        "store:\n  type: redis\n  key_prefix: \"a{b}\"\n  cluster:\n    nodes: [\"redis://h:1\"]\n",
        &[],
    );
    assert!(e.iter().any(|l| l.starts_with("smpp.yaml:3: store.key_prefix: must not contain")), "{e:?}");
    assert!(e.iter().any(|l| l.contains("store.cluster.nodes[0]: `redis://h:1`")), "{e:?}");
    let e =
        errors("store:\n  type: redis\n  url: redis://h\n  wait:\n    replicas: 0\n    timeout_ms: 0\n", &[]);
    assert!(e.iter().any(|l| l.starts_with("smpp.yaml:5: store.wait.replicas: must be at least 1")), "{e:?}");
    assert!(e.iter().any(|l| l.starts_with("smpp.yaml:6: store.wait.timeout_ms: must be above 0")), "{e:?}");
}

/// Issue 17: the `http:` section is off by default, and its mistakes name file, line and key.
#[test]
fn http_section_off_by_default_and_checked() {
    let loaded = load("accounts: [{ system_id: a, password: p }]\n", &[]).expect("loads");
    assert!(!loaded.config.http.enabled);
    let text = "accounts: [{ system_id: a, password: p }]
http:
  enabled: true
  port: 8088
  max_parts: 0
  accounts:
    - { account: a, dlr_url: \"ftp://x/\", secret: s }
    - { account: nobody }
";
    let e = errors(text, &[]);
    assert!(e.iter().any(|l| l.starts_with("smpp.yaml:5: http.max_parts")), "{e:?}");
    assert!(
        e.iter().any(|l| l.starts_with("smpp.yaml:7: http.accounts[0].dlr_url") && l.contains("ftp://x/")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("smpp.yaml:8: http.accounts[1].account") && l.contains("not in accounts")),
        "{e:?}"
    );
    let e = errors("http: { enabled: true, prot: 1 }\n", &[]);
    assert!(e[0].contains("unknown field `prot`"), "{e:?}");
    // Unsigned webhooks are allowed, with a warning; secrets are masked.
    let ok = "accounts: [{ system_id: a, password: p }]
http: { enabled: true, accounts: [{ account: a, mo_url: \"http://127.0.0.1:9/mo\", tokens: [t0k] }] }
";
    let loaded = load(ok, &[]).expect("loads");
    assert!(loaded.warnings.iter().any(|w| w.contains("unsigned")), "{:?}", loaded.warnings);
    assert_eq!(masked(&loaded.config).http.accounts[0].tokens, vec![MASK.to_string()]);
}

/// Issue 15: the handlers section names file, line and key; a relative script is taken from the
/// config file's directory.
#[test]
fn handlers_section_is_checked_and_its_script_resolved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("smpp_script.py");
    std::fs::write(&script, "from siphon import smpp\n").expect("script");
    let file = dir.path().join("smpp.yaml").display().to_string();
    let text = "routing: { default_chain: [sim] }\nhandlers: { script: smpp_script.py }\n";
    let l = load_str(text, &file, &[], &|_| None).expect("loads");
    let h = l.config.handlers.expect("handlers");
    assert_eq!(h.script, script.display().to_string());
    assert_eq!((h.timeout_ms, h.on_error), (100, smsc_api::smscd_config::OnHandlerError::Reject));
    let bad = "handlers:\n  script: nowhere.py\n  timeout_ms: 20000\n  on_error: ignore\n";
    let e = errors(bad, &[]).join("\n");
    assert!(e.contains("smpp.yaml:4: handlers.on_error: unknown variant `ignore`"), "{e}");
    let bad = "handlers:\n  script: nowhere.py\n  timeout_ms: 20000\n";
    let e = errors(bad, &[]).join("\n");
    assert!(e.contains("smpp.yaml:2: handlers.script: file `nowhere.py` does not exist"), "{e}");
    assert!(e.contains("smpp.yaml:3: handlers.timeout_ms: must be below server.submit_timeout_ms"), "{e}");
}
