//! The SmscCluster controller. Per reconcile: fetch referenced objects -> validate (checklist,
//! topology) -> build the children (pure, one module each) -> server-side apply -> prune orphans
//! -> compute status (pure) -> patch status only when it changed.

pub mod build;
pub mod checklist;
pub mod controller;
pub mod crd;
pub mod error;
pub mod http;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod requests;
pub mod status;
