//! The application side of inbound requests: a [`Handler`] called inline from the reader loop.
//!
//! Why inline: smscd answers hundreds of thousands of submit_sm per second per bind, so an inbound
//! request must not cost a task spawn or channel hops. The handler either answers at once (the
//! response is encoded straight into the write buffer, which is flushed once the read buffer is
//! drained, so responses go out in batches) or defers: it takes a [`Responder`] and answers later
//! from any task, through a bounded channel whose capacity is the inbound window.

use super::error::{CloseReason, SessionError};
use super::shared::Shared;
use crate::command_id::CommandId;
use crate::pdu::{Body, Pdu};
use crate::status::CommandStatus;
use bytes::BytesMut;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Receives the peer's requests (enquire_link and unbind are answered by the session itself).
pub trait Handler: Send + 'static {
    /// One inbound request, already checked against the bind state. Called on the session task:
    /// do not block; defer (see [`Request::defer`]) anything that waits. For requests without a
    /// response (alert_notification) the reply is ignored.
    fn on_request(&mut self, req: Request<'_>) -> Reply;

    /// Back-pressure: while this is `Pending` the session reads nothing more from the socket
    /// (the peer then sees TCP back-pressure). Register `cx`'s waker as for any poll function;
    /// e.g. a handler that forwards deferred requests into a bounded channel returns
    /// `PollSender::poll_reserve` here, so a slow consumer stops the reader instead of queueing.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }

    /// The session ended; called once from the session task.
    fn on_close(&mut self, _reason: &CloseReason) {}
}

impl<H: Handler + ?Sized> Handler for Box<H> {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        (**self).on_request(req)
    }
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        (**self).poll_ready(cx)
    }
    fn on_close(&mut self, reason: &CloseReason) {
        (**self).on_close(reason)
    }
}

/// A handler that refuses every request with ESME_RX_P_APPN (for sessions that only send).
#[derive(Clone, Copy, Debug, Default)]
pub struct RejectAll;

impl Handler for RejectAll {
    fn on_request(&mut self, _req: Request<'_>) -> Reply {
        Reply::Error(CommandStatus::ESME_RX_P_APPN)
    }
}

/// What the handler answers right away.
#[derive(Debug)]
pub enum Reply {
    /// Status 0 with this response body.
    Ok(Body),
    /// This status and response body.
    Respond(CommandStatus, Body),
    /// This status with the command's empty response body.
    Error(CommandStatus),
    /// The handler took a [`Responder`] with [`Request::defer`] and answers through it.
    Deferred,
}

/// One inbound request handed to [`Handler::on_request`].
pub struct Request<'a> {
    pub pdu: Pdu,
    pub(crate) tx: &'a mpsc::Sender<BytesMut>,
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) max_pdu_len: u32,
    pub(crate) deferred: &'a mut bool,
}

impl Request<'_> {
    /// Answer later: returns the PDU and the [`Responder`] for it; return [`Reply::Deferred`].
    /// Counts against the inbound window until the responder answers (or is dropped, which
    /// answers ESME_RSYSERR).
    pub fn defer(self) -> (Pdu, Responder) {
        let response_id = self.pdu.command_id().response();
        if response_id.is_some() {
            *self.deferred = true;
        }
        let responder = Responder {
            request_id: self.pdu.command_id(),
            sequence_number: self.pdu.sequence_number,
            has_response: response_id.is_some(),
            max_pdu_len: self.max_pdu_len,
            tx: self.tx.clone(),
            shared: Arc::clone(self.shared),
            done: false,
        };
        (self.pdu, responder)
    }
}

/// Answers one deferred inbound request, from any task, exactly once.
#[derive(Debug)]
pub struct Responder {
    request_id: CommandId,
    sequence_number: u32,
    has_response: bool,
    max_pdu_len: u32,
    tx: mpsc::Sender<BytesMut>,
    shared: Arc<Shared>,
    done: bool,
}

impl Responder {
    pub fn sequence_number(&self) -> u32 {
        self.sequence_number
    }

    pub fn request_id(&self) -> CommandId {
        self.request_id
    }

    /// Status 0 with `body`.
    pub fn respond(self, body: Body) -> Result<(), SessionError> {
        self.respond_with(CommandStatus::ESME_ROK, body)
    }

    /// `status` with the command's empty response body.
    pub fn reject(self, status: CommandStatus) -> Result<(), SessionError> {
        let pdu = Pdu::error_response(self.request_id, status, self.sequence_number);
        self.respond_with(status, pdu.body)
    }

    /// `status` with `body`. A body that cannot be encoded is replaced by ESME_RSYSERR (and the
    /// encode error returned) so the peer still gets an answer.
    pub fn respond_with(mut self, status: CommandStatus, body: Body) -> Result<(), SessionError> {
        self.done = true;
        if !self.has_response {
            return Ok(());
        }
        let pdu = Pdu::with_status(status, self.sequence_number, body);
        let mut buf = BytesMut::new();
        let mut result = Ok(());
        if let Err(e) = encode_limited(&pdu, self.max_pdu_len, &mut buf) {
            tracing::warn!(seq = self.sequence_number, error = %e, "deferred response not encodable");
            buf.clear();
            let fallback =
                Pdu::error_response(self.request_id, CommandStatus::ESME_RSYSERR, self.sequence_number);
            encode_limited(&fallback, self.max_pdu_len, &mut buf)?;
            result = Err(e);
        }
        // Cannot be full: its capacity is the inbound window and each deferred request holds a
        // slot until its one message here is taken.
        self.send(buf)?;
        result
    }

    fn send(&self, buf: BytesMut) -> Result<(), SessionError> {
        self.tx.try_send(buf).map_err(|_| SessionError::Closed(self.shared.reason_or_closed()))
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.done || !self.has_response {
            return;
        }
        tracing::warn!(seq = self.sequence_number, "responder dropped unanswered: ESME_RSYSERR");
        let pdu = Pdu::error_response(self.request_id, CommandStatus::ESME_RSYSERR, self.sequence_number);
        let mut buf = BytesMut::new();
        if pdu.encode(&mut buf).is_ok() {
            let _ = self.send(buf);
        }
    }
}

/// Encode `pdu` into `dst`, refusing anything longer than `max`.
pub(crate) fn encode_limited(pdu: &Pdu, max: u32, dst: &mut BytesMut) -> Result<(), SessionError> {
    let start = dst.len();
    pdu.encode(dst)?;
    let len = dst.len() - start;
    if len > max as usize {
        dst.truncate(start);
        return Err(crate::error::EncodeError::PduTooLong { len, max: max as usize }.into());
    }
    Ok(())
}
