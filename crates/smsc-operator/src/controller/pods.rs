//! Acting on the smscd Pods: the `smsc.io/role` label that routes the Service to the active Pod.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use smsc_api::names::{ROLE_ACTIVE, ROLE_LABEL};

use super::context::Context;
use crate::error::{Error, Result, Verb};
use crate::labels;

/// Remove `smsc.io/role=active` from Pods that do not hold the Lease (e.g. a crashed leader's).
pub(super) async fn fix_role_labels(
    ctx: &Context,
    ns: &str,
    cluster: &str,
    holder: Option<&str>,
) -> Result<()> {
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
        tracing::info!(%ns, pod = %name, "removing stale role label");
        let patch = serde_json::json!({ "metadata": { "labels": { ROLE_LABEL: null } } });
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(Verb::PatchPod, "Pod", name, e)),
        }
    }
    Ok(())
}
