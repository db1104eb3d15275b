//! Prometheus metrics (text exposition on the admin port's /metrics).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabel {
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubmitLabels {
    pub account: String,
    /// The target that answered (`sim`, a bind name) or `none`.
    pub route: String,
    /// ESME_ROK, ESME_RTHROTTLED, ...
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamSubmitLabels {
    pub upstream: String,
    pub status: String,
}

/// Store-and-forward by account and route: `route` is `rule-<n>` (the n-th routing rule, from
/// 0) or `default`, so the series are bounded by accounts x (rules + 1).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub account: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteResultLabels {
    pub account: String,
    pub route: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// A scripted handler's calls: `handler` is the hook (`on_bind`, `on_pdu:submit_sm`), `result`
/// `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerLabels {
    pub handler: String,
    pub result: String,
}

/// A scripted handler's failures by hook and kind (`exception`, `wrong_type`, `timeout`,
/// `unavailable`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerErrorLabels {
    pub handler: String,
    pub kind: String,
}

/// Why queued deliveries were dropped or dead-lettered: a fixed set of words (see
/// docs/smscd-runtime.md), never free text.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

pub struct Metrics {
    pub registry: Registry,
    pub inbound_binds: Family<AccountLabel, Gauge>,
    pub upstream_binds: Family<UpstreamLabel, Gauge>,
    /// Upstream sessions waiting for a bind permit (every one of `max_binds` held elsewhere).
    pub upstream_permit_waits: Family<UpstreamLabel, Gauge>,
    pub connections: Gauge,
    pub submits: Family<SubmitLabels, Counter>,
    pub upstream_submits: Family<UpstreamSubmitLabels, Counter>,
    /// Inbound submit_sm to submit_sm_resp, for submits answered after a hop (upstream routes,
    /// failover). Inline sim answers are not timed: they cost well under the first bucket.
    pub submit_latency: Family<AccountLabel, Histogram, fn() -> Histogram>,
    pub upstream_rtt: HistFamily<UpstreamLabel>,
    pub pending_receipts: Family<AccountLabel, Gauge>,
    pub correlations: Gauge,
    /// 1 while the DLR store answers (always 1 for memory).
    pub store_up: Gauge,
    /// Failovers of the DLR store followed (Redis Sentinel: the master moved).
    pub store_failovers: Counter,
    pub receipts: Family<ResultLabel, Counter>,
    pub deliveries: Family<ResultLabel, Counter>,
    pub reloads: Family<ResultLabel, Counter>,
    /// Queued deliveries dropped: `expired` (older than store.ttl), `account_removed`.
    pub queue_dropped: Family<ReasonLabel, Counter>,
    /// Deliveries moved to the dead letters: `refused` (a permanent status), `attempts`.
    pub dead_lettered: Family<ReasonLabel, Counter>,
    /// Dead letters held, by account.
    pub dead_letters: Family<AccountLabel, Gauge>,
    /// Store-and-forward: submits held, by account and route (queued, scheduled or being sent).
    pub held: Family<RouteLabels, Gauge>,
    /// The (account, route) series of `held` set non-zero, so that they go back to 0 when their
    /// route has nothing held any more.
    held_seen: std::sync::Mutex<std::collections::HashSet<RouteLabels>>,
    /// Store-and-forward: how late the most overdue held submit of an account is, in seconds.
    pub held_overdue: Family<AccountLabel, Gauge>,
    /// Store-and-forward: age of the oldest held submit of an account, in seconds.
    pub held_oldest: Family<AccountLabel, Gauge>,
    /// Store-and-forward events by account, route and result: `held`, `delivered`, `retried`,
    /// `expired`, `undeliverable`, `cancelled`, `replaced`.
    pub forwarded: Family<RouteResultLabels, Counter>,
    /// HTTP API webhooks (receipts, MO) by result: queued, delivered, retried, dead_lettered.
    pub webhooks: Family<ResultLabel, Counter>,
    /// HTTP API requests by result: the HTTP status class and the route's word.
    pub http_requests: Family<ResultLabel, Counter>,
    /// Scripted handler calls, failures and script reloads (`applied`, `refused`).
    pub handler_calls: Family<HandlerLabels, Counter>,
    pub handler_errors: Family<HandlerErrorLabels, Counter>,
    pub handler_reloads: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("smscd");
        let inbound_binds = Family::<AccountLabel, Gauge>::default();
        registry.register("inbound_binds", "ESME sessions bound to us, by account", inbound_binds.clone());
        let upstream_binds = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_binds",
            "Sessions bound to upstreams, by upstream",
            upstream_binds.clone(),
        );
        let upstream_permit_waits = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_permit_waits",
            "Upstream sessions waiting for a bind permit (max_binds held by other sessions or replicas), by upstream",
            upstream_permit_waits.clone(),
        );
        let connections = Gauge::default();
        registry.register("inbound_connections", "Open inbound TCP connections", connections.clone());
        let submits = Family::<SubmitLabels, Counter>::default();
        registry.register("submits", "Inbound submit_sm by account, route and status", submits.clone());
        let upstream_submits = Family::<UpstreamSubmitLabels, Counter>::default();
        registry.register(
            "upstream_submits",
            "submit_sm sent upstream by upstream and outcome",
            upstream_submits.clone(),
        );
        let submit_latency: HistFamily<AccountLabel> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "submit_resp_seconds",
            "Inbound submit_sm to submit_sm_resp for deferred submits",
            submit_latency.clone(),
        );
        let upstream_rtt: HistFamily<UpstreamLabel> = Family::new_with_constructor(latency_histogram);
        registry.register("upstream_rtt_seconds", "Upstream submit_sm round trip", upstream_rtt.clone());
        let pending_receipts = Family::<AccountLabel, Gauge>::default();
        registry.register(
            "pending_deliveries",
            "Receipts and MO queued for an account's receivers",
            pending_receipts.clone(),
        );
        let correlations = Gauge::default();
        registry.register("correlations", "Receipt correlation records held", correlations.clone());
        let store_up = Gauge::default();
        registry.register("store_up", "Whether the DLR store answers (1) or not (0)", store_up.clone());
        let store_failovers = Counter::default();
        registry.register(
            "store_failovers",
            "Failovers of the DLR store followed (Redis Sentinel master moved)",
            store_failovers.clone(),
        );
        let receipts = Family::<ResultLabel, Counter>::default();
        registry.register(
            "upstream_receipts",
            "Receipts from upstreams (and sim) by result",
            receipts.clone(),
        );
        let deliveries = Family::<ResultLabel, Counter>::default();
        registry.register("deliveries", "deliver_sm to ESMEs by result", deliveries.clone());
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register("config_reloads", "Configs applied by the runtime", reloads.clone());
        let queue_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "queue_dropped",
            "Queued receipts and MO dropped, by reason (expired, account_removed)",
            queue_dropped.clone(),
        );
        let dead_lettered = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dead_lettered",
            "Deliveries the ESME never took, moved to the dead letters, by reason (refused, attempts)",
            dead_lettered.clone(),
        );
        let dead_letters = Family::<AccountLabel, Gauge>::default();
        registry.register("dead_letters", "Dead letters held, by account", dead_letters.clone());
        let held = Family::<RouteLabels, Gauge>::default();
        registry.register(
            "held_submits",
            "Submits held for store-and-forward, by account and route (rule-<n> or default)",
            held.clone(),
        );
        let held_oldest = Family::<AccountLabel, Gauge>::default();
        registry.register(
            "held_oldest_seconds",
            "Age of the oldest submit held for store-and-forward, by account (0: none held)",
            held_oldest.clone(),
        );
        let held_overdue = Family::<AccountLabel, Gauge>::default();
        registry.register(
            "held_overdue_seconds",
            "How late the most overdue held submit of an account is (0: none overdue)",
            held_overdue.clone(),
        );
        let forwarded = Family::<RouteResultLabels, Counter>::default();
        registry.register(
            "store_and_forward",
            "Store-and-forward events by account, route and result (held, delivered, retried, expired, undeliverable, cancelled, replaced)",
            forwarded.clone(),
        );
        let webhooks = Family::<ResultLabel, Counter>::default();
        registry.register(
            "webhooks",
            "HTTP API webhooks (receipts, MO) by result (queued, delivered, retried, dead_lettered)",
            webhooks.clone(),
        );
        let http_requests = Family::<ResultLabel, Counter>::default();
        registry.register("http_requests", "HTTP API requests by answer status", http_requests.clone());
        let handler_calls = Family::<HandlerLabels, Counter>::default();
        registry.register(
            "handler_calls",
            "Scripted handler calls by hook and result",
            handler_calls.clone(),
        );
        let handler_errors = Family::<HandlerErrorLabels, Counter>::default();
        registry.register(
            "handler_errors",
            "Scripted handler failures by hook and kind (exception, wrong_type, timeout, unavailable)",
            handler_errors.clone(),
        );
        let handler_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "handler_reloads",
            "Handler script reloads by result (applied, refused)",
            handler_reloads.clone(),
        );
        Metrics {
            webhooks,
            http_requests,
            registry,
            inbound_binds,
            upstream_binds,
            upstream_permit_waits,
            connections,
            submits,
            upstream_submits,
            submit_latency,
            upstream_rtt,
            pending_receipts,
            correlations,
            store_up,
            store_failovers,
            receipts,
            deliveries,
            reloads,
            queue_dropped,
            dead_lettered,
            dead_letters,
            held,
            held_seen: Default::default(),
            held_overdue,
            held_oldest,
            forwarded,
            handler_calls,
            handler_errors,
            handler_reloads,
        }
    }

    pub fn forwarded(&self, account: &str, route: &str, result: &str, n: u64) {
        if n > 0 {
            let l = RouteResultLabels {
                account: account.to_owned(),
                route: route.to_owned(),
                result: result.to_owned(),
            };
            self.forwarded.get_or_create(&l).inc_by(n);
        }
    }

    /// Set `account`'s held gauges from its per-route counts; routes it had before and has no
    /// more go to 0. Every account has its `default` series (0 when none held there).
    pub fn held_by_route(&self, account: &str, by_route: &[(String, usize)]) {
        let mut seen = self.held_seen.lock().unwrap_or_else(|p| p.into_inner());
        let now: std::collections::HashSet<RouteLabels> = by_route
            .iter()
            .map(|(r, _)| RouteLabels { account: account.to_owned(), route: r.clone() })
            .chain(std::iter::once(RouteLabels { account: account.to_owned(), route: "default".into() }))
            .collect();
        seen.retain(|l| {
            if l.account == account && !now.contains(l) {
                self.held.get_or_create(l).set(0);
                return false;
            }
            true
        });
        self.held.get_or_create(&RouteLabels { account: account.to_owned(), route: "default".into() }).set(0);
        for (route, n) in by_route {
            let l = RouteLabels { account: account.to_owned(), route: route.clone() };
            self.held.get_or_create(&l).set(i64::try_from(*n).unwrap_or(i64::MAX));
            seen.insert(l);
        }
    }

    pub fn dropped(&self, reason: &'static str, n: usize) {
        if n > 0 {
            self.queue_dropped.get_or_create(&ReasonLabel { reason }).inc_by(n as u64);
        }
    }

    pub fn submit(&self, account: &str, route: &str, status: smpp::CommandStatus) -> Counter {
        self.submits
            .get_or_create(&SubmitLabels {
                account: account.to_owned(),
                route: route.to_owned(),
                status: status_name(status),
            })
            .clone()
    }

    pub fn receipt(&self, result: &str) {
        self.receipts.get_or_create(&ResultLabel { result: result.to_owned() }).inc();
    }

    pub fn delivery(&self, result: &str) {
        self.deliveries.get_or_create(&ResultLabel { result: result.to_owned() }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// The `status` label: the spec's name, or `other` for any status SMPP 3.4 does not define, so
/// an upstream answering with vendor codes cannot grow the series without bound.
pub fn status_name(s: smpp::CommandStatus) -> String {
    s.name().unwrap_or("other").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use smpp::CommandStatus;

    /// Issue 14: a thousand vendor statuses from an upstream (passed back to the ESME as they
    /// are) make one `other` series per label set, not a thousand.
    #[test]
    fn unknown_statuses_have_bounded_cardinality() {
        let m = Metrics::new();
        for code in 0x400..0x400 + 1000 {
            m.submit("acct", "up", CommandStatus(code)).inc();
            m.upstream_submits
                .get_or_create(&UpstreamSubmitLabels {
                    upstream: "up".into(),
                    status: status_name(CommandStatus(code)),
                })
                .inc();
        }
        m.submit("acct", "up", CommandStatus::ESME_RTHROTTLED).inc();
        let text = m.encode();
        let series = |name: &str| text.lines().filter(|l| l.starts_with(name) && l.contains('{')).count();
        assert_eq!(series("smscd_submits_total"), 2, "{text}");
        assert_eq!(series("smscd_upstream_submits_total"), 1, "{text}");
        assert!(text.contains(r#"status="other"} 1000"#), "{text}");
        assert!(text.contains(r#"status="ESME_RTHROTTLED"} 1"#), "{text}");
    }
}
