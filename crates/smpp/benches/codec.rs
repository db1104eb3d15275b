//! Codec micro-benchmark: decode and encode of submit_sm and deliver_sm (a receipt), in PDUs/s.
//! Run with `make bench-codec` (or `cargo bench -p smpp --bench codec`); figures go to
//! docs/benchmarks.md.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use smpp::*;

fn submit_sm() -> Pdu {
    let mut tlvs = Tlvs::new();
    tlvs.set_user_message_reference(7);
    Pdu::new(
        123_456,
        Body::SubmitSm(SubmitSm {
            source: Address::new(5, 0, "SMSCOP"),
            destination: Address::new(1, 1, "447700900123"),
            registered_delivery: 1,
            short_message: Bytes::from_static(b"Your verification code is 123456. It expires in 10 minutes."),
            tlvs,
            ..Default::default()
        }),
    )
}

fn deliver_sm_receipt() -> Pdu {
    let mut tlvs = Tlvs::new();
    tlvs.set_receipted_message_id(b"5f1c0a2b3d4e");
    tlvs.set_message_state(2);
    Pdu::new(
        99,
        Body::DeliverSm(DeliverSm {
            source: Address::new(1, 1, "447700900123"),
            destination: Address::new(5, 0, "SMSCOP"),
            esm_class: esm_class::DELIVERY_RECEIPT,
            short_message: Bytes::from_static(
                b"id:5f1c0a2b3d4e sub:001 dlvrd:001 submit date:2611251200 done date:2611251200 stat:DELIVRD err:000 text:Your verification",
            ),
            tlvs,
            ..Default::default()
        }),
    )
}

fn bench(c: &mut Criterion) {
    for (name, pdu) in [("submit_sm", submit_sm()), ("deliver_sm", deliver_sm_receipt())] {
        let bytes = pdu.to_bytes().expect("bench PDU encodes");
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        g.bench_function("decode", |b| b.iter(|| Pdu::decode(black_box(bytes.clone()))));
        let mut buf = BytesMut::with_capacity(4096);
        g.bench_function("encode", |b| {
            b.iter(|| {
                buf.clear();
                black_box(&pdu).encode(&mut buf).map(|_| buf.len())
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
