//! The reconcile loop: fetch -> validate -> build (pure) -> apply -> prune -> status.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Future, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as RuntimeConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use smsc_api::crd::{ConditionStatus, ConditionType, DlrStoreType, SmscCluster, SmscClusterStatus, Topology};
use smsc_api::names::{ROLE_ACTIVE, ROLE_LABEL};

use crate::build::{self, Children, Plan};
use crate::checklist::{names, Decision};
use crate::error::{Error, Result, Verb};
use crate::labels::{self, MANAGER};
use crate::metrics::Metrics;
use crate::status::{self, AutoscalerObs, DeploymentObs, Inputs};

/// Resync period of a settled cluster.
const RESYNC: Duration = Duration::from_secs(300);
/// kubectl's copy of the last applied object (children edited with `kubectl apply`).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Field manager that keeps `spec.replicas` while the HPA takes it over.
const HANDOFF_MANAGER: &str = "smsc-operator-hpa-handoff";
/// How long a reconcile waits for the caches' first list before failing (and backing off).
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Reconciles in flight. Unbounded, a burst of creates opens one API connection per reconcile
/// (the client speaks HTTP/1.1) and the API server, not the operator, sets the pace anyway.
pub const CONCURRENCY: u16 = 16;

/// What a reconcile reads, kept current by the controller's own watches (label-selected, without
/// managedFields), so a reconcile that finds nothing to change sends no request at all.
#[derive(Clone)]
pub struct Stores {
    service_accounts: Store<ServiceAccount>,
    roles: Store<Role>,
    role_bindings: Store<RoleBinding>,
    config_maps: Store<ConfigMap>,
    deployments: Store<Deployment>,
    services: Store<Service>,
    pdbs: Store<PodDisruptionBudget>,
    hpas: Store<HorizontalPodAutoscaler>,
    /// Only metadata: the role label is all a reconcile needs of a Pod.
    pods: Store<PartialObjectMeta<Pod>>,
    leases: Store<Lease>,
}

struct Writers {
    service_accounts: reflector::store::Writer<ServiceAccount>,
    roles: reflector::store::Writer<Role>,
    role_bindings: reflector::store::Writer<RoleBinding>,
    config_maps: reflector::store::Writer<ConfigMap>,
    deployments: reflector::store::Writer<Deployment>,
    services: reflector::store::Writer<Service>,
    pdbs: reflector::store::Writer<PodDisruptionBudget>,
    hpas: reflector::store::Writer<HorizontalPodAutoscaler>,
    pods: reflector::store::Writer<PartialObjectMeta<Pod>>,
    leases: reflector::store::Writer<Lease>,
}

