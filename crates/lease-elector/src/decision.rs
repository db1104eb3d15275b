//! The pure part of the election: what to do on this tick, given what we last saw of the Lease and
//! when. No I/O and no clock of its own, so it is tested with a fake clock.
//!
//! Expiry follows client-go: a lease held by someone else is expired once `leaseDurationSeconds`
//! (from the record) have passed since WE observed the record change (`observed_at`, our monotonic
//! clock), never by comparing the remote `renewTime` with our wall clock.

use std::time::Duration;
use tokio::time::Instant;

/// The three durations of client-go leader election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a standby waits, from the last change it observed, before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// Interval between attempts (acquire or renew).
    pub retry_period: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("leader election timing must satisfy lease duration ({lease:?}) > renew deadline ({renew:?}) > retry period ({retry:?}) > 0")]
pub struct TimingError {
    pub lease: Duration,
    pub renew: Duration,
    pub retry: Duration,
}

impl Timing {
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, TimingError> {
        if lease_duration > renew_deadline && renew_deadline > retry_period && !retry_period.is_zero() {
            Ok(Timing { lease_duration, renew_deadline, retry_period })
        } else {
            Err(TimingError { lease: lease_duration, renew: renew_deadline, retry: retry_period })
        }
    }

    /// Timeout of one API call: shorter than the retry period, so a hung call never delays the
    /// next attempt (nor, bounded again by the renew deadline, a step-down).
    pub fn call_timeout(&self) -> Duration {
        self.retry_period.mul_f64(0.75)
    }
}

/// The election-relevant part of a Lease as read from the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Empty when nobody holds it (released, or never held).
    pub holder: String,
    pub lease_duration_secs: i32,
    pub transitions: i32,
    /// `renewTime` as text: only compared for change, never against our clock.
    pub renew_time: Option<String>,
    pub resource_version: String,
}

/// What we know when deciding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `None`: the Lease does not exist.
    pub record: Option<Record>,
    /// When we last saw `record` change (or first saw it).
    pub observed_at: Instant,
    /// `Some(t)` while we lead: `t` is when our last successful acquire/renew was SENT (the
    /// record the others observe changed after that, so our deadline runs out before theirs).
    pub last_renewed: Option<Instant>,
}

impl Observed {
    /// Nothing known yet.
    pub fn new(now: Instant) -> Self {
        Observed { record: None, observed_at: now, last_renewed: None }
    }

