//! Secrets masked for printing (check-config, logs).

use smsc_api::smscd_config::{SmscdConfig, StoreConfig};

/// What a secret is printed as.
pub const MASK: &str = "***";

/// A copy with bind and account passwords and Redis URL credentials replaced by `***`.
/// Empty passwords stay empty, so "no password" is still visible.
pub fn masked(cfg: &SmscdConfig) -> SmscdConfig {
    let mut c = cfg.clone();
    for b in &mut c.binds {
        mask(&mut b.password);
    }
    for a in &mut c.accounts {
        mask(&mut a.password);
    }
    if let StoreConfig::Redis { url, .. } = &mut c.store {
        *url = mask_url(url);
    }
    c
}

fn mask(s: &mut String) {
    if !s.is_empty() {
        *s = MASK.to_string();
    }
}

/// `redis://user:pw@host:6379/0` -> `redis://user:***@host:6379/0`; `redis://pw@host` ->
/// `redis://***@host`.
fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_string() };
    let userinfo = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{MASK}"),
        None => MASK.to_string(),
    };
    format!("{scheme}://{userinfo}@{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(mask_url("redis://u:p@h:6379/0"), "redis://u:***@h:6379/0");
        assert_eq!(mask_url("rediss://p%40x@h"), "rediss://***@h");
        assert_eq!(mask_url("redis://:pw@h"), "redis://:***@h");
        assert_eq!(mask_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(mask_url("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
    }
}
