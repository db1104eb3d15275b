//! Delivery receipts: the SMPP 3.4 Appendix B text carried in a `deliver_sm` short_message:
//!
//! ```text
//! id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:...
//! ```
//!
//! Appendix B calls the format vendor specific and real SMSCs vary it: key case, `submit_date`
//! or `submitdate`, missing or extra fields, 12-digit dates with seconds, spaces around values.
//! [`Receipt::parse`] accepts all of that and [`Receipt::to_text`] writes the canonical form.
//!
//! Upstreams also disagree with themselves on how they write message ids (hex in
//! `submit_sm_resp`, decimal in the receipt, leading zeros, case), which is the classic cause of
//! receipts for "unknown" messages; [`normalize_message_id`] and the upstream's declared
//! [`MessageIdFormat`] fix that, without guessing the base.

use std::fmt;
use std::str::FromStr;

/// Chars of the original message the canonical `text:` field carries.
pub const TEXT_LIMIT: usize = 20;

/// SMPP 3.4 `message_state` (§5.2.28), with the Appendix B `stat:` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MessageState {
    /// In transit (`ENROUTE`).
    Enroute = 1,
    /// Delivered (`DELIVRD`).
    Delivered = 2,
    /// Validity period expired (`EXPIRED`).
    Expired = 3,
    /// Deleted (`DELETED`).
    Deleted = 4,
    /// Undeliverable (`UNDELIV`).
    Undeliverable = 5,
    /// Accepted, e.g. read by customer service on the subscriber's behalf (`ACCEPTD`).
    Accepted = 6,
    /// Invalid state (`UNKNOWN`).
    Unknown = 7,
    /// Rejected (`REJECTD`).
    Rejected = 8,
}

impl MessageState {
    /// Every state, in numeric order.
    pub const ALL: [MessageState; 8] = [
        MessageState::Enroute,
        MessageState::Delivered,
        MessageState::Expired,
        MessageState::Deleted,
        MessageState::Undeliverable,
        MessageState::Accepted,
        MessageState::Unknown,
        MessageState::Rejected,
    ];

    /// The state with this `message_state` value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_u8() == v)
    }

    /// The `message_state` value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The seven-letter Appendix B word (`DELIVRD`, `UNDELIV`, ...).
    pub fn stat_word(self) -> &'static str {
        match self {
            MessageState::Enroute => "ENROUTE",
            MessageState::Delivered => "DELIVRD",
            MessageState::Expired => "EXPIRED",
            MessageState::Deleted => "DELETED",
            MessageState::Undeliverable => "UNDELIV",
            MessageState::Accepted => "ACCEPTD",
            MessageState::Unknown => "UNKNOWN",
            MessageState::Rejected => "REJECTD",
        }
    }

    /// The state for a `stat:` value, case-insensitive: the Appendix B word, the spelled-out
    /// name (`DELIVERED`, `UNDELIVERABLE`, ...) or the numeric value (`2`).
    pub fn from_stat_word(word: &str) -> Option<Self> {
        let w = word.trim().to_ascii_uppercase();
        if let Ok(n) = w.parse::<u8>() {
            return Self::from_u8(n);
        }
        let state = match w.as_str() {
            "ENROUTE" | "EN_ROUTE" => MessageState::Enroute,
            "DELIVRD" | "DELIVERED" => MessageState::Delivered,
            "EXPIRED" => MessageState::Expired,
            "DELETED" => MessageState::Deleted,
            "UNDELIV" | "UNDELIVERABLE" | "UNDELIVERED" => MessageState::Undeliverable,
            "ACCEPTD" | "ACCEPTED" => MessageState::Accepted,
            "UNKNOWN" => MessageState::Unknown,
            "REJECTD" | "REJECTED" => MessageState::Rejected,
            _ => return None,
        };
        Some(state)
    }

    /// Whether no further receipt is expected: every state but `ENROUTE`.
    pub fn is_final(self) -> bool {
        self != MessageState::Enroute
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.stat_word())
    }
}

