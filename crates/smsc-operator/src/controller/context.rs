//! The controller's shared state: settings, the caches, the Event recorder and what this
//! process remembers per cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::DynamicObject;
use kube::core::ApiResource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use smsc_api::crd::Topology;

use super::cache::{self, Stores, Writers};
use crate::labels::MANAGER;
use crate::metrics::Metrics;

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
    pub(super) resource: ApiResource,
    /// What this process remembers per cluster; forgotten when the cluster goes.
    memory: Mutex<PerCluster>,
    pub(super) stores: Stores,
    /// Taken by [`super::run`], which feeds the stores from its watches.
    pub(super) writers: Mutex<Option<Writers>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Arc<Self> {
        let reporter = Reporter { controller: MANAGER.into(), instance: settings.instance.clone() };
        let (stores, writers) = cache::stores();
        Arc::new(Context {
            stores,
            writers: Mutex::new(Some(writers)),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            resource: cache::api_resource(),
            memory: Mutex::new(PerCluster::default()),
        })
    }

    /// Resolves once every cache of [`super::run`]'s watches has listed (retrying while it has not).
    pub async fn synced(&self) {
        while self.stores.synced().await.is_err() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, PerCluster> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn record_failure(&self, key: &str) -> u32 {
        self.memory().record_failure(key)
    }

    pub(super) fn written_topology(&self, key: &str) -> Option<Topology> {
        self.memory().written_topology.get(key).copied()
    }

    pub(super) fn set_written_topology(&self, key: String, t: Topology) {
        self.memory().written_topology.insert(key, t);
    }

    pub(super) fn clear_failures(&self, key: &str) {
        self.memory().failures.remove(key);
    }

    /// The cluster is being deleted or gone: drop everything remembered about it.
    pub(super) fn forget(&self, key: &str) {
        self.memory().forget(key);
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        self.metrics.forget_cluster(ns, name);
    }

    pub(super) async fn event(&self, obj: &DynamicObject, type_: EventType, reason: &str, note: String) {
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

/// `namespace/name`, the key of everything remembered per cluster.
pub(super) fn key(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
