//! `SmscCluster.status`, written only by the operator.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Topology;

/// What the operator observed and decided.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SmscClusterStatus {
    /// metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Topology in effect: ActiveActive or ActiveStandby (never Auto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    /// Pods of the current Deployment (scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// Ready Pods of the desired number, `ready/desired` (e.g. `2/3`): the READY column of
    /// `kubectl get smsc` (a printer column shows one JSON path, so the pair is one string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub ready_text: Option<String>,
    /// The smscd image the Deployment runs: the IMAGE column of `kubectl get smsc -o wide`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
    /// Pod holding the Lease (ActiveStandby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_pod: Option<String>,
    /// Label selector of the smscd Pods, as a string (scale subresource, for the HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Scale-out checklist, every item, each with why it holds or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub checklist: Vec<ChecklistItem>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Scale-out checklist items.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChecklistItemName {
    /// Every upstream allows replicas x bindsPerReplica concurrent binds (maxBinds).
    UpstreamBindCapacity,
    /// The DLR store is shared (Redis) when replicas > 1.
    SharedDlrStore,
    /// Declared by the user: spec.scaleOutChecklist.loadBalancerPinsConnections.
    LoadBalancerPinsConnections,
    /// Declared by the user: spec.scaleOutChecklist.esmesReconnectWithBackoff.
    EsmesReconnectWithBackoff,
    /// terminationGracePeriodSeconds covers preStop sleep + drain.
    GracePeriodCoversDrain,
}

impl ChecklistItemName {
    pub const ALL: [ChecklistItemName; 5] = [
        ChecklistItemName::UpstreamBindCapacity,
        ChecklistItemName::SharedDlrStore,
        ChecklistItemName::LoadBalancerPinsConnections,
        ChecklistItemName::EsmesReconnectWithBackoff,
        ChecklistItemName::GracePeriodCoversDrain,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChecklistItemName::UpstreamBindCapacity => "UpstreamBindCapacity",
            ChecklistItemName::SharedDlrStore => "SharedDlrStore",
            ChecklistItemName::LoadBalancerPinsConnections => "LoadBalancerPinsConnections",
            ChecklistItemName::EsmesReconnectWithBackoff => "EsmesReconnectWithBackoff",
            ChecklistItemName::GracePeriodCoversDrain => "GracePeriodCoversDrain",
        }
    }
}

/// One checklist item.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChecklistItem {
    pub name: ChecklistItemName,
    pub satisfied: bool,
    /// Why it holds or not, for a human.
    #[serde(default)]
    pub message: String,
}

/// Condition types.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConditionType {
    /// Enough replicas are ready to serve (and, in ActiveStandby, one holds the Lease).
    Available,
    /// A rollout or scale is under way.
    Progressing,
    /// Something the operator cannot fix itself: a missing Secret, a refused topology, ...
    Degraded,
    /// Every checklist item holds, so active/active is allowed.
    ScaleOutSafe,
    /// spec.paused is true.
    ReconciliationPaused,
    /// The HorizontalPodAutoscaler can compute a replica count (its `ScalingActive` condition,
    /// with its reason and message). Present only while autoscaling is in effect.
    AutoscalingActive,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Available => "Available",
            ConditionType::Progressing => "Progressing",
            ConditionType::Degraded => "Degraded",
            ConditionType::ScaleOutSafe => "ScaleOutSafe",
            ConditionType::ReconciliationPaused => "ReconciliationPaused",
            ConditionType::AutoscalingActive => "AutoscalingActive",
        }
    }
}

/// Condition status.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// A condition, shaped like metav1.Condition.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: ConditionType,
    pub status: ConditionStatus,
    /// CamelCase reason, for machines.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub reason: String,
    /// For humans.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When status last changed (not when the condition was last written).
    pub last_transition_time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
