//! `command_status` values (SMPP 3.4 section 5.1.3).
//!
//! A newtype over `u32` rather than an enum: peers send vendor-specific values (0x400-0x4FF) and
//! reserved ones, and a relay must pass those through unchanged.

use std::fmt;

/// The `command_status` field of a PDU header.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CommandStatus(pub u32);

macro_rules! statuses {
    ($($name:ident = $value:expr, $text:expr;)*) => {
        impl CommandStatus {
            $(#[doc = $text] pub const $name: CommandStatus = CommandStatus($value);)*

            /// The spec's symbolic name, if this is a status the spec defines.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// The spec's description, if this is a status the spec defines.
            pub fn description(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    ESME_ROK = 0x0000_0000, "No error";
    ESME_RINVMSGLEN = 0x0000_0001, "Message length is invalid";
    ESME_RINVCMDLEN = 0x0000_0002, "Command length is invalid";
    ESME_RINVCMDID = 0x0000_0003, "Invalid command ID";
    ESME_RINVBNDSTS = 0x0000_0004, "Incorrect BIND status for given command";
    ESME_RALYBND = 0x0000_0005, "ESME already in bound state";
    ESME_RINVPRTFLG = 0x0000_0006, "Invalid priority flag";
    ESME_RINVREGDLVFLG = 0x0000_0007, "Invalid registered delivery flag";
    ESME_RSYSERR = 0x0000_0008, "System error";
    ESME_RINVSRCADR = 0x0000_000A, "Invalid source address";
    ESME_RINVDSTADR = 0x0000_000B, "Invalid destination address";
    ESME_RINVMSGID = 0x0000_000C, "Message ID is invalid";
    ESME_RBINDFAIL = 0x0000_000D, "Bind failed";
    ESME_RINVPASWD = 0x0000_000E, "Invalid password";
    ESME_RINVSYSID = 0x0000_000F, "Invalid system ID";
    ESME_RCANCELFAIL = 0x0000_0011, "Cancel SM failed";
    ESME_RREPLACEFAIL = 0x0000_0013, "Replace SM failed";
    ESME_RMSGQFUL = 0x0000_0014, "Message queue full";
    ESME_RINVSERTYP = 0x0000_0015, "Invalid service type";
    ESME_RINVNUMDESTS = 0x0000_0033, "Invalid number of destinations";
    ESME_RINVDLNAME = 0x0000_0034, "Invalid distribution list name";
    ESME_RINVDESTFLAG = 0x0000_0040, "Destination flag is invalid (submit_multi)";
    ESME_RINVSUBREP = 0x0000_0042, "Invalid submit with replace request";
    ESME_RINVESMCLASS = 0x0000_0043, "Invalid esm_class field data";
    ESME_RCNTSUBDL = 0x0000_0044, "Cannot submit to distribution list";
    ESME_RSUBMITFAIL = 0x0000_0045, "submit_sm or submit_multi failed";
    ESME_RINVSRCTON = 0x0000_0048, "Invalid source address TON";
    ESME_RINVSRCNPI = 0x0000_0049, "Invalid source address NPI";
    ESME_RINVDSTTON = 0x0000_0050, "Invalid destination address TON";
    ESME_RINVDSTNPI = 0x0000_0051, "Invalid destination address NPI";
    ESME_RINVSYSTYP = 0x0000_0053, "Invalid system_type field";
    ESME_RINVREPFLAG = 0x0000_0054, "Invalid replace_if_present flag";
    ESME_RINVNUMMSGS = 0x0000_0055, "Invalid number of messages";
    ESME_RTHROTTLED = 0x0000_0058, "Throttling error (ESME has exceeded allowed message limits)";
    ESME_RINVSCHED = 0x0000_0061, "Invalid scheduled delivery time";
    ESME_RINVEXPIRY = 0x0000_0062, "Invalid message validity period (expiry time)";
    ESME_RINVDFTMSGID = 0x0000_0063, "Predefined message invalid or not found";
    ESME_RX_T_APPN = 0x0000_0064, "ESME receiver temporary app error code";
    ESME_RX_P_APPN = 0x0000_0065, "ESME receiver permanent app error code";
    ESME_RX_R_APPN = 0x0000_0066, "ESME receiver reject message error code";
    ESME_RQUERYFAIL = 0x0000_0067, "query_sm request failed";
    ESME_RINVOPTPARSTREAM = 0x0000_00C0, "Error in the optional part of the PDU body";
    ESME_ROPTPARNOTALLWD = 0x0000_00C1, "Optional parameter not allowed";
    ESME_RINVPARLEN = 0x0000_00C2, "Invalid parameter length";
    ESME_RMISSINGOPTPARAM = 0x0000_00C3, "Expected optional parameter missing";
    ESME_RINVOPTPARAMVAL = 0x0000_00C4, "Invalid optional parameter value";
    ESME_RDELIVERYFAILURE = 0x0000_00FE, "Delivery failure (data_sm_resp)";
    ESME_RUNKNOWNERR = 0x0000_00FF, "Unknown error";
}

impl CommandStatus {
    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Statuses after which retrying the same message later (or elsewhere) makes sense.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            CommandStatus::ESME_RTHROTTLED
                | CommandStatus::ESME_RMSGQFUL
                | CommandStatus::ESME_RSYSERR
                | CommandStatus::ESME_RX_T_APPN
        )
    }
}

impl fmt::Debug for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}(0x{:08X})", self.0),
            None => write!(f, "CommandStatus(0x{:08X})", self.0),
        }
    }
}

impl fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<u32> for CommandStatus {
    fn from(v: u32) -> Self {
        CommandStatus(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_display() {
        assert_eq!(CommandStatus::ESME_RTHROTTLED.name(), Some("ESME_RTHROTTLED"));
        assert_eq!(CommandStatus(0x58), CommandStatus::ESME_RTHROTTLED);
        assert_eq!(CommandStatus(0x400).name(), None);
        assert_eq!(format!("{}", CommandStatus::ESME_RINVCMDLEN), "ESME_RINVCMDLEN(0x00000002)");
        assert_eq!(format!("{}", CommandStatus(0x401)), "CommandStatus(0x00000401)");
        assert!(CommandStatus::ESME_RMSGQFUL.is_transient());
        assert!(!CommandStatus::ESME_RINVPASWD.is_transient());
    }
}