impl TryFrom<u8> for MessageState {
    type Error = u8;

    fn try_from(v: u8) -> Result<Self, u8> {
        Self::from_u8(v).ok_or(v)
    }
}

impl From<MessageState> for u8 {
    fn from(s: MessageState) -> u8 {
        s.as_u8()
    }
}

/// A `stat:` value that is not a known state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown message state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for MessageState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, UnknownState> {
        Self::from_stat_word(s).ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// The `stat:` field: a known state, or the word as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stat {
    /// A state [`MessageState::from_stat_word`] recognises.
    Known(MessageState),
    /// Anything else, trimmed, as received.
    Other(String),
}

impl Stat {
    /// The known state, if it is one.
    pub fn state(&self) -> Option<MessageState> {
        match self {
            Stat::Known(s) => Some(*s),
            Stat::Other(_) => None,
        }
    }

    fn parse(value: &str) -> Stat {
        MessageState::from_stat_word(value).map_or_else(|| Stat::Other(value.to_owned()), Stat::Known)
    }
}

impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stat::Known(s) => f.write_str(s.stat_word()),
            Stat::Other(w) => f.write_str(w),
        }
    }
}

/// Why a text is not a usable receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// No `id:` field, or an empty one: the receipt cannot be matched to a message.
    #[error("receipt has no id")]
    MissingId,
    /// No `stat:` field, or an empty one: the receipt says nothing.
    #[error("receipt has no stat")]
    MissingStat,
}

/// A delivery receipt. Optional fields are `None` when absent or empty; values are trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Message id as the SMSC wrote it (see [`normalize_message_id`]).
    pub id: String,
    /// Number of short messages originally submitted.
    pub sub: Option<String>,
    /// Number of short messages delivered.
    pub dlvrd: Option<String>,
    /// `YYMMDDhhmm` (sometimes with `ss`); see [`ReceiptDate::parse`].
    pub submit_date: Option<String>,
    /// `YYMMDDhhmm` (sometimes with `ss`).
    pub done_date: Option<String>,
    /// Final (or intermediate) state.
    pub stat: Stat,
    /// Network or SMSC error code.
    pub err: Option<String>,
    /// Start of the original message.
    pub text: Option<String>,
}

/// Fields this parser knows; everything else is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    Sub,
    Dlvrd,
    SubmitDate,
    DoneDate,
    Stat,
    Err,
    Text,
    Unknown,
}

impl Field {
    fn from_key(normalized: &str) -> Field {
        match normalized {
            "id" | "msgid" | "messageid" => Field::Id,
            "sub" => Field::Sub,
            "dlvrd" | "dlvd" => Field::Dlvrd,
            "submitdate" => Field::SubmitDate,
            "donedate" => Field::DoneDate,
            "stat" | "state" | "status" => Field::Stat,
            "err" | "error" => Field::Err,
            "text" => Field::Text,
            _ => Field::Unknown,
        }
    }
}

/// If `rest` starts with a key and its colon, the field and the octets consumed.
///
/// A key is a word (`[A-Za-z][A-Za-z0-9_]*`), for `submit`/`done` optionally followed by spaces
/// or underscores and `date`, then optional blanks and `:`.
fn match_key(rest: &str) -> Option<(Field, usize)> {
    let b = rest.as_bytes();
    if !b.first()?.is_ascii_alphabetic() {
        return None;
    }
    let word_end = b.iter().position(|c| !(c.is_ascii_alphanumeric() || *c == b'_')).unwrap_or(b.len());
    let mut key: String =
        rest[..word_end].chars().filter(|&c| c != '_').map(|c| c.to_ascii_lowercase()).collect();
    let mut end = word_end;
    if key == "submit" || key == "done" {
        let gap = b[end..].iter().take_while(|&&c| c == b' ' || c == b'_').count();
        let after = end + gap;
        if gap > 0 && b.get(after..after + 4).is_some_and(|w| w.eq_ignore_ascii_case(b"date")) {
            key.push_str("date");
            end = after + 4;
        }
    }
    end += b[end..].iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    if b.get(end) != Some(&b':') {
        return None;
    }
    Some((Field::from_key(&key), end + 1))
}

