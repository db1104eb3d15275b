//! Webhooks: receipts and MO sent to HTTP receivers, signed, retried until a 2xx, never lost
//! while they wait.
//!
//! A webhook is queued in the shared [`Store`](crate::store::Store) like a deliver_sm for an
//! ESME, in a queue of its own per account (`wh:{<account>}`): the same bounds
//! (`queues.max_per_account`; at the cap the upstream hears ESME_RMSGQFUL and redelivers), the
//! same consumer-style hand-out and acknowledgement, the same dead letters and ageing out. With
//! Redis any replica sends it, and one that dies holding it loses nothing: another claims it
//! after the store's claim idle time (store/redis.rs).
//!
//! Each attempt is signed afresh: `X-Smscd-Timestamp` (Unix seconds) and `X-Smscd-Signature:
//! sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the account's secret>`; a receiver
//! checks both and refuses old timestamps (replay). An answer other than 2xx, or none within
//! `http.webhooks.timeout_ms`, is retried after a backoff doubling from `min_backoff_ms` to
//! `max_backoff_ms`; after `max_attempts` the webhook is dead-lettered (counted in
//! `smscd_webhooks_total{result="dead_lettered"}`, kept in the account's dead letters).
//!
//! The client: hyper-util's pooled client over hyper-rustls (keep-alive, HTTP and HTTPS with
//! the webpki roots), both already in the build through kube.

use crate::core::Core;
use crate::metrics::ResultLabel;
use crate::store::{Delivery, DeliveryId, StoreError};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use smpp::CommandStatus;
use smsc_api::smscd_config::{StoreConfig, WebhookConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

pub const TIMESTAMP_HEADER: &str = "x-smscd-timestamp";
pub const SIGNATURE_HEADER: &str = "x-smscd-signature";

/// Poll of the queues when nothing woke us: items another replica queued wake nobody here.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// While busy, poll again at once after a batch.
const BATCH: usize = 128;
const AGE_EVERY: Duration = Duration::from_secs(60);

/// A webhook waiting in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// `POST` (JSON body) or `GET` (Kannel's dlr-url, no body).
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    /// Our message id (receipts), for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The account's webhook queue in the store; the hash tag keeps it in the account's Redis
/// Cluster slot.
pub fn queue(account: &str) -> String {
    format!("wh:{{{account}}}")
}

/// `sha256=<hex>` of `"<timestamp>.<body>"` under `secret`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length: this never fails.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Queue `hook` for `account`; `forget`: the correlation a final receipt removes in the same
/// step. The upstream's answer: 0 once queued, ESME_RMSGQFUL at the bound (it redelivers).
pub async fn enqueue(
    core: &Core,
    wake: &Notify,
    account: &str,
    hook: &Hook,
    forget: Option<(&str, &str)>,
) -> Result<(), CommandStatus> {
    if core.deliveries_closed.load(std::sync::atomic::Ordering::Acquire) {
        return Err(CommandStatus::ESME_RX_T_APPN);
    }
    let Ok(json) = serde_json::to_vec(hook) else { return Err(CommandStatus::ESME_RSYSERR) };
    let d = Delivery { pdu: Bytes::from(json), our_id: hook.id.clone() };
    let max = core.config.get().queues.max_per_account;
    let q = queue(account);
    let queued = match forget {
        Some((upstream, key)) => core.store.enqueue_final_within(&q, d, upstream, key, max).await,
        None => core.store.enqueue_within(&q, d, max).await,
    };
    match queued {
        Ok(()) => {
            count(core, "queued");
            wake.notify_one();
            Ok(())
        }
        Err(StoreError::Full) => {
            tracing::warn!(account, max, "webhook queue full: refused upstream with ESME_RMSGQFUL");
            Err(CommandStatus::ESME_RMSGQFUL)
        }
        Err(e) => {
            tracing::warn!(account, error = %e, "webhook not queued");
            Err(CommandStatus::ESME_RX_T_APPN)
        }
    }
}

fn count(core: &Core, result: &str) {
    core.metrics.webhooks.get_or_create(&ResultLabel { result: result.to_owned() }).inc();
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub fn client() -> Result<HttpClient, String> {
    let tls = crate::tls::client_config(&Default::default()).map_err(|e| e.to_string())?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https))
}

/// Sends the queued webhooks of every account until `core.stop`.
pub async fn run(core: Arc<Core>, wake: Arc<Notify>) {
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client not built: webhooks stay queued");
            return;
        }
    };
    let cfg = core.config.get().http.webhooks.clone();
    let limit = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let attempts: Arc<Mutex<HashMap<(String, DeliveryId), u32>>> = Arc::default();
    let mut aged = Instant::now() - AGE_EVERY;
    while !core.stop.is_cancelled() {
        let accounts: Vec<String> = core.accounts.all().iter().map(|a| a.system_id.clone()).collect();
        if aged.elapsed() >= AGE_EVERY {
            aged = Instant::now();
            age_out(&core, &accounts).await;
        }
        let mut got = 0;
        for account in &accounts {
            let q = queue(account);
            let free = limit.available_permits().min(BATCH);
            if free == 0 {
                break;
            }
            let items = match core.store.next_batch(&q, free).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::debug!(account = %account, error = %e, "webhook queue not read");
                    continue;
                }
            };
            got += items.len();
            for (id, d) in items {
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    let _ = core.store.nack(&q, id).await;
                    continue;
                };
                let hook: Hook = match serde_json::from_slice(&d.pdu) {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::error!(account = %account, error = %e, "unreadable queued webhook: dropped");
                        let _ = core.store.ack(&q, id).await;
                        continue;
                    }
                };
                let (core, client, attempts, account) =
                    (core.clone(), client.clone(), attempts.clone(), account.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    send_one(&core, &client, &attempts, &account, id, hook).await;
                });
            }
        }
        if got == 0 {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = core.stop.cancelled() => {}
            }
        } else if limit.available_permits() == 0 {
            // Every slot busy: wait for one rather than spin.
            tokio::select! {
                p = limit.clone().acquire_owned() => drop(p),
                _ = core.stop.cancelled() => {}
            }
        }
    }
}

