//! Status from what was decided and observed. Pure: the caller passes the clock.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use smsc_api::crd::{ChecklistItem, Condition, ConditionStatus, ConditionType, SmscClusterStatus, Topology};

use crate::checklist::{names, Decision};

/// The Deployment as observed after applying.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeploymentObs {
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    /// Desired replicas (spec.replicas, as the HPA or the operator set it).
    pub desired: i32,
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    pub available: i32,
    /// The smscd container's image in the Pod template.
    pub image: Option<String>,
    /// A failure the Deployment reports (reason, message): `ReplicaFailure` or
    /// `ProgressDeadlineExceeded`.
    pub failure: Option<(String, String)>,
}

/// The HorizontalPodAutoscaler's `ScalingActive` condition as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoscalerObs {
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

impl AutoscalerObs {
    /// The autoscaler is wanted but does not exist (yet).
    pub fn missing() -> Self {
        AutoscalerObs {
            status: ConditionStatus::Unknown,
            reason: "HorizontalPodAutoscalerMissing".into(),
            message: "the HorizontalPodAutoscaler does not exist yet".into(),
        }
    }

    /// From the HPA's `status.conditions` (type, status, reason, message).
    pub fn from_conditions<'a>(
        hpa: &str,
        conditions: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>, Option<&'a str>)>,
    ) -> Self {
        let found = conditions.into_iter().find(|(t, ..)| *t == "ScalingActive");
        match found {
            None => AutoscalerObs {
                status: ConditionStatus::Unknown,
                reason: "NotReported".into(),
                message: format!("HorizontalPodAutoscaler {hpa} has not reported ScalingActive yet"),
            },
            Some((_, status, reason, message)) => AutoscalerObs {
                status: match status {
                    "True" => ConditionStatus::True,
                    "False" => ConditionStatus::False,
                    _ => ConditionStatus::Unknown,
                },
                reason: reason.filter(|r| !r.is_empty()).unwrap_or("NoReason").to_string(),
                message: format!("HorizontalPodAutoscaler {hpa}: {}", message.unwrap_or_default()),
            },
        }
    }
}

/// Everything the status is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs<'a> {
    pub generation: Option<i64>,
    pub paused: bool,
    pub checklist: &'a [ChecklistItem],
    pub decision: &'a Decision,
    /// Label selector of the Pods, for the scale subresource.
    pub selector: String,
    pub deployment: Option<DeploymentObs>,
    /// Lease holder (ActiveStandby only).
    pub active_pod: Option<String>,
    /// A problem the operator cannot fix itself (reason, message), e.g. a missing Secret.
    pub problem: Option<(String, String)>,
    /// The HPA's ScalingActive condition; None: autoscaling is not in effect (no condition).
    pub autoscaler: Option<AutoscalerObs>,
}

struct Cond {
    type_: ConditionType,
    status: ConditionStatus,
    reason: String,
    message: String,
}

fn cond(type_: ConditionType, status: ConditionStatus, reason: &str, message: String) -> Cond {
    Cond { type_, status, reason: reason.to_string(), message }
}

fn available(inputs: &Inputs<'_>, topology: Option<Topology>) -> Cond {
    let t = ConditionType::Available;
    match &inputs.deployment {
        None => {
            cond(t, ConditionStatus::Unknown, "DeploymentMissing", "the Deployment does not exist yet".into())
        }
        Some(d) if d.available < 1 => cond(
            t,
            ConditionStatus::False,
            "NoReplicaAvailable",
            format!("0 of {} replicas available", d.desired),
        ),
        Some(_) if topology == Some(Topology::ActiveStandby) && inputs.active_pod.is_none() => cond(
            t,
            ConditionStatus::False,
            "NoLeaseHolder",
            "replicas are up but none holds the Lease yet".into(),
        ),
        Some(d) => cond(
            t,
            ConditionStatus::True,
            "ReplicasAvailable",
            format!("{} of {} replicas available", d.available, d.desired),
        ),
    }
}

