//! [`Session`]: the cloneable handle to a running session task.

use super::driver::{Channels, Command};
use super::error::{CloseReason, SessionError};
use super::shared::Shared;
use super::state::{BindKind, Role};
use super::window::{Completion, OnResponse, ReplyTx};
use crate::command_id::CommandId;
use crate::pdu::{Body, Pdu};
use crate::status::CommandStatus;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A window slot on a session, taken by [`Session::try_reserve`]; dropping it frees the slot.
#[derive(Debug)]
pub struct Reserved {
    session: Session,
    permit: OwnedSemaphorePermit,
}

impl Reserved {
    /// Send a request without a waiting task: `done` is called exactly once with the body back
    /// (e.g. to send it elsewhere) and the response or the error, on the session task when the
    /// response comes or the request times out or the session ends, or here at once when the body
    /// cannot be encoded or the session has already ended. Keep `done` short: it runs between
    /// the session's reads.
    pub fn send_with(self, body: Body, done: OnResponse) {
        self.send_with_deadline(body, None, done)
    }

    /// [`send_with`](Self::send_with), answered by `deadline` at the latest (earlier when the
    /// session's request timeout ends first): past it `done` gets [`SessionError::Timeout`].
    pub fn send_with_deadline(self, body: Body, deadline: Option<Instant>, done: OnResponse) {
        let Reserved { session, permit } = self;
        let (id, frame) = match session.encode_ref(&body) {
            Ok(x) => x,
            Err(e) => return done(body, Err(e)),
        };
        let reply = ReplyTx::Callback(Completion::new(done, body, Arc::clone(&session.inner.shared)));
        // The channel has a slot per window permit (plus a few for unbind/close), so only a
        // closed session refuses it; the command dropped then calls `done` with the reason.
        let _ = session.inner.cmd_tx.try_send(Command::Request { id, frame, reply, permit, deadline });
    }
}

/// Who we are bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub role: Role,
    pub kind: BindKind,
    /// SMSC role: the ESME's bind system_id. ESME role: the SMSC's bind_resp system_id.
    pub peer_system_id: Bytes,
    pub peer_addr: Option<SocketAddr>,
}

/// Handle to a bound session. Cheap to clone; when the last clone is dropped the session
/// unbinds.
#[derive(Clone, Debug)]
pub struct Session {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cmd_tx: mpsc::Sender<Command>,
    window: Arc<Semaphore>,
    shared: Arc<Shared>,
    info: SessionInfo,
    max_pdu_len: u32,
    /// The session task, for [`Session::abort`].
    task: AbortHandle,
    /// The window as last set (the semaphore's permits, counting those in use, less `owed`).
    window_size: AtomicUsize,
    /// Slots a smaller window still has to take back as requests in flight complete.
    owed: Arc<AtomicUsize>,
}

impl Session {
    pub(crate) fn new(ch: Channels, info: SessionInfo, max_pdu_len: u32, task: AbortHandle) -> Self {
        // A new session: no request holds a slot yet.
        let window_size = AtomicUsize::new(ch.window.available_permits());
        let inner = Inner {
            cmd_tx: ch.cmd_tx,
            window: ch.window,
            shared: ch.shared,
            info,
            max_pdu_len,
            task,
            window_size,
            owed: Arc::default(),
        };
        Session { inner: Arc::new(inner) }
    }

    pub fn info(&self) -> &SessionInfo {
        &self.inner.info
    }

    /// Send a request and wait for its response, waiting for a window slot first
    /// (back-pressure). The response may carry an error status; it is returned as it came.
    pub async fn request(&self, body: Body) -> Result<Pdu, SessionError> {
        let (id, frame) = self.encode(body)?;
        let permit = match Arc::clone(&self.inner.window).acquire_owned().await {
            Ok(p) => p,
            Err(_) => return Err(self.closed_error()),
        };
        self.send(id, frame, permit).await
    }

