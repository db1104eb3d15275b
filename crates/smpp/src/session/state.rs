//! Bind state machine (SMPP 3.4 section 2.3, operation matrix of 5.0 section 2.4), as pure functions.
//!
//! Kept free of I/O so the whole table is unit-tested: the session asks [`check`] before handing an
//! inbound request to the application, and before sending one of its own, and answers the peer
//! with the status returned on refusal.

use crate::command_id::CommandId;
use crate::status::CommandStatus;

/// Which end of the link we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The client: binds, submits, receives deliver_sm.
    Esme,
    /// The server: accepts binds, answers submit_sm, sends deliver_sm.
    Smsc,
}

impl Role {
    pub fn peer(self) -> Role {
        match self {
            Role::Esme => Role::Smsc,
            Role::Smsc => Role::Esme,
        }
    }
}

/// The three bind types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BindKind {
    Transmitter,
    Receiver,
    Transceiver,
}

impl BindKind {
    /// The bind request's command_id.
    pub fn command_id(self) -> CommandId {
        match self {
            BindKind::Transmitter => CommandId::BIND_TRANSMITTER,
            BindKind::Receiver => CommandId::BIND_RECEIVER,
            BindKind::Transceiver => CommandId::BIND_TRANSCEIVER,
        }
    }

    pub fn from_command_id(id: CommandId) -> Option<BindKind> {
        match id {
            CommandId::BIND_TRANSMITTER => Some(BindKind::Transmitter),
            CommandId::BIND_RECEIVER => Some(BindKind::Receiver),
            CommandId::BIND_TRANSCEIVER => Some(BindKind::Transceiver),
            _ => None,
        }
    }

    /// May the ESME submit (submit_sm, data_sm, query_sm, ...)?
    pub fn can_transmit(self) -> bool {
        matches!(self, BindKind::Transmitter | BindKind::Transceiver)
    }

    /// May the SMSC deliver (deliver_sm, data_sm, alert_notification)?
    pub fn can_receive(self) -> bool {
        matches!(self, BindKind::Receiver | BindKind::Transceiver)
    }
}

/// Session state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Connected, not bound yet.
    Open,
    Bound(BindKind),
    /// An unbind was sent and its response is awaited: no new traffic.
    Unbinding(BindKind),
    Closed,
}

