//! Typed reconcile errors. Each has a stable `kind`, used as the metric label and the Event reason.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stored object does not deserialize as an SmscCluster (e.g. written under an older schema).
    #[error("SmscCluster {name} cannot be read: {source}")]
    Malformed { name: String, source: serde_json::Error },
    /// The spec passed the schema but cannot be turned into children.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("rendering the smscd config: {0}")]
    Render(String),
    /// The caches the reconcile reads children from have not finished their first list.
    #[error("the {0} cache has not synced yet")]
    NotSynced(&'static str),
    /// A child's name is taken by an object this cluster does not own: applying would take it over.
    #[error(
        "{kind} {name} exists and does not belong to this SmscCluster ({holder}); refusing to take it over: delete or rename it"
    )]
    NotOwned { kind: &'static str, name: String, holder: String },
    #[error("{verb} {kind} {name}: {source}")]
    Kube { verb: Verb, kind: &'static str, name: String, source: Box<kube::Error> },
}

/// The API call that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Apply,
    Delete,
    PatchStatus,
    PatchPod,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Get => "getting",
            Verb::List => "listing",
            Verb::Apply => "applying",
            Verb::Delete => "deleting",
            Verb::PatchStatus => "patching the status of",
            Verb::PatchPod => "patching",
        })
    }
}

impl Error {
    pub fn kube(verb: Verb, kind: &'static str, name: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube { verb, kind, name: name.into(), source: Box::new(source) }
    }

    /// Stable, low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Malformed { .. } => "malformed_object",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Render(_) => "render",
            Error::NotSynced(_) => "not_synced",
            Error::NotOwned { .. } => "not_owned",
            Error::Kube { verb, .. } => match verb {
                Verb::Get => "get",
                Verb::List => "list",
                Verb::Apply => "apply",
                Verb::Delete => "delete",
                Verb::PatchStatus => "patch_status",
                Verb::PatchPod => "patch_pod",
            },
        }
    }

    /// CamelCase reason for Events and conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Malformed { .. } => "MalformedObject",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Render(_) => "RenderFailed",
            Error::NotSynced(_) => "CacheNotSynced",
            Error::NotOwned { .. } => "ChildNotOwned",
            Error::Kube { verb, .. } => match verb {
                Verb::Get | Verb::List => "ReadFailed",
                Verb::Apply => "ApplyFailed",
                Verb::Delete => "DeleteFailed",
                Verb::PatchStatus => "StatusUpdateFailed",
                Verb::PatchPod => "PodLabelFailed",
            },
        }
    }
}

impl Error {
    /// Does this failure belong in the cluster's status (`Degraded`)? Not a cache still listing
    /// (transient), a status write (that is what failed), or an object that cannot be read.
    pub fn shows_in_status(&self) -> bool {
        !matches!(
            self,
            Error::NotSynced(_) | Error::Malformed { .. } | Error::Kube { verb: Verb::PatchStatus, .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_and_distinct_per_verb() {
        let e = Error::InvalidSpec("x".into());
        assert_eq!(e.metric_label(), "invalid_spec");
        assert_eq!(e.reason(), "InvalidSpec");
        let mut seen = std::collections::BTreeSet::new();
        for verb in [Verb::Get, Verb::List, Verb::Apply, Verb::Delete, Verb::PatchStatus, Verb::PatchPod] {
            let e = Error::kube(verb, "Deployment", "a", kube::Error::LinesCodecMaxLineLengthExceeded);
            assert!(seen.insert(e.metric_label()));
            assert!(e.to_string().contains("Deployment a"), "{e}");
        }
    }
}
