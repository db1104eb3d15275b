//! Watching the script: read through its path every `reload_interval_ms` and compared with the
//! last bytes seen, like the config file (see `reload.rs` for why polling: a ConfigMap changes by
//! swapping the `..data` symlink, which reading through the path follows). A change must read
//! the same twice, a short settle apart, before it is imported, so a half-written file is not.

use super::Handlers;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(super) async fn watch(
    h: Arc<Handlers>,
    mut path: PathBuf,
    mut seen: Vec<u8>,
    interval: Duration,
    limit: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let settle = (interval / 4).min(Duration::from_millis(250));
    // A refused version is not retried until it changes again.
    let mut refused: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return h.stop(),
            _ = tick.tick() => {}
        }
        let configured = h.script_path();
        if configured != path {
            path = configured;
            seen.clear();
        }
        let Ok(now) = tokio::fs::read(&path).await else { continue };
        if now == seen || refused.as_ref() == Some(&now) {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(settle) => {}
        }
        match tokio::fs::read(&path).await {
            Ok(again) if again == now => {}
            _ => continue,
        }
        match h.reload(&path, now.clone(), limit).await {
            Ok(()) => {
                seen = now;
                refused = None;
            }
            Err(_) => refused = Some(now),
        }
    }
}
