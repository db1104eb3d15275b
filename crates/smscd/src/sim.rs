//! The built-in target `sim`: accepts submits itself and, when a receipt is requested, produces
//! one after `sim.receipt_delay_ms` with an outcome drawn from `sim.outcomes`.
//!
//! Submits are answered inline by the inbound handler (no task or channel hop: this is the
//! benchmark path). A requested receipt becomes a [`SimJob`] on a queue; the sim task stores the
//! correlation under upstream `sim` with the sim's own message id (not ours) and, when due, hands
//! an upstream-style deliver_sm to [`crate::receipts`], the same path as a real upstream's
//! receipt (through the script's `on_pdu("deliver_sm")` when there is one, see
//! [`crate::handlers::deliver`]), so correlation, id rewriting and handlers are exercised end to
//! end. A receipt refused (queue full, a handler's reject) is logged and dropped: the sim does
//! not redeliver as an upstream would.

use crate::core::Core;
use crate::store::Correlation;
use bytes::Bytes;
use smpp::receipt::{MessageIdFormat, MessageState, Receipt, Stat};
use smpp::{Address, DeliverSm, SubmitSm};
use smsc_api::smscd_config::SimConfig;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Upstream name the sim's correlations are stored under.
pub const SIM_UPSTREAM: &str = "sim";

/// Receipts not yet generated beyond which the sim refuses submits wanting one (ESME_RMSGQFUL).
const QUEUE_CAP: usize = 1 << 20;

#[derive(Debug)]
pub struct SimJob {
    sim_id: String,
    correlation: Correlation,
    source: Address,
    destination: Address,
    text: String,
    submit_date: String,
    due: Instant,
}

