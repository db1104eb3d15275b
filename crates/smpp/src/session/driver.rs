//! The session task: one poll loop that reads, dispatches, writes and keeps time for one bound
//! connection.
//!
//! Why a hand-written poll loop rather than `select!` over split halves: the hot path (read a
//! batch, decode each PDU, call the handler inline, encode the response into the write buffer,
//! write the batch once the read buffer is drained, a long batch every few answers so the peer
//! is not idle meanwhile) then runs without a lock, a channel hop or a
//! wake-up per PDU. Every source of work is bounded: reading stops while the write buffer is above
//! its high-water mark or the handler is not ready, outbound requests hold a window permit, and
//! deferred responses use a channel sized to the inbound window.

use super::config::SessionConfig;
use super::error::{CloseReason, SessionError};
use super::handler::{encode_limited, Handler, Reply, Request};
use super::sequence::SequenceGen;
use super::shared::Shared;
use super::state::{self, Role, State};
use super::transport::{malformed_answer, Transport};
use super::window::{Entry, PendingTable, ReplyTx, Waiter};
use crate::codec::{CodecError, SmppCodec};
use crate::command_id::CommandId;
use crate::pdu::{Body, Pdu, HEADER_LEN};
use crate::status::CommandStatus;
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::codec::Decoder;
use tracing::{debug, info, warn};

/// Work for the session task from its handles.
#[derive(Debug)]
pub(crate) enum Command {
    /// A request already encoded with sequence number 0 (patched here).
    Request {
        id: CommandId,
        frame: BytesMut,
        reply: ReplyTx,
        permit: OwnedSemaphorePermit,
        /// Answer by then at the latest (else `request_timeout` from now).
        deadline: Option<Instant>,
    },
    Unbind,
    Close,
}

/// Publishes a close reason and closes the window however the task ends.
struct EndGuard {
    shared: Arc<Shared>,
    window: Arc<Semaphore>,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.shared.set_reason(CloseReason::Io("session task ended unexpectedly".into()));
        self.window.close();
    }
}

/// How many rounds of (commands, read, write) one poll may run before yielding.
const POLL_BUDGET: usize = 32;

/// Below this many bytes waiting, a write first yields once (see `poll_drive`).
const COALESCE_BYTES: usize = 32 * 1024;

/// In a long run of buffered requests, the answers are written every this many, before the rest
/// are handled, so the peer can send more while we work: a pipeline rather than a lockstep of
/// whole windows (see `process_buffered`). 1 bind, window 64, 2 vCPUs: about 1 M submit_sm/s
/// against 0.7 M writing once per batch; at saturation (4 binds) it costs about a third more
/// CPU per PDU (docs/benchmarks.md).
const WRITE_EVERY: usize = 8;

pub(crate) struct Driver<S, H> {
    io: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    codec: SmppCodec,
    role: Role,
    state: State,
    handler: H,
    cfg: SessionConfig,
    seq: SequenceGen,
    pending: PendingTable,
    window: Arc<Semaphore>,
    cmd_rx: mpsc::Receiver<Command>,
    cmd_open: bool,
    resp_rx: mpsc::Receiver<BytesMut>,
    resp_tx: mpsc::Sender<BytesMut>,
    /// Inbound requests deferred and not yet answered.
    deferred: usize,
    last_read: Instant,
    keepalive: Pin<Box<Sleep>>,
    enquire_outstanding: bool,
    needs_flush: bool,
    /// Yielded once with bytes waiting to be written; the next round writes them.
    write_held: bool,
    /// Unbinding: our unbind waits until deferred responses are out (or this deadline passes).
    drain_deadline: Option<Pin<Box<Sleep>>>,
    unbind_sent: bool,
    /// The peer's unbind (its sequence number), answered once every deferred response is out
    /// (or `drain_deadline` passes): a submit_sm_resp never goes missing behind an unbind_resp.
    peer_unbind: Option<u32>,
    closing: Option<CloseReason>,
    close_deadline: Option<Pin<Box<Sleep>>>,
    shared: Arc<Shared>,
}

/// The handle side of a new session task.
pub(crate) struct Channels {
    pub(crate) cmd_tx: mpsc::Sender<Command>,
    pub(crate) window: Arc<Semaphore>,
    pub(crate) shared: Arc<Shared>,
}