async fn age_out(core: &Core, accounts: &[String]) {
    let cfg = core.config.get();
    let (StoreConfig::Memory { ttl } | StoreConfig::Redis { ttl, .. }) = &cfg.store;
    for a in accounts {
        if let Ok(n) = core.store.age_out(&queue(a), *ttl).await {
            if n > 0 {
                tracing::warn!(account = %a, dropped = n, "webhooks older than store.ttl dropped");
                core.metrics.dropped("expired", n);
            }
        }
    }
}

/// The wait before retry `attempt` (1 = the first retry).
pub fn backoff(cfg: &WebhookConfig, attempt: u32) -> Duration {
    let ms = cfg.min_backoff_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    Duration::from_millis(ms.min(cfg.max_backoff_ms.max(cfg.min_backoff_ms)))
}

async fn send_one(
    core: &Core,
    client: &HttpClient,
    attempts: &Mutex<HashMap<(String, DeliveryId), u32>>,
    account: &str,
    id: DeliveryId,
    hook: Hook,
) {
    let cfg = core.config.get();
    let secret = cfg.http.account(account).and_then(|a| a.secret.clone());
    let wh = cfg.http.webhooks.clone();
    drop(cfg);
    let q = queue(account);
    let outcome =
        attempt(client, &hook, secret.as_deref(), Duration::from_millis(wh.timeout_ms.max(1))).await;
    let key = (q.clone(), id);
    match outcome {
        Ok(()) => {
            attempts.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            if let Err(e) = core.store.ack(&q, id).await {
                tracing::warn!(account, error = %e, "webhook ack failed: may be sent twice");
            }
            count(core, "delivered");
        }
        Err(why) => {
            let n = {
                let mut a = attempts.lock().unwrap_or_else(|p| p.into_inner());
                let n = a.entry(key.clone()).or_insert(0);
                *n += 1;
                *n
            };
            if n >= wh.max_attempts.max(1) {
                attempts.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                tracing::warn!(account, url = %hook.url, id = ?hook.id, attempts = n, error = %why,
                    "webhook given up: dead-lettered");
                let keep = core.config.get().queues.dead_letters_per_account;
                if let Err(e) = core.store.dead_letter(&q, id, "attempts", keep).await {
                    tracing::warn!(account, error = %e, "webhook dead letter not stored: retrying");
                    let _ = core.store.nack(&q, id).await;
                    return;
                }
                count(core, "dead_lettered");
                return;
            }
            tracing::debug!(account, url = %hook.url, attempt = n, error = %why, "webhook failed: retrying");
            count(core, "retried");
            let wait = backoff(&wh, n);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = core.stop.cancelled() => {}
            }
            let _ = core.store.nack(&q, id).await;
        }
    }
}

/// One attempt: Ok on a 2xx answer.
async fn attempt(
    client: &HttpClient,
    hook: &Hook,
    secret: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let uri: http::Uri = hook.url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let body = Bytes::from(hook.body.clone().into_bytes());
    let method = if hook.method.eq_ignore_ascii_case("GET") { http::Method::GET } else { http::Method::POST };
    let ts = crate::sim::unix_ms() / 1000;
    let mut req = http::Request::builder().method(method.clone()).uri(uri).header(TIMESTAMP_HEADER, ts);
    if method == http::Method::POST {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    if let Some(s) = secret {
        req = req.header(SIGNATURE_HEADER, signature(s.as_bytes(), ts, &body));
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let status = tokio::time::timeout(timeout, async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read the answer to its end so the connection goes back to the pool.
        let _ = resp.into_body().collect().await;
        Ok::<_, String>(status)
    })
    .await
    .map_err(|_| "no answer in time".to_owned())??;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 key and data, split as "<timestamp>.<body>" would be:
        // HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let got = signature(b"Jefe", 0, b"");
        assert!(got.starts_with("sha256=") && got.len() == 7 + 64, "{got}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(want, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Any change of timestamp or body changes it.
        assert_ne!(signature(b"k", 1, b"x"), signature(b"k", 2, b"x"));
        assert_ne!(signature(b"k", 1, b"x"), signature(b"k", 1, b"y"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cfg = WebhookConfig { min_backoff_ms: 100, max_backoff_ms: 1000, ..Default::default() };
        let got: Vec<u64> = (1..=6).map(|n| backoff(&cfg, n).as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(queue("acct"), "wh:{acct}");
    }
}