fn progressing(inputs: &Inputs<'_>) -> Cond {
    let t = ConditionType::Progressing;
    match &inputs.deployment {
        None => {
            cond(t, ConditionStatus::Unknown, "DeploymentMissing", "the Deployment does not exist yet".into())
        }
        Some(d) => {
            let rolling = d.observed_generation < d.generation
                || d.updated < d.desired
                || d.ready < d.desired
                || d.replicas > d.desired;
            if rolling {
                let msg = format!("{} updated, {} ready of {} desired", d.updated, d.ready, d.desired);
                cond(t, ConditionStatus::True, "RollingOut", msg)
            } else {
                cond(
                    t,
                    ConditionStatus::False,
                    "Settled",
                    format!("{} replicas up to date and ready", d.desired),
                )
            }
        }
    }
}

fn degraded(inputs: &Inputs<'_>) -> Cond {
    let t = ConditionType::Degraded;
    match (inputs.decision, &inputs.problem) {
        (d @ Decision::Refused { .. }, _) => cond(
            t,
            ConditionStatus::True,
            &d.refused_reason().unwrap_or_default(),
            format!("{}; children left as they were", d.refused_note().unwrap_or_default()),
        ),
        (_, Some((reason, message))) => cond(t, ConditionStatus::True, reason, message.clone()),
        _ => match inputs.deployment.as_ref().and_then(|d| d.failure.as_ref()) {
            Some((reason, message)) => cond(t, ConditionStatus::True, reason, message.clone()),
            None => cond(t, ConditionStatus::False, "AsExpected", "no problem found".into()),
        },
    }
}

/// The status after a reconcile that failed (`reason`, `message`): the old one with
/// `Degraded=True`, since nothing else could be observed. Pure, like [`compute`].
pub fn failed(
    old: Option<&SmscClusterStatus>,
    generation: Option<i64>,
    reason: &str,
    message: String,
    now: &Time,
) -> SmscClusterStatus {
    let mut new = old.cloned().unwrap_or_default();
    let last_transition_time = old
        .and_then(|s| condition(s, ConditionType::Degraded))
        .filter(|c| c.status == ConditionStatus::True)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    let degraded = Condition {
        type_: ConditionType::Degraded,
        status: ConditionStatus::True,
        reason: reason.to_string(),
        message,
        last_transition_time,
        observed_generation: generation,
    };
    match new.conditions.iter_mut().find(|c| c.type_ == ConditionType::Degraded) {
        Some(c) => *c = degraded,
        None => new.conditions.push(degraded),
    }
    new
}

