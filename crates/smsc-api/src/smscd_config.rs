//! The smscd config file schema (YAML, snake_case).
//!
//! The reference operations guide's file loads unchanged:
//! ```yaml
//! server: { bind_address: "0.0.0.0", port: 2775 }
//! binds:
//!   - { name: alpha, host: smsc-a.example.net, port: 2775, system_id: x, password: y,
//!       bind_type: transceiver, max_msg_per_sec: 50 }
//! routing: { default_chain: ["bind:alpha"] }
//! ```
//! Everything else is an optional addition with a default. Unknown keys are refused, so a typo
//! does not silently fall back to a default. Loading (`${VAR}` substitution, `SMPP_BIND_*`
//! overrides, validation with file/line/key errors) lives in smscd's `config` module.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

mod http;
pub use http::{HttpAccountConfig, HttpConfig, HttpTlsConfig, WebhookConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SmscdConfig {
    #[serde(default)]
    pub server: ServerConfig,
    /// Upstream binds (we are the ESME).
    #[serde(default)]
    pub binds: Vec<BindConfig>,
    /// ESMEs allowed to bind to us. None: every bind is refused.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    #[serde(default)]
    pub routing: RoutingConfig,
    /// The built-in upstream simulator, the chain target `sim`.
    #[serde(default)]
    pub sim: SimConfig,
    #[serde(default)]
    pub store: StoreConfig,
    /// Bounds of the per-account delivery queues (receipts and MO) and their dead letters.
    #[serde(default)]
    pub queues: QueuesConfig,
    /// The policy of submits held for later (store-and-forward): bounds, validity, retries.
    /// Which routes use it: `routing.store_and_forward` and each rule's `store_and_forward`.
    #[serde(default)]
    pub store_and_forward: StoreAndForwardConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Active/standby leadership on a Lease; absent: every replica is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_election: Option<LeaderElectionConfig>,
    /// The HTTP API (submit over HTTP, webhooks); off by default.
    #[serde(default, skip_serializing_if = "HttpConfig::is_default")]
    pub http: HttpConfig,
    /// Python handlers (`@smpp.on_bind`, `@smpp.on_pdu`); absent: no interpreter is started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handlers: Option<HandlersConfig>,
}

/// Scripted handlers: a Python file registering `@smpp.on_bind` / `@smpp.on_pdu(...)` hooks,
/// reloaded when it changes (see smscd's `handlers` module and docs/handlers.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlersConfig {
    /// The script; a relative path is taken from the config file's directory.
    pub script: String,
    /// How long one handler call may take (a sync handler running longer is interrupted).
    #[serde(default = "default_handler_timeout_ms")]
    pub timeout_ms: u64,
    /// How long importing the script may take (a script looping at import is interrupted).
    #[serde(default = "default_handler_import_timeout_ms")]
    pub import_timeout_ms: u64,
    /// What a failed call (exception, wrong return type, timeout) does.
    #[serde(default)]
    pub on_error: OnHandlerError,
    /// The window of an ESME that `on_bind` accepted without a configured account, and the most
    /// `bind.accept(window=...)` may give.
    #[serde(default = "default_account_window")]
    pub window: usize,
    /// How often the script is read for changes (a ConfigMap's `..data` swap included).
    #[serde(default = "default_handler_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

/// What a handler call that failed does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnHandlerError {
    /// The bind is refused (ESME_RBINDFAIL), the PDU answered ESME_RSYSERR.
    #[default]
    Reject,
    /// As if the handler had returned None: accounts decide the bind, routing the PDU.
    Continue,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_bind_address")]
    pub bind_address: String,
    #[serde(default = "default_smpp_port")]
    pub port: u16,
    /// Listen for plain (unencrypted) SMPP on `port`. False makes TLS mandatory: `tls` must be
    /// set then.
    #[serde(default = "default_true")]
    pub plain_listener: bool,
    /// SMPP over TLS beside the plain listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
    /// The whole time a relayed submit_sm may take before its submit_sm_resp (window and rate
    /// waits, the upstream's answer, failover along the chain, storing the correlation), in
    /// milliseconds. Keep it below the ESMEs' response timers.
    #[serde(default = "default_submit_timeout_ms")]
    pub submit_timeout_ms: u64,
    /// Most concurrent inbound connections, bound or not.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that has not bound within this many seconds is closed.
    #[serde(default = "default_bind_timeout_secs")]
    pub bind_timeout_secs: u64,
    /// enquire_link interval towards ESMEs when idle.
    #[serde(default = "default_enquire_link_secs")]
    pub enquire_link_secs: u64,
    /// Most concurrent inbound connections from one address (an IPv4 address or an IPv6 /64).
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Failed binds (unknown system_id, wrong password, address not allowed) one address may
    /// make within `failed_bind_window_secs`; after that its binds are refused unchecked until
    /// the window ends.
    #[serde(default = "default_failed_binds_per_address")]
    pub failed_binds_per_address: u32,
    #[serde(default = "default_failed_bind_window_secs")]
    pub failed_bind_window_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind_address: default_bind_address(),
            port: default_smpp_port(),
            plain_listener: true,
            tls: None,
            submit_timeout_ms: default_submit_timeout_ms(),
            max_connections: default_max_connections(),
            bind_timeout_secs: default_bind_timeout_secs(),
            enquire_link_secs: default_enquire_link_secs(),
            max_connections_per_address: default_max_connections_per_address(),
            failed_binds_per_address: default_failed_binds_per_address(),
            failed_bind_window_secs: default_failed_bind_window_secs(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    #[serde(default = "default_tls_port")]
    pub port: u16,
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum BindType {
    Transmitter,
    Receiver,
    Transceiver,
}

impl BindType {
    pub fn can_submit(self) -> bool {
        matches!(self, BindType::Transmitter | BindType::Transceiver)
    }
    pub fn can_receive(self) -> bool {
        matches!(self, BindType::Receiver | BindType::Transceiver)
    }
}

/// One upstream SMSC we bind to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindConfig {
    pub name: String,
    pub host: String,
    #[serde(default = "default_smpp_port")]
    pub port: u16,
    pub system_id: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub system_type: String,
    #[serde(default = "default_bind_type")]
    pub bind_type: BindType,
    /// Submit rate limit towards this upstream, across all of this bind's sessions on one
    /// replica (never more than this many in any one second); absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msg_per_sec: Option<u32>,
    /// Outstanding submits per session.
    #[serde(default = "default_upstream_window")]
    pub window: usize,
    /// Sessions opened to this upstream (per replica).
    #[serde(default = "default_one")]
    pub binds: usize,
    /// Binds the carrier allows for this system_id at once, across every replica. With it, each
    /// session takes one of `max_binds` permits from the store before it binds and holds it while
    /// bound (smscd's permits module), so rollouts, restarts and reloads never exceed it; absent:
    /// no permits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_binds: Option<u32>,
    #[serde(default = "default_enquire_link_secs")]
    pub enquire_link_secs: u64,
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsConfig>,
    /// How this upstream's receipt ids relate to the ids of its submit_sm_resp.
    #[serde(default)]
    pub message_id_format: MessageIdFormat,
}

/// How an upstream writes the message id of a receipt, compared with the id its submit_sm_resp
/// gave. Leading zeros, case and padding never matter. Declared, never guessed: `1234` is both
/// decimal and hex, so guessing matches the wrong message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageIdFormat {
    /// The same id.
    #[default]
    Same,
    /// submit_sm_resp in hex, receipts in decimal.
    HexToDecimal,
    /// submit_sm_resp in decimal, receipts in hex.
    DecimalToHex,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    #[serde(default = "default_reconnect_min_ms")]
    pub min_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub max_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig { min_ms: default_reconnect_min_ms(), max_ms: default_reconnect_max_ms() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file of CAs to trust; absent: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Name to verify in the certificate; absent: `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// An ESME allowed to bind to us.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub system_id: String,
    pub password: String,
    /// Client address allow-list (CIDR or single address); empty: any address.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    /// Bind types this account may use; empty: all three.
    #[serde(default)]
    pub bind_types: Vec<BindType>,
    /// submit_sm per second across all of the account's sessions on this replica; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msg_per_sec: Option<u32>,
    /// Outstanding unanswered requests per session; more get ESME_RMSGQFUL.
    #[serde(default = "default_account_window")]
    pub window: usize,
    /// Concurrent sessions of this account on this replica; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_binds: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Targets tried in order when no rule matches: `bind:<name>` or `sim`.
    #[serde(default)]
    pub default_chain: Vec<String>,
    /// First matching rule wins.
    #[serde(default)]
    pub rules: Vec<RoutingRule>,
    /// Store-and-forward for the default chain and for rules that do not say: a submit no target
    /// can take now is accepted, stored and retried (see `store_and_forward`). Off by default:
    /// it changes what an OK means (the ESME stops retrying) and is only durable on Redis.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub store_and_forward: bool,
    /// Where MO messages (deliver_sm that is not a receipt) from upstreams go: the first rule
    /// that matches names the account. No match: the upstream gets ESME_RINVDSTADR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mo: Vec<MoRule>,
}

/// Every given field must match; an empty rule matches every MO.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoRule {
    /// Prefix of the MO's destination_addr (e.g. the account's short code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_prefix: Option<String>,
    /// Only MO from this upstream bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The account (system_id) whose receivers get it.
    pub account: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    #[serde(rename = "match", default)]
    pub matches: RuleMatch,
    pub chain: Vec<String>,
    /// Store-and-forward for this rule's submits; absent: `routing.store_and_forward`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_and_forward: Option<bool>,
}

/// Every given field must match; an empty match matches everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_prefix: Option<String>,
}

/// The built-in upstream simulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Delay before a requested receipt is generated.
    #[serde(default = "default_receipt_delay_ms")]
    pub receipt_delay_ms: u64,
    /// Receipt outcomes by stat word with their weights, e.g. `{ DELIVRD: 0.9, UNDELIV: 0.1 }`.
    #[serde(default = "default_outcomes")]
    pub outcomes: BTreeMap<String, f64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { receipt_delay_ms: default_receipt_delay_ms(), outcomes: default_outcomes() }
    }
}

/// Where correlation records and queued receipts live.
// Built once per config load: the Redis variant's size costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// In-process; right for one replica.
    Memory {
        #[serde(default = "default_ttl", with = "humantime_serde")]
        ttl: Duration,
    },
    /// Shared across replicas. Exactly one of `url` (one instance), `sentinel` (a master set
    /// found through Redis Sentinel) or `cluster` (a Redis Cluster) says where it is.
    Redis {
        /// `redis://`, `rediss://` or `unix://` URL of one instance.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sentinel: Option<RedisSentinelConfig>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cluster: Option<RedisClusterConfig>,
        /// Wait for replicas to acknowledge correlation writes and receipt enqueues (`WAIT`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait: Option<RedisWaitConfig>,
        #[serde(default = "default_key_prefix")]
        key_prefix: String,
        #[serde(default = "default_ttl", with = "humantime_serde")]
        ttl: Duration,
    },
}

