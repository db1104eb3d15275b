//! The bind seam: what `on_bind` says about an incoming bind, with `on_error` applied.

use super::{BindInfo, BindVerdict, Handlers, Hook, SessionView};
use crate::core::Core;
use crate::throttle::TokenBucket;
use smpp::session::BindKind;
use smpp::CommandStatus;
use smsc_api::smscd_config::OnHandlerError;
use std::net::SocketAddr;
use std::sync::Arc;

pub fn kind_name(k: BindKind) -> &'static str {
    match k {
        BindKind::Transmitter => "transmitter",
        BindKind::Receiver => "receiver",
        BindKind::Transceiver => "transceiver",
    }
}

/// `on_bind`'s verdict, or [`BindVerdict::Default`] (the accounts decide) when no handler is
/// registered. A failed call is refused with ESME_RBINDFAIL (`on_error: reject`) or left to the
/// accounts (`continue`).
pub async fn ask(core: &Core, bind: &smpp::Bind, kind: BindKind, peer: SocketAddr) -> BindVerdict {
    let Some(h) = core.handlers.as_ref().filter(|h| h.wants(Hook::Bind)) else { return BindVerdict::Default };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let info = BindInfo {
        system_id: text(&bind.system_id),
        password: text(&bind.password),
        system_type: text(&bind.system_type),
        bind_type: kind_name(kind),
        interface_version: bind.interface_version,
        client_addr: peer.ip().to_canonical().to_string(),
        client_port: peer.port(),
    };
    match h.on_bind(info).await {
        Ok(BindVerdict::Accept { window, throttle }) => {
            BindVerdict::Accept { window: window.map(|w| w.min(h.window())), throttle }
        }
        Ok(v) => v,
        Err(_) => match h.on_error() {
            OnHandlerError::Reject => BindVerdict::Reject(CommandStatus::ESME_RBINDFAIL),
            OnHandlerError::Continue => BindVerdict::Default,
        },
    }
}

/// What `bind.accept(window=, throttle=)` set for a session.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    pub window: Option<usize>,
    pub throttle: Option<u32>,
}

/// An ESME session's view of the handlers: none at all without a `handlers` section.
#[derive(Default)]
pub struct SessionHooks {
    handlers: Option<Arc<Handlers>>,
    /// The session's window when `on_bind` set one.
    pub window: Option<usize>,
    throttle: Option<TokenBucket>,
    pub view: SessionView,
}

impl SessionHooks {
    pub fn new(core: &Core, s: Settings, system_id: &str, peer: SocketAddr, kind: BindKind) -> SessionHooks {
        SessionHooks {
            handlers: core.handlers.clone(),
            window: s.window,
            throttle: s.throttle.map(|r| TokenBucket::new(Some(r))),
            view: SessionView {
                system_id: system_id.to_owned(),
                client_addr: peer.ip().to_canonical().to_string(),
                client_port: peer.port(),
                bind_type: kind_name(kind),
                upstream: None,
            },
        }
    }

    /// The session's own throttle (`accept(throttle=)`); always true without one.
    pub fn try_take(&self) -> bool {
        self.throttle.as_ref().is_none_or(TokenBucket::try_take)
    }

    /// The handlers, when the script registered `on_pdu("submit_sm")`.
    pub fn submit(&self) -> Option<Arc<Handlers>> {
        self.hook(Hook::SubmitSm)
    }

    /// The handlers, when the script registered `hook`.
    pub fn hook(&self, hook: Hook) -> Option<Arc<Handlers>> {
        self.handlers.as_ref().filter(|h| h.wants(hook)).cloned()
    }
}
