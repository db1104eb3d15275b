//! Codec tests: golden byte vectors, a table of malformed inputs with the status each must earn,
//! and property round trips of every PDU (encode -> decode gives the same value back; arbitrary
//! bytes never panic the decoder).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use smpp::codec::{CodecError, SmppCodec};
use smpp::*;
use tokio_util::codec::Decoder;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex")).collect()
}

fn decode(bytes: &[u8]) -> Result<Pdu, DecodeError> {
    Pdu::decode(Bytes::copy_from_slice(bytes))
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

// ------------------------------------------------------------------------------------------------
// Golden vectors: bytes written out by hand from the spec's layouts.

#[test]
fn golden_enquire_link() {
    let bytes = hex("00000010 00000015 00000000 00000001");
    let pdu = decode(&bytes).expect("decodes");
    assert_eq!(pdu, Pdu::new(1, Body::EnquireLink));
    assert_eq!(&pdu.to_bytes().expect("encodes")[..], &bytes[..]);
}

#[test]
fn golden_bind_transmitter() {
    // system_id "test", password "pw", system_type "", interface 0x34, ton 1, npi 1, range "".
    let bytes = hex("0000001D 00000002 00000000 0000002A 7465737400 707700 00 34 01 01 00");
    let pdu = decode(&bytes).expect("decodes");
    let want = Pdu::new(
        42,
        Body::BindTransmitter(Bind {
            system_id: b("test"),
            password: b("pw"),
            system_type: b(""),
            interface_version: 0x34,
            address_range: Address::new(1, 1, ""),
        }),
    );
    assert_eq!(pdu, want);
    assert_eq!(&want.to_bytes().expect("encodes")[..], &bytes[..]);
}

#[test]
fn golden_submit_sm_with_tlvs() {
    let bytes = hex(concat!(
        "0000003C 00000004 00000000 00000007", // header, length 0x3C = 60
        "00",                                  // service_type ""
        "01 01 3132333400",                    // source 1/1 "1234"
        "01 01 353637383900",                  // dest 1/1 "56789"
        "00 00 00",                            // esm_class, protocol_id, priority
        "00 00",                               // schedule, validity ""
        "01 00 00 00",                         // registered_delivery 1, replace, data_coding, default id
        "05 68656C6C6F",                       // sm_length 5 "hello"
        "0204 0002 1234",                      // user_message_reference 0x1234
        "1401 0003 AABBCC",                    // vendor TLV, kept as is
    ));
    let pdu = decode(&bytes).expect("decodes");
    let Body::SubmitSm(ref sm) = pdu.body else { panic!("not submit_sm: {pdu:?}") };
    assert_eq!(sm.source.addr, b("1234"));
    assert_eq!(sm.destination.addr, b("56789"));
    assert_eq!(sm.short_message, b("hello"));
    assert_eq!(sm.registered_delivery, 1);
    assert_eq!(sm.tlvs.user_message_reference(), Some(0x1234));
    assert_eq!(sm.tlvs.get(Tag(0x1401)).map(|v| &v[..]), Some(&[0xAA, 0xBB, 0xCC][..]));
    assert_eq!(&pdu.to_bytes().expect("encodes")[..], &bytes[..]);
}

#[test]
fn golden_deliver_sm_receipt() {
    let text =
        "id:0A1B sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:hi";
    let mut body = hex("00 0101 3500 0101 3600 04 00 00 00 00 00 00 00 00");
    body.push(text.len() as u8);
    body.extend_from_slice(text.as_bytes());
    body.extend_from_slice(&hex("001E 0005 30413142 00 0427 0001 02"));
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&((16 + body.len()) as u32).to_be_bytes());
    bytes.extend_from_slice(&hex("00000005 00000000 00000009"));
    bytes.extend_from_slice(&body);
    let pdu = decode(&bytes).expect("decodes");
    let Body::DeliverSm(ref d) = pdu.body else { panic!("not deliver_sm") };
    assert!(d.is_delivery_receipt());
    assert_eq!(d.tlvs.receipted_message_id(), Some(&b"0A1B"[..]));
    assert_eq!(d.tlvs.message_state(), Some(2));
    assert_eq!(d.short_message, Bytes::from(text));
    assert_eq!(&pdu.to_bytes().expect("encodes")[..], &bytes[..]);
}

