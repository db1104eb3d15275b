//! One HTTP submit, whatever its form (the JSON API or Kannel's sendsms): checked whole first
//! (numbers, text and its parts, the throttle), so a bad request sends nothing; then each part
//! to each destination goes through the same routing, chains and receipts as an ESME's
//! submit_sm ([`crate::dispatch::submit_as`]), under our id recorded beforehand. Validity and
//! schedule go through store-and-forward the same way too: checked like an SMPP submit's
//! (a schedule at or after the expiry is refused, naming the field), and a scheduled part on a
//! route that stores and forwards waits in the store until due ([`crate::forward::hold_with_id`]).

use super::problem::Problem;
use super::records::{Callback, Record};
use super::Http;
use crate::accounts::AccountState;
use crate::dispatch::Budget;
use bytes::Bytes;
use smpp::concat::{self, Encoding, Method};
use smpp::text::{gsm7, ucs2, DataCoding};
use smpp::{Address, CommandStatus, SubmitSm};
use std::time::Duration;

/// The most digits of a phone number (SMPP addresses hold 20 octets).
const MAX_DIGITS: usize = 20;
/// An alphanumeric sender: at most 11 characters (GSM 03.40).
const MAX_ALPHA: usize = 11;

/// How a text is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoding {
    /// GSM 7-bit when every character fits, else UCS2.
    Auto,
    Gsm7,
    Ucs2,
}

#[derive(Clone, Debug)]
pub enum Content {
    Text { text: String, encoding: TextEncoding },
    Binary { data: Vec<u8>, data_coding: u8 },
}

/// A submit as the API took it; `*_field` name where each value came from, for errors.
#[derive(Clone, Debug)]
pub struct Submit {
    pub from: String,
    pub to: Vec<String>,
    pub content: Content,
    pub registered_delivery: u8,
    /// SMPP validity_period / schedule_delivery_time, already formatted.
    pub validity: Option<String>,
    pub schedule: Option<String>,
    pub callback: Option<Callback>,
}

/// Field names of one API form, for the `field` of errors.
pub struct Fields {
    pub from: &'static str,
    pub to: fn(usize) -> String,
    pub text: &'static str,
    pub validity: &'static str,
    pub schedule: &'static str,
}

/// One part's outcome.
#[derive(Clone, Debug)]
pub struct PartResult {
    pub id: String,
    pub result: Result<(), CommandStatus>,
}

/// Per destination, per part.
pub struct Outcome {
    pub to: Vec<(String, Vec<PartResult>)>,
}

impl Outcome {
    pub fn accepted(&self) -> usize {
        self.to.iter().flat_map(|(_, p)| p).filter(|p| p.result.is_ok()).count()
    }
    pub fn first_error(&self) -> Option<CommandStatus> {
        self.to.iter().flat_map(|(_, p)| p).find_map(|p| p.result.err())
    }
}

/// An address from a number: `+` and digits (international), digits, or (for a sender) an
/// alphanumeric name.
pub fn address(s: &str, sender: bool) -> Result<Address, String> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if !digits.is_empty() && digits.len() <= MAX_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()) {
        let ton = if s.starts_with('+') { 1 } else { 0 };
        return Ok(Address::new(ton, 1, digits.to_owned()));
    }
    if sender
        && !s.is_empty()
        && s.chars().count() <= MAX_ALPHA
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-' || c == '.')
    {
        return Ok(Address::new(5, 0, s.to_owned()));
    }
    if sender {
        Err(format!("`{s}` is neither a number (digits, optionally after +, at most {MAX_DIGITS}) nor an alphanumeric sender (at most {MAX_ALPHA} letters, digits, space, - or .)"))
    } else {
        Err(format!("`{s}` is not a number: digits, optionally after +, at most {MAX_DIGITS}"))
    }
}

