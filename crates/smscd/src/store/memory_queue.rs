//! [`MessageQueue`] in this process (one replica): held submits are lost at a restart, which the
//! config validation warns about.

use super::queue::{Change, Final, Lookup, MessageQueue, Queued, Replacement, Stats};
use super::StoreError;
use futures::future::BoxFuture;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

struct Held {
    m: Queued,
    /// Its key in `order`: (due or lease end, insertion sequence).
    key: (u64, u64),
    claimed_until: u64,
}

/// Ids relayed or ended that one account's store remembers at most (the oldest go first beyond
/// it): about 150 bytes each, so a busy relay does not hold `keep_relayed` of ids in memory.
pub const MAX_KEPT: usize = 1_000_000;

#[derive(Default)]
struct Account {
    held: HashMap<String, Held>,
    order: BTreeSet<(u64, u64, String)>,
    /// (accepted at, insertion sequence, id) of the held ones: the oldest first.
    oldest: BTreeSet<(u64, u64, String)>,
    /// Held per route label.
    routes: HashMap<String, usize>,
    /// Relayed (None: ENROUTE) or ended: (state, at, forget at).
    ended: HashMap<String, (Option<Final>, u64, u64)>,
    /// (forget at, id), oldest first; an id written again has a later entry too, and only the
    /// entry matching its current forget time removes it.
    forget: VecDeque<(u64, String)>,
}

impl Account {
    fn prune(&mut self, now_ms: u64) {
        while let Some((at, id)) = self.forget.front() {
            let over = self.forget.len() > MAX_KEPT;
            if *at > now_ms && !over {
                break;
            }
            if over || self.ended.get(id).is_some_and(|(_, _, f)| f <= at) {
                self.ended.remove(id);
            }
            self.forget.pop_front();
        }
    }

    fn reorder(&mut self, id: &str, due: u64) {
        if let Some(h) = self.held.get_mut(id) {
            self.order.remove(&(h.key.0, h.key.1, id.to_owned()));
            h.key.0 = due;
            self.order.insert((due, h.key.1, id.to_owned()));
        }
    }

    fn unhold(&mut self, id: &str) {
        if let Some(h) = self.held.remove(id) {
            self.order.remove(&(h.key.0, h.key.1, id.to_owned()));
            self.oldest.remove(&(h.m.submitted_ms, h.key.1, id.to_owned()));
            if let Some(n) = self.routes.get_mut(&h.m.route) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.routes.remove(&h.m.route);
                }
            }
        }
    }

    fn keep(&mut self, id: &str, state: Option<Final>, now_ms: u64, keep: Duration) {
        let forget_at = now_ms.saturating_add(keep.as_millis() as u64);
        self.ended.insert(id.to_owned(), (state, now_ms, forget_at));
        self.forget.push_back((forget_at, id.to_owned()));
        self.prune(now_ms);
    }

    fn end(&mut self, id: &str, state: Final, now_ms: u64, keep: Duration) {
        self.unhold(id);
        self.keep(id, Some(state), now_ms, keep);
    }

    /// Held, or ended (a relayed id is neither: cancel/replace cannot reach it).
    fn ended_state(&self, id: &str) -> Option<Option<Final>> {
        self.ended.get(id).map(|(s, _, _)| *s)
    }
}

#[derive(Default)]
pub struct MemoryQueue {
    accounts: Mutex<HashMap<String, Account>>,
    seq: std::sync::atomic::AtomicU64,
}

impl MemoryQueue {
    fn with<T>(&self, account: &str, f: impl FnOnce(&mut Account) -> T) -> T {
        let mut all = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        f(all.entry(account.to_owned()).or_default())
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl MessageQueue for MemoryQueue {
    fn put<'a>(
        &'a self,
        account: &'a str,
        m: &'a Queued,
        max: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ready(self.with(account, |a| {
            if a.held.len() >= max {
                return Err(StoreError::Full);
            }
            a.order.insert((m.due_ms, seq, m.id.clone()));
            a.oldest.insert((m.submitted_ms, seq, m.id.clone()));
            *a.routes.entry(m.route.clone()).or_insert(0) += 1;
            a.held.insert(m.id.clone(), Held { m: m.clone(), key: (m.due_ms, seq), claimed_until: 0 });
            Ok(())
        }))
    }

    fn claim<'a>(
        &'a self,
        account: &'a str,
        now_ms: u64,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Queued>, StoreError>> {
        let until = now_ms.saturating_add(lease.as_millis() as u64);
        ready(self.with(account, |a| {
            let due: Vec<String> = a
                .order
                .iter()
                .take_while(|(d, _, _)| *d <= now_ms)
                .take(max)
                .map(|(_, _, id)| id.clone())
                .collect();
            let mut out = Vec::with_capacity(due.len());
            for id in due {
                a.reorder(&id, until);
                if let Some(h) = a.held.get_mut(&id) {
                    h.claimed_until = until;
                    out.push(h.m.clone());
                }
            }
            Ok(out)
        }))
    }

    fn retry<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        due_ms: u64,
        attempts: u32,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        ready(self.with(account, |a| {
            a.reorder(id, due_ms);
            if let Some(h) = a.held.get_mut(id) {
                h.claimed_until = 0;
                h.m.due_ms = due_ms;
                h.m.attempts = attempts;
            }
            Ok(())
        }))
    }

