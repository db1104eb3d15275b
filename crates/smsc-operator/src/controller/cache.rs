//! The caches a reconcile reads instead of the API server, and the watches that fill them:
//! label-selected, trimmed of what no reconcile reads, and filtered so that only changes that
//! can alter an outcome trigger a reconcile.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;

use super::compact::{CompactDeployment, CompactPod};
use crate::error::{Error, Result};

/// kubectl's copy of the last applied object (children edited with `kubectl apply`).
pub(super) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// How long a reconcile waits for the caches' first list before failing (and backing off).
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// What a reconcile reads, kept current by the controller's own watches (label-selected, without
/// managedFields), so a reconcile that finds nothing to change sends no request at all.
#[derive(Clone)]
pub struct Stores {
    pub(super) service_accounts: Store<ServiceAccount>,
    pub(super) roles: Store<Role>,
    pub(super) role_bindings: Store<RoleBinding>,
    pub(super) config_maps: Store<ConfigMap>,
    /// Compact: see [`super::compact`].
    pub(super) deployments: Store<CompactDeployment>,
    pub(super) services: Store<Service>,
    pub(super) pdbs: Store<PodDisruptionBudget>,
    pub(super) hpas: Store<HorizontalPodAutoscaler>,
    /// Metadata and why a container is stuck: see [`super::compact`].
    pub(super) pods: Store<CompactPod>,
    pub(super) leases: Store<Lease>,
}

pub(super) struct Writers {
    pub(super) service_accounts: reflector::store::Writer<ServiceAccount>,
    pub(super) roles: reflector::store::Writer<Role>,
    pub(super) role_bindings: reflector::store::Writer<RoleBinding>,
    pub(super) config_maps: reflector::store::Writer<ConfigMap>,
    pub(super) deployments: reflector::store::Writer<CompactDeployment>,
    pub(super) services: reflector::store::Writer<Service>,
    pub(super) pdbs: reflector::store::Writer<PodDisruptionBudget>,
    pub(super) hpas: reflector::store::Writer<HorizontalPodAutoscaler>,
    pub(super) pods: reflector::store::Writer<CompactPod>,
    pub(super) leases: reflector::store::Writer<Lease>,
}

pub(super) fn stores() -> (Stores, Writers) {
    let (service_accounts, w_sa) = reflector::store();
    let (roles, w_role) = reflector::store();
    let (role_bindings, w_rb) = reflector::store();
    let (config_maps, w_cm) = reflector::store();
    let (deployments, w_dep) = reflector::store();
    let (services, w_svc) = reflector::store();
    let (pdbs, w_pdb) = reflector::store();
    let (hpas, w_hpa) = reflector::store();
    let (pods, w_pod) = reflector::store();
    let (leases, w_lease) = reflector::store();
    (
        Stores {
            service_accounts,
            roles,
            role_bindings,
            config_maps,
            deployments,
            services,
            pdbs,
            hpas,
            pods,
            leases,
        },
        Writers {
            service_accounts: w_sa,
            roles: w_role,
            role_bindings: w_rb,
            config_maps: w_cm,
            deployments: w_dep,
            services: w_svc,
            pdbs: w_pdb,
            hpas: w_hpa,
            pods: w_pod,
            leases: w_lease,
        },
    )
}

impl Stores {
    /// Wait (bounded) for every cache's first list: reading a half-listed cache would take
    /// existing children for missing ones and re-apply them.
    pub(super) async fn synced(&self) -> Result<()> {
        async fn one<K: kube::Resource + Clone>(s: &Store<K>, what: &'static str) -> Result<()>
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            match tokio::time::timeout(SYNC_TIMEOUT, s.wait_until_ready()).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(Error::NotSynced(what)),
            }
        }
        one(&self.service_accounts, "ServiceAccount").await?;
        one(&self.roles, "Role").await?;
        one(&self.role_bindings, "RoleBinding").await?;
        one(&self.config_maps, "ConfigMap").await?;
        one(&self.deployments, "Deployment").await?;
        one(&self.services, "Service").await?;
        one(&self.pdbs, "PodDisruptionBudget").await?;
        one(&self.hpas, "HorizontalPodAutoscaler").await?;
        one(&self.pods, "Pod").await?;
        one(&self.leases, "Lease").await
    }
}

/// A kind whose cache holds it as it is (all but Deployments).
pub trait Stored: kube::Resource<DynamicType = ()> + Clone + Sized + 'static {
    fn store(s: &Stores) -> &Store<Self>;
}

