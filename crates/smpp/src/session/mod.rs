//! Async SMPP session for both roles, over any `AsyncRead + AsyncWrite` (TCP now, TLS later).
//!
//! A session is one task per bound connection (the private `driver` module) and cloneable
//! [`Session`] handles. The split follows the load: smscd must answer ~700k submit_sm/s on one
//! bind, so inbound requests go to a [`Handler`] called inline on the session task and answered
//! into a batched write buffer; outbound requests (rarer, issued by many tasks) are encoded by the caller and
//! tracked in a window of permits with per-request timeouts.
//!
//! - [`state`]: the bind state machine as a pure function (which PDU is allowed when).
//! - [`sequence`]: sequence numbers 1..=0x7FFF_FFFF.
//! - [`config`]: every limit and timer.
//! - [`esme`], [`smsc`]: the bind exchange of each role (incl. outbind), then the session.
//! - [`handler`]: the application's side of inbound requests (answer now, or defer).
//! - `window` (private): outstanding outbound requests and their deadlines.
//!
//! Keepalive: after `enquire_link_interval` without reading anything, the session sends
//! enquire_link; no response within `enquire_link_timeout`, or nothing read for
//! `dead_after_idle_intervals` intervals, closes it with the reason. Peer enquire_link and unbind
//! are answered by the session itself; a peer's unbind is answered only once every deferred
//! request has its response out (bounded by `unbind_drain_timeout`), so an ESME that unbinds
//! with submits in flight still gets every submit_sm_resp before the unbind_resp.
//!
//! ```no_run
//! use smpp::session::{esme, smsc, BindKind, Handler, Reply, Request, SessionConfig};
//! use smpp::{Bind, Body, CommandStatus, SubmitSmResp};
//!
//! struct Answer;
//! impl Handler for Answer {
//!     fn on_request(&mut self, req: Request<'_>) -> Reply {
//!         match req.pdu.body {
//!             Body::SubmitSm(_) => Reply::Ok(Body::SubmitSmResp(SubmitSmResp {
//!                 message_id: "1".into(),
//!                 ..Default::default()
//!             })),
//!             _ => Reply::Error(CommandStatus::ESME_RINVCMDID),
//!         }
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // SMSC role: one connection.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2775").await?;
//! let (stream, peer) = listener.accept().await?;
//! let incoming = smsc::accept(stream, Some(peer), SessionConfig::default()).await?;
//! if incoming.bind.password.as_ref() != b"secret" {
//!     incoming.reject(CommandStatus::ESME_RINVPASWD).await?;
//!     return Ok(());
//! }
//! let session = incoming.accept("smsc", Some(0x34), Answer).await?;
//! let reason = session.closed().await;
//!
//! // ESME role.
//! let bind = Bind { system_id: "esme".into(), password: "secret".into(), ..Bind::default() };
//! let (session, _bind_resp) =
//!     esme::connect("127.0.0.1:2775", BindKind::Transceiver, bind, SessionConfig::default(), Answer).await?;
//! let resp = session.request(Body::EnquireLink).await?;
//! session.unbind().await;
//! # let _ = (reason, resp);
//! # Ok(())
//! # }
//! ```

pub mod config;
mod driver;
pub mod error;
pub mod esme;
mod handle;
pub mod handler;
pub mod sequence;
mod shared;
pub mod smsc;
pub mod state;
mod transport;
mod window;

pub use config::SessionConfig;
pub use error::{CloseReason, SessionError};
pub use handle::{Reserved, Session, SessionInfo};
pub use handler::{Handler, RejectAll, Reply, Request, Responder};
pub use sequence::SequenceGen;
pub use state::{BindKind, Role, State};
pub use window::OnResponse;

use driver::Driver;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;
use transport::Transport;

/// Spawn the session task for a bound connection and return its handle.
fn start<S, H>(
    t: Transport<S>,
    info: SessionInfo,
    seq: SequenceGen,
    cfg: SessionConfig,
    handler: H,
) -> Session
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let max_pdu_len = cfg.max_pdu_len;
    let span = tracing::info_span!(
        "smpp_session",
        role = ?info.role,
        kind = ?info.kind,
        peer = %String::from_utf8_lossy(&info.peer_system_id),
    );
    let (driver, channels) = Driver::new(t, info.role, State::Bound(info.kind), seq, cfg, handler);
    let task = tokio::spawn(driver.run().instrument(span));
    Session::new(channels, info, max_pdu_len, task.abort_handle())
}
