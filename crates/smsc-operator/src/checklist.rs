//! The scale-out checklist and the topology it allows. Pure: plain inputs, no API calls.

use smsc_api::crd::{ChecklistItem, ChecklistItemName, Topology};

/// One upstream as the checklist sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamBinds {
    pub name: String,
    pub binds_per_replica: i32,
    /// None: the upstream sets no limit.
    pub max_binds: Option<i32>,
}

/// Everything the checklist looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChecklistInput {
    /// The most replicas that can run: `autoscaling.maxReplicas` when autoscaling, else `replicas`.
    pub max_replicas: i32,
    /// The topology asked for (`spec.topology`).
    pub topology: Topology,
    pub upstreams: Vec<UpstreamBinds>,
    pub dlr_store_shared: bool,
    /// A route holds submits (store-and-forward): they live in the same store.
    pub store_and_forward: bool,
    pub load_balancer_pins_connections: bool,
    pub esmes_reconnect_with_backoff: bool,
    pub termination_grace_period_seconds: i64,
    pub pre_stop_sleep_seconds: i64,
    pub drain_seconds: i64,
}

/// Every item, in the order of [`ChecklistItemName::ALL`].
pub fn evaluate(input: &ChecklistInput) -> Vec<ChecklistItem> {
    ChecklistItemName::ALL
        .iter()
        .map(|&name| {
            let (satisfied, message) = match name {
                ChecklistItemName::UpstreamBindCapacity => upstream_capacity(input),
                ChecklistItemName::SharedDlrStore => shared_store(input),
                ChecklistItemName::LoadBalancerPinsConnections => declared(
                    input.load_balancer_pins_connections,
                    "spec.scaleOutChecklist.loadBalancerPinsConnections",
                    "the load balancer keeps each TCP connection on one replica",
                ),
                ChecklistItemName::EsmesReconnectWithBackoff => declared(
                    input.esmes_reconnect_with_backoff,
                    "spec.scaleOutChecklist.esmesReconnectWithBackoff",
                    "ESMEs rebind with backoff after a dropped connection",
                ),
                ChecklistItemName::GracePeriodCoversDrain => grace_period(input),
            };
            ChecklistItem { name, satisfied, message }
        })
        .collect()
}

fn upstream_capacity(input: &ChecklistInput) -> (bool, String) {
    let short: Vec<String> = input
        .upstreams
        .iter()
        .filter_map(|u| {
            let max = u.max_binds?;
            let needed = i64::from(input.max_replicas) * i64::from(u.binds_per_replica);
            (needed > i64::from(max)).then(|| {
                format!(
                    "upstream {} allows {max} binds but {} replicas x {} binds per replica need {needed}",
                    u.name, input.max_replicas, u.binds_per_replica
                )
            })
        })
        .collect();
    if short.is_empty() {
        (
            true,
            format!(
                "every upstream allows {} replicas' binds (rollouts too: smscd holds a bind permit per \
                 session, so a draining Pod's binds count until it has unbound)",
                input.max_replicas
            ),
        )
    } else {
        (false, short.join("; "))
    }
}

/// The memory store holds receipts owed in one process: more than one replica, or a standby
/// taking over, would lose them, so both need the shared store (smscd itself refuses
/// `leader_election` with the memory store).
fn shared_store(input: &ChecklistInput) -> (bool, String) {
    match (input.dlr_store_shared, input.max_replicas > 1) {
        (true, _) => (true, "the DLR store is Redis, shared by every replica".into()),
        (false, true) if input.store_and_forward => (
            false,
            format!(
                "{} replicas need a shared DLR store (spec.dlrStore.type: Redis); with Memory a receipt \
                 arriving on another replica is lost, and submits held by store-and-forward on a replica \
                 that goes away are lost with it",
                input.max_replicas
            ),
        ),
        (false, true) => (
            false,
            format!(
                "{} replicas need a shared DLR store (spec.dlrStore.type: Redis); with Memory a receipt \
                 arriving on another replica is lost",
                input.max_replicas
            ),
        ),
        (false, false) if input.topology == Topology::ActiveStandby => (
            false,
            "ActiveStandby needs a shared DLR store (spec.dlrStore.type: Redis); with Memory a standby \
             taking over has none of the receipts owed"
                .into(),
        ),
        (false, false) if input.store_and_forward => (
            true,
            "one replica: the in-memory DLR store is enough (receipts owed and submits held by \
             store-and-forward at a restart are lost)"
                .into(),
        ),
        (false, false) => (
            true,
            "one replica: the in-memory DLR store is enough (receipts owed at a restart are lost)".into(),
        ),
    }
}

