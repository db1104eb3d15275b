//! SMPP time fields (SMPP 3.4 section 7.1.1): `schedule_delivery_time` and `validity_period`.
//!
//! Either empty (none given) or 16 characters `YYMMDDhhmmsstnnp`:
//! - `p` = `+` or `-`: absolute local time, `nn` quarter hours ahead of (`+`) or behind (`-`)
//!   UTC, `t` tenths of a second;
//! - `p` = `R`: relative to now, `YY` years, `MM` months, `DD` days, `hh:mm:ss` (`t` and `nn`
//!   must be 0 per the spec; any digit is tolerated, as peers send junk there).
//!
//! Pure functions over unix milliseconds so they are tested with plain values. The calendar
//! arithmetic is written out (a dozen lines, Howard Hinnant's days-from-civil) rather than
//! pulling a date crate into the protocol crate for it.

use std::fmt;

/// Why a time field was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeError(pub String);

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimeError {}

/// A parsed time field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmppTime {
    /// Unix milliseconds (UTC).
    Absolute(u64),
    /// Years, months, days, hours, minutes, seconds from now.
    Relative { years: u32, months: u32, days: u32, hours: u32, minutes: u32, seconds: u32 },
}

fn err(msg: impl Into<String>) -> TimeError {
    TimeError(msg.into())
}

fn two(b: &[u8], at: usize) -> Result<u32, TimeError> {
    match (b[at], b[at + 1]) {
        (a @ b'0'..=b'9', c @ b'0'..=b'9') => Ok(u32::from(a - b'0') * 10 + u32::from(c - b'0')),
        _ => Err(err(format!("non-digit at position {}", at + 1))),
    }
}

/// Parse a field; `Ok(None)` when empty. A trailing NUL is ignored.
pub fn parse(field: &[u8]) -> Result<Option<SmppTime>, TimeError> {
    let b = field.strip_suffix(b"\0").unwrap_or(field);
    if b.is_empty() {
        return Ok(None);
    }
    if b.len() != 16 {
        return Err(err(format!("{} characters, want 16 (YYMMDDhhmmsstnnp)", b.len())));
    }
    let (yy, mo, dd, hh, mi, ss) = (two(b, 0)?, two(b, 2)?, two(b, 4)?, two(b, 6)?, two(b, 8)?, two(b, 10)?);
    if !b[12].is_ascii_digit() {
        return Err(err("tenths of a second is not a digit"));
    }
    let tenths = u32::from(b[12] - b'0');
    let nn = two(b, 13)?;
    match b[15] {
        b'R' => {
            if hh > 23 || mi > 59 || ss > 59 {
                return Err(err("relative time with hours > 23, minutes > 59 or seconds > 59"));
            }
            Ok(Some(SmppTime::Relative {
                years: yy,
                months: mo,
                days: dd,
                hours: hh,
                minutes: mi,
                seconds: ss,
            }))
        }
        sign @ (b'+' | b'-') => {
            if !(1..=12).contains(&mo) {
                return Err(err(format!("month {mo}")));
            }
            let year = 2000 + i64::from(yy);
            if dd == 0 || dd > days_in_month(year, mo) {
                return Err(err(format!("day {dd} of month {mo}")));
            }
            if hh > 23 || mi > 59 || ss > 59 {
                return Err(err(format!("time {hh:02}:{mi:02}:{ss:02}")));
            }
            if nn > 48 {
                return Err(err(format!("UTC offset of {nn} quarter hours (at most 48)")));
            }
            let local_secs = days_from_civil(year, mo, dd) * 86_400
                + i64::from(hh) * 3600
                + i64::from(mi) * 60
                + i64::from(ss);
            let offset = i64::from(nn) * 15 * 60;
            // Local = UTC + offset for '+'.
            let utc_secs = if sign == b'+' { local_secs - offset } else { local_secs + offset };
            let ms = utc_secs * 1000 + i64::from(tenths) * 100;
            u64::try_from(ms).map(|m| Some(SmppTime::Absolute(m))).map_err(|_| err("before 1970"))
        }
        other => Err(err(format!("last character {:?}, want '+', '-' or 'R'", other as char))),
    }
}

/// The unix milliseconds a field means at `now_ms`; `Ok(None)` when empty.
pub fn resolve(field: &[u8], now_ms: u64) -> Result<Option<u64>, TimeError> {
    Ok(parse(field)?.map(|t| at(t, now_ms)))
}