fn stores() -> (Stores, Writers) {
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
    async fn synced(&self) -> Result<()> {
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

/// The cache holding children of kind `Self`.
pub trait Cached: kube::Resource<DynamicType = ()> + Clone + Sized + 'static {
    fn store(s: &Stores) -> &Store<Self>;
}

macro_rules! cached {
    ($($kind:ty => $field:ident),* $(,)?) => {
        $(impl Cached for $kind {
            fn store(s: &Stores) -> &Store<Self> {
                &s.$field
            }
        })*
    };
}

cached! {
    ServiceAccount => service_accounts,
    Role => roles,
    RoleBinding => role_bindings,
    ConfigMap => config_maps,
    Deployment => deployments,
    Service => services,
    PodDisruptionBudget => pdbs,
    HorizontalPodAutoscaler => hpas,
    Lease => leases,
}

/// The cached object `ns/name`.
fn cached<K: Cached>(ctx: &Context, ns: &str, name: &str) -> Option<K> {
    K::store(&ctx.stores).get(&ObjectRef::new(name).within(ns)).map(|k| (*k).clone())
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// Image for SmscClusters that name none.
    pub smscd_image: String,
    /// Watch one namespace; None: all.
    pub namespace: Option<String>,
    /// Event reporter instance (the operator Pod's name).
    pub instance: Option<String>,
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    resource: ApiResource,
    /// What this process remembers per cluster; forgotten when the cluster goes.
    memory: Mutex<PerCluster>,
    stores: Stores,
    /// Taken by [`run`], which feeds the stores from its watches.
    writers: Mutex<Option<Writers>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Arc<Self> {
        let reporter = Reporter { controller: MANAGER.into(), instance: settings.instance.clone() };
        let (stores, writers) = stores();
        Arc::new(Context {
            stores,
            writers: Mutex::new(Some(writers)),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            resource: api_resource(),
            memory: Mutex::new(PerCluster::default()),
        })
    }

    /// Resolves once every cache of [`run`]'s watches has listed (retrying while it has not).
    pub async fn synced(&self) {
        while self.stores.synced().await.is_err() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, PerCluster> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record_failure(&self, key: &str) -> u32 {
        self.memory().record_failure(key)
    }

    fn written_topology(&self, key: &str) -> Option<Topology> {
        self.memory().written_topology.get(key).copied()
    }

    fn set_written_topology(&self, key: String, t: Topology) {
        self.memory().written_topology.insert(key, t);
    }

    fn clear_failures(&self, key: &str) {
        self.memory().failures.remove(key);
    }

    /// The cluster is being deleted or gone: drop everything remembered about it.
    fn forget(&self, key: &str) {
        self.memory().forget(key);
    }

    async fn event(&self, obj: &DynamicObject, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&self.resource)).await {
            tracing::warn!(error = %e, reason, "publishing an Event failed");
        }
    }
}

/// Per-cluster state of one operator process, keyed `namespace/name`.
#[derive(Debug, Default)]
struct PerCluster {
    /// Consecutive failures, for the error back-off.
    failures: HashMap<String, u32>,
    /// Topology in the last status this process wrote: the cache can lag our own status patch
    /// under load, and a reconcile reading it would announce the topology again.
    written_topology: HashMap<String, Topology>,
}

impl PerCluster {
    fn record_failure(&mut self, key: &str) -> u32 {
        let n = self.failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn forget(&mut self, key: &str) {
        self.failures.remove(key);
        self.written_topology.remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.failures.len() + self.written_topology.len()
    }
}

/// The SmscCluster as an untyped resource: the watch lists raw objects, so one that no longer
/// deserializes is reported by its reconcile instead of breaking the list for every cluster.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(smsc_api::names::GROUP, smsc_api::crd::VERSION, "SmscCluster"),
        "smscclusters",
    )
}

fn key(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Exponential back-off per object: 1 s, 2 s, 4 s ... capped at 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_secs((1u64 << exp).min(300))
}

/// Is every field set in `desired` equal in `observed`? Server defaults (fields only in
/// `observed`) are ignored, so an unchanged child is not written again.
pub fn is_subset(desired: &serde_json::Value, observed: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (desired, observed) {
        (Value::Null, _) => true,
        (Value::Object(d), Value::Object(o)) => d.iter().all(|(k, v)| match o.get(k) {
            Some(ov) => is_subset(v, ov),
            None => {
                v.is_null()
                    || v.as_object().is_some_and(|m| m.is_empty())
                    || v.as_array().is_some_and(|a| a.is_empty())
            }
        }),
        (Value::Array(d), Value::Array(o)) => {
            d.len() == o.len() && d.iter().zip(o).all(|(a, b)| is_subset(a, b))
        }
        (d, o) => d == o,
    }
}

fn kind_of<K: k8s_openapi::Resource>() -> &'static str {
    K::KIND
}

/// Server-side apply unless the observed object already holds every desired field.
async fn apply<K>(ctx: &Context, ns: &str, desired: &K) -> Result<Option<K>>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Cached
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    apply_with(ctx, ns, desired, false).await
}