impl Receipt {
    /// Parses a receipt text.
    ///
    /// Keys are case-insensitive and start at the beginning or after whitespace; unknown
    /// `key:value` fields are skipped; a value runs to the next key, trimmed of whitespace and
    /// NULs (C-octet strings leak them). `text:` takes the
    /// rest of the input (a trailing CR, LF or NUL is dropped), since the original message may
    /// contain anything. Repeated fields: the first counts. Only `id` and `stat` are required.
    pub fn parse(input: &str) -> Result<Receipt, ReceiptError> {
        let mut keys: Vec<(Field, usize, usize)> = Vec::new(); // (field, key start, value start)
        let bytes = input.as_bytes();
        let mut i = 0;
        let mut at_boundary = true;
        while i < bytes.len() {
            if at_boundary && input.is_char_boundary(i) {
                if let Some((field, used)) = match_key(&input[i..]) {
                    keys.push((field, i, i + used));
                    i += used;
                    if field == Field::Text {
                        break;
                    }
                    at_boundary = false;
                    continue;
                }
            }
            at_boundary = bytes[i].is_ascii_whitespace();
            i += 1;
        }

        let mut r = Receipt {
            id: String::new(),
            sub: None,
            dlvrd: None,
            submit_date: None,
            done_date: None,
            stat: Stat::Other(String::new()),
            err: None,
            text: None,
        };
        let mut stat: Option<Stat> = None;
        for (n, &(field, _, value_start)) in keys.iter().enumerate() {
            let value_end = keys.get(n + 1).map_or(input.len(), |k| k.1);
            let raw = input.get(value_start..value_end).unwrap_or_default();
            let value = if field == Field::Text {
                raw.trim_start().trim_end_matches(['\r', '\n', '\0']).to_owned()
            } else {
                raw.trim_matches(|c: char| c.is_whitespace() || c == '\0').to_owned()
            };
            if value.is_empty() {
                continue;
            }
            let slot = match field {
                Field::Id => {
                    if r.id.is_empty() {
                        r.id = value;
                    }
                    continue;
                }
                Field::Stat => {
                    if stat.is_none() {
                        stat = Some(Stat::parse(&value));
                    }
                    continue;
                }
                Field::Unknown => continue,
                Field::Sub => &mut r.sub,
                Field::Dlvrd => &mut r.dlvrd,
                Field::SubmitDate => &mut r.submit_date,
                Field::DoneDate => &mut r.done_date,
                Field::Err => &mut r.err,
                Field::Text => &mut r.text,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        if r.id.is_empty() {
            return Err(ReceiptError::MissingId);
        }
        r.stat = stat.ok_or(ReceiptError::MissingStat)?;
        Ok(r)
    }

    /// The canonical Appendix B text: fields in spec order, `None` fields left out, `text:`
    /// cut to its first [`TEXT_LIMIT`] chars. Values are written as they are, so a value holding
    /// a `key:` of its own would not parse back the same.
    pub fn to_text(&self) -> String {
        let mut fields: Vec<String> = vec![format!("id:{}", self.id)];
        let mut opt = |key: &str, v: &Option<String>| {
            if let Some(v) = v {
                fields.push(format!("{key}:{v}"));
            }
        };
        opt("sub", &self.sub);
        opt("dlvrd", &self.dlvrd);
        opt("submit date", &self.submit_date);
        opt("done date", &self.done_date);
        fields.push(format!("stat:{}", self.stat));
        if let Some(err) = &self.err {
            fields.push(format!("err:{err}"));
        }
        if let Some(text) = &self.text {
            let cut: String = text.chars().take(TEXT_LIMIT).collect();
            fields.push(format!("text:{cut}"));
        }
        fields.join(" ")
    }

    /// The known state, if `stat:` held one.
    pub fn state(&self) -> Option<MessageState> {
        self.stat.state()
    }

    /// `submit_date` parsed, if present and well formed.
    pub fn submit_time(&self) -> Option<ReceiptDate> {
        self.submit_date.as_deref().and_then(ReceiptDate::parse)
    }

    /// `done_date` parsed, if present and well formed.
    pub fn done_time(&self) -> Option<ReceiptDate> {
        self.done_date.as_deref().and_then(ReceiptDate::parse)
    }
}

impl FromStr for Receipt {
    type Err = ReceiptError;

    fn from_str(s: &str) -> Result<Self, ReceiptError> {
        Receipt::parse(s)
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A receipt date, `YYMMDDhhmm` or `YYMMDDhhmmss`. No time zone: the SMSC's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReceiptDate {
    /// Two-digit year, 0..=99.
    pub year: u8,
    /// 1..=12.
    pub month: u8,
    /// 1..=31.
    pub day: u8,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59, present in the 12-digit form only.
    pub second: Option<u8>,
}

impl ReceiptDate {
    /// Parses 10 or 12 ASCII digits (after trimming) with fields in range; `None` otherwise.
    pub fn parse(s: &str) -> Option<ReceiptDate> {
        let b = s.trim().as_bytes();
        if !(b.len() == 10 || b.len() == 12) || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let two = |i: usize| -> u8 { (b[i] - b'0') * 10 + (b[i + 1] - b'0') };
        let d = ReceiptDate {
            year: two(0),
            month: two(2),
            day: two(4),
            hour: two(6),
            minute: two(8),
            second: (b.len() == 12).then(|| two(10)),
        };
        let ok = (1..=12).contains(&d.month)
            && (1..=31).contains(&d.day)
            && d.hour <= 23
            && d.minute <= 59
            && d.second.is_none_or(|s| s <= 59);
        ok.then_some(d)
    }
}

impl fmt::Display for ReceiptDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}{:02}{:02}{:02}{:02}", self.year, self.month, self.day, self.hour, self.minute)?;
        if let Some(s) = self.second {
            write!(f, "{s:02}")?;
        }
        Ok(())
    }
}