/// The new status. Conditions whose status did not change keep their lastTransitionTime.
pub fn compute(old: Option<&SmscClusterStatus>, inputs: &Inputs<'_>, now: &Time) -> SmscClusterStatus {
    let unmet: Vec<_> = inputs.checklist.iter().filter(|i| !i.satisfied).map(|i| i.name).collect();
    let topology = match inputs.decision {
        Decision::Run(t) => Some(*t),
        // Refused: the children were left as they were, and so is the topology in effect.
        Decision::Refused { .. } => old.and_then(|s| s.topology),
    };
    let scale_out = if unmet.is_empty() {
        let msg = "every scale-out checklist item holds".to_string();
        cond(ConditionType::ScaleOutSafe, ConditionStatus::True, "ChecklistPassed", msg)
    } else {
        let msg = format!("unmet: {}", names(&unmet));
        cond(ConditionType::ScaleOutSafe, ConditionStatus::False, "ChecklistUnmet", msg)
    };
    let paused = if inputs.paused {
        let msg = "spec.paused is true: children are left as they are".to_string();
        cond(ConditionType::ReconciliationPaused, ConditionStatus::True, "Paused", msg)
    } else {
        let msg = "children follow the spec".to_string();
        cond(ConditionType::ReconciliationPaused, ConditionStatus::False, "Reconciling", msg)
    };
    let autoscaling = inputs.autoscaler.as_ref().map(|a| Cond {
        type_: ConditionType::AutoscalingActive,
        status: a.status,
        reason: a.reason.clone(),
        message: a.message.clone(),
    });
    let conds = [available(inputs, topology), progressing(inputs), degraded(inputs), scale_out, paused]
        .into_iter()
        .chain(autoscaling);

    let conditions = conds
        .into_iter()
        .map(|c| {
            let last_transition_time = old
                .and_then(|s| condition(s, c.type_))
                .filter(|o| o.status == c.status)
                .map(|o| o.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message,
                last_transition_time,
                observed_generation: inputs.generation,
            }
        })
        .collect();

    let dep = inputs.deployment.clone().unwrap_or_default();
    SmscClusterStatus {
        observed_generation: inputs.generation,
        topology,
        replicas: dep.replicas,
        ready_replicas: dep.ready,
        ready_text: inputs.deployment.as_ref().map(|d| format!("{}/{}", d.ready, d.desired)),
        image: match &inputs.deployment {
            Some(d) => d.image.clone(),
            None => None,
        },
        active_pod: if topology == Some(Topology::ActiveStandby) { inputs.active_pod.clone() } else { None },
        selector: Some(inputs.selector.clone()),
        checklist: inputs.checklist.to_vec(),
        conditions,
    }
}

/// The condition of a type, if present.
pub fn condition(status: &SmscClusterStatus, t: ConditionType) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == t)
}

