//! Text encodings selected by the SMPP `data_coding` field.
//!
//! SMPP 3.4 (§5.2.19) gives `data_coding` 0x00–0x0E its own meanings (IA5, Latin-1, UCS2, ...)
//! and keeps the GSM 03.38 data coding scheme groups for the rest, in particular 0xF0–0xFF
//! (GSM 7-bit or 8-bit with a message class) and the message waiting groups 0xC0–0xEF. Values
//! 0x10–0x7F are reserved in SMPP but SMSCs pass GSM general data coding through there (0x18 is
//! the usual "flash UCS2"), so [`DataCoding::alphabet`] reads them as GSM 03.38 does.
//!
//! Encoders are strict ([`Unencodable`]); decoders never fail, because a delivery must not be
//! dropped for one odd character: each decoder documents its replacement.

pub mod gsm7;
pub mod latin1;
pub mod ucs2;

use std::fmt;

/// A character the chosen encoding cannot represent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("character {ch:?} at char index {index} is not encodable")]
pub struct Unencodable {
    /// The character.
    pub ch: char,
    /// Its position in the input, counted in chars (not bytes).
    pub index: usize,
}

/// Why [`encode`] could not encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A character is outside the alphabet.
    #[error(transparent)]
    Unencodable(#[from] Unencodable),
    /// The data coding is binary, compressed, reserved or an alphabet this crate lacks.
    #[error("data_coding {0} is not a text encoding this crate supports")]
    Unsupported(DataCoding),
}

/// The SMPP `data_coding` octet.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DataCoding(pub u8);

impl fmt::Debug for DataCoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataCoding({:#04x})", self.0)
    }
}

impl fmt::Display for DataCoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}", self.0)
    }
}

impl From<u8> for DataCoding {
    fn from(v: u8) -> Self {
        DataCoding(v)
    }
}

impl From<DataCoding> for u8 {
    fn from(dc: DataCoding) -> Self {
        dc.0
    }
}

/// How the octets of a short message are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alphabet {
    /// GSM 03.38 default alphabet, unpacked septets ([`gsm7`]).
    Gsm7,
    /// IA5 / US-ASCII.
    Ia5,
    /// ISO-8859-1.
    Latin1,
    /// 8-bit data, not text.
    Binary,
    /// UCS2 / UTF-16BE ([`ucs2`]).
    Ucs2,
    /// Anything else: JIS, Cyrillic, Hebrew, pictogram, ISO-2022-JP, Kanji, KS C 5601, GSM
    /// compressed, reserved values. Decoded as Latin-1 so no octet is lost.
    Unsupported,
}

/// GSM 03.38 message class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageClass {
    /// Class 0: shown immediately, not stored ("flash").
    Class0,
    /// Class 1: ME specific.
    Class1,
    /// Class 2: SIM specific.
    Class2,
    /// Class 3: TE specific.
    Class3,
}

impl MessageClass {
    fn from_bits(bits: u8) -> Self {
        match bits & 0x03 {
            0 => MessageClass::Class0,
            1 => MessageClass::Class1,
            2 => MessageClass::Class2,
            _ => MessageClass::Class3,
        }
    }

    fn bits(self) -> u8 {
        match self {
            MessageClass::Class0 => 0,
            MessageClass::Class1 => 1,
            MessageClass::Class2 => 2,
            MessageClass::Class3 => 3,
        }
    }
}

impl DataCoding {
    /// 0x00: SMSC default alphabet, which this crate takes to be GSM 7-bit.
    pub const DEFAULT: DataCoding = DataCoding(0x00);
    /// 0x01: IA5 (CCITT T.50) / ASCII.
    pub const IA5: DataCoding = DataCoding(0x01);
    /// 0x02: octet unspecified (8-bit binary), the older value.
    pub const BINARY_ALT: DataCoding = DataCoding(0x02);
    /// 0x03: Latin-1 (ISO-8859-1).
    pub const LATIN1: DataCoding = DataCoding(0x03);
    /// 0x04: octet unspecified (8-bit binary).
    pub const BINARY: DataCoding = DataCoding(0x04);
    /// 0x05: JIS (X 0208-1990).
    pub const JIS: DataCoding = DataCoding(0x05);
    /// 0x06: Cyrillic (ISO-8859-5).
    pub const CYRILLIC: DataCoding = DataCoding(0x06);
    /// 0x07: Latin/Hebrew (ISO-8859-8).
    pub const LATIN_HEBREW: DataCoding = DataCoding(0x07);
    /// 0x08: UCS2 (ISO/IEC-10646).
    pub const UCS2: DataCoding = DataCoding(0x08);

