//! Concatenated (long) messages: splitting into parts and joining parts back.
//!
//! A short message holds 140 octets on the air interface: 160 GSM septets, 70 UCS2 units or
//! 140 octets. Longer text goes as parts, each naming (reference, total, seqnum) either in a UDH
//! (IEI 0x00 with an 8-bit reference, 0x08 with a 16-bit one; `esm_class` UDHI bit set) or in the
//! SMPP `sar_*` TLVs, from which the SMSC builds the UDH itself. Splitting is encoding-aware so no
//! part ends in the middle of a GSM escape sequence or a UTF-16 surrogate pair: handsets that
//! display parts before joining them would show garbage.
//!
//! Receiving, the UDH comes from the peer: [`Udh::parse`] checks every length against the bytes
//! actually present, and the [`Reassembler`] keeps a bounded amount of state whatever the peer
//! claims (at most [`MAX_PARTS`] parts per message, a byte cap, a message cap and a TTL).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::text::gsm7::{self, PackError, ESC};
use crate::text::ucs2;
use crate::text::{encode_best, DataCoding};

/// Most parts a concatenated message can have: total and seqnum are one octet each.
pub const MAX_PARTS: usize = 255;

/// UDH information element identifier: concatenated message, 8-bit reference.
pub const IEI_CONCAT_8: u8 = 0x00;
/// UDH information element identifier: concatenated message, 16-bit reference.
pub const IEI_CONCAT_16: u8 = 0x08;

/// The `esm_class` bit that says the short message starts with a UDH.
pub const ESM_CLASS_UDHI: u8 = 0x40;

/// How the payload octets are counted and where they may be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Unpacked GSM septets, one per octet (the usual SMPP form). Never cut after an `ESC`.
    Gsm7,
    /// Input is unpacked septets; each part's payload is packed 7-bit, with the fill bits that
    /// follow its UDH. For SMSCs that want packed GSM after a UDH.
    Gsm7Packed,
    /// UTF-16BE. Never cut inside a surrogate pair.
    Ucs2,
    /// 8-bit data (binary, Latin-1, ...): cut anywhere.
    Octet,
}

/// How the parts carry their concatenation numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// UDH IEI 0x00 with this 8-bit reference (6-octet UDH).
    Udh8(u8),
    /// UDH IEI 0x08 with this 16-bit reference (7-octet UDH).
    Udh16(u16),
    /// `sar_*` TLVs with this reference; no UDH in the payload. The SMSC builds the UDH and may
    /// need the 16-bit form for the reference, so parts use the 16-bit-reference limits.
    Sar(u16),
}

/// The three concatenation numbers, as the `sar_msg_ref_num`, `sar_total_segments` and
/// `sar_segment_seqnum` TLVs carry them (and as a concatenation UDH IE does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sar {
    /// Same for every part of one message.
    pub reference: u16,
    /// Number of parts, 1..=255.
    pub total: u8,
    /// This part's number, 1..=total.
    pub seqnum: u8,
}

impl Sar {
    /// Whether total and seqnum are consistent (1 ≤ seqnum ≤ total).
    pub fn is_valid(&self) -> bool {
        self.total >= 1 && self.seqnum >= 1 && self.seqnum <= self.total
    }
}

/// One part to send in a `submit_sm`/`deliver_sm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The whole UDH, UDHL octet included, to put before `payload` in `short_message`.
    pub udh: Option<Vec<u8>>,
    /// Numbers for the `sar_*` TLVs, with [`Method::Sar`].
    pub sar: Option<Sar>,
    /// The encoded text of this part.
    pub payload: Vec<u8>,
    /// Whether to set [`ESM_CLASS_UDHI`] in `esm_class`.
    pub esm_class_udhi: bool,
}

impl Part {
    /// `short_message` for this part: UDH (if any) followed by the payload.
    pub fn short_message(&self) -> Vec<u8> {
        let udh = self.udh.as_deref().unwrap_or(&[]);
        let mut sm = Vec::with_capacity(udh.len() + self.payload.len());
        sm.extend_from_slice(udh);
        sm.extend_from_slice(&self.payload);
        sm
    }
}

/// Why a message could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// More than [`MAX_PARTS`] parts would be needed.
    #[error("message needs {needed} parts, at most {MAX_PARTS} are possible")]
    TooManyParts {
        /// Parts the message would need.
        needed: usize,
    },
    /// UCS2 payload of odd length.
    #[error("UCS2 payload has odd length {0}")]
    OddUcs2Length(usize),
    /// GSM payload that is not all septets (for [`Encoding::Gsm7Packed`]).
    #[error(transparent)]
    Pack(#[from] PackError),
}

/// Units (septets, UTF-16 units or octets) that fit in one message without concatenation.
pub fn single_limit(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Gsm7 | Encoding::Gsm7Packed => 160,
        Encoding::Ucs2 => 70,
        Encoding::Octet => 140,
    }
}

