//! ISO-8859-1 (`data_coding` 3) and IA5/ASCII (`data_coding` 1).
//!
//! Latin-1 maps each octet to the code point of the same value, so decoding never fails and is
//! lossless; that is also why [`super::decode`] uses it to show octet data it cannot interpret.
//! IA5 (ITU-T T.50) is treated as US-ASCII, the way SMSCs use it.

use super::Unencodable;

/// What [`decode_ia5`] produces for an octet above 0x7F.
pub const IA5_REPLACEMENT: char = '?';

/// Encodes `text` as ISO-8859-1; fails on the first char above U+00FF (`index` counts chars).
pub fn encode(text: &str) -> Result<Vec<u8>, Unencodable> {
    text.chars()
        .enumerate()
        .map(|(index, ch)| u8::try_from(u32::from(ch)).map_err(|_| Unencodable { ch, index }))
        .collect()
}

/// Decodes ISO-8859-1: every octet is a char. Never fails.
pub fn decode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Encodes `text` as IA5/ASCII; fails on the first non-ASCII char (`index` counts chars).
pub fn encode_ia5(text: &str) -> Result<Vec<u8>, Unencodable> {
    text.chars()
        .enumerate()
        .map(|(index, ch)| if ch.is_ascii() { Ok(ch as u8) } else { Err(Unencodable { ch, index }) })
        .collect()
}

/// Decodes IA5/ASCII; octets above 0x7F become [`IA5_REPLACEMENT`]. Never fails.
pub fn decode_ia5(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| if b.is_ascii() { char::from(b) } else { IA5_REPLACEMENT }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn latin1_basics() {
        assert_eq!(encode("café").unwrap(), vec![b'c', b'a', b'f', 0xE9]);
        assert_eq!(decode(&[0xE9, 0xFF, 0x00]), "éÿ\0");
        assert_eq!(encode("a€"), Err(Unencodable { ch: '€', index: 1 }));
    }

    #[test]
    fn ia5_basics() {
        assert_eq!(encode_ia5("abc").unwrap(), b"abc".to_vec());
        assert_eq!(encode_ia5("aé"), Err(Unencodable { ch: 'é', index: 1 }));
        assert_eq!(decode_ia5(&[b'a', 0xE9]), "a?");
    }

    proptest! {
        #[test]
        fn latin1_bytes_roundtrip(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = decode(&bytes);
            prop_assert_eq!(encode(&text).unwrap(), bytes);
        }

        #[test]
        fn latin1_text_roundtrip(text in "[\\x00-\\u{FF}]{0,100}") {
            prop_assert_eq!(decode(&encode(&text).unwrap()), text);
        }

        #[test]
        fn ia5_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = decode_ia5(&bytes);
            prop_assert!(text.is_ascii());
            prop_assert_eq!(text.len(), bytes.len());
        }

        #[test]
        fn encode_arbitrary_consistent(text in ".{0,64}") {
            if let Err(e) = encode(&text) {
                prop_assert_eq!(text.chars().nth(e.index), Some(e.ch));
            }
            if let Ok(b) = encode_ia5(&text) {
                prop_assert_eq!(decode_ia5(&b), text);
            }
        }
    }
}
