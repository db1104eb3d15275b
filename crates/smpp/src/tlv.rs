//! Optional parameters (TLVs, SMPP 3.4 section 5.3).
//!
//! Every TLV is kept as its raw tag and value bytes, in the order received, so unknown and vendor
//! TLVs (and known ones with vendor quirks, such as a receipted_message_id without its NUL) are
//! written back byte-exact: a relay must not lose or reshape them. Typed access to the 3.4
//! parameters goes through accessors on [`Tlvs`] that read and write those raw values.
//! Decoding checks the length of every known fixed-size TLV, which the spec answers with
//! ESME_RINVPARLEN.

use crate::error::{DecodeErrorKind, EncodeError};
use bytes::{BufMut, Bytes, BytesMut};

/// A TLV tag. Constants for every SMPP 3.4 optional parameter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Tag(pub u16);

/// How long a known TLV's value may be.
#[derive(Clone, Copy, Debug)]
enum Len {
    Exact(usize),
    Range(usize, usize),
    Any,
}

macro_rules! tags {
    ($($name:ident = $value:expr, $len:expr;)*) => {
        impl Tag {
            $(pub const $name: Tag = Tag($value);)*

            fn allowed_len(self) -> Option<(Len, &'static str)> {
                match self.0 {
                    $($value => Some(($len, stringify!($len))),)*
                    _ => None,
                }
            }
        }
    };
}

tags! {
    DEST_ADDR_SUBUNIT = 0x0005, Len::Exact(1);
    DEST_NETWORK_TYPE = 0x0006, Len::Exact(1);
    DEST_BEARER_TYPE = 0x0007, Len::Exact(1);
    DEST_TELEMATICS_ID = 0x0008, Len::Exact(2);
    SOURCE_ADDR_SUBUNIT = 0x000D, Len::Exact(1);
    SOURCE_NETWORK_TYPE = 0x000E, Len::Exact(1);
    SOURCE_BEARER_TYPE = 0x000F, Len::Exact(1);
    SOURCE_TELEMATICS_ID = 0x0010, Len::Exact(1);
    QOS_TIME_TO_LIVE = 0x0017, Len::Exact(4);
    PAYLOAD_TYPE = 0x0019, Len::Exact(1);
    ADDITIONAL_STATUS_INFO_TEXT = 0x001D, Len::Range(1, 256);
    RECEIPTED_MESSAGE_ID = 0x001E, Len::Range(1, 65);
    MS_MSG_WAIT_FACILITIES = 0x0030, Len::Exact(1);
    PRIVACY_INDICATOR = 0x0201, Len::Exact(1);
    SOURCE_SUBADDRESS = 0x0202, Len::Range(2, 23);
    DEST_SUBADDRESS = 0x0203, Len::Range(2, 23);
    USER_MESSAGE_REFERENCE = 0x0204, Len::Exact(2);
    USER_RESPONSE_CODE = 0x0205, Len::Exact(1);
    SOURCE_PORT = 0x020A, Len::Exact(2);
    DESTINATION_PORT = 0x020B, Len::Exact(2);
    SAR_MSG_REF_NUM = 0x020C, Len::Exact(2);
    LANGUAGE_INDICATOR = 0x020D, Len::Exact(1);
    SAR_TOTAL_SEGMENTS = 0x020E, Len::Exact(1);
    SAR_SEGMENT_SEQNUM = 0x020F, Len::Exact(1);
    SC_INTERFACE_VERSION = 0x0210, Len::Exact(1);
    CALLBACK_NUM_PRES_IND = 0x0302, Len::Exact(1);
    CALLBACK_NUM_ATAG = 0x0303, Len::Range(0, 65);
    NUMBER_OF_MESSAGES = 0x0304, Len::Exact(1);
    CALLBACK_NUM = 0x0381, Len::Range(4, 19);
    DPF_RESULT = 0x0420, Len::Exact(1);
    SET_DPF = 0x0421, Len::Exact(1);
    MS_AVAILABILITY_STATUS = 0x0422, Len::Exact(1);
    NETWORK_ERROR_CODE = 0x0423, Len::Exact(3);
    MESSAGE_PAYLOAD = 0x0424, Len::Any;
    DELIVERY_FAILURE_REASON = 0x0425, Len::Exact(1);
    MORE_MESSAGES_TO_SEND = 0x0426, Len::Exact(1);
    MESSAGE_STATE = 0x0427, Len::Exact(1);
    USSD_SERVICE_OP = 0x0501, Len::Exact(1);
    DISPLAY_TIME = 0x1201, Len::Exact(1);
    SMS_SIGNAL = 0x1203, Len::Exact(2);
    MS_VALIDITY = 0x1204, Len::Exact(1);
    ALERT_ON_MESSAGE_DELIVERY = 0x130C, Len::Exact(0);
    ITS_REPLY_TYPE = 0x1380, Len::Exact(1);
    ITS_SESSION_INFO = 0x1383, Len::Exact(2);
}

