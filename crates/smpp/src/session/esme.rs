//! ESME role: bind to an SMSC (or accept its outbind, then bind), then run the session.

use super::config::SessionConfig;
use super::error::{CloseReason, SessionError};
use super::handle::{Session, SessionInfo};
use super::handler::Handler;
use super::sequence::SequenceGen;
use super::state::{BindKind, Role};
use super::transport::{malformed_answer, prebind_answer, Transport};
use crate::command_id::CommandId;
use crate::pdu::{Bind, BindResp, Body, Outbind, Pdu, INTERFACE_VERSION_34};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tracing::debug;

/// Connect over TCP (within the bind timeout), bind, and start the session.
pub async fn connect<A, H>(
    addr: A,
    kind: BindKind,
    bind: Bind,
    cfg: SessionConfig,
    handler: H,
) -> Result<(Session, BindResp), SessionError>
where
    A: ToSocketAddrs,
    H: Handler,
{
    let cfg = cfg.normalized();
    let stream = tokio::time::timeout(cfg.bind_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| SessionError::BindTimeout(cfg.bind_timeout))??;
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr().ok();
    let t = Transport::new(stream, cfg.max_pdu_len, cfg.read_chunk);
    bind_on(t, peer, SequenceGen::default(), kind, bind, cfg, handler).await
}

/// Bind over an established stream (TCP, TLS, ...) and start the session.
pub async fn bind<S, H>(
    io: S,
    kind: BindKind,
    bind: Bind,
    cfg: SessionConfig,
    handler: H,
) -> Result<(Session, BindResp), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let cfg = cfg.normalized();
    let t = Transport::new(io, cfg.max_pdu_len, cfg.read_chunk);
    bind_on(t, None, SequenceGen::default(), kind, bind, cfg, handler).await
}

/// Wait (within the bind timeout) for the SMSC's outbind on a connection it opened to us.
pub async fn wait_outbind<S>(io: S, cfg: SessionConfig) -> Result<OutbindRequest<S>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = cfg.normalized();
    let mut t = Transport::new(io, cfg.max_pdu_len, cfg.read_chunk);
    let wait = async {
        loop {
            match t.recv().await? {
                Ok(Pdu { body: Body::Outbind(o), .. }) => return Ok(o),
                Ok(pdu) => {
                    if let Some(answer) = prebind_answer(Role::Smsc, &pdu) {
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
        Ok(Ok(outbind)) => Ok(OutbindRequest { outbind, t, cfg }),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            t.shutdown().await;
            Err(SessionError::BindTimeout(cfg.bind_timeout))
        }
    }
}

/// An outbind received; answer it by binding (the spec says bind_receiver; any kind is sent).
pub struct OutbindRequest<S> {
    pub outbind: Outbind,
    t: Transport<S>,
    cfg: SessionConfig,
}

impl<S> OutbindRequest<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    pub async fn bind<H: Handler>(
        self,
        kind: BindKind,
        bind: Bind,
        handler: H,
    ) -> Result<(Session, BindResp), SessionError> {
        bind_on(self.t, None, SequenceGen::default(), kind, bind, self.cfg, handler).await
    }
}

async fn bind_on<S, H>(
    mut t: Transport<S>,
    peer_addr: Option<SocketAddr>,
    mut seq: SequenceGen,
    kind: BindKind,
    mut bind: Bind,
    cfg: SessionConfig,
    handler: H,
) -> Result<(Session, BindResp), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    if bind.interface_version == 0 {
        bind.interface_version = INTERFACE_VERSION_34;
    }
    let bind_seq = seq.next();
    let body = match kind {
        BindKind::Transmitter => Body::BindTransmitter(bind),
        BindKind::Receiver => Body::BindReceiver(bind),
        BindKind::Transceiver => Body::BindTransceiver(bind),
    };
    t.send(&Pdu::new(bind_seq, body)).await?;
    let wait = async {
        loop {
            match t.recv().await? {
                Ok(pdu) if pdu.sequence_number == bind_seq && is_bind_answer(kind, pdu.command_id()) => {
                    return Ok::<Pdu, SessionError>(pdu);
                }
                Ok(pdu) => {
                    if let Some(answer) = prebind_answer(Role::Smsc, &pdu) {
                        t.send(&answer).await?;
                    }
                }
                Err(e) if e.sequence_number == bind_seq && e.command_id.is_response() => {
                    return Err(SessionError::MalformedResponse(e));
                }
                Err(e) => {
                    if let Some(answer) = malformed_answer(&e) {
                        t.send(&answer).await?;
                    }
                }
            }
        }
    };
    let resp = match tokio::time::timeout(cfg.bind_timeout, wait).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            t.shutdown().await;
            return Err(e);
        }
        Err(_) => {
            t.shutdown().await;
            return Err(SessionError::BindTimeout(cfg.bind_timeout));
        }
    };
    if !resp.command_status.is_ok() {
        debug!(status = %resp.command_status, "bind rejected");
        t.shutdown().await;
        return Err(SessionError::BindRejected(resp.command_status));
    }
    let bind_resp = match resp.body {
        Body::BindTransmitterResp(r) | Body::BindReceiverResp(r) | Body::BindTransceiverResp(r) => r,
        // generic_nack with status 0: nonsense, treat as a refusal.
        _ => {
            t.shutdown().await;
            return Err(SessionError::Closed(CloseReason::PeerClosed));
        }
    };
    let info = SessionInfo { role: Role::Esme, kind, peer_system_id: bind_resp.system_id.clone(), peer_addr };
    let session = super::start(t, info, seq, cfg, handler);
    Ok((session, bind_resp))
}

fn is_bind_answer(kind: BindKind, id: CommandId) -> bool {
    id == CommandId::GENERIC_NACK || kind.command_id().response() == Some(id)
}
