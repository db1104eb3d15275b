//! Session limits and timers. Every queue and buffer in a session is bounded by a value here.

use crate::codec::DEFAULT_MAX_PDU_LEN;
use std::time::Duration;

/// Largest window either way; a peer cannot make us track more than this many requests.
pub const MAX_WINDOW: usize = 65_536;

/// Settings of one session. `Default` suits a production SMSC link.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Max outstanding outbound requests (awaiting a response).
    pub window: usize,
    /// Max inbound requests the application has deferred and not yet answered; a peer exceeding
    /// it is answered ESME_RMSGQFUL at once.
    pub inbound_window: usize,
    /// How long an outbound request waits for its response.
    pub request_timeout: Duration,
    /// SMSC role: how long a new connection may take to bind. ESME role: how long to wait for
    /// bind_resp (and for an outbind).
    pub bind_timeout: Duration,
    /// Send enquire_link after this long without reading anything.
    pub enquire_link_interval: Duration,
    /// Close when our enquire_link gets no response within this.
    pub enquire_link_timeout: Duration,
    /// Close after this many enquire_link intervals without reading anything.
    pub dead_after_idle_intervals: u32,
    /// How long `unbind()` waits for unbind_resp before closing anyway.
    pub unbind_timeout: Duration,
    /// Unbinding (ours or the peer's): how long deferred inbound requests may still take to be
    /// answered before unbind (or unbind_resp) goes out anyway. Set it above the longest time
    /// the application takes to answer, so no response is lost behind an unbind.
    pub unbind_drain_timeout: Duration,
    /// Largest command_length accepted or sent.
    pub max_pdu_len: u32,
    /// Stop reading (and taking new outbound requests) while this many bytes wait to be written.
    pub write_high_water: usize,
    /// Read buffer growth step.
    pub read_chunk: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            window: 64,
            inbound_window: 64,
            request_timeout: Duration::from_secs(30),
            bind_timeout: Duration::from_secs(10),
            enquire_link_interval: Duration::from_secs(30),
            enquire_link_timeout: Duration::from_secs(10),
            dead_after_idle_intervals: 3,
            unbind_timeout: Duration::from_secs(5),
            unbind_drain_timeout: Duration::from_secs(5),
            max_pdu_len: DEFAULT_MAX_PDU_LEN,
            write_high_water: 256 * 1024,
            read_chunk: 64 * 1024,
        }
    }
}

impl SessionConfig {
    /// The same settings with every value pulled into its sane range (windows 1..=MAX_WINDOW,
    /// non-zero timers, at least one idle interval).
    pub fn normalized(mut self) -> Self {
        let min = Duration::from_millis(1);
        self.window = self.window.clamp(1, MAX_WINDOW);
        self.inbound_window = self.inbound_window.clamp(1, MAX_WINDOW);
        self.request_timeout = self.request_timeout.max(min);
        self.bind_timeout = self.bind_timeout.max(min);
        self.enquire_link_interval = self.enquire_link_interval.max(min);
        self.enquire_link_timeout = self.enquire_link_timeout.max(min);
        self.dead_after_idle_intervals = self.dead_after_idle_intervals.max(1);
        self.unbind_timeout = self.unbind_timeout.max(min);
        self.unbind_drain_timeout = self.unbind_drain_timeout.max(min);
        self.max_pdu_len = self.max_pdu_len.max(crate::pdu::HEADER_LEN as u32);
        self.write_high_water = self.write_high_water.clamp(4096, 64 * 1024 * 1024);
        self.read_chunk = self.read_chunk.clamp(1024, 1024 * 1024);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_clamps() {
        let c = SessionConfig {
            window: 0,
            inbound_window: usize::MAX,
            request_timeout: Duration::ZERO,
            dead_after_idle_intervals: 0,
            max_pdu_len: 3,
            ..SessionConfig::default()
        }
        .normalized();
        assert_eq!(c.window, 1);
        assert_eq!(c.inbound_window, MAX_WINDOW);
        assert!(c.request_timeout > Duration::ZERO);
        assert_eq!(c.dead_after_idle_intervals, 1);
        assert_eq!(c.max_pdu_len, 16);
    }
}