#[test]
fn golden_error_responses_have_no_body() {
    let pdu = Pdu::error_response(CommandId::SUBMIT_SM, CommandStatus::ESME_RTHROTTLED, 5);
    let bytes = pdu.to_bytes().expect("encodes");
    assert_eq!(&bytes[..], &hex("00000010 80000004 00000058 00000005")[..]);
    assert_eq!(decode(&bytes).expect("decodes"), pdu);
    // Many ESMEs send deliver_sm_resp with no body at all, status 0: accepted.
    let pdu = decode(&hex("00000010 80000005 00000000 00000003")).expect("decodes");
    assert_eq!(pdu.body, Body::DeliverSmResp(DeliverSmResp::default()));
    // Outbind has no response: generic_nack.
    let pdu = Pdu::error_response(CommandId::OUTBIND, CommandStatus::ESME_RINVBNDSTS, 1);
    assert_eq!(pdu.body, Body::GenericNack);
}

#[test]
fn golden_submit_multi_resp_with_unsuccess() {
    let bytes = hex("00000025 80000021 00000000 00000003 61626300 02 0101 3100 0000000B 0101 3200 00000045");
    let pdu = decode(&bytes).expect("decodes");
    let Body::SubmitMultiResp(ref r) = pdu.body else { panic!("not submit_multi_resp") };
    assert_eq!(r.message_id, b("abc"));
    assert_eq!(r.unsuccess_smes.len(), 2);
    assert_eq!(r.unsuccess_smes[0].error_status_code, CommandStatus::ESME_RINVDSTADR);
    assert_eq!(r.unsuccess_smes[1].address.addr, b("2"));
    assert_eq!(&pdu.to_bytes().expect("encodes")[..], &bytes[..]);
}

// ------------------------------------------------------------------------------------------------
// Malformed inputs: each must give this error and this status (and this response command).

struct Bad {
    name: &'static str,
    bytes: Vec<u8>,
    status: CommandStatus,
    respond_with: CommandId,
}

fn with_len(mut rest: Vec<u8>) -> Vec<u8> {
    let mut v = ((rest.len() + 4) as u32).to_be_bytes().to_vec();
    v.append(&mut rest);
    v
}

