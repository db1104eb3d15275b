//! Our message ids: the only ids an ESME ever sees.
//!
//! 115 bits, rendered in lowercase hex without leading zeros (28-29 digits, well inside the 64
//! characters of an SMPP message_id):
//!
//! ```text
//! | 31 bits: seconds since 2025-01-01 UTC | 20 bits: counter | 64 bits: node |
//! ```
//!
//! The node identifies the generator: a 64-bit hash of the Pod's identity (`POD_UID`,
//! `POD_NAME`, the host name), the process id, the start time and 64 random bits, taken once per
//! process start. Ids of two generators with different nodes never collide, whatever their
//! clocks say: the node field differs. Replicas (and restarts of one) share a node only by a hash
//! collision: with `n` replicas the chance is about n²/2^65 (10^-12 for 6,000 replicas).
//! Earlier ids had a 13-bit random node beside a counter every replica starts at the same value
//! each second, so two replicas out of 8,192 pairs took the same ids.
//!
//! Seconds and counter form one 51-bit logical clock that never goes backwards within a process:
//! each id takes `max(now << 20, last + 1)`; a second with more than 2^20 ids borrows from the
//! next second.
//!
//! No leading zeros, so [`smpp::receipt::normalize_message_id`] (which strips them, as ESMEs
//! often do) leaves our ids unchanged.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// 2025-01-01T00:00:00Z.
const EPOCH_SECS: u64 = 1_735_689_600;
const COUNTER_BITS: u32 = 20;
const SECS_BITS: u32 = 31;
const NODE_BITS: u32 = 64;

/// Generates ids; share one per process.
#[derive(Debug)]
pub struct IdGen {
    node: u64,
    /// `secs << COUNTER_BITS | counter` of the last id.
    clock: AtomicU64,
}

impl Default for IdGen {
    /// A generator whose node is this process's: see [`node_for`].
    fn default() -> Self {
        let env = |k: &str| std::env::var(k).ok();
        let host = env("HOSTNAME").or_else(|| std::fs::read_to_string("/etc/hostname").ok());
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let nonce = (std::process::id(), started, fastrand::u64(..));
        IdGen::with_node(node_for(&[env("POD_UID"), env("POD_NAME"), host], nonce))
    }
}

/// A 64-bit node from a replica's identity (absent parts allowed) and a per-start nonce.
pub fn node_for(identity: &[Option<String>], nonce: impl Hash) -> u64 {
    // Fixed keys (not RandomState): the same inputs give the same node within a build.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    identity.hash(&mut h);
    nonce.hash(&mut h);
    h.finish()
}

impl IdGen {
    pub fn with_node(node: u64) -> Self {
        IdGen { node, clock: AtomicU64::new(0) }
    }

    /// This generator's node.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The next id as a number.
    pub fn next_u128(&self) -> u128 {
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
        render(self.next_u128())
    }
}

fn now_secs() -> u64 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // At least 1, so the rendered id always has its full length (no leading zero nibbles).
    (secs.saturating_sub(EPOCH_SECS) & ((1 << SECS_BITS) - 1)).max(1)
}

fn compose(clock: u64, node: u64) -> u128 {
    let clock = u128::from(clock) & ((1u128 << (SECS_BITS + COUNTER_BITS)) - 1);
    clock << NODE_BITS | u128::from(node)
}

/// Lowercase hex, no leading zeros.
pub fn render(id: u128) -> String {
    format!("{id:x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn node_of(id: u128) -> u64 {
        id as u64
    }

    #[test]
    fn unique_and_increasing_within_a_process() {
        let g = IdGen::with_node(5);
        let mut last = 0;
        let mut seen = HashSet::new();
        // More than one second's worth of counter: forces the carry into the seconds field.
        for _ in 0..(1 << COUNTER_BITS) + 10 {
            let id = g.next_u128();
            assert!(id > last);
            last = id;
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn node_separates_processes() {
        let a = IdGen::with_node(1).next_u128();
        let b = IdGen::with_node(2).next_u128();
        assert_ne!(a, b);
        assert_eq!(node_of(a), 1);
        assert_eq!(node_of(b), 2);
        // Same clock, different node: never the same id.
        assert_eq!(compose(7, 1) >> NODE_BITS, compose(7, 2) >> NODE_BITS);
        assert_ne!(compose(7, 1), compose(7, 2));
    }

    #[test]
    fn rendered_form_survives_normalisation() {
        let id = IdGen::default().next_id();
        assert!((21..=29).contains(&id.len()), "{id}");
        assert!(id.len() <= 64, "SMPP message_id limit");
        assert_eq!(smpp::receipt::normalize_message_id(&id), id);
    }

    /// Issue 14: a thousand replicas starting together, each taking ids in the same second (so
    /// every one reuses the same counter values): no id is taken twice. With the former 13-bit
    /// random node, ~61 pairs of these replicas shared a node and so took the same ids.
    #[test]
    fn many_replicas_in_the_same_second_never_collide() {
        let replicas: Vec<IdGen> = (0..1000).map(|_| IdGen::default()).collect();
        let mut all = HashSet::new();
        for round in 0..200 {
            for g in &replicas {
                let id = g.next_u128();
                assert!(all.insert(id), "id {id:x} taken twice (round {round})");
            }
        }
        let nodes: HashSet<u64> = replicas.iter().map(IdGen::node).collect();
        assert_eq!(nodes.len(), replicas.len());
    }

    /// The node follows the Pod identity: 10,000 Pods with the same nonce get 10,000 nodes, and
    /// one Pod restarted (another nonce) gets another.
    #[test]
    fn node_follows_pod_identity_and_start() {
        let nodes: HashSet<u64> = (0..10_000)
            .map(|i| node_for(&[Some(format!("uid-{i}")), Some(format!("smscd-{i}")), None], 0u64))
            .collect();
        assert_eq!(nodes.len(), 10_000);
        let pod = [Some("uid-1".to_string()), Some("smscd-1".to_string()), None];
        assert_eq!(node_for(&pod, 1u64), node_for(&pod, 1u64));
        assert_ne!(node_for(&pod, 1u64), node_for(&pod, 2u64));
    }

    #[test]
    fn concurrent_ids_are_unique() {
        let g = std::sync::Arc::new(IdGen::with_node(9));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..50_000).map(|_| g.next_u128()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().unwrap_or_default() {
                assert!(all.insert(id));
            }
        }
    }
}