/// The form of a message id used to match a receipt to its submission.
///
/// Trims whitespace and NULs (C-octet strings leak them), strips leading zeros (an id of only
/// zeros becomes `"0"`) and lowercases. Apply it to the `submit_sm_resp` id when storing and to
/// the receipt id when looking up, so `"000A1B"`, `"a1b"` and `" A1B\0"` all meet at `"a1b"`.
/// It does not convert between hex and decimal: see [`MessageIdFormat`].
pub fn normalize_message_id(id: &str) -> String {
    let trimmed = id.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    let stripped = trimmed.trim_start_matches('0');
    if stripped.is_empty() && !trimmed.is_empty() {
        return "0".to_owned();
    }
    stripped.to_lowercase()
}

/// How an upstream's receipt ids relate to the ids of its `submit_sm_resp`, as the operator
/// declares it per upstream. Never guessed: an id such as `1234` is valid decimal and valid hex,
/// so trying both forms matches another message (`0x4d2` receipted as `1234` is not `0x1234`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageIdFormat {
    /// The same id in both (after [`normalize_message_id`]: leading zeros, case, padding).
    #[default]
    Same,
    /// `submit_sm_resp` carries hex, receipts carry the same number in decimal.
    HexToDecimal,
    /// `submit_sm_resp` carries decimal, receipts carry the same number in hex.
    DecimalToHex,
}

/// Longest id converted between bases (the conversion is quadratic in the length; SMPP message
/// ids are at most 64 octets).
const MAX_CONVERTED_ID: usize = 64;

