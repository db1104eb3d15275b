//! The generator against an in-process smscd (`sim` target, receipts after 0 ms): a few hundred
//! messages, every count adds up, no receipt lost or duplicated. Not a speed test.

use smsc_api::smscd_config::{AccountConfig, RoutingConfig, SmscdConfig};
use smsc_bench::{EsmeConfig, Mix};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn config() -> SmscdConfig {
    let mut c = SmscdConfig::default();
    c.server.bind_address = "127.0.0.1".into();
    c.server.port = 0;
    c.admin.bind_address = "127.0.0.1".into();
    c.admin.port = 0;
    c.accounts = vec![AccountConfig {
        system_id: "bench".into(),
        password: "benchpw".into(),
        allowed_cidrs: vec![],
        bind_types: vec![],
        max_msg_per_sec: None,
        window: 64,
        max_binds: None,
    }];
    c.routing = RoutingConfig { default_chain: vec!["sim".into()], ..Default::default() };
    c.sim.receipt_delay_ms = 0;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_against_sim_counts_add_up() {
    let cfg = Arc::new(config());
    let (_tx, reloads) = tokio::sync::watch::channel(Arc::clone(&cfg));
    let shutdown = CancellationToken::new();
    let daemon = smscd::start(cfg, reloads, shutdown.clone()).await.expect("smscd starts");

    let mut g = EsmeConfig::new(daemon.smpp_addr);
    g.binds = 2;
    g.window = 16;
    g.count = Some(120);
    g.duration = Duration::from_secs(20);
    g.drain = Duration::from_secs(20);
    g.registered_delivery = true;
    // Long messages are 3 submit_sm each; how many of each kind depends on how the two binds
    // share the 120 messages (about 5 submits per 3 messages), hence the range below.
    g.mix = Mix { gsm7: 1, ucs2: 1, long: 1 };
    let rep = tokio::task::spawn_blocking(move || smsc_bench::run(&g)).await.expect("generator thread");

    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!(rep.messages_sent, 120, "{}", rep.summary());
    let n = rep.submit_sm_sent;
    assert!((190..=210).contains(&n), "{}", rep.summary());
    assert_eq!(rep.submit_sm_ok + rep.submit_sm_failed + rep.submit_sm_unanswered, n);
    assert_eq!(rep.submit_sm_ok, n, "{}", rep.summary());
    assert_eq!(rep.resp_latency.count, n);
    assert_eq!(rep.receipts_expected, n);
    assert_eq!(rep.receipts_received, n, "{}", rep.summary());
    assert_eq!(rep.receipts_matched, n);
    assert_eq!(rep.receipts_lost, 0);
    assert_eq!(rep.receipts_duplicated, 0);
    assert_eq!(rep.receipts_unknown, 0);
    assert_eq!(rep.duplicate_message_ids, 0);
    assert_eq!(rep.receipt_latency.count, n);

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), daemon.wait()).await;
}
