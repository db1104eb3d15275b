//! Outstanding outbound requests, keyed by sequence number, each with a deadline.
//!
//! The window itself is a semaphore owned by the session handle: a caller takes a permit before
//! its request is queued and the permit lives in the table entry, so a slot frees exactly when
//! the response arrives, the request times out or the session ends. One timer covers the whole
//! table: it is armed at the earliest deadline and a fire scans the table (at most `window`
//! entries plus the keepalive and unbind), which happens once per timeout period at most.

use super::error::SessionError;
use super::shared::Shared;
use crate::command_id::CommandId;
use crate::pdu::{Body, Pdu};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::{Instant, Sleep};

/// What [`Reserved::send_with`](super::Reserved::send_with) calls with the request's
/// body (handed back, e.g. to send it elsewhere) and its outcome.
pub type OnResponse = Box<dyn FnOnce(Body, Result<Pdu, SessionError>) + Send>;

/// Where an outbound request's outcome goes: a waiting task, or a callback run on the session task
/// (no task and no wake-up per request).
#[derive(Debug)]
pub(crate) enum ReplyTx {
    Oneshot(oneshot::Sender<Result<Pdu, SessionError>>),
    Callback(Completion),
}

impl ReplyTx {
    pub(crate) fn send(self, r: Result<Pdu, SessionError>) {
        match self {
            ReplyTx::Oneshot(tx) => {
                let _ = tx.send(r);
            }
            ReplyTx::Callback(mut c) => {
                if let Some(inner) = c.inner.take() {
                    let (f, body) = *inner;
                    f(body, r);
                }
            }
        }
    }
}

/// A callback that runs exactly once: dropped uncalled (its command lost with the session task),
/// it reports the session closed.
pub(crate) struct Completion {
    /// Boxed: the pending table moves its entries, so they stay small.
    inner: Option<Box<(OnResponse, Body)>>,
    shared: Arc<Shared>,
}

impl Completion {
    pub(crate) fn new(f: OnResponse, body: Body, shared: Arc<Shared>) -> Self {
        Completion { inner: Some(Box::new((f, body))), shared }
    }
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Completion")
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let (f, body) = *inner;
            f(body, Err(SessionError::Closed(self.shared.reason_or_closed())));
        }
    }
}

/// Who waits for a response.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// An application request; the permit is its window slot.
    Caller { reply: ReplyTx, _permit: Option<OwnedSemaphorePermit>, timeout: Duration },
    /// Our keepalive.
    EnquireLink,
    /// Our unbind.
    Unbind,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) command_id: CommandId,
    pub(crate) deadline: Instant,
    pub(crate) waiter: Waiter,
}

#[derive(Debug)]
pub(crate) struct PendingTable {
    map: HashMap<u32, Entry>,
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl PendingTable {
    pub(crate) fn with_capacity(n: usize) -> Self {
        PendingTable {
            map: HashMap::with_capacity(n),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn contains(&self, seq: u32) -> bool {
        self.map.contains_key(&seq)
    }

    pub(crate) fn insert(&mut self, seq: u32, entry: Entry) {
        if self.armed.is_none_or(|at| entry.deadline < at) {
            self.armed = Some(entry.deadline);
            self.timer.as_mut().reset(entry.deadline);
        }
        self.map.insert(seq, entry);
    }

    pub(crate) fn take(&mut self, seq: u32) -> Option<Entry> {
        self.map.remove(&seq)
    }

    /// Entries whose deadline has passed, once the timer fires; re-arms for the rest.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Vec<(u32, Entry)>> {
        if self.armed.is_none() || self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let now = Instant::now();
        let expired: Vec<u32> = self.map.iter().filter(|(_, e)| e.deadline <= now).map(|(s, _)| *s).collect();
        let out: Vec<(u32, Entry)> =
            expired.into_iter().filter_map(|s| self.map.remove(&s).map(|e| (s, e))).collect();
        self.armed = self.map.values().map(|e| e.deadline).min();
        if let Some(at) = self.armed {
            self.timer.as_mut().reset(at);
            // Register the waker on the new deadline.
            if self.timer.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Ready(out)
    }

    /// Everything left, when the session ends.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (u32, Entry)> + '_ {
        self.armed = None;
        self.map.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    fn caller(
        deadline: Instant,
        sem: &Arc<Semaphore>,
    ) -> (Entry, oneshot::Receiver<Result<Pdu, SessionError>>) {
        let (reply, rx) = oneshot::channel();
        let permit = sem.clone().try_acquire_owned().ok();
        assert!(permit.is_some(), "window slot");
        let waiter = Waiter::Caller {
            reply: ReplyTx::Oneshot(reply),
            _permit: permit,
            timeout: Duration::from_secs(5),
        };
        (Entry { command_id: CommandId::SUBMIT_SM, deadline, waiter }, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn slots_free_on_response_and_on_timeout() {
        let sem = Arc::new(Semaphore::new(2));
        let mut t = PendingTable::with_capacity(2);
        let now = Instant::now();
        let (a, _rx_a) = caller(now + Duration::from_secs(5), &sem);
        let (b, _rx_b) = caller(now + Duration::from_secs(3), &sem);
        t.insert(1, a);
        t.insert(2, b);
        assert_eq!(sem.available_permits(), 0, "window full");
        assert!(sem.clone().try_acquire_owned().is_err());

        // A response frees its slot.
        drop(t.take(1));
        assert_eq!(sem.available_permits(), 1);
        assert_eq!(t.len(), 1);

        // The timer fires at the earliest deadline (3 s) with the paused clock auto-advancing.
        let expired = poll_fn(|cx| t.poll_expired(cx)).await;
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0, 2);
        assert!(Instant::now() >= now + Duration::from_secs(3));
        assert!(Instant::now() < now + Duration::from_secs(4));
        drop(expired);
        assert_eq!(sem.available_permits(), 2);
        assert_eq!(t.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn rearms_for_the_next_deadline() {
        let sem = Arc::new(Semaphore::new(8));
        let mut t = PendingTable::with_capacity(8);
        let start = Instant::now();
        for (seq, secs) in [(1u32, 10u64), (2, 2), (3, 6)] {
            let (e, _rx) = caller(start + Duration::from_secs(secs), &sem);
            t.insert(seq, e);
        }
        let mut order = Vec::new();
        while t.len() > 0 {
            let expired = tokio::time::timeout(Duration::from_secs(60), poll_fn(|cx| t.poll_expired(cx)))
                .await
                .expect("timer fires");
            for (seq, _) in expired {
                order.push((seq, (Instant::now() - start).as_secs()));
            }
        }
        assert_eq!(order, vec![(2, 2), (3, 6), (1, 10)]);
        assert_eq!(sem.available_permits(), 8);
    }
}
