//! Load generator: a fleet of pipelined ESME binds (see `esme`), and the report it produces.
//!
//! Each bind runs on its own OS thread with a current-thread tokio runtime and a raw framed
//! client (pre-encoded submit_sm frames, sequence number patched in place, responses parsed from
//! the header without a full decode), so the generator scales with binds and is not the thing
//! measured. Receipt ids are tracked per thread and merged at the end: an SMSC may deliver a
//! receipt on any of the account's binds, so only the merge can tell lost from duplicated.

pub mod esme;
pub mod http;
pub mod report;

pub use esme::{run, EsmeConfig, Mix};
pub use report::Report;