    fn relayed<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        ready(self.with(account, |a| {
            a.unhold(id);
            // A final receipt that came first stays.
            if !matches!(a.ended_state(id), Some(Some(_))) {
                a.keep(id, None, now_ms, keep);
            }
            Ok(())
        }))
    }

    fn finish<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        state: Final,
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        ready(self.with(account, |a| {
            a.end(id, state, now_ms, keep);
            Ok(())
        }))
    }

    fn lookup<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lookup>, StoreError>> {
        ready(self.with(account, |a| {
            a.prune(now_ms);
            if let Some(h) = a.held.get(id) {
                return Ok(Some(Lookup::Waiting { message: h.m.clone(), claimed: h.claimed_until > now_ms }));
            }
            Ok(a.ended.get(id).map(|(state, at_ms, _)| match state {
                Some(state) => Lookup::Ended { state: *state, at_ms: *at_ms },
                None => Lookup::Relayed { at_ms: *at_ms },
            }))
        }))
    }

    fn cancel<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        now_ms: u64,
        keep: Duration,
    ) -> BoxFuture<'a, Result<Change, StoreError>> {
        ready(self.with(account, |a| {
            a.prune(now_ms);
            match a.held.get(id) {
                Some(h) if h.claimed_until > now_ms => Ok(Change::InFlight),
                Some(_) => {
                    a.end(id, Final::Deleted, now_ms, keep);
                    Ok(Change::Done)
                }
                None if a.ended.contains_key(id) => Ok(Change::Ended),
                None => Ok(Change::Unknown),
            }
        }))
    }

    fn replace<'a>(
        &'a self,
        account: &'a str,
        id: &'a str,
        r: &'a Replacement,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Change, StoreError>> {
        ready(self.with(account, |a| {
            a.prune(now_ms);
            let due = match a.held.get_mut(id) {
                Some(h) if h.claimed_until > now_ms => return Ok(Change::InFlight),
                Some(h) => {
                    h.m.submit = r.submit.clone();
                    if let Some(e) = r.expires_ms {
                        h.m.expires_ms = e;
                    }
                    if let Some(d) = r.due_ms {
                        h.m.due_ms = d;
                    }
                    h.m.due_ms
                }
                None if a.ended.contains_key(id) => return Ok(Change::Ended),
                None => return Ok(Change::Unknown),
            };
            a.reorder(id, due);
            Ok(Change::Done)
        }))
    }

    fn depth<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<(usize, Option<u64>), StoreError>> {
        ready(self.with(account, |a| Ok((a.held.len(), a.order.first().map(|(d, _, _)| *d)))))
    }

    fn stats<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<Stats, StoreError>> {
        ready(self.with(account, |a| {
            let mut by_route: Vec<(String, usize)> = a.routes.iter().map(|(r, n)| (r.clone(), *n)).collect();
            by_route.sort();
            Ok(Stats {
                held: a.held.len(),
                first_due_ms: a.order.first().map(|(d, _, _)| *d),
                oldest_ms: a.oldest.first().map(|(s, _, _)| *s),
                by_route,
            })
        }))
    }

    fn list<'a>(&'a self, account: &'a str, max: usize) -> BoxFuture<'a, Result<Vec<Queued>, StoreError>> {
        ready(self.with(account, |a| {
            Ok(a.order
                .iter()
                .take(max)
                .filter_map(|(_, _, id)| a.held.get(id).map(|h| h.m.clone()))
                .collect())
        }))
    }
}