/// The unix milliseconds `t` means at `now_ms` (a relative time adds calendar years and months,
/// clamping the day to the month's last, then days and the time of day).
pub fn at(t: SmppTime, now_ms: u64) -> u64 {
    match t {
        SmppTime::Absolute(ms) => ms,
        SmppTime::Relative { years, months, days, hours, minutes, seconds } => {
            let secs = (now_ms / 1000) as i64;
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
            let of_day = secs.rem_euclid(86_400);
            let total_months = y * 12 + i64::from(m - 1) + i64::from(years) * 12 + i64::from(months);
            let (ny, nm) = (total_months.div_euclid(12), total_months.rem_euclid(12) as u32 + 1);
            let nd = d.min(days_in_month(ny, nm));
            let day = days_from_civil(ny, nm, nd) + i64::from(days);
            let s = day * 86_400
                + of_day
                + i64::from(hours) * 3600
                + i64::from(minutes) * 60
                + i64::from(seconds);
            (s * 1000 + (now_ms % 1000) as i64).max(0) as u64
        }
    }
}

/// `YYMMDDhhmmsst00+`: `unix_ms` as an absolute time field in UTC.
pub fn format_absolute(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let tenths = (unix_ms % 1000) / 100;
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}{}00+",
        y.rem_euclid(100),
        m,
        d,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        tenths
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02 14:30:00 UTC.
    const NOW: u64 = 1_796_221_800_000;

    #[test]
    fn empty_and_nul_mean_none() {
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"\0"), Ok(None));
    }

    #[test]
    fn absolute_in_utc_and_with_offsets() {
        assert_eq!(resolve(b"261202143000000+", 0), Ok(Some(NOW)));
        // Two hours (8 quarters) ahead of UTC: 16:30 local is 14:30 UTC.
        assert_eq!(resolve(b"261202163000008+", 0), Ok(Some(NOW)));
        // Behind UTC: 10:30 at -16 quarters is 14:30 UTC.
        assert_eq!(resolve(b"261202103000016-", 0), Ok(Some(NOW)));
        assert_eq!(resolve(b"261202143000500+", 0), Ok(Some(NOW + 500)));
        assert_eq!(resolve(b"240229000000000+", 0).map(|v| v.is_some()), Ok(true), "leap day");
    }

    #[test]
    fn relative_adds_calendar_units() {
        assert_eq!(resolve(b"000000000005000R", NOW), Ok(Some(NOW + 5_000)));
        assert_eq!(resolve(b"000001020304000R", NOW), Ok(Some(NOW + ((24 + 2) * 3600 + 3 * 60 + 4) * 1000)));
        // One month from 2026-12-02 is 2027-01-02 (31 days); one year is 365 days (2027 is common).
        assert_eq!(resolve(b"000100000000000R", NOW), Ok(Some(NOW + 31 * 86_400_000)));
        assert_eq!(resolve(b"010000000000000R", NOW), Ok(Some(NOW + 365 * 86_400_000)));
        // Jan 31 + 1 month clamps to Feb 28.
        let jan31 = resolve(b"270131000000000+", 0).unwrap().unwrap();
        let feb28 = resolve(b"270228000000000+", 0).unwrap().unwrap();
        assert_eq!(resolve(b"000100000000000R", jan31), Ok(Some(feb28)));
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for bad in [
            &b"2612021430000+"[..], // short
            b"26120214300000000+",  // long
            b"261302143000000+",    // month 13
            b"261232143000000+",    // day 32
            b"270229000000000+",    // Feb 29 of a common year
            b"261202243000000+",    // hour 24
            b"261202146000000+",    // minute 60
            b"261202143000049+",    // offset 49 quarters
            b"26120214300000 +",    // space
            b"261202143000000X",    // bad sign
            b"0000002400000 0R",    // hour 24 relative, junk
            b"000000240000000R",    // hour 24 relative
        ] {
            assert!(parse(bad).is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn format_round_trips() {
        assert_eq!(format_absolute(NOW + 300), "261202143000300+");
        for t in [946_684_800_000, NOW, NOW + 123_456_789, 4_102_444_799_000] {
            let s = format_absolute(t);
            assert_eq!(resolve(s.as_bytes(), 0), Ok(Some(t - t % 100)), "{s}");
        }
    }

    #[test]
    fn civil_round_trips() {
        for d in [-1000, 0, 59, 60, 10_000, 20_000, 47_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