impl Tag {
    /// Whether SMPP 3.4 defines this tag (everything else is vendor-specific or reserved).
    pub fn is_known(self) -> bool {
        self.allowed_len().is_some()
    }
}

/// One optional parameter, raw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlv {
    pub tag: Tag,
    pub value: Bytes,
}

impl Tlv {
    pub fn new(tag: Tag, value: impl Into<Bytes>) -> Self {
        Tlv { tag, value: value.into() }
    }

    fn encoded_len(&self) -> usize {
        4 + self.value.len()
    }
}

/// The optional parameters of a PDU, in wire order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tlvs(pub Vec<Tlv>);

/// The network_error_code TLV: network type (1 ANSI-136, 2 IS-95, 3 GSM, ...) and its error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkErrorCode {
    pub network_type: u8,
    pub error_code: u16,
}

/// Strip one trailing NUL, for C-Octet String TLVs that some peers send without it.
fn c_value(v: &[u8]) -> &[u8] {
    v.strip_suffix(&[0]).unwrap_or(v)
}

fn with_nul(s: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(s.len() + 1);
    b.put_slice(s);
    b.put_u8(0);
    b.freeze()
}

impl Tlvs {
    pub fn new() -> Self {
        Tlvs(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tlv> {
        self.0.iter()
    }

    /// The raw value of the first TLV with this tag.
    pub fn get(&self, tag: Tag) -> Option<&Bytes> {
        self.0.iter().find(|t| t.tag == tag).map(|t| &t.value)
    }

    /// Replace the first TLV with this tag (keeping its position) or append it.
    pub fn set(&mut self, tag: Tag, value: impl Into<Bytes>) {
        let value = value.into();
        match self.0.iter_mut().find(|t| t.tag == tag) {
            Some(t) => t.value = value,
            None => self.0.push(Tlv { tag, value }),
        }
    }

    /// Remove every TLV with this tag.
    pub fn remove(&mut self, tag: Tag) {
        self.0.retain(|t| t.tag != tag);
    }

    fn get_u8(&self, tag: Tag) -> Option<u8> {
        self.get(tag).and_then(|v| (v.len() == 1).then(|| v[0]))
    }

    fn get_u16(&self, tag: Tag) -> Option<u16> {
        self.get(tag).and_then(|v| <[u8; 2]>::try_from(&v[..]).ok()).map(u16::from_be_bytes)
    }

    pub fn receipted_message_id(&self) -> Option<&[u8]> {
        self.get(Tag::RECEIPTED_MESSAGE_ID).map(|v| c_value(v))
    }
    pub fn set_receipted_message_id(&mut self, id: &[u8]) {
        self.set(Tag::RECEIPTED_MESSAGE_ID, with_nul(id));
    }
    pub fn message_state(&self) -> Option<u8> {
        self.get_u8(Tag::MESSAGE_STATE)
    }
    pub fn set_message_state(&mut self, state: u8) {
        self.set(Tag::MESSAGE_STATE, vec![state]);
    }
    pub fn network_error_code(&self) -> Option<NetworkErrorCode> {
        let v = self.get(Tag::NETWORK_ERROR_CODE)?;
        let b: [u8; 3] = v[..].try_into().ok()?;
        Some(NetworkErrorCode { network_type: b[0], error_code: u16::from_be_bytes([b[1], b[2]]) })
    }
    pub fn set_network_error_code(&mut self, c: NetworkErrorCode) {
        let e = c.error_code.to_be_bytes();
        self.set(Tag::NETWORK_ERROR_CODE, vec![c.network_type, e[0], e[1]]);
    }
    pub fn message_payload(&self) -> Option<&Bytes> {
        self.get(Tag::MESSAGE_PAYLOAD)
    }
    pub fn set_message_payload(&mut self, payload: impl Into<Bytes>) {
        self.set(Tag::MESSAGE_PAYLOAD, payload);
    }
    pub fn sar_msg_ref_num(&self) -> Option<u16> {
        self.get_u16(Tag::SAR_MSG_REF_NUM)
    }
    pub fn sar_total_segments(&self) -> Option<u8> {
        self.get_u8(Tag::SAR_TOTAL_SEGMENTS)
    }
    pub fn sar_segment_seqnum(&self) -> Option<u8> {
        self.get_u8(Tag::SAR_SEGMENT_SEQNUM)
    }
    /// Set the three SAR TLVs of one concatenated part.
    pub fn set_sar(&mut self, reference: u16, total: u8, seqnum: u8) {
        self.set(Tag::SAR_MSG_REF_NUM, reference.to_be_bytes().to_vec());
        self.set(Tag::SAR_TOTAL_SEGMENTS, vec![total]);
        self.set(Tag::SAR_SEGMENT_SEQNUM, vec![seqnum]);
    }
    pub fn user_message_reference(&self) -> Option<u16> {
        self.get_u16(Tag::USER_MESSAGE_REFERENCE)
    }
    pub fn set_user_message_reference(&mut self, r: u16) {
        self.set(Tag::USER_MESSAGE_REFERENCE, r.to_be_bytes().to_vec());
    }
    pub fn sc_interface_version(&self) -> Option<u8> {
        self.get_u8(Tag::SC_INTERFACE_VERSION)
    }
    pub fn set_sc_interface_version(&mut self, v: u8) {
        self.set(Tag::SC_INTERFACE_VERSION, vec![v]);
    }
    pub fn source_port(&self) -> Option<u16> {
        self.get_u16(Tag::SOURCE_PORT)
    }
    pub fn set_source_port(&mut self, p: u16) {
        self.set(Tag::SOURCE_PORT, p.to_be_bytes().to_vec());
    }
    pub fn destination_port(&self) -> Option<u16> {
        self.get_u16(Tag::DESTINATION_PORT)
    }
    pub fn set_destination_port(&mut self, p: u16) {
        self.set(Tag::DESTINATION_PORT, p.to_be_bytes().to_vec());
    }
    pub fn ms_availability_status(&self) -> Option<u8> {
        self.get_u8(Tag::MS_AVAILABILITY_STATUS)
    }
    pub fn payload_type(&self) -> Option<u8> {
        self.get_u8(Tag::PAYLOAD_TYPE)
    }
    pub fn more_messages_to_send(&self) -> Option<u8> {
        self.get_u8(Tag::MORE_MESSAGES_TO_SEND)
    }
    pub fn delivery_failure_reason(&self) -> Option<u8> {
        self.get_u8(Tag::DELIVERY_FAILURE_REASON)
    }
    pub fn additional_status_info_text(&self) -> Option<&[u8]> {
        self.get(Tag::ADDITIONAL_STATUS_INFO_TEXT).map(|v| c_value(v))
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.0.iter().map(Tlv::encoded_len).sum()
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        for t in &self.0 {
            let len = u16::try_from(t.value.len())
                .map_err(|_| EncodeError::TlvTooLong { tag: t.tag.0, len: t.value.len() })?;
            dst.put_u16(t.tag.0);
            dst.put_u16(len);
            dst.put_slice(&t.value);
        }
        Ok(())
    }

    /// Decode the TLVs filling `body[offset..]`. Values are zero-copy slices of `body`.
    pub(crate) fn decode(body: &Bytes, mut offset: usize) -> Result<Tlvs, DecodeErrorKind> {
        let mut out = Vec::new();
        while offset < body.len() {
            let rest = &body[offset..];
            if rest.len() < 4 {
                return Err(DecodeErrorKind::TlvTruncated { offset });
            }
            let tag = Tag(u16::from_be_bytes([rest[0], rest[1]]));
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            if rest.len() - 4 < len {
                return Err(DecodeErrorKind::TlvTruncated { offset });
            }
            if let Some((allowed, expected)) = tag.allowed_len() {
                let ok = match allowed {
                    Len::Exact(n) => len == n,
                    Len::Range(lo, hi) => (lo..=hi).contains(&len),
                    Len::Any => true,
                };
                if !ok {
                    return Err(DecodeErrorKind::TlvLength { tag: tag.0, length: len, expected });
                }
            }
            out.push(Tlv { tag, value: body.slice(offset + 4..offset + 4 + len) });
            offset += 4 + len;
        }
        Ok(Tlvs(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tlvs_are_kept_byte_exact() {
        let body = Bytes::from_static(&[
            0x14, 0x00, 0x00, 0x03, b'a', b'b', b'c', // vendor 0x1400
            0x00, 0x1E, 0x00, 0x03, b'1', b'2', b'3', // receipted_message_id without NUL
            0x04, 0x27, 0x00, 0x01, 0x02, // message_state DELIVERED
        ]);
        let tlvs = Tlvs::decode(&body, 0).expect("valid TLVs");
        assert_eq!(tlvs.0.len(), 3);
        assert_eq!(tlvs.0[0].tag, Tag(0x1400));
        assert!(!tlvs.0[0].tag.is_known());
        assert_eq!(tlvs.receipted_message_id(), Some(&b"123"[..]));
        assert_eq!(tlvs.message_state(), Some(2));
        let mut out = BytesMut::new();
        tlvs.encode(&mut out).expect("encodes");
        assert_eq!(&out[..], &body[..]);
    }

    #[test]
    fn known_tlv_with_wrong_length_is_rejected() {
        let body = Bytes::from_static(&[0x04, 0x27, 0x00, 0x02, 0x02, 0x00]);
        assert!(matches!(
            Tlvs::decode(&body, 0),
            Err(DecodeErrorKind::TlvLength { tag: 0x0427, length: 2, .. })
        ));
    }

    #[test]
    fn tlv_past_end_is_rejected() {
        let body = Bytes::from_static(&[0x04, 0x24, 0x00, 0x09, 1, 2, 3]);
        assert_eq!(Tlvs::decode(&body, 0), Err(DecodeErrorKind::TlvTruncated { offset: 0 }));
        let body = Bytes::from_static(&[0x04, 0x24, 0x00]);
        assert_eq!(Tlvs::decode(&body, 0), Err(DecodeErrorKind::TlvTruncated { offset: 0 }));
    }

    #[test]
    fn typed_setters_round_trip() {
        let mut t = Tlvs::new();
        t.set_sar(0xBEEF, 3, 2);
        t.set_network_error_code(NetworkErrorCode { network_type: 3, error_code: 0x0102 });
        t.set_receipted_message_id(b"abc");
        t.set_message_state(5);
        t.set_message_state(2);
        assert_eq!(t.sar_msg_ref_num(), Some(0xBEEF));
        assert_eq!(t.sar_total_segments(), Some(3));
        assert_eq!(t.sar_segment_seqnum(), Some(2));
        assert_eq!(t.network_error_code().map(|c| c.error_code), Some(0x0102));
        assert_eq!(t.get(Tag::RECEIPTED_MESSAGE_ID).map(|v| &v[..]), Some(&b"abc\0"[..]));
        assert_eq!(t.message_state(), Some(2));
        assert_eq!(t.0.iter().filter(|x| x.tag == Tag::MESSAGE_STATE).count(), 1);
    }
}