/// The parts of `content`: data_coding and each part's short_message and esm_class.
pub fn parts(
    content: &Content,
    max_parts: usize,
    text_field: &str,
) -> Result<(u8, Vec<concat::Part>), Problem> {
    let reference = fastrand::u8(..);
    let method = Method::Udh8(reference);
    let (dc, payload, encoding) = match content {
        Content::Text { text, encoding } => {
            if text.is_empty() {
                return Err(Problem::invalid(text_field, "the text is empty"));
            }
            match encoding {
                TextEncoding::Auto => {
                    let (dc, p) = smpp::text::encode_best(text);
                    let e = if dc == DataCoding::UCS2 { Encoding::Ucs2 } else { Encoding::Gsm7 };
                    (dc.0, p, e)
                }
                TextEncoding::Gsm7 => match gsm7::encode(text) {
                    Ok(p) => (DataCoding::DEFAULT.0, p, Encoding::Gsm7),
                    Err(e) => {
                        return Err(Problem::invalid(
                            text_field,
                            format!("not in the GSM 7-bit alphabet: {e}"),
                        ))
                    }
                },
                TextEncoding::Ucs2 => (DataCoding::UCS2.0, ucs2::encode(text), Encoding::Ucs2),
            }
        }
        Content::Binary { data, data_coding } => {
            if data.is_empty() {
                return Err(Problem::invalid(text_field, "the binary content is empty"));
            }
            (*data_coding, data.clone(), Encoding::Octet)
        }
    };
    let parts =
        concat::split(&payload, encoding, method).map_err(|e| Problem::invalid(text_field, e.to_string()))?;
    if parts.len() > max_parts {
        return Err(Problem::invalid(
            text_field,
            format!("the content needs {} parts, more than http.max_parts ({max_parts})", parts.len()),
        ));
    }
    Ok((dc, parts))
}