/// A kind of child a reconcile reads from the caches.
pub trait Cached: kube::Resource<DynamicType = ()> + Clone + Sized + 'static {
    /// The cached object `ns/name`.
    fn get(s: &Stores, ns: &str, name: &str) -> Option<Self>;
}

macro_rules! stored {
    ($($kind:ty => $field:ident),* $(,)?) => {
        $(impl Stored for $kind {
            fn store(s: &Stores) -> &Store<Self> {
                &s.$field
            }
        }
        impl Cached for $kind {
            fn get(s: &Stores, ns: &str, name: &str) -> Option<Self> {
                s.$field.get(&ObjectRef::new(name).within(ns)).map(|k| (*k).clone())
            }
        })*
    };
}

stored! {
    ServiceAccount => service_accounts,
    Role => roles,
    RoleBinding => role_bindings,
    ConfigMap => config_maps,
    Service => services,
    PodDisruptionBudget => pdbs,
    HorizontalPodAutoscaler => hpas,
    Lease => leases,
}

impl Cached for Deployment {
    fn get(s: &Stores, ns: &str, name: &str) -> Option<Self> {
        s.deployments.get(&ObjectRef::new(name).within(ns)).map(|c| c.expand())
    }
}

/// The cached object `ns/name`.
pub(super) fn cached<K: Cached>(stores: &Stores, ns: &str, name: &str) -> Option<K> {
    K::get(stores, ns, name)
}

/// Map a watched object to the SmscCluster it belongs to, only when `fingerprint` changed
/// (Lease renewals and Pod status churn would otherwise reconcile every few seconds) or the object
/// is gone.
///
/// `cached` answers whether an object (`namespace/name`) is still in the watch's cache: the
/// reflector applies each event before it reaches here, so a deleted object is no longer there.
/// Its fingerprint is dropped then, and the map is swept of every object the cache no longer holds
/// once it has grown past twice the cache (objects deleted while the watch was down have no delete
/// event), so it never outgrows the objects that exist.
pub(super) fn changed_filter<T: ResourceExt>(
    seen: &Mutex<HashMap<String, String>>,
    obj: &T,
    fingerprint: String,
    cluster: Option<String>,
    ar: &ApiResource,
    cached: impl Fn(&str) -> bool,
    cache_len: usize,
) -> Option<ObjectRef<DynamicObject>> {
    let ns = obj.namespace()?;
    let k = format!("{ns}/{}", obj.name_any());
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    if !cached(&k) {
        // Deleted: forget it, and tell its cluster (the active Pod or the Lease may be gone).
        seen.remove(&k);
    } else if seen.get(&k) == Some(&fingerprint) {
        return None;
    } else {
        seen.insert(k, fingerprint);
        if seen.len() > 2 * cache_len + 64 {
            seen.retain(|k, _| cached(k));
        }
    }
    Some(ObjectRef::new_with(&cluster?, ar.clone()).within(&ns))
}

/// Is `namespace/name` in the store?
pub(super) fn in_store<K>(store: &Store<K>, key: &str) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    store.get(&ObjectRef::new(name).within(ns)).is_some()
}

pub(super) fn api_for<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What the caches need not hold: managedFields (most of a child's bytes) and kubectl's
/// last-applied copy; the reconcile reads neither.
pub(super) fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// A watch feeding `writer`'s cache (trimmed by `trim`), yielding each object after the cache
/// holds it, so the reconcile it triggers reads it back.
pub(super) fn reflect<K>(
    api: Api<K>,
    wc: &watcher::Config,
    writer: reflector::store::Writer<K>,
    trim: fn(&mut K),
) -> impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    watcher(api, wc.clone()).default_backoff().modify(trim).reflect(writer).touched_objects()
}

/// Like [`reflect`], but an update yields the object only when `material` changed, so writes
/// that cannot change the outcome (our own status patches echoing back, kube-controller-manager
/// rewriting a Deployment's condition timestamps) do not cost a reconcile. New and deleted objects
/// always pass, and so does everything after a re-list.
pub(super) fn reflect_material<K, F>(
    watch: impl futures::Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    material: F,
) -> impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + Send + 'static,
    F: Fn(&K) -> u64 + Send + 'static,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    watch.filter_map(move |ev| {
        let key = |o: &K| format!("{}/{}", o.meta().namespace.as_deref().unwrap_or(""), o.name_any());
        let out = match ev {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                let fp = material(&o);
                (seen.insert(key(&o), fp) != Some(fp)).then_some(Ok(o))
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&key(&o));
                Some(Ok(o))
            }
            // A re-list (after a watch gap) yields everything again, as the unfiltered watch would,
            // and forgets objects deleted during the gap.
            Ok(watcher::Event::Init) => {
                seen.clear();
                None
            }
            Ok(watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    })
}

