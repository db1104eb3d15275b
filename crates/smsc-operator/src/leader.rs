//! Optional leader election among operator replicas: the elector smscd uses too
//! (crates/lease-elector: client-go semantics, expiry by our own observation of the Lease rather
//! than by comparing its renewTime with our clock, a renew deadline, resourceVersion-guarded
//! writes, release on clean shutdown).

use std::time::Duration;

use lease_elector::{Config, Handle, Timing, TimingError};
use tokio_util::sync::CancellationToken;

/// Field manager of the operator's Lease writes.
pub const FIELD_MANAGER: &str = "smsc-operator";

/// The operator's timing: client-go's defaults.
pub fn timing() -> Result<Timing, TimingError> {
    Timing::new(Duration::from_secs(15), Duration::from_secs(10), Duration::from_secs(2))
}

/// Start electing on Lease `lease_name` in `namespace` as `identity`. The handle's watch says
/// whether we lead; release it on a clean stop so another replica takes over at once.
pub fn start(
    client: kube::Client,
    namespace: &str,
    lease_name: &str,
    identity: &str,
) -> Result<Handle, TimingError> {
    let cfg = Config {
        lease_name: lease_name.into(),
        namespace: namespace.into(),
        identity: identity.into(),
        timing: timing()?,
        field_manager: FIELD_MANAGER.into(),
    };
    Ok(lease_elector::spawn(client, cfg, CancellationToken::new(), None))
}

#[cfg(test)]
mod tests {
    #[test]
    fn timing_is_valid() {
        let t = super::timing().unwrap_or_else(|e| panic!("{e}"));
        assert!(t.lease_duration - t.renew_deadline >= t.retry_period);
    }
}