/// Check `s` whole, then send every part to every destination. Nothing is sent when Err.
pub async fn submit(
    http: &Http,
    account: &AccountState,
    s: Submit,
    fields: &Fields,
) -> Result<Outcome, Problem> {
    let core = &http.core;
    let cfg = core.config.get();
    if s.to.is_empty() {
        return Err(Problem::invalid((fields.to)(0).trim_end_matches("/0"), "no destination"));
    }
    if s.to.len() > cfg.http.max_destinations {
        return Err(Problem::invalid(
            (fields.to)(0).trim_end_matches("/0"),
            format!(
                "{} destinations, more than http.max_destinations ({})",
                s.to.len(),
                cfg.http.max_destinations
            ),
        ));
    }
    let source = address(&s.from, true).map_err(|m| Problem::invalid(fields.from, m))?;
    let mut dests = Vec::with_capacity(s.to.len());
    for (i, t) in s.to.iter().enumerate() {
        dests.push(address(t, false).map_err(|m| Problem::invalid((fields.to)(i), m))?);
    }
    let (dc, parts) = parts(&s.content, cfg.http.max_parts.max(1), fields.text)?;
    let router = core.router.get();
    for (i, d) in dests.iter().enumerate() {
        if router.route(&account.system_id, &source.addr, &d.addr).is_empty() {
            return Err(Problem::invalid((fields.to)(i), "no route for this destination"));
        }
    }
    if core.is_draining() || !core.is_active() {
        return Err(Problem::unavailable("this replica is not taking submits now (draining or standby)"));
    }
    if s.registered_delivery != 0 && !core.store.healthy() {
        return Err(Problem::unavailable(
            "the receipt store does not answer: submits wanting a receipt are refused",
        ));
    }
    // The time fields as an SMPP submit's: a bad pair is the request's fault, before anything
    // is sent or counted against the throttle.
    let times = SubmitSm {
        validity_period: Bytes::from(s.validity.clone().unwrap_or_default()),
        schedule_delivery_time: Bytes::from(s.schedule.clone().unwrap_or_default()),
        ..SubmitSm::default()
    };
    if let Err(status) =
        crate::forward::times(&times, crate::sim::unix_ms(), cfg.store_and_forward.max_validity)
    {
        return Err(match status {
            CommandStatus::ESME_RINVSCHED => Problem::invalid(
                fields.schedule,
                format!(
                    "the schedule is not before the message expires (its validity, at most store_and_forward.max_validity = {})",
                    humantime_secs(cfg.store_and_forward.max_validity)
                ),
            ),
            _ => Problem::invalid(fields.validity, "the validity has already ended"),
        });
    }
    let scheduled = crate::forward::is_scheduled(&times);
    let n = u32::try_from(parts.len() * dests.len()).unwrap_or(u32::MAX);
    account.throttle.try_take_n(n).map_err(Problem::throttled)?;

    // Our ids and records first: a receipt can come back before dispatch returns.
    let now = crate::sim::unix_ms();
    let total = u8::try_from(parts.len()).unwrap_or(u8::MAX);
    let mut plan = Vec::with_capacity(dests.len());
    let mut records = Vec::with_capacity(parts.len() * dests.len());
    for (d, to) in dests.iter().zip(&s.to) {
        let mut ids = Vec::with_capacity(parts.len());
        for (i, _) in parts.iter().enumerate() {
            let id = core.ids.next_id();
            records.push(Record {
                id: id.clone(),
                account: account.system_id.clone(),
                from: s.from.clone(),
                to: to.clone(),
                part: u8::try_from(i + 1).unwrap_or(u8::MAX),
                parts: total,
                state: "accepted".into(),
                submitted_at_ms: now,
                updated_at_ms: now,
                error: None,
                callback: s.callback.clone(),
                receipt_error: None,
            });
            ids.push(id);
        }
        plan.push((d.clone(), to.clone(), ids));
    }
    if let Err(e) = http.records.put_many(&records).await {
        tracing::warn!(error = %e, "HTTP message records not stored");
        return Err(Problem::unavailable("the message store does not answer"));
    }
    let budget = Budget::new(Duration::from_millis(cfg.server.submit_timeout_ms.max(1)));
    let _inflight = core.inflight_guard();
    let mut sends = Vec::new();
    for (dest, _, ids) in &plan {
        let chain = router.route(&account.system_id, &source.addr, &dest.addr).clone();
        for (part, id) in parts.iter().zip(ids) {
            let sm = SubmitSm {
                source: source.clone(),
                destination: dest.clone(),
                esm_class: if part.esm_class_udhi { concat::ESM_CLASS_UDHI } else { 0 },
                registered_delivery: s.registered_delivery,
                data_coding: dc,
                validity_period: Bytes::from(s.validity.clone().unwrap_or_default()),
                schedule_delivery_time: Bytes::from(s.schedule.clone().unwrap_or_default()),
                short_message: Bytes::from(part.short_message()),
                ..SubmitSm::default()
            };
            let chain = chain.clone();
            let id = id.clone();
            let name = account.system_id.as_str();
            sends.push(async move {
                // Scheduled on a route that stores and forwards: it waits in the store until due,
                // as an SMPP submit would.
                let (r, route) = if scheduled && crate::forward::holds(core, name, &sm) {
                    (crate::forward::hold_with_id(core, name, &sm, id.clone()).await, "held".to_owned())
                } else {
                    crate::dispatch::submit_as(core, name, sm, &chain, &budget, id.clone()).await
                };
                let status = r.as_ref().err().copied().unwrap_or(CommandStatus::ESME_ROK);
                core.metrics.submit(name, &route, status).inc();
                PartResult { id, result: r.map(|_| ()) }
            });
        }
    }
    let mut results = futures::future::join_all(sends).await.into_iter();
    let mut failed = Vec::new();
    let mut out = Outcome { to: Vec::with_capacity(plan.len()) };
    for (_, to, ids) in plan {
        let mine: Vec<PartResult> = results.by_ref().take(ids.len()).collect();
        for p in &mine {
            if let Err(st) = p.result {
                if let Some(r) = records.iter().find(|r| r.id == p.id) {
                    let mut r = r.clone();
                    r.state = "failed".into();
                    r.error = Some(crate::metrics::status_name(st));
                    failed.push(r);
                }
            }
        }
        out.to.push((to, mine));
    }
    if !failed.is_empty() {
        if let Err(e) = http.records.put_many(&failed).await {
            tracing::debug!(error = %e, "failed parts not recorded");
        }
    }
    Ok(out)
}