pub struct Sim {
    cfg: RwLock<SimConfig>,
    next: AtomicU64,
    tx: mpsc::Sender<SimJob>,
    rx: Mutex<Option<mpsc::Receiver<SimJob>>>,
    /// Jobs queued or being processed.
    pending: AtomicUsize,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let (tx, rx) = mpsc::channel(QUEUE_CAP);
        Sim {
            cfg: RwLock::new(cfg),
            // Decimal ids from a random start: clearly not ours.
            next: AtomicU64::new(fastrand::u64(1_000_000..1_000_000_000)),
            tx,
            rx: Mutex::new(Some(rx)),
            pending: AtomicUsize::new(0),
        }
    }

    pub fn set_config(&self, cfg: SimConfig) {
        *self.cfg.write().unwrap_or_else(|p| p.into_inner()) = cfg;
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Queue the receipt for a submit the sim accepted as `our_id`. False when the queue is full.
    pub fn schedule(&self, account: &str, our_id: &str, sm: &SubmitSm) -> bool {
        let delay = self.cfg.read().unwrap_or_else(|p| p.into_inner()).receipt_delay_ms;
        let now = unix_ms();
        let job = SimJob {
            sim_id: self.next.fetch_add(1, Ordering::Relaxed).to_string(),
            correlation: Correlation {
                account: account.to_owned(),
                our_id: our_id.to_owned(),
                submitted_at_ms: now,
                registered_delivery: sm.registered_delivery,
            },
            source: sm.source.clone(),
            destination: sm.destination.clone(),
            text: printable_prefix(sm.payload()),
            submit_date: receipt_date(now),
            due: Instant::now() + Duration::from_millis(delay),
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn draw(&self) -> Stat {
        let cfg = self.cfg.read().unwrap_or_else(|p| p.into_inner());
        let total: f64 = cfg.outcomes.values().filter(|w| w.is_finite() && **w > 0.0).sum();
        let mut r = fastrand::f64() * total;
        for (word, w) in &cfg.outcomes {
            if !(w.is_finite() && *w > 0.0) {
                continue;
            }
            if r < *w {
                return MessageState::from_stat_word(word)
                    .map_or_else(|| Stat::Other(word.clone()), Stat::Known);
            }
            r -= w;
        }
        Stat::Known(MessageState::Delivered)
    }
}

/// Runs the receipt side of the sim until `core.stop`. When draining, due times are ignored so
/// every accepted submit gets its receipt before the sessions close.
pub async fn run(core: Arc<Core>, drain: tokio_util::sync::CancellationToken) {
    let rx = core.sim.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(mut rx) = rx else { return };
    loop {
        let job = tokio::select! {
            j = rx.recv() => j,
            _ = core.stop.cancelled() => None,
        };
        let Some(job) = job else { break };
        if let Err(e) = core.store.put_correlation(SIM_UPSTREAM, &job.sim_id, job.correlation.clone()).await {
            tracing::warn!(error = %e, "sim: cannot store correlation; receipt lost");
            core.sim.pending.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(job.due) => {}
            _ = drain.cancelled() => {}
        }
        let dsm = receipt_pdu(&core.sim, &job);
        // The script's on_pdu("deliver_sm") sees the sim's receipts as it sees an upstream's.
        let r = match crate::handlers::deliver::wanted(&core, false) {
            Some((h, hook)) => {
                let session = crate::handlers::deliver::sim_session();
                let hooked = crate::handlers::deliver::Hooked { h, hook, session };
                crate::handlers::deliver::deliver(&core, hooked, SIM_UPSTREAM, MessageIdFormat::Same, dsm)
                    .await
            }
            None => {
                crate::receipts::on_upstream_deliver(&core, SIM_UPSTREAM, MessageIdFormat::Same, dsm).await
            }
        };
        if let Err(status) = r {
            tracing::warn!(%status, sim_id = %job.sim_id, "sim receipt not accepted");
        }
        core.sim.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

fn receipt_pdu(sim: &Sim, job: &SimJob) -> DeliverSm {
    let stat = sim.draw();
    let delivered = stat == Stat::Known(MessageState::Delivered);
    let receipt = Receipt {
        id: job.sim_id.clone(),
        sub: Some("001".into()),
        dlvrd: Some(if delivered { "001" } else { "000" }.into()),
        submit_date: Some(job.submit_date.clone()),
        done_date: Some(receipt_date(unix_ms())),
        stat: stat.clone(),
        err: Some(if delivered { "000" } else { "001" }.into()),
        text: Some(job.text.clone()),
    };
    let mut dsm = DeliverSm {
        source: job.destination.clone(),
        destination: job.source.clone(),
        esm_class: smpp::pdu::esm_class::DELIVERY_RECEIPT,
        short_message: Bytes::from(receipt.to_text()),
        ..DeliverSm::default()
    };
    dsm.tlvs.set_receipted_message_id(job.sim_id.as_bytes());
    if let Some(state) = stat.state() {
        dsm.tlvs.set_message_state(state.as_u8());
    }
    dsm
}

fn printable_prefix(b: &[u8]) -> String {
    b.iter()
        .take(smpp::receipt::TEXT_LIMIT)
        .map(|&c| if (0x20..0x7f).contains(&c) { c as char } else { '?' })
        .collect()
}

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `YYMMDDhhmm` in UTC.
pub fn receipt_date(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{:02}{:02}{:02}{:02}{:02}", y % 100, m, d, rem / 3600, (rem % 3600) / 60)
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn dates() {
        // 2026-11-25T19:37:00Z
        assert_eq!(receipt_date(1_795_635_420_000), "2611251937");
        assert_eq!(receipt_date(0), "7001010000");
        assert_eq!(receipt_date(951_782_400_000), "0002290000"); // 2000-02-29
    }

    #[test]
    fn outcomes_follow_weights() {
        let sim = Sim::new(SimConfig {
            receipt_delay_ms: 0,
            outcomes: BTreeMap::from([("DELIVRD".into(), 0.0), ("UNDELIV".into(), 1.0)]),
        });
        assert!((0..100).all(|_| sim.draw() == Stat::Known(MessageState::Undeliverable)));
        sim.set_config(SimConfig {
            receipt_delay_ms: 0,
            outcomes: BTreeMap::from([("DELIVRD".into(), 3.0), ("REJECTD".into(), 1.0)]),
        });
        let delivered = (0..4000).filter(|_| sim.draw() == Stat::Known(MessageState::Delivered)).count();
        assert!((2700..3300).contains(&delivered), "{delivered}");
    }
}