/// `always`: apply even when nothing differs (to drop fields this manager should no longer own).
async fn apply_with<K>(ctx: &Context, ns: &str, desired: &K, always: bool) -> Result<Option<K>>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Cached
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = desired.meta().name.clone().unwrap_or_default();
    let observed = cached::<K>(ctx, ns, &name);
    if let Some(obs) = observed.as_ref().filter(|_| !always) {
        let d = serde_json::to_value(desired).map_err(|e| Error::Render(e.to_string()))?;
        let o = serde_json::to_value(obs).map_err(|e| Error::Render(e.to_string()))?;
        if is_subset(&d, &o) {
            return Ok(observed);
        }
    }
    ctx.metrics.writes.inc();
    tracing::info!(kind = kind_of::<K>(), %ns, %name, "applying");
    let applied = api
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(desired))
        .await
        .map_err(|e| Error::kube(Verb::Apply, kind_of::<K>(), &name, e))?;
    Ok(Some(applied))
}

/// Delete children of this kind that carry the cluster's labels and owner but are not wanted.
async fn prune<K>(ctx: &Context, ns: &str, cluster: &str, uid: Option<&str>, keep: Option<&str>) -> Result<()>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Cached
        + k8s_openapi::Resource
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let ours = labels::labels(cluster);
    let wanted = [labels::INSTANCE_LABEL, labels::MANAGED_BY_LABEL];
    let list = K::store(&ctx.stores).state_filter(|o| {
        o.namespace().as_deref() == Some(ns) && wanted.iter().all(|k| o.labels().get(*k) == ours.get(*k))
    });
    for obj in list {
        let name = obj.name_any();
        let owned = obj.owner_references().iter().any(|o| Some(o.uid.as_str()) == uid);
        if !owned || Some(name.as_str()) == keep {
            continue;
        }
        ctx.metrics.writes.inc();
        tracing::info!(kind = kind_of::<K>(), %ns, %name, "deleting orphan");
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(Verb::Delete, kind_of::<K>(), name, e)),
        }
    }
    Ok(())
}

/// Before the Deployment is applied without `spec.replicas`, a second manager takes the field
/// over at its current value: dropping it outright would reset it to 1 until the HPA acts.
/// Reads the Deployment from the API server: the cache drops managedFields.
async fn hand_replicas_to_hpa(ctx: &Context, ns: &str, desired: &Deployment) -> Result<Handoff> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let name = desired.name_any();
    let Some(obs) = api.get_opt(&name).await.map_err(|e| Error::kube(Verb::Get, "Deployment", &name, e))?
    else {
        return Ok(Handoff::NoDeployment);
    };
    let we_own_replicas = obs.managed_fields().iter().any(|m| {
        m.manager.as_deref() == Some(MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get("f:spec").and_then(|s| s.get("f:replicas")).is_some())
    });
    let Some(replicas) = obs.spec.as_ref().and_then(|s| s.replicas) else { return Ok(Handoff::Nothing) };
    if !we_own_replicas {
        return Ok(Handoff::Nothing);
    }
    let patch = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "replicas": replicas },
    });
    ctx.metrics.writes.inc();
    api.patch(&name, &PatchParams::apply(HANDOFF_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|e| Error::kube(Verb::Apply, "Deployment", &name, e))?;
    Ok(Handoff::HandedOff)
}

enum Handoff {
    /// Not created yet: create it with spec.replicas, hand over on the next pass.
    NoDeployment,
    /// Done: the Deployment must now be applied even if nothing else differs, to release the field.
    HandedOff,
    Nothing,
}

