//! Token bucket rate limiter, shared by every session of an account (or upstream).
//!
//! Burst is one second's worth of tokens, so a client at its rate never sees a refusal from
//! timing jitter. The rate can change on reload without losing the bucket's state.

use std::sync::Mutex;
use std::time::Instant;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
