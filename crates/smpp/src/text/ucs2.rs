//! UCS2 (`data_coding` 8), in practice UTF-16BE.
//!
//! SMPP 3.4 says UCS2 (ISO/IEC-10646), which has no surrogates, but handsets and SMSCs carry
//! UTF-16: characters outside the BMP (emoji) travel as surrogate pairs. We encode them that
//! way, and decode leniently: an unpaired surrogate or a dangling odd octet becomes U+FFFD.

/// What [`decode`] produces for an unpaired surrogate or a trailing odd octet.
pub const REPLACEMENT: char = char::REPLACEMENT_CHARACTER;

/// Encodes `text` as UTF-16BE. Every `char` is encodable.
pub fn encode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 2);
    for unit in text.encode_utf16() {
        out.extend_from_slice(&unit.to_be_bytes());
    }
    out
}

/// Number of UTF-16 code units (2 octets each) `text` takes.
pub fn unit_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Whether `unit` is a high (leading) surrogate.
pub fn is_high_surrogate(unit: u16) -> bool {
    (0xD800..=0xDBFF).contains(&unit)
}

/// Whether `unit` is a low (trailing) surrogate.
pub fn is_low_surrogate(unit: u16) -> bool {
    (0xDC00..=0xDFFF).contains(&unit)
}

/// Decodes UTF-16BE. Never fails: unpaired surrogates and a trailing odd octet become
/// [`REPLACEMENT`].
pub fn decode(bytes: &[u8]) -> String {
    let chunks = bytes.chunks_exact(2);
    let odd = !chunks.remainder().is_empty();
    let units = chunks.map(|c| u16::from_be_bytes([c[0], c[1]]));
    let mut out: String = char::decode_utf16(units).map(|r| r.unwrap_or(REPLACEMENT)).collect();
    if odd {
        out.push(REPLACEMENT);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bmp_and_astral() {
        assert_eq!(encode("A"), vec![0x00, 0x41]);
        assert_eq!(encode("日本"), vec![0x65, 0xE5, 0x67, 0x2C]);
        assert_eq!(encode("😀"), vec![0xD8, 0x3D, 0xDE, 0x00]);
        assert_eq!(decode(&[0xD8, 0x3D, 0xDE, 0x00]), "😀");
        assert_eq!(unit_len("a😀"), 3);
        assert_eq!(encode(""), Vec::<u8>::new());
    }

    #[test]
    fn lenient_decode() {
        // Lone high surrogate, then 'A'.
        assert_eq!(decode(&[0xD8, 0x3D, 0x00, 0x41]), "\u{FFFD}A");
        // Lone low surrogate.
        assert_eq!(decode(&[0xDE, 0x00]), "\u{FFFD}");
        // Odd trailing octet.
        assert_eq!(decode(&[0x00, 0x41, 0x42]), "A\u{FFFD}");
    }

    #[test]
    fn surrogate_predicates() {
        assert!(is_high_surrogate(0xD83D));
        assert!(!is_high_surrogate(0xDE00));
        assert!(is_low_surrogate(0xDE00));
        assert!(!is_low_surrogate(0x0041));
    }

    proptest! {
        #[test]
        fn roundtrip(text in any::<String>()) {
            let bytes = encode(&text);
            prop_assert_eq!(bytes.len(), unit_len(&text) * 2);
            prop_assert_eq!(decode(&bytes), text);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let s = decode(&bytes);
            prop_assert!(s.chars().count() <= bytes.len().div_ceil(2));
        }
    }
}