impl<S, H> Driver<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    pub(crate) fn new(
        t: Transport<S>,
        role: Role,
        state: State,
        seq: SequenceGen,
        cfg: SessionConfig,
        handler: H,
    ) -> (Self, Channels) {
        let window = Arc::new(Semaphore::new(cfg.window));
        // Requests hold a permit, so `window` slots suffice; a few more for unbind/close. Sized
        // for the largest window, which `Session::set_window` may grow to (a bounded channel
        // allocates its slots as they fill, so the bound costs nothing).
        let (cmd_tx, cmd_rx) = mpsc::channel(super::config::MAX_WINDOW + 4);
        let (resp_tx, resp_rx) = mpsc::channel(cfg.inbound_window);
        let shared = Arc::new(Shared::new());
        let now = Instant::now();
        let driver = Driver {
            io: t.io,
            rbuf: t.rbuf,
            wbuf: t.wbuf,
            codec: t.codec,
            role,
            state,
            handler,
            seq,
            pending: PendingTable::with_capacity(cfg.window + 2),
            window: Arc::clone(&window),
            cmd_rx,
            cmd_open: true,
            resp_rx,
            resp_tx,
            deferred: 0,
            last_read: now,
            keepalive: Box::pin(tokio::time::sleep_until(now + cfg.enquire_link_interval)),
            enquire_outstanding: false,
            needs_flush: false,
            write_held: false,
            drain_deadline: None,
            unbind_sent: false,
            peer_unbind: None,
            closing: None,
            close_deadline: None,
            shared: Arc::clone(&shared),
            cfg,
        };
        (driver, Channels { cmd_tx, window, shared })
    }

    pub(crate) async fn run(mut self) {
        // Should the task unwind (a panicking handler), waiters still learn that it ended.
        let _guard = EndGuard { shared: Arc::clone(&self.shared), window: Arc::clone(&self.window) };
        let reason = std::future::poll_fn(|cx| self.poll_drive(cx)).await;
        info!(%reason, "session closed");
        self.state = State::Closed;
        self.shared.set_reason(reason.clone());
        self.window.close();
        for (_, entry) in self.pending.drain() {
            if let Waiter::Caller { reply, .. } = entry.waiter {
                reply.send(Err(SessionError::Closed(reason.clone())));
            }
        }
        self.handler.on_close(&reason);
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        for _ in 0..POLL_BUDGET {
            self.poll_timers(cx);
            let mut progress = false;
            if self.closing.is_none() {
                progress |= self.poll_commands(cx);
                progress |= self.poll_deferred(cx);
                match self.poll_read(cx) {
                    Ok(p) => progress |= p,
                    Err(reason) => self.begin_close(reason),
                }
            }
            // Coalesce writes: a write syscall on loopback costs about as much as handling a
            // PDU (and wakes the peer), and requests and deferred responses arrive one per wake
            // from other tasks. So with only a little to write, yield once: the tasks feeding us
            // run first, and the next round writes all they queued in one go.
            if self.closing.is_none()
                && !self.write_held
                && !self.wbuf.is_empty()
                && self.wbuf.len() < COALESCE_BYTES
            {
                self.write_held = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match self.poll_write(cx) {
                Ok(p) => progress |= p,
                Err(reason) => return Poll::Ready(reason),
            }
            self.write_held = false;
            if let Some(reason) = &self.closing {
                if self.wbuf.is_empty() && !self.needs_flush {
                    // Best effort: a failed shutdown changes nothing for us.
                    return match Pin::new(&mut self.io).poll_shutdown(cx) {
                        Poll::Pending => self.poll_close_deadline(cx),
                        Poll::Ready(_) => Poll::Ready(reason.clone()),
                    };
                }
                return self.poll_close_deadline(cx);
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// While closing, give up on flushing once the close deadline passes.
    fn poll_close_deadline(&mut self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let reason = self.closing.clone().unwrap_or(CloseReason::LocalClose);
        let Some(deadline) = self.close_deadline.as_mut() else {
            return Poll::Ready(reason);
        };
        if deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        debug!("close deadline passed with {} bytes unwritten", self.wbuf.len());
        Poll::Ready(reason)
    }

    fn begin_close(&mut self, reason: CloseReason) {
        if self.closing.is_none() {
            debug!(%reason, "closing");
            self.closing = Some(reason);
            self.state = State::Closed;
            let deadline = Instant::now() + self.cfg.unbind_timeout;
            self.close_deadline = Some(Box::pin(tokio::time::sleep_until(deadline)));
        }
    }

    fn write_high(&self) -> bool {
        self.wbuf.len() >= self.cfg.write_high_water
    }

    // ---- timers -------------------------------------------------------------------------------

    fn poll_timers(&mut self, cx: &mut Context<'_>) {
        if let Poll::Ready(expired) = self.pending.poll_expired(cx) {
            for (seq, entry) in expired {
                match entry.waiter {
                    Waiter::Caller { reply, timeout, .. } => {
                        debug!(seq, command = %entry.command_id, "request timed out");
                        reply.send(Err(SessionError::Timeout(timeout)));
                    }
                    Waiter::EnquireLink => self.begin_close(CloseReason::EnquireLinkTimeout),
                    Waiter::Unbind => self.begin_close(CloseReason::UnbindTimeout),
                }
            }
        }
        if self.closing.is_some() {
            return;
        }
        if let Some(d) = self.drain_deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                if self.peer_unbind.is_some() {
                    warn!(
                        deferred = self.deferred,
                        "deferred responses not all out in time: unbind_resp anyway"
                    );
                    self.answer_peer_unbind();
                } else {
                    debug!(
                        deferred = self.deferred,
                        "deferred responses not all out in time: unbinding anyway"
                    );
                    self.send_unbind();
                }
            }
        }
        while self.keepalive.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let interval = self.cfg.enquire_link_interval;
            let idle = now.saturating_duration_since(self.last_read);
            if idle >= interval * self.cfg.dead_after_idle_intervals {
                self.begin_close(CloseReason::Idle(idle));
                return;
            }
            let next = if idle >= interval {
                if !self.enquire_outstanding && matches!(self.state, State::Bound(_)) {
                    self.send_internal(Body::EnquireLink, Waiter::EnquireLink, self.cfg.enquire_link_timeout);
                    self.enquire_outstanding = true;
                }
                now + interval
            } else {
                self.last_read + interval
            };
            self.keepalive.as_mut().reset(next);
        }
    }

    /// Send a request of our own (enquire_link, unbind) outside the window.
    fn send_internal(&mut self, body: Body, waiter: Waiter, timeout: std::time::Duration) {
        let seq = self.next_seq();
        let id = body.command_id();
        if let Err(e) = encode_limited(&Pdu::new(seq, body), self.cfg.max_pdu_len, &mut self.wbuf) {
            warn!(error = %e, "cannot encode {id}");
            return;
        }
        let deadline = Instant::now() + timeout;
        self.pending.insert(seq, Entry { command_id: id, deadline, waiter });
    }

    fn next_seq(&mut self) -> u32 {
        // Skip numbers still awaiting a response (only possible after a full wrap).
        loop {
            let s = self.seq.next();
            if !self.pending.contains(s) {
                return s;
            }
        }
    }

    // ---- commands from handles ----------------------------------------------------------------

    fn poll_commands(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let max = self.cfg.window + 4;
        for _ in 0..max {
            if !self.cmd_open || self.write_high() || self.closing.is_some() {
                break;
            }
            match self.cmd_rx.poll_recv(cx) {
                Poll::Ready(Some(cmd)) => {
                    progress = true;
                    self.on_command(cmd);
                }
                Poll::Ready(None) => {
                    // Every handle is gone: nobody can unbind later, so do it now.
                    self.cmd_open = false;
                    debug!("all session handles dropped: unbinding");
                    self.start_unbind();
                    progress = true;
                }
                Poll::Pending => break,
            }
        }
        progress
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Request { id, mut frame, reply, permit, deadline } => {
                if let Err(status) = state::check(self.role, self.state, id) {
                    reply.send(Err(SessionError::NotAllowed { command: id, status }));
                    return;
                }
                let seq = self.next_seq();
                if let Some(b) = frame.get_mut(12..16) {
                    b.copy_from_slice(&seq.to_be_bytes());
                }
                self.wbuf.extend_from_slice(&frame);
                let now = Instant::now();
                let deadline = deadline
                    .map_or(now + self.cfg.request_timeout, |d| d.min(now + self.cfg.request_timeout));
                let timeout = deadline.saturating_duration_since(now);
                let waiter = Waiter::Caller { reply, _permit: Some(permit), timeout };
                self.pending.insert(seq, Entry { command_id: id, deadline, waiter });
            }
            Command::Unbind => self.start_unbind(),
            Command::Close => self.begin_close(CloseReason::LocalClose),
        }
    }

    /// Stop taking new inbound requests; once every deferred response is out (or the unbind
    /// timeout passes) send unbind.
    fn start_unbind(&mut self) {
        match self.state {
            State::Bound(kind) => {
                self.state = State::Unbinding(kind);
                if self.deferred == 0 {
                    self.send_unbind();
                } else {
                    debug!(deferred = self.deferred, "unbind waits for deferred responses");
                    let deadline = Instant::now() + self.cfg.unbind_drain_timeout;
                    self.drain_deadline = Some(Box::pin(tokio::time::sleep_until(deadline)));
                }
            }
            State::Unbinding(_) => {}
            State::Open | State::Closed => self.begin_close(CloseReason::LocalClose),
        }
    }

    fn send_unbind(&mut self) {
        if !self.unbind_sent {
            self.unbind_sent = true;
            self.drain_deadline = None;
            self.send_internal(Body::Unbind, Waiter::Unbind, self.cfg.unbind_timeout);
        }
    }

    fn poll_deferred(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while !self.write_high() {
            match self.resp_rx.poll_recv(cx) {
                Poll::Ready(Some(frame)) => {
                    self.deferred = self.deferred.saturating_sub(1);
                    self.wbuf.extend_from_slice(&frame);
                    progress = true;
                }
                // We hold a sender, so None cannot happen; treat it as nothing to do.
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if self.deferred == 0 && matches!(self.state, State::Unbinding(_)) {
            if self.peer_unbind.is_some() {
                self.answer_peer_unbind();
            } else {
                self.send_unbind();
            }
        }
        progress
    }

    /// The peer unbinds: refuse its new requests, answer every deferred one, then unbind_resp
    /// (at the latest when the drain deadline passes) and close.
    fn on_peer_unbind(&mut self, seq: u32) {
        match self.state {
            // Also when our own unbind is still waiting for them: the peer's is answered instead.
            State::Bound(kind) | State::Unbinding(kind) if self.deferred > 0 && !self.unbind_sent => {
                debug!(deferred = self.deferred, "peer unbind waits for deferred responses");
                self.state = State::Unbinding(kind);
                self.peer_unbind = Some(seq);
                if self.drain_deadline.is_none() {
                    let deadline = Instant::now() + self.cfg.unbind_drain_timeout;
                    self.drain_deadline = Some(Box::pin(tokio::time::sleep_until(deadline)));
                }
            }
            _ => {
                self.peer_unbind = Some(seq);
                self.answer_peer_unbind();
            }
        }
    }

    fn answer_peer_unbind(&mut self) {
        if let Some(seq) = self.peer_unbind.take() {
            self.drain_deadline = None;
            self.push(&Pdu::new(seq, Body::UnbindResp));
            self.begin_close(CloseReason::PeerUnbind);
        }
    }

    // ---- reading ------------------------------------------------------------------------------

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool, CloseReason> {
        let mut progress = self.process_buffered(cx);
        if self.closing.is_some() || self.write_high() || self.handler.poll_ready(cx).is_pending() {
            return Ok(progress);
        }
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(self.cfg.read_chunk);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
            Poll::Pending => {}
            Poll::Ready(Ok(0)) => return Err(CloseReason::PeerClosed),
            Poll::Ready(Ok(_)) => {
                self.last_read = Instant::now();
                progress = true;
                self.process_buffered(cx);
            }
            Poll::Ready(Err(e)) => return Err(CloseReason::Io(e.to_string())),
        }
        Ok(progress)
    }

    /// Decode and dispatch every complete PDU in the read buffer (while there is room to answer).
    fn process_buffered(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut handled = 0;
        while self.closing.is_none() && !self.write_high() {
            if self.handler.poll_ready(cx).is_pending() {
                break;
            }
            match self.codec.decode(&mut self.rbuf) {
                Ok(None) => break,
                Ok(Some(Ok(pdu))) => self.on_pdu(pdu),
                Ok(Some(Err(e))) => self.on_malformed(e),
                Err(CodecError::InvalidCommandLength { length, sequence_number, .. }) => {
                    warn!(length, "invalid command_length: generic_nack and close");
                    let nack =
                        Pdu::generic_nack(CommandStatus::ESME_RINVCMDLEN, sequence_number.unwrap_or(0));
                    self.push(&nack);
                    self.begin_close(CloseReason::InvalidCommandLength(length));
                }
                Err(e) => self.begin_close(CloseReason::Io(e.to_string())),
            }
            progress = true;
            handled += 1;
            // The peer, whose window was full, refills it while we handle the rest (on a quiet
            // machine each side that goes idle costs a slow wake-up).
            if handled % WRITE_EVERY == 0
                && self.closing.is_none()
                && self.rbuf.len() >= HEADER_LEN
                && !self.wbuf.is_empty()
            {
                if let Err(reason) = self.poll_write(cx) {
                    self.begin_close(reason);
                }
            }
        }
        progress
    }

    /// Encode into the write buffer; a PDU that cannot be encoded is logged and dropped.
    fn push(&mut self, pdu: &Pdu) {
        if let Err(e) = encode_limited(pdu, self.cfg.max_pdu_len, &mut self.wbuf) {
            warn!(error = %e, command = %pdu.command_id(), "cannot encode");
        }
    }

    /// A response from the handler; an unencodable one becomes ESME_RSYSERR.
    fn push_response(&mut self, request: CommandId, pdu: Pdu) {
        if let Err(e) = encode_limited(&pdu, self.cfg.max_pdu_len, &mut self.wbuf) {
            warn!(error = %e, "response not encodable: ESME_RSYSERR");
            self.push(&Pdu::error_response(request, CommandStatus::ESME_RSYSERR, pdu.sequence_number));
        }
    }

    fn on_malformed(&mut self, e: crate::error::DecodeError) {
        debug!(error = %e, "malformed PDU");
        if let Some(answer) = malformed_answer(&e) {
            self.push(&answer);
        } else if let Some(entry) = self.pending.take(e.sequence_number) {
            self.complete(entry, Err(SessionError::MalformedResponse(e)));
        }
    }

    fn on_pdu(&mut self, pdu: Pdu) {
        let id = pdu.command_id();
        let seq = pdu.sequence_number;
        if id.is_response() {
            match self.pending.take(seq) {
                Some(entry) => self.complete(entry, Ok(pdu)),
                None => debug!(seq, command = %id, "response to no outstanding request"),
            }
            return;
        }
        if let Err(status) = state::check(self.role.peer(), self.state, id) {
            debug!(seq, command = %id, %status, "refused in state {:?}", self.state);
            if id.response().is_some() {
                self.push(&Pdu::error_response(id, status, seq));
            }
            return;
        }
        match id {
            CommandId::ENQUIRE_LINK => self.push(&Pdu::new(seq, Body::EnquireLinkResp)),
            CommandId::UNBIND => self.on_peer_unbind(seq),
            _ => self.dispatch(pdu),
        }
    }

    fn dispatch(&mut self, pdu: Pdu) {
        let id = pdu.command_id();
        let seq = pdu.sequence_number;
        let has_response = id.response().is_some();
        if has_response && self.deferred >= self.cfg.inbound_window {
            debug!(seq, "inbound window full: ESME_RMSGQFUL");
            self.push(&Pdu::error_response(id, CommandStatus::ESME_RMSGQFUL, seq));
            return;
        }
        let mut deferred = false;
        let req = Request {
            pdu,
            tx: &self.resp_tx,
            shared: &self.shared,
            max_pdu_len: self.cfg.max_pdu_len,
            deferred: &mut deferred,
        };
        let reply = self.handler.on_request(req);
        if !has_response {
            return;
        }
        if deferred {
            self.deferred += 1;
            if !matches!(reply, Reply::Deferred) {
                warn!(seq, "handler deferred and replied; the reply is ignored");
            }
            return;
        }
        match reply {
            Reply::Ok(body) => self.push_response(id, Pdu::new(seq, body)),
            Reply::Respond(status, body) => self.push_response(id, Pdu::with_status(status, seq, body)),
            Reply::Error(status) => self.push(&Pdu::error_response(id, status, seq)),
            Reply::Deferred => {
                warn!(seq, "Reply::Deferred without Request::defer: ESME_RSYSERR");
                self.push(&Pdu::error_response(id, CommandStatus::ESME_RSYSERR, seq));
            }
        }
    }

    fn complete(&mut self, entry: Entry, result: Result<Pdu, SessionError>) {
        match entry.waiter {
            Waiter::Caller { reply, .. } => reply.send(result),
            Waiter::EnquireLink => self.enquire_outstanding = false,
            Waiter::Unbind => {
                if let Ok(p) = &result {
                    if !p.command_status.is_ok() {
                        debug!(status = %p.command_status, "unbind refused; closing anyway");
                    }
                }
                self.begin_close(CloseReason::LocalUnbind);
            }
        }
    }

    // ---- writing ------------------------------------------------------------------------------

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<bool, CloseReason> {
        let mut progress = false;
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => return Err(CloseReason::Io("write returned 0".into())),
                Poll::Ready(Ok(n)) => {
                    self.wbuf.advance(n);
                    self.needs_flush = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(CloseReason::Io(e.to_string())),
                Poll::Pending => return Ok(progress),
            }
        }
        if self.needs_flush {
            // TLS streams buffer; TCP's flush is a no-op.
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => return Err(CloseReason::Io(e.to_string())),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }
}
