//! The SmscCluster controller, in layers that only call downward:
//!
//! - [`reconcile`]: one reconcile, fetch -> validate -> build (pure, `crate::build`) -> apply ->
//!   status;
//! - [`apply`]: the apply engine (server-side apply, prune, the HPA hand-off), with [`drift`]
//!   deciding whether a child needs applying;
//! - [`observe`]: reading the outside world (Secrets, the Lease holder, Deployment and HPA);
//! - [`pods`]: acting on the smscd Pods (the role label);
//! - [`context`]: shared state (settings, caches, Events, per-cluster memory);
//! - [`cache`]: the caches and the watches (reflectors) that fill them, with [`compact`] the
//!   form Deployments are kept in.
//!
//! [`run`] wires the watches to the reconcile.

mod apply;
mod cache;
mod compact;
mod context;
mod drift;
mod observe;
mod pods;
mod reconcile;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Future, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::{Config as RuntimeConfig, Controller};
use kube::runtime::reflector;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

pub use cache::{api_resource, Cached, Stores};
pub use context::{Context, Settings};
pub use drift::{is_subset, APPLIED_HASH_ANNOTATION};
pub use reconcile::{backoff, error_policy, parse, reconcile};

use crate::labels::{self, MANAGER};
use cache::{
    api_for, changed_filter, cluster_material, in_store, reflect, reflect_material, trim, trim_meta,
};

/// Reconciles in flight. Unbounded, a burst of creates opens one API connection per reconcile
/// (the client speaks HTTP/1.1) and the API server, not the operator, sets the pace anyway.
pub const CONCURRENCY: u16 = 16;

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
            .modify(observe::trim_deployment)
            .map_ok(|ev| compact::compact_event(ev, compact::CompactDeployment::new))
            .reflect(w.deployments),
        |d: &compact::CompactDeployment| d.material,
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
            // Whole Pods are listed (the waiting reasons are in the status) and kept compact.
            watcher(api_for::<Pod>(c, &ns), children.clone())
                .default_backoff()
                .map_ok(|ev| compact::compact_event(ev, compact::CompactPod::new))
                .reflect(w.pods)
                .touched_objects(),
            move |pod: compact::CompactPod| {
                let cluster = pod.labels().get(labels::INSTANCE_LABEL).cloned();
                let cached = |k: &str| in_store(&pod_store, k);
                changed_filter(
                    &pod_seen,
                    &pod,
                    observe::pod_material(&pod),
                    cluster,
                    &ar_p,
                    cached,
                    pod_store.len(),
                )
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