/// A Redis master set found through Sentinel: smscd asks the sentinels for the master's address
/// and asks again (and reconnects) when it fails over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSentinelConfig {
    /// The master set's name (`sentinel monitor <name> ...`; `mymaster` in most Helm charts).
    pub master_name: String,
    /// Sentinels as `host:port` (26379 when the port is left out); at least one.
    pub sentinels: Vec<String>,
    /// ACL user on the master (none: the default user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The master's `requirepass` / ACL password (none: no AUTH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The sentinels' own password (`requirepass` in sentinel.conf; none: no AUTH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel_password: Option<String>,
    /// TLS to the sentinels and the master (system roots, `SSL_CERT_FILE` honoured).
    #[serde(default)]
    pub tls: bool,
    /// Database number on the master.
    #[serde(default)]
    pub db: i64,
}

/// A Redis Cluster: smscd reads the slot map from any of `nodes` and follows MOVED/ASK and
/// failovers by itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisClusterConfig {
    /// Seed nodes as `host:port` (6379 when the port is left out); at least one.
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default)]
    pub tls: bool,
}

/// `WAIT <replicas> <timeout_ms>` after every correlation write and receipt enqueue: the
/// submit (or the upstream's deliver_sm) is acknowledged only once that many replicas have the
/// write, so it survives the master's death. A write fewer replicas took is retried within
/// the submit's budget, then refused (transient).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisWaitConfig {
    pub replicas: u32,
    #[serde(default = "default_wait_timeout_ms")]
    pub timeout_ms: u64,
}

