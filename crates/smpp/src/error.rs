//! Typed decode and encode errors, and the SMPP status each one maps to.
//!
//! A decode error carries the header (command_id, sequence_number) whenever the header could be
//! read, so the session can answer with the response the spec names: the command's own `_resp`
//! with an error status for a bad field in a known request, `generic_nack` for an unknown command
//! or an invalid command_length.

use crate::command_id::CommandId;
use crate::status::CommandStatus;
use std::fmt;

/// A mandatory field of a PDU body, with its spec maximum and the status a bad value earns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    SystemId,
    Password,
    SystemType,
    InterfaceVersion,
    AddrTon,
    AddrNpi,
    AddressRange,
    ServiceType,
    SourceAddrTon,
    SourceAddrNpi,
    SourceAddr,
    /// source_addr of data_sm / alert_notification (65 octets).
    SourceAddrLong,
    DestAddrTon,
    DestAddrNpi,
    DestinationAddr,
    /// destination_addr of data_sm (65 octets).
    DestinationAddrLong,
    EsmeAddrTon,
    EsmeAddrNpi,
    EsmeAddr,
    EsmClass,
    ProtocolId,
    PriorityFlag,
    ScheduleDeliveryTime,
    ValidityPeriod,
    RegisteredDelivery,
    ReplaceIfPresentFlag,
    DataCoding,
    SmDefaultMsgId,
    SmLength,
    ShortMessage,
    MessageId,
    FinalDate,
    MessageState,
    ErrorCode,
    NumberOfDests,
    DestFlag,
    DlName,
    NoUnsuccess,
    ErrorStatusCode,
}

impl Field {
    /// The field's name as the spec writes it.
    pub fn name(self) -> &'static str {
        use Field::*;
        match self {
            SystemId => "system_id",
            Password => "password",
            SystemType => "system_type",
            InterfaceVersion => "interface_version",
            AddrTon => "addr_ton",
            AddrNpi => "addr_npi",
            AddressRange => "address_range",
            ServiceType => "service_type",
            SourceAddrTon => "source_addr_ton",
            SourceAddrNpi => "source_addr_npi",
            SourceAddr | SourceAddrLong => "source_addr",
            DestAddrTon => "dest_addr_ton",
            DestAddrNpi => "dest_addr_npi",
            DestinationAddr | DestinationAddrLong => "destination_addr",
            EsmeAddrTon => "esme_addr_ton",
            EsmeAddrNpi => "esme_addr_npi",
            EsmeAddr => "esme_addr",
            EsmClass => "esm_class",
            ProtocolId => "protocol_id",
            PriorityFlag => "priority_flag",
            ScheduleDeliveryTime => "schedule_delivery_time",
            ValidityPeriod => "validity_period",
            RegisteredDelivery => "registered_delivery",
            ReplaceIfPresentFlag => "replace_if_present_flag",
            DataCoding => "data_coding",
            SmDefaultMsgId => "sm_default_msg_id",
            SmLength => "sm_length",
            ShortMessage => "short_message",
            MessageId => "message_id",
            FinalDate => "final_date",
            MessageState => "message_state",
            ErrorCode => "error_code",
            NumberOfDests => "number_of_dests",
            DestFlag => "dest_flag",
            DlName => "dl_name",
            NoUnsuccess => "no_unsuccess",
            ErrorStatusCode => "error_status_code",
        }
    }

    /// Spec maximum size of a C-Octet String field, including its terminating NUL.
    pub fn max_len(self) -> usize {
        use Field::*;
        match self {
            SystemId => 16,
            Password => 9,
            SystemType => 13,
            AddressRange => 41,
            ServiceType => 6,
            SourceAddr | DestinationAddr | DlName => 21,
            SourceAddrLong | DestinationAddrLong | EsmeAddr => 65,
            ScheduleDeliveryTime | ValidityPeriod | FinalDate => 17,
            MessageId => 65,
            ShortMessage => 254,
            _ => 1,
        }
    }

    /// The status a request earns when this field is missing, too long or invalid.
    pub fn status(self) -> CommandStatus {
        use Field::*;
        match self {
            SystemId => CommandStatus::ESME_RINVSYSID,
            Password => CommandStatus::ESME_RINVPASWD,
            SystemType => CommandStatus::ESME_RINVSYSTYP,
            ServiceType => CommandStatus::ESME_RINVSERTYP,
            SourceAddr | SourceAddrLong | EsmeAddr => CommandStatus::ESME_RINVSRCADR,
            SourceAddrTon | EsmeAddrTon => CommandStatus::ESME_RINVSRCTON,
            SourceAddrNpi | EsmeAddrNpi => CommandStatus::ESME_RINVSRCNPI,
            DestinationAddr | DestinationAddrLong => CommandStatus::ESME_RINVDSTADR,
            DestAddrTon => CommandStatus::ESME_RINVDSTTON,
            DestAddrNpi => CommandStatus::ESME_RINVDSTNPI,
            EsmClass => CommandStatus::ESME_RINVESMCLASS,
            PriorityFlag => CommandStatus::ESME_RINVPRTFLG,
            ScheduleDeliveryTime => CommandStatus::ESME_RINVSCHED,
            ValidityPeriod => CommandStatus::ESME_RINVEXPIRY,
            RegisteredDelivery => CommandStatus::ESME_RINVREGDLVFLG,
            ReplaceIfPresentFlag => CommandStatus::ESME_RINVREPFLAG,
            SmDefaultMsgId => CommandStatus::ESME_RINVDFTMSGID,
            SmLength | ShortMessage => CommandStatus::ESME_RINVMSGLEN,
            MessageId => CommandStatus::ESME_RINVMSGID,
            NumberOfDests => CommandStatus::ESME_RINVNUMDESTS,
            DestFlag => CommandStatus::ESME_RINVDESTFLAG,
            DlName => CommandStatus::ESME_RINVDLNAME,
            _ => CommandStatus::ESME_RSYSERR,
        }
    }
}

