//! ESME accounts: bind authorisation (password, client address, bind type, bind count), the
//! per-account throttle and window, and the account's receiving sessions (for deliveries).
//!
//! Account state lives as long as the account is configured: a reload updates limits in place,
//! so throttle buckets and bind counts survive it.

use crate::throttle::TokenBucket;
use ipnet::IpNet;
use smpp::session::{BindKind, Session};
use smpp::CommandStatus;
use smsc_api::smscd_config::{AccountConfig, BindType};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

#[derive(Debug)]
struct Policy {
    password: Vec<u8>,
    /// None: any address.
    cidrs: Option<Vec<IpNet>>,
    bind_types: Vec<BindType>,
    max_binds: Option<u32>,
}

impl Policy {
    fn new(cfg: &AccountConfig) -> Policy {
        let cidrs = (!cfg.allowed_cidrs.is_empty()).then(|| {
            cfg.allowed_cidrs
                .iter()
                .filter_map(|s| {
                    let parsed = s
                        .parse::<IpNet>()
                        .ok()
                        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from));
                    if parsed.is_none() {
                        tracing::warn!(account = %cfg.system_id, cidr = %s, "ignoring invalid allowed_cidrs entry");
                    }
                    parsed
                })
                .collect()
        });
        Policy {
            password: cfg.password.as_bytes().to_vec(),
            cidrs,
            bind_types: cfg.bind_types.clone(),
            max_binds: cfg.max_binds,
        }
    }
}

/// One account's live state.
#[derive(Debug)]
pub struct AccountState {
    pub system_id: String,
    policy: RwLock<Policy>,
    pub throttle: TokenBucket,
    /// Outstanding deferred submits per session.
    window: AtomicUsize,
    binds: AtomicU32,
    receivers: Mutex<Vec<(u64, Session)>>,
    rr: AtomicUsize,
    removed: AtomicBool,
    /// Made for an ESME an `on_bind` handler accepted without a configured account: kept across
    /// reloads that do not name it.
    dynamic: AtomicBool,
    /// Wakes the account's delivery loop: a delivery was queued or a receiver bound.
    pub wake: Notify,
}

