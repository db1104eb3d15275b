//! Where receipts and MO go besides the SMPP delivery queues: a hook the HTTP API (webhooks)
//! installs in [`crate::core::Core::sink`]. Without one (HTTP off) everything goes to the
//! accounts' SMPP receivers as before.
//!
//! A trait here rather than a call into `crate::http`, so receipts.rs stays below the HTTP API.

use crate::store::Correlation;
use futures::future::BoxFuture;
use smpp::receipt::MessageState;
use smpp::{CommandStatus, DeliverSm};

/// What a sink did with a receipt or MO: `None`, not its business (queue it for SMPP as
/// before); `Some(Ok)`, taken (answer the upstream 0); `Some(Err)`, refused with this status.
pub type Taken = Option<Result<(), CommandStatus>>;

pub trait DeliverySink: Send + Sync + 'static {
    /// A wanted receipt matched to `corr`, its text and TLV already carrying our id. `forget`:
    /// the correlation (upstream, key) a final receipt removes when it is queued.
    fn receipt<'a>(
        &'a self,
        upstream: &'a str,
        corr: &'a Correlation,
        dsm: &'a DeliverSm,
        state: Option<MessageState>,
        forget: Option<(&'a str, &'a str)>,
    ) -> BoxFuture<'a, Taken>;

    /// An MO that `routing.mo` gave `account`.
    fn mo<'a>(&'a self, upstream: &'a str, account: &'a str, dsm: &'a DeliverSm) -> BoxFuture<'a, Taken>;
}
