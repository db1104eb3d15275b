//! smscd, the SMSC data plane. See ../../../docs and the data plane section of the design.
//!
//! Module ownership while the crate is being built (remove this note when done):
//! - config, reload, tls, cli: loading and validating the config file, hot reload, TLS material.
//! - daemon and everything it runs: listener, accounts, router, upstreams, sim, store, receipts,
//!   admin, metrics.
