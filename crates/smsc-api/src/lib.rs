//! Types shared by the operator and the data plane.
//!
//! - [`crd`]: the `SmscCluster` custom resource (spec, status, schema validation).
//! - [`smscd_config`]: the smscd config file schema (the operator renders it, users hand-write it).
//! - [`names`]: labels, annotations and other names both sides must agree on.

pub mod crd;
pub mod names;
pub mod smscd_config;
