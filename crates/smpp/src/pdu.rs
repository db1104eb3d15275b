//! SMPP 3.4 PDUs: typed bodies, decode from one complete frame, encode into a buffer.
//!
//! Why our own codec rather than `rusmpp`: a relay needs every TLV written back byte-exact
//! (including known TLVs with vendor quirks, such as a receipted_message_id without its NUL),
//! zero-copy field slices into the received frame for speed, a decode error that keeps the header
//! so the session can answer with the exact status the spec names, and 3.4 leniencies real peers
//! need (responses with an empty body). rusmpp targets 5.0 first and models TLVs as closed enums,
//! so unknown or malformed-but-harmless values do not survive a round trip.
//!
//! Decoding never trusts a length: every C-Octet String is searched for its NUL only within the
//! spec maximum, `sm_length` and TLV lengths are checked against what is left, and nothing is
//! allocated from a peer-supplied size (fields are slices of the frame).

use crate::command_id::CommandId;
use crate::error::{DecodeError, DecodeErrorKind, EncodeError, Field};
use crate::status::CommandStatus;
use crate::tlv::Tlvs;
use bytes::{BufMut, Bytes, BytesMut};

/// Size of the PDU header: command_length, command_id, command_status, sequence_number.
pub const HEADER_LEN: usize = 16;

/// SMPP interface version 3.4 as carried in bind and sc_interface_version.
pub const INTERFACE_VERSION_34: u8 = 0x34;

/// esm_class bits (SMPP 3.4 section 5.2.12).
pub mod esm_class {
    /// Message type: SMSC delivery receipt (in deliver_sm).
    pub const DELIVERY_RECEIPT: u8 = 0x04;
    /// Mask of the message type bits 2-5.
    pub const MESSAGE_TYPE_MASK: u8 = 0x3C;
    /// UDH indicator: short_message starts with a user data header.
    pub const UDHI: u8 = 0x40;
    /// Reply path.
    pub const REPLY_PATH: u8 = 0x80;
}

/// registered_delivery bits (SMPP 3.4 section 5.2.17).
pub mod registered_delivery {
    pub const NONE: u8 = 0x00;
    /// A receipt on final outcome, success or failure.
    pub const ALWAYS: u8 = 0x01;
    /// A receipt only when delivery failed.
    pub const ON_FAILURE: u8 = 0x02;
    /// Mask of the SMSC delivery receipt bits.
    pub const SMSC_RECEIPT_MASK: u8 = 0x03;
}

/// An address with its type of number and numbering plan indicator.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Address {
    pub ton: u8,
    pub npi: u8,
    pub addr: Bytes,
}

impl Address {
    pub fn new(ton: u8, npi: u8, addr: impl Into<Bytes>) -> Self {
        Address { ton, npi, addr: addr.into() }
    }
}

/// bind_transmitter, bind_receiver and bind_transceiver.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Bind {
    pub system_id: Bytes,
    pub password: Bytes,
    pub system_type: Bytes,
    pub interface_version: u8,
    /// addr_ton, addr_npi and address_range.
    pub address_range: Address,
}

/// The three bind responses.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BindResp {
    pub system_id: Bytes,
    pub tlvs: Tlvs,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Outbind {
    pub system_id: Bytes,
    pub password: Bytes,
}

/// submit_sm, and deliver_sm which has the same layout.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SubmitSm {
    pub service_type: Bytes,
    pub source: Address,
    pub destination: Address,
    pub esm_class: u8,
    pub protocol_id: u8,
    pub priority_flag: u8,
    pub schedule_delivery_time: Bytes,
    pub validity_period: Bytes,
    pub registered_delivery: u8,
    pub replace_if_present_flag: u8,
    pub data_coding: u8,
    pub sm_default_msg_id: u8,
    /// At most 254 octets; longer content goes in the message_payload TLV.
    pub short_message: Bytes,
    pub tlvs: Tlvs,
}

/// deliver_sm has exactly the submit_sm layout.
pub type DeliverSm = SubmitSm;

impl SubmitSm {
    /// Whether esm_class marks this (deliver_sm) as an SMSC delivery receipt.
    pub fn is_delivery_receipt(&self) -> bool {
        self.esm_class & esm_class::MESSAGE_TYPE_MASK == esm_class::DELIVERY_RECEIPT
    }

    /// The message content: short_message, or the message_payload TLV when short_message is empty.
    pub fn payload(&self) -> &Bytes {
        match self.tlvs.message_payload() {
            Some(p) if self.short_message.is_empty() => p,
            _ => &self.short_message,
        }
    }
}