/// A `host:port` entry of `store.sentinel.sentinels` / `store.cluster.nodes` (`port` when left
/// out; `[v6]:port` for IPv6): host and port, or what is wrong with it.
pub fn redis_node(s: &str, port: u16) -> Result<(String, u16), String> {
    let s = s.trim();
    if s.contains("://") || s.contains('@') {
        return Err(format!(
            "`{s}`: expected `host:port` (no scheme or user: passwords have their own keys)"
        ));
    }
    let (host, p) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, tail)) => match tail.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("`{s}`: expected `[v6 address]:port`")),
            },
            None => return Err(format!("`{s}`: unclosed `[`")),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return Err(format!("`{s}`: write an IPv6 address as `[addr]:port`")),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(format!("`{s}`: expected `host:port` (no scheme, user or path)"));
    }
    let port = match p {
        None => port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("`{s}`: the port must be a number from 1 to 65535")),
        },
    };
    Ok((host.to_owned(), port))
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Memory { ttl: default_ttl() }
    }
}

/// Bounds of the per-account delivery queues, applied by both stores (hot-reloaded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuesConfig {
    /// Most receipts and MO queued for one account (queued + handed out). At the cap a new
    /// deliver_sm is refused upstream with ESME_RMSGQFUL (the upstream retries later).
    #[serde(default = "default_max_per_account")]
    pub max_per_account: usize,
    /// deliver_sm attempts (error statuses or no answer) before an item is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Dead letters kept per account; the oldest go beyond it.
    #[serde(default = "default_dead_letters")]
    pub dead_letters_per_account: usize,
}