impl AccountState {
    fn new(cfg: &AccountConfig) -> Self {
        AccountState {
            system_id: cfg.system_id.clone(),
            policy: RwLock::new(Policy::new(cfg)),
            throttle: TokenBucket::new(cfg.max_msg_per_sec),
            window: AtomicUsize::new(cfg.window.max(1)),
            binds: AtomicU32::new(0),
            receivers: Mutex::new(Vec::new()),
            rr: AtomicUsize::new(0),
            removed: AtomicBool::new(false),
            dynamic: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn update(&self, cfg: &AccountConfig) {
        self.dynamic.store(false, Ordering::Relaxed);
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Policy::new(cfg);
        self.throttle.set_rate(cfg.max_msg_per_sec);
        self.window.store(cfg.window.max(1), Ordering::Relaxed);
    }

    pub fn window(&self) -> usize {
        self.window.load(Ordering::Relaxed)
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    pub fn binds(&self) -> u32 {
        self.binds.load(Ordering::Relaxed)
    }

    /// Register a bound session that can take deliver_sm.
    pub fn add_receiver(&self, id: u64, s: Session) {
        lock(&self.receivers).push((id, s));
        self.wake.notify_one();
    }

    pub fn remove_receiver(&self, id: u64) {
        lock(&self.receivers).retain(|(i, _)| *i != id);
    }

    /// The next receiving session, round-robin; None while the account has none.
    pub fn pick_receiver(&self) -> Option<Session> {
        let r = lock(&self.receivers);
        // Called per delivery: count and index instead of collecting the live ones.
        let live = || r.iter().map(|(_, s)| s).filter(|s| s.close_reason().is_none());
        let n = live().count();
        if n == 0 {
            return None;
        }
        let i = self.rr.fetch_add(1, Ordering::Relaxed) % n;
        live().nth(i).cloned()
    }

    pub fn has_receiver(&self) -> bool {
        lock(&self.receivers).iter().any(|(_, s)| s.close_reason().is_none())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Held by a bound session; releases its bind slot when dropped.
#[derive(Debug)]
pub struct BindSlot {
    pub account: Arc<AccountState>,
}

impl Drop for BindSlot {
    fn drop(&mut self) {
        self.account.binds.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a bind was refused. The ESME always gets [`BindRefusal::status`], `ESME_RBINDFAIL`, so a
/// bind never tells which of system_id, password or address was wrong; the reason is for logs
/// and for counting failed binds per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindRefusal {
    UnknownSystemId,
    AddressNotAllowed,
    WrongPassword,
    BindTypeNotAllowed,
    TooManyBinds,
}

impl BindRefusal {
    /// What the ESME is answered: the same for every refusal.
    pub fn status(self) -> CommandStatus {
        CommandStatus::ESME_RBINDFAIL
    }

    /// A failed authentication (counted against the address), as opposed to an authenticated
    /// account's bind that is not allowed now.
    pub fn is_auth_failure(self) -> bool {
        matches!(self, Self::UnknownSystemId | Self::AddressNotAllowed | Self::WrongPassword)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownSystemId => "unknown system_id",
            Self::AddressNotAllowed => "address not in allowed_cidrs",
            Self::WrongPassword => "wrong password",
            Self::BindTypeNotAllowed => "bind type not allowed",
            Self::TooManyBinds => "max_binds reached",
        }
    }
}

/// Compared against when the system_id is unknown, so that case costs what a password check
/// costs.
const DUMMY_PASSWORD: [u8; 8] = [0; 8];

/// Every configured account.
#[derive(Debug, Default)]
pub struct Accounts {
    map: RwLock<HashMap<String, Arc<AccountState>>>,
    next_session: AtomicU64,
}

fn kind_type(k: BindKind) -> BindType {
    match k {
        BindKind::Transmitter => BindType::Transmitter,
        BindKind::Receiver => BindType::Receiver,
        BindKind::Transceiver => BindType::Transceiver,
    }
}

impl Accounts {
    /// Apply a config: update existing accounts in place, add new ones, mark removed ones.
    /// Returns (added, removed).
    pub fn apply(&self, cfgs: &[AccountConfig]) -> (Vec<Arc<AccountState>>, Vec<Arc<AccountState>>) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut added = Vec::new();
        for cfg in cfgs {
            match map.get(&cfg.system_id) {
                Some(s) => s.update(cfg),
                None => {
                    let s = Arc::new(AccountState::new(cfg));
                    map.insert(cfg.system_id.clone(), s.clone());
                    added.push(s);
                }
            }
        }
        let keep: std::collections::HashSet<&str> = cfgs.iter().map(|c| c.system_id.as_str()).collect();
        let gone: Vec<String> = map
            .iter()
            .filter(|(k, s)| !keep.contains(k.as_str()) && !s.dynamic.load(Ordering::Relaxed))
            .map(|(k, _)| k.clone())
            .collect();
        let removed = gone
            .iter()
            .filter_map(|k| map.remove(k))
            .inspect(|s| {
                s.removed.store(true, Ordering::Relaxed);
                s.wake.notify_one();
            })
            .collect();
        (added, removed)
    }

    pub fn get(&self, system_id: &str) -> Option<Arc<AccountState>> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).get(system_id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<AccountState>> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Authenticate an HTTP API request as `system_id`: the address allow-list first, then the
    /// password (`None`: a bearer token already named the account). No bind slot is taken.
    pub fn authenticate(
        &self,
        system_id: &str,
        password: Option<&[u8]>,
        peer: Option<IpAddr>,
    ) -> Result<Arc<AccountState>, BindRefusal> {
        let Some(account) = self.get(system_id) else {
            let _ = DUMMY_PASSWORD.as_slice().ct_eq(password.unwrap_or_default());
            return Err(BindRefusal::UnknownSystemId);
        };
        {
            let p = account.policy.read().unwrap_or_else(|p| p.into_inner());
            if let Some(cidrs) = &p.cidrs {
                let ip = peer.map(|ip| ip.to_canonical());
                if !ip.is_some_and(|ip| cidrs.iter().any(|n| n.contains(&ip))) {
                    return Err(BindRefusal::AddressNotAllowed);
                }
            }
            if let Some(pw) = password {
                if !bool::from(p.password.as_slice().ct_eq(pw)) {
                    return Err(BindRefusal::WrongPassword);
                }
            }
        }
        Ok(account)
    }

    /// Bind `system_id` because an `on_bind` handler accepted it: no password, address or bind
    /// type check (the handler decided), but a configured account's `max_binds` still holds. An
    /// unknown system_id gets an account of its own with `window` and no throttle, returned
    /// second so the caller starts its delivery loop.
    pub fn admit(
        &self,
        system_id: &str,
        window: usize,
    ) -> Result<(BindSlot, Option<Arc<AccountState>>), BindRefusal> {
        let (account, added) = {
            let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
            match map.get(system_id) {
                Some(a) => (a.clone(), None),
                None => {
                    let cfg = AccountConfig {
                        system_id: system_id.to_owned(),
                        password: String::new(),
                        allowed_cidrs: vec![],
                        bind_types: vec![],
                        max_msg_per_sec: None,
                        window,
                        max_binds: None,
                    };
                    let a = Arc::new(AccountState::new(&cfg));
                    a.dynamic.store(true, Ordering::Relaxed);
                    map.insert(system_id.to_owned(), a.clone());
                    (a.clone(), Some(a))
                }
            }
        };
        let max_binds = account.policy.read().unwrap_or_else(|p| p.into_inner()).max_binds;
        let took = account.binds.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            max_binds.is_none_or(|m| n < m).then_some(n + 1)
        });
        if took.is_err() {
            return Err(BindRefusal::TooManyBinds);
        }
        Ok((BindSlot { account }, added))
    }

    /// Decide a bind: the account's address allow-list first, then the password (compared in
    /// constant time for equal lengths), bind type and bind count.
    pub fn authorize(
        &self,
        system_id: &[u8],
        password: &[u8],
        kind: BindKind,
        peer: Option<IpAddr>,
    ) -> Result<BindSlot, BindRefusal> {
        let account = std::str::from_utf8(system_id).ok().and_then(|id| self.get(id));
        let Some(account) = account else {
            let _ = DUMMY_PASSWORD.as_slice().ct_eq(password);
            return Err(BindRefusal::UnknownSystemId);
        };
        let max_binds = {
            let p = account.policy.read().unwrap_or_else(|p| p.into_inner());
            if let Some(cidrs) = &p.cidrs {
                let ip = peer.map(|ip| ip.to_canonical());
                if !ip.is_some_and(|ip| cidrs.iter().any(|n| n.contains(&ip))) {
                    return Err(BindRefusal::AddressNotAllowed);
                }
            }
            if !bool::from(p.password.as_slice().ct_eq(password)) {
                return Err(BindRefusal::WrongPassword);
            }
            if !p.bind_types.is_empty() && !p.bind_types.contains(&kind_type(kind)) {
                return Err(BindRefusal::BindTypeNotAllowed);
            }
            p.max_binds
        };
        let took = account.binds.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            max_binds.is_none_or(|m| n < m).then_some(n + 1)
        });
        if took.is_err() {
            return Err(BindRefusal::TooManyBinds);
        }
        Ok(BindSlot { account })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct() -> AccountConfig {
        AccountConfig {
            system_id: "esme".into(),
            password: "secret".into(),
            allowed_cidrs: vec!["10.0.0.0/8".into(), "127.0.0.1".into()],
            bind_types: vec![BindType::Transceiver, BindType::Transmitter],
            max_msg_per_sec: None,
            window: 8,
            max_binds: Some(1),
        }
    }

    #[test]
    fn bind_decisions() {
        let a = Accounts::default();
        a.apply(&[acct()]);
        let lo = Some(IpAddr::from([127, 0, 0, 1]));
        let t = BindKind::Transceiver;
        assert_eq!(a.authorize(b"nobody", b"secret", t, lo).unwrap_err(), BindRefusal::UnknownSystemId);
        assert_eq!(a.authorize(b"\xff", b"secret", t, lo).unwrap_err(), BindRefusal::UnknownSystemId);
        assert_eq!(a.authorize(b"esme", b"secreT", t, lo).unwrap_err(), BindRefusal::WrongPassword);
        assert_eq!(a.authorize(b"esme", b"", t, lo).unwrap_err(), BindRefusal::WrongPassword);
        let outside = Some(IpAddr::from([192, 168, 1, 1]));
        assert_eq!(a.authorize(b"esme", b"secret", t, outside).unwrap_err(), BindRefusal::AddressNotAllowed);
        // The allow-list comes first: outside it, a wrong password is not even looked at.
        assert_eq!(a.authorize(b"esme", b"wrong", t, outside).unwrap_err(), BindRefusal::AddressNotAllowed);
        assert_eq!(
            a.authorize(b"esme", b"secret", BindKind::Receiver, lo).unwrap_err(),
            BindRefusal::BindTypeNotAllowed
        );
        let slot = a.authorize(b"esme", b"secret", t, Some(IpAddr::from([10, 1, 2, 3]))).unwrap();
        // max_binds 1 reached.
        assert_eq!(a.authorize(b"esme", b"secret", t, lo).unwrap_err(), BindRefusal::TooManyBinds);
        // Every refusal answers the ESME the same.
        for r in [
            BindRefusal::UnknownSystemId,
            BindRefusal::AddressNotAllowed,
            BindRefusal::WrongPassword,
            BindRefusal::BindTypeNotAllowed,
            BindRefusal::TooManyBinds,
        ] {
            assert_eq!(r.status(), CommandStatus::ESME_RBINDFAIL);
        }
        drop(slot);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(a.authorize(b"esme", b"secret", t, Some(mapped)).is_ok());
    }

    #[test]
    fn reload_keeps_state_and_removes() {
        let a = Accounts::default();
        let (added, _) = a.apply(&[acct()]);
        assert_eq!(added.len(), 1);
        let s1 = a.get("esme").unwrap();
        let mut c = acct();
        c.window = 3;
        let (added, removed) = a.apply(&[c]);
        assert!(added.is_empty() && removed.is_empty());
        assert!(Arc::ptr_eq(&s1, &a.get("esme").unwrap()));
        assert_eq!(s1.window(), 3);
        let (_, removed) = a.apply(&[]);
        assert_eq!(removed.len(), 1);
        assert!(s1.is_removed());
    }
}
