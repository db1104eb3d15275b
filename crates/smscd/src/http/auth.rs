//! Who is asking: HTTP basic with an account's system_id and password, or a bearer token of
//! an account (`http.accounts[].tokens`, `http.tokens_file`). The account's address
//! allow-list applies as for a bind, and failed attempts count against the address like failed
//! binds (`server.failed_binds_per_address`).

use super::problem::Problem;
use crate::accounts::AccountState;
use crate::core::Core;
use axum::http::{header, HeaderMap};
use base64::Engine;
use smsc_api::smscd_config::SmscdConfig;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Token -> account.
type Table = Arc<HashMap<String, String>>;

/// Bearer token -> account, rebuilt when the config changes (a reload re-reads tokens_file).
pub struct Tokens {
    /// The config the table was built from, and the table.
    cached: Mutex<(Option<Arc<SmscdConfig>>, Table)>,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens { cached: Mutex::new((None, Arc::default())) }
    }
}

/// `<account>:<token>` lines, `#` comments and blank lines skipped.
pub fn parse_tokens_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(a, t)| (a.trim().to_owned(), t.trim().to_owned()))
        .filter(|(a, t)| !a.is_empty() && !t.is_empty())
        .collect()
}

impl Tokens {
    fn table(&self, cfg: &Arc<SmscdConfig>) -> Table {
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.0.as_ref().is_some_and(|old| Arc::ptr_eq(old, cfg)) {
            return c.1.clone();
        }
        let mut map = HashMap::new();
        for a in &cfg.http.accounts {
            for t in &a.tokens {
                map.insert(t.clone(), a.account.clone());
            }
        }
        if let Some(path) = &cfg.http.tokens_file {
            match std::fs::read_to_string(path) {
                Ok(text) => map.extend(parse_tokens_file(&text).into_iter().map(|(a, t)| (t, a))),
                Err(e) => {
                    tracing::warn!(path, error = %e, "http.tokens_file not read: its tokens are refused")
                }
            }
        }
        let map = Arc::new(map);
        *c = (Some(cfg.clone()), map.clone());
        map
    }

    /// The account of `token`, compared in constant time against each known token.
    fn account_of(&self, cfg: &Arc<SmscdConfig>, token: &str) -> Option<String> {
        let table = self.table(cfg);
        let mut found = None;
        for (t, a) in table.iter() {
            if bool::from(t.as_bytes().ct_eq(token.as_bytes())) {
                found = Some(a.clone());
            }
        }
        found
    }
}

/// The credentials a request carries: (system_id, Some(password)) for basic, (account, None)
/// for a known bearer token.
fn credentials(
    tokens: &Tokens,
    cfg: &Arc<SmscdConfig>,
    headers: &HeaderMap,
) -> Option<(String, Option<Vec<u8>>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, pass) = text.split_once(':')?;
        return Some((user.to_owned(), Some(pass.as_bytes().to_vec())));
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return tokens.account_of(cfg, rest).map(|a| (a, None));
    }
    None
}

/// Authenticate with the `Authorization` header.
pub fn from_headers(
    core: &Core,
    tokens: &Tokens,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Result<Arc<AccountState>, Problem> {
    let cfg = core.config.get();
    // No credentials at all is no failed attempt (clients often ask first without).
    let presented = headers.contains_key(header::AUTHORIZATION);
    guard(core, peer, presented, |_| credentials(tokens, &cfg, headers))
}

/// Authenticate with a system_id and password given otherwise (Kannel's username/password).
pub fn with_password(
    core: &Core,
    user: &str,
    password: &str,
    peer: IpAddr,
) -> Result<Arc<AccountState>, Problem> {
    guard(core, peer, true, |_| Some((user.to_owned(), Some(password.as_bytes().to_vec()))))
}

fn guard(
    core: &Core,
    peer: IpAddr,
    presented: bool,
    creds: impl FnOnce(()) -> Option<(String, Option<Vec<u8>>)>,
) -> Result<Arc<AccountState>, Problem> {
    let (limit, window) = {
        let cfg = core.config.get();
        (cfg.server.failed_binds_per_address, Duration::from_secs(cfg.server.failed_bind_window_secs))
    };
    if core.peers.bind_blocked(peer, limit, window) {
        return Err(Problem::unauthorized());
    }
    let decided = match creds(()) {
        Some((user, pass)) => core.accounts.authenticate(&user, pass.as_deref(), Some(peer)).map_err(Some),
        None => Err(None),
    };
    decided.map_err(|refusal| {
        if presented && refusal.is_none_or(|r| r.is_auth_failure()) {
            core.peers.bind_failed(peer, window);
        }
        if let Some(r) = refusal {
            tracing::info!(%peer, reason = r.as_str(), "HTTP API request refused");
        }
        Problem::unauthorized()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_lines() {
        let got = parse_tokens_file("# comment\n\nacme: t0k:en \nbad line\n:x\nb:\nother:z\n");
        assert_eq!(got, [("acme".to_owned(), "t0k:en".to_owned()), ("other".to_owned(), "z".to_owned())]);
    }
}
