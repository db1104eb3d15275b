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
    for a in &mut c.http.accounts {
        if let Some(s) = &mut a.secret {
            mask(s);
        }
        a.tokens.iter_mut().for_each(mask);
    }
    if let StoreConfig::Redis { url, sentinel, cluster, .. } = &mut c.store {
        *url = mask_url(url);
        if let Some(s) = sentinel {
            s.password.iter_mut().chain(s.sentinel_password.iter_mut()).for_each(mask);
        }
        if let Some(c) = cluster {
            c.password.iter_mut().for_each(mask);
        }
    }
    c
}

fn mask(s: &mut String) {
    if !s.is_empty() {
        *s = MASK.to_string();
    }
}

/// Every password form a Redis URL can carry, masked: the userinfo (`redis://user:pw@host` ->
/// `redis://user:***@host`, `redis://pw@host` -> `redis://***@host`, also in `unix://` URLs) and
/// query parameters that hold one (`unix:///run/redis.sock?pass=pw`, `redis://h/0?password=pw`
/// -> `...?pass=***`). Names are matched case-insensitively, percent-encoded or not.
fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{MASK}@{host}"),
            None => format!("{MASK}@{host}"),
        },
        None => authority.to_string(),
    };
    let (path, query) = tail.split_at(tail.find(['?', '#']).unwrap_or(tail.len()));
    let Some(q) = query.strip_prefix('?') else { return format!("{scheme}://{authority}{path}{query}") };
    let (q, fragment) = q.split_at(q.find('#').unwrap_or(q.len()));
    let params: Vec<String> = q
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if is_secret_param(k) && !v.is_empty() => format!("{k}={MASK}"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{scheme}://{authority}{path}?{}{fragment}", params.join("&"))
}

/// Query parameters redis clients read a password from.
fn is_secret_param(name: &str) -> bool {
    let n = percent_decode(name).to_ascii_lowercase();
    matches!(n.as_str(), "pass" | "password" | "passwd" | "pwd" | "auth" | "requirepass")
}

/// `%XX` sequences decoded (a malformed one is kept as it is); `+` stays.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |at: usize| b.get(at).and_then(|c| char::from(*c).to_digit(16));
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

    /// Issue 14: every password form of a Redis URL is masked, not only `user:pass@`.
    #[test]
    fn every_password_form() {
        assert_eq!(
            mask_url("unix:///run/redis.sock?db=1&pass=s3cret"),
            "unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(mask_url("unix:///run/r.sock?PASS=s3cret&user=u"), "unix:///run/r.sock?PASS=***&user=u");
        assert_eq!(mask_url("redis://h:6379/0?password=s3cret"), "redis://h:6379/0?password=***");
        assert_eq!(mask_url("redis://h?password=s3cret#f"), "redis://h?password=***#f");
        assert_eq!(mask_url("rediss://u:s3cret@h/0?password=s3cret"), "rediss://u:***@h/0?password=***");
        assert_eq!(mask_url("unix://u:s3cret@/run/r.sock"), "unix://u:***@/run/r.sock");
        assert_eq!(mask_url("redis://h/0?db=2&protocol=resp3"), "redis://h/0?db=2&protocol=resp3");
        for url in [
            "unix:///run/redis.sock?pass=s3cret",
            "redis://user:s3cret@h:6379",
            "redis://h/0?password=s3cret",
            "redis://h/0?pass%77ord=s3cret&pwd=s3cret",
            "rediss://s3cret@h?auth=s3cret",
        ] {
            let cfg = SmscdConfig {
                store: StoreConfig::Redis {
                    url: url.into(),
                    sentinel: None,
                    cluster: None,
                    wait: None,
                    key_prefix: "p".into(),
                    ttl: std::time::Duration::from_secs(1),
                },
                ..SmscdConfig::default()
            };
            let shown = format!("{:?}", masked(&cfg));
            assert!(!shown.contains("s3cret"), "{url}: {shown}");
        }
    }

    /// Issue 18: the Sentinel and Cluster forms' passwords are masked too.
    #[test]
    fn sentinel_and_cluster_passwords() {
        use smsc_api::smscd_config::{RedisClusterConfig, RedisSentinelConfig};
        let sentinel = RedisSentinelConfig {
            master_name: "m".into(),
            sentinels: vec!["h:26379".into()],
            username: None,
            password: Some("s3cret".into()),
            sentinel_password: Some("s3cret2".into()),
            tls: false,
            db: 0,
        };
        let cluster = RedisClusterConfig {
            nodes: vec!["h:6379".into()],
            username: Some("u".into()),
            password: Some("s3cret".into()),
            tls: false,
        };
        for (sentinel, cluster) in [(Some(sentinel), None), (None, Some(cluster))] {
            let cfg = SmscdConfig {
                store: StoreConfig::Redis {
                    url: String::new(),
                    sentinel,
                    cluster,
                    wait: None,
                    key_prefix: "p".into(),
                    ttl: std::time::Duration::from_secs(1),
                },
                ..SmscdConfig::default()
            };
            let shown = format!("{:?}", masked(&cfg));
            assert!(!shown.contains("s3cret") && shown.contains(MASK), "{shown}");
        }
    }
}
