//! Checks of the `http:` section (the HTTP API).

use super::{at_most, file_exists, port, Findings};
use smsc_api::smscd_config::SmscdConfig;
use std::collections::HashSet;
use std::net::IpAddr;

fn url(f: &mut Findings, key: &str, u: &str) {
    let ok = u.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http") | Some("https")) && uri.host().is_some_and(|h| !h.is_empty())
    });
    if !ok {
        f.error(key, format!("`{u}` is not an absolute http:// or https:// URL"));
    }
}

pub(crate) fn http(cfg: &SmscdConfig, f: &mut Findings) {
    let h = &cfg.http;
    if !h.enabled {
        return;
    }
    port(f, "http.port", h.port);
    if h.bind_address.parse::<IpAddr>().is_err() {
        f.error("http.bind_address", format!("`{}` is not an IP address", h.bind_address));
    }
    if h.port != 0 && (h.port == cfg.admin.port || (cfg.server.plain_listener && h.port == cfg.server.port)) {
        f.error("http.port", format!("{} is already the admin or SMPP port", h.port));
    }
    if let Some(t) = &h.tls {
        file_exists(f, "http.tls.cert_file", &t.cert_file);
        file_exists(f, "http.tls.key_file", &t.key_file);
    }
    if let Some(p) = &h.tokens_file {
        file_exists(f, "http.tokens_file", p);
    }
    if !(1..=255).contains(&h.max_parts) {
        f.error("http.max_parts", "must be 1 to 255 (a concatenated message has at most 255 parts)");
    }
    if h.max_destinations == 0 {
        f.error("http.max_destinations", "must be at least 1");
    }
    if h.max_body_bytes < 1024 {
        f.error("http.max_body_bytes", "must be at least 1024");
    }
    let w = &h.webhooks;
    if w.max_attempts == 0 {
        f.error("http.webhooks.max_attempts", "must be at least 1");
    }
    if w.concurrency == 0 {
        f.error("http.webhooks.concurrency", "must be at least 1");
    }
    if w.timeout_ms == 0 {
        f.error("http.webhooks.timeout_ms", "must be at least 1");
    }
    if w.min_backoff_ms > w.max_backoff_ms {
        f.error("http.webhooks.min_backoff_ms", "must not be above max_backoff_ms");
    }
    // These size semaphores, timers and buffers: refused above sane limits, not a panic later.
    at_most(f, "http.max_destinations", h.max_destinations, 10_000, "");
    at_most(f, "http.max_body_bytes", h.max_body_bytes, 64 << 20, " bytes (64 MiB)");
    at_most(f, "http.webhooks.max_attempts", w.max_attempts, 1_000, "");
    at_most(f, "http.webhooks.concurrency", w.concurrency, 100_000, "");
    at_most(f, "http.webhooks.timeout_ms", w.timeout_ms, 3_600_000, " ms (1 hour)");
    at_most(f, "http.webhooks.max_backoff_ms", w.max_backoff_ms, 86_400_000, " ms (1 day)");
    let accounts: HashSet<&str> = cfg.accounts.iter().map(|a| a.system_id.as_str()).collect();
    let mut seen = HashSet::new();
    for (i, a) in h.accounts.iter().enumerate() {
        let k = |field: &str| format!("http.accounts[{i}].{field}");
        if !accounts.contains(a.account.as_str()) {
            f.error(k("account"), format!("`{}` is not in accounts", a.account));
        } else if !seen.insert(a.account.as_str()) {
            f.error(k("account"), format!("`{}` is listed twice", a.account));
        }
        if let Some(u) = &a.dlr_url {
            url(f, &k("dlr_url"), u);
        }
        if let Some(u) = &a.mo_url {
            url(f, &k("mo_url"), u);
        }
        if a.secret.as_deref().is_some_and(str::is_empty) {
            f.error(k("secret"), "must not be empty (leave it out to send webhooks unsigned)");
        }
        if (a.dlr_url.is_some() || a.mo_url.is_some()) && a.secret.is_none() {
            f.warn(k("secret"), format!("account `{}`: no secret, its webhooks go unsigned", a.account));
        }
        if a.tokens.iter().any(String::is_empty) {
            f.error(k("tokens"), "a token must not be empty");
        }
    }
}