async fn apply_children(
    ctx: &Context,
    cluster: &SmscCluster,
    plan: &Plan,
    children: &Children,
) -> Result<Option<Deployment>> {
    let ns = plan.namespace.as_str();
    apply(ctx, ns, &children.service_account).await?;
    apply(ctx, ns, &children.role).await?;
    apply(ctx, ns, &children.role_binding).await?;
    apply(ctx, ns, &children.config_map).await?;
    let mut desired = children.deployment.clone();
    let mut always = false;
    if plan.autoscaled(cluster) {
        match hand_replicas_to_hpa(ctx, ns, &desired).await? {
            Handoff::NoDeployment => {
                // Start at spec.replicas rather than the API default of 1.
                let a = &cluster.spec.autoscaling;
                let max = a.max_replicas.unwrap_or(i32::MAX).max(a.min_replicas);
                if let Some(spec) = desired.spec.as_mut() {
                    spec.replicas = Some(cluster.spec.replicas.clamp(a.min_replicas, max));
                }
            }
            Handoff::HandedOff => always = true,
            Handoff::Nothing => {}
        }
    }
    let deployment = apply_with(ctx, ns, &desired, always).await?;
    apply(ctx, ns, &children.service).await?;
    let uid = cluster.metadata.uid.as_deref();
    match &children.pdb {
        Some(p) => {
            apply(ctx, ns, p).await?;
        }
        None => prune::<PodDisruptionBudget>(ctx, ns, &plan.name, uid, None).await?,
    }
    match &children.hpa {
        Some(h) => {
            apply(ctx, ns, h).await?;
        }
        None => prune::<HorizontalPodAutoscaler>(ctx, ns, &plan.name, uid, None).await?,
    }
    if let Some(l) = &children.lease {
        apply(ctx, ns, l).await?;
    }
    Ok(deployment)
}

/// Secret keys the spec refers to that do not exist (the Pods could not start).
async fn missing_secrets(ctx: &Context, cluster: &SmscCluster, ns: &str) -> Result<Vec<String>> {
    let spec = &cluster.spec;
    let mut refs: Vec<(String, Option<String>)> = Vec::new();
    for u in &spec.upstreams {
        let c = &u.credentials_secret_ref;
        refs.push((c.name.clone(), Some(c.system_id_key.clone())));
        refs.push((c.name.clone(), Some(c.password_key.clone())));
        if let Some(ca) = u.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
            refs.push((ca.name.clone(), Some(ca.key.clone())));
        }
    }
    for a in &spec.smpp.accounts {
        refs.push((a.password_secret_ref.name.clone(), Some(a.password_secret_ref.key.clone())));
    }
    if let (DlrStoreType::Redis, Some(r)) = (spec.dlr_store.type_, &spec.dlr_store.redis) {
        refs.push((r.url_secret_ref.name.clone(), Some(r.url_secret_ref.key.clone())));
    }
    if let Some(t) = &spec.smpp.tls {
        refs.push((t.secret_name.clone(), None));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut cache: HashMap<String, Option<Secret>> = HashMap::new();
    let mut missing = Vec::new();
    for (name, key) in refs {
        if !cache.contains_key(&name) {
            let s = api.get_opt(&name).await.map_err(|e| Error::kube(Verb::Get, "Secret", &name, e))?;
            cache.insert(name.clone(), s);
        }
        let present = match (cache.get(&name).and_then(|s| s.as_ref()), &key) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(s), Some(k)) => {
                s.data.as_ref().is_some_and(|d| d.contains_key(k))
                    || s.string_data.as_ref().is_some_and(|d| d.contains_key(k))
            }
        };
        if !present {
            let item = match key {
                Some(k) => format!("{name}/{k}"),
                None => name,
            };
            if !missing.contains(&item) {
                missing.push(item);
            }
        }
    }
    Ok(missing)
}

/// The Lease holder, if the Lease exists and names one.
fn lease_holder(ctx: &Context, ns: &str, cluster: &str) -> Option<String> {
    let lease = ctx.stores.leases.get(&ObjectRef::new(&labels::lease_name(cluster)).within(ns))?;
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone()).filter(|h| !h.is_empty())
}

/// Remove `smsc.io/role=active` from Pods that do not hold the Lease (e.g. a crashed leader's).
async fn fix_role_labels(ctx: &Context, ns: &str, cluster: &str, holder: Option<&str>) -> Result<()> {
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

/// The HPA's ScalingActive condition.
fn autoscaler_obs(h: &HorizontalPodAutoscaler) -> AutoscalerObs {
    let conds = h.status.as_ref().and_then(|s| s.conditions.as_ref());
    AutoscalerObs::from_conditions(
        &h.name_any(),
        conds
            .into_iter()
            .flatten()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_deref(), c.message.as_deref())),
    )
}

