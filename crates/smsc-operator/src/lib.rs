//! The SmscCluster controller: fetch -> validate -> build (pure) -> apply -> status.

pub mod build;
pub mod checklist;
pub mod error;
pub mod labels;
