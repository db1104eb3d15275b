//! Prometheus metrics: reconciles, errors by kind, reconcile duration, child writes, and every
//! request to the API server by verb and resource (see [`crate::requests`]).

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
        Metrics { registry, reconciles, errors, duration, writes, requests, leader }
    }
}

impl Metrics {
    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&ErrorLabels { kind: kind.to_string() }).inc();
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
}