/// Units that fit in one part of a concatenated message sent with `method`.
pub fn part_limit(encoding: Encoding, method: Method) -> usize {
    let wide = !matches!(method, Method::Udh8(_));
    match (encoding, wide) {
        (Encoding::Gsm7 | Encoding::Gsm7Packed, false) => 153,
        (Encoding::Gsm7 | Encoding::Gsm7Packed, true) => 152,
        (Encoding::Ucs2, false) => 67,
        (Encoding::Ucs2, true) => 66,
        (Encoding::Octet, false) => 134,
        (Encoding::Octet, true) => 133,
    }
}

/// Octets per unit of `encoding` in the payload handed to [`split`].
fn unit_octets(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Ucs2 => 2,
        _ => 1,
    }
}

/// Cut points: the payload as a list of indivisible items, each `(start_octet, units)`.
fn items(payload: &[u8], encoding: Encoding) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(payload.len());
    let mut i = 0;
    match encoding {
        Encoding::Gsm7 | Encoding::Gsm7Packed => {
            while i < payload.len() {
                let n = if payload[i] == ESC && i + 1 < payload.len() { 2 } else { 1 };
                out.push((i, n));
                i += n;
            }
        }
        Encoding::Ucs2 => {
            let unit = |at: usize| -> Option<u16> {
                payload.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
            };
            while let Some(u) = unit(i) {
                let pair = ucs2::is_high_surrogate(u) && unit(i + 2).is_some_and(ucs2::is_low_surrogate);
                let n = if pair { 2 } else { 1 };
                out.push((i, n));
                i += 2 * n;
            }
        }
        Encoding::Octet => out.extend((0..payload.len()).map(|i| (i, 1))),
    }
    out
}

/// Splits an encoded payload into parts.
///
/// If it fits in a single message, returns one part with no UDH and no SAR. Otherwise parts of
/// at most [`part_limit`] units, cut only between whole characters. For [`Encoding::Ucs2`] the
/// payload must have even length; for [`Encoding::Gsm7Packed`] it must be septets.
pub fn split(payload: &[u8], encoding: Encoding, method: Method) -> Result<Vec<Part>, SplitError> {
    if encoding == Encoding::Ucs2 && payload.len() & 1 != 0 {
        return Err(SplitError::OddUcs2Length(payload.len()));
    }
    let octets = unit_octets(encoding);
    if payload.len() / octets <= single_limit(encoding) {
        let payload = finish_payload(payload, encoding, 0)?;
        return Ok(vec![Part { udh: None, sar: None, payload, esm_class_udhi: false }]);
    }

    let limit = part_limit(encoding, method);
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let (mut start, mut units) = (0usize, 0usize);
    for (at, n) in items(payload, encoding) {
        if units + n > limit {
            ranges.push((start, at));
            start = at;
            units = 0;
        }
        units += n;
    }
    ranges.push((start, payload.len()));

    let total = u8::try_from(ranges.len()).map_err(|_| SplitError::TooManyParts { needed: ranges.len() })?;
    let mut parts = Vec::with_capacity(ranges.len());
    for (seq, (from, to)) in (1..=total).zip(ranges) {
        let chunk = payload.get(from..to).unwrap_or_default();
        let (udh, sar) = match method {
            Method::Udh8(reference) => (Some(vec![0x05, IEI_CONCAT_8, 0x03, reference, total, seq]), None),
            Method::Udh16(reference) => {
                let [hi, lo] = reference.to_be_bytes();
                (Some(vec![0x06, IEI_CONCAT_16, 0x04, hi, lo, total, seq]), None)
            }
            Method::Sar(reference) => (None, Some(Sar { reference, total, seqnum: seq })),
        };
        let fill = gsm7::fill_bits_for_udh(udh.as_ref().map_or(0, Vec::len));
        parts.push(Part {
            esm_class_udhi: udh.is_some(),
            payload: finish_payload(chunk, encoding, fill)?,
            udh,
            sar,
        });
    }
    Ok(parts)
}

fn finish_payload(chunk: &[u8], encoding: Encoding, fill: u8) -> Result<Vec<u8>, SplitError> {
    match encoding {
        Encoding::Gsm7Packed => Ok(gsm7::pack(chunk, fill)?),
        _ => Ok(chunk.to_vec()),
    }
}

/// Encodes `text` as GSM 7-bit (unpacked) if possible, else UCS2, and splits it.
pub fn split_text(text: &str, method: Method) -> Result<(DataCoding, Vec<Part>), SplitError> {
    let (dc, payload) = encode_best(text);
    let encoding = if dc == DataCoding::UCS2 { Encoding::Ucs2 } else { Encoding::Gsm7 };
    Ok((dc, split(&payload, encoding, method)?))
}

/// One information element of a UDH, kept byte-exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InformationElement {
    /// Information element identifier.
    pub iei: u8,
    data: Vec<u8>,
}

impl InformationElement {
    /// An IE; fails if `data` is longer than 255 octets (its length is one octet).
    pub fn new(iei: u8, data: Vec<u8>) -> Result<Self, UdhError> {
        if data.len() > usize::from(u8::MAX) {
            return Err(UdhError::TooLong);
        }
        Ok(InformationElement { iei, data })
    }