/// Now, to whole seconds (what the API server stores), so a re-read status compares equal.
pub fn now() -> Time {
    let ts = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checklist::{evaluate, ChecklistInput};
    use smsc_api::crd::ChecklistItemName;

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap_or_else(|e| panic!("{e}")))
    }

    fn items(pass: bool) -> Vec<ChecklistItem> {
        evaluate(&ChecklistInput {
            max_replicas: 2,
            topology: Topology::Auto,
            upstreams: vec![],
            dlr_store_shared: pass,
            store_and_forward: false,
            load_balancer_pins_connections: true,
            esmes_reconnect_with_backoff: true,
            termination_grace_period_seconds: 45,
            pre_stop_sleep_seconds: 10,
            drain_seconds: 30,
        })
    }

    fn settled() -> DeploymentObs {
        DeploymentObs {
            generation: Some(1),
            observed_generation: Some(1),
            desired: 2,
            replicas: 2,
            ready: 2,
            updated: 2,
            available: 2,
            image: Some("smscd:1".into()),
            failure: None,
        }
    }

    fn inputs<'a>(items: &'a [ChecklistItem], d: &'a Decision) -> Inputs<'a> {
        Inputs {
            generation: Some(1),
            paused: false,
            checklist: items,
            decision: d,
            selector: "a=b".into(),
            deployment: Some(settled()),
            active_pod: None,
            problem: None,
            autoscaler: None,
        }
    }

    fn get(s: &SmscClusterStatus, ty: ConditionType) -> (ConditionStatus, String, Time) {
        let c = condition(s, ty).unwrap_or_else(|| panic!("no {ty:?}"));
        (c.status, c.reason.clone(), c.last_transition_time.clone())
    }

    #[test]
    fn healthy_active_active() {
        let items = items(true);
        let d = Decision::Run(Topology::ActiveActive);
        let i = Inputs { generation: Some(3), active_pod: Some("ignored".into()), ..inputs(&items, &d) };
        let s = compute(None, &i, &t(100));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.topology, Some(Topology::ActiveActive));
        assert_eq!((s.replicas, s.ready_replicas), (2, 2));
        assert_eq!(s.ready_text.as_deref(), Some("2/2"));
        assert_eq!(s.image.as_deref(), Some("smscd:1"));
        assert_eq!(s.active_pod, None);
        assert_eq!(s.selector.as_deref(), Some("a=b"));
        assert_eq!(s.checklist.len(), 5);
        assert_eq!(get(&s, ConditionType::Available).0, ConditionStatus::True);
        assert_eq!(get(&s, ConditionType::Progressing).0, ConditionStatus::False);
        assert_eq!(get(&s, ConditionType::Degraded).0, ConditionStatus::False);
        assert_eq!(get(&s, ConditionType::ScaleOutSafe).0, ConditionStatus::True);
        assert_eq!(get(&s, ConditionType::ReconciliationPaused).0, ConditionStatus::False);
        assert!(s
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(3) && c.last_transition_time == t(100)));
    }

    #[test]
    fn unchanged_inputs_give_an_equal_status_and_keep_transition_times() {
        let items = items(true);
        let d = Decision::Run(Topology::ActiveActive);
        let i = inputs(&items, &d);
        let first = compute(None, &i, &t(100));
        let second = compute(Some(&first), &i, &t(200));
        assert_eq!(first, second);
        // Only the condition that flips gets the new time.
        let mut rolling = settled();
        rolling.ready = 1;
        let third = compute(Some(&second), &Inputs { deployment: Some(rolling), ..i.clone() }, &t(300));
        assert_eq!(third.ready_text.as_deref(), Some("1/2"));
        assert_eq!(
            get(&third, ConditionType::Progressing),
            (ConditionStatus::True, "RollingOut".into(), t(300))
        );
        assert_eq!(get(&third, ConditionType::Available).2, t(100));
    }

    #[test]
    fn refused_active_active_is_degraded_and_keeps_the_old_topology() {
        let items = items(false);
        let old_d = Decision::Run(Topology::ActiveStandby);
        let base = Inputs { active_pod: Some("p-0".into()), ..inputs(&items, &old_d) };
        let old = compute(None, &base, &t(1));
        assert_eq!(old.active_pod.as_deref(), Some("p-0"));
        let refused = Decision::Refused {
            asked: Topology::ActiveActive,
            unmet: vec![ChecklistItemName::SharedDlrStore],
        };
        let s =
            compute(Some(&old), &Inputs { generation: Some(2), decision: &refused, ..base.clone() }, &t(2));
        assert_eq!(s.topology, Some(Topology::ActiveStandby));
        let (st, reason, _) = get(&s, ConditionType::Degraded);
        assert_eq!((st, reason.as_str()), (ConditionStatus::True, "ActiveActiveRefused"));
        assert!(condition(&s, ConditionType::Degraded).is_some_and(|c| c.message.contains("SharedDlrStore")));
        assert_eq!(get(&s, ConditionType::ScaleOutSafe).0, ConditionStatus::False);
    }

    #[test]
    fn standby_without_holder_is_unavailable_and_missing_deployment_is_unknown() {
        let items = items(false);
        let d = Decision::Run(Topology::ActiveStandby);
        let i = Inputs {
            paused: true,
            problem: Some(("SecretMissing".into(), "x".into())),
            ..inputs(&items, &d)
        };
        let s = compute(None, &i, &t(1));
        assert_eq!(get(&s, ConditionType::Available).1, "NoLeaseHolder");
        assert_eq!(get(&s, ConditionType::Degraded).1, "SecretMissing");
        assert_eq!(get(&s, ConditionType::ReconciliationPaused).0, ConditionStatus::True);
        let s = compute(None, &Inputs { deployment: None, ..i }, &t(1));
        assert_eq!(get(&s, ConditionType::Available).0, ConditionStatus::Unknown);
        assert_eq!((s.ready_text.as_deref(), s.image.as_deref()), (None, None));
        assert_eq!(get(&s, ConditionType::Progressing).0, ConditionStatus::Unknown);
    }

    #[test]
    fn a_deployment_failure_degrades_after_secrets_and_refusals() {
        let items = items(true);
        let d = Decision::Run(Topology::ActiveActive);
        let failing = DeploymentObs {
            failure: Some(("ReplicaFailure".into(), "pods \"x\" is forbidden: exceeded quota".into())),
            ..settled()
        };
        let base = Inputs { deployment: Some(failing), ..inputs(&items, &d) };
        let s = compute(None, &base, &t(1));
        let (st, reason, _) = get(&s, ConditionType::Degraded);
        assert_eq!((st, reason.as_str()), (ConditionStatus::True, "ReplicaFailure"));
        assert!(condition(&s, ConditionType::Degraded).is_some_and(|c| c.message.contains("exceeded quota")));
        let secret = Some(("SecretMissing".to_string(), "x/y".to_string()));
        let s = compute(None, &Inputs { problem: secret, ..base.clone() }, &t(1));
        assert_eq!(get(&s, ConditionType::Degraded).1, "SecretMissing");
    }

    #[test]
    fn a_failed_reconcile_degrades_and_keeps_the_rest() {
        let items = items(true);
        let d = Decision::Run(Topology::ActiveActive);
        let ok = compute(None, &inputs(&items, &d), &t(1));
        let s = failed(Some(&ok), Some(2), "ChildNotOwned", "ConfigMap ns/x is not ours".into(), &t(5));
        let (st, reason, at) = get(&s, ConditionType::Degraded);
        assert_eq!((st, reason.as_str(), at), (ConditionStatus::True, "ChildNotOwned", t(5)));
        assert_eq!(get(&s, ConditionType::Available), get(&ok, ConditionType::Available));
        assert_eq!(s.conditions.len(), ok.conditions.len());
        // Failing again keeps the transition time; a first status gets the condition alone.
        let again = failed(Some(&s), Some(2), "ChildNotOwned", "ConfigMap ns/x is not ours".into(), &t(9));
        assert_eq!(again, s);
        assert_eq!(failed(None, None, "InvalidSpec", "m".into(), &t(1)).conditions.len(), 1);
    }
}