fn declared(ticked: bool, field: &str, what: &str) -> (bool, String) {
    if ticked {
        (true, format!("declared: {what}"))
    } else {
        (false, format!("not declared: set {field} once {what}"))
    }
}

fn grace_period(input: &ChecklistInput) -> (bool, String) {
    let needed = input.pre_stop_sleep_seconds + input.drain_seconds;
    let have = input.termination_grace_period_seconds;
    if have >= needed {
        (
            true,
            format!(
                "terminationGracePeriodSeconds {have} covers preStop {}s + drain {}s",
                input.pre_stop_sleep_seconds, input.drain_seconds
            ),
        )
    } else {
        (
            false,
            format!(
                "terminationGracePeriodSeconds {have} is shorter than preStop {}s + drain {}s",
                input.pre_stop_sleep_seconds, input.drain_seconds
            ),
        )
    }
}

/// How the Deployment replaces Pods (issue 13 item 15: bind capacity during rollouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// maxSurge 1, maxUnavailable 0: a new Pod is Ready before an old one goes.
    Surge,
    /// maxSurge 0, maxUnavailable 1: an old Pod goes first. Its binds are given back (smscd's
    /// bind permits in the shared store) when it has drained, and only then can its successor
    /// bind and become Ready. A surge Pod could not: it would wait for a permit, unready, and
    /// the rollout would never proceed.
    ReplaceFirst,
    /// Every old Pod has terminated before a new one starts: with the memory store the permits
    /// are per Pod, so only this keeps a draining Pod's binds from adding to its successor's.
    Recreate,
}

/// [`Rollout::Surge`] unless one more active/active Pod than the most that can run would need
/// more binds than some upstream allows (`(max_replicas + 1) x bindsPerReplica > maxBinds`);
/// then the old Pod goes first. A standby opens no upstream bind, so active/standby always surges
/// (the permits keep the active binds within maxBinds; a new leader waits for its predecessor's
/// permits while Ready, smscd's readiness meaning "alive" under a Lease, so nothing stalls).
pub fn rollout(topology: Topology, input: &ChecklistInput) -> Rollout {
    let surge_fits = |u: &UpstreamBinds| {
        u.max_binds.is_none_or(|max| {
            (i64::from(input.max_replicas) + 1) * i64::from(u.binds_per_replica) <= i64::from(max)
        })
    };
    match topology {
        Topology::ActiveActive if !input.upstreams.iter().all(surge_fits) => {
            if input.dlr_store_shared {
                Rollout::ReplaceFirst
            } else {
                Rollout::Recreate
            }
        }
        _ => Rollout::Surge,
    }
}

/// What the operator runs, given the asked topology and the checklist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run with this topology (ActiveActive or ActiveStandby, never Auto).
    Run(Topology),
    /// `asked` cannot run: ActiveActive asked for explicitly while items are unmet, or any
    /// topology without the shared DLR store it needs (SharedDlrStore unmet). Touch nothing.
    Refused { asked: Topology, unmet: Vec<ChecklistItemName> },
}

impl Decision {
    /// The Degraded condition's reason and Event reason while refused: `<asked>Refused`.
    pub fn refused_reason(&self) -> Option<String> {
        match self {
            Decision::Refused { asked, .. } => Some(format!("{}Refused", asked.as_str())),
            Decision::Run(_) => None,
        }
    }

    /// What is refused and why, for conditions, Events and errors.
    pub fn refused_note(&self) -> Option<String> {
        match self {
            Decision::Refused { asked, unmet } => {
                Some(format!("topology {} refused: unmet checklist items {}", asked.as_str(), names(unmet)))
            }
            Decision::Run(_) => None,
        }
    }
}