impl MessageIdFormat {
    /// The one key a `submit_sm_resp` id is stored under: its [`normalize_message_id`] form.
    /// `None` when the id is not in the base this format declares (its receipt could never be
    /// matched safely).
    pub fn resp_key(self, resp_id: &str) -> Option<String> {
        let n = normalize_message_id(resp_id);
        let ok = match self {
            MessageIdFormat::Same => !n.is_empty(),
            MessageIdFormat::HexToDecimal => is_digits(&n, 16),
            MessageIdFormat::DecimalToHex => is_digits(&n, 10),
        };
        ok.then_some(n)
    }

    /// The one key a receipt id is looked up under: the receipt's number converted into the
    /// base of the `submit_sm_resp` id, normalised. `None` when the receipt id is not in the base
    /// this format declares for receipts (it matches nothing rather than something by chance).
    pub fn receipt_key(self, receipt_id: &str) -> Option<String> {
        let n = normalize_message_id(receipt_id);
        match self {
            MessageIdFormat::Same => (!n.is_empty()).then_some(n),
            MessageIdFormat::HexToDecimal => convert_base(&n, 10, 16),
            MessageIdFormat::DecimalToHex => convert_base(&n, 16, 10),
        }
    }
}

fn is_digits(s: &str, radix: u32) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_digit(radix))
}

