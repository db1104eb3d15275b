//! Checks the schema cannot express. Errors refuse the config; warnings are reported and the
//! config runs.

mod http;

use smsc_api::smscd_config::{SmscdConfig, StoreConfig};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

/// A finding at a key path, located by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub key: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl Findings {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Finding { key: key.into(), message: message.into() });
    }
    fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Finding { key: key.into(), message: message.into() });
    }
}

/// SMPP 3.4 C-Octet String limits without the NUL (the codec refuses longer ones).
const MAX_SYSTEM_ID: usize = 15;
const MAX_PASSWORD: usize = 8;
const MAX_SYSTEM_TYPE: usize = 12;

/// Upper bounds of values that size timers, allocations or task counts: above them a Duration
/// added to an Instant, a semaphore or a channel would panic or exhaust memory. Each is far above
/// any sensible setting.
pub(crate) mod limits {
    /// One day: keepalive intervals and shutdown drain.
    pub const DAY_SECS: u64 = 86_400;
    /// One hour: bind timeouts, lease timings, reconnect backoff.
    pub const HOUR_SECS: u64 = 3_600;
    /// Open inbound connections (each holds buffers and a task).
    pub const MAX_CONNECTIONS: usize = 1_000_000;
    /// Outstanding requests per session (a window of permits and a channel that size).
    pub const MAX_WINDOW: usize = 100_000;
    /// Sessions per upstream per replica (a task each).
    pub const MAX_UPSTREAM_BINDS: usize = 1_000;
    /// Correlation lifetime: one year.
    pub const MAX_TTL_SECS: u64 = 365 * 86_400;
    /// Deliveries queued (or dead letters kept) per account.
    pub const MAX_QUEUED: usize = 100_000_000;
    /// deliver_sm attempts per delivery.
    pub const MAX_ATTEMPTS: u32 = 1_000;
}

/// `value` above `max`: an error naming both.
fn at_most<T: PartialOrd + std::fmt::Display>(f: &mut Findings, key: &str, value: T, max: T, unit: &str) {
    if value > max {
        f.error(key, format!("{value} is above the limit of {max}{unit}"));
    }
}

/// Below this a submit's budget cannot cover an upstream round trip and a store write.
const MIN_SUBMIT_TIMEOUT_MS: u64 = 100;

/// The stat words an Appendix B receipt may carry.
const STAT_WORDS: &[&str] = &["DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD"];

pub(crate) fn validate(cfg: &SmscdConfig) -> Findings {
    let mut f = Findings::default();
    server(cfg, &mut f);
    binds(cfg, &mut f);
    accounts(cfg, &mut f);
    routing(cfg, &mut f);
    sim(cfg, &mut f);
    store(cfg, &mut f);
    queues(cfg, &mut f);
    store_and_forward(cfg, &mut f);
    leader(cfg, &mut f);
    http::http(cfg, &mut f);
    handlers(cfg, &mut f);
    f
}

fn handlers(cfg: &SmscdConfig, f: &mut Findings) {
    let Some(h) = &cfg.handlers else { return };
    file_exists(f, "handlers.script", &h.script);
    if h.timeout_ms == 0 {
        f.error("handlers.timeout_ms", "must be at least 1");
    } else if h.timeout_ms >= cfg.server.submit_timeout_ms {
        f.error(
            "handlers.timeout_ms",
            format!(
                "must be below server.submit_timeout_ms ({}): the submit's answer waits for it",
                cfg.server.submit_timeout_ms
            ),
        );
    }
    if h.import_timeout_ms == 0 {
        f.error("handlers.import_timeout_ms", "must be at least 1");
    }
    at_most(f, "handlers.import_timeout_ms", h.import_timeout_ms, limits::HOUR_SECS * 1000, " ms (1 hour)");
    if h.window == 0 {
        f.error("handlers.window", "must be at least 1");
    }
    at_most(f, "handlers.window", h.window, limits::MAX_WINDOW, "");
    if h.reload_interval_ms < 10 {
        f.error("handlers.reload_interval_ms", "must be at least 10");
    }
    at_most(f, "handlers.reload_interval_ms", h.reload_interval_ms, limits::HOUR_SECS * 1000, " ms (1 hour)");
}

fn port(f: &mut Findings, key: &str, port: u16) {
    if port == 0 {
        f.error(key, "invalid value 0, expected a port number 1-65535");
    }
}