    /// Which alphabet the octets are in. See the module docs for the ranges.
    pub fn alphabet(self) -> Alphabet {
        let v = self.0;
        match v {
            0x00 => Alphabet::Gsm7,
            0x01 => Alphabet::Ia5,
            0x02 | 0x04 => Alphabet::Binary,
            0x03 => Alphabet::Latin1,
            0x08 => Alphabet::Ucs2,
            0x05..=0x0F => Alphabet::Unsupported,
            // GSM general data coding (00xx) and automatic deletion (01xx) groups:
            // bit 5 compressed, bits 3..2 alphabet.
            0x10..=0x7F if v & 0x20 != 0 => Alphabet::Unsupported,
            0x10..=0x7F => match (v >> 2) & 0x03 {
                0 => Alphabet::Gsm7,
                1 => Alphabet::Binary,
                2 => Alphabet::Ucs2,
                _ => Alphabet::Unsupported,
            },
            0x80..=0xBF => Alphabet::Unsupported,
            // Message waiting indication: discard / store (GSM 7-bit), store (UCS2).
            0xC0..=0xDF => Alphabet::Gsm7,
            0xE0..=0xEF => Alphabet::Ucs2,
            // Data coding / message class group: bit 2 selects 8-bit data.
            0xF0..=0xFF if v & 0x04 != 0 => Alphabet::Binary,
            0xF0..=0xFF => Alphabet::Gsm7,
        }
    }

    /// The GSM 03.38 message class, if this value carries one (0x10–0x7F with bit 4 set, or
    /// 0xF0–0xFF). The SMPP-specific values 0x00–0x0F carry none.
    pub fn message_class(self) -> Option<MessageClass> {
        let v = self.0;
        match v {
            0x10..=0x7F if v & 0x10 != 0 => Some(MessageClass::from_bits(v)),
            0xF0..=0xFF => Some(MessageClass::from_bits(v)),
            _ => None,
        }
    }

    /// A data coding for `alphabet` with `class`: 0xF0–0xF7 for GSM 7-bit and binary, the GSM
    /// general group (0x18–0x1B) for UCS2. `None` for alphabets that cannot carry a class.
    pub fn with_class(alphabet: Alphabet, class: MessageClass) -> Option<DataCoding> {
        let c = class.bits();
        match alphabet {
            Alphabet::Gsm7 => Some(DataCoding(0xF0 | c)),
            Alphabet::Binary => Some(DataCoding(0xF4 | c)),
            Alphabet::Ucs2 => Some(DataCoding(0x18 | c)),
            Alphabet::Ia5 | Alphabet::Latin1 | Alphabet::Unsupported => None,
        }
    }

    /// Whether the payload is text this crate can encode (GSM 7-bit, IA5, Latin-1, UCS2).
    pub fn is_text(self) -> bool {
        matches!(self.alphabet(), Alphabet::Gsm7 | Alphabet::Ia5 | Alphabet::Latin1 | Alphabet::Ucs2)
    }
}

/// GSM 7-bit (unpacked, `data_coding` 0) if every character fits, otherwise UCS2 (8).
pub fn encode_best(text: &str) -> (DataCoding, Vec<u8>) {
    match gsm7::encode(text) {
        Ok(septets) => (DataCoding::DEFAULT, septets),
        Err(_) => (DataCoding::UCS2, ucs2::encode(text)),
    }
}

/// Encodes `text` for `dc`. GSM 7-bit is unpacked (one septet per octet).
pub fn encode(dc: DataCoding, text: &str) -> Result<Vec<u8>, EncodeError> {
    match dc.alphabet() {
        Alphabet::Gsm7 => Ok(gsm7::encode(text)?),
        Alphabet::Ia5 => Ok(latin1::encode_ia5(text)?),
        Alphabet::Latin1 => Ok(latin1::encode(text)?),
        Alphabet::Ucs2 => Ok(ucs2::encode(text)),
        Alphabet::Binary | Alphabet::Unsupported => Err(EncodeError::Unsupported(dc)),
    }
}

