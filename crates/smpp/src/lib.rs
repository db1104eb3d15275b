//! SMPP 3.4 protocol layer: wire codec, text encodings, delivery receipts and an async session.
//!
//! No Kubernetes and no configuration live here; everything above (smscd, the bench tool) builds
//! on these types.
//!
//! - [`pdu`]: every SMPP 3.4 PDU, decode from a frame and encode into a buffer.
//! - [`tlv`]: optional parameters, kept byte-exact, with typed accessors.
//! - [`codec`]: framing by command_length, for `tokio_util::codec::Framed`.
//! - [`status`], [`command_id`]: the header's enumerations.
//! - [`error`]: decode/encode errors and the status each maps to.
//! - [`text`]: GSM 7-bit, UCS2, Latin-1 and IA5 by `data_coding`.
//! - [`concat`](mod@concat): splitting long messages into parts (UDH or SAR) and reassembling them.
//! - [`receipt`]: delivery receipt text, message states and message id matching.
//! - [`time`]: schedule_delivery_time and validity_period, absolute and relative.

pub mod codec;
pub mod command_id;
pub mod concat;
pub mod error;
pub mod pdu;
pub mod receipt;
pub mod session;
pub mod status;
pub mod text;
pub mod time;
pub mod tlv;

pub use codec::{CodecError, SmppCodec};
pub use command_id::CommandId;
pub use error::{DecodeError, DecodeErrorKind, EncodeError, Field};
pub use pdu::*;
pub use status::CommandStatus;
pub use tlv::{Tag, Tlv, Tlvs};