/// May a request `id`, sent by `sender`, be processed in `state`? On refusal, the status the
/// receiver answers with (ESME_RINVBNDSTS, or ESME_RALYBND for a second bind).
///
/// Responses are not checked here: they are matched by sequence number. A known request sent in
/// the wrong direction (deliver_sm from an ESME) is refused with ESME_RINVBNDSTS as well.
pub fn check(sender: Role, state: State, id: CommandId) -> Result<(), CommandStatus> {
    const DENY: Result<(), CommandStatus> = Err(CommandStatus::ESME_RINVBNDSTS);
    let bound = match state {
        State::Closed => return DENY,
        State::Open => None,
        State::Bound(k) => Some(k),
        State::Unbinding(_) => {
            // Only what finishes the session (or keeps it alive while finishing) is processed.
            return match id {
                CommandId::UNBIND | CommandId::ENQUIRE_LINK => Ok(()),
                _ => DENY,
            };
        }
    };
    match (id, sender) {
        (CommandId::ENQUIRE_LINK, _) => Ok(()),
        (
            CommandId::BIND_TRANSMITTER | CommandId::BIND_RECEIVER | CommandId::BIND_TRANSCEIVER,
            Role::Esme,
        ) => match bound {
            None => Ok(()),
            Some(_) => Err(CommandStatus::ESME_RALYBND),
        },
        (CommandId::OUTBIND, Role::Smsc) => match bound {
            None => Ok(()),
            Some(_) => Err(CommandStatus::ESME_RALYBND),
        },
        (CommandId::UNBIND, _) => bound.map(|_| ()).ok_or(CommandStatus::ESME_RINVBNDSTS),
        (
            CommandId::SUBMIT_SM
            | CommandId::SUBMIT_MULTI
            | CommandId::QUERY_SM
            | CommandId::CANCEL_SM
            | CommandId::REPLACE_SM
            | CommandId::DATA_SM,
            Role::Esme,
        ) => match bound {
            Some(k) if k.can_transmit() => Ok(()),
            _ => DENY,
        },
        (CommandId::DELIVER_SM | CommandId::DATA_SM | CommandId::ALERT_NOTIFICATION, Role::Smsc) => {
            match bound {
                Some(k) if k.can_receive() => Ok(()),
                _ => DENY,
            }
        }
        _ => DENY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BindKind::*;
    use Role::*;

    const OK: Result<(), CommandStatus> = Ok(());
    const BNDSTS: Result<(), CommandStatus> = Err(CommandStatus::ESME_RINVBNDSTS);
    const ALYBND: Result<(), CommandStatus> = Err(CommandStatus::ESME_RALYBND);

    /// Expected result in [Open, Tx, Rx, Trx, Unbinding, Closed].
    type Row = [Result<(), CommandStatus>; 6];

    /// (sender, command, expected)
    #[rustfmt::skip]
    fn table() -> Vec<(Role, CommandId, Row)> {
        use CommandId as C;
        vec![
            (Esme, C::BIND_TRANSMITTER,   [OK, ALYBND, ALYBND, ALYBND, BNDSTS, BNDSTS]),
            (Esme, C::BIND_RECEIVER,      [OK, ALYBND, ALYBND, ALYBND, BNDSTS, BNDSTS]),
            (Esme, C::BIND_TRANSCEIVER,   [OK, ALYBND, ALYBND, ALYBND, BNDSTS, BNDSTS]),
            (Smsc, C::BIND_TRANSMITTER,   [BNDSTS, BNDSTS, BNDSTS, BNDSTS, BNDSTS, BNDSTS]),
            (Smsc, C::OUTBIND,            [OK, ALYBND, ALYBND, ALYBND, BNDSTS, BNDSTS]),
            (Esme, C::OUTBIND,            [BNDSTS, BNDSTS, BNDSTS, BNDSTS, BNDSTS, BNDSTS]),
            (Esme, C::SUBMIT_SM,          [BNDSTS, OK, BNDSTS, OK, BNDSTS, BNDSTS]),
            (Esme, C::SUBMIT_MULTI,       [BNDSTS, OK, BNDSTS, OK, BNDSTS, BNDSTS]),
            (Esme, C::QUERY_SM,           [BNDSTS, OK, BNDSTS, OK, BNDSTS, BNDSTS]),
            (Esme, C::CANCEL_SM,          [BNDSTS, OK, BNDSTS, OK, BNDSTS, BNDSTS]),
            (Esme, C::REPLACE_SM,         [BNDSTS, OK, BNDSTS, OK, BNDSTS, BNDSTS]),
            (Esme, C::DATA_SM,            [BNDSTS, OK, BNDSTS, OK, BNDSTS, BNDSTS]),
            (Smsc, C::DATA_SM,            [BNDSTS, BNDSTS, OK, OK, BNDSTS, BNDSTS]),
            (Smsc, C::DELIVER_SM,         [BNDSTS, BNDSTS, OK, OK, BNDSTS, BNDSTS]),
            (Smsc, C::ALERT_NOTIFICATION, [BNDSTS, BNDSTS, OK, OK, BNDSTS, BNDSTS]),
            (Esme, C::DELIVER_SM,         [BNDSTS, BNDSTS, BNDSTS, BNDSTS, BNDSTS, BNDSTS]),
            (Smsc, C::SUBMIT_SM,          [BNDSTS, BNDSTS, BNDSTS, BNDSTS, BNDSTS, BNDSTS]),
            (Esme, C::ENQUIRE_LINK,       [OK, OK, OK, OK, OK, BNDSTS]),
            (Smsc, C::ENQUIRE_LINK,       [OK, OK, OK, OK, OK, BNDSTS]),
            (Esme, C::UNBIND,             [BNDSTS, OK, OK, OK, OK, BNDSTS]),
            (Smsc, C::UNBIND,             [BNDSTS, OK, OK, OK, OK, BNDSTS]),
            (Esme, CommandId(0x77),       [BNDSTS, BNDSTS, BNDSTS, BNDSTS, BNDSTS, BNDSTS]),
        ]
    }

    #[test]
    fn state_table() {
        let states =
            [State::Open, State::Bound(Transmitter), State::Bound(Receiver), State::Bound(Transceiver)];
        for (sender, id, expected) in table() {
            for (i, state) in states.iter().enumerate() {
                assert_eq!(check(sender, *state, id), expected[i], "{sender:?} sends {id} in {state:?}");
            }
            assert_eq!(check(sender, State::Unbinding(Transceiver), id), expected[4], "{id} unbinding");
            assert_eq!(check(sender, State::Closed, id), expected[5], "{id} closed");
        }
    }

    #[test]
    fn bind_kinds() {
        for k in [Transmitter, Receiver, Transceiver] {
            assert_eq!(BindKind::from_command_id(k.command_id()), Some(k));
        }
        assert_eq!(BindKind::from_command_id(CommandId::SUBMIT_SM), None);
        assert_eq!(Esme.peer(), Smsc);
    }
}
