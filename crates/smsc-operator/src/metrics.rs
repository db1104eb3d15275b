//! Prometheus metrics: reconciles, errors by kind, reconcile duration, child writes, every
//! request to the API server by verb and resource (see [`crate::requests`]), and each cluster's
//! status conditions.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub namespace: String,
    pub cluster: String,
    pub r#type: String,
    pub status: String,
}

/// The values a condition's status takes: one series each, 1 for the current one.
const STATUSES: [&str; 3] = ["True", "False", "Unknown"];

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    /// Children written by server-side apply (or deleted as orphans); 0 on a settled cluster.
    pub writes: Counter,
    /// Requests the operator's client sent, by verb and resource.
    pub requests: Family<RequestLabels, Counter>,
    /// 1 while this replica reconciles (holds the leader Lease, or runs without
    /// `--leader-elect`), 0 while it waits for the Lease.
    pub leader: Gauge,
    /// 1 for each cluster condition's current status, 0 for its other statuses.
    conditions: Family<ConditionLabels, Gauge>,
    /// The series set per cluster (`namespace/name`), to remove them when it goes.
    condition_series: Mutex<HashMap<String, Vec<ConditionLabels>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("smsc_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let writes = Counter::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register("reconcile_errors", "Reconcile errors by kind", errors.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration", duration.clone());
        registry.register("child_writes", "Child objects applied or deleted", writes.clone());
        registry.register(
            "api_requests",
            "Requests sent to the API server by verb and resource",
            requests.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica reconciles (holds the leader Lease), 0 while it waits for it",
            leader.clone(),
        );
        let conditions = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "cluster_condition",
            "SmscCluster status conditions: 1 for the current status of each type, 0 for the others",
            conditions.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            writes,
            requests,
            leader,
            conditions,
            condition_series: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&ErrorLabels { kind: kind.to_string() }).inc();
    }

    /// The cluster's conditions now, as (type, status); series of types no longer present go.
    pub fn set_conditions<'a>(
        &self,
        namespace: &str,
        cluster: &str,
        conditions: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let mut now = Vec::new();
        for (type_, status) in conditions {
            for s in STATUSES {
                let labels = ConditionLabels {
                    namespace: namespace.to_string(),
                    cluster: cluster.to_string(),
                    r#type: type_.to_string(),
                    status: s.to_string(),
                };
                self.conditions.get_or_create(&labels).set(i64::from(s == status));
                now.push(labels);
            }
        }
        let mut series = self.condition_series.lock().unwrap_or_else(|p| p.into_inner());
        let before = series.insert(format!("{namespace}/{cluster}"), now.clone()).unwrap_or_default();
        for gone in before.iter().filter(|l| !now.contains(l)) {
            self.conditions.remove(gone);
        }
    }

    /// The cluster is gone: remove its condition series.
    pub fn forget_cluster(&self, namespace: &str, cluster: &str) {
        let mut series = self.condition_series.lock().unwrap_or_else(|p| p.into_inner());
        for l in series.remove(&format!("{namespace}/{cluster}")).unwrap_or_default() {
            self.conditions.remove(&l);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_labelled_by_kind() {
        let m = Metrics::default();
        m.reconciles.inc();
        m.error("apply");
        m.error("apply");
        m.duration.observe(0.2);
        let text = m.encode();
        assert!(text.contains("smsc_operator_reconciles_total 1"), "{text}");
        assert!(text.contains("smsc_operator_reconcile_errors_total{kind=\"apply\"} 2"), "{text}");
        assert!(text.contains("smsc_operator_reconcile_duration_seconds_count 1"), "{text}");
    }

    #[test]
    fn leader_gauge_starts_at_zero() {
        let m = Metrics::default();
        assert!(m.encode().contains("\nsmsc_operator_leader 0\n"), "{}", m.encode());
        m.leader.set(1);
        assert!(m.encode().contains("\nsmsc_operator_leader 1\n"), "{}", m.encode());
    }

    #[test]
    fn condition_gauge_follows_the_status_and_goes_with_the_cluster() {
        let m = Metrics::default();
        m.set_conditions("ns", "sms", [("Degraded", "True"), ("AutoscalingActive", "False")]);
        let text = m.encode();
        let series = |t: &str, s: &str| {
            format!("smsc_operator_cluster_condition{{namespace=\"ns\",cluster=\"sms\",type=\"{t}\",status=\"{s}\"}}")
        };
        assert!(text.contains(&format!("{} 1", series("Degraded", "True"))), "{text}");
        assert!(text.contains(&format!("{} 0", series("Degraded", "False"))), "{text}");
        m.set_conditions("ns", "sms", [("Degraded", "False")]);
        let text = m.encode();
        assert!(text.contains(&format!("{} 1", series("Degraded", "False"))), "{text}");
        assert!(!text.contains("AutoscalingActive"), "a condition no longer present keeps no series: {text}");
        m.set_conditions("ns", "other", [("Degraded", "False")]);
        m.forget_cluster("ns", "sms");
        let text = m.encode();
        assert!(!text.contains("cluster=\"sms\""), "{text}");
        assert!(text.contains("cluster=\"other\""), "{text}");
    }
}
