//! Per-address limits on the SMPP listeners: open connections, and failed binds.
//!
//! An address is an IPv4 address, or the /64 an IPv6 address is in (one host usually holds a
//! whole /64). Entries are kept while the address has a connection or failures in the current
//! window; older ones are swept when the table grows, so the table stays bounded.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Above this many entries, idle ones are swept before a new one is added.
const SWEEP_ABOVE: usize = 4096;
/// Above this many, even addresses still in their failure window are forgotten (only an
/// attacker holding more addresses than this gains from it).
const MAX_TRACKED: usize = 65_536;

#[derive(Debug)]
struct Entry {
    connections: usize,
    window_start: Instant,
    failures: u32,
}

/// The per-address state of one listener set (plain and TLS share it).
#[derive(Debug, Default)]
pub struct PeerLimits {
    map: Mutex<HashMap<IpAddr, Entry>>,
}

/// An open connection counted against its address; uncounted when dropped.
#[derive(Debug)]
pub struct PeerConn {
    limits: Arc<PeerLimits>,
    key: IpAddr,
}

impl Drop for PeerConn {
    fn drop(&mut self) {
        let mut map = lock(&self.limits.map);
        if let Some(e) = map.get_mut(&self.key) {
            e.connections = e.connections.saturating_sub(1);
        }
    }
}

/// The address limits count against: IPv4 (also when mapped into IPv6), or the IPv6 /64.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PeerLimits {
    /// Count a new connection from `ip`, unless the address already has `max` open; `window`
    /// is the failed-bind window (for sweeping).
    pub fn connect(self: &Arc<Self>, ip: IpAddr, max: usize, window: Duration) -> Option<PeerConn> {
        let key = key(ip);
        let mut map = lock(&self.map);
        let e = entry(&mut map, key, Instant::now(), window);
        if e.connections >= max {
            return None;
        }
        e.connections += 1;
        Some(PeerConn { limits: self.clone(), key })
    }

    /// Whether binds from `ip` are refused unchecked: `limit` failed binds within `window`.
    pub fn bind_blocked(&self, ip: IpAddr, limit: u32, window: Duration) -> bool {
        let now = Instant::now();
        let map = lock(&self.map);
        map.get(&key(ip)).is_some_and(|e| now.duration_since(e.window_start) < window && e.failures >= limit)
    }

    /// Count a failed bind from `ip` (unknown system_id, wrong password, address not allowed).
    pub fn bind_failed(&self, ip: IpAddr, window: Duration) {
        let now = Instant::now();
        let mut map = lock(&self.map);
        let e = entry(&mut map, key(ip), now, window);
        if now.duration_since(e.window_start) >= window {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
    }

    /// Addresses tracked (for tests).
    pub fn tracked(&self) -> usize {
        lock(&self.map).len()
    }
}

/// The entry of `key`, made if new; a new key first sweeps a table past [`SWEEP_ABOVE`].
fn entry(map: &mut HashMap<IpAddr, Entry>, key: IpAddr, now: Instant, window: Duration) -> &mut Entry {
    if map.len() >= SWEEP_ABOVE && !map.contains_key(&key) {
        sweep(map, now, window);
    }
    map.entry(key).or_insert(Entry { connections: 0, window_start: now, failures: 0 })
}

/// Drop entries with no open connection whose failure window is over; past [`MAX_TRACKED`],
/// every entry without an open connection.
fn sweep(map: &mut HashMap<IpAddr, Entry>, now: Instant, window: Duration) {
    map.retain(|_, e| e.connections > 0 || (e.failures > 0 && now.duration_since(e.window_start) < window));
    if map.len() >= MAX_TRACKED {
        map.retain(|_, e| e.connections > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(key("10.1.2.3".parse().unwrap_or(IpAddr::from([0; 4]))), IpAddr::from([10, 1, 2, 3]));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(key(mapped), IpAddr::from([10, 1, 2, 3]));
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap_or(IpAddr::from([0; 4]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(key(a), key(b));
        assert_ne!(key(a), key(c));
    }

    #[test]
    fn connections_and_failures() {
        let l = Arc::new(PeerLimits::default());
        let ip = IpAddr::from([192, 0, 2, 1]);
        let w = Duration::from_secs(60);
        let a = l.connect(ip, 2, w).expect("first");
        let _b = l.connect(ip, 2, w).expect("second");
        assert!(l.connect(ip, 2, w).is_none());
        assert!(l.connect(IpAddr::from([192, 0, 2, 2]), 2, w).is_some());
        drop(a);
        assert!(l.connect(ip, 2, w).is_some());
        for _ in 0..3 {
            assert!(!l.bind_blocked(ip, 3, w));
            l.bind_failed(ip, w);
        }
        assert!(l.bind_blocked(ip, 3, w));
        assert!(!l.bind_blocked(IpAddr::from([192, 0, 2, 2]), 3, w));
        // A window that is over lifts the block.
        assert!(!l.bind_blocked(ip, 3, Duration::ZERO));
    }

    #[test]
    fn table_stays_bounded() {
        let l = Arc::new(PeerLimits::default());
        for i in 0..3 * SWEEP_ABOVE as u32 {
            drop(l.connect(IpAddr::from(i.to_be_bytes()), 1, Duration::from_secs(60)));
        }
        assert!(l.tracked() <= SWEEP_ABOVE + 1, "{}", l.tracked());
    }
}
