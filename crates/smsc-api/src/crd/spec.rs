//! `SmscCluster.spec`.
//!
//! Lists carry `maxItems` and strings `maxLength`: the API server refuses CEL rules whose
//! worst-case cost it cannot bound, and the bounds are what let it bound them.

// clippy reads the repeated `type_ = "..."` of `printcolumn(...)` as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, PodSecurityContext, ResourceRequirements, SecurityContext, Toleration,
    TopologySpreadConstraint,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SmscClusterStatus;

/// An SMS centre: smscd replicas behind an L4 Service, with the scale-out checklist deciding
/// between active/active and active/standby.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "smsc.io",
    version = "v1alpha1",
    kind = "SmscCluster",
    namespaced,
    shortname = "smsc",
    status = "SmscClusterStatus",
    derive = "PartialEq",
    doc = "An SMS centre: smscd replicas, their Service, PodDisruptionBudget, autoscaler and Lease.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(name = "Topology", type_ = "string", json_path = ".status.topology"),
    printcolumn(name = "Active", type_ = "string", json_path = ".status.activePod"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.readyText"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Image", type_ = "string", json_path = ".status.image", priority = 1),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused", priority = 1)
)]
#[x_kube(validation = Rule::new(
    "!has(self.routing) || !has(self.routing.defaultChain) || self.routing.defaultChain.all(c, c == 'sim' || (has(self.upstreams) && self.upstreams.exists(u, u.name == c)))"
).message("spec.routing.defaultChain may name only upstreams declared in spec.upstreams (or 'sim')").field_path(".routing.defaultChain"))]
#[x_kube(validation = Rule::new(
    "!has(self.routing) || !has(self.routing.rules) || self.routing.rules.all(r, r.chain.all(c, c == 'sim' || (has(self.upstreams) && self.upstreams.exists(u, u.name == c))))"
).message("spec.routing.rules[].chain may name only upstreams declared in spec.upstreams (or 'sim')").field_path(".routing.rules"))]
#[x_kube(validation = Rule::new(
    "!has(self.routing) || !has(self.routing.rules) || self.routing.rules.all(r, !has(r.account) || (has(self.smpp) && has(self.smpp.accounts) && self.smpp.accounts.exists(a, a.systemId == r.account)))"
).message("spec.routing.rules[].account must name an account declared in spec.smpp.accounts").field_path(".routing.rules"))]
#[x_kube(validation = Rule::new(
    "!has(self.autoscaling) || !has(self.autoscaling.enabled) || !self.autoscaling.enabled || !has(self.topology) || self.topology != 'ActiveStandby'"
).message("spec.autoscaling.enabled needs active/active: it cannot be combined with spec.topology ActiveStandby").field_path(".autoscaling.enabled"))]
#[x_kube(validation = Rule::new(
    "!has(self.podDisruptionBudget) || !has(self.podDisruptionBudget.minAvailable) || (has(self.podDisruptionBudget.enabled) && !self.podDisruptionBudget.enabled) || !has(self.replicas) || self.replicas <= 1 || self.podDisruptionBudget.minAvailable < self.replicas"
).message("spec.podDisruptionBudget.minAvailable must be less than spec.replicas: a budget that allows no eviction blocks every node drain").field_path(".podDisruptionBudget.minAvailable"))]
#[x_kube(validation = Rule::new(
    "!has(self.autoscaling) || !has(self.autoscaling.enabled) || !self.autoscaling.enabled || !has(self.autoscaling.minReplicas) || self.autoscaling.minReplicas <= 1 || !has(self.podDisruptionBudget) || !has(self.podDisruptionBudget.minAvailable) || (has(self.podDisruptionBudget.enabled) && !self.podDisruptionBudget.enabled) || self.podDisruptionBudget.minAvailable < self.autoscaling.minReplicas"
).message("spec.podDisruptionBudget.minAvailable must be less than spec.autoscaling.minReplicas: at the autoscaler's minimum a budget that allows no eviction blocks every node drain").field_path(".podDisruptionBudget.minAvailable"))]
#[x_kube(validation = Rule::new(
    "!has(self.autoscaling) || !has(self.autoscaling.enabled) || !self.autoscaling.enabled || (has(self.pod) && has(self.pod.resources) && has(self.pod.resources.requests) && 'cpu' in self.pod.resources.requests)"
).message("spec.pod.resources.requests.cpu is required when autoscaling is enabled: the autoscaler scales on CPU utilization, a percentage of the request").field_path(".pod.resources").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new(
    "!has(self.http) || !has(self.http.accounts) || self.http.accounts.all(a, has(self.smpp) && has(self.smpp.accounts) && self.smpp.accounts.exists(s, s.systemId == a.account))"
).message("spec.http.accounts[].account must name an account declared in spec.smpp.accounts").field_path(".http.accounts"))]
#[serde(rename_all = "camelCase")]
pub struct SmscClusterSpec {
    /// smscd replicas. With the autoscaler enabled this is its starting point.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Auto: active/active when every scale-out checklist item holds, else active/standby.
    #[serde(default)]
    pub topology: Topology,
    /// smscd image; absent: the operator's `--smscd-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Stop reconciling: children are left as they are until this is false again.
    #[serde(default)]
    pub paused: bool,
    /// The SMPP listener ESMEs bind to, and the accounts allowed to bind.
    #[serde(default)]
    pub smpp: SmppSpec,
    /// Upstream SMSCs smscd binds to (as an ESME).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub upstreams: Vec<UpstreamSpec>,
    /// Which upstreams a message goes to.
    #[serde(default)]
    pub routing: RoutingSpec,
    /// Where message-id correlation and queued receipts live.
    #[serde(default)]
    pub dlr_store: DlrStoreSpec,
    /// The policy for submits held by store-and-forward (routes opt in with
    /// `routing.storeAndForward` or a rule's `storeAndForward`).
    #[serde(default)]
    pub store_and_forward: StoreAndForwardSpec,
    /// The Service ESMEs connect through.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Scale-out checklist items only the user can vouch for.
    #[serde(default)]
    pub scale_out_checklist: ScaleOutChecklistSpec,
    /// Graceful shutdown timing.
    #[serde(default)]
    pub shutdown: ShutdownSpec,
    /// HorizontalPodAutoscaler on CPU (active/active only; needs `pod.resources.requests.cpu`).
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// PodDisruptionBudget (never created for one replica: it would block every drain; and
    /// `minAvailable` must stay below `replicas` and `autoscaling.minReplicas`, for the same reason).
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
    /// Lease timings of the active/standby election.
    #[serde(default)]
    pub leader_election: LeaderElectionSpec,
    /// Pod template settings.
    #[serde(default)]
    pub pod: PodSpec,
    /// The HTTP API (submit over HTTP, receipts and MO to webhooks); off by default.
    #[serde(default)]
    pub http: super::HttpSpec,
    /// Python handlers (`@smpp.on_bind`, `@smpp.on_pdu`), inline or from a ConfigMap; absent:
    /// none (no interpreter runs). An edit of the script reaches the running Pods without a
    /// restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handlers: Option<super::HandlersSpec>,
}