/// `digits` (normalised: lowercase, no leading zeros) from base `from` to base `to`, lowercase,
/// no leading zeros; any length up to [`MAX_CONVERTED_ID`]. `None` if `digits` is empty, too
/// long or holds a character that is not a digit of `from`.
fn convert_base(digits: &str, from: u32, to: u32) -> Option<String> {
    if digits.len() > MAX_CONVERTED_ID {
        return None;
    }
    // Little-endian digits of the number in base `to`, built up digit by digit of the input.
    let mut out: Vec<u32> = Vec::new();
    let mut any = false;
    for c in digits.chars() {
        let mut carry = c.to_digit(from)?;
        any = true;
        for d in out.iter_mut() {
            let v = *d * from + carry;
            *d = v % to;
            carry = v / to;
        }
        while carry > 0 {
            out.push(carry % to);
            carry /= to;
        }
    }
    if !any {
        return None;
    }
    if out.is_empty() {
        return Some("0".to_owned());
    }
    out.iter().rev().map(|d| char::from_digit(*d, to)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CANONICAL: &str = "id:0123456789 sub:001 dlvrd:001 submit date:2301011200 \
                             done date:2301011201 stat:DELIVRD err:000 text:Hello world";

    #[test]
    fn parses_canonical() {
        let r = Receipt::parse(CANONICAL).unwrap();
        assert_eq!(r.id, "0123456789");
        assert_eq!(r.sub.as_deref(), Some("001"));
        assert_eq!(r.dlvrd.as_deref(), Some("001"));
        assert_eq!(r.submit_date.as_deref(), Some("2301011200"));
        assert_eq!(r.done_date.as_deref(), Some("2301011201"));
        assert_eq!(r.stat, Stat::Known(MessageState::Delivered));
        assert_eq!(r.err.as_deref(), Some("000"));
        assert_eq!(r.text.as_deref(), Some("Hello world"));
        assert_eq!(r.to_text(), CANONICAL);
        assert_eq!(r.state(), Some(MessageState::Delivered));
        assert_eq!(
            r.submit_time(),
            Some(ReceiptDate { year: 23, month: 1, day: 1, hour: 12, minute: 0, second: None })
        );
    }

    #[test]
    fn lenient_variants() {
        let r = Receipt::parse(
            "ID: 0A1B  Sub:1 DLVRD:1 Submit_Date:230101120059 DoneDate: 230101120100 \
             STAT : undeliv ERR:  069 mcc:310 Text: hi there: id:9 stat:X\r\n",
        )
        .unwrap();
        assert_eq!(r.id, "0A1B");
        assert_eq!(r.sub.as_deref(), Some("1"));
        assert_eq!(r.submit_date.as_deref(), Some("230101120059"));
        assert_eq!(r.done_date.as_deref(), Some("230101120100"));
        assert_eq!(r.stat, Stat::Known(MessageState::Undeliverable));
        assert_eq!(r.err.as_deref(), Some("069"));
        assert_eq!(r.text.as_deref(), Some("hi there: id:9 stat:X"));
        assert_eq!(r.done_time().and_then(|d| d.second), Some(0));

        let r = Receipt::parse("submitdate:2301011200 id:42 stat:2").unwrap();
        assert_eq!(r.stat.state(), Some(MessageState::Delivered));
        assert_eq!(r.submit_date.as_deref(), Some("2301011200"));
        assert_eq!(r.text, None);
        assert_eq!(r.err, None);

        let r = Receipt::parse("id:1 submit  date:2301011200 done_date:2301011200 stat:ENROUTE").unwrap();
        assert_eq!(r.submit_date.as_deref(), Some("2301011200"));
        assert_eq!(r.done_date.as_deref(), Some("2301011200"));

        // Unknown stat kept; empty optional values are None; first of repeated fields wins.
        let r = Receipt::parse("id:x id:y stat:PENDING err: text:").unwrap();
        assert_eq!(r.id, "x");
        assert_eq!(r.stat, Stat::Other("PENDING".into()));
        assert_eq!(r.state(), None);
        assert_eq!(r.err, None);
        assert_eq!(r.text, None);
        assert_eq!(r.to_text(), "id:x stat:PENDING");
    }

    #[test]
    fn prefix_junk_and_colons_in_values() {
        let r = Receipt::parse("id:7 stat:DELIVRD\0").unwrap();
        assert_eq!(r.stat, Stat::Known(MessageState::Delivered));
        let r = Receipt::parse("DLR id:ab:cd stat:DELIVRD").unwrap();
        assert_eq!(r.id, "ab:cd");
        // A key must start a word: "xid:" is not "id:".
        assert_eq!(Receipt::parse("xid:1 stat:DELIVRD"), Err(ReceiptError::MissingId));
    }

    #[test]
    fn errors() {
        assert_eq!(Receipt::parse(""), Err(ReceiptError::MissingId));
        assert_eq!(Receipt::parse("stat:DELIVRD"), Err(ReceiptError::MissingId));
        assert_eq!(Receipt::parse("id:   stat:DELIVRD"), Err(ReceiptError::MissingId));
        assert_eq!(Receipt::parse("id:1 err:0"), Err(ReceiptError::MissingStat));
        assert_eq!(Receipt::parse("id:1 stat:"), Err(ReceiptError::MissingStat));
        assert_eq!("id:1 stat:1".parse::<Receipt>().map(|r| r.id), Ok("1".into()));
    }

    #[test]
    fn to_text_cuts_text() {
        let r = Receipt {
            id: "5".into(),
            sub: None,
            dlvrd: None,
            submit_date: None,
            done_date: None,
            stat: Stat::Known(MessageState::Expired),
            err: Some("001".into()),
            text: Some("ñ".repeat(30)),
        };
        assert_eq!(r.to_text(), format!("id:5 stat:EXPIRED err:001 text:{}", "ñ".repeat(20)));
        assert_eq!(r.to_string(), r.to_text());
    }

    #[test]
    fn message_states() {
        for s in MessageState::ALL {
            assert_eq!(MessageState::from_u8(s.as_u8()), Some(s));
            assert_eq!(MessageState::from_stat_word(s.stat_word()), Some(s));
            assert_eq!(s.stat_word().len(), 7);
            assert_eq!(s.stat_word().parse::<MessageState>(), Ok(s));
            assert_eq!(MessageState::try_from(u8::from(s)), Ok(s));
        }
        assert_eq!(MessageState::Rejected.as_u8(), 8);
        assert_eq!(MessageState::from_u8(0), None);
        assert_eq!(MessageState::from_u8(9), None);
        assert_eq!(MessageState::try_from(9), Err(9));
        assert_eq!(MessageState::from_stat_word("delivered"), Some(MessageState::Delivered));
        assert_eq!(MessageState::from_stat_word(" Undeliverable "), Some(MessageState::Undeliverable));
        assert_eq!(MessageState::from_stat_word("5"), Some(MessageState::Undeliverable));
        assert_eq!(MessageState::from_stat_word("nope"), None);
        assert!("nope".parse::<MessageState>().is_err());
        assert!(!MessageState::Enroute.is_final());
        assert!(MessageState::Delivered.is_final());
        assert_eq!(MessageState::Accepted.to_string(), "ACCEPTD");
    }

    #[test]
    fn dates() {
        assert!(ReceiptDate::parse("2301011200").is_some());
        assert_eq!(ReceiptDate::parse("230101120059").and_then(|d| d.second), Some(59));
        assert_eq!(ReceiptDate::parse("23010112005"), None);
        assert_eq!(ReceiptDate::parse("2313011200"), None);
        assert_eq!(ReceiptDate::parse("2301002400"), None);
        assert_eq!(ReceiptDate::parse("230101120060"), None);
        assert_eq!(ReceiptDate::parse("23010112ab"), None);
        assert_eq!(ReceiptDate::parse("２３01011200"), None);
        let d = ReceiptDate::parse("991231235958").unwrap();
        assert_eq!(d.to_string(), "991231235958");
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize_message_id(" 000A1B\0"), "a1b");
        assert_eq!(normalize_message_id("a1b"), "a1b");
        assert_eq!(normalize_message_id("0000"), "0");
        assert_eq!(normalize_message_id("  "), "");
        assert_eq!(normalize_message_id("00ab-CD"), "ab-cd");
    }

    #[test]
    fn id_formats() {
        use MessageIdFormat::*;
        assert_eq!(Same.resp_key(" 000A1B\0").as_deref(), Some("a1b"));
        assert_eq!(Same.receipt_key("a1b").as_deref(), Some("a1b"));
        assert_eq!(Same.receipt_key("msg-1").as_deref(), Some("msg-1"));
        assert_eq!(Same.receipt_key(" "), None);
        assert_eq!(HexToDecimal.resp_key("0A1B").as_deref(), Some("a1b"));
        assert_eq!(HexToDecimal.receipt_key("002587").as_deref(), Some("a1b"));
        assert_eq!(HexToDecimal.resp_key("msg-1"), None);
        assert_eq!(HexToDecimal.receipt_key("a1b"), None);
        assert_eq!(DecimalToHex.resp_key("002587").as_deref(), Some("2587"));
        assert_eq!(DecimalToHex.receipt_key("0A1B").as_deref(), Some("2587"));
        assert_eq!(DecimalToHex.resp_key("a1b"), None);
        assert_eq!(DecimalToHex.receipt_key("xyz"), None);
        assert_eq!(DecimalToHex.receipt_key("0000").as_deref(), Some("0"));
        // Beyond u128: converted all the same.
        let big = "f".repeat(40);
        let dec = DecimalToHex.receipt_key(&big).expect("converted");
        assert_eq!(HexToDecimal.receipt_key(&dec).as_deref(), Some(big.as_str()));
        assert_eq!(HexToDecimal.receipt_key(&"1".repeat(65)), None);
    }

    /// Issue 14: A = 0x4d2 stored "4d2", B = 0x1234 stored "1234"; A's receipt says "1234"
    /// (decimal). Trying hex and decimal forms of it found B; the declared format finds A only.
    #[test]
    fn no_cross_base_match() {
        let a = MessageIdFormat::HexToDecimal.resp_key("4D2").expect("hex");
        let b = MessageIdFormat::HexToDecimal.resp_key("1234").expect("hex");
        assert_eq!(MessageIdFormat::HexToDecimal.receipt_key("1234"), Some(a));
        assert_ne!(MessageIdFormat::HexToDecimal.receipt_key("1234"), Some(b.clone()));
        // Declared `same`: the receipt "1234" is B's, never A's.
        assert_eq!(MessageIdFormat::Same.receipt_key("1234"), Some(b));
    }

    fn value() -> impl Strategy<Value = String> {
        "[A-Za-z0-9]{1,12}"
    }

    fn receipt() -> impl Strategy<Value = Receipt> {
        (
            value(),
            proptest::option::of("[0-9]{3}"),
            proptest::option::of("[0-9]{3}"),
            proptest::option::of("[0-9]{10}|[0-9]{12}"),
            proptest::option::of("[0-9]{10}|[0-9]{12}"),
            prop_oneof![
                proptest::sample::select(MessageState::ALL.to_vec()).prop_map(Stat::Known),
                "[A-Z]{8,10}"
                    .prop_filter("not a known word", |w| MessageState::from_stat_word(w).is_none())
                    .prop_map(Stat::Other),
            ],
            proptest::option::of(value()),
            proptest::option::of("[^\\s\\x00][^\r\n\\x00]{0,19}"),
        )
            .prop_map(|(id, sub, dlvrd, submit_date, done_date, stat, err, text)| Receipt {
                id,
                sub,
                dlvrd,
                submit_date,
                done_date,
                stat,
                err,
                text,
            })
    }

    proptest! {
        #[test]
        fn roundtrip(r in receipt()) {
            let text = r.to_text();
            prop_assert_eq!(Receipt::parse(&text), Ok(r.clone()));
            // Case and spacing variants parse the same.
            let shouty = text.replacen("submit date:", "SUBMIT_DATE : ", 1).replacen("stat:", "Stat:  ", 1);
            prop_assert_eq!(Receipt::parse(&shouty), Ok(r));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = Receipt::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_keyish_input(
            parts in proptest::collection::vec(
                prop_oneof![Just("id:"), Just("stat:"), Just(" "), Just("submit"), Just("date"), Just(":"),
                            Just("text:"), Just("é"), Just("0"), Just("_"), Just("\t"), Just("\0")],
                0..40,
            )
        ) {
            let s: String = parts.concat();
            if let Ok(r) = Receipt::parse(&s) {
                prop_assert!(!r.id.is_empty());
            }
        }

        #[test]
        fn keys_are_normalized(id in "\\PC{0,40}") {
            for f in [MessageIdFormat::Same, MessageIdFormat::HexToDecimal, MessageIdFormat::DecimalToHex] {
                for k in [f.resp_key(&id), f.receipt_key(&id)].into_iter().flatten() {
                    prop_assert_eq!(&normalize_message_id(&k), &k);
                }
            }
        }

        #[test]
        fn declared_forms_meet(v in any::<u128>(), zeros in 0usize..4, upper in any::<bool>()) {
            let hex = format!("{}{v:x}", "0".repeat(zeros));
            let hex = if upper { hex.to_uppercase() } else { hex };
            let dec = format!("{}{v}", "0".repeat(zeros));
            let h2d = MessageIdFormat::HexToDecimal;
            prop_assert_eq!(h2d.receipt_key(&dec), h2d.resp_key(&hex));
            let d2h = MessageIdFormat::DecimalToHex;
            prop_assert_eq!(d2h.receipt_key(&hex), d2h.resp_key(&dec));
        }

        /// Two different numbers never share a key, whatever the format.
        #[test]
        fn different_numbers_never_meet(a in any::<u64>(), b in any::<u64>()) {
            prop_assume!(a != b);
            let h2d = MessageIdFormat::HexToDecimal;
            prop_assert_ne!(h2d.receipt_key(&a.to_string()), h2d.resp_key(&format!("{b:x}")));
            let d2h = MessageIdFormat::DecimalToHex;
            prop_assert_ne!(d2h.receipt_key(&format!("{a:x}")), d2h.resp_key(&b.to_string()));
            let same = MessageIdFormat::Same;
            prop_assert_ne!(same.receipt_key(&a.to_string()), same.resp_key(&b.to_string()));
        }
    }
}
