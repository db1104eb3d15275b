//! Deployments and Pods as the caches keep them. A Deployment: the metadata typed (the controller
//! maps owner references from it) and the rest as JSON text, parsed back when a reconcile reads
//! one. A Pod: the metadata and why it is stuck, if it is (all a reconcile reads of a Pod).
//!
//! Why not the typed `Deployment`: k8s-openapi holds every optional sub-object inline, so smscd's
//! Deployment (3.3 KB of JSON) takes about 20 KB of heap as a `Deployment` and 39 KB as a
//! `serde_json::Value`; at 1,000 clusters that was a fifth of the operator's RSS
//! (docs/benchmarks.md, "Operator scale"). A reconcile reads its one Deployment, so parsing it
//! there costs little. A trimmed `Pod` still takes 2.4 KB for its empty spec and status.

use std::borrow::Cow;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::watcher;

/// A trimmed Deployment ([`super::observe::trim_deployment`]) in compact form.
#[derive(Clone, Debug)]
pub struct CompactDeployment {
    pub metadata: ObjectMeta,
    /// The Deployment without its metadata, as JSON.
    rest: Box<str>,
    /// [`super::observe::deployment_material`] of the Deployment, computed once.
    pub material: u64,
}

impl CompactDeployment {
    pub fn new(mut d: Deployment) -> Self {
        let material = super::observe::deployment_material(&d);
        let metadata = std::mem::take(&mut d.metadata);
        // A Deployment always serializes (its fields are plain data); the fallback keeps the
        // metadata, and `expand` then gives a Deployment without spec, which the next apply fixes.
        let rest = serde_json::to_string(&d).unwrap_or_else(|_| "{}".into()).into_boxed_str();
        CompactDeployment { metadata, rest, material }
    }

    /// The Deployment again.
    pub fn expand(&self) -> Deployment {
        let mut d: Deployment = serde_json::from_str(&self.rest).unwrap_or_default();
        d.metadata = self.metadata.clone();
        d
    }
}

/// What the cache keeps of a Pod: its metadata (trimmed) and, when a container waits for a
/// reason that does not clear by itself, that reason and message
/// ([`super::observe::stuck_pod`]).
// Deserialize: only for the bound of the controller's `watches_stream`; it is never read from
// the API server (the watch reads whole Pods and compacts them).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct CompactPod {
    pub metadata: ObjectMeta,
    pub stuck: Option<(String, String)>,
}

impl CompactPod {
    pub fn new(p: Pod) -> Self {
        let stuck = super::observe::stuck_pod(&p);
        let mut metadata = p.metadata;
        super::cache::trim_meta(&mut metadata);
        CompactPod { metadata, stuck }
    }
}

/// `kube::Resource` for a compact form of the k8s-openapi type `$of`: same kind and endpoint.
macro_rules! resource_as {
    ($compact:ty, $of:ty) => {
        impl kube::Resource for $compact {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                <$of as kube::Resource>::kind(&())
            }
            fn group(_: &()) -> Cow<'_, str> {
                <$of as kube::Resource>::group(&())
            }
            fn version(_: &()) -> Cow<'_, str> {
                <$of as kube::Resource>::version(&())
            }
            fn plural(_: &()) -> Cow<'_, str> {
                <$of as kube::Resource>::plural(&())
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

resource_as!(CompactDeployment, Deployment);
resource_as!(CompactPod, Pod);

/// A watch event of `A` as one of its compact form `B`.
pub fn compact_event<A, B>(ev: watcher::Event<A>, f: impl Fn(A) -> B) -> watcher::Event<B> {
    match ev {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_compact_deployment_expands_to_the_same_deployment() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "sms", "namespace": "default", "generation": 3,
                "labels": { "app.kubernetes.io/instance": "sms" },
                "ownerReferences": [{ "apiVersion": "smsc.io/v1alpha1", "kind": "SmscCluster",
                    "name": "sms", "uid": "u1", "controller": true }] },
            "spec": { "replicas": 2, "selector": { "matchLabels": { "a": "b" } },
                "template": { "spec": { "containers": [{ "name": "smscd", "image": "smscd:1",
                    "resources": { "requests": { "cpu": "500m" } } }] } } },
            "status": { "replicas": 2, "readyReplicas": 1, "observedGeneration": 3 },
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let c = CompactDeployment::new(d.clone());
        assert_eq!(c.expand(), d);
        assert_eq!(c.material, super::super::observe::deployment_material(&d));
        assert_eq!(kube::ResourceExt::name_any(&c), "sms");
        assert_eq!(<CompactDeployment as kube::Resource>::plural(&()), "deployments");
    }

    #[test]
    fn a_compact_pod_keeps_its_labels_and_why_it_is_stuck() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": { "name": "sms-0", "namespace": "default",
                "labels": { "smsc.io/role": "active" },
                "managedFields": [{ "manager": "kubelet", "operation": "Update" }] },
            "spec": { "containers": [{ "name": "smscd", "image": "smscd:1" }] },
            "status": { "containerStatuses": [{ "name": "smscd", "image": "x", "imageID": "", "ready": false,
                "restartCount": 4, "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 40s" } } }] },
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let c = CompactPod::new(p.clone());
        assert_eq!(c.stuck, super::super::observe::stuck_pod(&p));
        assert!(c.stuck.is_some());
        assert_eq!(kube::ResourceExt::labels(&c).get("smsc.io/role").map(String::as_str), Some("active"));
        assert!(c.metadata.managed_fields.is_none());
        assert_eq!(<CompactPod as kube::Resource>::plural(&()), "pods");
    }
}
