//! Routing: the first rule whose match fits (account, destination prefix, source prefix) gives
//! the chain of targets, else `routing.default_chain`. Targets are tried in order; see
//! [`crate::dispatch`] for when the next one is tried.

use smsc_api::smscd_config::RoutingConfig;
use std::sync::Arc;

/// One chain entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The built-in simulator.
    Sim,
    /// The upstream bind of this name.
    Bind(Arc<str>),
}

impl Target {
    /// `sim` or `bind:<name>`; anything else is None.
    pub fn parse(s: &str) -> Option<Target> {
        let s = s.trim();
        if s == "sim" {
            return Some(Target::Sim);
        }
        let name = s.strip_prefix("bind:")?.trim();
        (!name.is_empty()).then(|| Target::Bind(name.into()))
    }

    /// The metrics label: `sim` or the bind name.
    pub fn label(&self) -> &str {
        match self {
            Target::Sim => "sim",
            Target::Bind(n) => n,
        }
    }
}

#[derive(Debug)]
struct Rule {
    account: Option<String>,
    destination_prefix: Option<String>,
    source_prefix: Option<String>,
    chain: Arc<[Target]>,
    store_and_forward: bool,
}

#[derive(Debug)]
pub struct Router {
    rules: Vec<Rule>,
    default_chain: Arc<[Target]>,
    default_store_and_forward: bool,
}

fn chain(targets: &[String]) -> Arc<[Target]> {
    targets
        .iter()
        .filter_map(|t| {
            let parsed = Target::parse(t);
            if parsed.is_none() {
                tracing::warn!(target = %t, "routing: ignoring unknown chain target");
            }
            parsed
        })
        .collect()
}

impl Router {
    pub fn new(cfg: &RoutingConfig) -> Router {
        let rules = cfg
            .rules
            .iter()
            .map(|r| Rule {
                account: r.matches.account.clone(),
                destination_prefix: r.matches.destination_prefix.clone(),
                source_prefix: r.matches.source_prefix.clone(),
                chain: chain(&r.chain),
                store_and_forward: r.store_and_forward.unwrap_or(cfg.store_and_forward),
            })
            .collect();
        Router {
            rules,
            default_chain: chain(&cfg.default_chain),
            default_store_and_forward: cfg.store_and_forward,
        }
    }

    /// The index of the first rule matching a submit.
    fn rule_index(&self, account: &str, source: &[u8], destination: &[u8]) -> Option<usize> {
        self.rules.iter().position(|r| {
            r.account.as_deref().is_none_or(|a| a == account)
                && r.destination_prefix.as_deref().is_none_or(|p| destination.starts_with(p.as_bytes()))
                && r.source_prefix.as_deref().is_none_or(|p| source.starts_with(p.as_bytes()))
        })
    }

    fn rule(&self, account: &str, source: &[u8], destination: &[u8]) -> Option<&Rule> {
        self.rule_index(account, source, destination).and_then(|i| self.rules.get(i))
    }

    /// The chain for a submit; empty when nothing is configured.
    pub fn route(&self, account: &str, source: &[u8], destination: &[u8]) -> &Arc<[Target]> {
        self.rule(account, source, destination).map_or(&self.default_chain, |r| &r.chain)
    }

    /// The metrics label of a submit's route: `rule-<n>` for the n-th rule of `routing.rules`
    /// (from 0) that matches it, `default` for the default chain. Bounded by the config, unlike
    /// destinations.
    pub fn route_label(&self, account: &str, source: &[u8], destination: &[u8]) -> String {
        self.rule_index(account, source, destination)
            .map_or_else(|| "default".to_owned(), |i| format!("rule-{i}"))
    }

    /// Whether the route of a submit stores and forwards (see [`crate::forward`]).
    pub fn stores_and_forwards(&self, account: &str, source: &[u8], destination: &[u8]) -> bool {
        self.rule(account, source, destination)
            .map_or(self.default_store_and_forward, |r| r.store_and_forward)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smsc_api::smscd_config::{RoutingRule, RuleMatch};

    fn rule(account: Option<&str>, dst: Option<&str>, src: Option<&str>, chain: &[&str]) -> RoutingRule {
        RoutingRule {
            matches: RuleMatch {
                account: account.map(Into::into),
                destination_prefix: dst.map(Into::into),
                source_prefix: src.map(Into::into),
            },
            chain: chain.iter().map(|s| s.to_string()).collect(),
            store_and_forward: None,
        }
    }

    #[test]
    fn first_match_wins_and_default_applies() {
        let cfg = RoutingConfig {
            default_chain: vec!["sim".into()],
            rules: vec![
                rule(Some("a"), Some("31"), None, &["bind:nl", "sim"]),
                rule(None, Some("31"), Some("999"), &["bind:x"]),
                rule(None, Some("3"), None, &["bind:eu"]),
            ],
            ..Default::default()
        };
        let r = Router::new(&cfg);
        let b = |n: &str| Target::Bind(n.into());
        assert_eq!(&**r.route("a", b"1", b"3161"), &[b("nl"), Target::Sim]);
        assert_eq!(&**r.route("b", b"9991", b"3161"), &[b("x")]);
        assert_eq!(&**r.route("b", b"1", b"3161"), &[b("eu")]);
        assert_eq!(&**r.route("b", b"1", b"4412"), &[Target::Sim]);
    }

    #[test]
    fn empty_match_matches_everything_and_bad_targets_are_dropped() {
        let cfg =
            RoutingConfig { rules: vec![rule(None, None, None, &["nope", "sim"])], ..Default::default() };
        assert_eq!(&**Router::new(&cfg).route("z", b"", b""), &[Target::Sim]);
        assert_eq!(Target::parse("bind:"), None);
        assert_eq!(Target::parse(" bind:a "), Some(Target::Bind("a".into())));
    }

    #[test]
    fn store_and_forward_per_rule_defaults_to_the_routing_flag() {
        let mut off = rule(Some("a"), None, None, &["sim"]);
        off.store_and_forward = Some(false);
        let mut on = rule(Some("b"), None, None, &["sim"]);
        on.store_and_forward = Some(true);
        let inherit = rule(Some("c"), None, None, &["sim"]);
        for default in [false, true] {
            let cfg = RoutingConfig {
                default_chain: vec!["sim".into()],
                rules: vec![off.clone(), on.clone(), inherit.clone()],
                store_and_forward: default,
                ..Default::default()
            };
            let r = Router::new(&cfg);
            assert!(!r.stores_and_forwards("a", b"", b"1"));
            assert!(r.stores_and_forwards("b", b"", b"1"));
            assert_eq!(r.stores_and_forwards("c", b"", b"1"), default);
            assert_eq!(r.stores_and_forwards("zz", b"", b"1"), default, "default chain");
        }
    }
}
