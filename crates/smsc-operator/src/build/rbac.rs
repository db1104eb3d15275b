//! ServiceAccount, Role and RoleBinding of the smscd Pods: their own Lease and their Pods' labels.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::Plan;
use crate::labels;

pub fn service_account(plan: &Plan) -> ServiceAccount {
    ServiceAccount { metadata: plan.meta(labels::rbac_name(&plan.name)), ..ServiceAccount::default() }
}

fn rule(group: &str, resource: &str, names: Option<Vec<String>>, verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(vec![resource.to_string()]),
        resource_names: names,
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

pub fn role(plan: &Plan) -> Role {
    Role {
        metadata: plan.meta(labels::rbac_name(&plan.name)),
        rules: Some(vec![
            rule(
                "coordination.k8s.io",
                "leases",
                Some(vec![labels::lease_name(&plan.name)]),
                &["get", "update"],
            ),
            // A create request carries no name RBAC could match, so this one cannot be narrowed.
            rule("coordination.k8s.io", "leases", None, &["create"]),
            rule("", "pods", None, &["get", "patch"]),
        ]),
    }
}

pub fn role_binding(plan: &Plan) -> RoleBinding {
    let name = labels::rbac_name(&plan.name);
    RoleBinding {
        metadata: plan.meta(name.clone()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: Some(plan.namespace.clone()),
            ..Subject::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{load, plan_for};

    #[test]
    fn least_privilege() {
        let plan = plan_for(&load("minimal.yaml"));
        let rules = role(&plan).rules.unwrap_or_default();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].resource_names, Some(vec!["sms-leader".to_string()]));
        assert_eq!(rules[0].verbs, vec!["get", "update"]);
        assert_eq!(rules[1].verbs, vec!["create"]);
        assert_eq!(rules[2].resources, Some(vec!["pods".to_string()]));
        assert_eq!(rules[2].verbs, vec!["get", "patch"]);
        assert!(rules.iter().all(|r| !r.verbs.iter().any(|v| v == "*" || v == "list" || v == "delete")));
        let rb = role_binding(&plan);
        assert_eq!(rb.role_ref.name, "sms-smscd");
        assert_eq!(rb.subjects.unwrap_or_default()[0].namespace.as_deref(), Some("default"));
        assert_eq!(service_account(&plan).metadata.name.as_deref(), Some("sms-smscd"));
    }
}