fn file_exists(f: &mut Findings, key: &str, path: &str) {
    if path.is_empty() {
        f.error(key, "must name a file");
    } else if !Path::new(path).is_file() {
        f.error(key, format!("file `{path}` does not exist or is not a regular file"));
    }
}

fn server(cfg: &SmscdConfig, f: &mut Findings) {
    let s = &cfg.server;
    if s.plain_listener {
        port(f, "server.port", s.port);
    } else if s.tls.is_none() {
        f.error("server.plain_listener", "false with no server.tls: smscd would have no SMPP listener");
    }
    if s.submit_timeout_ms < MIN_SUBMIT_TIMEOUT_MS {
        f.error("server.submit_timeout_ms", format!("must be at least {MIN_SUBMIT_TIMEOUT_MS}"));
    }
    at_most(f, "server.submit_timeout_ms", s.submit_timeout_ms, limits::HOUR_SECS * 1000, " ms (1 hour)");
    if s.bind_address.parse::<IpAddr>().is_err() {
        f.error("server.bind_address", format!("`{}` is not an IP address", s.bind_address));
    }
    if cfg.admin.bind_address.parse::<IpAddr>().is_err() {
        f.error("admin.bind_address", format!("`{}` is not an IP address", cfg.admin.bind_address));
    }
    if s.max_connections == 0 {
        f.error("server.max_connections", "must be at least 1");
    }
    if s.bind_timeout_secs == 0 {
        f.error("server.bind_timeout_secs", "must be at least 1");
    }
    at_most(f, "server.max_connections", s.max_connections, limits::MAX_CONNECTIONS, "");
    at_most(f, "server.bind_timeout_secs", s.bind_timeout_secs, limits::HOUR_SECS, " s (1 hour)");
    if s.enquire_link_secs == 0 {
        f.error("server.enquire_link_secs", "must be at least 1");
    }
    at_most(f, "server.enquire_link_secs", s.enquire_link_secs, limits::DAY_SECS, " s (1 day)");
    at_most(f, "shutdown.drain_secs", cfg.shutdown.drain_secs, limits::DAY_SECS, " s (1 day)");
    if s.max_connections_per_address == 0 {
        f.error("server.max_connections_per_address", "must be at least 1");
    }
    at_most(
        f,
        "server.max_connections_per_address",
        s.max_connections_per_address,
        limits::MAX_CONNECTIONS,
        "",
    );
    if s.failed_binds_per_address == 0 {
        f.error("server.failed_binds_per_address", "must be at least 1");
    }
    if s.failed_bind_window_secs == 0 {
        f.error("server.failed_bind_window_secs", "must be at least 1");
    }
    at_most(f, "server.failed_bind_window_secs", s.failed_bind_window_secs, limits::DAY_SECS, " s (1 day)");
    port(f, "admin.port", cfg.admin.port);
    if s.plain_listener && cfg.admin.port == s.port {
        f.error("admin.port", format!("{} is also server.port", s.port));
    }
    if let Some(tls) = &s.tls {
        port(f, "server.tls.port", tls.port);
        if s.plain_listener && tls.port == s.port {
            f.error("server.tls.port", format!("{} is also server.port", s.port));
        }
        if tls.port == cfg.admin.port {
            f.error("server.tls.port", format!("{} is also admin.port", tls.port));
        }
        file_exists(f, "server.tls.cert_file", &tls.cert_file);
        file_exists(f, "server.tls.key_file", &tls.key_file);
    }
}