    /// The IE data (without IEI and length octets).
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// Why a UDH could not be parsed or built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdhError {
    /// No octet at all, so no UDHL.
    #[error("empty short_message, no UDH length octet")]
    Empty,
    /// UDHL claims more octets than follow it.
    #[error("UDH length {udhl} exceeds the {available} octets that follow")]
    LengthExceedsData {
        /// The UDHL octet.
        udhl: u8,
        /// Octets after it.
        available: usize,
    },
    /// An IE runs past the end of the UDH.
    #[error("information element at UDH offset {offset} runs past the UDH end")]
    TruncatedElement {
        /// Offset of the IEI within the UDH (the UDHL octet is offset 0).
        offset: usize,
    },
    /// Building: the UDH would exceed 255 octets after the UDHL, or an IE 255 octets of data.
    #[error("UDH too long")]
    TooLong,
}

/// A user data header: the information elements at the front of a `short_message` when the
/// `esm_class` UDHI bit is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Udh {
    elements: Vec<InformationElement>,
}

impl Udh {
    /// A UDH with no elements (encodes as the single octet `0x00`).
    pub fn new() -> Self {
        Udh::default()
    }

    /// Parses the UDH at the front of `short_message`; returns it and the payload after it.
    ///
    /// The UDHL is checked against the octets present and every IE length against the UDHL;
    /// IEs this crate does not know are kept as they are, so [`Udh::to_bytes`] gives the same
    /// octets back.
    pub fn parse(short_message: &[u8]) -> Result<(Udh, &[u8]), UdhError> {
        let (&udhl, rest) = short_message.split_first().ok_or(UdhError::Empty)?;
        let len = usize::from(udhl);
        if len > rest.len() {
            return Err(UdhError::LengthExceedsData { udhl, available: rest.len() });
        }
        let (mut header, payload) = rest.split_at(len);
        let mut elements = Vec::new();
        let mut offset = 1;
        while let Some((&iei, after_iei)) = header.split_first() {
            let (&ie_len, after_len) =
                after_iei.split_first().ok_or(UdhError::TruncatedElement { offset })?;
            let ie_len = usize::from(ie_len);
            if ie_len > after_len.len() {
                return Err(UdhError::TruncatedElement { offset });
            }
            let (data, next) = after_len.split_at(ie_len);
            elements.push(InformationElement { iei, data: data.to_vec() });
            offset += 2 + ie_len;
            header = next;
        }
        Ok((Udh { elements }, payload))
    }

    /// The elements, in order.
    pub fn elements(&self) -> &[InformationElement] {
        &self.elements
    }

    /// Appends an element; fails if the UDH would exceed 255 octets after the UDHL.
    pub fn push(&mut self, element: InformationElement) -> Result<(), UdhError> {
        if self.body_len() + 2 + element.data.len() > usize::from(u8::MAX) {
            return Err(UdhError::TooLong);
        }
        self.elements.push(element);
        Ok(())
    }

    fn body_len(&self) -> usize {
        self.elements.iter().map(|e| 2 + e.data.len()).sum()
    }

    /// Encoded length, UDHL octet included.
    pub fn len(&self) -> usize {
        1 + self.body_len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The UDH octets, UDHL first.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        // Lengths are bounded by construction (`parse`, `push`, `InformationElement::new`).
        out.push(u8::try_from(self.body_len()).unwrap_or(u8::MAX));
        for e in &self.elements {
            out.push(e.iei);
            out.push(u8::try_from(e.data.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(&e.data);
        }
        out
    }

    /// The concatenation numbers from the last concatenation IE (TS 23.040: a repeated IE's last
    /// occurrence counts), if that IE is well formed: IEI 0x00 with 3 octets or 0x08 with 4, and
    /// 1 ≤ seqnum ≤ total. Otherwise `None`, and the message is best treated as a single one.
    pub fn concat(&self) -> Option<Sar> {
        let last = self.elements.iter().rev().find(|e| e.iei == IEI_CONCAT_8 || e.iei == IEI_CONCAT_16)?;
        let sar = match (last.iei, last.data.as_slice()) {
            (IEI_CONCAT_8, &[reference, total, seqnum]) => {
                Sar { reference: u16::from(reference), total, seqnum }
            }
            (IEI_CONCAT_16, &[hi, lo, total, seqnum]) => {
                Sar { reference: u16::from_be_bytes([hi, lo]), total, seqnum }
            }
            _ => return None,
        };
        sar.is_valid().then_some(sar)
    }
}

/// Limits of a [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblerConfig {
    /// Messages pending at once; when full, the oldest pending message is dropped. At least 1.
    pub max_pending: usize,
    /// Parts accepted per message (≤ [`MAX_PARTS`]); parts of longer messages are rejected.
    pub max_parts: u8,
    /// Payload octets accepted per message, summed over its parts.
    pub max_message_bytes: usize,
    /// Time from a message's first part after which its parts are dropped.
    pub ttl: Duration,
}

impl Default for ReassemblerConfig {
    fn default() -> Self {
        ReassemblerConfig {
            max_pending: 10_000,
            max_parts: u8::MAX,
            max_message_bytes: 64 * 1024,
            ttl: Duration::from_secs(600),
        }
    }
}

/// Which message a part belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Source address.
    pub source: String,
    /// Destination address.
    pub destination: String,
    /// Concatenation reference.
    pub reference: u16,
}

