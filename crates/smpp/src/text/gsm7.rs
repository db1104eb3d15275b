//! GSM 03.38 (3GPP TS 23.038) default 7-bit alphabet with the basic extension table.
//!
//! SMPP carries GSM text (`data_coding` 0 on most SMSCs) as *unpacked* septets: one septet per
//! octet, high bit clear. That is what [`encode`] and [`decode`] speak. Packed 7-bit is what the
//! air interface uses and what some SMSCs expect after a UDH; [`pack`] and [`unpack`] convert,
//! with the fill bits that align the first septet after a UDH on a septet boundary
//! ([`fill_bits_for_udh`]).
//!
//! Characters from the extension table (form feed, `^ { } \ [ ~ ] |` and `€`) are sent as the
//! escape septet `0x1B` followed by their extension code, so they cost two septets: that matters
//! for the 160-septet limit, see [`septet_len`].
//!
//! National language shift tables (TS 23.038 §6.2.1.2.4) are not supported: they need a UDH IE
//! per message and almost no SMPP upstream negotiates them.

use super::Unencodable;

/// The escape septet that introduces an extension-table character.
pub const ESC: u8 = 0x1B;

/// What [`decode`] produces for an octet that is not a septet (high bit set).
pub const REPLACEMENT: char = '?';

/// The default alphabet, indexed by septet. `0x1B` is the escape and never produced from here.
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The basic extension table: (code after ESC, character).
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'), // form feed ("page break")
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// Reverse table for ASCII input, built at compile time: `0xFF` = not in the basic table.
const ASCII_TO_BASIC: [u8; 128] = {
    let mut table = [0xFF_u8; 128];
    let mut septet = 0;
    while septet < 128 {
        let c = BASIC[septet] as u32;
        if c < 128 && septet != ESC as usize {
            table[c as usize] = septet as u8;
        }
        septet += 1;
    }
    table
};

/// How one character is written in GSM 7-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Septets {
    Basic(u8),
    Extended(u8),
}

impl Septets {
    fn len(self) -> usize {
        match self {
            Septets::Basic(_) => 1,
            Septets::Extended(_) => 2,
        }
    }
}

fn lookup(c: char) -> Option<Septets> {
    if let Some(&s) = ASCII_TO_BASIC.get(c as usize) {
        if s != 0xFF {
            return Some(Septets::Basic(s));
        }
    } else if let Some(pos) = BASIC.iter().position(|&b| b == c) {
        // Non-ASCII characters of the basic table (about 40 of them): a short scan.
        return u8::try_from(pos).ok().map(Septets::Basic);
    }
    EXTENSION.iter().find(|&&(_, e)| e == c).map(|&(code, _)| Septets::Extended(code))
}

/// Whether `c` can be written in the default alphabet (basic or extension table).
pub fn is_encodable(c: char) -> bool {
    lookup(c).is_some()
}

/// Encodes `text` as unpacked septets (one per octet), extension characters as `ESC code`.
///
/// Fails on the first character that neither table has; `index` counts chars, not bytes.
pub fn encode(text: &str) -> Result<Vec<u8>, Unencodable> {
    let mut out = Vec::with_capacity(text.len());
    for (index, ch) in text.chars().enumerate() {
        match lookup(ch) {
            Some(Septets::Basic(s)) => out.push(s),
            Some(Septets::Extended(code)) => out.extend_from_slice(&[ESC, code]),
            None => return Err(Unencodable { ch, index }),
        }
    }
    Ok(out)
}

/// Number of septets `text` takes in GSM 7-bit (extension characters count 2), or `None` if some
/// character is not encodable.
pub fn septet_len(text: &str) -> Option<usize> {
    text.chars().map(|c| lookup(c).map(Septets::len)).sum()
}