fn malformed() -> Vec<Bad> {
    vec![
        Bad {
            name: "unknown command_id",
            bytes: hex("00000010 00000077 00000000 00000001"),
            status: CommandStatus::ESME_RINVCMDID,
            respond_with: CommandId::GENERIC_NACK,
        },
        Bad {
            name: "system_id over 15 characters, no NUL within 16",
            bytes: with_len(hex("00000002 00000000 00000001 4142434445464748494A4B4C4D4E4F5051 00 00 00 34 00 00 00")),
            status: CommandStatus::ESME_RINVSYSID,
            respond_with: CommandId::BIND_TRANSMITTER_RESP,
        },
        Bad {
            name: "password over 8 characters",
            bytes: with_len(hex("00000009 00000000 00000001 7400 31323334353637383900 00 34 00 00 00")),
            status: CommandStatus::ESME_RINVPASWD,
            respond_with: CommandId::BIND_TRANSCEIVER_RESP,
        },
        Bad {
            name: "bind with trailing bytes",
            bytes: with_len(hex("00000001 00000000 00000001 7400 7000 00 34 00 00 00 FF")),
            status: CommandStatus::ESME_RINVCMDLEN,
            respond_with: CommandId::BIND_RECEIVER_RESP,
        },
        Bad {
            name: "submit_sm source_addr runs to the end without NUL",
            bytes: with_len(hex("00000004 00000000 00000002 00 01 01 313233")),
            status: CommandStatus::ESME_RINVSRCADR,
            respond_with: CommandId::SUBMIT_SM_RESP,
        },
        Bad {
            name: "submit_sm destination_addr over 20 digits",
            bytes: with_len(hex(
                "00000004 00000000 00000002 00 0101 3100 0101 3132333435363738393031323334353637383930313233 00",
            )),
            status: CommandStatus::ESME_RINVDSTADR,
            respond_with: CommandId::SUBMIT_SM_RESP,
        },
        Bad {
            name: "submit_sm sm_length past the end",
            bytes: with_len(hex("00000004 00000000 00000002 00 0101 3100 0101 3200 000000 00 00 00000000 C8 6869")),
            status: CommandStatus::ESME_RINVCMDLEN,
            respond_with: CommandId::SUBMIT_SM_RESP,
        },
        Bad {
            name: "submit_sm sm_length 255",
            bytes: with_len(hex("00000004 00000000 00000002 00 0101 3100 0101 3200 000000 00 00 00000000 FF")),
            status: CommandStatus::ESME_RINVMSGLEN,
            respond_with: CommandId::SUBMIT_SM_RESP,
        },
        Bad {
            name: "submit_sm TLV header cut short",
            bytes: with_len(hex("00000004 00000000 00000002 00 0101 3100 0101 3200 000000 00 00 00000000 00 0204 00")),
            status: CommandStatus::ESME_RINVOPTPARSTREAM,
            respond_with: CommandId::SUBMIT_SM_RESP,
        },
        Bad {
            name: "submit_sm TLV value runs past the PDU end",
            bytes: with_len(hex(
                "00000004 00000000 00000002 00 0101 3100 0101 3200 000000 00 00 00000000 00 0424 0010 414243",
            )),
            status: CommandStatus::ESME_RINVOPTPARSTREAM,
            respond_with: CommandId::SUBMIT_SM_RESP,
        },
        Bad {
            name: "known TLV with the wrong length",
            bytes: with_len(hex(
                "00000004 00000000 00000002 00 0101 3100 0101 3200 000000 00 00 00000000 00 0204 0003 010203",
            )),
            status: CommandStatus::ESME_RINVPARLEN,
            respond_with: CommandId::SUBMIT_SM_RESP,
        },
        Bad {
            name: "enquire_link with a body",
            bytes: hex("00000011 00000015 00000000 00000003 00"),
            status: CommandStatus::ESME_RINVCMDLEN,
            respond_with: CommandId::ENQUIRE_LINK_RESP,
        },
        Bad {
            name: "submit_multi with zero destinations",
            bytes: with_len(hex("00000021 00000000 00000004 00 0101 3100 00")),
            status: CommandStatus::ESME_RINVNUMDESTS,
            respond_with: CommandId::SUBMIT_MULTI_RESP,
        },
        Bad {
            name: "submit_multi with dest_flag 3",
            bytes: with_len(hex("00000021 00000000 00000004 00 0101 3100 01 03 0101 3200")),
            status: CommandStatus::ESME_RINVDESTFLAG,
            respond_with: CommandId::SUBMIT_MULTI_RESP,
        },
        Bad {
            name: "query_sm message_id over 64 characters",
            bytes: with_len({
                let mut v = hex("00000003 00000000 00000005");
                v.extend(std::iter::repeat_n(b'7', 70));
                v
            }),
            status: CommandStatus::ESME_RINVMSGID,
            respond_with: CommandId::QUERY_SM_RESP,
        },
        Bad {
            name: "submit_sm body ends inside esm_class",
            bytes: with_len(hex("00000004 00000000 00000002 00 0101 3100 0101 3200")),
            status: CommandStatus::ESME_RINVCMDLEN,
            respond_with: CommandId::SUBMIT_SM_RESP,
        },
    ]
}