fn default_replicas() -> i32 {
    2
}

/// Requested topology.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Topology {
    /// Active/active when the checklist allows it, else active/standby.
    #[default]
    Auto,
    /// Every replica binds upstream and serves ESMEs. Refused (condition) while the checklist fails.
    ActiveActive,
    /// All replicas run; only the Lease holder binds upstream and serves ESMEs.
    ActiveStandby,
}

impl Topology {
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Auto => "Auto",
            Topology::ActiveActive => "ActiveActive",
            Topology::ActiveStandby => "ActiveStandby",
        }
    }
}

/// A key of a Secret in the SmscCluster's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// SMPP bind type.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BindType {
    Transmitter,
    Receiver,
    Transceiver,
}

impl From<BindType> for crate::smscd_config::BindType {
    fn from(b: BindType) -> Self {
        match b {
            BindType::Transmitter => crate::smscd_config::BindType::Transmitter,
            BindType::Receiver => crate::smscd_config::BindType::Receiver,
            BindType::Transceiver => crate::smscd_config::BindType::Transceiver,
        }
    }
}

/// The SMPP listener.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.tls) || self.tls.port != self.port").message("spec.smpp.tls.port must differ from spec.smpp.port").field_path(".tls.port"))]
#[x_kube(validation = Rule::new(format!(
    "self.port != {port} && (!has(self.tls) || self.tls.port != {port})", port = crate::names::ADMIN_PORT
)).message(kube::core::Message::Message(format!("spec.smpp ports must not be {}: smscd serves health and metrics there", crate::names::ADMIN_PORT))))]
#[serde(rename_all = "camelCase")]
pub struct SmppSpec {
    /// Plain SMPP port (container and Service).
    #[serde(default = "default_smpp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// SMPP over TLS beside the plain listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SmppTlsSpec>,
    /// ESMEs allowed to bind. None: every bind is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["systemId"]))]
    pub accounts: Vec<AccountSpec>,
}