/// Decodes unpacked septets. Never fails; the leniency follows TS 23.038:
///
/// - an octet with the high bit set is not a septet and becomes [`REPLACEMENT`] (`'?'`);
/// - `ESC` followed by a code the extension table does not define shows the main-table character
///   for that code (the spec's rule for unknown extension codes);
/// - `ESC ESC` (reserved for a further table) and a trailing lone `ESC` show as a space, as the
///   spec asks of receivers that do not understand the escape.
pub fn decode(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut iter = septets.iter().copied();
    while let Some(s) = iter.next() {
        if s == ESC {
            match iter.next() {
                None | Some(ESC) => out.push(' '),
                Some(code) if code >= 0x80 => out.push(REPLACEMENT),
                Some(code) => out.push(extension_char(code).unwrap_or_else(|| basic_char(code))),
            }
        } else if s >= 0x80 {
            out.push(REPLACEMENT);
        } else {
            out.push(basic_char(s));
        }
    }
    out
}

fn basic_char(septet: u8) -> char {
    BASIC.get(usize::from(septet)).copied().unwrap_or(REPLACEMENT)
}

fn extension_char(code: u8) -> Option<char> {
    EXTENSION.iter().find(|&&(c, _)| c == code).map(|&(_, ch)| ch)
}

/// Errors of [`pack`] and [`unpack`]: bad arguments, never bad data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// Fill bits must be 0..=6: seven or more would be a whole septet.
    #[error("fill bits must be 0..=6, got {0}")]
    FillBits(u8),
    /// `pack` was given an octet that is not a septet.
    #[error("octet {value:#04x} at index {index} is not a septet")]
    NotASeptet {
        /// The offending octet.
        value: u8,
        /// Its position in the input.
        index: usize,
    },
}

/// Fill bits needed after a UDH of `udh_len` octets (including the UDHL octet) so that the
/// first septet starts on a septet boundary of the whole user data.
pub fn fill_bits_for_udh(udh_len: usize) -> u8 {
    // (7 - (8 * len) mod 7) mod 7, always in 0..=6.
    let rem = (udh_len % 7) * 8 % 7;
    ((7 - rem) % 7) as u8
}

/// Packs septets into octets, LSB first, after `fill_bits` zero bits (0..=6).
///
/// Unused high bits of the last octet are zero. When exactly seven bits are left over they read
/// back as a spurious `@` (septet 0): the receiver must know the septet count (TP-UDL on air).
pub fn pack(septets: &[u8], fill_bits: u8) -> Result<Vec<u8>, PackError> {
    if fill_bits > 6 {
        return Err(PackError::FillBits(fill_bits));
    }
    let total_bits = usize::from(fill_bits) + septets.len() * 7;
    let mut out = Vec::with_capacity(total_bits.div_ceil(8));
    let mut acc: u32 = 0;
    let mut nbits = u32::from(fill_bits);
    for (index, &s) in septets.iter().enumerate() {
        if s >= 0x80 {
            return Err(PackError::NotASeptet { value: s, index });
        }
        acc |= u32::from(s) << nbits;
        nbits += 7;
        while nbits >= 8 {
            out.push((acc & 0xFF) as u8);
            acc >>= 8;
            nbits -= 8;
        }
    }
    if nbits > 0 {
        out.push((acc & 0xFF) as u8);
    }
    Ok(out)
}

/// Unpacks every complete septet from `packed`, skipping the first `fill_bits` bits (0..=6).
///
/// Returns `floor((8 * len - fill_bits) / 7)` septets; see [`pack`] about a trailing `@` that may
/// be padding. Use [`unpack_count`] when the septet count is known.
pub fn unpack(packed: &[u8], fill_bits: u8) -> Result<Vec<u8>, PackError> {
    unpack_count(packed, fill_bits, usize::MAX)
}