#[test]
fn malformed_inputs_get_the_spec_status() {
    for bad in malformed() {
        let err = decode(&bad.bytes).expect_err(bad.name);
        assert_eq!(err.status(), bad.status, "{}: {err}", bad.name);
        assert_eq!(err.response_command(), bad.respond_with, "{}", bad.name);
        // The header is kept, so the answer carries the peer's sequence number.
        let seq = u32::from_be_bytes([bad.bytes[12], bad.bytes[13], bad.bytes[14], bad.bytes[15]]);
        assert_eq!(err.sequence_number, seq, "{}", bad.name);
        // The same bytes through the framing codec: a non-fatal item error, stream stays usable.
        let mut codec = SmppCodec::default();
        let mut buf = BytesMut::from(&bad.bytes[..]);
        buf.extend_from_slice(&hex("00000010 00000015 00000000 00000063"));
        let first = codec.decode(&mut buf).expect("framing ok").expect("a frame");
        assert!(first.is_err(), "{}", bad.name);
        let next = codec.decode(&mut buf).expect("framing ok").expect("next frame");
        assert_eq!(next, Ok(Pdu::new(0x63, Body::EnquireLink)), "{}: stream resynchronised", bad.name);
    }
}

#[test]
fn command_length_out_of_range_is_fatal() {
    let mut codec = SmppCodec::new(1024);
    for (bytes, length) in [
        (hex("0000000F 00000015 00000000 00000007"), 15u32),
        (hex("00000000"), 0),
        (hex("00000401 00000004 00000000 00000008"), 1025),
        (hex("FFFFFFFF 00000004"), u32::MAX),
    ] {
        let mut buf = BytesMut::from(&bytes[..]);
        match codec.decode(&mut buf) {
            Err(CodecError::InvalidCommandLength { length: l, max: 1024, sequence_number, .. }) => {
                assert_eq!(l, length);
                if bytes.len() >= 16 {
                    assert!(sequence_number.is_some());
                }
            }
            other => panic!("length {length}: {other:?}"),
        }
        // Nothing was reserved for the bogus length.
        assert!(buf.capacity() < 4096, "capacity {} after length {length}", buf.capacity());
    }
}

#[test]
fn partial_frames_wait_for_more() {
    let bytes = Pdu::new(9, Body::SubmitSmResp(SubmitSmResp { message_id: b("x1"), tlvs: Tlvs::new() }))
        .to_bytes()
        .expect("encodes");
    let mut codec = SmppCodec::default();
    let mut buf = BytesMut::new();
    for (i, byte) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let got = codec.decode(&mut buf).expect("no framing error");
        assert_eq!(got.is_some(), i == bytes.len() - 1, "byte {i}");
    }
}

#[test]
fn encode_rejects_values_the_spec_forbids() {
    let too_long =
        Pdu::new(1, Body::BindTransmitter(Bind { system_id: b("0123456789abcdef"), ..Default::default() }));
    assert!(matches!(
        too_long.to_bytes(),
        Err(EncodeError::TooLong { field: Field::SystemId, len: 17, max: 16 })
    ));
    let nul =
        Pdu::new(1, Body::QuerySm(QuerySm { message_id: Bytes::from_static(b"a\0b"), ..Default::default() }));
    assert_eq!(nul.to_bytes(), Err(EncodeError::InteriorNul(Field::MessageId)));
    let sm = Pdu::new(
        1,
        Body::SubmitSm(SubmitSm { short_message: Bytes::from(vec![b'x'; 255]), ..Default::default() }),
    );
    assert!(matches!(sm.to_bytes(), Err(EncodeError::TooLong { field: Field::ShortMessage, .. })));
    let mut buf = BytesMut::from(&b"keep"[..]);
    assert!(sm.encode(&mut buf).is_err());
    assert_eq!(&buf[..], b"keep", "a failed encode leaves the buffer as it was");
}

// ------------------------------------------------------------------------------------------------
// Property tests.

fn cstr(max_with_nul: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(1u8..=255, 0..max_with_nul).prop_map(Bytes::from)
}