#[cfg(test)]
mod autoscaler_tests {
    use super::*;
    use crate::checklist::Decision;

    #[test]
    fn hpa_scaling_active_false_becomes_a_condition_with_its_reason_and_message() {
        let obs = AutoscalerObs::from_conditions(
            "sms",
            [
                ("AbleToScale", "True", Some("SucceededGetScale"), Some("ok")),
                ("ScalingActive", "False", Some("FailedGetResourceMetric"), Some("missing request for cpu")),
            ],
        );
        assert_eq!(obs.status, ConditionStatus::False);
        assert_eq!(obs.reason, "FailedGetResourceMetric");
        assert_eq!(obs.message, "HorizontalPodAutoscaler sms: missing request for cpu");
        let d = Decision::Run(Topology::ActiveActive);
        let i = Inputs {
            generation: Some(1),
            paused: false,
            checklist: &[],
            decision: &d,
            selector: String::new(),
            deployment: None,
            active_pod: None,
            problem: None,
            autoscaler: Some(obs),
        };
        let s = compute(None, &i, &now());
        let c = condition(&s, ConditionType::AutoscalingActive).unwrap_or_else(|| panic!("no condition"));
        assert_eq!((c.status, c.reason.as_str()), (ConditionStatus::False, "FailedGetResourceMetric"));
        assert!(c.message.contains("missing request for cpu"), "{}", c.message);
        // Without autoscaling there is no such condition.
        let s = compute(None, &Inputs { autoscaler: None, ..i }, &now());
        assert!(condition(&s, ConditionType::AutoscalingActive).is_none());
    }

    #[test]
    fn an_hpa_that_has_not_reported_is_unknown() {
        let obs = AutoscalerObs::from_conditions("sms", []);
        assert_eq!((obs.status, obs.reason.as_str()), (ConditionStatus::Unknown, "NotReported"));
        let obs = AutoscalerObs::from_conditions("sms", [("ScalingActive", "True", None, None)]);
        assert_eq!((obs.status, obs.reason.as_str()), (ConditionStatus::True, "NoReason"));
    }
}
