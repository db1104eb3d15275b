//! Session errors (what a caller gets back) and close reasons (why a session ended).

use crate::command_id::CommandId;
use crate::error::{DecodeError, EncodeError};
use crate::status::CommandStatus;
use std::fmt;
use std::time::Duration;

/// Why a session ended. Cloneable so every waiter can be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// We sent unbind and got unbind_resp.
    LocalUnbind,
    /// We sent unbind and the peer did not answer within the unbind timeout.
    UnbindTimeout,
    /// The peer sent unbind; we answered unbind_resp.
    PeerUnbind,
    /// `close()` or `abort()` was called.
    LocalClose,
    /// The peer closed the connection.
    PeerClosed,
    /// No enquire_link_resp within the enquire_link timeout.
    EnquireLinkTimeout,
    /// Nothing read for this long.
    Idle(Duration),
    /// The peer sent a command_length we cannot frame (answered generic_nack ESME_RINVCMDLEN).
    InvalidCommandLength(u32),
    /// The connection failed.
    Io(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::LocalUnbind => f.write_str("unbound by us"),
            CloseReason::UnbindTimeout => f.write_str("no unbind_resp in time"),
            CloseReason::PeerUnbind => f.write_str("unbound by peer"),
            CloseReason::LocalClose => f.write_str("closed by us"),
            CloseReason::PeerClosed => f.write_str("connection closed by peer"),
            CloseReason::EnquireLinkTimeout => f.write_str("dead peer: no enquire_link_resp"),
            CloseReason::Idle(d) => write!(f, "dead peer: nothing read for {d:?}"),
            CloseReason::InvalidCommandLength(l) => write!(f, "invalid command_length {l}"),
            CloseReason::Io(e) => write!(f, "i/o: {e}"),
        }
    }
}

/// What a session operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// `try_request` with every window slot taken.
    #[error("window full")]
    WindowFull,
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("session closed: {0}")]
    Closed(CloseReason),
    /// The peer refused our bind.
    #[error("bind rejected: {0}")]
    BindRejected(CommandStatus),
    /// No bind (SMSC role), bind_resp or outbind (ESME role) in time.
    #[error("no bind exchange within {0:?}")]
    BindTimeout(Duration),
    /// The bind state (or our role) does not allow sending this.
    #[error("{command} not allowed now: {status}")]
    NotAllowed { command: CommandId, status: CommandStatus },
    /// `request` was given a response body.
    #[error("{0} is not a request")]
    NotARequest(CommandId),
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
    /// The peer answered with a PDU we could not decode.
    #[error("malformed response: {0}")]
    MalformedResponse(DecodeError),
    /// The peer broke the protocol in a way that ends the exchange (e.g. an invalid command_length).
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