fn octets(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn address(max_with_nul: usize) -> impl Strategy<Value = Address> {
    (any::<u8>(), any::<u8>(), cstr(max_with_nul)).prop_map(|(ton, npi, addr)| Address { ton, npi, addr })
}

fn tlvs() -> impl Strategy<Value = Tlvs> {
    // Vendor tags (0x1400-0x3FFF) with any value, plus well-formed known ones.
    let vendor = (0x1400u16..0x3FFF, octets(40)).prop_map(|(tag, value)| Tlv::new(Tag(tag), value));
    let known = prop_oneof![
        any::<u8>().prop_map(|v| Tlv::new(Tag::MESSAGE_STATE, vec![v])),
        cstr(64).prop_map(|v| {
            let mut t = Tlvs::new();
            t.set_receipted_message_id(&v);
            t.0.remove(0)
        }),
        any::<u16>().prop_map(|v| Tlv::new(Tag::SAR_MSG_REF_NUM, v.to_be_bytes().to_vec())),
        octets(600).prop_map(|v| Tlv::new(Tag::MESSAGE_PAYLOAD, v)),
        proptest::collection::vec(any::<u8>(), 3).prop_map(|v| Tlv::new(Tag::NETWORK_ERROR_CODE, v)),
    ];
    proptest::collection::vec(prop_oneof![vendor, known], 0..4).prop_map(Tlvs)
}

fn bind() -> impl Strategy<Value = Bind> {
    (cstr(16), cstr(9), cstr(13), any::<u8>(), address(41)).prop_map(|(s, p, t, v, a)| Bind {
        system_id: s,
        password: p,
        system_type: t,
        interface_version: v,
        address_range: a,
    })
}

fn submit_sm() -> impl Strategy<Value = SubmitSm> {
    (
        (cstr(6), address(21), address(21), any::<[u8; 3]>()),
        (cstr(17), cstr(17), any::<[u8; 4]>(), octets(254), tlvs()),
    )
        .prop_map(|((st, src, dst, f), (sched, val, g, sm, tlvs))| SubmitSm {
            service_type: st,
            source: src,
            destination: dst,
            esm_class: f[0],
            protocol_id: f[1],
            priority_flag: f[2],
            schedule_delivery_time: sched,
            validity_period: val,
            registered_delivery: g[0],
            replace_if_present_flag: g[1],
            data_coding: g[2],
            sm_default_msg_id: g[3],
            short_message: sm,
            tlvs,
        })
}

fn dest() -> impl Strategy<Value = DestAddress> {
    prop_oneof![address(21).prop_map(DestAddress::Sme), cstr(21).prop_map(DestAddress::DistributionList)]
}

fn msg_id_resp() -> impl Strategy<Value = SubmitSmResp> {
    (cstr(65), tlvs()).prop_map(|(message_id, tlvs)| SubmitSmResp { message_id, tlvs })
}

fn bind_resp() -> impl Strategy<Value = BindResp> {
    (cstr(16), tlvs()).prop_map(|(system_id, tlvs)| BindResp { system_id, tlvs })
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::GenericNack),
        Just(Body::Unbind),
        Just(Body::UnbindResp),
        Just(Body::EnquireLink),
        Just(Body::EnquireLinkResp),
        Just(Body::CancelSmResp),
        Just(Body::ReplaceSmResp),
        bind().prop_map(Body::BindTransmitter),
        bind().prop_map(Body::BindReceiver),
        bind().prop_map(Body::BindTransceiver),
        bind_resp().prop_map(Body::BindTransmitterResp),
        bind_resp().prop_map(Body::BindReceiverResp),
        bind_resp().prop_map(Body::BindTransceiverResp),
        (cstr(16), cstr(9)).prop_map(|(system_id, password)| Body::Outbind(Outbind { system_id, password })),
        submit_sm().prop_map(Body::SubmitSm),
        submit_sm().prop_map(Body::DeliverSm),
        msg_id_resp().prop_map(Body::SubmitSmResp),
        msg_id_resp().prop_map(Body::DeliverSmResp),
        msg_id_resp().prop_map(Body::DataSmResp),
        (submit_sm(), proptest::collection::vec(dest(), 1..5)).prop_map(|(s, destinations)| {
            Body::SubmitMulti(SubmitMulti {
                service_type: s.service_type,
                source: s.source,
                destinations,
                esm_class: s.esm_class,
                protocol_id: s.protocol_id,
                priority_flag: s.priority_flag,
                schedule_delivery_time: s.schedule_delivery_time,
                validity_period: s.validity_period,
                registered_delivery: s.registered_delivery,
                replace_if_present_flag: s.replace_if_present_flag,
                data_coding: s.data_coding,
                sm_default_msg_id: s.sm_default_msg_id,
                short_message: s.short_message,
                tlvs: s.tlvs,
            })
        }),
        (cstr(65), proptest::collection::vec((address(21), any::<u32>()), 0..4), tlvs()).prop_map(
            |(message_id, u, tlvs)| {
                Body::SubmitMultiResp(SubmitMultiResp {
                    message_id,
                    unsuccess_smes: u
                        .into_iter()
                        .map(|(address, s)| UnsuccessSme { address, error_status_code: CommandStatus(s) })
                        .collect(),
                    tlvs,
                })
            }
        ),
        (cstr(6), address(65), address(65), any::<[u8; 3]>(), tlvs()).prop_map(|(st, s, d, f, tlvs)| {
            Body::DataSm(DataSm {
                service_type: st,
                source: s,
                destination: d,
                esm_class: f[0],
                registered_delivery: f[1],
                data_coding: f[2],
                tlvs,
            })
        }),
        (cstr(65), address(21))
            .prop_map(|(message_id, source)| Body::QuerySm(QuerySm { message_id, source })),
        (cstr(65), cstr(17), any::<u8>(), any::<u8>()).prop_map(|(m, f, s, e)| {
            Body::QuerySmResp(QuerySmResp { message_id: m, final_date: f, message_state: s, error_code: e })
        }),
        (cstr(6), cstr(65), address(21), address(21)).prop_map(|(st, m, s, d)| {
            Body::CancelSm(CancelSm { service_type: st, message_id: m, source: s, destination: d })
        }),
        (cstr(65), address(21), cstr(17), cstr(17), any::<[u8; 2]>(), octets(254)).prop_map(
            |(m, s, sched, val, f, sm)| {
                Body::ReplaceSm(ReplaceSm {
                    message_id: m,
                    source: s,
                    schedule_delivery_time: sched,
                    validity_period: val,
                    registered_delivery: f[0],
                    sm_default_msg_id: f[1],
                    short_message: sm,
                })
            }
        ),
        (address(65), address(65), tlvs()).prop_map(|(source, esme, tlvs)| {
            Body::AlertNotification(AlertNotification { source, esme, tlvs })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_pdu_round_trips(body in body(), seq in any::<u32>(), status in prop_oneof![Just(0u32), any::<u32>()]) {
        let pdu = Pdu::with_status(CommandStatus(status), seq, body);
        let bytes = pdu.to_bytes().expect("generated values are within spec limits");
        prop_assert_eq!(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize, bytes.len());
        let back = Pdu::decode(bytes.clone()).expect("our own encoding decodes");
        prop_assert_eq!(&back, &pdu);
        // And through the framing codec, two in a row.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&bytes);
        buf.extend_from_slice(&bytes);
        let mut codec = SmppCodec::default();
        for _ in 0..2 {
            let got = codec.decode(&mut buf).expect("framing").expect("frame").expect("pdu");
            prop_assert_eq!(&got, &pdu);
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Pdu::decode(Bytes::from(bytes.clone()));
        let mut codec = SmppCodec::new(4096);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }

    #[test]
    fn corrupted_valid_pdus_never_panic(body in body(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = BytesMut::new();
        Pdu::new(1, body).encode(&mut bytes).expect("encodes");
        for (at, v) in flips {
            let i = 4 + at % (bytes.len() - 4); // keep command_length so the frame is complete
            bytes[i] = v;
        }
        let _ = Pdu::decode(bytes.freeze());
    }
}