/// `d` in whole seconds, for messages (`3600s`).
fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// SMPP relative time (`YYMMDDhhmmss000R`) for `secs` from now; None above 99 days.
pub fn relative_time(secs: u64) -> Option<String> {
    let days = secs / 86_400;
    if days > 99 {
        return None;
    }
    let r = secs % 86_400;
    Some(format!("0000{:02}{:02}{:02}{:02}000R", days, r / 3600, (r % 3600) / 60, r % 60))
}

/// SMPP absolute UTC time (`YYMMDDhhmmss000+`) from RFC 3339 `YYYY-MM-DDThh:mm:ssZ` (or
/// `+00:00`).
pub fn absolute_time(s: &str) -> Option<String> {
    let core = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let core = core.split('.').next()?;
    let b = core.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        core.get(r).filter(|x| x.bytes().all(|c| c.is_ascii_digit()))?.parse::<u32>().ok()
    };
    let (y, mo, d, h, mi, se) =
        (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    Some(format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{se:02}000+", y % 100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(address("+31612345678", false).unwrap(), Address::new(1, 1, "31612345678"));
        assert_eq!(address("0612345678", false).unwrap(), Address::new(0, 1, "0612345678"));
        assert_eq!(address("Shop", true).unwrap(), Address::new(5, 0, "Shop"));
        for bad in ["", "+", "12a4", "+31 6", "123456789012345678901", "Shop"] {
            assert!(address(bad, false).is_err(), "{bad}");
        }
        assert!(address("TwelveChars!", true).is_err());
    }

    #[test]
    fn texts_split_and_are_bounded() {
        let t = |s: &str, e| Content::Text { text: s.into(), encoding: e };
        let (dc, p) = parts(&t("hello", TextEncoding::Auto), 10, "/text").unwrap();
        assert_eq!((dc, p.len(), p[0].udh.is_none()), (0, 1, true));
        let (dc, p) = parts(&t(&"a".repeat(161), TextEncoding::Auto), 10, "/text").unwrap();
        assert_eq!((dc, p.len()), (0, 2));
        assert!(p.iter().all(|x| x.esm_class_udhi && x.udh.as_ref().is_some_and(|u| u[1] == 0x00)));
        let (dc, p) = parts(&t("привет", TextEncoding::Auto), 10, "/text").unwrap();
        assert_eq!((dc, p[0].payload.len()), (8, 12));
        let (dc, _) = parts(&t("hello", TextEncoding::Ucs2), 10, "/text").unwrap();
        assert_eq!(dc, 8);
        let e = parts(&t("привет", TextEncoding::Gsm7), 10, "/text").unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (422, Some("/text")));
        let e = parts(&t(&"a".repeat(153 * 3 + 1), TextEncoding::Auto), 3, "/text").unwrap_err();
        assert!(e.detail.contains("4 parts"), "{}", e.detail);
        let (dc, p) = parts(&Content::Binary { data: vec![1; 200], data_coding: 4 }, 10, "/binary").unwrap();
        assert_eq!((dc, p.len()), (4, 2));
    }

    #[test]
    fn smpp_times() {
        assert_eq!(relative_time(3600).as_deref(), Some("000000010000000R"));
        assert_eq!(relative_time(2 * 86_400 + 61).as_deref(), Some("000002000101000R"));
        assert_eq!(relative_time(100 * 86_400), None);
        assert_eq!(absolute_time("2026-12-02T15:04:05Z").as_deref(), Some("261202150405000+"));
        assert_eq!(absolute_time("2026-12-02T15:04:05+00:00").as_deref(), Some("261202150405000+"));
        assert_eq!(absolute_time("2026-12-02T15:04:05+01:00"), None);
        assert_eq!(absolute_time("2026-13-02T15:04:05Z"), None);
        assert_eq!(absolute_time("tomorrow"), None);
    }
}