fn binds(cfg: &SmscdConfig, f: &mut Findings) {
    let mut names = HashSet::new();
    let mut env_names = HashSet::new();
    for (i, b) in cfg.binds.iter().enumerate() {
        let k = |field: &str| format!("binds[{i}].{field}");
        if b.name.is_empty() {
            f.error(k("name"), "must not be empty");
        } else if !names.insert(b.name.as_str()) {
            f.error(k("name"), format!("duplicate bind name `{}`", b.name));
        } else if !env_names.insert(super::env_binds::env_name(&b.name)) {
            f.error(
                k("name"),
                format!("`{}` clashes with another bind in SMPP_BIND_* variable names", b.name),
            );
        }
        if b.name.contains([',', ' ', ':']) {
            f.error(k("name"), format!("`{}`: a bind name may not hold `,`, `:` or spaces", b.name));
        }
        if b.host.trim().is_empty() {
            f.error(k("host"), "must not be empty");
        }
        port(f, &k("port"), b.port);
        if b.system_id.is_empty() {
            f.error(k("system_id"), "must not be empty");
        }
        if b.system_id.len() > MAX_SYSTEM_ID {
            f.error(k("system_id"), format!("longer than the {MAX_SYSTEM_ID} octets SMPP allows"));
        }
        if b.password.len() > MAX_PASSWORD {
            f.error(k("password"), format!("longer than the {MAX_PASSWORD} octets SMPP allows"));
        }
        if b.system_type.len() > MAX_SYSTEM_TYPE {
            f.error(k("system_type"), format!("longer than the {MAX_SYSTEM_TYPE} octets SMPP allows"));
        }
        if b.max_msg_per_sec == Some(0) {
            f.error(k("max_msg_per_sec"), "must be at least 1 (leave it out for no limit)");
        }
        if b.window == 0 {
            f.error(k("window"), "must be at least 1");
        }
        at_most(f, &k("window"), b.window, limits::MAX_WINDOW, "");
        if b.binds == 0 {
            f.error(k("binds"), "must be at least 1");
        }
        at_most(f, &k("binds"), b.binds, limits::MAX_UPSTREAM_BINDS, "");
        match b.max_binds {
            Some(0) => f.error(k("max_binds"), "must be at least 1 (leave it out for no limit)"),
            Some(m) if (m as usize) < b.binds => f.error(
                k("binds"),
                format!("{} sessions exceed max_binds ({m}): this replica alone would hold more binds than the carrier allows", b.binds),
            ),
            Some(m) => at_most(f, &k("max_binds"), m as usize, limits::MAX_UPSTREAM_BINDS, ""),
            None => {}
        }
        if b.enquire_link_secs == 0 {
            f.error(k("enquire_link_secs"), "must be at least 1");
        }
        at_most(f, &k("enquire_link_secs"), b.enquire_link_secs, limits::DAY_SECS, " s (1 day)");
        at_most(f, &k("reconnect.max_ms"), b.reconnect.max_ms, limits::HOUR_SECS * 1000, " ms (1 hour)");
        if b.reconnect.min_ms == 0 {
            f.error(k("reconnect.min_ms"), "must be at least 1");
        }
        if b.reconnect.min_ms > b.reconnect.max_ms {
            f.error(
                k("reconnect"),
                format!("min_ms {} is above max_ms {}", b.reconnect.min_ms, b.reconnect.max_ms),
            );
        }
        if let Some(ca) = b.tls.as_ref().and_then(|t| t.ca_file.as_deref()) {
            file_exists(f, &k("tls.ca_file"), ca);
        }
    }
}

fn accounts(cfg: &SmscdConfig, f: &mut Findings) {
    if cfg.accounts.is_empty() {
        f.warn("accounts", "no accounts: every ESME bind will be refused");
    }
    let mut ids = HashSet::new();
    for (i, a) in cfg.accounts.iter().enumerate() {
        let k = |field: &str| format!("accounts[{i}].{field}");
        if a.system_id.is_empty() {
            f.error(k("system_id"), "must not be empty");
        } else if !ids.insert(a.system_id.as_str()) {
            f.error(k("system_id"), format!("duplicate account `{}`", a.system_id));
        }
        if a.system_id.len() > MAX_SYSTEM_ID {
            f.error(k("system_id"), format!("longer than the {MAX_SYSTEM_ID} octets SMPP allows"));
        }
        if a.password.len() > MAX_PASSWORD {
            f.error(
                k("password"),
                format!("longer than the {MAX_PASSWORD} octets SMPP allows, so no bind could match it"),
            );
        }
        for (j, c) in a.allowed_cidrs.iter().enumerate() {
            if let Err(e) = parse_cidr(c) {
                f.error(
                    format!("accounts[{i}].allowed_cidrs[{j}]"),
                    format!("account `{}`: {e}", a.system_id),
                );
            }
        }
        if a.window == 0 {
            f.error(k("window"), "must be at least 1");
        }
        at_most(f, &k("window"), a.window, limits::MAX_WINDOW, "");
        if a.max_msg_per_sec == Some(0) {
            f.error(k("max_msg_per_sec"), "must be at least 1 (leave it out for no limit)");
        }
        if a.max_binds == Some(0) {
            f.error(k("max_binds"), "must be at least 1 (leave it out for no limit)");
        }
    }
}

