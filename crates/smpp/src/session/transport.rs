//! A framed connection for the bind exchange (before the session task takes over), and the
//! answers to malformed PDUs, shared by both phases.
//!
//! The bind exchange is a handful of PDUs, so it uses plain `async` reads and writes; its buffers
//! (including any bytes the peer pipelined after its bind) are handed to the session task.

use super::error::{CloseReason, SessionError};
use super::state::{self, Role, State};
use crate::codec::{CodecError, SmppCodec};
use crate::command_id::CommandId;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::pdu::{Body, Pdu};
use crate::status::CommandStatus;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

pub(crate) struct Transport<S> {
    pub(crate) io: S,
    pub(crate) rbuf: BytesMut,
    pub(crate) wbuf: BytesMut,
    pub(crate) codec: SmppCodec,
    read_chunk: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport<S> {
    pub(crate) fn new(io: S, max_pdu_len: u32, read_chunk: usize) -> Self {
        Transport {
            io,
            rbuf: BytesMut::with_capacity(read_chunk),
            wbuf: BytesMut::with_capacity(read_chunk),
            codec: SmppCodec::new(max_pdu_len),
            read_chunk,
        }
    }

    pub(crate) async fn send(&mut self, pdu: &Pdu) -> Result<(), SessionError> {
        super::handler::encode_limited(pdu, self.codec.max_pdu_len(), &mut self.wbuf)?;
        self.flush().await
    }

    pub(crate) async fn flush(&mut self) -> Result<(), SessionError> {
        self.io.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        self.io.flush().await?;
        Ok(())
    }

    /// The next PDU (or the decode error of a malformed one). An invalid command_length is answered
    /// with generic_nack ESME_RINVCMDLEN and ends the exchange.
    pub(crate) async fn recv(&mut self) -> Result<Result<Pdu, DecodeError>, SessionError> {
        loop {
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(item)) => return Ok(item),
                Ok(None) => {}
                Err(CodecError::InvalidCommandLength { length, sequence_number, .. }) => {
                    let nack =
                        Pdu::generic_nack(CommandStatus::ESME_RINVCMDLEN, sequence_number.unwrap_or(0));
                    let _ = self.send(&nack).await;
                    let _ = self.io.shutdown().await;
                    return Err(SessionError::Closed(CloseReason::InvalidCommandLength(length)));
                }
                Err(CodecError::Io(e)) => return Err(e.into()),
                Err(CodecError::Encode(e)) => return Err(e.into()),
            }
            self.rbuf.reserve(self.read_chunk);
            if self.io.read_buf(&mut self.rbuf).await? == 0 {
                return Err(SessionError::Closed(CloseReason::PeerClosed));
            }
        }
    }

    pub(crate) async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// The answer to a PDU that failed to decode: generic_nack ESME_RINVCMDID for an unknown command,
/// the command's `_resp` with the field's status for a bad field in a known request. Broken
/// responses get no answer (the caller fails the matching request instead).
pub(crate) fn malformed_answer(e: &DecodeError) -> Option<Pdu> {
    if let DecodeErrorKind::UnknownCommand(_) = e.kind {
        return Some(Pdu::generic_nack(CommandStatus::ESME_RINVCMDID, e.sequence_number));
    }
    if e.command_id.is_response() {
        return None;
    }
    let status = e.status();
    Some(match e.response_command() {
        CommandId::GENERIC_NACK => Pdu::generic_nack(status, e.sequence_number),
        resp => Pdu::with_status(
            status,
            e.sequence_number,
            Body::empty_response(resp).unwrap_or(Body::GenericNack),
        ),
    })
}

/// The answer, before the bind completes, to anything but the bind exchange itself:
/// enquire_link is answered, other requests get the state table's refusal.
pub(crate) fn prebind_answer(sender: Role, pdu: &Pdu) -> Option<Pdu> {
    let id = pdu.command_id();
    if id.is_response() {
        return None;
    }
    if id == CommandId::ENQUIRE_LINK {
        return Some(Pdu::new(pdu.sequence_number, Body::EnquireLinkResp));
    }
    let status = state::check(sender, State::Open, id).err().unwrap_or(CommandStatus::ESME_RINVBNDSTS);
    id.response().map(|_| Pdu::error_response(id, status, pdu.sequence_number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Field;

    fn err(id: CommandId, kind: DecodeErrorKind) -> DecodeError {
        DecodeError { command_id: id, sequence_number: 7, kind }
    }

    #[test]
    fn malformed_answers() {
        let a = malformed_answer(&err(CommandId(0x99), DecodeErrorKind::UnknownCommand(0x99))).unwrap();
        assert_eq!(
            (a.command_id(), a.command_status),
            (CommandId::GENERIC_NACK, CommandStatus::ESME_RINVCMDID)
        );
        let bad_field = DecodeErrorKind::TooLong { field: Field::SourceAddr, max: 21 };
        let a = malformed_answer(&err(CommandId::SUBMIT_SM, bad_field)).unwrap();
        assert_eq!(a.command_id(), CommandId::SUBMIT_SM_RESP);
        assert_eq!(a.command_status, CommandStatus::ESME_RINVSRCADR);
        assert_eq!(a.sequence_number, 7);
        let broken_resp = DecodeErrorKind::Truncated(Field::MessageId);
        assert!(malformed_answer(&err(CommandId::SUBMIT_SM_RESP, broken_resp)).is_none());
    }

    #[test]
    fn prebind_answers() {
        let el = prebind_answer(Role::Esme, &Pdu::new(3, Body::EnquireLink)).unwrap();
        assert_eq!(el.command_id(), CommandId::ENQUIRE_LINK_RESP);
        let sub = prebind_answer(Role::Esme, &Pdu::new(4, Body::SubmitSm(Default::default()))).unwrap();
        assert_eq!(sub.command_id(), CommandId::SUBMIT_SM_RESP);
        assert_eq!(sub.command_status, CommandStatus::ESME_RINVBNDSTS);
        assert!(prebind_answer(Role::Esme, &Pdu::new(4, Body::UnbindResp)).is_none());
    }
}
