//! `spec.http`: smscd's HTTP API (submit over HTTP, receipts and MO to webhooks), off unless
//! enabled. Rendered into the smscd config's `http:` section, a container port and a Service
//! port named `http`.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// The HTTP API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(format!("self.port != {port}", port = crate::names::ADMIN_PORT)).message(kube::core::Message::Message(format!("spec.http.port must not be {}: smscd serves health and metrics there", crate::names::ADMIN_PORT))).field_path(".port"))]
#[serde(rename_all = "camelCase")]
pub struct HttpSpec {
    /// Serve the HTTP API.
    #[serde(default)]
    pub enabled: bool,
    /// Container port.
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Service port; absent: `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub service_port: Option<i32>,
    /// A `kubernetes.io/tls` Secret (tls.crt, tls.key): HTTPS instead of HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret_name: Option<String>,
    /// A Secret key holding bearer tokens, one `<account>:<token>` a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_secret_ref: Option<SecretKeyRef>,
    /// Per-account webhooks: where receipts of HTTP submits and MO are POSTed, and the key they
    /// are signed with. Each `account` must be in `spec.smpp.accounts`. Used while `enabled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["account"]))]
    pub accounts: Vec<HttpAccountSpec>,
}

/// One account's webhooks.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpAccountSpec {
    /// The account's systemId (in `spec.smpp.accounts`).
    #[schemars(length(min = 1, max = 15))]
    pub account: String,
    /// Where receipts of this account's HTTP submits are POSTed (a message's own callback URL
    /// wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s/?#]+[^\s]*$"))]
    pub dlr_url: Option<String>,
    /// Where MO that routing gives this account is POSTed, instead of its SMPP receivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s/?#]+[^\s]*$"))]
    pub mo_url: Option<String>,
    /// A Secret key holding the HMAC-SHA256 key this account's webhooks are signed with; absent:
    /// they go unsigned. Read through the environment: a rotation rolls the Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

impl Default for HttpSpec {
    fn default() -> Self {
        HttpSpec {
            enabled: false,
            port: default_http_port(),
            service_port: None,
            tls_secret_name: None,
            tokens_secret_ref: None,
            accounts: Vec::new(),
        }
    }
}

fn default_http_port() -> i32 {
    i32::from(crate::names::HTTP_PORT)
}