/// Why a part was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// total is 0, or seqnum is 0 or above total.
    Invalid,
    /// total exceeds [`ReassemblerConfig::max_parts`].
    TooManyParts,
    /// The message would exceed [`ReassemblerConfig::max_message_bytes`]; it is dropped.
    TooLarge,
}

/// What [`Reassembler::push`] did with a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// The message is complete: its payloads joined in seqnum order.
    Complete(Vec<u8>),
    /// Stored; more parts are awaited.
    Incomplete {
        /// Distinct parts held so far.
        received: u8,
        /// Parts the message has.
        total: u8,
    },
    /// A part with this seqnum was already held; the first one is kept.
    Duplicate,
    /// Not accepted.
    Rejected(Rejected),
}

/// Counters of state dropped without completing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReassemblerStats {
    /// Pending messages dropped to make room.
    pub evicted: u64,
    /// Pending messages dropped after their TTL.
    pub expired: u64,
    /// Pending messages replaced by a new one with the same key but another total.
    pub replaced: u64,
}

#[derive(Debug)]
struct Pending {
    since: (Instant, u64),
    total: u8,
    received: u8,
    bytes: usize,
    parts: Vec<Option<Vec<u8>>>,
}

/// Joins parts of concatenated messages, whatever order they come in.
///
/// Bounded: at most `max_pending` messages, each of at most `max_parts` parts and
/// `max_message_bytes` octets, each for at most `ttl` from its first part. The clock is a
/// parameter so callers (and tests) decide what "now" is.
#[derive(Debug)]
pub struct Reassembler {
    config: ReassemblerConfig,
    pending: HashMap<Key, Pending>,
    /// Pending keys by (first-part time, arrival serial): oldest first.
    order: BTreeMap<(Instant, u64), Key>,
    serial: u64,
    stats: ReassemblerStats,
}

impl Reassembler {
    /// An empty reassembler with these limits (`max_pending` 0 is taken as 1, `max_parts`
    /// is at most 255 by its type).
    pub fn new(config: ReassemblerConfig) -> Self {
        let config = ReassemblerConfig { max_pending: config.max_pending.max(1), ..config };
        Reassembler {
            config,
            pending: HashMap::new(),
            order: BTreeMap::new(),
            serial: 0,
            stats: ReassemblerStats::default(),
        }
    }

    /// Messages pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Drop counters.
    pub fn stats(&self) -> ReassemblerStats {
        self.stats
    }

    /// Accepts one part received at `now`.
    ///
    /// A part whose key matches a pending message with a different total starts a new message
    /// (the reference was reused; the old parts are dropped). A message of one part completes at
    /// once without being stored.
    pub fn push(&mut self, now: Instant, source: &str, destination: &str, sar: Sar, payload: &[u8]) -> Push {
        if !sar.is_valid() {
            return Push::Rejected(Rejected::Invalid);
        }
        if sar.total > self.config.max_parts {
            return Push::Rejected(Rejected::TooManyParts);
        }
        if payload.len() > self.config.max_message_bytes {
            return Push::Rejected(Rejected::TooLarge);
        }
        if sar.total == 1 {
            return Push::Complete(payload.to_vec());
        }
        let key =
            Key { source: source.to_owned(), destination: destination.to_owned(), reference: sar.reference };

        if let Some(p) = self.pending.get(&key) {
            if self.is_expired(p, now) {
                self.remove(&key);
                self.stats.expired += 1;
            } else if p.total != sar.total {
                self.remove(&key);
                self.stats.replaced += 1;
            }
        }

        if !self.pending.contains_key(&key) {
            while self.pending.len() >= self.config.max_pending {
                let Some((_, oldest)) = self.order.pop_first() else {
                    break;
                };
                self.pending.remove(&oldest);
                self.stats.evicted += 1;
            }
            let since = (now, self.serial);
            self.serial = self.serial.wrapping_add(1);
            self.order.insert(since, key.clone());
            self.pending.insert(
                key.clone(),
                Pending {
                    since,
                    total: sar.total,
                    received: 0,
                    bytes: 0,
                    parts: vec![None; usize::from(sar.total)],
                },
            );
        }

        let max_bytes = self.config.max_message_bytes;
        let Some(p) = self.pending.get_mut(&key) else {
            // Unreachable: inserted above.
            return Push::Rejected(Rejected::Invalid);
        };
        let Some(slot) = p.parts.get_mut(usize::from(sar.seqnum) - 1) else {
            return Push::Rejected(Rejected::Invalid);
        };
        if slot.is_some() {
            return Push::Duplicate;
        }
        if p.bytes + payload.len() > max_bytes {
            self.remove(&key);
            return Push::Rejected(Rejected::TooLarge);
        }
        *slot = Some(payload.to_vec());
        p.received += 1;
        p.bytes += payload.len();
        if p.received < p.total {
            return Push::Incomplete { received: p.received, total: p.total };
        }
        let Some(done) = self.remove(&key) else {
            return Push::Rejected(Rejected::Invalid);
        };
        let mut joined = Vec::with_capacity(done.bytes);
        for part in done.parts.into_iter().flatten() {
            joined.extend_from_slice(&part);
        }
        Push::Complete(joined)
    }

