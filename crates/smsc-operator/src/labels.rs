//! Child names and the recommended `app.kubernetes.io/*` labels.

use std::collections::BTreeMap;

pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";

pub const APP_NAME: &str = "smscd";
pub const COMPONENT: &str = "smsc";
pub const PART_OF: &str = "smsc-operator";
/// Field manager of every server-side apply, and the `managed-by` label value.
pub const MANAGER: &str = "smsc-operator";

/// Pod template annotation holding the hash of the settings smscd cannot hot-reload.
pub const RESTART_HASH_ANNOTATION: &str = "smsc.io/restart-hash";
/// Pod template label naming the topology the Pod was built for; the operator's role-label
/// clean-up leaves ActiveActive Pods alone (their role label is static, from the template).
pub const TOPOLOGY_LABEL: &str = "smsc.io/topology";

/// Pod template annotation holding the versions of the Secrets smscd reads from its environment.
pub const SECRETS_VERSION_ANNOTATION: &str = "smsc.io/secrets-version";
/// SmscCluster annotation whose new value asks for a reconcile now (e.g. right after rotating a
/// Secret, which the operator otherwise notices at its next periodic reconcile).
pub const RECONCILE_REQUEST_ANNOTATION: &str = "smsc.io/reconcile-requested-at";

/// Config file name inside the ConfigMap and the mount directory.
pub const CONFIG_KEY: &str = "smscd.yaml";
pub const CONFIG_DIR: &str = "/etc/smscd";

pub fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-config")
}
/// ServiceAccount, Role and RoleBinding of the smscd Pods.
pub fn rbac_name(cluster: &str) -> String {
    format!("{cluster}-smscd")
}
/// The Lease smscd replicas elect the active one on (ActiveStandby).
pub fn lease_name(cluster: &str) -> String {
    format!("{cluster}-leader")
}

/// Labels on every child.
pub fn labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), APP_NAME.to_string()),
        (INSTANCE_LABEL.to_string(), cluster.to_string()),
        (COMPONENT_LABEL.to_string(), COMPONENT.to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
        (PART_OF_LABEL.to_string(), PART_OF.to_string()),
    ])
}

/// The smscd Pods of one cluster (Deployment, PDB and scale selector; stable across upgrades).
pub fn selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), APP_NAME.to_string()),
        (INSTANCE_LABEL.to_string(), cluster.to_string()),
    ])
}

/// `k=v,k=v`, for list calls and `status.selector`.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Selects every child the operator made for one cluster.
pub fn children_selector(cluster: &str) -> String {
    format!("{INSTANCE_LABEL}={cluster},{MANAGED_BY_LABEL}={MANAGER}")
}
