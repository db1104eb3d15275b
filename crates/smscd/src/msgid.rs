//! Our message ids: the only ids an ESME ever sees.
//!
//! 64 bits, rendered in lowercase hex without leading zeros (15 digits until 2033):
//!
//! ```text
//! | 31 bits: seconds since 2025-01-01 UTC | 13 bits: process node | 20 bits: counter |
//! ```
//!
//! The node is random per process start, so replicas (and restarts) differ there; seconds and
//! counter form one 51-bit logical clock that never goes backwards: each id takes
//! `max(now << 20, last + 1)`. A second with more than 2^20 ids borrows from the next second,
//! which the wall clock catches up with later, so a restart cannot reuse a value unless a process
//! ran more than its uptime ahead (sustained > 1M ids/s) and restarted with the same node.
//! Two replicas share a node with probability 1/8192 per pair; even then they collide only for
//! ids taken in the same second with the same counter value.
//!
//! No leading zeros, so [`smpp::receipt::normalize_message_id`] (which strips them, as ESMEs
//! often do) leaves our ids unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// 2025-01-01T00:00:00Z.
const EPOCH_SECS: u64 = 1_735_689_600;
const COUNTER_BITS: u32 = 20;
const NODE_BITS: u32 = 13;
const SECS_BITS: u32 = 31;

/// Generates ids; share one per process.
#[derive(Debug)]
pub struct IdGen {
    node: u64,
    /// `secs << COUNTER_BITS | counter` of the last id.
    clock: AtomicU64,
}

impl Default for IdGen {
    fn default() -> Self {
        IdGen::with_node(fastrand::u64(..1 << NODE_BITS))
    }
}

impl IdGen {
    pub fn with_node(node: u64) -> Self {
        IdGen { node: node & ((1 << NODE_BITS) - 1), clock: AtomicU64::new(0) }
    }

    /// The next id as a number.
    pub fn next_u64(&self) -> u64 {
        let now = now_secs() << COUNTER_BITS;
        let prev = self
            .clock
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)))
            .unwrap_or_else(|v| v);
        let clock = now.max(prev + 1);
        compose(clock, self.node)
    }

    /// The next id, rendered.
    pub fn next_id(&self) -> String {
        render(self.next_u64())
    }
}

fn now_secs() -> u64 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    secs.saturating_sub(EPOCH_SECS) & ((1 << SECS_BITS) - 1)
}

fn compose(clock: u64, node: u64) -> u64 {
    let secs = (clock >> COUNTER_BITS) & ((1 << SECS_BITS) - 1);
    let counter = clock & ((1 << COUNTER_BITS) - 1);
    secs << (NODE_BITS + COUNTER_BITS) | node << COUNTER_BITS | counter
}

/// Lowercase hex, no leading zeros.
pub fn render(id: u64) -> String {
    format!("{id:x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn unique_and_increasing_within_a_process() {
        let g = IdGen::with_node(5);
        let mut last = 0;
        let mut seen = HashSet::new();
        // More than one second's worth of counter: forces the carry into the seconds field.
        for _ in 0..(1 << COUNTER_BITS) + 10 {
            let id = g.next_u64();
            assert!(id > last);
            last = id;
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn node_separates_processes() {
        let a = IdGen::with_node(1).next_u64();
        let b = IdGen::with_node(2).next_u64();
        assert_ne!(a, b);
        assert_eq!((a >> COUNTER_BITS) & ((1 << NODE_BITS) - 1), 1);
        assert_eq!((b >> COUNTER_BITS) & ((1 << NODE_BITS) - 1), 2);
    }

    #[test]
    fn rendered_form_survives_normalisation() {
        let id = IdGen::default().next_id();
        assert!((13..=16).contains(&id.len()), "{id}");
        assert_eq!(smpp::receipt::normalize_message_id(&id), id);
    }

    #[test]
    fn concurrent_ids_are_unique() {
        let g = std::sync::Arc::new(IdGen::with_node(9));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..50_000).map(|_| g.next_u64()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(all.insert(id));
            }
        }
    }
}