impl Default for QueuesConfig {
    fn default() -> Self {
        QueuesConfig {
            max_per_account: default_max_per_account(),
            max_attempts: default_max_attempts(),
            dead_letters_per_account: default_dead_letters(),
        }
    }
}

/// Store-and-forward policy (applied to routes that opt in; hot-reloaded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreAndForwardConfig {
    /// Most submits held for one account (queued or scheduled). At the cap a submit that would
    /// be held is refused with ESME_RMSGQFUL.
    #[serde(default = "default_saf_max_per_account")]
    pub max_per_account: usize,
    /// Longest a held submit is kept: its validity_period is cut to this, and a submit without
    /// one gets it. Then it expires (an EXPIRED receipt when one was asked for).
    #[serde(default = "default_saf_max_validity", with = "humantime_serde")]
    pub max_validity: Duration,
    /// First retry delay after no target of the chain took a held submit; doubles per attempt.
    #[serde(default = "default_saf_retry_min", with = "humantime_serde")]
    pub retry_min: Duration,
    /// Longest retry delay.
    #[serde(default = "default_saf_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// How long a replica owns the held submits it took to send; a replica that dies holding
    /// them gives them up to another one after this. Keep it above `server.submit_timeout_ms`.
    #[serde(default = "default_saf_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// How long the final state of a held submit (delivered, expired, cancelled) stays visible
    /// to query_sm.
    #[serde(default = "default_saf_keep_final", with = "humantime_serde")]
    pub keep_final: Duration,
    /// How long a submit an upstream took (relayed at once, on any route, or held then sent)
    /// stays visible to query_sm as ENROUTE, until its final receipt records its final state.
    /// One store write per relayed submit (and per final receipt); `0s` turns it off.
    #[serde(default = "default_saf_keep_relayed", with = "humantime_serde")]
    pub keep_relayed: Duration,
}

impl Default for StoreAndForwardConfig {
    fn default() -> Self {
        StoreAndForwardConfig {
            max_per_account: default_saf_max_per_account(),
            max_validity: default_saf_max_validity(),
            retry_min: default_saf_retry_min(),
            retry_max: default_saf_retry_max(),
            lease: default_saf_lease(),
            keep_final: default_saf_keep_final(),
            keep_relayed: default_saf_keep_relayed(),
        }
    }
}

fn default_saf_max_per_account() -> usize {
    100_000
}
fn default_saf_max_validity() -> Duration {
    Duration::from_secs(48 * 3600)
}
fn default_saf_retry_min() -> Duration {
    Duration::from_secs(1)
}
fn default_saf_retry_max() -> Duration {
    Duration::from_secs(60)
}
fn default_saf_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_saf_keep_final() -> Duration {
    Duration::from_secs(3600)
}
fn default_saf_keep_relayed() -> Duration {
    Duration::from_secs(3600)
}

