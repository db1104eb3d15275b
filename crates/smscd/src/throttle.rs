//! Rate limits. [`TokenBucket`] polices what an account sends us: burst is one second's worth of
//! tokens, so a client at its rate never sees a refusal from timing jitter. [`Pacer`] shapes
//! what we send an upstream: sends are spaced 1/rate apart, so a carrier counting submits in
//! any one-second window never sees more than its rate (a full bucket would let a burst of one
//! second's worth out and then the refill: twice the rate within one second). Either rate can
//! change on reload without losing the state.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Tokens per second; None: unlimited.
    rate: Option<f64>,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: Option<u32>) -> Self {
        let rate = rate.map(f64::from);
        TokenBucket { inner: Mutex::new(Inner { rate, tokens: rate.unwrap_or(0.0), last: Instant::now() }) }
    }

    pub fn set_rate(&self, rate: Option<u32>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let rate = rate.map(f64::from);
        if g.rate != rate {
            g.rate = rate;
            g.tokens = g.tokens.min(rate.unwrap_or(0.0));
        }
    }

    pub fn is_limited(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).rate.is_some()
    }

    /// Take one token if there is one.
    pub fn try_take(&self) -> bool {
        self.try_take_at(Instant::now())
    }

    /// Take `n` tokens at once, or none: when short, how long until there will be `n` (a
    /// request of more than the burst can never pass: Err with the time a burst takes).
    pub fn try_take_n(&self, n: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rate) = g.rate else { return Ok(()) };
        let burst = rate.max(1.0);
        let elapsed = now.saturating_duration_since(g.last).as_secs_f64();
        g.last = now;
        g.tokens = (g.tokens + elapsed * rate).min(burst);
        let want = f64::from(n);
        if g.tokens >= want {
            g.tokens -= want;
            return Ok(());
        }
        let short = want.min(burst) - g.tokens;
        Err(Duration::from_secs_f64((short / rate.max(f64::MIN_POSITIVE)).max(0.001)))
    }

    fn try_take_at(&self, now: Instant) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rate) = g.rate else { return true };
        let burst = rate.max(1.0);
        let elapsed = now.saturating_duration_since(g.last).as_secs_f64();
        g.last = now;
        g.tokens = (g.tokens + elapsed * rate).min(burst);
        if g.tokens >= 1.0 {
            g.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Spaces sends at least `1/rate` apart (a leaky bucket without burst: GCRA with no tolerance),
/// so any one-second window holds at most `rate` of them. A send books the next free slot and
/// waits for it, rather than being refused when it comes a little early.
#[derive(Debug)]
pub struct Pacer {
    inner: Mutex<Pace>,
}

#[derive(Debug)]
struct Pace {
    /// None: unlimited.
    interval: Option<Duration>,
    /// The earliest time the next send may go.
    next: Instant,
}

/// The spacing of `rate` sends per second, rounded up so `rate` of them never fit in less
/// than a second.
fn interval(rate: Option<u32>) -> Option<Duration> {
    rate.map(|r| Duration::from_nanos(1_000_000_000u64.div_ceil(u64::from(r.max(1)))))
}

impl Pacer {
    pub fn new(rate: Option<u32>) -> Self {
        Pacer { inner: Mutex::new(Pace { interval: interval(rate), next: Instant::now() }) }
    }

    pub fn set_rate(&self, rate: Option<u32>) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).interval = interval(rate);
    }

    /// Book the next send slot if it comes within `max_wait`: how long to wait before sending
    /// (zero: now). None: not within `max_wait`, and nothing is booked.
    pub fn book(&self, max_wait: Duration) -> Option<Duration> {
        self.book_at(Instant::now(), max_wait)
    }

    fn book_at(&self, now: Instant, max_wait: Duration) -> Option<Duration> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(interval) = g.interval else { return Some(Duration::ZERO) };
        let at = g.next.max(now);
        let wait = at - now;
        if wait > max_wait {
            return None;
        }
        g.next = at + interval;
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: an HTTP request takes a token per part and destination, all or none.
    #[test]
    fn many_tokens_are_taken_whole_or_not_at_all() {
        let b = TokenBucket::new(Some(4));
        assert!(b.try_take_n(3).is_ok());
        let wait = b.try_take_n(2).expect_err("only about one token left");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
        assert!(b.try_take_n(1).is_ok(), "the refused request took nothing");
        assert!(TokenBucket::new(None).try_take_n(1_000).is_ok());
    }

    #[test]
    fn pacer_never_lets_more_than_the_rate_into_one_second() {
        let p = Pacer::new(Some(10));
        let t0 = Instant::now();
        // A burst of 25 at once: each books its own slot, 100 ms apart.
        let waits: Vec<Duration> =
            (0..25).map(|_| p.book_at(t0, Duration::from_secs(5)).expect("within 5 s")).collect();
        for (i, w) in waits.iter().enumerate() {
            assert_eq!(*w, Duration::from_millis(100) * i as u32, "send {i}");
        }
        // Any window [t, t + 1 s) of the send times holds at most 10.
        let sends: Vec<Duration> = waits.clone();
        for start in &sends {
            let n = sends.iter().filter(|s| **s >= *start && **s < *start + Duration::from_secs(1)).count();
            assert!(n <= 10, "{n} sends in the second from {start:?}");
        }
        // Too far out: refused, nothing booked.
        assert_eq!(p.book_at(t0, Duration::from_secs(1)), None);
        assert_eq!(p.book_at(t0, Duration::from_millis(2500)), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn pacer_rate_changes_and_unlimited() {
        let p = Pacer::new(None);
        let t0 = Instant::now();
        assert!((0..1000).all(|_| p.book_at(t0, Duration::ZERO) == Some(Duration::ZERO)));
        p.set_rate(Some(3));
        assert_eq!(p.book_at(t0, Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(p.book_at(t0, Duration::ZERO), None);
        assert_eq!(p.book_at(t0, Duration::from_secs(1)), Some(Duration::from_nanos(333_333_334)));
        // An idle pacer does not save up a burst.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.book_at(later, Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(p.book_at(later, Duration::ZERO), None);
    }

    #[test]
    fn unlimited_always_passes() {
        let b = TokenBucket::new(None);
        assert!((0..10_000).all(|_| b.try_take()));
    }

    #[test]
    fn burst_then_refill() {
        let b = TokenBucket::new(Some(10));
        let t0 = Instant::now();
        let taken = (0..100).filter(|_| b.try_take_at(t0)).count();
        assert_eq!(taken, 10);
        assert!(!b.try_take_at(t0));
        // 0.25 s later: 2.5 tokens.
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!((0..10).filter(|_| b.try_take_at(t1)).count(), 2);
    }

    #[test]
    fn rate_change_applies() {
        let b = TokenBucket::new(Some(1));
        let t0 = Instant::now();
        assert!(b.try_take_at(t0));
        assert!(!b.try_take_at(t0));
        b.set_rate(None);
        assert!(b.try_take_at(t0));
        b.set_rate(Some(5));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| b.try_take_at(t1)).count(), 5);
    }
}