    /// Take in a fresh read of the Lease; `observed_at` moves only when the record changed.
    pub fn observe(&mut self, now: Instant, record: Option<Record>) {
        if self.record != record {
            self.record = record;
            self.observed_at = now;
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// No Lease: create it with us as holder (AlreadyExists = someone else won).
    Create,
    /// Free (no holder) or expired: write us as holder, guarded by the resourceVersion we read;
    /// `transitions` is the new leaseTransitions (incremented: a new holder).
    Acquire { transitions: i32 },
    /// Ours: refresh renewTime, guarded by resourceVersion.
    Renew,
    /// Held by someone else and not expired: stay standby; it expires at `expires_at` unless it
    /// changes before.
    Wait { expires_at: Instant },
    /// We were leading but may no longer act: renewals failed past the renew deadline, or the
    /// record names another holder.
    StepDown,
}

/// Decide this tick. `now` is our monotonic clock; `me` our identity.
pub fn decide(now: Instant, obs: &Observed, me: &str, timing: &Timing) -> Action {
    if let Some(last) = obs.last_renewed {
        // First, and regardless of what the (possibly stale) record says: past the renew deadline
        // we must stop, since a standby may acquire lease_duration after it saw our last renewal.
        if now >= last + timing.renew_deadline {
            return Action::StepDown;
        }
    }
    let Some(rec) = &obs.record else {
        return Action::Create;
    };
    if rec.holder == me {
        return Action::Renew;
    }
    if obs.last_renewed.is_some() && !rec.holder.is_empty() {
        // Someone else wrote the lease while we thought we led.
        return Action::StepDown;
    }
    if rec.holder.is_empty() {
        return Action::Acquire { transitions: rec.transitions.saturating_add(1) };
    }
    // Zero or negative durations in a foreign record: treat as one second, not as "never".
    let lease = Duration::from_secs(u64::try_from(rec.lease_duration_secs).unwrap_or(0).max(1));
    let expires_at = obs.observed_at + lease;
    if now >= expires_at {
        Action::Acquire { transitions: rec.transitions.saturating_add(1) }
    } else {
        Action::Wait { expires_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing::new(Duration::from_secs(15), Duration::from_secs(10), Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn rec(holder: &str, dur: i32, transitions: i32, rv: &str) -> Option<Record> {
        Some(Record {
            holder: holder.into(),
            lease_duration_secs: dur,
            transitions,
            renew_time: Some(format!("t-{rv}")),
            resource_version: rv.into(),
        })
    }

    #[test]
    fn timing_requires_lease_gt_renew_gt_retry() {
        let s = Duration::from_secs;
        assert!(Timing::new(s(15), s(10), s(2)).is_ok());
        assert!(Timing::new(s(10), s(10), s(2)).is_err());
        assert!(Timing::new(s(15), s(2), s(2)).is_err());
        assert!(Timing::new(s(15), s(10), s(0)).is_err());
        assert!(Timing::new(s(4), s(3), s(1)).map(|t| t.call_timeout() < t.retry_period).unwrap_or(false));
    }

    #[test]
    fn decision_table() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // (name, now offset, record, observed_at offset, last_renewed offset, expected)
        type Case = (&'static str, Duration, Option<Record>, Duration, Option<Duration>, Action);
        let cases: Vec<Case> = vec![
            ("absent -> create", s(0), None, s(0), None, Action::Create),
            (
                "free (released) -> acquire, transitions+1",
                s(0),
                rec("", 1, 3, "5"),
                s(0),
                None,
                Action::Acquire { transitions: 4 },
            ),
            (
                "held by other, fresh -> wait",
                s(5),
                rec("b", 15, 0, "1"),
                s(0),
                None,
                Action::Wait { expires_at: t0 + s(15) },
            ),
            (
                "held by other, just before expiry -> wait",
                s(15) - ms(1),
                rec("b", 15, 0, "1"),
                s(0),
                None,
                Action::Wait { expires_at: t0 + s(15) },
            ),
            (
                "held by other, expired -> take over",
                s(15),
                rec("b", 15, 2, "1"),
                s(0),
                None,
                Action::Acquire { transitions: 3 },
            ),
            (
                "expiry counts from our observation, not theirs",
                s(20),
                rec("b", 15, 0, "9"),
                s(10),
                None,
                Action::Wait { expires_at: t0 + s(25) },
            ),
            (
                "record's own duration is used",
                s(2),
                rec("b", 1, 0, "1"),
                s(0),
                None,
                Action::Acquire { transitions: 1 },
            ),
            (
                "nonsense duration counts as 1s",
                s(0),
                rec("b", 0, 0, "1"),
                s(0),
                None,
                Action::Wait { expires_at: t0 + s(1) },
            ),
            ("ours -> renew", s(1), rec("me", 15, 0, "1"), s(0), Some(s(0)), Action::Renew),
            (
                "ours after a restart -> renew (reacquire)",
                s(1),
                rec("me", 15, 0, "1"),
                s(0),
                None,
                Action::Renew,
            ),
            (
                "leading, renewals failing, before deadline -> renew",
                s(10) - ms(1),
                rec("me", 15, 0, "1"),
                s(0),
                Some(s(0)),
                Action::Renew,
            ),
            (
                "leading, renewals failing past deadline -> step down",
                s(10),
                rec("me", 15, 0, "1"),
                s(0),
                Some(s(0)),
                Action::StepDown,
            ),
            ("past deadline wins even if lease absent", s(11), None, s(0), Some(s(0)), Action::StepDown),
            (
                "leading but record names another -> step down",
                s(1),
                rec("b", 15, 1, "2"),
                s(1),
                Some(s(0)),
                Action::StepDown,
            ),
            (
                "leading, record released (by us) -> acquire again",
                s(1),
                rec("", 1, 1, "2"),
                s(1),
                Some(s(0)),
                Action::Acquire { transitions: 2 },
            ),
        ];
        for (name, now, record, observed_at, last, want) in cases {
            let obs = Observed { record, observed_at: t0 + observed_at, last_renewed: last.map(|d| t0 + d) };
            assert_eq!(decide(t0 + now, &obs, "me", &timing()), want, "{name}");
        }
    }

    #[test]
    fn observe_moves_time_only_on_change() {
        let t0 = Instant::now();
        let mut obs = Observed::new(t0);
        obs.observe(t0 + Duration::from_secs(1), rec("b", 15, 0, "1"));
        assert_eq!(obs.observed_at, t0 + Duration::from_secs(1));
        obs.observe(t0 + Duration::from_secs(5), rec("b", 15, 0, "1"));
        assert_eq!(obs.observed_at, t0 + Duration::from_secs(1), "same record: no change");
        obs.observe(t0 + Duration::from_secs(6), rec("b", 15, 0, "2"));
        assert_eq!(obs.observed_at, t0 + Duration::from_secs(6), "renewed: new observation");
    }

    #[test]
    fn safety_leader_stops_before_standby_acquires() {
        // The leader's last renewal was sent at t=0; a standby can observe that change no earlier.
        // The leader must step down strictly before the standby may take over.
        let t = timing();
        let t0 = Instant::now();
        let leader = Observed { record: rec("me", 15, 0, "1"), observed_at: t0, last_renewed: Some(t0) };
        let standby = Observed { record: rec("me", 15, 0, "1"), observed_at: t0, last_renewed: None };
        let mut now = t0;
        let mut stepped = None;
        let mut taken = None;
        while now < t0 + Duration::from_secs(20) {
            if stepped.is_none() && decide(now, &leader, "me", &t) == Action::StepDown {
                stepped = Some(now);
            }
            if taken.is_none() && matches!(decide(now, &standby, "other", &t), Action::Acquire { .. }) {
                taken = Some(now);
            }
            now += Duration::from_millis(100);
        }
        assert!(matches!((stepped, taken), (Some(a), Some(b)) if a < b), "{stepped:?} {taken:?}");
    }
}
