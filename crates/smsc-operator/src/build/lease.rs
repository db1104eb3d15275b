//! The Lease smscd replicas elect the active one on (active/standby). The operator creates it
//! empty (no holder), with the cluster's labels and an owner reference, so it is watched by label
//! and garbage-collected with the SmscCluster; smscd finds it free and acquires it, and its
//! resourceVersion-guarded replaces keep the metadata. A Lease smscd created first is adopted
//! (the same apply adds labels and owner).

use k8s_openapi::api::coordination::v1::Lease;
use smsc_api::crd::Topology;

use super::Plan;
use crate::labels;

/// Only metadata: the spec belongs to smscd's election. None unless active/standby.
pub fn build(plan: &Plan) -> Option<Lease> {
    (plan.topology() == Topology::ActiveStandby)
        .then(|| Lease { metadata: plan.meta(labels::lease_name(&plan.name)), spec: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{load, plan_for};

    #[test]
    fn active_standby_lease_carries_labels_and_owner_but_no_spec() {
        let c = load("single-bind.yaml");
        let plan = plan_for(&c);
        assert_eq!(plan.topology(), Topology::ActiveStandby);
        let lease = build(&plan).unwrap_or_else(|| panic!("no Lease"));
        assert_eq!(lease.metadata.name.as_deref(), Some("sms-leader"));
        let l = lease.metadata.labels.clone().unwrap_or_default();
        assert_eq!(l.get(labels::INSTANCE_LABEL).map(String::as_str), Some("sms"));
        assert_eq!(l.get(labels::MANAGED_BY_LABEL).map(String::as_str), Some(labels::MANAGER));
        let owners = lease.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1);
        assert_eq!((owners[0].kind.as_str(), owners[0].uid.as_str()), ("SmscCluster", "uid-1"));
        assert!(lease.spec.is_none(), "the holder is smscd's to write");
        // The serialized apply carries no spec at all (it would take the holder fields over).
        let v = serde_json::to_value(&lease).unwrap_or_default();
        assert!(v.get("spec").is_none(), "{v}");
    }

    #[test]
    fn no_lease_for_active_active() {
        let c = load("full.yaml");
        let plan = plan_for(&c);
        assert_eq!(plan.topology(), Topology::ActiveActive);
        assert!(build(&plan).is_none());
    }
}