impl Default for SmppSpec {
    fn default() -> Self {
        SmppSpec { port: default_smpp_port(), tls: None, accounts: Vec::new() }
    }
}

fn default_smpp_port() -> i32 {
    i32::from(crate::names::SMPP_PORT)
}

/// SMPP over TLS.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SmppTlsSpec {
    #[serde(default = "default_smpp_tls_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// A `kubernetes.io/tls` Secret (tls.crt, tls.key) in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

fn default_smpp_tls_port() -> i32 {
    i32::from(crate::names::SMPP_TLS_PORT)
}

/// An ESME allowed to bind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccountSpec {
    /// SMPP system_id (at most 15 characters: a 16-octet C string).
    #[schemars(length(min = 1, max = 15))]
    pub system_id: String,
    /// The account's password (at most 8 characters in SMPP 3.4).
    pub password_secret_ref: SecretKeyRef,
    /// Client addresses allowed to bind (CIDR or single address); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c) || isIP(c))").message("spec.smpp.accounts[].allowedCidrs entries must be CIDRs or IP addresses"))]
    pub allowed_cidrs: Vec<String>,
    /// Bind types allowed; empty: all three.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub bind_types: Vec<BindType>,
    /// submit_sm per second across the account's sessions on one replica; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_msg_per_sec: Option<i32>,
    /// Outstanding unanswered requests per session.
    #[serde(default = "default_account_window")]
    #[schemars(range(min = 1, max = 10000))]
    pub window: i32,
    /// Concurrent sessions of the account on one replica; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_binds: Option<i32>,
}

fn default_account_window() -> i32 {
    64
}

/// An upstream SMSC.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.maxBinds) || self.bindsPerReplica <= self.maxBinds").message("spec.upstreams[].bindsPerReplica must not exceed maxBinds").field_path(".bindsPerReplica"))]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// Name used in routing chains ('sim' is reserved for the built-in simulator).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self != 'sim'").message("spec.upstreams[].name 'sim' is reserved for the built-in simulator"))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    #[serde(default = "default_smpp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Secret holding the system_id and password smscd binds with.
    pub credentials_secret_ref: CredentialsSecretRef,
    /// SMPP system_type sent in the bind; absent: empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 12))]
    pub system_type: Option<String>,
    #[serde(default = "default_upstream_bind_type")]
    pub bind_type: BindType,
    /// Submit rate limit towards this upstream, across all its sessions on one replica (paced:
    /// never more than this many in any one second); absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_msg_per_sec: Option<i32>,
    /// Outstanding submits per session.
    #[serde(default = "default_upstream_window")]
    #[schemars(range(min = 1, max = 10000))]
    pub window: i32,
    /// Sessions each active replica opens to this upstream.
    #[serde(default = "default_binds_per_replica")]
    #[schemars(range(min = 1, max = 64))]
    pub binds_per_replica: i32,
    /// Concurrent binds the upstream allows for this system_id; absent: no limit.
    /// Checklist: active/active needs replicas x bindsPerReplica <= maxBinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_binds: Option<i32>,
    /// Bind over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsSpec>,
    /// How the upstream's receipt ids relate to its submit_sm_resp ids (leading zeros and case
    /// never matter); absent: Same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id_format: Option<MessageIdFormat>,
}

