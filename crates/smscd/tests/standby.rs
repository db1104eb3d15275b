//! Active/standby gating: a replica that does not hold the Lease refuses ESME binds with
//! ESME_RBINDFAIL and opens no upstream bind, stays Ready, and starts acting the moment it leads;
//! losing the lead drops ESME sessions and unbinds upstream. The leadership signal is driven by
//! hand here (the Lease election itself is tested on the real control plane in
//! tests/e2e/tests/leader.rs).

mod common;

use common::*;
use smpp::session::{BindKind, SessionError};
use smpp::{Body, CommandStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn refused(r: Result<Esme, SessionError>) -> CommandStatus {
    match r {
        Err(SessionError::BindRejected(s)) => s,
        Err(e) => panic!("bind failed otherwise: {e}"),
        Ok(_) => panic!("bind accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_refuses_binds_and_stays_off_the_upstream_until_it_leads() {
    // The upstream allows a single bind for our system_id, as a real single-bind carrier would.
    let mut carrier_account = account("relay", "rpw");
    carrier_account.max_binds = Some(1);
    let carrier = Daemon::start(base_config(vec![carrier_account])).await;
    let bound_at_carrier = carrier.core().accounts.get("relay").expect("carrier account");

    let mut cfg = base_config(vec![account("esme", "pw")]);
    cfg.binds = vec![upstream("carrier", carrier.smpp.port(), "relay", "rpw")];
    cfg.routing.default_chain = vec!["bind:carrier".into()];
    let cfg = Arc::new(cfg);
    let (_reload, reloads) = watch::channel(cfg.clone());
    let (lead, leadership) = watch::channel(false);
    let token = CancellationToken::new();
    let relay = smscd::daemon::start_with_leadership(cfg, reloads, token.clone(), Some(leadership))
        .await
        .expect("relay starts");

    // Standby: Ready (the PDB counts it), refuses binds, no upstream bind.
    assert_eq!(http_get(relay.admin_addr, "/readyz").await.0, 200);
    let status = refused(bind(relay.smpp_addr, BindKind::Transceiver, "esme", "pw").await);
    assert_eq!(status, CommandStatus::ESME_RBINDFAIL);
    assert_eq!(bound_at_carrier.binds(), 0, "a standby must not bind upstream");

    // Leading: binds upstream and serves an ESME end to end, receipt included.
    lead.send(true).expect("leadership receiver alive");
    eventually("upstream bound by the leader", Duration::from_secs(10), || bound_at_carrier.binds() == 1)
        .await;
    let mut esme = bind(relay.smpp_addr, BindKind::Transceiver, "esme", "pw").await.expect("leader accepts");
    let resp = within("submit", esme.session.request(submit("447700900001", 1))).await.expect("submit");
    assert_eq!(resp.command_status, CommandStatus::ESME_ROK);
    let Body::SubmitSmResp(r) = resp.body else { panic!("not a submit_sm_resp") };
    let our_id = String::from_utf8_lossy(&r.message_id).into_owned();
    let receipt = within("receipt", esme.delivered.recv()).await.expect("receipt delivered");
    assert_eq!(receipt_id(&receipt), our_id);

    // Lost the lead: the ESME session is dropped, the upstream unbound, binds refused again.
    lead.send(false).expect("leadership receiver alive");
    within("ESME session dropped on step-down", esme.session.closed()).await;
    eventually("upstream unbound on step-down", Duration::from_secs(10), || bound_at_carrier.binds() == 0)
        .await;
    let status = refused(bind(relay.smpp_addr, BindKind::Transceiver, "esme", "pw").await);
    assert_eq!(status, CommandStatus::ESME_RBINDFAIL);
    assert_eq!(http_get(relay.admin_addr, "/readyz").await.0, 200, "the standby stays Ready");

    token.cancel();
    within("relay shutdown", relay.wait()).await.expect("relay ended cleanly");
}