fn deployment_obs(d: &Deployment) -> DeploymentObs {
    let st = d.status.clone().unwrap_or_default();
    DeploymentObs {
        generation: d.metadata.generation,
        observed_generation: st.observed_generation,
        desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        replicas: st.replicas.unwrap_or(0),
        ready: st.ready_replicas.unwrap_or(0),
        updated: st.updated_replicas.unwrap_or(0),
        available: st.available_replicas.unwrap_or(0),
        image: d.spec.as_ref().and_then(|s| {
            let cs = &s.template.spec.as_ref()?.containers;
            cs.iter().find(|c| c.name == build::deployment::CONTAINER).or(cs.first())?.image.clone()
        }),
    }
}

async fn patch_status(ctx: &Context, cluster: &SmscCluster, new: &SmscClusterStatus) -> Result<()> {
    if cluster.status.as_ref() == Some(new) {
        return Ok(());
    }
    let name = cluster.name_any();
    let api: Api<SmscCluster> = Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": format!("{}/{}", smsc_api::names::GROUP, smsc_api::crd::VERSION),
        "kind": "SmscCluster",
        "status": new,
    });
    api.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|e| Error::kube(Verb::PatchStatus, "SmscCluster", &name, e))?;
    Ok(())
}

fn was(old: Option<&SmscClusterStatus>, t: ConditionType, reason: &str) -> bool {
    old.and_then(|s| status::condition(s, t))
        .is_some_and(|c| c.status == ConditionStatus::True && c.reason == reason)
}

/// The typed SmscCluster, or [`Error::Malformed`] when the stored object does not fit the types.
pub fn parse(obj: &DynamicObject) -> Result<SmscCluster> {
    serde_json::to_value(obj)
        .and_then(serde_json::from_value)
        .map_err(|source| Error::Malformed { name: key(obj), source })
}

pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let res = reconcile_inner(&obj, &ctx).await;
    ctx.metrics.duration.observe(started.elapsed().as_secs_f64());
    if res.is_ok() {
        ctx.clear_failures(&key(&obj));
    }
    res
}

