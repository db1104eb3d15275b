//! Framing: splits a byte stream into PDUs by command_length (a `tokio_util` codec).
//!
//! The length field is checked before anything is buffered for it: below 16 or above the
//! configured maximum is a fatal [`CodecError::InvalidCommandLength`] (the stream cannot be
//! re-synchronised; the session answers generic_nack ESME_RINVCMDLEN and closes). A complete frame
//! whose body is bad is not fatal: it comes out as `Err(DecodeError)` inside the item, so the
//! session can answer it and carry on.

use crate::command_id::CommandId;
use crate::error::{DecodeError, EncodeError};
use crate::pdu::{Pdu, HEADER_LEN};
use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Default maximum command_length: room for a 64 KiB message_payload plus the mandatory fields.
pub const DEFAULT_MAX_PDU_LEN: u32 = 70_000;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// command_length outside 16..=max. `sequence_number` is known when the header had arrived.
    #[error("command_length {length} outside 16..={max}")]
    InvalidCommandLength {
        length: u32,
        max: u32,
        command_id: Option<CommandId>,
        sequence_number: Option<u32>,
    },
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
}

/// The SMPP framing codec.
#[derive(Clone, Debug)]
pub struct SmppCodec {
    max_pdu_len: u32,
}

impl Default for SmppCodec {
    fn default() -> Self {
        SmppCodec { max_pdu_len: DEFAULT_MAX_PDU_LEN }
    }
}

impl SmppCodec {
    pub fn new(max_pdu_len: u32) -> Self {
        SmppCodec { max_pdu_len: max_pdu_len.max(HEADER_LEN as u32) }
    }

    pub fn max_pdu_len(&self) -> u32 {
        self.max_pdu_len
    }
}

fn word(src: &[u8], i: usize) -> Option<u32> {
    src.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl Decoder for SmppCodec {
    type Item = Result<Pdu, DecodeError>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        let Some(length) = word(src, 0) else {
            return Ok(None);
        };
        if length < HEADER_LEN as u32 || length > self.max_pdu_len {
            return Err(CodecError::InvalidCommandLength {
                length,
                max: self.max_pdu_len,
                command_id: word(src, 4).map(CommandId),
                sequence_number: word(src, 12),
            });
        }
        let length = length as usize;
        if src.len() < length {
            // Bounded by max_pdu_len, checked above.
            src.reserve(length - src.len());
            return Ok(None);
        }
        let frame = src.split_to(length).freeze();
        Ok(Some(Pdu::decode(frame)))
    }
}

impl Encoder<&Pdu> for SmppCodec {
    type Error = CodecError;

    fn encode(&mut self, pdu: &Pdu, dst: &mut BytesMut) -> Result<(), CodecError> {
        let start = dst.len();
        pdu.encode(dst)?;
        let len = dst.len() - start;
        if len > self.max_pdu_len as usize {
            dst.truncate(start);
            return Err(EncodeError::PduTooLong { len, max: self.max_pdu_len as usize }.into());
        }
        Ok(())
    }
}

impl Encoder<Pdu> for SmppCodec {
    type Error = CodecError;

    fn encode(&mut self, pdu: Pdu, dst: &mut BytesMut) -> Result<(), CodecError> {
        <Self as Encoder<&Pdu>>::encode(self, &pdu, dst)
    }
}

/// Skip a frame's worth of bytes (used by tests and tools that scan captures).
pub fn skip_frame(src: &mut BytesMut) -> bool {
    match word(src, 0) {
        Some(len) if (len as usize) >= HEADER_LEN && src.len() >= len as usize => {
            src.advance(len as usize);
            true
        }
        _ => false,
    }
}
