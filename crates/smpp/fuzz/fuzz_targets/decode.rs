//! Fuzz the framing codec and the PDU decoder with arbitrary bytes: no panic, no unbounded
//! allocation, and whatever decodes must re-encode and decode to the same value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use smpp::codec::SmppCodec;
use smpp::Pdu;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = SmppCodec::new(8192);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(item)) = codec.decode(&mut buf) {
        if let Ok(pdu) = item {
            // Decoded values are within spec limits, so they encode; the result decodes back equal.
            let bytes = pdu.to_bytes().expect("a decoded PDU re-encodes");
            let again = Pdu::decode(bytes).expect("a re-encoded PDU decodes");
            assert_eq!(again, pdu);
        }
    }
});
