//! Sessions and timing against an upstream carrier on our own SMSC session (tests/common
//! `Carrier`): an ESME unbind that still gets every submit_sm_resp, one time budget per submit
//! with no failover after an unknown outcome, and an upstream rate the carrier can count on.

mod common;

use common::*;
use futures::future::join_all;
use smpp::session::{BindKind, CloseReason};
use smpp::CommandStatus;
use std::time::Duration;

async fn relay_to(
    carrier: &Carrier,
    chain: &[&str],
    tweak: impl FnOnce(&mut smsc_api::smscd_config::SmscdConfig),
) -> Daemon {
    let mut cfg = base_config(vec![account("esme", "secret")]);
    cfg.binds = vec![upstream("c", carrier.port, "relay", "pw")];
    cfg.routing.default_chain = chain.iter().map(|s| s.to_string()).collect();
    tweak(&mut cfg);
    let want = cfg.binds[0].binds;
    let d = Daemon::start(cfg).await;
    let core = d.core().clone();
    eventually("bound to the carrier", Duration::from_secs(10), || {
        core.upstreams.get("c").is_some_and(|u| u.bound_sessions() == want)
    })
    .await;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esme_unbind_gets_every_submit_resp_in_flight_first() {
    let carrier = Carrier::start(Answer::After(Duration::from_millis(400))).await;
    let d = relay_to(&carrier, &["bind:c"], |_| {}).await;
    let e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let n = 8;
    let inflight: Vec<_> = (0..n)
        .map(|i| {
            let s = e.session.clone();
            tokio::spawn(async move { s.request(submit_text("3161", 0, &format!("m{i}"))).await })
        })
        .collect();
    // Every submit is at the slow carrier, none answered yet: now the ESME unbinds.
    eventually("submits at the carrier", Duration::from_secs(5), || carrier.count() == n).await;
    let reason = within("unbind", e.session.unbind()).await;
    for (i, t) in inflight.into_iter().enumerate() {
        let r = within("submit", t).await.expect("task");
        let resp =
            r.unwrap_or_else(|err| panic!("submit {i} got no submit_sm_resp before unbind_resp: {err}"));
        assert_eq!(resp.command_status, CommandStatus::ESME_ROK, "submit {i}");
    }
    assert_eq!(reason, CloseReason::LocalUnbind, "unbind_resp came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_submit_gets_a_transient_error_within_the_budget_and_no_failover() {
    let carrier = Carrier::start(Answer::Never).await;
    let d = relay_to(&carrier, &["bind:c", "sim"], |c| {
        c.server.submit_timeout_ms = 1000;
        c.binds[0].window = 1;
    })
    .await;
    let e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    let started = tokio::time::Instant::now();
    // `sent` takes the carrier's only window slot and is never answered; `queued` waits for
    // that slot within its own budget.
    let sent = {
        let s = e.session.clone();
        tokio::spawn(async move { s.request(submit_text("3161", 0, "sent")).await })
    };
    eventually("first submit at the carrier", Duration::from_secs(5), || carrier.count() == 1).await;
    let queued = within("queued", e.session.request(submit_text("3161", 0, "queued"))).await.expect("resp");
    let sent = within("sent", sent).await.expect("task").expect("resp");
    let took = started.elapsed();
    // The ESME's own timer would be around the budget: both answers came before it ran out.
    assert!(took < Duration::from_millis(1500), "answers took {took:?}, budget 1 s");
    // The carrier may have it: not sent elsewhere, a transient error instead.
    assert_eq!(sent.command_status, CommandStatus::ESME_RSYSERR);
    // Sent to the carrier once the first one's slot freed (and unanswered too), or out of
    // budget while waiting: transient either way, and never on to the sim.
    assert!(
        matches!(queued.command_status, CommandStatus::ESME_RSYSERR | CommandStatus::ESME_RTHROTTLED),
        "queued: {}",
        queued.command_status
    );
    let m = d.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_submits_total", &["route=\"sim\"", "ESME_ROK"]), 0.0, "{m}");
    assert!(
        metric_sum(&m, "smscd_upstream_submits_total", &["upstream=\"c\"", "status=\"timeout\""]) >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_rate_holds_in_every_second_across_its_sessions() {
    let carrier = Carrier::start(Answer::After(Duration::ZERO)).await;
    let rate = 10;
    let d = relay_to(&carrier, &["bind:c"], |c| {
        c.binds[0].max_msg_per_sec = Some(rate);
        c.binds[0].binds = 2;
        c.binds[0].window = 50;
    })
    .await;
    let e = bind(d.smpp, BindKind::Transceiver, "esme", "secret").await.expect("bind");
    // A burst of three seconds' worth at once.
    let burst = (3 * rate) as usize;
    let answers = within(
        "burst",
        join_all((0..burst).map(|i| e.session.request(submit_text("3161", 0, &format!("b{i}"))))),
    )
    .await;
    let mut ok = 0;
    for a in answers {
        let status = a.expect("answered").command_status;
        assert!(
            matches!(status, CommandStatus::ESME_ROK | CommandStatus::ESME_RTHROTTLED),
            "unexpected {status}"
        );
        ok += usize::from(status.is_ok());
    }
    let got = carrier.count();
    assert_eq!(got, ok, "the carrier got exactly the acknowledged submits");
    assert!(got > rate as usize, "paced rather than refused: {got} sent");
    // One rate for the bind, not one per session; one extra for arrival jitter at the edges.
    let peak = carrier.max_per_second();
    assert!(peak <= rate as usize + 1, "{peak} submits reached the carrier within one second (rate {rate})");
}

/// One thread: tasks run in the order they were spawned, so the order in which submits start
/// waiting for the window is known.
#[tokio::test(flavor = "current_thread")]
async fn submits_waiting_for_a_window_slot_get_it_first_come_first_served() {
    let carrier = Carrier::start(Answer::Never).await;
    let d = relay_to(&carrier, &["bind:c"], |c| c.binds[0].window = 1).await;
    let core = d.core().clone();
    let up = core.upstreams.get("c").expect("upstream c");
    let send_by = tokio::time::Instant::now() + Duration::from_secs(20);
    let sm = |text: &str| match submit_text("3161", 0, text) {
        smpp::Body::SubmitSm(sm) => sm,
        other => panic!("{other:?}"),
    };
    // "a" takes the only slot; the rest queue behind it in this order.
    let names: Vec<String> = (0..8).map(|i| format!("w{i}")).collect();
    let mut tasks = Vec::new();
    for name in std::iter::once("a".to_string()).chain(names.iter().cloned()) {
        let (core, up, sm) = (core.clone(), up.clone(), sm(&name));
        tasks.push(tokio::spawn(async move { up.submit(&core, sm, send_by).await }));
        tokio::task::yield_now().await;
    }
    eventually("a at the carrier", Duration::from_secs(5), || carrier.count() == 1).await;
    // The answer to "a" frees the slot; "late" comes right after, when the slot is free for
    // anyone polling for it, yet it waits behind those who were already waiting.
    assert!(carrier.answer_oldest(), "a held");
    let first = tasks.remove(0);
    within("a answered", first).await.expect("task").expect("a accepted");
    let late = {
        let (core, up, sm) = (core.clone(), up.clone(), sm("late"));
        tokio::spawn(async move { up.submit(&core, sm, send_by).await })
    };
    tasks.push(late);
    // Each answer frees the slot for the next waiter, which the carrier then holds.
    for n in 2..=names.len() + 2 {
        eventually("the next submit at the carrier", Duration::from_secs(5), || carrier.count() == n).await;
        assert!(carrier.answer_oldest(), "a held submit to answer");
    }
    for t in tasks {
        within("submit", t).await.expect("task").expect("accepted");
    }
    let mut want = vec!["a".to_string()];
    want.extend(names);
    want.push("late".into());
    assert_eq!(carrier.texts(), want, "served in the order they waited");
}
