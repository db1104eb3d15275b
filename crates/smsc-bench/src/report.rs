//! The run's figures, as JSON (`--json`) and as a one-screen summary.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latency {
    /// From a histogram of nanoseconds.
    pub fn from_hist(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub target: String,
    pub binds: usize,
    pub window: usize,
    /// Requested submit_sm/s across the fleet; None: as fast as the window allows.
    pub rate_target: Option<u64>,
    pub registered_delivery: bool,
    /// Distinct destination numbers the messages went to.
    pub destinations: u64,
    pub mix: String,
    /// Length of the sending phase (the rates below are over it).
    pub send_secs: f64,
    /// Whole run: bind, send, drain of responses and receipts, unbind.
    pub wall_secs: f64,
    pub messages_sent: u64,
    pub submit_sm_sent: u64,
    pub submit_sm_ok: u64,
    pub submit_sm_failed: u64,
    /// Answered submit_sm (any status) that never got a response.
    pub submit_sm_unanswered: u64,
    /// submit_sm_resp with status 0 received during the sending phase, per second.
    pub submit_sm_per_sec: f64,
    /// Non-zero command_status (hex) -> count.
    pub errors_by_status: BTreeMap<String, u64>,
    pub resp_latency: Latency,
    pub receipts_expected: u64,
    pub receipts_received: u64,
    pub receipts_matched: u64,
    pub receipts_lost: u64,
    pub receipts_duplicated: u64,
    /// Receipts whose id matches no submit_sm_resp of this run.
    pub receipts_unknown: u64,
    /// Same message id returned for two submits.
    pub duplicate_message_ids: u64,
    /// Receipts received during the sending phase, per second (end-to-end rate with receipts).
    pub receipts_per_sec: f64,
    pub receipt_latency: Latency,
    /// Generator process CPU (user+sys) over the wall time, in cores.
    pub generator_cpu_cores: f64,
    /// Busiest bind thread's CPU over its lifetime (1.0 = that thread saturated a core).
    pub generator_max_thread_util: f64,
    /// Server process CPU over the sending phase, in cores, when `--server-pid` is given.
    pub server_cpu_cores: Option<f64>,
    /// Bind failures, connection losses, decode errors.
    pub problems: Vec<String>,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} binds={} window={} rate={} rd={} mix={} destinations={}: {:.0} submit_sm/s ok={} failed={} unanswered={} \
             resp p50={:.0}us p99={:.0}us p999={:.0}us max={:.0}us",
            self.target,
            self.binds,
            self.window,
            self.rate_target.map_or("max".to_string(), |r| r.to_string()),
            self.registered_delivery,
            self.mix,
            self.destinations,
            self.submit_sm_per_sec,
            self.submit_sm_ok,
            self.submit_sm_failed,
            self.submit_sm_unanswered,
            self.resp_latency.p50_us,
            self.resp_latency.p99_us,
            self.resp_latency.p999_us,
            self.resp_latency.max_us,
        );
        if self.registered_delivery {
            s += &format!(
                "; receipts {:.0}/s expected={} matched={} lost={} dup={} unknown={} p50={:.0}us p99={:.0}us",
                self.receipts_per_sec,
                self.receipts_expected,
                self.receipts_matched,
                self.receipts_lost,
                self.receipts_duplicated,
                self.receipts_unknown,
                self.receipt_latency.p50_us,
                self.receipt_latency.p99_us,
            );
        }
        s += &format!(
            "; generator cpu {:.2} cores (busiest thread {:.0}%)",
            self.generator_cpu_cores,
            self.generator_max_thread_util * 100.0
        );
        if let Some(c) = self.server_cpu_cores {
            s += &format!(", server cpu {c:.2} cores");
        }
        if !self.errors_by_status.is_empty() {
            s += &format!("; errors {:?}", self.errors_by_status);
        }
        if !self.problems.is_empty() {
            s += &format!("; problems {:?}", self.problems);
        }
        s
    }
}