fn routing(cfg: &SmscdConfig, f: &mut Findings) {
    let binds: HashSet<&str> = cfg.binds.iter().map(|b| b.name.as_str()).collect();
    let mut used: HashSet<&str> = HashSet::new();
    let mut chain = |f: &mut Findings, key: String, chain: &[String]| {
        for (j, target) in chain.iter().enumerate() {
            match target.strip_prefix("bind:") {
                Some(name) if binds.contains(name) => {
                    if let Some(n) = binds.get(name) {
                        used.insert(n);
                    }
                }
                Some(name) => f.error(format!("{key}[{j}]"), format!("no bind named `{name}`")),
                None if target == "sim" => {}
                None => {
                    f.error(format!("{key}[{j}]"), format!("`{target}`: a target is `bind:<name>` or `sim`"))
                }
            }
        }
    };
    chain(f, "routing.default_chain".into(), &cfg.routing.default_chain);
    if cfg.routing.default_chain.is_empty() && !cfg.accounts.is_empty() {
        f.warn("routing.default_chain", "empty: a submit that matches no rule has nowhere to go");
    }
    let accounts: HashSet<&str> = cfg.accounts.iter().map(|a| a.system_id.as_str()).collect();
    for (i, rule) in cfg.routing.rules.iter().enumerate() {
        if rule.chain.is_empty() {
            f.error(format!("routing.rules[{i}].chain"), "must name at least one target");
        }
        chain(f, format!("routing.rules[{i}].chain"), &rule.chain);
        if let Some(acc) = &rule.matches.account {
            if !accounts.contains(acc.as_str()) {
                f.warn(
                    format!("routing.rules[{i}].match.account"),
                    format!("no account `{acc}`: the rule never matches"),
                );
            }
        }
    }
    // An MO routed to an account nobody can bind as would be acknowledged upstream and never
    // delivered: refused.
    for (i, rule) in cfg.routing.mo.iter().enumerate() {
        if !accounts.contains(rule.account.as_str()) {
            f.error(
                format!("routing.mo[{i}].account"),
                format!("no account `{}` is declared in accounts", rule.account),
            );
        }
        if let Some(up) = &rule.upstream {
            if up != "sim" && !binds.contains(up.as_str()) {
                f.warn(
                    format!("routing.mo[{i}].upstream"),
                    format!("no bind named `{up}`: the rule never matches"),
                );
            }
        }
    }
    for (i, b) in cfg.binds.iter().enumerate() {
        if !used.contains(b.name.as_str()) {
            f.warn(format!("binds[{i}]"), format!("bind `{}` is in no routing chain", b.name));
        }
    }
}

fn sim(cfg: &SmscdConfig, f: &mut Findings) {
    at_most(f, "sim.receipt_delay_ms", cfg.sim.receipt_delay_ms, limits::DAY_SECS * 1000, " ms (1 day)");
    let mut sum = 0.0;
    for (word, weight) in &cfg.sim.outcomes {
        let key = format!("sim.outcomes.{word}");
        if !STAT_WORDS.contains(&word.as_str()) {
            f.error(&key, format!("`{word}` is not a receipt stat ({})", STAT_WORDS.join(", ")));
        }
        if !weight.is_finite() || *weight < 0.0 {
            f.error(&key, format!("weight {weight} must be a number >= 0"));
        } else {
            sum += weight;
        }
    }
    if sum <= 0.0 {
        f.error("sim.outcomes", "the weights must add up to more than 0");
    }
}