fn default_max_per_account() -> usize {
    100_000
}
fn default_max_attempts() -> u32 {
    10
}
fn default_dead_letters() -> usize {
    10_000
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Loopback by default: /metrics is not for the outside world. In a Pod, set `0.0.0.0` so the
    /// kubelet's probes and the metrics scraper reach it (the operator does).
    #[serde(default = "default_admin_bind_address")]
    pub bind_address: String,
    #[serde(default = "default_admin_port")]
    pub port: u16,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { bind_address: default_admin_bind_address(), port: default_admin_port() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, the most time spent finishing in-flight work before exiting.
    #[serde(default = "default_drain_secs")]
    pub drain_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { drain_secs: default_drain_secs() }
    }
}

/// client-go style leader election on a coordination.k8s.io Lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionConfig {
    pub lease_name: String,
    /// Absent: `POD_NAMESPACE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Absent: `POD_NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default = "default_lease_duration_secs")]
    pub lease_duration_secs: u64,
    #[serde(default = "default_renew_deadline_secs")]
    pub renew_deadline_secs: u64,
    #[serde(default = "default_retry_period_secs")]
    pub retry_period_secs: u64,
    /// How long a step-down may take to close this replica's binds (graceful unbind, then the
    /// connections are dropped). Must be below `lease_duration_secs - renew_deadline_secs`, the
    /// time between our last chance to act and a standby's first chance to bind. Absent: 3 s,
    /// or 60% of that gap when it is shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_down_secs: Option<u64>,
}

impl LeaderElectionConfig {
    /// The step-down budget: `step_down_secs`, or by default 3 s capped at 60% of the gap
    /// between the renew deadline and the lease duration.
    pub fn step_down(&self) -> Duration {
        match self.step_down_secs {
            Some(s) => Duration::from_secs(s),
            None => {
                let gap =
                    Duration::from_secs(self.lease_duration_secs.saturating_sub(self.renew_deadline_secs));
                Duration::from_secs(3).min(gap.mul_f64(0.6))
            }
        }
    }
}

fn default_handler_timeout_ms() -> u64 {
    100
}
fn default_handler_reload_interval_ms() -> u64 {
    1000
}
fn default_handler_import_timeout_ms() -> u64 {
    5000
}
fn default_bind_address() -> String {
    "0.0.0.0".into()
}
fn default_admin_bind_address() -> String {
    "127.0.0.1".into()
}
fn default_true() -> bool {
    true
}
fn default_submit_timeout_ms() -> u64 {
    10_000
}
fn default_smpp_port() -> u16 {
    crate::names::SMPP_PORT
}
fn default_tls_port() -> u16 {
    crate::names::SMPP_TLS_PORT
}
fn default_admin_port() -> u16 {
    crate::names::ADMIN_PORT
}
fn default_max_connections() -> usize {
    1000
}
fn default_max_connections_per_address() -> usize {
    100
}
fn default_failed_binds_per_address() -> u32 {
    10
}
fn default_failed_bind_window_secs() -> u64 {
    60
}
fn default_bind_timeout_secs() -> u64 {
    10
}
fn default_enquire_link_secs() -> u64 {
    30
}
fn default_bind_type() -> BindType {
    BindType::Transceiver
}
fn default_upstream_window() -> usize {
    10
}
fn default_account_window() -> usize {
    64
}
fn default_one() -> usize {
    1
}
fn default_reconnect_min_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_receipt_delay_ms() -> u64 {
    100
}
fn default_outcomes() -> BTreeMap<String, f64> {
    BTreeMap::from([("DELIVRD".to_string(), 1.0)])
}
fn default_ttl() -> Duration {
    Duration::from_secs(72 * 3600)
}
fn default_wait_timeout_ms() -> u64 {
    100
}
fn default_key_prefix() -> String {
    "smscd".into()
}
fn default_drain_secs() -> u64 {
    30
}
fn default_lease_duration_secs() -> u64 {
    15
}
fn default_renew_deadline_secs() -> u64 {
    10
}
fn default_retry_period_secs() -> u64 {
    2
}