/// submit_sm_resp, deliver_sm_resp and data_sm_resp: a message_id and optional TLVs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SubmitSmResp {
    pub message_id: Bytes,
    pub tlvs: Tlvs,
}

pub type DeliverSmResp = SubmitSmResp;
pub type DataSmResp = SubmitSmResp;

/// One destination of a submit_multi.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestAddress {
    /// dest_flag 1: an SME address.
    Sme(Address),
    /// dest_flag 2: a distribution list name.
    DistributionList(Bytes),
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SubmitMulti {
    pub service_type: Bytes,
    pub source: Address,
    /// 1 to 254 destinations.
    pub destinations: Vec<DestAddress>,
    pub esm_class: u8,
    pub protocol_id: u8,
    pub priority_flag: u8,
    pub schedule_delivery_time: Bytes,
    pub validity_period: Bytes,
    pub registered_delivery: u8,
    pub replace_if_present_flag: u8,
    pub data_coding: u8,
    pub sm_default_msg_id: u8,
    pub short_message: Bytes,
    pub tlvs: Tlvs,
}

/// A destination of a submit_multi that the SMSC could not accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsuccessSme {
    pub address: Address,
    pub error_status_code: CommandStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SubmitMultiResp {
    pub message_id: Bytes,
    pub unsuccess_smes: Vec<UnsuccessSme>,
    pub tlvs: Tlvs,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DataSm {
    pub service_type: Bytes,
    pub source: Address,
    pub destination: Address,
    pub esm_class: u8,
    pub registered_delivery: u8,
    pub data_coding: u8,
    pub tlvs: Tlvs,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct QuerySm {
    pub message_id: Bytes,
    pub source: Address,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct QuerySmResp {
    pub message_id: Bytes,
    pub final_date: Bytes,
    pub message_state: u8,
    pub error_code: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CancelSm {
    pub service_type: Bytes,
    pub message_id: Bytes,
    pub source: Address,
    pub destination: Address,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReplaceSm {
    pub message_id: Bytes,
    pub source: Address,
    pub schedule_delivery_time: Bytes,
    pub validity_period: Bytes,
    pub registered_delivery: u8,
    pub sm_default_msg_id: u8,
    pub short_message: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AlertNotification {
    pub source: Address,
    pub esme: Address,
    pub tlvs: Tlvs,
}

/// Every SMPP 3.4 PDU body.
// Variants stay unboxed: boxing would cost an allocation per PDU on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    GenericNack,
    BindReceiver(Bind),
    BindReceiverResp(BindResp),
    BindTransmitter(Bind),
    BindTransmitterResp(BindResp),
    BindTransceiver(Bind),
    BindTransceiverResp(BindResp),
    Outbind(Outbind),
    Unbind,
    UnbindResp,
    EnquireLink,
    EnquireLinkResp,
    SubmitSm(SubmitSm),
    SubmitSmResp(SubmitSmResp),
    SubmitMulti(SubmitMulti),
    SubmitMultiResp(SubmitMultiResp),
    DeliverSm(DeliverSm),
    DeliverSmResp(DeliverSmResp),
    DataSm(DataSm),
    DataSmResp(DataSmResp),
    QuerySm(QuerySm),
    QuerySmResp(QuerySmResp),
    CancelSm(CancelSm),
    CancelSmResp,
    ReplaceSm(ReplaceSm),
    ReplaceSmResp,
    AlertNotification(AlertNotification),
}

impl Body {
    pub fn command_id(&self) -> CommandId {
        match self {
            Body::GenericNack => CommandId::GENERIC_NACK,
            Body::BindReceiver(_) => CommandId::BIND_RECEIVER,
            Body::BindReceiverResp(_) => CommandId::BIND_RECEIVER_RESP,
            Body::BindTransmitter(_) => CommandId::BIND_TRANSMITTER,
            Body::BindTransmitterResp(_) => CommandId::BIND_TRANSMITTER_RESP,
            Body::BindTransceiver(_) => CommandId::BIND_TRANSCEIVER,
            Body::BindTransceiverResp(_) => CommandId::BIND_TRANSCEIVER_RESP,
            Body::Outbind(_) => CommandId::OUTBIND,
            Body::Unbind => CommandId::UNBIND,
            Body::UnbindResp => CommandId::UNBIND_RESP,
            Body::EnquireLink => CommandId::ENQUIRE_LINK,
            Body::EnquireLinkResp => CommandId::ENQUIRE_LINK_RESP,
            Body::SubmitSm(_) => CommandId::SUBMIT_SM,
            Body::SubmitSmResp(_) => CommandId::SUBMIT_SM_RESP,
            Body::SubmitMulti(_) => CommandId::SUBMIT_MULTI,
            Body::SubmitMultiResp(_) => CommandId::SUBMIT_MULTI_RESP,
            Body::DeliverSm(_) => CommandId::DELIVER_SM,
            Body::DeliverSmResp(_) => CommandId::DELIVER_SM_RESP,
            Body::DataSm(_) => CommandId::DATA_SM,
            Body::DataSmResp(_) => CommandId::DATA_SM_RESP,
            Body::QuerySm(_) => CommandId::QUERY_SM,
            Body::QuerySmResp(_) => CommandId::QUERY_SM_RESP,
            Body::CancelSm(_) => CommandId::CANCEL_SM,
            Body::CancelSmResp => CommandId::CANCEL_SM_RESP,
            Body::ReplaceSm(_) => CommandId::REPLACE_SM,
            Body::ReplaceSmResp => CommandId::REPLACE_SM_RESP,
            Body::AlertNotification(_) => CommandId::ALERT_NOTIFICATION,
        }
    }

    /// A response body with empty fields, as sent with an error status.
    pub fn empty_response(id: CommandId) -> Option<Body> {
        Some(match id {
            CommandId::GENERIC_NACK => Body::GenericNack,
            CommandId::BIND_RECEIVER_RESP => Body::BindReceiverResp(BindResp::default()),
            CommandId::BIND_TRANSMITTER_RESP => Body::BindTransmitterResp(BindResp::default()),
            CommandId::BIND_TRANSCEIVER_RESP => Body::BindTransceiverResp(BindResp::default()),
            CommandId::UNBIND_RESP => Body::UnbindResp,
            CommandId::ENQUIRE_LINK_RESP => Body::EnquireLinkResp,
            CommandId::SUBMIT_SM_RESP => Body::SubmitSmResp(SubmitSmResp::default()),
            CommandId::SUBMIT_MULTI_RESP => Body::SubmitMultiResp(SubmitMultiResp::default()),
            CommandId::DELIVER_SM_RESP => Body::DeliverSmResp(DeliverSmResp::default()),
            CommandId::DATA_SM_RESP => Body::DataSmResp(DataSmResp::default()),
            CommandId::QUERY_SM_RESP => Body::QuerySmResp(QuerySmResp::default()),
            CommandId::CANCEL_SM_RESP => Body::CancelSmResp,
            CommandId::REPLACE_SM_RESP => Body::ReplaceSmResp,
            _ => return None,
        })
    }
}

/// One PDU: header fields (command_length is computed) and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pdu {
    pub command_status: CommandStatus,
    pub sequence_number: u32,
    pub body: Body,
}

impl Pdu {
    /// A request (or an OK response) with status 0.
    pub fn new(sequence_number: u32, body: Body) -> Self {
        Pdu { command_status: CommandStatus::ESME_ROK, sequence_number, body }
    }

    pub fn with_status(command_status: CommandStatus, sequence_number: u32, body: Body) -> Self {
        Pdu { command_status, sequence_number, body }
    }

    pub fn generic_nack(status: CommandStatus, sequence_number: u32) -> Self {
        Pdu::with_status(status, sequence_number, Body::GenericNack)
    }

    /// The response to request `id` carrying an error status and no body (generic_nack when `id`
    /// has no response of its own).
    pub fn error_response(id: CommandId, status: CommandStatus, sequence_number: u32) -> Self {
        let body = id.response().and_then(Body::empty_response).unwrap_or(Body::GenericNack);
        Pdu::with_status(status, sequence_number, body)
    }

    pub fn command_id(&self) -> CommandId {
        self.body.command_id()
    }

    pub fn is_response(&self) -> bool {
        self.command_id().is_response()
    }

    /// Encode into `dst`. On error nothing is left in `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        encode_parts(self.command_status, self.sequence_number, &self.body, dst)
    }

    /// Encode into a fresh buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut b = BytesMut::new();
        self.encode(&mut b)?;
        Ok(b.freeze())
    }

    /// Decode one complete PDU (header included). `frame.len()` must equal its command_length;
    /// the framing layer guarantees that, and this checks it again.
    pub fn decode(frame: Bytes) -> Result<Pdu, DecodeError> {
        if frame.len() < HEADER_LEN {
            let length = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            return Err(DecodeError {
                command_id: CommandId::GENERIC_NACK,
                sequence_number: 0,
                kind: DecodeErrorKind::InvalidCommandLength { length, max: length },
            });
        }
        let word = |i: usize| u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]);
        let command_length = word(0);
        let command_id = CommandId(word(4));
        let command_status = CommandStatus(word(8));
        let sequence_number = word(12);
        let err = |kind| DecodeError { command_id, sequence_number, kind };
        if command_length as usize != frame.len() {
            return Err(err(DecodeErrorKind::InvalidCommandLength {
                length: command_length,
                max: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            }));
        }
        let body = frame.slice(HEADER_LEN..);
        let body = decode_body(command_id, &body).map_err(err)?;
        Ok(Pdu { command_status, sequence_number, body })
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn put_cstr(dst: &mut BytesMut, field: Field, v: &[u8]) -> Result<(), EncodeError> {
    let max = field.max_len();
    if v.len() + 1 > max {
        return Err(EncodeError::TooLong { field, len: v.len() + 1, max });
    }
    if v.contains(&0) {
        return Err(EncodeError::InteriorNul(field));
    }
    dst.put_slice(v);
    dst.put_u8(0);
    Ok(())
}

fn put_address(dst: &mut BytesMut, a: &Address, field: Field) -> Result<(), EncodeError> {
    dst.put_u8(a.ton);
    dst.put_u8(a.npi);
    put_cstr(dst, field, &a.addr)
}

fn put_short_message(dst: &mut BytesMut, sm: &[u8]) -> Result<(), EncodeError> {
    let max = Field::ShortMessage.max_len();
    if sm.len() > max {
        return Err(EncodeError::TooLong { field: Field::ShortMessage, len: sm.len(), max });
    }
    dst.put_u8(sm.len() as u8);
    dst.put_slice(sm);
    Ok(())
}

fn put_bind(dst: &mut BytesMut, b: &Bind) -> Result<(), EncodeError> {
    put_cstr(dst, Field::SystemId, &b.system_id)?;
    put_cstr(dst, Field::Password, &b.password)?;
    put_cstr(dst, Field::SystemType, &b.system_type)?;
    dst.put_u8(b.interface_version);
    put_address(dst, &b.address_range, Field::AddressRange)
}

fn put_sm(dst: &mut BytesMut, s: &SubmitSm) -> Result<(), EncodeError> {
    dst.reserve(64 + s.short_message.len() + s.tlvs.encoded_len());
    put_cstr(dst, Field::ServiceType, &s.service_type)?;
    put_address(dst, &s.source, Field::SourceAddr)?;
    put_address(dst, &s.destination, Field::DestinationAddr)?;
    dst.put_u8(s.esm_class);
    dst.put_u8(s.protocol_id);
    dst.put_u8(s.priority_flag);
    put_cstr(dst, Field::ScheduleDeliveryTime, &s.schedule_delivery_time)?;
    put_cstr(dst, Field::ValidityPeriod, &s.validity_period)?;
    dst.put_u8(s.registered_delivery);
    dst.put_u8(s.replace_if_present_flag);
    dst.put_u8(s.data_coding);
    dst.put_u8(s.sm_default_msg_id);
    put_short_message(dst, &s.short_message)?;
    s.tlvs.encode(dst)
}

/// Whether a response body is all defaults, so an error response may leave it out (3.4 says the
/// body is not returned with a non-zero command_status).
fn is_empty_message_id_resp(r: &SubmitSmResp) -> bool {
    r.message_id.is_empty() && r.tlvs.is_empty()
}

/// Encode a PDU from its parts (a borrowed body: no clone to send a copy of it).
/// On error nothing is left in `dst`.
pub(crate) fn encode_parts(
    command_status: CommandStatus,
    sequence_number: u32,
    body: &Body,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = dst.len();
    dst.reserve(HEADER_LEN + 64);
    dst.put_u32(0); // command_length, patched below
    dst.put_u32(body.command_id().0);
    dst.put_u32(command_status.0);
    dst.put_u32(sequence_number);
    if let Err(e) = encode_body(body, command_status, dst) {
        dst.truncate(start);
        return Err(e);
    }
    let len = dst.len() - start;
    let len32 = u32::try_from(len).map_err(|_| EncodeError::PduTooLong { len, max: u32::MAX as usize })?;
    dst[start..start + 4].copy_from_slice(&len32.to_be_bytes());
    Ok(())
}

fn encode_body(body: &Body, status: CommandStatus, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let error = !status.is_ok();
    match body {
        Body::GenericNack
        | Body::Unbind
        | Body::UnbindResp
        | Body::EnquireLink
        | Body::EnquireLinkResp
        | Body::CancelSmResp
        | Body::ReplaceSmResp => Ok(()),
        Body::BindReceiver(b) | Body::BindTransmitter(b) | Body::BindTransceiver(b) => put_bind(dst, b),
        Body::BindReceiverResp(r) | Body::BindTransmitterResp(r) | Body::BindTransceiverResp(r) => {
            if error && r.system_id.is_empty() && r.tlvs.is_empty() {
                return Ok(());
            }
            put_cstr(dst, Field::SystemId, &r.system_id)?;
            r.tlvs.encode(dst)
        }
        Body::Outbind(o) => {
            put_cstr(dst, Field::SystemId, &o.system_id)?;
            put_cstr(dst, Field::Password, &o.password)
        }
        Body::SubmitSm(s) | Body::DeliverSm(s) => put_sm(dst, s),
        Body::SubmitSmResp(r) | Body::DeliverSmResp(r) | Body::DataSmResp(r) => {
            if error && is_empty_message_id_resp(r) {
                return Ok(());
            }
            put_cstr(dst, Field::MessageId, &r.message_id)?;
            r.tlvs.encode(dst)
        }
        Body::SubmitMulti(m) => {
            put_cstr(dst, Field::ServiceType, &m.service_type)?;
            put_address(dst, &m.source, Field::SourceAddr)?;
            let count = m.destinations.len();
            if count > 254 {
                return Err(EncodeError::TooMany { field: Field::NumberOfDests, count, max: 254 });
            }
            dst.put_u8(count as u8);
            for d in &m.destinations {
                match d {
                    DestAddress::Sme(a) => {
                        dst.put_u8(1);
                        put_address(dst, a, Field::DestinationAddr)?;
                    }
                    DestAddress::DistributionList(name) => {
                        dst.put_u8(2);
                        put_cstr(dst, Field::DlName, name)?;
                    }
                }
            }
            dst.put_u8(m.esm_class);
            dst.put_u8(m.protocol_id);
            dst.put_u8(m.priority_flag);
            put_cstr(dst, Field::ScheduleDeliveryTime, &m.schedule_delivery_time)?;
            put_cstr(dst, Field::ValidityPeriod, &m.validity_period)?;
            dst.put_u8(m.registered_delivery);
            dst.put_u8(m.replace_if_present_flag);
            dst.put_u8(m.data_coding);
            dst.put_u8(m.sm_default_msg_id);
            put_short_message(dst, &m.short_message)?;
            m.tlvs.encode(dst)
        }
        Body::SubmitMultiResp(r) => {
            if error && r.message_id.is_empty() && r.unsuccess_smes.is_empty() && r.tlvs.is_empty() {
                return Ok(());
            }
            put_cstr(dst, Field::MessageId, &r.message_id)?;
            let count = r.unsuccess_smes.len();
            if count > 254 {
                return Err(EncodeError::TooMany { field: Field::NoUnsuccess, count, max: 254 });
            }
            dst.put_u8(count as u8);
            for u in &r.unsuccess_smes {
                put_address(dst, &u.address, Field::DestinationAddr)?;
                dst.put_u32(u.error_status_code.0);
            }
            r.tlvs.encode(dst)
        }
        Body::DataSm(d) => {
            put_cstr(dst, Field::ServiceType, &d.service_type)?;
            put_address(dst, &d.source, Field::SourceAddrLong)?;
            put_address(dst, &d.destination, Field::DestinationAddrLong)?;
            dst.put_u8(d.esm_class);
            dst.put_u8(d.registered_delivery);
            dst.put_u8(d.data_coding);
            d.tlvs.encode(dst)
        }
        Body::QuerySm(q) => {
            put_cstr(dst, Field::MessageId, &q.message_id)?;
            put_address(dst, &q.source, Field::SourceAddr)
        }
        Body::QuerySmResp(r) => {
            if error && r == &QuerySmResp::default() {
                return Ok(());
            }
            put_cstr(dst, Field::MessageId, &r.message_id)?;
            put_cstr(dst, Field::FinalDate, &r.final_date)?;
            dst.put_u8(r.message_state);
            dst.put_u8(r.error_code);
            Ok(())
        }
        Body::CancelSm(c) => {
            put_cstr(dst, Field::ServiceType, &c.service_type)?;
            put_cstr(dst, Field::MessageId, &c.message_id)?;
            put_address(dst, &c.source, Field::SourceAddr)?;
            put_address(dst, &c.destination, Field::DestinationAddr)
        }
        Body::ReplaceSm(r) => {
            put_cstr(dst, Field::MessageId, &r.message_id)?;
            put_address(dst, &r.source, Field::SourceAddr)?;
            put_cstr(dst, Field::ScheduleDeliveryTime, &r.schedule_delivery_time)?;
            put_cstr(dst, Field::ValidityPeriod, &r.validity_period)?;
            dst.put_u8(r.registered_delivery);
            dst.put_u8(r.sm_default_msg_id);
            put_short_message(dst, &r.short_message)
        }
        Body::AlertNotification(a) => {
            put_address(dst, &a.source, Field::SourceAddrLong)?;
            put_address(dst, &a.esme, Field::EsmeAddr)?;
            a.tlvs.encode(dst)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A cursor over a PDU body that never reads past its end.
struct Reader<'a> {
    body: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(body: &'a Bytes) -> Self {
        Reader { body, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    fn u8(&mut self, field: Field) -> Result<u8, DecodeErrorKind> {
        let v = *self.body.get(self.pos).ok_or(DecodeErrorKind::Truncated(field))?;
        self.pos += 1;
        Ok(v)
    }

    fn u32(&mut self, field: Field) -> Result<u32, DecodeErrorKind> {
        let b = self.body.get(self.pos..self.pos + 4).ok_or(DecodeErrorKind::Truncated(field))?;
        self.pos += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A C-Octet String: its NUL must come within the field's spec maximum.
    fn cstr(&mut self, field: Field) -> Result<Bytes, DecodeErrorKind> {
        let max = field.max_len();
        let end = self.body.len().min(self.pos + max);
        match self.body[self.pos..end].iter().position(|&b| b == 0) {
            Some(n) => {
                let v = self.body.slice(self.pos..self.pos + n);
                self.pos += n + 1;
                Ok(v)
            }
            None if end == self.body.len() && end - self.pos < max => Err(DecodeErrorKind::MissingNul(field)),
            None => Err(DecodeErrorKind::TooLong { field, max }),
        }
    }

    fn address(&mut self, ton: Field, npi: Field, addr: Field) -> Result<Address, DecodeErrorKind> {
        Ok(Address { ton: self.u8(ton)?, npi: self.u8(npi)?, addr: self.cstr(addr)? })
    }

    fn short_message(&mut self) -> Result<Bytes, DecodeErrorKind> {
        let len = usize::from(self.u8(Field::SmLength)?);
        let max = Field::ShortMessage.max_len();
        if len > max {
            return Err(DecodeErrorKind::TooLong { field: Field::ShortMessage, max });
        }
        if len > self.remaining() {
            return Err(DecodeErrorKind::Truncated(Field::ShortMessage));
        }
        let v = self.body.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(v)
    }

    fn tlvs(&mut self) -> Result<Tlvs, DecodeErrorKind> {
        let t = Tlvs::decode(self.body, self.pos)?;
        self.pos = self.body.len();
        Ok(t)
    }

    /// For PDUs without optional parameters: nothing may follow the last field.
    fn finish(&self) -> Result<(), DecodeErrorKind> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeErrorKind::TrailingBytes { count }),
        }
    }
}

fn read_bind(r: &mut Reader) -> Result<Bind, DecodeErrorKind> {
    let b = Bind {
        system_id: r.cstr(Field::SystemId)?,
        password: r.cstr(Field::Password)?,
        system_type: r.cstr(Field::SystemType)?,
        interface_version: r.u8(Field::InterfaceVersion)?,
        address_range: r.address(Field::AddrTon, Field::AddrNpi, Field::AddressRange)?,
    };
    r.finish()?;
    Ok(b)
}

fn read_bind_resp(r: &mut Reader) -> Result<BindResp, DecodeErrorKind> {
    if r.remaining() == 0 {
        return Ok(BindResp::default());
    }
    Ok(BindResp { system_id: r.cstr(Field::SystemId)?, tlvs: r.tlvs()? })
}

fn read_sm(r: &mut Reader) -> Result<SubmitSm, DecodeErrorKind> {
    Ok(SubmitSm {
        service_type: r.cstr(Field::ServiceType)?,
        source: r.address(Field::SourceAddrTon, Field::SourceAddrNpi, Field::SourceAddr)?,
        destination: r.address(Field::DestAddrTon, Field::DestAddrNpi, Field::DestinationAddr)?,
        esm_class: r.u8(Field::EsmClass)?,
        protocol_id: r.u8(Field::ProtocolId)?,
        priority_flag: r.u8(Field::PriorityFlag)?,
        schedule_delivery_time: r.cstr(Field::ScheduleDeliveryTime)?,
        validity_period: r.cstr(Field::ValidityPeriod)?,
        registered_delivery: r.u8(Field::RegisteredDelivery)?,
        replace_if_present_flag: r.u8(Field::ReplaceIfPresentFlag)?,
        data_coding: r.u8(Field::DataCoding)?,
        sm_default_msg_id: r.u8(Field::SmDefaultMsgId)?,
        short_message: r.short_message()?,
        tlvs: r.tlvs()?,
    })
}

/// submit_sm_resp, deliver_sm_resp, data_sm_resp: an empty body is accepted (3.4 leaves it out on
/// error, and many ESMEs send deliver_sm_resp without one).
fn read_message_id_resp(r: &mut Reader) -> Result<SubmitSmResp, DecodeErrorKind> {
    if r.remaining() == 0 {
        return Ok(SubmitSmResp::default());
    }
    Ok(SubmitSmResp { message_id: r.cstr(Field::MessageId)?, tlvs: r.tlvs()? })
}

fn read_submit_multi(r: &mut Reader) -> Result<SubmitMulti, DecodeErrorKind> {
    let service_type = r.cstr(Field::ServiceType)?;
    let source = r.address(Field::SourceAddrTon, Field::SourceAddrNpi, Field::SourceAddr)?;
    let count = r.u8(Field::NumberOfDests)?;
    if count == 0 || count > 254 {
        return Err(DecodeErrorKind::InvalidValue { field: Field::NumberOfDests, value: count.into() });
    }
    // Capacity bounded by the u8 count (at most 254 small entries), never by a byte length.
    let mut destinations = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        match r.u8(Field::DestFlag)? {
            1 => destinations.push(DestAddress::Sme(r.address(
                Field::DestAddrTon,
                Field::DestAddrNpi,
                Field::DestinationAddr,
            )?)),
            2 => destinations.push(DestAddress::DistributionList(r.cstr(Field::DlName)?)),
            other => {
                return Err(DecodeErrorKind::InvalidValue { field: Field::DestFlag, value: other.into() })
            }
        }
    }
    Ok(SubmitMulti {
        service_type,
        source,
        destinations,
        esm_class: r.u8(Field::EsmClass)?,
        protocol_id: r.u8(Field::ProtocolId)?,
        priority_flag: r.u8(Field::PriorityFlag)?,
        schedule_delivery_time: r.cstr(Field::ScheduleDeliveryTime)?,
        validity_period: r.cstr(Field::ValidityPeriod)?,
        registered_delivery: r.u8(Field::RegisteredDelivery)?,
        replace_if_present_flag: r.u8(Field::ReplaceIfPresentFlag)?,
        data_coding: r.u8(Field::DataCoding)?,
        sm_default_msg_id: r.u8(Field::SmDefaultMsgId)?,
        short_message: r.short_message()?,
        tlvs: r.tlvs()?,
    })
}

fn read_submit_multi_resp(r: &mut Reader) -> Result<SubmitMultiResp, DecodeErrorKind> {
    if r.remaining() == 0 {
        return Ok(SubmitMultiResp::default());
    }
    let message_id = r.cstr(Field::MessageId)?;
    let count = r.u8(Field::NoUnsuccess)?;
    let mut unsuccess_smes = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let address = r.address(Field::DestAddrTon, Field::DestAddrNpi, Field::DestinationAddr)?;
        let error_status_code = CommandStatus(r.u32(Field::ErrorStatusCode)?);
        unsuccess_smes.push(UnsuccessSme { address, error_status_code });
    }
    Ok(SubmitMultiResp { message_id, unsuccess_smes, tlvs: r.tlvs()? })
}

fn decode_body(id: CommandId, body: &Bytes) -> Result<Body, DecodeErrorKind> {
    let mut r = Reader::new(body);
    let r = &mut r;
    let empty = |r: &mut Reader, b: Body| r.finish().map(|_| b);
    Ok(match id {
        CommandId::GENERIC_NACK => empty(r, Body::GenericNack)?,
        CommandId::BIND_RECEIVER => Body::BindReceiver(read_bind(r)?),
        CommandId::BIND_TRANSMITTER => Body::BindTransmitter(read_bind(r)?),
        CommandId::BIND_TRANSCEIVER => Body::BindTransceiver(read_bind(r)?),
        CommandId::BIND_RECEIVER_RESP => Body::BindReceiverResp(read_bind_resp(r)?),
        CommandId::BIND_TRANSMITTER_RESP => Body::BindTransmitterResp(read_bind_resp(r)?),
        CommandId::BIND_TRANSCEIVER_RESP => Body::BindTransceiverResp(read_bind_resp(r)?),
        CommandId::OUTBIND => {
            let o = Outbind { system_id: r.cstr(Field::SystemId)?, password: r.cstr(Field::Password)? };
            r.finish()?;
            Body::Outbind(o)
        }
        CommandId::UNBIND => empty(r, Body::Unbind)?,
        CommandId::UNBIND_RESP => empty(r, Body::UnbindResp)?,
        CommandId::ENQUIRE_LINK => empty(r, Body::EnquireLink)?,
        CommandId::ENQUIRE_LINK_RESP => empty(r, Body::EnquireLinkResp)?,
        CommandId::SUBMIT_SM => Body::SubmitSm(read_sm(r)?),
        CommandId::DELIVER_SM => Body::DeliverSm(read_sm(r)?),
        CommandId::SUBMIT_SM_RESP => Body::SubmitSmResp(read_message_id_resp(r)?),
        CommandId::DELIVER_SM_RESP => Body::DeliverSmResp(read_message_id_resp(r)?),
        CommandId::DATA_SM_RESP => Body::DataSmResp(read_message_id_resp(r)?),
        CommandId::SUBMIT_MULTI => Body::SubmitMulti(read_submit_multi(r)?),
        CommandId::SUBMIT_MULTI_RESP => Body::SubmitMultiResp(read_submit_multi_resp(r)?),
        CommandId::DATA_SM => Body::DataSm(DataSm {
            service_type: r.cstr(Field::ServiceType)?,
            source: r.address(Field::SourceAddrTon, Field::SourceAddrNpi, Field::SourceAddrLong)?,
            destination: r.address(Field::DestAddrTon, Field::DestAddrNpi, Field::DestinationAddrLong)?,
            esm_class: r.u8(Field::EsmClass)?,
            registered_delivery: r.u8(Field::RegisteredDelivery)?,
            data_coding: r.u8(Field::DataCoding)?,
            tlvs: r.tlvs()?,
        }),
        CommandId::QUERY_SM => {
            let q = QuerySm {
                message_id: r.cstr(Field::MessageId)?,
                source: r.address(Field::SourceAddrTon, Field::SourceAddrNpi, Field::SourceAddr)?,
            };
            r.finish()?;
            Body::QuerySm(q)
        }
        CommandId::QUERY_SM_RESP => {
            if r.remaining() == 0 {
                Body::QuerySmResp(QuerySmResp::default())
            } else {
                let q = QuerySmResp {
                    message_id: r.cstr(Field::MessageId)?,
                    final_date: r.cstr(Field::FinalDate)?,
                    message_state: r.u8(Field::MessageState)?,
                    error_code: r.u8(Field::ErrorCode)?,
                };
                r.finish()?;
                Body::QuerySmResp(q)
            }
        }
        CommandId::CANCEL_SM => {
            let c = CancelSm {
                service_type: r.cstr(Field::ServiceType)?,
                message_id: r.cstr(Field::MessageId)?,
                source: r.address(Field::SourceAddrTon, Field::SourceAddrNpi, Field::SourceAddr)?,
                destination: r.address(Field::DestAddrTon, Field::DestAddrNpi, Field::DestinationAddr)?,
            };
            r.finish()?;
            Body::CancelSm(c)
        }
        CommandId::CANCEL_SM_RESP => empty(r, Body::CancelSmResp)?,
        CommandId::REPLACE_SM => {
            let p = ReplaceSm {
                message_id: r.cstr(Field::MessageId)?,
                source: r.address(Field::SourceAddrTon, Field::SourceAddrNpi, Field::SourceAddr)?,
                schedule_delivery_time: r.cstr(Field::ScheduleDeliveryTime)?,
                validity_period: r.cstr(Field::ValidityPeriod)?,
                registered_delivery: r.u8(Field::RegisteredDelivery)?,
                sm_default_msg_id: r.u8(Field::SmDefaultMsgId)?,
                short_message: r.short_message()?,
            };
            r.finish()?;
            Body::ReplaceSm(p)
        }
        CommandId::REPLACE_SM_RESP => empty(r, Body::ReplaceSmResp)?,
        CommandId::ALERT_NOTIFICATION => Body::AlertNotification(AlertNotification {
            source: r.address(Field::SourceAddrTon, Field::SourceAddrNpi, Field::SourceAddrLong)?,
            esme: r.address(Field::EsmeAddrTon, Field::EsmeAddrNpi, Field::EsmeAddr)?,
            tlvs: r.tlvs()?,
        }),
        other => return Err(DecodeErrorKind::UnknownCommand(other.0)),
    })
}
