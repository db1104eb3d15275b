//! Bind permits: how many sessions are bound to one carrier account, counted across replicas.
//!
//! A carrier that allows N binds for a system_id refuses the next one (some lock the account).
//! Counting Pods cannot bound it: in a rolling update the surge Pod and the Pods still draining
//! hold binds beside their replacements (issue 13 item 15). So an upstream with `max_binds` takes
//! a permit, one of `max_binds` slots in the store, before each session connects; renews it every
//! third of its [`ttl`] while bound; and gives it back once unbound. The slot itself is the store's
//! job (`Store::acquire_permit`): one atomic step on Redis, so two replicas never hold the same.
//!
//! When the store misbehaves:
//! - A session that cannot take a permit (all held, or the store unreachable) does not bind: it
//!   cannot know what the carrier holds. It retries every [`RETRY_EVERY`] (jittered), and while an
//!   upstream has sessions waiting and none bound, an active/active replica is not ready
//!   (admin.rs), so no ESME is sent to a replica that cannot submit.
//! - A session that holds a permit and cannot renew it keeps its bind (a store outage is not a
//!   sending outage) and renews once the store answers. If another holder has the slot by then
//!   (it expired and was taken, e.g. a Redis failover that lost the key), it unbinds at once.
//! - A replica killed without unbinding (SIGKILL, a lost node) frees its permits after their
//!   [`ttl`]; until then its replacement waits. That is the price of never exceeding.
//!
//! With the memory store the permits are this process's only: they order a reload's old and new
//! binds, and the operator keeps such a cluster's Pods from overlapping (Recreate rollouts).

use crate::store::Store;
use smsc_api::smscd_config::BindConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long a permit lasts unless renewed, without leader election (see [`ttl`]).
pub const PERMIT_TTL: Duration = Duration::from_secs(15);
/// How often a waiting session asks again (jittered by half either way).
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How long a permit lasts unless renewed: [`PERMIT_TTL`], or with leader election the Lease's
/// duration, so after a leader dies without unbinding its permits lapse when its Lease does and
/// the new leader does not wait longer than it waited for the Lease.
pub fn ttl(lease_duration_secs: Option<u64>) -> Duration {
    lease_duration_secs.map_or(PERMIT_TTL, |s| Duration::from_secs(s.max(3)))
}

/// The carrier account the permits count binds at: the same system_id at the same address is
/// one account, whatever the upstream is called in the config.
pub fn carrier(cfg: &BindConfig) -> String {
    format!("{}@{}:{}", cfg.system_id, cfg.host, cfg.port)
}

/// The holder name of one running upstream's sessions (`<holder base>/<session slot>`): the
/// replica identity (the Pod name), the upstream and a nonce per running upstream, so a restarted
/// Pod of the same name never renews its predecessor's permits, and the old and new sessions of a
/// reload are different holders.
pub fn holder_base(upstream: &str) -> String {
    format!("{}#{:08x}/{upstream}", crate::store::redis::default_identity(), fastrand::u32(..))
}

/// A permit held by one upstream session; renewed in the background until released.
pub struct Permit {
    store: Arc<dyn Store>,
    carrier: String,
    holder: String,
    slot: u32,
    lost: CancellationToken,
    renewer: JoinHandle<()>,
}

