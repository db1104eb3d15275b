//! In-process [`Store`]: right for one replica (state dies with the process).

use super::{Correlation, Delivery, DeliveryId, Store, StoreError};
use futures::future::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A queued delivery and when it was queued (for ageing out).
#[derive(Debug)]
struct Entry {
    id: DeliveryId,
    d: Delivery,
    at: Instant,
}

#[derive(Debug, Default)]
struct Queue {
    ready: VecDeque<Entry>,
    out: HashMap<DeliveryId, Entry>,
    dead: VecDeque<Delivery>,
}

impl Queue {
    fn owed(&self) -> usize {
        self.ready.len() + self.out.len()
    }
}

#[derive(Debug)]
pub struct MemoryStore {
    ttl: Duration,
    correlations: Mutex<HashMap<(String, String), (Correlation, Instant)>>,
    queues: Mutex<HashMap<String, Queue>>,
    next_id: AtomicU64,
    /// Bind permits: (carrier, slot) -> (holder, expiry). Only this process's sessions share
    /// them (one replica), which still orders a reload's old and new binds.
    permits: Mutex<HashMap<(String, u32), (String, Instant)>>,
}

impl MemoryStore {
    pub fn new(ttl: Duration) -> Self {
        MemoryStore {
            ttl,
            correlations: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            permits: Mutex::new(HashMap::new()),
        }
    }

    fn permit(&self, carrier: &str, max: u32, holder: &str, ttl: Duration) -> Option<u32> {
        let now = Instant::now();
        let mut p = lock(&self.permits);
        let mine = (0..max).find(|s| p.get(&(carrier.to_owned(), *s)).is_some_and(|(h, _)| h == holder));
        let free = || (0..max).find(|s| p.get(&(carrier.to_owned(), *s)).is_none_or(|(_, exp)| *exp <= now));
        let slot = mine.or_else(free)?;
        p.insert((carrier.to_owned(), slot), (holder.to_owned(), now + ttl));
        Some(slot)
    }

    fn renew(&self, carrier: &str, slot: u32, holder: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut p = lock(&self.permits);
        let key = (carrier.to_owned(), slot);
        match p.get(&key) {
            Some((h, exp)) if h != holder && *exp > now => false,
            _ => {
                p.insert(key, (holder.to_owned(), now + ttl));
                true
            }
        }
    }