/// Like [`unpack`], but returns at most `max_septets` septets.
pub fn unpack_count(packed: &[u8], fill_bits: u8, max_septets: usize) -> Result<Vec<u8>, PackError> {
    if fill_bits > 6 {
        return Err(PackError::FillBits(fill_bits));
    }
    let available = packed.len().saturating_mul(8).saturating_sub(usize::from(fill_bits)) / 7;
    let count = available.min(max_septets);
    let mut out = Vec::with_capacity(count);
    let mut acc: u32 = 0;
    let mut nbits: u32 = 0;
    let mut skip = u32::from(fill_bits);
    for &octet in packed {
        acc |= u32::from(octet) << nbits;
        nbits += 8;
        if skip > 0 {
            let s = skip.min(nbits);
            acc >>= s;
            nbits -= s;
            skip -= s;
        }
        while nbits >= 7 && out.len() < count {
            out.push((acc & 0x7F) as u8);
            acc >>= 7;
            nbits -= 7;
        }
        if out.len() >= count {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic_table_has_no_duplicates_and_esc_slot() {
        for (i, a) in BASIC.iter().enumerate() {
            for b in BASIC.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
        assert_eq!(BASIC[0x1B], '\u{1B}');
        assert!(!is_encodable('\u{1B}'));
    }

    #[test]
    fn encodes_ascii_and_specials() {
        assert_eq!(encode("Hello").unwrap(), b"Hello".to_vec());
        assert_eq!(encode("@").unwrap(), vec![0x00]);
        assert_eq!(encode("$").unwrap(), vec![0x02]);
        assert_eq!(encode("_").unwrap(), vec![0x11]);
        assert_eq!(encode("¡¿").unwrap(), vec![0x40, 0x60]);
        assert_eq!(encode("ÄÖÑÜ§").unwrap(), vec![0x5B, 0x5C, 0x5D, 0x5E, 0x5F]);
        assert_eq!(encode("äöñüà").unwrap(), vec![0x7B, 0x7C, 0x7D, 0x7E, 0x7F]);
        assert_eq!(encode("ΔΦΓΛΩΠΨΣΘΞ").unwrap(), (0x10..=0x1A).filter(|&s| s != 0x11).collect::<Vec<u8>>());
        assert_eq!(encode("\n\r").unwrap(), vec![0x0A, 0x0D]);
        assert_eq!(encode("¤").unwrap(), vec![0x24]);
    }

    #[test]
    fn encodes_extension_table() {
        assert_eq!(encode("€").unwrap(), vec![ESC, 0x65]);
        assert_eq!(
            encode("^{}\\[~]|\u{0C}").unwrap(),
            vec![
                ESC, 0x14, ESC, 0x28, ESC, 0x29, ESC, 0x2F, ESC, 0x3C, ESC, 0x3D, ESC, 0x3E, ESC, 0x40, ESC,
                0x0A
            ]
        );
    }

    #[test]
    fn rejects_unencodable_with_char_index() {
        assert_eq!(encode("añb€日x"), Err(Unencodable { ch: '日', index: 4 }));
        assert_eq!(encode("`"), Err(Unencodable { ch: '`', index: 0 }));
        assert_eq!(encode("ç"), Err(Unencodable { ch: 'ç', index: 0 }));
    }

    #[test]
    fn septet_len_counts_extension_twice() {
        assert_eq!(septet_len(""), Some(0));
        assert_eq!(septet_len("abc"), Some(3));
        assert_eq!(septet_len("a€"), Some(3));
        assert_eq!(septet_len("{}"), Some(4));
        assert_eq!(septet_len("a😀"), None);
    }

    #[test]
    fn decode_lenient_rules() {
        assert_eq!(decode(&[0x80, 0x41, 0xFF]), "?A?");
        assert_eq!(decode(&[ESC]), " ");
        assert_eq!(decode(&[ESC, ESC, 0x41]), " A");
        // Unknown extension code: main-table character.
        assert_eq!(decode(&[ESC, 0x41]), "A");
        assert_eq!(decode(&[ESC, 0x90]), "?");
        assert_eq!(decode(&[ESC, 0x65, 0x00]), "€@");
    }

    #[test]
    fn fill_bits() {
        assert_eq!(fill_bits_for_udh(0), 0);
        assert_eq!(fill_bits_for_udh(6), 1); // 8-bit ref concat UDH
        assert_eq!(fill_bits_for_udh(7), 0); // 16-bit ref concat UDH
        assert_eq!(fill_bits_for_udh(1), 6);
        for len in 0..300 {
            let f = usize::from(fill_bits_for_udh(len));
            assert!(f <= 6);
            assert_eq!((len * 8 + f) % 7, 0);
        }
    }

    #[test]
    fn pack_known_vector() {
        // "hellohello" from TS 23.038 examples (common test vector).
        let packed = pack(b"hellohello", 0).unwrap();
        assert_eq!(packed, vec![0xE8, 0x32, 0x9B, 0xFD, 0x46, 0x97, 0xD9, 0xEC, 0x37]);
        assert_eq!(unpack(&packed, 0).unwrap(), b"hellohello".to_vec());
        // With one fill bit (after a 6-octet UDH): first septet shifted by one.
        let packed = pack(b"A", 1).unwrap();
        assert_eq!(packed, vec![0x41 << 1]);
        assert_eq!(unpack(&packed, 1).unwrap(), b"A".to_vec());
    }

    #[test]
    fn pack_rejects_bad_args() {
        assert_eq!(pack(b"a", 7), Err(PackError::FillBits(7)));
        assert_eq!(unpack(b"a", 9), Err(PackError::FillBits(9)));
        assert_eq!(pack(&[0x41, 0x80], 0), Err(PackError::NotASeptet { value: 0x80, index: 1 }));
    }

    #[test]
    fn pack_seven_spare_bits_reads_back_as_at() {
        let packed = pack(b"1234567", 0).unwrap();
        assert_eq!(packed.len(), 7);
        assert_eq!(unpack(&packed, 0).unwrap(), b"1234567\0".to_vec());
        assert_eq!(unpack_count(&packed, 0, 7).unwrap(), b"1234567".to_vec());
    }

    #[test]
    fn unpack_edge_cases() {
        assert_eq!(unpack(&[], 0).unwrap(), Vec::<u8>::new());
        assert_eq!(unpack(&[], 6).unwrap(), Vec::<u8>::new());
        assert_eq!(unpack(&[0xFF], 6).unwrap(), Vec::<u8>::new());
        assert_eq!(unpack(&[0xFF], 1).unwrap(), vec![0x7F]);
    }

    fn gsm_char() -> impl Strategy<Value = char> {
        prop_oneof![
            proptest::sample::select(BASIC.iter().copied().filter(|&c| c != '\u{1B}').collect::<Vec<_>>()),
            proptest::sample::select(EXTENSION.iter().map(|&(_, c)| c).collect::<Vec<_>>()),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip_encodable_text(chars in proptest::collection::vec(gsm_char(), 0..400)) {
            let text: String = chars.into_iter().collect();
            let septets = encode(&text).unwrap();
            prop_assert_eq!(Some(septets.len()), septet_len(&text));
            prop_assert!(septets.iter().all(|&s| s < 0x80));
            prop_assert_eq!(decode(&septets), text);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let s = decode(&bytes);
            prop_assert!(s.chars().count() <= bytes.len());
        }

        #[test]
        fn encode_arbitrary_text_is_consistent(text in ".{0,64}") {
            match encode(&text) {
                Ok(septets) => prop_assert_eq!(decode(&septets), text),
                Err(e) => {
                    prop_assert_eq!(text.chars().nth(e.index), Some(e.ch));
                    prop_assert!(!is_encodable(e.ch));
                    prop_assert_eq!(septet_len(&text), None);
                }
            }
        }

        #[test]
        fn pack_unpack_roundtrip(
            septets in proptest::collection::vec(0u8..0x80, 0..400),
            fill in 0u8..=6,
        ) {
            let packed = pack(&septets, fill).unwrap();
            prop_assert_eq!(packed.len(), (usize::from(fill) + septets.len() * 7).div_ceil(8));
            let back = unpack_count(&packed, fill, septets.len()).unwrap();
            prop_assert_eq!(&back, &septets);
            let all = unpack(&packed, fill).unwrap();
            prop_assert!(all.len() == septets.len() || (all.len() == septets.len() + 1 && all.last() == Some(&0)));
            prop_assert_eq!(&all[..septets.len()], &septets[..]);
        }

        #[test]
        fn unpack_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), fill in any::<u8>(), max in any::<usize>()) {
            if let Ok(s) = unpack_count(&bytes, fill, max) {
                prop_assert!(s.iter().all(|&x| x < 0x80));
                prop_assert!(s.len() <= bytes.len() * 8 / 7);
            }
        }
    }
}
