//! Keeps the SmscCluster CRD at this operator's schema, so `helm upgrade` brings new fields.
//!
//! Helm installs `crds/` on the first install only and never upgrades them. Rather than move the
//! CRD into the templates (an existing install's CRD has no Helm ownership, so the upgrade would
//! be refused), the operator applies its own CRD when it becomes the leader, before it
//! reconciles anything: the schema and the code that reads it change together. It only updates a
//! CRD that exists (creating CRDs cannot be narrowed to one name in RBAC), and never downgrades
//! one that a newer operator applied (`smsc.io/operator-version`), so a rollback or an old
//! replica cannot strip fields a newer schema stores.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;

use crate::labels::MANAGER;

/// The version of the operator that last applied the CRD.
pub const VERSION_ANNOTATION: &str = "smsc.io/operator-version";

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied at our schema (a no-op for the API server when nothing changed).
    Applied,
    /// The CRD does not exist: nothing to update (install it with the chart's `crds/`).
    Missing,
    /// A newer operator applied it; left alone.
    Newer(String),
}

/// Is `theirs` a strictly newer operator version than `ours`? Unparsable versions are not newer.
pub fn is_newer(theirs: &str, ours: &str) -> bool {
    match (semver::Version::parse(theirs), semver::Version::parse(ours)) {
        (Ok(t), Ok(o)) => t > o,
        _ => false,
    }
}

/// `desired` with our version annotation, ready to apply.
pub fn stamped(mut desired: CustomResourceDefinition, version: &str) -> CustomResourceDefinition {
    desired.annotations_mut().insert(VERSION_ANNOTATION.to_string(), version.to_string());
    desired.metadata.managed_fields = None;
    desired.metadata.resource_version = None;
    desired
}

/// Apply `desired` (server-side, our field manager, forced: the fields `kubectl apply` or Helm
/// wrote at install become ours) unless it is missing or a newer operator's.
pub async fn ensure(
    api: &Api<CustomResourceDefinition>,
    desired: CustomResourceDefinition,
    version: &str,
) -> Result<Outcome, kube::Error> {
    let name = desired.name_any();
    let Some(current) = api.get_opt(&name).await? else {
        return Ok(Outcome::Missing);
    };
    if let Some(theirs) = current.annotations().get(VERSION_ANNOTATION) {
        if is_newer(theirs, version) {
            return Ok(Outcome::Newer(theirs.clone()));
        }
    }
    let pp = PatchParams::apply(MANAGER).force();
    api.patch(&name, &pp, &Patch::Apply(&stamped(desired, version))).await?;
    Ok(Outcome::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strictly_newer_versions_win() {
        assert!(is_newer("0.2.0", "0.1.0"));
        assert!(is_newer("1.0.0", "0.9.9"));
        assert!(!is_newer("0.1.0", "0.1.0"));
        assert!(!is_newer("0.1.0", "0.2.0"));
        assert!(!is_newer("0.2.0-rc.1", "0.2.0"), "a pre-release is older than its release");
        assert!(!is_newer("garbage", "0.1.0"));
    }

    #[test]
    fn stamped_carries_the_version_and_no_server_fields() {
        let mut crd = <smsc_api::crd::SmscCluster as kube::CustomResourceExt>::crd();
        crd.metadata.resource_version = Some("42".into());
        let s = stamped(crd, "0.3.0");
        assert_eq!(s.annotations().get(VERSION_ANNOTATION).map(String::as_str), Some("0.3.0"));
        assert!(s.metadata.resource_version.is_none());
    }
}