    /// Like [`request`](Self::request) but fails at once with [`SessionError::WindowFull`] when
    /// every window slot is taken.
    pub async fn try_request(&self, body: Body) -> Result<Pdu, SessionError> {
        let (id, frame) = self.encode(body)?;
        let permit = match Arc::clone(&self.inner.window).try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => return Err(SessionError::WindowFull),
            Err(TryAcquireError::Closed) => return Err(self.closed_error()),
        };
        self.send(id, frame, permit).await
    }

    /// Take a window slot now, for [`Reserved::send_with`]: fails with
    /// [`SessionError::WindowFull`] when every slot is taken, or the close reason.
    pub fn try_reserve(&self) -> Result<Reserved, SessionError> {
        match Arc::clone(&self.inner.window).try_acquire_owned() {
            Ok(permit) => Ok(Reserved { session: self.clone(), permit }),
            Err(TryAcquireError::NoPermits) => Err(SessionError::WindowFull),
            Err(TryAcquireError::Closed) => Err(self.closed_error()),
        }
    }

    /// Resize the window of the running session (a reload of the peer's limits), to at most
    /// `MAX_WINDOW`: a larger window frees its slots at once; a smaller one takes free slots
    /// now and the rest as requests in flight complete. Returns the window now in force.
    pub fn set_window(&self, n: usize) -> usize {
        let n = n.clamp(1, super::config::MAX_WINDOW);
        let old = self.inner.window_size.swap(n, Ordering::AcqRel);
        let owed = &self.inner.owed;
        if n > old {
            // Slots still owed by an earlier shrink are forgiven first.
            let grow = n - old;
            let forgiven =
                match owed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| Some(o - o.min(grow))) {
                    Ok(o) | Err(o) => o.min(grow),
                };
            self.inner.window.add_permits(grow - forgiven);
        } else if n < old {
            let rest = (old - n) - self.inner.window.forget_permits(old - n);
            if rest > 0 {
                owed.fetch_add(rest, Ordering::AcqRel);
                let (window, owed) = (Arc::clone(&self.inner.window), Arc::clone(owed));
                // Takes slots in use as they come back (ends with the session's window).
                tokio::spawn(async move {
                    while owed.load(Ordering::Acquire) > 0 {
                        let Ok(p) = window.acquire().await else { return };
                        if owed
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| o.checked_sub(1))
                            .is_ok()
                        {
                            p.forget();
                        }
                    }
                });
            }
        }
        n
    }

    /// Wait for a window slot (first come, first served); fails with the close reason once the
    /// session has ended. Bound the wait with a timeout.
    pub async fn reserve(&self) -> Result<Reserved, SessionError> {
        match Arc::clone(&self.inner.window).acquire_owned().await {
            Ok(permit) => Ok(Reserved { session: self.clone(), permit }),
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Free window slots right now.
    pub fn window_available(&self) -> usize {
        self.inner.window.available_permits()
    }

    /// Unbind gracefully: refuse new inbound requests (ESME_RINVBNDSTS), let deferred responses
    /// go out (bounded by the unbind drain timeout), send unbind, wait for unbind_resp (bounded
    /// by the unbind timeout), close. Returns why the session ended (something else if it was already ending).
    pub async fn unbind(&self) -> CloseReason {
        let _ = self.inner.cmd_tx.send(Command::Unbind).await;
        self.closed().await
    }

    /// Close without unbinding, after flushing what is already queued for writing.
    pub async fn close(&self) -> CloseReason {
        let _ = self.inner.cmd_tx.send(Command::Close).await;
        self.closed().await
    }

    /// Drop the connection now: no unbind, nothing more written, requests in flight fail. For
    /// when a graceful [`unbind`](Self::unbind) did not finish in time (a peer that stopped
    /// reading cannot hold the connection open). The close reason becomes `LocalClose` unless
    /// the session had already ended; the runtime drops the task, and with it the socket, at once.
    pub fn abort(&self) {
        self.inner.shared.set_reason(CloseReason::LocalClose);
        self.inner.task.abort();
    }

    /// Wait until the session has ended.
    pub async fn closed(&self) -> CloseReason {
        self.inner.shared.wait().await
    }

    /// Why the session ended, if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.shared.reason()
    }

    /// Encoded in the caller's task (sequence number patched by the session task), so encoding
    /// cost spreads over the callers and an unencodable body fails here.
    fn encode(&self, body: Body) -> Result<(CommandId, BytesMut), SessionError> {
        self.encode_ref(&body)
    }

    fn encode_ref(&self, body: &Body) -> Result<(CommandId, BytesMut), SessionError> {
        let id = body.command_id();
        if id.is_response() {
            return Err(SessionError::NotARequest(id));
        }
        if id == CommandId::UNBIND {
            // The handshake changes the session state: `unbind()` runs it.
            return Err(SessionError::NotAllowed { command: id, status: CommandStatus::ESME_RINVBNDSTS });
        }
        let mut frame = BytesMut::new();
        crate::pdu::encode_parts(CommandStatus::ESME_ROK, 0, body, &mut frame)?;
        if frame.len() > self.inner.max_pdu_len as usize {
            let (len, max) = (frame.len(), self.inner.max_pdu_len as usize);
            return Err(crate::error::EncodeError::PduTooLong { len, max }.into());
        }
        Ok((id, frame))
    }

    async fn send(
        &self,
        id: CommandId,
        frame: BytesMut,
        permit: OwnedSemaphorePermit,
    ) -> Result<Pdu, SessionError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Request { id, frame, reply: ReplyTx::Oneshot(reply), permit, deadline: None };
        if self.inner.cmd_tx.send(cmd).await.is_err() {
            return Err(self.closed_error());
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(self.closed_error()),
        }
    }

    fn closed_error(&self) -> SessionError {
        SessionError::Closed(self.inner.shared.reason_or_closed())
    }
}
