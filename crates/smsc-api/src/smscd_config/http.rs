//! The `http:` section: smscd's HTTP API (submit over HTTP, receipts and MO to webhooks).
//! Off unless `enabled`; see docs/http-api.md.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve the HTTP API. Off by default.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_bind_address")]
    pub bind_address: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Serve HTTPS with this certificate instead of plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<HttpTlsConfig>,
    /// Bearer tokens, one `<account>:<token>` a line (`#` comments), e.g. mounted from a Secret.
    /// Re-read on every reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<String>,
    /// Most parts one text may be split into (concatenation); a longer text is refused.
    #[serde(default = "default_max_parts")]
    pub max_parts: usize,
    /// Most destinations (`to`) in one request.
    #[serde(default = "default_max_destinations")]
    pub max_destinations: usize,
    /// Largest request body, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub webhooks: WebhookConfig,
    /// Per-account HTTP settings: webhook URLs, signing secret, bearer tokens. An account not
    /// listed can still submit over HTTP (basic auth) but gets no webhooks but per-message ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<HttpAccountConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: false,
            bind_address: default_bind_address(),
            port: default_port(),
            tls: None,
            tokens_file: None,
            max_parts: default_max_parts(),
            max_destinations: default_max_destinations(),
            max_body_bytes: default_max_body_bytes(),
            webhooks: WebhookConfig::default(),
            accounts: Vec::new(),
        }
    }
}

impl HttpConfig {
    /// Left out of a serialized config when nothing was set.
    pub fn is_default(&self) -> bool {
        *self == HttpConfig::default()
    }

    pub fn account(&self, system_id: &str) -> Option<&HttpAccountConfig> {
        self.accounts.iter().find(|a| a.account == system_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    pub cert_file: String,
    pub key_file: String,
}

/// How webhooks (receipts, MO) are sent and retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// One attempt's limit (connect, send, answer).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts (answers other than 2xx, or none) before a webhook is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubled per attempt up to `max_backoff_ms`.
    #[serde(default = "default_min_backoff_ms")]
    pub min_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Webhooks in flight at once, per replica.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            timeout_ms: default_timeout_ms(),
            max_attempts: default_max_attempts(),
            min_backoff_ms: default_min_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            concurrency: default_concurrency(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAccountConfig {
    /// The account's system_id (in `accounts`).
    pub account: String,
    /// Where this account's receipts for HTTP submits are POSTed (a per-message `callback_url`
    /// wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlr_url: Option<String>,
    /// Where MO that `routing.mo` gives this account is POSTed, instead of its SMPP receivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mo_url: Option<String>,
    /// HMAC-SHA256 key signing this account's webhooks; absent: they go unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Bearer tokens of this account (besides `tokens_file`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<String>,
}

fn default_bind_address() -> String {
    "0.0.0.0".into()
}
fn default_port() -> u16 {
    crate::names::HTTP_PORT
}
fn default_max_parts() -> usize {
    10
}
fn default_max_destinations() -> usize {
    100
}
fn default_max_body_bytes() -> usize {
    256 * 1024
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_max_attempts() -> u32 {
    15
}
fn default_min_backoff_ms() -> u64 {
    250
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_concurrency() -> usize {
    256
}