/// Decodes a short message (without UDH) for `dc`. Never fails.
///
/// GSM 7-bit is read as unpacked septets. Binary and unsupported alphabets are shown as
/// Latin-1, which keeps every octet (`latin1::encode` gives the bytes back).
pub fn decode(dc: DataCoding, bytes: &[u8]) -> String {
    match dc.alphabet() {
        Alphabet::Gsm7 => gsm7::decode(bytes),
        Alphabet::Ia5 => latin1::decode_ia5(bytes),
        Alphabet::Ucs2 => ucs2::decode(bytes),
        Alphabet::Latin1 | Alphabet::Binary | Alphabet::Unsupported => latin1::decode(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn smpp_values() {
        assert_eq!(DataCoding(0).alphabet(), Alphabet::Gsm7);
        assert_eq!(DataCoding(1).alphabet(), Alphabet::Ia5);
        assert_eq!(DataCoding(2).alphabet(), Alphabet::Binary);
        assert_eq!(DataCoding(3).alphabet(), Alphabet::Latin1);
        assert_eq!(DataCoding(4).alphabet(), Alphabet::Binary);
        assert_eq!(DataCoding(8).alphabet(), Alphabet::Ucs2);
        for v in [5, 6, 7, 9, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F] {
            assert_eq!(DataCoding(v).alphabet(), Alphabet::Unsupported, "{v:#x}");
            assert_eq!(DataCoding(v).message_class(), None);
        }
        for v in 0..=0x0F {
            assert_eq!(DataCoding(v).message_class(), None);
        }
    }

    #[test]
    fn gsm_groups() {
        assert_eq!(DataCoding(0xF0).alphabet(), Alphabet::Gsm7);
        assert_eq!(DataCoding(0xF0).message_class(), Some(MessageClass::Class0));
        assert_eq!(DataCoding(0xF1).message_class(), Some(MessageClass::Class1));
        assert_eq!(DataCoding(0xF6).alphabet(), Alphabet::Binary);
        assert_eq!(DataCoding(0xF6).message_class(), Some(MessageClass::Class2));
        assert_eq!(DataCoding(0x18).alphabet(), Alphabet::Ucs2);
        assert_eq!(DataCoding(0x18).message_class(), Some(MessageClass::Class0));
        assert_eq!(DataCoding(0x10).alphabet(), Alphabet::Gsm7);
        assert_eq!(DataCoding(0x14).alphabet(), Alphabet::Binary);
        assert_eq!(DataCoding(0x08 | 0x40).alphabet(), Alphabet::Ucs2);
        assert_eq!(DataCoding(0x48).message_class(), None);
        assert_eq!(DataCoding(0x20).alphabet(), Alphabet::Unsupported); // compressed
        assert_eq!(DataCoding(0x1C).alphabet(), Alphabet::Unsupported); // reserved alphabet
        assert_eq!(DataCoding(0x90).alphabet(), Alphabet::Unsupported);
        assert_eq!(DataCoding(0xC0).alphabet(), Alphabet::Gsm7);
        assert_eq!(DataCoding(0xD8).alphabet(), Alphabet::Gsm7);
        assert_eq!(DataCoding(0xE0).alphabet(), Alphabet::Ucs2);
        assert_eq!(DataCoding(0xE0).message_class(), None);
    }

    #[test]
    fn with_class_roundtrips() {
        for class in [MessageClass::Class0, MessageClass::Class1, MessageClass::Class2, MessageClass::Class3]
        {
            for alphabet in [Alphabet::Gsm7, Alphabet::Binary, Alphabet::Ucs2] {
                let dc = DataCoding::with_class(alphabet, class).unwrap();
                assert_eq!(dc.alphabet(), alphabet);
                assert_eq!(dc.message_class(), Some(class));
            }
            assert_eq!(DataCoding::with_class(Alphabet::Latin1, class), None);
        }
    }

    #[test]
    fn best_encoding() {
        assert_eq!(encode_best("Hi €"), (DataCoding::DEFAULT, vec![b'H', b'i', b' ', 0x1B, 0x65]));
        assert_eq!(encode_best("日"), (DataCoding::UCS2, vec![0x65, 0xE5]));
        assert_eq!(encode_best(""), (DataCoding::DEFAULT, vec![]));
    }

    #[test]
    fn encode_by_coding() {
        assert_eq!(encode(DataCoding::LATIN1, "é").unwrap(), vec![0xE9]);
        assert_eq!(encode(DataCoding::IA5, "a").unwrap(), vec![b'a']);
        assert_eq!(encode(DataCoding::BINARY, "a"), Err(EncodeError::Unsupported(DataCoding::BINARY)));
        assert_eq!(
            encode(DataCoding::DEFAULT, "日"),
            Err(EncodeError::Unencodable(Unencodable { ch: '日', index: 0 }))
        );
        assert_eq!(encode(DataCoding(0x18), "日").unwrap(), vec![0x65, 0xE5]);
    }

    #[test]
    fn decode_by_coding() {
        assert_eq!(decode(DataCoding::DEFAULT, &[0x00, 0x1B, 0x65]), "@€");
        assert_eq!(decode(DataCoding::LATIN1, &[0xE9]), "é");
        assert_eq!(decode(DataCoding::BINARY, &[0xE9, 0x00]), "é\0");
        assert_eq!(decode(DataCoding::UCS2, &[0x65, 0xE5]), "日");
        assert_eq!(decode(DataCoding::IA5, &[0xE9]), "?");
        assert_eq!(format!("{}", DataCoding(8)), "0x08");
        assert_eq!(format!("{:?}", DataCoding(0xF1)), "DataCoding(0xf1)");
    }

    proptest! {
        #[test]
        fn best_roundtrips(text in any::<String>()) {
            let (dc, bytes) = encode_best(&text);
            prop_assert_eq!(decode(dc, &bytes), text);
        }

        #[test]
        fn decode_never_panics(dc in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(DataCoding(dc), &bytes);
            let _ = DataCoding(dc).message_class();
        }

        #[test]
        fn encode_then_decode(dc in any::<u8>(), text in ".{0,40}") {
            if let Ok(bytes) = encode(DataCoding(dc), &text) {
                prop_assert!(DataCoding(dc).is_text());
                prop_assert_eq!(decode(DataCoding(dc), &bytes), text);
            }
        }
    }
}
