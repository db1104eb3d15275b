//! `command_id` values (SMPP 3.4 section 5.1.2).

use std::fmt;

/// The `command_id` field of a PDU header. Responses have bit 31 set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u32);

macro_rules! command_ids {
    ($($name:ident = $value:expr;)*) => {
        impl CommandId {
            $(pub const $name: CommandId = CommandId($value);)*

            /// The spec's name in lower case (`submit_sm`), if this id is defined by SMPP 3.4.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(command_ids!(@lower $name)),)*
                    _ => None,
                }
            }
        }
    };
    (@lower GENERIC_NACK) => { "generic_nack" };
    (@lower BIND_RECEIVER) => { "bind_receiver" };
    (@lower BIND_RECEIVER_RESP) => { "bind_receiver_resp" };
    (@lower BIND_TRANSMITTER) => { "bind_transmitter" };
    (@lower BIND_TRANSMITTER_RESP) => { "bind_transmitter_resp" };
    (@lower QUERY_SM) => { "query_sm" };
    (@lower QUERY_SM_RESP) => { "query_sm_resp" };
    (@lower SUBMIT_SM) => { "submit_sm" };
    (@lower SUBMIT_SM_RESP) => { "submit_sm_resp" };
    (@lower DELIVER_SM) => { "deliver_sm" };
    (@lower DELIVER_SM_RESP) => { "deliver_sm_resp" };
    (@lower UNBIND) => { "unbind" };
    (@lower UNBIND_RESP) => { "unbind_resp" };
    (@lower REPLACE_SM) => { "replace_sm" };
    (@lower REPLACE_SM_RESP) => { "replace_sm_resp" };
    (@lower CANCEL_SM) => { "cancel_sm" };
    (@lower CANCEL_SM_RESP) => { "cancel_sm_resp" };
    (@lower BIND_TRANSCEIVER) => { "bind_transceiver" };
    (@lower BIND_TRANSCEIVER_RESP) => { "bind_transceiver_resp" };
    (@lower OUTBIND) => { "outbind" };
    (@lower ENQUIRE_LINK) => { "enquire_link" };
    (@lower ENQUIRE_LINK_RESP) => { "enquire_link_resp" };
    (@lower SUBMIT_MULTI) => { "submit_multi" };
    (@lower SUBMIT_MULTI_RESP) => { "submit_multi_resp" };
    (@lower ALERT_NOTIFICATION) => { "alert_notification" };
    (@lower DATA_SM) => { "data_sm" };
    (@lower DATA_SM_RESP) => { "data_sm_resp" };
}

command_ids! {
    GENERIC_NACK = 0x8000_0000;
    BIND_RECEIVER = 0x0000_0001;
    BIND_RECEIVER_RESP = 0x8000_0001;
    BIND_TRANSMITTER = 0x0000_0002;
    BIND_TRANSMITTER_RESP = 0x8000_0002;
    QUERY_SM = 0x0000_0003;
    QUERY_SM_RESP = 0x8000_0003;
    SUBMIT_SM = 0x0000_0004;
    SUBMIT_SM_RESP = 0x8000_0004;
    DELIVER_SM = 0x0000_0005;
    DELIVER_SM_RESP = 0x8000_0005;
    UNBIND = 0x0000_0006;
    UNBIND_RESP = 0x8000_0006;
    REPLACE_SM = 0x0000_0007;
    REPLACE_SM_RESP = 0x8000_0007;
    CANCEL_SM = 0x0000_0008;
    CANCEL_SM_RESP = 0x8000_0008;
    BIND_TRANSCEIVER = 0x0000_0009;
    BIND_TRANSCEIVER_RESP = 0x8000_0009;
    OUTBIND = 0x0000_000B;
    ENQUIRE_LINK = 0x0000_0015;
    ENQUIRE_LINK_RESP = 0x8000_0015;
    SUBMIT_MULTI = 0x0000_0021;
    SUBMIT_MULTI_RESP = 0x8000_0021;
    ALERT_NOTIFICATION = 0x0000_0102;
    DATA_SM = 0x0000_0103;
    DATA_SM_RESP = 0x8000_0103;
}

impl CommandId {
    /// Responses carry bit 31 (generic_nack is a response too).
    pub fn is_response(self) -> bool {
        self.0 & 0x8000_0000 != 0
    }

    /// The id of the response to this request, for requests that have one
    /// (outbind and alert_notification have none).
    pub fn response(self) -> Option<CommandId> {
        if self.is_response() || self == CommandId::OUTBIND || self == CommandId::ALERT_NOTIFICATION {
            return None;
        }
        self.name().map(|_| CommandId(self.0 | 0x8000_0000))
    }
}

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "command_id(0x{:08X})", self.0),
        }
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_ids() {
        assert_eq!(CommandId::SUBMIT_SM.response(), Some(CommandId::SUBMIT_SM_RESP));
        assert_eq!(CommandId::OUTBIND.response(), None);
        assert_eq!(CommandId::ALERT_NOTIFICATION.response(), None);
        assert_eq!(CommandId::SUBMIT_SM_RESP.response(), None);
        assert_eq!(CommandId(0x77).response(), None);
        assert_eq!(CommandId::DATA_SM_RESP.name(), Some("data_sm_resp"));
        assert!(CommandId::GENERIC_NACK.is_response());
    }
}