    /// Drop expired correlations; returns how many. Call now and then.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut c = lock(&self.correlations);
        let before = c.len();
        c.retain(|_, (_, exp)| *exp > now);
        before - c.len()
    }

    fn put(&self, upstream: &str, id: &str, c: Correlation) {
        let exp = Instant::now() + self.ttl;
        lock(&self.correlations).insert((upstream.to_owned(), id.to_owned()), (c, exp));
    }

    /// Queue `d` unless `account` owes `max` already.
    fn push(&self, account: &str, d: Delivery, max: usize) -> Result<(), StoreError> {
        let mut qs = lock(&self.queues);
        // Look up before `entry`: the account's name is only copied for its first delivery.
        let q = match qs.get_mut(account) {
            Some(q) => q,
            None => qs.entry(account.to_owned()).or_default(),
        };
        if q.owed() >= max {
            return Err(StoreError::Full);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        q.ready.push_back(Entry { id, d, at: Instant::now() });
        Ok(())
    }

    fn take(&self, upstream: &str, candidates: &[String], remove: bool) -> Option<Correlation> {
        let now = Instant::now();
        let mut map = lock(&self.correlations);
        for id in candidates {
            let key = (upstream.to_owned(), id.clone());
            let Some((c, exp)) = map.get(&key) else { continue };
            if *exp <= now {
                map.remove(&key);
                continue;
            }
            if remove {
                return map.remove(&key).map(|(c, _)| c);
            }
            return Some(c.clone());
        }
        None
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ready<T: Send + 'static>(v: T) -> BoxFuture<'static, T> {
    Box::pin(std::future::ready(v))
}

impl Store for MemoryStore {
    fn put_correlation<'a>(
        &'a self,
        upstream: &'a str,
        upstream_id: &'a str,
        c: Correlation,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.put(upstream, upstream_id, c);
        ready(Ok(()))
    }

    fn take_correlation<'a>(
        &'a self,
        upstream: &'a str,
        candidates: &'a [String],
        remove: bool,
    ) -> BoxFuture<'a, Result<Option<Correlation>, StoreError>> {
        ready(Ok(self.take(upstream, candidates, remove)))
    }

    fn enqueue_within<'a>(
        &'a self,
        account: &'a str,
        d: Delivery,
        max: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        ready(self.push(account, d, max))
    }

    fn enqueue_final_within<'a>(
        &'a self,
        account: &'a str,
        d: Delivery,
        upstream: &'a str,
        upstream_id: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        // In-process, so "both or neither" holds trivially: only a full queue refuses, before
        // anything changed.
        let r = self.push(account, d, max);
        if r.is_ok() {
            self.take(upstream, std::slice::from_ref(&upstream_id.to_owned()), true);
        }
        ready(r)
    }

    fn next_for<'a>(
        &'a self,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Option<(DeliveryId, Delivery)>, StoreError>> {
        let mut qs = lock(&self.queues);
        let item = qs.get_mut(account).and_then(|q| {
            let e = q.ready.pop_front()?;
            let item = (e.id, e.d.clone());
            q.out.insert(e.id, e);
            Some(item)
        });
        ready(Ok(item))
    }

    fn next_batch<'a>(
        &'a self,
        account: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<(DeliveryId, Delivery)>, StoreError>> {
        let mut qs = lock(&self.queues);
        let Some(q) = qs.get_mut(account) else { return ready(Ok(Vec::new())) };
        let n = max.min(q.ready.len());
        let mut items = Vec::with_capacity(n);
        for e in q.ready.drain(..n) {
            items.push((e.id, e.d.clone()));
            q.out.insert(e.id, e);
        }
        ready(Ok(items))
    }

    fn ack<'a>(&'a self, account: &'a str, id: DeliveryId) -> BoxFuture<'a, Result<(), StoreError>> {
        if let Some(q) = lock(&self.queues).get_mut(account) {
            q.out.remove(&id);
        }
        ready(Ok(()))
    }

    fn ack_many<'a>(
        &'a self,
        account: &'a str,
        ids: &'a [DeliveryId],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        if let Some(q) = lock(&self.queues).get_mut(account) {
            for id in ids {
                q.out.remove(id);
            }
        }
        ready(Ok(()))
    }

    fn nack<'a>(&'a self, account: &'a str, id: DeliveryId) -> BoxFuture<'a, Result<(), StoreError>> {
        if let Some(q) = lock(&self.queues).get_mut(account) {
            if let Some(e) = q.out.remove(&id) {
                q.ready.push_front(e);
            }
        }
        ready(Ok(()))
    }

    fn dead_letter<'a>(
        &'a self,
        account: &'a str,
        id: DeliveryId,
        _reason: &'a str,
        keep: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        if let Some(q) = lock(&self.queues).get_mut(account) {
            if let Some(e) = q.out.remove(&id) {
                q.dead.push_back(e.d);
                while q.dead.len() > keep {
                    q.dead.pop_front();
                }
            }
        }
        ready(Ok(()))
    }

    fn dead_letters<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        ready(Ok(lock(&self.queues).get(account).map_or(0, |q| q.dead.len())))
    }

    fn age_out<'a>(
        &'a self,
        account: &'a str,
        older_than: Duration,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        let Some(cutoff) = Instant::now().checked_sub(older_than) else { return ready(Ok(0)) };
        let mut qs = lock(&self.queues);
        let Some(q) = qs.get_mut(account) else { return ready(Ok(0)) };
        let before = q.owed();
        q.ready.retain(|e| e.at > cutoff);
        q.out.retain(|_, e| e.at > cutoff);
        ready(Ok(before - q.owed()))
    }

    fn purge<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        ready(Ok(lock(&self.queues).remove(account).map_or(0, |q| q.owed())))
    }

    fn pending<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        let n = lock(&self.queues).get(account).map_or(0, Queue::owed);
        ready(Ok(n))
    }

    fn pending_total(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        let n = lock(&self.queues).values().map(Queue::owed).sum();
        ready(Ok(n))
    }

    fn acquire_permit<'a>(
        &'a self,
        carrier: &'a str,
        max: u32,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<u32>, StoreError>> {
        ready(Ok(self.permit(carrier, max, holder, ttl)))
    }

    fn renew_permit<'a>(
        &'a self,
        carrier: &'a str,
        slot: u32,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(Ok(self.renew(carrier, slot, holder, ttl)))
    }

    fn release_permit<'a>(
        &'a self,
        carrier: &'a str,
        slot: u32,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut p = lock(&self.permits);
        let key = (carrier.to_owned(), slot);
        if p.get(&key).is_some_and(|(h, _)| h == holder) {
            p.remove(&key);
        }
        ready(Ok(()))
    }

    fn correlations(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        ready(Ok(lock(&self.correlations).len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn corr(id: &str) -> Correlation {
        Correlation { account: "a".into(), our_id: id.into(), submitted_at_ms: 1, registered_delivery: 1 }
    }

    #[tokio::test]
    async fn correlation_by_candidates_and_removal() {
        let s = MemoryStore::new(Duration::from_secs(60));
        s.put_correlation("up", "7b", corr("ours")).await.unwrap();
        let cands: Vec<String> = vec!["123".into(), "7b".into()];
        // Intermediate: kept.
        assert_eq!(s.take_correlation("up", &cands, false).await.unwrap(), Some(corr("ours")));
        // Other upstream: not found.
        assert_eq!(s.take_correlation("other", &cands, true).await.unwrap(), None);
        assert_eq!(s.take_correlation("up", &cands, true).await.unwrap(), Some(corr("ours")));
        assert_eq!(s.take_correlation("up", &cands, true).await.unwrap(), None);
    }

    #[tokio::test]
    async fn final_receipt_is_queued_and_its_correlation_forgotten_together() {
        let s = MemoryStore::new(Duration::from_secs(60));
        s.put_correlation("up", "7b", corr("ours")).await.unwrap();
        let cands: Vec<String> = vec!["123".into(), "7b".into()];
        let (i, c) = s.find_correlation("up", &cands).await.unwrap().expect("found");
        assert_eq!((cands[i].as_str(), c), ("7b", corr("ours")));
        // Finding changes nothing.
        assert!(s.find_correlation("up", &cands).await.unwrap().is_some());
        let d = Delivery { pdu: Bytes::from_static(b"r"), our_id: Some("ours".into()) };
        s.enqueue_final("a", d.clone(), "up", &cands[i]).await.unwrap();
        assert_eq!(s.next_for("a").await.unwrap().map(|(_, d)| d), Some(d));
        assert!(s.find_correlation("up", &cands).await.unwrap().is_none());
        assert_eq!(s.correlations().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn correlations_expire() {
        let s = MemoryStore::new(Duration::ZERO);
        s.put_correlation("up", "1", corr("x")).await.unwrap();
        assert_eq!(s.take_correlation("up", &["1".into()], true).await.unwrap(), None);
        s.put_correlation("up", "2", corr("x")).await.unwrap();
        assert_eq!(s.sweep(), 1);
    }

    #[tokio::test]
    async fn queue_is_consumer_style() {
        let s = MemoryStore::new(Duration::from_secs(60));
        let d = |n: u8| Delivery { pdu: Bytes::from(vec![n]), our_id: None };
        s.enqueue("a", d(1)).await.unwrap();
        s.enqueue("a", d(2)).await.unwrap();
        let (id1, got) = s.next_for("a").await.unwrap().unwrap();
        assert_eq!(got, d(1));
        assert_eq!(s.pending("a").await.unwrap(), 2);
        s.nack("a", id1).await.unwrap();
        let (id1b, got) = s.next_for("a").await.unwrap().unwrap();
        assert_eq!((id1b, got), (id1, d(1)));
        s.ack("a", id1).await.unwrap();
        let (id2, got) = s.next_for("a").await.unwrap().unwrap();
        assert_eq!(got, d(2));
        s.ack("a", id2).await.unwrap();
        assert!(s.next_for("a").await.unwrap().is_none());
        assert_eq!(s.pending_total().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn batches_keep_order_and_stay_owed_until_acked() {
        let s = MemoryStore::new(Duration::from_secs(60));
        let d = |n: u8| Delivery { pdu: Bytes::from(vec![n]), our_id: None };
        for n in 1..=5 {
            s.enqueue("a", d(n)).await.unwrap();
        }
        let first = s.next_batch("a", 3).await.unwrap();
        assert_eq!(first.iter().map(|(_, d)| d.pdu[0]).collect::<Vec<_>>(), [1, 2, 3]);
        let rest = s.next_batch("a", 10).await.unwrap();
        assert_eq!(rest.iter().map(|(_, d)| d.pdu[0]).collect::<Vec<_>>(), [4, 5]);
        assert!(s.next_batch("a", 10).await.unwrap().is_empty());
        assert!(s.next_batch("nobody", 10).await.unwrap().is_empty());
        // Handed out, not acked: still owed; a nacked one comes back first.
        assert_eq!(s.pending("a").await.unwrap(), 5);
        s.nack("a", first[1].0).await.unwrap();
        let ids: Vec<DeliveryId> =
            first.iter().chain(&rest).map(|(id, _)| *id).filter(|id| *id != first[1].0).collect();
        s.ack_many("a", &ids).await.unwrap();
        assert_eq!(s.pending("a").await.unwrap(), 1);
        let again = s.next_batch("a", 10).await.unwrap();
        assert_eq!(again, vec![(first[1].0, d(2))]);
        s.ack_many("a", &[first[1].0]).await.unwrap();
        assert_eq!(s.pending_total().await.unwrap(), 0);
    }
}
