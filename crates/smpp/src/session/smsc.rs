//! SMSC role: take a connection, wait for its bind, let the application accept or reject it.

use super::config::SessionConfig;
use super::error::SessionError;
use super::handle::{Session, SessionInfo};
use super::handler::Handler;
use super::sequence::SequenceGen;
use super::state::{BindKind, Role};
use super::transport::{malformed_answer, prebind_answer, Transport};
use crate::pdu::{Bind, BindResp, Body, Outbind, Pdu};
use crate::status::CommandStatus;
use bytes::Bytes;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

/// Wait (within the bind timeout) for the ESME's bind on a new connection. Anything else first
/// gets its answer (enquire_link_resp, or ESME_RINVBNDSTS); no bind in time closes the connection.
pub async fn accept<S>(
    io: S,
    peer_addr: Option<SocketAddr>,
    cfg: SessionConfig,
) -> Result<IncomingBind<S>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = cfg.normalized();
    let t = Transport::new(io, cfg.max_pdu_len, cfg.read_chunk);
    wait_bind(t, peer_addr, SequenceGen::default(), cfg).await
}

/// Send an outbind on a connection we opened to an ESME, then wait for its bind.
pub async fn outbind<S>(
    io: S,
    outbind: Outbind,
    peer_addr: Option<SocketAddr>,
    cfg: SessionConfig,
) -> Result<IncomingBind<S>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = cfg.normalized();
    let mut t = Transport::new(io, cfg.max_pdu_len, cfg.read_chunk);
    let mut seq = SequenceGen::default();
    t.send(&Pdu::new(seq.next(), Body::Outbind(outbind))).await?;
    wait_bind(t, peer_addr, seq, cfg).await
}

async fn wait_bind<S>(
    mut t: Transport<S>,
    peer_addr: Option<SocketAddr>,
    seq: SequenceGen,
    cfg: SessionConfig,
) -> Result<IncomingBind<S>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let wait = async {
        loop {
            match t.recv().await? {
                Ok(Pdu { sequence_number, body: Body::BindTransmitter(b), .. }) => {
                    return Ok((BindKind::Transmitter, b, sequence_number));
                }
                Ok(Pdu { sequence_number, body: Body::BindReceiver(b), .. }) => {
                    return Ok((BindKind::Receiver, b, sequence_number));
                }
                Ok(Pdu { sequence_number, body: Body::BindTransceiver(b), .. }) => {
                    return Ok((BindKind::Transceiver, b, sequence_number));
                }
                Ok(pdu) => {
                    if let Some(answer) = prebind_answer(Role::Esme, &pdu) {
                        t.send(&answer).await?;
                    }
                }
                Err(e) => {
                    if let Some(answer) = malformed_answer(&e) {
                        t.send(&answer).await?;
                    }
                }
            }
        }
    };
    match tokio::time::timeout(cfg.bind_timeout, wait).await {
        Ok(Ok((kind, bind, bind_seq))) => Ok(IncomingBind { kind, bind, peer_addr, bind_seq, seq, t, cfg }),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            debug!(?peer_addr, "no bind in time: closing");
            t.shutdown().await;
            Err(SessionError::BindTimeout(cfg.bind_timeout))
        }
    }
}

/// A bind waiting for the application's decision.
pub struct IncomingBind<S> {
    pub kind: BindKind,
    pub bind: Bind,
    pub peer_addr: Option<SocketAddr>,
    bind_seq: u32,
    seq: SequenceGen,
    t: Transport<S>,
    cfg: SessionConfig,
}

impl<S> IncomingBind<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Answer bind_resp with `system_id` (and sc_interface_version when given), start the session.
    pub async fn accept<H: Handler>(
        mut self,
        system_id: impl Into<Bytes>,
        sc_interface_version: Option<u8>,
        handler: H,
    ) -> Result<Session, SessionError> {
        let mut resp = BindResp { system_id: system_id.into(), ..BindResp::default() };
        if let Some(v) = sc_interface_version {
            resp.tlvs.set_sc_interface_version(v);
        }
        self.t.send(&Pdu::new(self.bind_seq, bind_resp_body(self.kind, resp))).await?;
        let info = SessionInfo {
            role: Role::Smsc,
            kind: self.kind,
            peer_system_id: self.bind.system_id.clone(),
            peer_addr: self.peer_addr,
        };
        Ok(super::start(self.t, info, self.seq, self.cfg, handler))
    }

    /// Answer the bind with `status` (ESME_RINVPASWD, ESME_RBINDFAIL, ...) and close.
    pub async fn reject(mut self, status: CommandStatus) -> Result<(), SessionError> {
        let status = if status.is_ok() { CommandStatus::ESME_RBINDFAIL } else { status };
        let pdu = Pdu::error_response(self.kind.command_id(), status, self.bind_seq);
        let sent = self.t.send(&pdu).await;
        self.t.shutdown().await;
        sent
    }
}

fn bind_resp_body(kind: BindKind, r: BindResp) -> Body {
    match kind {
        BindKind::Transmitter => Body::BindTransmitterResp(r),
        BindKind::Receiver => Body::BindReceiverResp(r),
        BindKind::Transceiver => Body::BindTransceiverResp(r),
    }
}