/// How an upstream writes receipt ids compared with its submit_sm_resp ids. Declared, never
/// guessed: `1234` is valid decimal and hex, so guessing matches the wrong message.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageIdFormat {
    /// The same id.
    Same,
    /// submit_sm_resp in hex, receipts in decimal.
    HexToDecimal,
    /// submit_sm_resp in decimal, receipts in hex.
    DecimalToHex,
}

impl From<MessageIdFormat> for crate::smscd_config::MessageIdFormat {
    fn from(f: MessageIdFormat) -> Self {
        match f {
            MessageIdFormat::Same => crate::smscd_config::MessageIdFormat::Same,
            MessageIdFormat::HexToDecimal => crate::smscd_config::MessageIdFormat::HexToDecimal,
            MessageIdFormat::DecimalToHex => crate::smscd_config::MessageIdFormat::DecimalToHex,
        }
    }
}

fn default_upstream_bind_type() -> BindType {
    BindType::Transceiver
}
fn default_upstream_window() -> i32 {
    10
}
fn default_binds_per_replica() -> i32 {
    1
}

/// Keys of a Secret holding an upstream's credentials.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default = "default_system_id_key")]
    #[schemars(length(min = 1, max = 253))]
    pub system_id_key: String,
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
}

fn default_system_id_key() -> String {
    "systemId".into()
}
fn default_password_key() -> String {
    "password".into()
}

/// TLS towards an upstream.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTlsSpec {
    /// PEM CA bundle to trust; absent: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Name to verify in the certificate; absent: the upstream's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub server_name: Option<String>,
}

/// Routing: rules in order, first match wins, else the default chain.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RoutingSpec {
    /// Upstream names tried in order when no rule matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 63)))]
    pub default_chain: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub rules: Vec<RoutingRuleSpec>,
    /// Store-and-forward for the default chain and for rules that do not say: a submit no
    /// upstream can take now is accepted, held and retried until delivered or expired. Needs
    /// `dlrStore.type: Redis` with more than one replica (scale-out checklist).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub store_and_forward: bool,
}

/// A routing rule: every given match field must match.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RoutingRuleSpec {
    /// Submitting account's systemId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 21))]
    pub destination_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 21))]
    pub source_prefix: Option<String>,
    /// Upstream names tried in order.
    #[schemars(length(min = 1, max = 8), inner(length(max = 63)))]
    pub chain: Vec<String>,
    /// Store-and-forward for this rule's submits; unset: `routing.storeAndForward`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_and_forward: Option<bool>,
}

/// Store-and-forward policy: durations like `48h`, `1s`, `500ms`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoreAndForwardSpec {
    /// Longest a submit is held: its validity period is cut to this, and one without gets it.
    #[serde(default = "default_max_validity")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub max_validity: String,
    /// First retry delay; doubles per attempt.
    #[serde(default = "default_retry_min")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub retry_min: String,
    /// Longest retry delay.
    #[serde(default = "default_retry_max")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub retry_max: String,
    /// Most submits held per account; more are refused with ESME_RMSGQFUL.
    #[serde(default = "default_held_per_account")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_per_account: i64,
}

impl Default for StoreAndForwardSpec {
    fn default() -> Self {
        StoreAndForwardSpec {
            max_validity: default_max_validity(),
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
            max_per_account: default_held_per_account(),
        }
    }
}

fn default_max_validity() -> String {
    "48h".into()
}
fn default_retry_min() -> String {
    "1s".into()
}
fn default_retry_max() -> String {
    "60s".into()
}
fn default_held_per_account() -> i64 {
    100_000
}

/// DLR store kind.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DlrStoreType {
    /// In-process: right for one replica only (checklist item).
    #[default]
    Memory,
    /// Shared across replicas.
    Redis,
}

/// Where correlation records and queued receipts live.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.type == 'Redis' ? has(self.redis) : !has(self.redis)").message("spec.dlrStore.redis must be set when spec.dlrStore.type is Redis, and only then").field_path(".redis").reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct DlrStoreSpec {
    #[serde(default, rename = "type")]
    pub type_: DlrStoreType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
    /// How long correlation records and queued receipts are kept (e.g. 72h, 30m).
    #[serde(default = "default_ttl")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h|d))+$"))]
    pub ttl: String,
}

