//! `spec.handlers`: smscd's Python handlers (`@smpp.on_bind`, `@smpp.on_pdu`), from a script
//! given inline or kept in a ConfigMap of the user's. Rendered into the smscd config's
//! `handlers:` section; the script reaches the Pods as a file of a ConfigMap volume, which the
//! kubelet updates in place, and smscd reloads it when it changes: editing the script never
//! restarts a Pod.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Python handlers: exactly one of `script` (inline) or `configMapRef`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = kube::core::Rule::new("has(self.script) != has(self.configMapRef)").message("spec.handlers: set exactly one of script (the script inline) or configMapRef (a key of your ConfigMap)").reason(kube::core::Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct HandlersSpec {
    /// The Python script, inline. The operator puts it in its own ConfigMap beside smscd's
    /// config. Larger scripts: use `configMapRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 262_144))]
    pub script: Option<String>,
    /// A key of a ConfigMap in the SmscCluster's namespace holding the script. Mounted as a
    /// volume (not subPath), so an edit reaches the running Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
    /// How long one handler call may take; a call past it is answered per `onError`. Below
    /// smscd's submit timeout (10 s).
    #[serde(default = "default_timeout_ms")]
    #[schemars(range(min = 1, max = 9_999))]
    pub timeout_ms: i32,
    /// How long importing the script may take (a script looping at import is stopped).
    #[serde(default = "default_import_timeout_ms")]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub import_timeout_ms: i32,
    /// What a failed call (exception, wrong return type, timeout) does.
    #[serde(default)]
    pub on_error: HandlerOnError,
    /// The window of an ESME that `on_bind` accepted without an account in `spec.smpp.accounts`,
    /// and the most `bind.accept(window=...)` may give.
    #[serde(default = "default_window")]
    #[schemars(range(min = 1, max = 100_000))]
    pub window: i32,
    /// How often smscd reads the script for changes.
    #[serde(default = "default_reload_interval_ms")]
    #[schemars(range(min = 10, max = 3_600_000))]
    pub reload_interval_ms: i32,
}

/// A key of a ConfigMap in the SmscCluster's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// ConfigMap name.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    /// Key in the ConfigMap's data (also the script's file name in the Pod, as in smscd's logs).
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// What a handler call that failed does.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HandlerOnError {
    /// The bind is refused (ESME_RBINDFAIL), the PDU answered ESME_RSYSERR.
    #[default]
    Reject,
    /// As if the handler had returned None: the accounts decide the bind, routing the PDU.
    Continue,
}

impl From<HandlerOnError> for crate::smscd_config::OnHandlerError {
    fn from(o: HandlerOnError) -> Self {
        match o {
            HandlerOnError::Reject => crate::smscd_config::OnHandlerError::Reject,
            HandlerOnError::Continue => crate::smscd_config::OnHandlerError::Continue,
        }
    }
}

fn default_timeout_ms() -> i32 {
    100
}
fn default_import_timeout_ms() -> i32 {
    5_000
}
fn default_window() -> i32 {
    64
}
fn default_reload_interval_ms() -> i32 {
    1_000
}
