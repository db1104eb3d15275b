//! Names the operator and smscd must agree on.

/// API group of the SmscCluster CRD.
pub const GROUP: &str = "smsc.io";

/// Label the Lease holder puts on its own Pod; the Service selects it in ActiveStandby.
pub const ROLE_LABEL: &str = "smsc.io/role";
/// Value of [`ROLE_LABEL`] on the active replica.
pub const ROLE_ACTIVE: &str = "active";

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "SMSCD_CONFIG";
/// Prefix of the environment variables that declare or override an upstream bind:
/// `SMPP_BIND_<NAME>_<FIELD>`.
pub const BIND_ENV_PREFIX: &str = "SMPP_BIND_";

/// Default SMPP port.
pub const SMPP_PORT: u16 = 2775;
/// Default SMPP-over-TLS port.
pub const SMPP_TLS_PORT: u16 = 8775;
/// Default admin (health, metrics) port.
pub const ADMIN_PORT: u16 = 8080;
/// Default port of the HTTP API (`http:`), when it is enabled.
pub const HTTP_PORT: u16 = 8088;