impl Default for DlrStoreSpec {
    fn default() -> Self {
        DlrStoreSpec { type_: DlrStoreType::Memory, redis: None, ttl: default_ttl() }
    }
}

fn default_ttl() -> String {
    "72h".into()
}

/// Redis connection: exactly one of `urlSecretRef` (one Redis), `sentinel` (a master set behind
/// Redis Sentinel) or `cluster` (a Redis Cluster).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("[has(self.urlSecretRef), has(self.sentinel), has(self.cluster)].filter(x, x).size() == 1").message("spec.dlrStore.redis: set exactly one of urlSecretRef (one Redis), sentinel (Redis Sentinel) or cluster (Redis Cluster)").reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new("!has(self.cluster) || !has(self.keyPrefix) || !self.keyPrefix.matches('[{}]')").message("spec.dlrStore.redis.keyPrefix must not contain { or } with cluster (smscd's keys use the account as a hash tag)").field_path(".keyPrefix").reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// One Redis: Secret key holding the URL (`redis://[:password@]host:port/db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
    /// A master set behind Redis Sentinel; smscd follows its failovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<RedisSentinelSpec>,
    /// A Redis Cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<RedisClusterSpec>,
    /// Acknowledge a submit only once this many replicas have its correlation (`WAIT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<RedisWaitSpec>,
    /// Key prefix, so clusters can share a Redis; absent: the SmscCluster's namespace/name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub key_prefix: Option<String>,
}

/// A Redis master set found through Sentinel.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RedisSentinelSpec {
    /// The master set's name (`mymaster` in most Helm charts).
    #[schemars(length(min = 1, max = 253))]
    pub master_name: String,
    /// Sentinels as `host:port` (26379 when the port is left out).
    #[schemars(
        length(min = 1, max = 16),
        inner(
            length(min = 1, max = 261),
            regex(pattern = r"^([^:/@\s\[\]]+|\[[0-9a-fA-F:.]+\])(:[0-9]{1,5})?$")
        )
    )]
    pub sentinels: Vec<String>,
    /// Secret key holding the master's password (none: no AUTH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the sentinels' own password (none: no AUTH to the sentinels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel_password_secret_ref: Option<SecretKeyRef>,
    /// TLS to the sentinels and the master.
    #[serde(default)]
    pub tls: bool,
}

/// A Redis Cluster, by some of its nodes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RedisClusterSpec {
    /// Seed nodes as `host:port` (6379 when the port is left out).
    #[schemars(
        length(min = 1, max = 32),
        inner(
            length(min = 1, max = 261),
            regex(pattern = r"^([^:/@\s\[\]]+|\[[0-9a-fA-F:.]+\])(:[0-9]{1,5})?$")
        )
    )]
    pub nodes: Vec<String>,
    /// Secret key holding the nodes' password (none: no AUTH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    #[serde(default)]
    pub tls: bool,
}

/// `WAIT <replicas> <timeoutMs>` after correlation writes and receipt enqueues.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RedisWaitSpec {
    #[schemars(range(min = 1, max = 16))]
    pub replicas: i32,
    /// How long one WAIT waits (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub timeout_ms: Option<i32>,
}

/// Service type.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    #[default]
    LoadBalancer,
}

/// Service externalTrafficPolicy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExternalTrafficPolicy {
    Cluster,
    /// Keeps the client address, which account allow-lists need.
    #[default]
    Local,
}

/// The Service in front of smscd.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Ignored for ClusterIP.
    #[serde(default)]
    pub external_traffic_policy: ExternalTrafficPolicy,
    /// Set these for the load balancer's idle timeout and connection pinning.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    pub load_balancer_source_ranges: Vec<String>,
}

/// Checklist items the operator cannot observe.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleOutChecklistSpec {
    /// The load balancer keeps each TCP connection on one backend for its lifetime.
    #[serde(default)]
    pub load_balancer_pins_connections: bool,
    /// Every ESME rebinds with backoff after a dropped connection.
    #[serde(default)]
    pub esmes_reconnect_with_backoff: bool,
}