pub(super) fn hash_of(v: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// A spec change bumps the generation; status echoes (ours) and label edits do not matter; a new
/// `smsc.io/reconcile-requested-at` asks for a reconcile now (after rotating a Secret).
pub(super) fn cluster_material(c: &DynamicObject) -> u64 {
    let requested =
        c.metadata.annotations.as_ref().and_then(|a| a.get(crate::labels::RECONCILE_REQUEST_ANNOTATION));
    hash_of(&(c.metadata.generation, c.metadata.deletion_timestamp.is_some(), requested))
}

pub(super) fn trim<K: kube::Resource>(o: &mut K) {
    trim_meta(o.meta_mut());
}

/// The SmscCluster as an untyped resource: the watch lists raw objects, so one that no longer
/// deserializes is reported by its reconcile instead of breaking the list for every cluster.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(smsc_api::names::GROUP, smsc_api::crd::VERSION, "SmscCluster"),
        "smscclusters",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels;
    use serde_json::json;

    fn cm(name: &str, data: &str) -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "default" }, "data": { "k": data },
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_material_changes_new_and_deleted_objects_pass() {
        let material = |c: &ConfigMap| hash_of(&c.data);
        let events = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(cm("a", "1"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(cm("a", "1"))),
            Ok(watcher::Event::Apply(cm("b", "1"))),
            Ok(watcher::Event::Apply(cm("a", "2"))),
            Ok(watcher::Event::Delete(cm("a", "2"))),
            Ok(watcher::Event::Apply(cm("a", "2"))),
        ];
        let got: Vec<std::result::Result<ConfigMap, watcher::Error>> =
            futures::executor::block_on(reflect_material(futures::stream::iter(events), material).collect());
        let out: Vec<String> = got
            .into_iter()
            .map(|r| {
                let c = r.unwrap_or_else(|e| panic!("{e}"));
                format!("{}={}", c.name_any(), c.data.and_then(|d| d.get("k").cloned()).unwrap_or_default())
            })
            .collect();
        assert_eq!(out, ["a=1", "b=1", "a=2", "a=2", "a=2"]);
    }

    fn lease(name: &str, cluster: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "default",
                "labels": { labels::INSTANCE_LABEL: cluster } },
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn change_filter_forgets_deleted_objects_and_never_outgrows_the_cache() {
        let seen = Mutex::new(HashMap::new());
        let ar = api_resource();
        let live = Mutex::new(std::collections::HashSet::<String>::new());
        let filter = |l: &Lease, fp: &str| {
            let live = live.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let cluster = l.labels().get(labels::INSTANCE_LABEL).cloned();
            changed_filter(&seen, l, fp.to_string(), cluster, &ar, |k| live.contains(k), live.len())
                .map(|r| r.name)
        };
        let a = lease("a-leader", "a");
        live.lock().unwrap_or_else(|p| p.into_inner()).insert("default/a-leader".into());
        assert_eq!(filter(&a, "pod-0").as_deref(), Some("a"));
        assert_eq!(filter(&a, "pod-0"), None, "unchanged: no reconcile");
        assert_eq!(filter(&a, "pod-1").as_deref(), Some("a"));
        // Deleted (gone from the cache): its cluster hears of it and the entry goes.
        live.lock().unwrap_or_else(|p| p.into_inner()).clear();
        assert_eq!(filter(&a, "pod-1").as_deref(), Some("a"));
        assert!(seen.lock().unwrap_or_else(|p| p.into_inner()).is_empty());

        // Deleted while the watch was down (no delete event): swept once the map outgrows the cache.
        for i in 0..200 {
            let name = format!("c{i}-leader");
            live.lock().unwrap_or_else(|p| p.into_inner()).insert(format!("default/{name}"));
            filter(&lease(&name, &format!("c{i}")), "x");
            live.lock().unwrap_or_else(|p| p.into_inner()).remove(&format!("default/{name}"));
        }
        let n = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
        assert!(n <= 2 + 64 + 1, "{n} fingerprints for at most one live object");
    }

    #[test]
    fn api_resource_names_the_crd() {
        let ar = api_resource();
        assert_eq!(
            (ar.group.as_str(), ar.version.as_str(), ar.kind.as_str(), ar.plural.as_str()),
            ("smsc.io", "v1alpha1", "SmscCluster", "smscclusters")
        );
    }
}
