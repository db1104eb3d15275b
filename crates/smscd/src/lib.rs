//! smscd, the SMSC data plane. See ../../../docs and the data plane section of the design.
//!
//! Module ownership while the crate is being built (remove this note when done):
//! - config, reload, tls, cli: loading and validating the config file, hot reload, TLS material.
//! - daemon and everything it runs: listener, accounts, router, upstreams, sim, store, receipts,
//!   admin, metrics.

// Config file, hot reload, TLS material (the command line is in main.rs).
pub mod config;
pub mod reload;
pub mod tls;

// Active/standby leader election on a Lease, and the Pod role label.
pub mod leader;

// Runtime (daemon and what it runs).
pub mod accounts;
pub mod admin;
pub mod core;
pub mod daemon;
pub mod delivery;
pub mod dispatch;
pub mod forward;
pub mod handlers;
pub mod health;
pub mod http;
pub mod inbound;
pub mod live;
pub mod message_ops;
pub mod metrics;
pub mod msgid;
pub mod multi;
pub mod peers;
pub mod permits;
pub mod queue_view;
pub mod receipts;
pub mod router;
pub mod sim;
pub mod sink;
pub mod store;
pub mod throttle;
pub mod upstream;

pub use daemon::{run, start, DaemonError, DaemonHandle};