impl Permit {
    /// Wait for one of `max` permits of `carrier`; None when `cancel` fires first. `waiting` is
    /// called with true when the first attempt finds none (or no store), and false when done.
    pub async fn acquire(
        store: Arc<dyn Store>,
        carrier: String,
        max: u32,
        holder: String,
        ttl: Duration,
        cancel: &CancellationToken,
        mut waiting: impl FnMut(bool),
    ) -> Option<Permit> {
        let mut waited = false;
        let mut attempts: u64 = 0;
        let slot = loop {
            attempts += 1;
            match store.acquire_permit(&carrier, max, &holder, ttl).await {
                Ok(Some(slot)) => break slot,
                Ok(None) if attempts == 1 => {
                    info!(%carrier, max, "every bind permit is held (max_binds): waiting for one")
                }
                Ok(None) => debug!(%carrier, max, "still no bind permit free"),
                Err(e) if attempts == 1 || attempts.is_multiple_of(30) => {
                    warn!(%carrier, error = %e, "cannot take a bind permit (store unavailable): not binding")
                }
                Err(e) => debug!(%carrier, error = %e, "cannot take a bind permit"),
            }
            if !waited {
                waited = true;
                waiting(true);
            }
            let pause = RETRY_EVERY / 2 + RETRY_EVERY.mul_f64(fastrand::f64());
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => {
                    waiting(false);
                    return None;
                }
            }
        };
        if waited {
            waiting(false);
            info!(%carrier, slot, "bind permit taken");
        }
        let lost = CancellationToken::new();
        let renewer =
            tokio::spawn(renew(store.clone(), carrier.clone(), slot, holder.clone(), ttl, lost.clone()));
        Some(Permit { store, carrier, holder, slot, lost, renewer })
    }

    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Resolves when another holder has the permit now: the session must unbind.
    pub async fn lost(&self) {
        self.lost.cancelled().await
    }

    /// Give it back (after the session is unbound). A store that does not answer keeps it until
    /// it expires.
    pub async fn release(self) {
        self.renewer.abort();
        if let Err(e) = self.store.release_permit(&self.carrier, self.slot, &self.holder).await {
            debug!(carrier = %self.carrier, slot = self.slot, error = %e, "bind permit not released: it expires");
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Renews every third of `ttl`: two renewals may fail before the permit lapses.
async fn renew(
    store: Arc<dyn Store>,
    carrier: String,
    slot: u32,
    holder: String,
    ttl: Duration,
    lost: CancellationToken,
) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        match store.renew_permit(&carrier, slot, &holder, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(%carrier, slot, "bind permit taken by another holder: unbinding");
                lost.cancel();
                return;
            }
            // Keep the bind; the next renewal tries again.
            Err(e) => debug!(%carrier, slot, error = %e, "bind permit not renewed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn permits_are_bounded_waited_for_and_given_back() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Duration::from_secs(60)));
        let cancel = CancellationToken::new();
        let take =
            |h: &str| Permit::acquire(store.clone(), "c".into(), 2, h.into(), PERMIT_TTL, &cancel, |_| {});
        let a = take("a").await.unwrap_or_else(|| panic!("first permit"));
        let b = take("b").await.unwrap_or_else(|| panic!("second permit"));
        assert_ne!(a.slot(), b.slot());
        // A third waits, and says so, until one is released.
        let waits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = waits.clone();
        let third = {
            let (store, cancel) = (store.clone(), cancel.clone());
            tokio::spawn(async move {
                Permit::acquire(store, "c".into(), 2, "x".into(), PERMIT_TTL, &cancel, move |w| {
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(w)
                })
                .await
                .map(|p| p.slot())
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while waits.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the third never waited");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!third.is_finished(), "no third permit while two are held");
        let freed = a.slot();
        a.release().await;
        let got = tokio::time::timeout(Duration::from_secs(10), third).await;
        assert_eq!(got.ok().and_then(Result::ok).flatten(), Some(freed));
        assert_eq!(*waits.lock().unwrap_or_else(|p| p.into_inner()), vec![true, false]);
        drop(b);
    }

    #[tokio::test]
    async fn a_permit_taken_over_is_lost_and_a_lapsed_free_one_is_taken_back() {
        let store = MemoryStore::new(Duration::from_secs(60));
        let ttl = Duration::from_millis(1);
        assert_eq!(store.acquire_permit("c", 1, "a", ttl).await.ok().flatten(), Some(0));
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Lapsed and free: its holder takes it back.
        assert_eq!(store.renew_permit("c", 0, "a", ttl).await.ok(), Some(true));
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Lapsed and taken by b: a has lost it, and b's is not released by a.
        assert_eq!(store.acquire_permit("c", 1, "b", PERMIT_TTL).await.ok().flatten(), Some(0));
        assert_eq!(store.renew_permit("c", 0, "a", PERMIT_TTL).await.ok(), Some(false));
        assert!(store.release_permit("c", 0, "a").await.is_ok());
        assert_eq!(store.acquire_permit("c", 1, "a", PERMIT_TTL).await.ok().flatten(), None);
        assert!(store.release_permit("c", 0, "b").await.is_ok());
        assert_eq!(store.acquire_permit("c", 1, "a", PERMIT_TTL).await.ok().flatten(), Some(0));
    }
}
