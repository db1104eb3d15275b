//! Liveness of the SMPP listeners, for `/healthz`.
//!
//! A listener's accept loop holds a [`Listening`] guard while it runs. If the loop ends while
//! smscd is not shutting down (its task panicked or was dropped), the guard's drop marks the
//! process dead, so the kubelet restarts a Pod that would otherwise answer HTTP but take no binds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Listeners {
    /// Accept loops that ended without being told to stop.
    died: AtomicUsize,
}

impl Listeners {
    /// Held by an accept loop for as long as it runs; `stopping` tells a requested stop from a
    /// death.
    pub fn listening(self: &Arc<Self>, stopping: tokio_util::sync::CancellationToken) -> Listening {
        Listening { listeners: self.clone(), stopping }
    }

    /// Every accept loop that was started runs, or was stopped on purpose.
    pub fn alive(&self) -> bool {
        self.died.load(Ordering::Acquire) == 0
    }
}

pub struct Listening {
    listeners: Arc<Listeners>,
    stopping: tokio_util::sync::CancellationToken,
}

impl Drop for Listening {
    fn drop(&mut self) {
        if !self.stopping.is_cancelled() {
            self.listeners.died.fetch_add(1, Ordering::AcqRel);
            tracing::error!("an SMPP listener stopped accepting connections: /healthz now fails");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    #[test]
    fn a_stopped_listener_is_not_a_dead_one() {
        let l = Arc::new(Listeners::default());
        let stop = CancellationToken::new();
        let g = l.listening(stop.clone());
        assert!(l.alive());
        stop.cancel();
        drop(g);
        assert!(l.alive(), "stopped on purpose");
        drop(l.listening(CancellationToken::new()));
        assert!(!l.alive(), "ended without a stop");
    }
}
