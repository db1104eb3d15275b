//! State shared between the session task and its handles: the close reason, published once.

use super::error::CloseReason;
use tokio::sync::watch;

#[derive(Debug)]
pub(crate) struct Shared {
    reason: watch::Sender<Option<CloseReason>>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared { reason: watch::Sender::new(None) }
    }

    pub(crate) fn set_reason(&self, r: CloseReason) {
        self.reason.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(r);
                true
            } else {
                false
            }
        });
    }

    pub(crate) fn reason(&self) -> Option<CloseReason> {
        self.reason.borrow().clone()
    }

    /// The reason, or `LocalClose` while the task is still tearing down.
    pub(crate) fn reason_or_closed(&self) -> CloseReason {
        self.reason().unwrap_or(CloseReason::LocalClose)
    }

    pub(crate) async fn wait(&self) -> CloseReason {
        let mut rx = self.reason.subscribe();
        // The sender lives in `self`; it cannot be gone while we borrow it.
        let reason = rx.wait_for(|r| r.is_some()).await.ok().and_then(|r| r.clone());
        reason.unwrap_or(CloseReason::LocalClose)
    }
}