fn store(cfg: &SmscdConfig, f: &mut Findings) {
    let (StoreConfig::Memory { ttl } | StoreConfig::Redis { ttl, .. }) = &cfg.store;
    if ttl.as_secs() > limits::MAX_TTL_SECS {
        let limit = limits::MAX_TTL_SECS;
        f.error("store.ttl", format!("{} s is above the limit of {limit} s (365 days)", ttl.as_secs()));
    }
    match &cfg.store {
        StoreConfig::Memory { ttl } if ttl.is_zero() => f.error("store.ttl", "must be above 0"),
        StoreConfig::Memory { .. } => {}
        StoreConfig::Redis { url, sentinel, cluster, wait, key_prefix, ttl } => {
            let given = usize::from(!url.is_empty())
                + usize::from(sentinel.is_some())
                + usize::from(cluster.is_some());
            if given != 1 {
                f.error(
                    "store",
                    "give exactly one of `url` (one Redis), `sentinel` (a master set behind Redis Sentinel) \
                     or `cluster` (a Redis Cluster)",
                );
            }
            let known = ["redis://", "rediss://", "unix://"].iter().any(|s| url.starts_with(s));
            if !url.is_empty() && !known {
                f.error("store.url", "expected a redis://, rediss:// or unix:// URL");
            }
            if let Some(s) = sentinel {
                if s.master_name.trim().is_empty() {
                    f.error(
                        "store.sentinel.master_name",
                        "must not be empty (the name in `sentinel monitor <name> ...`)",
                    );
                }
                redis_nodes(f, "store.sentinel.sentinels", &s.sentinels);
            }
            if let Some(c) = cluster {
                redis_nodes(f, "store.cluster.nodes", &c.nodes);
                // The queue keys carry the account as a hash tag (`{account}`): a brace in the
                // prefix would become the tag instead and put every account in one slot.
                if key_prefix.contains(['{', '}']) {
                    f.error(
                        "store.key_prefix",
                        "must not contain `{` or `}` with `cluster` (hash tags are smscd's)",
                    );
                }
            }
            if let Some(w) = wait {
                if w.replicas == 0 {
                    f.error("store.wait.replicas", "must be at least 1 (leave `wait` out not to wait)");
                }
                if w.timeout_ms == 0 {
                    f.error("store.wait.timeout_ms", "must be above 0 (0 would make WAIT block forever)");
                }
                at_most(f, "store.wait.timeout_ms", w.timeout_ms, MAX_WAIT_TIMEOUT_MS, " ms");
            }
            if key_prefix.is_empty() {
                f.error("store.key_prefix", "must not be empty");
            }
            if ttl.is_zero() {
                f.error("store.ttl", "must be above 0");
            }
        }
    }
}

/// A WAIT longer than this would hold a submit past any sensible ESME response timer.
const MAX_WAIT_TIMEOUT_MS: u64 = 10_000;

/// `host:port` entries (the port may be left out): at least one, none empty, ports numbers.
fn redis_nodes(f: &mut Findings, key: &str, nodes: &[String]) {
    if nodes.is_empty() {
        f.error(key, "name at least one `host:port`");
    }
    for (i, n) in nodes.iter().enumerate() {
        if let Err(e) = smsc_api::smscd_config::redis_node(n, 6379) {
            f.error(format!("{key}[{i}]"), e);
        }
    }
}

fn queues(cfg: &SmscdConfig, f: &mut Findings) {
    let q = &cfg.queues;
    if q.max_per_account == 0 {
        f.error("queues.max_per_account", "must be at least 1");
    }
    at_most(f, "queues.max_per_account", q.max_per_account, limits::MAX_QUEUED, "");
    if q.max_attempts == 0 {
        f.error("queues.max_attempts", "must be at least 1");
    }
    at_most(f, "queues.max_attempts", q.max_attempts, limits::MAX_ATTEMPTS, "");
    at_most(f, "queues.dead_letters_per_account", q.dead_letters_per_account, limits::MAX_QUEUED, "");
}