    /// Drops every message whose first part is `ttl` or more older than `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some((&since, _)) = self.order.first_key_value() {
            if now.saturating_duration_since(since.0) < self.config.ttl {
                break;
            }
            if let Some((_, key)) = self.order.pop_first() {
                self.pending.remove(&key);
                dropped += 1;
            }
        }
        self.stats.expired += dropped as u64;
        dropped
    }

    fn is_expired(&self, p: &Pending, now: Instant) -> bool {
        now.saturating_duration_since(p.since.0) >= self.config.ttl
    }

    fn remove(&mut self, key: &Key) -> Option<Pending> {
        let p = self.pending.remove(key)?;
        self.order.remove(&p.since);
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{gsm7, ucs2};
    use proptest::prelude::*;

    fn join_payloads(parts: &[Part]) -> Vec<u8> {
        parts.iter().flat_map(|p| p.payload.clone()).collect()
    }

    #[test]
    fn limits() {
        assert_eq!(single_limit(Encoding::Gsm7), 160);
        assert_eq!(single_limit(Encoding::Ucs2), 70);
        assert_eq!(single_limit(Encoding::Octet), 140);
        assert_eq!(part_limit(Encoding::Gsm7, Method::Udh8(0)), 153);
        assert_eq!(part_limit(Encoding::Gsm7, Method::Udh16(0)), 152);
        assert_eq!(part_limit(Encoding::Gsm7, Method::Sar(0)), 152);
        assert_eq!(part_limit(Encoding::Ucs2, Method::Udh8(0)), 67);
        assert_eq!(part_limit(Encoding::Ucs2, Method::Udh16(0)), 66);
        assert_eq!(part_limit(Encoding::Octet, Method::Udh8(0)), 134);
        assert_eq!(part_limit(Encoding::Octet, Method::Udh16(0)), 133);
        // The limits fill 140 octets on air.
        for (enc, method, udh) in
            [(Encoding::Gsm7, Method::Udh8(0), 6), (Encoding::Gsm7, Method::Udh16(0), 7)]
        {
            let septets = part_limit(enc, method);
            assert!(udh + (septets * 7).div_ceil(8) <= 140);
            assert!(udh + ((septets + 1) * 7).div_ceil(8) > 140);
        }
    }

    #[test]
    fn single_message_has_no_udh() {
        let payload = vec![b'a'; 160];
        let parts = split(&payload, Encoding::Gsm7, Method::Udh8(7)).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].udh, None);
        assert_eq!(parts[0].sar, None);
        assert!(!parts[0].esm_class_udhi);
        assert_eq!(parts[0].short_message(), payload);
        let empty = split(&[], Encoding::Ucs2, Method::Sar(1)).unwrap();
        assert_eq!(empty.len(), 1);
        assert!(empty[0].payload.is_empty());
    }

    #[test]
    fn gsm7_udh8_split() {
        let payload = vec![b'a'; 161];
        let parts = split(&payload, Encoding::Gsm7, Method::Udh8(0x42)).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].udh.as_deref(), Some(&[5, 0, 3, 0x42, 2, 1][..]));
        assert_eq!(parts[1].udh.as_deref(), Some(&[5, 0, 3, 0x42, 2, 2][..]));
        assert_eq!(parts[0].payload.len(), 153);
        assert_eq!(parts[1].payload.len(), 8);
        assert!(parts.iter().all(|p| p.esm_class_udhi && p.sar.is_none()));
        assert_eq!(join_payloads(&parts), payload);
    }

    #[test]
    fn udh16_and_sar() {
        let payload = vec![b'a'; 305];
        let parts = split(&payload, Encoding::Gsm7, Method::Udh16(0x1234)).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2].udh.as_deref(), Some(&[6, 8, 4, 0x12, 0x34, 3, 3][..]));
        assert_eq!(parts[0].payload.len(), 152);
        let sar = split(&payload, Encoding::Gsm7, Method::Sar(0xBEEF)).unwrap();
        assert_eq!(sar.len(), 3);
        for (i, p) in sar.iter().enumerate() {
            assert_eq!(p.udh, None);
            assert!(!p.esm_class_udhi);
            assert_eq!(p.sar, Some(Sar { reference: 0xBEEF, total: 3, seqnum: i as u8 + 1 }));
        }
    }

    #[test]
    fn never_splits_gsm_escape() {
        // 152 'a' then '€' (ESC 0x65): the escape would straddle septets 153/154.
        let mut payload = vec![b'a'; 152];
        payload.extend_from_slice(&[ESC, 0x65]);
        payload.extend_from_slice(&[b'b'; 20]);
        let parts = split(&payload, Encoding::Gsm7, Method::Udh8(1)).unwrap();
        assert_eq!(parts[0].payload.len(), 152);
        assert_eq!(parts[1].payload[..2], [ESC, 0x65]);
        assert_eq!(join_payloads(&parts), payload);
    }

    #[test]
    fn never_splits_surrogate_pair() {
        // 66 'a' then an emoji (2 units): unit 67 would be the high surrogate alone.
        let text = format!("{}😀{}", "a".repeat(66), "b".repeat(10));
        let payload = ucs2::encode(&text);
        let parts = split(&payload, Encoding::Ucs2, Method::Udh8(1)).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].payload.len(), 132);
        assert_eq!(ucs2::decode(&parts[1].payload), format!("😀{}", "b".repeat(10)));
    }

    #[test]
    fn octet_split_and_ucs2_odd() {
        let payload: Vec<u8> = (0..=255).collect();
        let parts = split(&payload, Encoding::Octet, Method::Udh8(9)).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].payload.len(), 134);
        assert_eq!(split(&[0, 1, 2], Encoding::Ucs2, Method::Udh8(0)), Err(SplitError::OddUcs2Length(3)));
    }

    #[test]
    fn too_many_parts() {
        let ok = vec![0u8; 134 * 255];
        assert_eq!(split(&ok, Encoding::Octet, Method::Udh8(0)).unwrap().len(), 255);
        let too_long = vec![0u8; 134 * 255 + 1];
        assert_eq!(
            split(&too_long, Encoding::Octet, Method::Udh8(0)),
            Err(SplitError::TooManyParts { needed: 256 })
        );
    }

    #[test]
    fn packed_parts() {
        let text = "x".repeat(200);
        let septets = gsm7::encode(&text).unwrap();
        let parts = split(&septets, Encoding::Gsm7Packed, Method::Udh8(3)).unwrap();
        assert_eq!(parts.len(), 2);
        // 6-octet UDH + 153 septets packed after 1 fill bit = 140 octets.
        assert_eq!(parts[0].short_message().len(), 140);
        let mut back = Vec::new();
        for p in &parts {
            let sm = p.short_message();
            let (udh, rest) = Udh::parse(&sm).unwrap();
            let fill = gsm7::fill_bits_for_udh(udh.len());
            let n = if udh.concat().unwrap().seqnum == 1 { 153 } else { 47 };
            back.extend(gsm7::unpack_count(rest, fill, n).unwrap());
        }
        assert_eq!(back, septets);
        assert_eq!(
            split(&[0x80], Encoding::Gsm7Packed, Method::Udh8(0)),
            Err(SplitError::Pack(PackError::NotASeptet { value: 0x80, index: 0 }))
        );
    }

    #[test]
    fn split_text_picks_encoding() {
        let (dc, parts) = split_text(&"é".repeat(200), Method::Udh8(1)).unwrap();
        assert_eq!(dc, DataCoding::DEFAULT);
        assert_eq!(parts.len(), 2);
        let (dc, parts) = split_text(&"日".repeat(71), Method::Udh8(1)).unwrap();
        assert_eq!(dc, DataCoding::UCS2);
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn udh_parse() {
        let sm = [5, 0, 3, 0x42, 2, 1, b'h', b'i'];
        let (udh, payload) = Udh::parse(&sm).unwrap();
        assert_eq!(payload, b"hi");
        assert_eq!(udh.concat(), Some(Sar { reference: 0x42, total: 2, seqnum: 1 }));
        assert_eq!(udh.len(), 6);
        assert_eq!(udh.to_bytes(), sm[..6].to_vec());

        let sm16 = [6, 8, 4, 0x12, 0x34, 3, 2];
        let (udh, payload) = Udh::parse(&sm16).unwrap();
        assert!(payload.is_empty());
        assert_eq!(udh.concat().map(|s| s.reference), Some(0x1234));

        // Unknown IEs (port addressing 0x05) kept byte-exact, concat found after them.
        let sm = [11, 5, 4, 0x0B, 0x84, 0x23, 0xF0, 0, 3, 7, 2, 2, 0xAA];
        let (udh, payload) = Udh::parse(&sm).unwrap();
        assert_eq!(udh.elements().len(), 2);
        assert_eq!(udh.elements()[0].iei, 5);
        assert_eq!(udh.elements()[0].data(), &[0x0B, 0x84, 0x23, 0xF0]);
        assert_eq!(udh.to_bytes(), sm[..12].to_vec());
        assert_eq!(payload, &[0xAA]);
        assert_eq!(udh.concat().map(|s| s.reference), Some(7));
    }

    #[test]
    fn udh_parse_errors() {
        assert_eq!(Udh::parse(&[]), Err(UdhError::Empty));
        assert_eq!(Udh::parse(&[5, 0, 3]), Err(UdhError::LengthExceedsData { udhl: 5, available: 2 }));
        assert_eq!(Udh::parse(&[3, 0, 3, 1]), Err(UdhError::TruncatedElement { offset: 1 }));
        assert_eq!(Udh::parse(&[1, 0]), Err(UdhError::TruncatedElement { offset: 1 }));
        let (udh, rest) = Udh::parse(&[0, 1, 2]).unwrap();
        assert!(udh.is_empty());
        assert_eq!(rest, &[1, 2]);
    }

    #[test]
    fn concat_ie_validation() {
        let parse = |sm: &[u8]| Udh::parse(sm).unwrap().0.concat();
        assert_eq!(parse(&[5, 0, 3, 1, 0, 0]), None); // total 0
        assert_eq!(parse(&[5, 0, 3, 1, 2, 3]), None); // seq > total
        assert_eq!(parse(&[5, 0, 3, 1, 2, 0]), None); // seq 0
        assert_eq!(parse(&[4, 0, 2, 1, 2]), None); // wrong length
        assert_eq!(parse(&[3, 5, 1, 0]), None); // no concat IE
                                                // Last occurrence wins.
        let s = parse(&[10, 0, 3, 1, 2, 1, 0, 3, 9, 3, 2]).unwrap();
        assert_eq!((s.reference, s.total, s.seqnum), (9, 3, 2));
    }

    #[test]
    fn udh_build() {
        let mut udh = Udh::new();
        assert_eq!(udh.to_bytes(), vec![0]);
        udh.push(InformationElement::new(0x24, vec![1]).unwrap()).unwrap();
        assert_eq!(udh.to_bytes(), vec![3, 0x24, 1, 1]);
        assert_eq!(InformationElement::new(1, vec![0; 256]), Err(UdhError::TooLong));
        let big = InformationElement::new(1, vec![0; 251]).unwrap();
        assert_eq!(udh.push(big), Err(UdhError::TooLong));
        let fits = InformationElement::new(1, vec![0; 250]).unwrap();
        assert_eq!(udh.push(fits), Ok(()));
        assert_eq!(udh.len(), 256);
    }

    fn sar(reference: u16, total: u8, seqnum: u8) -> Sar {
        Sar { reference, total, seqnum }
    }

    fn small(max_pending: usize) -> Reassembler {
        Reassembler::new(ReassemblerConfig {
            max_pending,
            max_parts: 10,
            max_message_bytes: 100,
            ttl: Duration::from_secs(60),
        })
    }

    #[test]
    fn reassembles_out_of_order_with_duplicates() {
        let t = Instant::now();
        let mut r = small(10);
        assert_eq!(r.push(t, "a", "b", sar(1, 3, 3), b"!"), Push::Incomplete { received: 1, total: 3 });
        assert_eq!(r.push(t, "a", "b", sar(1, 3, 1), b"he"), Push::Incomplete { received: 2, total: 3 });
        assert_eq!(r.push(t, "a", "b", sar(1, 3, 1), b"XX"), Push::Duplicate);
        // Same reference, other addresses: another message.
        assert!(matches!(r.push(t, "a", "c", sar(1, 3, 2), b"zz"), Push::Incomplete { .. }));
        assert_eq!(r.len(), 2);
        assert_eq!(r.push(t, "a", "b", sar(1, 3, 2), b"y"), Push::Complete(b"hey!".to_vec()));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn rejects_invalid_and_limits() {
        let t = Instant::now();
        let mut r = small(10);
        assert_eq!(r.push(t, "a", "b", sar(1, 0, 0), b""), Push::Rejected(Rejected::Invalid));
        assert_eq!(r.push(t, "a", "b", sar(1, 2, 3), b""), Push::Rejected(Rejected::Invalid));
        assert_eq!(r.push(t, "a", "b", sar(1, 11, 1), b""), Push::Rejected(Rejected::TooManyParts));
        assert_eq!(r.push(t, "a", "b", sar(1, 1, 1), b"solo"), Push::Complete(b"solo".to_vec()));
        assert!(r.is_empty());
        assert!(matches!(r.push(t, "a", "b", sar(2, 3, 1), &[0; 60]), Push::Incomplete { .. }));
        assert_eq!(r.push(t, "a", "b", sar(2, 3, 2), &[0; 60]), Push::Rejected(Rejected::TooLarge));
        assert!(r.is_empty(), "an oversized message is dropped whole");
        assert_eq!(r.push(t, "a", "b", sar(2, 3, 2), &[0; 101]), Push::Rejected(Rejected::TooLarge));
    }

    #[test]
    fn ttl_with_fake_clock() {
        let t0 = Instant::now();
        let mut r = small(10);
        r.push(t0, "a", "b", sar(1, 2, 1), b"x");
        r.push(t0 + Duration::from_secs(30), "a", "b", sar(2, 2, 1), b"x");
        assert_eq!(r.expire(t0 + Duration::from_secs(59)), 0);
        assert_eq!(r.expire(t0 + Duration::from_secs(60)), 1);
        assert_eq!(r.len(), 1);
        // Part 2 of message 2 arrives too late: it starts over instead of completing.
        assert_eq!(
            r.push(t0 + Duration::from_secs(95), "a", "b", sar(2, 2, 2), b"y"),
            Push::Incomplete { received: 1, total: 2 }
        );
        assert_eq!(r.stats().expired, 2);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn evicts_oldest_when_full() {
        let t0 = Instant::now();
        let mut r = small(2);
        r.push(t0, "a", "b", sar(1, 2, 1), b"1");
        r.push(t0 + Duration::from_secs(1), "a", "b", sar(2, 2, 1), b"2");
        r.push(t0 + Duration::from_secs(2), "a", "b", sar(3, 2, 1), b"3");
        assert_eq!(r.len(), 2);
        assert_eq!(r.stats().evicted, 1);
        // Reference 1 was evicted: its second part starts a new message.
        assert!(matches!(
            r.push(t0 + Duration::from_secs(3), "a", "b", sar(1, 2, 2), b"1"),
            Push::Incomplete { .. }
        ));
        // Reference 2 was evicted by that; 3 survives and completes.
        assert_eq!(
            r.push(t0 + Duration::from_secs(3), "a", "b", sar(3, 2, 2), b"!"),
            Push::Complete(b"3!".to_vec())
        );
    }

    #[test]
    fn reused_reference_with_other_total_replaces() {
        let t = Instant::now();
        let mut r = small(10);
        r.push(t, "a", "b", sar(1, 3, 1), b"old");
        assert_eq!(r.push(t, "a", "b", sar(1, 2, 1), b"n"), Push::Incomplete { received: 1, total: 2 });
        assert_eq!(r.stats().replaced, 1);
        assert_eq!(r.push(t, "a", "b", sar(1, 2, 2), b"ew"), Push::Complete(b"new".to_vec()));
    }

    #[test]
    fn zero_max_pending_is_one() {
        let t = Instant::now();
        let mut r = small(0);
        r.push(t, "a", "b", sar(1, 2, 1), b"1");
        assert_eq!(r.len(), 1);
    }

    fn gsm_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                8 => proptest::char::range('a', 'z'),
                1 => Just('€'),
                1 => Just('{'),
            ],
            0..700,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![
            any::<u8>().prop_map(Method::Udh8),
            any::<u16>().prop_map(Method::Udh16),
            any::<u16>().prop_map(Method::Sar),
        ]
    }

    proptest! {
        #[test]
        fn gsm_split_roundtrip(text in gsm_text(), m in method()) {
            let septets = gsm7::encode(&text).unwrap();
            let parts = split(&septets, Encoding::Gsm7, m).unwrap();
            prop_assert_eq!(join_payloads(&parts), septets.clone());
            let limit = if parts.len() == 1 { 160 } else { part_limit(Encoding::Gsm7, m) };
            for p in &parts {
                prop_assert!(p.payload.len() <= limit);
                // Each part decodes on its own to whole characters.
                let piece = gsm7::decode(&p.payload);
                prop_assert!(piece.chars().all(|c| c != ' '));
                prop_assert!(p.payload.last() != Some(&ESC));
            }
        }

        #[test]
        fn ucs2_split_roundtrip(text in "\\PC{0,300}", m in method()) {
            let payload = ucs2::encode(&text);
            let parts = split(&payload, Encoding::Ucs2, m).unwrap();
            prop_assert_eq!(join_payloads(&parts), payload);
            let mut rebuilt = String::new();
            for p in &parts {
                let piece = ucs2::decode(&p.payload);
                let first = p.payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                prop_assert!(!first.is_some_and(ucs2::is_low_surrogate), "part starts with a low surrogate");
                prop_assert!(p.payload.len() <= 140);
                rebuilt.push_str(&piece);
            }
            prop_assert_eq!(rebuilt, text);
        }

        #[test]
        fn split_then_reassemble_any_order(
            payload in proptest::collection::vec(any::<u8>(), 0..2000),
            reference in any::<u8>(),
            seed in any::<u64>(),
        ) {
            let parts = split(&payload, Encoding::Octet, Method::Udh8(reference)).unwrap();
            let mut order: Vec<usize> = (0..parts.len()).collect();
            // Deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut r = Reassembler::new(ReassemblerConfig::default());
            let t = Instant::now();
            let mut result = None;
            for &i in &order {
                let sm = parts[i].short_message();
                let info = if parts[i].esm_class_udhi {
                    let (udh, body) = Udh::parse(&sm).unwrap();
                    (udh.concat().unwrap(), body.to_vec())
                } else {
                    (Sar { reference: 0, total: 1, seqnum: 1 }, sm.clone())
                };
                match r.push(t, "src", "dst", info.0, &info.1) {
                    Push::Complete(done) => result = Some(done),
                    // Duplicates are ignored.
                    _ => prop_assert_eq!(r.push(t, "src", "dst", info.0, &info.1), Push::Duplicate),
                }
            }
            prop_assert_eq!(result, Some(payload));
            prop_assert!(r.is_empty());
        }

        #[test]
        fn udh_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok((udh, rest)) = Udh::parse(&bytes) {
                let mut again = udh.to_bytes();
                again.extend_from_slice(rest);
                prop_assert_eq!(again, bytes);
                if let Some(s) = udh.concat() {
                    prop_assert!(s.is_valid());
                }
            }
        }

        #[test]
        fn reassembler_bounded_under_garbage(
            pushes in proptest::collection::vec(
                (any::<u16>(), any::<u8>(), any::<u8>(), 0u8..4, proptest::collection::vec(any::<u8>(), 0..40), 0u64..200),
                0..300,
            ),
        ) {
            let cfg = ReassemblerConfig { max_pending: 8, max_parts: 255, max_message_bytes: 500, ttl: Duration::from_secs(50) };
            let mut r = Reassembler::new(cfg);
            let t0 = Instant::now();
            for (reference, total, seqnum, src, payload, secs) in pushes {
                let now = t0 + Duration::from_secs(secs);
                let out = r.push(now, &src.to_string(), "d", Sar { reference, total, seqnum }, &payload);
                if let Push::Complete(v) = out {
                    prop_assert!(v.len() <= 500);
                }
                prop_assert!(r.len() <= 8);
                prop_assert_eq!(r.len(), r.order.len());
                r.expire(now);
            }
        }
    }
}