/// Graceful shutdown.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownSpec {
    /// preStop sleep, so the load balancer stops sending binds before SIGTERM.
    #[serde(default = "default_pre_stop")]
    #[schemars(range(min = 0, max = 600))]
    pub pre_stop_sleep_seconds: i32,
    /// Time smscd gets after SIGTERM to finish in-flight work. The grace period is
    /// preStop + drain (+ a margin).
    #[serde(default = "default_drain")]
    #[schemars(range(min = 0, max = 3600))]
    pub drain_seconds: i32,
}

impl Default for ShutdownSpec {
    fn default() -> Self {
        ShutdownSpec { pre_stop_sleep_seconds: default_pre_stop(), drain_seconds: default_drain() }
    }
}

fn default_pre_stop() -> i32 {
    10
}
fn default_drain() -> i32 {
    30
}

/// CPU autoscaling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("!self.enabled || has(self.maxReplicas)").message("spec.autoscaling.maxReplicas is required when autoscaling is enabled").field_path(".maxReplicas").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas").message("spec.autoscaling.minReplicas must be <= spec.autoscaling.maxReplicas").field_path(".minReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: Option<i32>,
    #[serde(default = "default_cpu_target", rename = "targetCPUUtilizationPercentage")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
    /// Keeps the autoscaler from tearing down and re-opening upstream binds.
    #[serde(default = "default_scale_down_stabilization")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: i32,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        AutoscalingSpec {
            enabled: false,
            min_replicas: default_min_replicas(),
            max_replicas: None,
            target_cpu_utilization_percentage: default_cpu_target(),
            scale_down_stabilization_seconds: default_scale_down_stabilization(),
        }
    }
}

fn default_min_replicas() -> i32 {
    2
}
fn default_cpu_target() -> i32 {
    70
}
fn default_scale_down_stabilization() -> i32 {
    300
}

/// PodDisruptionBudget. `minAvailable` is a number of Pods (no percentage), below `replicas`
/// and, with autoscaling, below `autoscaling.minReplicas` (CEL on the spec).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_one")]
    #[schemars(range(min = 1))]
    pub min_available: i32,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        PodDisruptionBudgetSpec { enabled: true, min_available: 1 }
    }
}

fn default_true() -> bool {
    true
}
fn default_one() -> i32 {
    1
}

/// Lease timings (client-go semantics: duration > renew deadline > retry period).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.renewDeadlineSeconds < self.leaseDurationSeconds").message("spec.leaderElection.renewDeadlineSeconds must be less than leaseDurationSeconds").field_path(".renewDeadlineSeconds"))]
#[x_kube(validation = Rule::new("self.retryPeriodSeconds < self.renewDeadlineSeconds").message("spec.leaderElection.retryPeriodSeconds must be less than renewDeadlineSeconds").field_path(".retryPeriodSeconds"))]
#[serde(rename_all = "camelCase")]
pub struct LeaderElectionSpec {
    #[serde(default = "default_lease_duration")]
    #[schemars(range(min = 2, max = 600))]
    pub lease_duration_seconds: i32,
    #[serde(default = "default_renew_deadline")]
    #[schemars(range(min = 1, max = 600))]
    pub renew_deadline_seconds: i32,
    #[serde(default = "default_retry_period")]
    #[schemars(range(min = 1, max = 600))]
    pub retry_period_seconds: i32,
}

impl Default for LeaderElectionSpec {
    fn default() -> Self {
        LeaderElectionSpec {
            lease_duration_seconds: default_lease_duration(),
            renew_deadline_seconds: default_renew_deadline(),
            retry_period_seconds: default_retry_period(),
        }
    }
}

fn default_lease_duration() -> i32 {
    15
}
fn default_renew_deadline() -> i32 {
    10
}
fn default_retry_period() -> i32 {
    2
}

/// Pod template settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Replace the default spread (hostname DoNotSchedule, zone ScheduleAnyway); `[]` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// Added to the Pod template (the operator's own keys win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Added to the Pod template (the operator's own keys win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Merged field by field over the restricted default (non-root UID/GID/fsGroup 65532,
    /// seccomp RuntimeDefault): a field set here replaces that field only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Merged field by field over the restricted default of the smscd container (no privilege
    /// escalation, capabilities drop ALL, read-only root filesystem, non-root); `capabilities.add`
    /// and `capabilities.drop` merge separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
}