/// `dlr_store_shared`: without the shared store a single replica runs without election
/// (ActiveActive), whatever else is unmet: smscd refuses leader_election with the memory store.
pub fn decide(asked: Topology, items: &[ChecklistItem], dlr_store_shared: bool) -> Decision {
    let unmet: Vec<ChecklistItemName> = items.iter().filter(|i| !i.satisfied).map(|i| i.name).collect();
    if unmet.contains(&ChecklistItemName::SharedDlrStore) {
        return Decision::Refused { asked, unmet };
    }
    if !dlr_store_shared {
        return Decision::Run(Topology::ActiveActive);
    }
    match asked {
        Topology::ActiveStandby => Decision::Run(Topology::ActiveStandby),
        Topology::Auto if unmet.is_empty() => Decision::Run(Topology::ActiveActive),
        Topology::Auto => Decision::Run(Topology::ActiveStandby),
        Topology::ActiveActive if unmet.is_empty() => Decision::Run(Topology::ActiveActive),
        Topology::ActiveActive => Decision::Refused { asked, unmet },
    }
}

/// `A, B` for messages.
pub fn names(items: &[ChecklistItemName]) -> String {
    items.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passing() -> ChecklistInput {
        ChecklistInput {
            max_replicas: 2,
            topology: Topology::Auto,
            upstreams: vec![UpstreamBinds { name: "alpha".into(), binds_per_replica: 1, max_binds: Some(2) }],
            dlr_store_shared: true,
            store_and_forward: false,
            load_balancer_pins_connections: true,
            esmes_reconnect_with_backoff: true,
            termination_grace_period_seconds: 45,
            pre_stop_sleep_seconds: 10,
            drain_seconds: 30,
        }
    }

    fn unmet(input: &ChecklistInput) -> Vec<ChecklistItemName> {
        evaluate(input).into_iter().filter(|i| !i.satisfied).map(|i| i.name).collect()
    }

    #[test]
    fn all_five_items_in_order_and_all_pass() {
        let items = evaluate(&passing());
        let names: Vec<_> = items.iter().map(|i| i.name).collect();
        assert_eq!(names, ChecklistItemName::ALL.to_vec());
        assert!(items.iter().all(|i| i.satisfied && !i.message.is_empty()), "{items:?}");
        assert_eq!(decide(Topology::Auto, &items, true), Decision::Run(Topology::ActiveActive));
        assert_eq!(decide(Topology::ActiveActive, &items, true), Decision::Run(Topology::ActiveActive));
        assert_eq!(decide(Topology::ActiveStandby, &items, true), Decision::Run(Topology::ActiveStandby));
    }

    #[test]
    fn bind_capacity_uses_replicas_times_binds_per_replica() {
        let mut i = passing();
        i.upstreams[0].binds_per_replica = 2;
        assert_eq!(unmet(&i), vec![ChecklistItemName::UpstreamBindCapacity]);
        let msg = evaluate(&i)[0].message.clone();
        assert!(msg.contains("alpha") && msg.contains("need 4"), "{msg}");
        i.upstreams[0].max_binds = None;
        assert!(unmet(&i).is_empty());
        i.upstreams[0].max_binds = Some(4);
        assert!(unmet(&i).is_empty());
    }

    #[test]
    fn a_surge_pod_runs_only_where_its_binds_fit() {
        let mut i = passing();
        let aa = Topology::ActiveActive;
        // 2 replicas x 1 bind of 2 allowed: a third Pod would need a third bind.
        assert_eq!(rollout(aa, &i), Rollout::ReplaceFirst);
        assert_eq!(rollout(Topology::ActiveStandby, &i), Rollout::Surge);
        i.upstreams[0].max_binds = Some(3);
        assert_eq!(rollout(aa, &i), Rollout::Surge);
        i.upstreams[0].max_binds = None;
        assert_eq!(rollout(aa, &i), Rollout::Surge);
        // One replica on the memory store: its permits are its own, so nothing may overlap.
        i.max_replicas = 1;
        i.dlr_store_shared = false;
        i.upstreams[0].max_binds = Some(1);
        assert_eq!(rollout(aa, &i), Rollout::Recreate);
        i.upstreams[0].max_binds = Some(2);
        assert_eq!(rollout(aa, &i), Rollout::Surge);
    }

    #[test]
    fn single_bind_upstream_fails_only_with_more_than_one_replica() {
        let mut i = passing();
        i.upstreams[0].max_binds = Some(1);
        assert_eq!(unmet(&i), vec![ChecklistItemName::UpstreamBindCapacity]);
        i.max_replicas = 1;
        assert!(unmet(&i).is_empty());
    }

    #[test]
    fn memory_store_is_fine_for_one_replica_only() {
        let mut i = passing();
        i.dlr_store_shared = false;
        assert_eq!(unmet(&i), vec![ChecklistItemName::SharedDlrStore]);
        i.max_replicas = 1;
        assert!(unmet(&i).is_empty());
    }

    #[test]
    fn store_and_forward_with_replicas_needs_the_shared_store_and_says_why() {
        let mut i = passing();
        i.store_and_forward = true;
        assert!(unmet(&i).is_empty(), "Redis: fine");
        i.dlr_store_shared = false;
        assert_eq!(unmet(&i), vec![ChecklistItemName::SharedDlrStore]);
        let msg = evaluate(&i)[1].message.clone();
        assert!(msg.contains("store-and-forward"), "{msg}");
        i.max_replicas = 1;
        assert!(unmet(&i).is_empty());
        assert!(evaluate(&i)[1].message.contains("store-and-forward"), "one replica: said what is lost");
    }

    #[test]
    fn user_declarations_must_be_ticked() {
        let mut i = passing();
        i.load_balancer_pins_connections = false;
        i.esmes_reconnect_with_backoff = false;
        assert_eq!(
            unmet(&i),
            vec![
                ChecklistItemName::LoadBalancerPinsConnections,
                ChecklistItemName::EsmesReconnectWithBackoff
            ]
        );
    }

    #[test]
    fn grace_period_must_cover_pre_stop_and_drain() {
        let mut i = passing();
        i.termination_grace_period_seconds = 39;
        assert_eq!(unmet(&i), vec![ChecklistItemName::GracePeriodCoversDrain]);
        i.termination_grace_period_seconds = 40;
        assert!(unmet(&i).is_empty());
    }

    #[test]
    fn auto_falls_back_and_explicit_active_active_is_refused() {
        let mut i = passing();
        i.load_balancer_pins_connections = false;
        let items = evaluate(&i);
        assert_eq!(decide(Topology::Auto, &items, true), Decision::Run(Topology::ActiveStandby));
        let refused = decide(Topology::ActiveActive, &items, true);
        assert_eq!(
            refused,
            Decision::Refused {
                asked: Topology::ActiveActive,
                unmet: vec![ChecklistItemName::LoadBalancerPinsConnections]
            }
        );
        assert_eq!(refused.refused_reason().as_deref(), Some("ActiveActiveRefused"));
        assert_eq!(decide(Topology::ActiveStandby, &items, true), Decision::Run(Topology::ActiveStandby));
    }

    /// Issue 14: the memory store never runs with more than one replica nor with a standby
    /// (a replica taking over would have none of the receipts owed), whatever the topology; one
    /// replica with it runs without election even when scale-out items are unmet.
    #[test]
    fn memory_store_is_refused_with_replicas_or_a_standby() {
        let mut i = passing();
        i.dlr_store_shared = false;
        for asked in [Topology::Auto, Topology::ActiveActive, Topology::ActiveStandby] {
            i.topology = asked;
            let d = decide(asked, &evaluate(&i), false);
            assert_eq!(
                d,
                Decision::Refused { asked, unmet: vec![ChecklistItemName::SharedDlrStore] },
                "{asked:?}"
            );
            assert_eq!(d.refused_reason(), Some(format!("{}Refused", asked.as_str())));
        }
        i.max_replicas = 1;
        i.topology = Topology::ActiveStandby;
        let items = evaluate(&i);
        assert!(items[1].message.contains("ActiveStandby needs a shared DLR store"), "{items:?}");
        assert_eq!(
            decide(Topology::ActiveStandby, &items, false),
            Decision::Refused {
                asked: Topology::ActiveStandby,
                unmet: vec![ChecklistItemName::SharedDlrStore]
            }
        );
        i.topology = Topology::Auto;
        i.esmes_reconnect_with_backoff = false;
        assert_eq!(decide(Topology::Auto, &evaluate(&i), false), Decision::Run(Topology::ActiveActive));
    }
}