fn store_and_forward(cfg: &SmscdConfig, f: &mut Findings) {
    let s = &cfg.store_and_forward;
    if s.max_per_account == 0 {
        f.error("store_and_forward.max_per_account", "must be at least 1");
    }
    at_most(f, "store_and_forward.max_per_account", s.max_per_account, limits::MAX_QUEUED, "");
    let secs = |d: std::time::Duration| d.as_secs();
    at_most(f, "store_and_forward.max_validity", secs(s.max_validity), limits::MAX_TTL_SECS, " s (365 days)");
    at_most(f, "store_and_forward.retry_max", secs(s.retry_max), limits::DAY_SECS, " s (1 day)");
    at_most(f, "store_and_forward.lease", secs(s.lease), limits::HOUR_SECS, " s (1 hour)");
    at_most(f, "store_and_forward.keep_final", secs(s.keep_final), limits::MAX_TTL_SECS, " s (365 days)");
    at_most(f, "store_and_forward.keep_relayed", secs(s.keep_relayed), limits::MAX_TTL_SECS, " s (365 days)");
    if s.max_validity.is_zero() {
        f.error("store_and_forward.max_validity", "must be above 0");
    }
    if s.retry_min.is_zero() {
        f.error("store_and_forward.retry_min", "must be above 0");
    }
    if s.retry_max < s.retry_min {
        f.error("store_and_forward.retry_max", "must be at least store_and_forward.retry_min");
    }
    // A lease that ends while its submit may still be answered lets a second replica send it too.
    if s.lease.as_millis() <= u128::from(cfg.server.submit_timeout_ms) {
        f.error(
            "store_and_forward.lease",
            format!("must be above server.submit_timeout_ms ({} ms)", cfg.server.submit_timeout_ms),
        );
    }
    let used =
        cfg.routing.store_and_forward || cfg.routing.rules.iter().any(|r| r.store_and_forward == Some(true));
    if used && matches!(cfg.store, StoreConfig::Memory { .. }) {
        f.warn(
            "routing.store_and_forward",
            "held submits live in this process with the memory store: a restart loses them. Use \
             `store: { type: redis, ... }` to keep them",
        );
    }
}

fn leader(cfg: &SmscdConfig, f: &mut Findings) {
    let Some(le) = &cfg.leader_election else { return };
    // A standby that takes over finds none of the memory store's correlations or queues: every
    // receipt owed at the switch would be lost. Active/standby needs the shared store.
    if matches!(cfg.store, StoreConfig::Memory { .. }) {
        f.error(
            "leader_election",
            "needs `store: { type: redis, ... }`: with the memory store a replica taking over has none \
             of the receipts owed",
        );
    }
    let lease = "leader_election.lease_duration_secs";
    at_most(f, lease, le.lease_duration_secs, limits::HOUR_SECS, " s (1 hour)");
    if le.lease_name.is_empty() {
        f.error("leader_election.lease_name", "must not be empty");
    }
    if le.retry_period_secs == 0 {
        f.error("leader_election.retry_period_secs", "must be at least 1");
    }
    if le.renew_deadline_secs >= le.lease_duration_secs {
        f.error(
            "leader_election.renew_deadline_secs",
            format!(
                "{} must be below lease_duration_secs {}",
                le.renew_deadline_secs, le.lease_duration_secs
            ),
        );
    }
    if le.retry_period_secs >= le.renew_deadline_secs {
        f.error(
            "leader_election.retry_period_secs",
            format!("{} must be below renew_deadline_secs {}", le.retry_period_secs, le.renew_deadline_secs),
        );
    }
    // A leader that lost the Lease stops acting at the renew deadline; a standby may bind from
    // lease_duration on: closing our binds must fit in between, or two replicas hold them.
    let gap = le.lease_duration_secs.saturating_sub(le.renew_deadline_secs);
    match le.step_down_secs {
        Some(0) => f.error("leader_election.step_down_secs", "must be at least 1"),
        Some(s) if s >= gap => f.error(
            "leader_election.step_down_secs",
            format!(
                "{s} must be below lease_duration_secs - renew_deadline_secs ({} - {} = {gap}): the binds \
                 must be closed before a standby may take over",
                le.lease_duration_secs, le.renew_deadline_secs
            ),
        ),
        _ => {}
    }
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a single address (a /32 or /128). Host bits set
/// under the mask are refused, as they usually mean a typo.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.trim().parse().map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.trim().parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("`{s}`: prefix length must be 0-{max}")),
        },
    };
    let host_bits = match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) & (u128::from(u32::MAX) >> len.min(32)),
        IpAddr::V6(v6) => u128::from(v6) & u128::MAX.checked_shr(u32::from(len)).unwrap_or(0),
    };
    if len < max && host_bits != 0 {
        return Err(format!("`{s}` has bits set below its /{len} prefix"));
    }
    Ok((ip, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("192.0.2.7").is_ok());
        assert!(parse_cidr("2001:db8::/32").is_ok());
        assert!(parse_cidr("0.0.0.0/0").is_ok());
        assert!(parse_cidr("::/0").is_ok());
        assert!(parse_cidr("10.0.0.1/8").is_err());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0/8").is_err());
        assert!(parse_cidr("example.net").is_err());
    }
}