async fn reconcile_inner(obj: &DynamicObject, ctx: &Context) -> Result<Action> {
    let cluster = match parse(obj) {
        Ok(c) => c,
        Err(err) => {
            // Retrying cannot help: wait for the object to change.
            tracing::warn!(error = %err, "skipping malformed SmscCluster");
            ctx.metrics.error(err.metric_label());
            ctx.event(obj, EventType::Warning, err.reason(), err.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    if cluster.metadata.deletion_timestamp.is_some() {
        ctx.forget(&key(obj));
        // Children go with it through their owner references.
        return Ok(Action::await_change());
    }
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let old = cluster.status.as_ref();
    ctx.stores.synced().await?;

    // Validate (pure).
    let plan = build::plan(&cluster, &ctx.settings.smscd_image, &ns)?;
    let selector = labels::selector_string(&labels::selector(&name));

    if cluster.spec.paused {
        let d = cached::<Deployment>(ctx, &ns, &name);
        let inputs = Inputs {
            generation: cluster.metadata.generation,
            paused: true,
            checklist: &plan.checklist,
            decision: &plan.decision,
            selector,
            deployment: d.as_ref().map(deployment_obs),
            active_pod: old.and_then(|s| s.active_pod.clone()),
            problem: None,
            autoscaler: cached::<HorizontalPodAutoscaler>(ctx, &ns, &name).as_ref().map(autoscaler_obs),
        };
        let new = status::compute(old, &inputs, &status::now());
        patch_status(ctx, &cluster, &new).await?;
        return Ok(Action::await_change());
    }

    // Fetch what the spec refers to.
    let missing = missing_secrets(ctx, &cluster, &ns).await?;
    let problem = (!missing.is_empty()).then(|| {
        ("SecretMissing".to_string(), format!("referenced Secret keys do not exist: {}", missing.join(", ")))
    });
    if let Some((reason, message)) = &problem {
        if !was(old, ConditionType::Degraded, reason) {
            ctx.event(obj, EventType::Warning, reason, message.clone()).await;
        }
    }

    let deployment = match &plan.decision {
        d @ Decision::Refused { .. } => {
            // Leave the running children exactly as they are.
            let reason = d.refused_reason().unwrap_or_default();
            if !was(old, ConditionType::Degraded, &reason) {
                let note = d.refused_note().unwrap_or_default();
                tracing::warn!(%ns, %name, %note);
                ctx.event(obj, EventType::Warning, &reason, note).await;
            }
            cached::<Deployment>(ctx, &ns, &name)
        }
        Decision::Run(topology) => {
            let children = build::children(&cluster, &plan)?;
            let d = apply_children(ctx, &cluster, &plan, &children).await?;
            let before = ctx.written_topology(&key(obj)).or(old.and_then(|s| s.topology));
            if before != Some(*topology) {
                let (type_, note) = match (topology, cluster.spec.topology) {
                    (Topology::ActiveStandby, Topology::Auto) => {
                        let unmet: Vec<_> =
                            plan.checklist.iter().filter(|i| !i.satisfied).map(|i| i.name).collect();
                        (
                            EventType::Warning,
                            format!("running ActiveStandby: unmet checklist items {}", names(&unmet)),
                        )
                    }
                    (t, _) => (EventType::Normal, format!("running {}", t.as_str())),
                };
                ctx.event(obj, type_, "TopologyChanged", note).await;
            }
            d
        }
    };

    let topology = match plan.decision {
        Decision::Run(t) => Some(t),
        Decision::Refused { .. } => old.and_then(|s| s.topology),
    };
    let holder = if topology == Some(Topology::ActiveStandby) { lease_holder(ctx, &ns, &name) } else { None };
    let autoscaler = match plan.decision {
        Decision::Run(_) if plan.autoscaled(&cluster) => Some(
            cached::<HorizontalPodAutoscaler>(ctx, &ns, &name)
                .as_ref()
                .map(autoscaler_obs)
                .unwrap_or_else(AutoscalerObs::missing),
        ),
        _ => None,
    };
    fix_role_labels(ctx, &ns, &name, holder.as_deref()).await?;

    let inputs = Inputs {
        generation: cluster.metadata.generation,
        paused: false,
        checklist: &plan.checklist,
        decision: &plan.decision,
        selector,
        deployment: deployment.as_ref().map(deployment_obs),
        active_pod: holder,
        problem,
        autoscaler,
    };
    let new = status::compute(old, &inputs, &status::now());
    patch_status(ctx, &cluster, &new).await?;
    if let Some(t) = new.topology {
        ctx.set_written_topology(key(obj), t);
    }
    Ok(Action::requeue(RESYNC))
}

pub fn error_policy(obj: Arc<DynamicObject>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.record_failure(&key(&obj));
    let wait = backoff(n);
    ctx.metrics.error(err.metric_label());
    tracing::warn!(object = %key(&obj), error = %err, retry_in = ?wait, "reconcile failed");
    let (reason, note) = (err.reason(), err.to_string());
    let ctx2 = ctx.clone();
    tokio::spawn(async move { ctx2.event(&obj, EventType::Warning, reason, note).await });
    Action::requeue(wait)
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
fn changed_filter<T: ResourceExt>(
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
fn in_store<K>(store: &Store<K>, key: &str) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    store.get(&ObjectRef::new(name).within(ns)).is_some()
}

fn api_for<K>(client: &Client, ns: &Option<String>) -> Api<K>
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
fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// A watch feeding `writer`'s cache (trimmed by `trim`), yielding each object after the cache
/// holds it, so the reconcile it triggers reads it back.
fn reflect<K>(
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
fn reflect_material<K, F>(
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

fn hash_of(v: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// What a reconcile reads of a Deployment (plus its labels and annotations, which an apply
/// would restore).
fn deployment_material(d: &Deployment) -> u64 {
    hash_of(&(
        deployment_obs(d),
        &d.metadata.labels,
        &d.metadata.annotations,
        d.metadata.deletion_timestamp.is_some(),
    ))
}

/// A spec change bumps the generation; status echoes (ours) and label edits do not matter.
fn cluster_material(c: &DynamicObject) -> u64 {
    hash_of(&(c.metadata.generation, c.metadata.deletion_timestamp.is_some()))
}

fn trim<K: kube::Resource>(o: &mut K) {
    trim_meta(o.meta_mut());
}

/// Deployments: the reconcile reads the spec (to compare) and the replica counts, not the
/// conditions kube-controller-manager keeps rewriting.
fn trim_deployment(d: &mut Deployment) {
    trim_meta(&mut d.metadata);
    if let Some(st) = d.status.as_mut() {
        st.conditions = None;
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let ns = ctx.settings.namespace.clone();
    let ar = ctx.resource.clone();
    let clusters: Api<DynamicObject> = match &ns {
        Some(n) => Api::namespaced_with(client.clone(), n, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let cluster_writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
    let cluster_store = cluster_writer.as_reader();
    let cluster_trigger = reflect_material(
        watcher(clusters, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|o: &mut DynamicObject| trim_meta(&mut o.metadata))
            .reflect(cluster_writer),
        cluster_material,
    );
    let Some(w) = ctx.writers.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        tracing::error!("controller::run called twice on one Context");
        return;
    };
    let children = watcher::Config::default().labels(&format!("{}={MANAGER}", labels::MANAGED_BY_LABEL));
    let lease_seen = Arc::new(Mutex::new(HashMap::new()));
    let pod_seen = Arc::new(Mutex::new(HashMap::new()));
    let (ar_l, ar_p) = (ar.clone(), ar.clone());
    let (lease_store, pod_store) = (ctx.stores.leases.clone(), ctx.stores.pods.clone());
    let c = &client;
    let deployments = reflect_material(
        watcher(api_for::<Deployment>(c, &ns), children.clone())
            .default_backoff()
            .modify(trim_deployment)
            .reflect(w.deployments),
        deployment_material,
    );
    Controller::for_stream_with(cluster_trigger, cluster_store, ar.clone())
        .with_config(RuntimeConfig::default().debounce(Duration::from_millis(500)).concurrency(CONCURRENCY))
        .owns_stream(deployments)
        .owns_stream(reflect(api_for::<Service>(c, &ns), &children, w.services, trim))
        .owns_stream(reflect(api_for::<ConfigMap>(c, &ns), &children, w.config_maps, trim))
        .owns_stream(reflect(api_for::<PodDisruptionBudget>(c, &ns), &children, w.pdbs, trim))
        .owns_stream(reflect(api_for::<HorizontalPodAutoscaler>(c, &ns), &children, w.hpas, trim))
        .owns_stream(reflect(api_for::<ServiceAccount>(c, &ns), &children, w.service_accounts, trim))
        .owns_stream(reflect(api_for::<Role>(c, &ns), &children, w.roles, trim))
        .owns_stream(reflect(api_for::<RoleBinding>(c, &ns), &children, w.role_bindings, trim))
        .watches_stream(
            // By label, like every child: the operator creates (or adopts) each cluster's Lease.
            reflect(api_for::<Lease>(c, &ns), &children, w.leases, trim),
            move |lease: Lease| {
                let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone()).unwrap_or_default();
                let cluster = lease.labels().get(labels::INSTANCE_LABEL).cloned();
                let cached = |k: &str| in_store(&lease_store, k);
                changed_filter(&lease_seen, &lease, holder, cluster, &ar_l, cached, lease_store.len())
            },
        )
        .watches_stream(
            // Api<PartialObjectMeta<_>> watches metadata only.
            reflect(api_for::<PartialObjectMeta<Pod>>(c, &ns), &children, w.pods, trim),
            move |pod: PartialObjectMeta<Pod>| {
                let role = pod.labels().get(ROLE_LABEL).cloned().unwrap_or_default();
                let cluster = pod.labels().get(labels::INSTANCE_LABEL).cloned();
                let cached = |k: &str| in_store(&pod_store, k);
                changed_filter(&pod_seen, &pod, role, cluster, &ar_p, cached, pod_store.len())
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| {
            let ctx = ctx.clone();
            async move {
                match res {
                    Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                    // A Lease or Pod that maps to no SmscCluster (e.g. another component's Lease).
                    Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                        // Also how a deleted SmscCluster's last trigger ends: forget it.
                        let ns = obj.namespace.clone().unwrap_or_default();
                        ctx.forget(&format!("{ns}/{}", obj.name));
                        tracing::debug!(object = %obj, "trigger for an SmscCluster that does not exist")
                    }
                    // Watch and reconcile errors are logged; the stream itself keeps going.
                    Err(e) => tracing::warn!(error = %e, "controller"),
                }
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backoff_doubles_and_caps() {
        let secs: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn subset_ignores_server_defaults_but_not_changes() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 2775}], "empty": {}, "none": null}});
        let observed =
            json!({"spec": {"replicas": 2, "ports": [{"port": 2775, "protocol": "TCP"}], "extra": 1}});
        assert!(is_subset(&desired, &observed));
        assert!(!is_subset(&json!({"spec": {"replicas": 3}}), &observed));
        assert!(!is_subset(&json!({"spec": {"ports": [{"port": 2775}, {"port": 8775}]}}), &observed));
        assert!(!is_subset(&json!({"spec": {"missing": 1}}), &observed));
    }

    fn dynamic(spec: serde_json::Value) -> DynamicObject {
        let obj = json!({
            "apiVersion": "smsc.io/v1alpha1", "kind": "SmscCluster",
            "metadata": { "name": "sms", "namespace": "default" },
            "spec": spec,
        });
        serde_json::from_value(obj).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn malformed_objects_are_reported_not_fatal() {
        let ok = parse(&dynamic(json!({ "replicas": 3 }))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.spec.replicas, 3);
        let err = parse(&dynamic(json!({ "replicas": "three", "topology": "Sideways" }))).err();
        let err = err.unwrap_or_else(|| panic!("parsed a malformed object"));
        assert_eq!(err.metric_label(), "malformed_object");
        assert!(err.to_string().contains("default/sms"), "{err}");
    }

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

    #[test]
    fn trimmed_deployments_keep_what_the_reconcile_reads() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "sms", "namespace": "default", "generation": 2,
                "annotations": { LAST_APPLIED: "{}", "keep": "1" },
                "managedFields": [{ "manager": "x", "operation": "Apply" }] },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": { "replicas": 2, "readyReplicas": 1, "conditions": [{ "type": "Available", "status": "True" }] },
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let before = deployment_obs(&d);
        trim_deployment(&mut d);
        assert_eq!(deployment_obs(&d), before);
        assert!(d.metadata.managed_fields.is_none());
        assert_eq!(d.metadata.annotations.as_ref().map(|a| a.len()), Some(1));
        assert!(d.status.as_ref().is_some_and(|s| s.conditions.is_none()));
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
    fn a_deleted_cluster_is_forgotten() {
        let mut m = PerCluster::default();
        assert_eq!(m.record_failure("ns/a"), 1);
        assert_eq!(m.record_failure("ns/a"), 2);
        m.written_topology.insert("ns/a".into(), Topology::ActiveStandby);
        m.written_topology.insert("ns/b".into(), Topology::ActiveActive);
        m.forget("ns/a");
        assert_eq!(m.len(), 1);
        assert_eq!(m.written_topology.get("ns/b"), Some(&Topology::ActiveActive));
        m.forget("ns/b");
        assert_eq!(m.len(), 0);
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