/// What was wrong with a PDU's bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// command_length below 16 or above the configured maximum. The stream cannot be re-synchronised.
    #[error("command_length {length} outside 16..={max}")]
    InvalidCommandLength { length: u32, max: u32 },
    #[error("unknown command_id 0x{0:08X}")]
    UnknownCommand(u32),
    /// The body ended inside a fixed-size field.
    #[error("body ends inside {}", .0.name())]
    Truncated(Field),
    /// A C-Octet String ran to the end of the body without its NUL.
    #[error("{} has no terminating NUL", .0.name())]
    MissingNul(Field),
    /// A C-Octet String (or the short_message) is longer than the spec allows.
    #[error("{} longer than {max} octets", .field.name())]
    TooLong { field: Field, max: usize },
    #[error("{} has invalid value {value}", .field.name())]
    InvalidValue { field: Field, value: u32 },
    /// A TLV header or value runs past the end of the PDU.
    #[error("TLV at body offset {offset} runs past the end of the PDU")]
    TlvTruncated { offset: usize },
    /// A known TLV with a length its definition does not allow.
    #[error("TLV 0x{tag:04X} has length {length}, expected {expected}")]
    TlvLength { tag: u16, length: usize, expected: &'static str },
    /// Bytes after the last field of a PDU that takes no optional parameters.
    #[error("{count} unexpected octets after the body")]
    TrailingBytes { count: usize },
}

impl DecodeErrorKind {
    /// The status the spec names for this error.
    pub fn status(&self) -> CommandStatus {
        match self {
            DecodeErrorKind::InvalidCommandLength { .. } => CommandStatus::ESME_RINVCMDLEN,
            DecodeErrorKind::UnknownCommand(_) => CommandStatus::ESME_RINVCMDID,
            DecodeErrorKind::Truncated(_) | DecodeErrorKind::TrailingBytes { .. } => {
                CommandStatus::ESME_RINVCMDLEN
            }
            DecodeErrorKind::MissingNul(f) | DecodeErrorKind::TooLong { field: f, .. } => f.status(),
            DecodeErrorKind::InvalidValue { field, .. } => field.status(),
            DecodeErrorKind::TlvTruncated { .. } => CommandStatus::ESME_RINVOPTPARSTREAM,
            DecodeErrorKind::TlvLength { .. } => CommandStatus::ESME_RINVPARLEN,
        }
    }
}

/// A PDU that could not be decoded, with as much of its header as was readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub command_id: CommandId,
    pub sequence_number: u32,
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    pub fn status(&self) -> CommandStatus {
        self.kind.status()
    }

    /// Whether the peer's request deserves its own `_resp` (a known request with a bad field)
    /// rather than a generic_nack (unknown command, bad length, or a broken response).
    pub fn response_command(&self) -> CommandId {
        match self.kind {
            DecodeErrorKind::InvalidCommandLength { .. } | DecodeErrorKind::UnknownCommand(_) => {
                CommandId::GENERIC_NACK
            }
            _ => self.command_id.response().unwrap_or(CommandId::GENERIC_NACK),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (seq {}): {}", self.command_id, self.sequence_number, self.kind)
    }
}

impl std::error::Error for DecodeError {}

/// A PDU value that cannot be put on the wire as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{} is {len} octets with its NUL, the spec allows {max}", .field.name())]
    TooLong { field: Field, len: usize, max: usize },
    #[error("{} contains a NUL octet", .0.name())]
    InteriorNul(Field),
    #[error("{} has {count} entries, at most {max} allowed", .field.name())]
    TooMany { field: Field, count: usize, max: usize },
    #[error("TLV 0x{tag:04X} value is {len} octets, at most 65535 allowed")]
    TlvTooLong { tag: u16, len: usize },
    #[error("PDU is {len} octets, over the maximum {max}")]
    PduTooLong { len: usize, max: usize },
}
