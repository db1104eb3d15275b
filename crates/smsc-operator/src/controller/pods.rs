//! Acting on the smscd Pods: the `smsc.io/role` label that routes the Service to the active Pod.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use smsc_api::crd::Topology;
use smsc_api::names::{ROLE_ACTIVE, ROLE_LABEL};

use super::context::Context;
use super::observe::live_lease_holder;
use crate::error::{Error, Result, Verb};
use crate::labels;

/// Set by smscd on the active Pod (smscd/src/leader/labels.rs); goes with the role label.
const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// A labelled Pod keeps its label when it is the live, unexpired Lease holder.
fn keeps_label(pod: &str, live_holder: Option<&str>) -> bool {
    live_holder == Some(pod)
}

/// Remove `smsc.io/role=active` (and the active Pod's deletion cost) from Pods that do not hold
/// the Lease (e.g. a crashed leader's). `holder` comes from the cache, which can lag: a Pod that
/// just won the Lease labels itself at once, and removing its label on the word of a stale cache
/// would take the Service's only endpoint away. So before removing a label the Lease is read live,
/// and a Pod that holds it unexpired keeps its label.
pub(super) async fn fix_role_labels(
    ctx: &Context,
    ns: &str,
    cluster: &str,
    holder: Option<&str>,
) -> Result<()> {
    let mut live: Option<Option<String>> = None;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut selector = labels::selector(cluster);
    selector.insert(ROLE_LABEL.to_string(), ROLE_ACTIVE.to_string());
    let pods = ctx.stores.pods.state_filter(|p| {
        p.namespace().as_deref() == Some(ns) && selector.iter().all(|(k, v)| p.labels().get(k) == Some(v))
    });
    for pod in pods {
        let name = pod.name_any();
        if Some(name.as_str()) == holder {
            continue;
        }
        // An ActiveActive Pod's label is static (its template): it takes binds until it is
        // replaced, also while the cluster moves to ActiveStandby.
        if pod.labels().get(labels::TOPOLOGY_LABEL).map(String::as_str)
            == Some(Topology::ActiveActive.as_str())
        {
            continue;
        }
        if live.is_none() {
            live = Some(live_lease_holder(ctx, ns, cluster).await?);
        }
        if keeps_label(&name, live.as_ref().and_then(|h| h.as_deref())) {
            tracing::debug!(%ns, pod = %name, "the cache lags: the Pod holds the Lease");
            continue;
        }
        tracing::info!(%ns, pod = %name, "removing stale role label");
        let patch = serde_json::json!({ "metadata": {
            "labels": { ROLE_LABEL: null },
            "annotations": { DELETION_COST_ANNOTATION: null },
        } });
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(Verb::PatchPod, "Pod", name, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::keeps_label;

    #[test]
    fn only_the_live_holder_keeps_its_label() {
        assert!(keeps_label("b", Some("b")), "a new holder the cache has not seen yet");
        assert!(!keeps_label("a", Some("b")));
        assert!(!keeps_label("a", None), "expired or released");
    }
}
