//! Issue 8, "Operator scale": the operator binary against N SmscClusters on the real control
//! plane. Measured, never asserted, except that a quiet period makes zero writes.
//!
//! `operator_scale` (ignored; `make bench-operator`):
//! 1. creates N SmscClusters (default 1000, 16 creates in flight) and times, from the first
//!    create, until every one has its children and a status at its generation (reconciled), and
//!    counts the Available ones a short while after (one replica with the memory DLR store runs
//!    without election, ActiveActive, since issue 14: no Lease holder is needed for Available);
//! 2. samples the operator's VmRSS/VmHWM from /proc throughout;
//! 3. reads `smsc_operator_api_requests_total` for requests per reconcile and per cluster;
//! 4. once settled, watches a quiet period: the operator's writes and the resourceVersions /
//!    generations of what only it writes must not move;
//! 5. changes the image of K clusters one at a time and times until the Deployment has it.
//!
//! Each cluster has `replicas: 1`: the least work for kube-controller-manager, the scheduler
//! and kwok (one ReplicaSet, one Pod) that still runs the whole Deployment status path, and no
//! PDB (one replica), so six children each: ServiceAccount, Role, RoleBinding, ConfigMap,
//! Deployment and Service (no election Lease: the memory store never runs active/standby).
//!
//! Environment (defaults): OPSCALE_N (1000), OPSCALE_CONCURRENCY (16), OPSCALE_WAIT_SECS (900,
//! until reconciled; also bounds settling), OPSCALE_AVAILABLE_SECS (15, after reconciled; not
//! fatal), OPSCALE_QUIET_SECS (60), OPSCALE_SPEC_CHANGES (20). The operator binary is the
//! one `smsc_e2e::smsc::binaries` finds (`SMSC_E2E_BIN_DIR`: `make bench-operator` uses release).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use smsc_api::crd::{ConditionStatus, ConditionType, SmscCluster};
use smsc_e2e::smsc::{binaries, http_get, metric_sum, Operator, WorkDir};
use smsc_e2e::{control_plane, TestNamespace};

const MANAGED: &str = "app.kubernetes.io/managed-by=smsc-operator";
const INSTANCE: &str = "app.kubernetes.io/instance";
const POLL: Duration = Duration::from_millis(500);
/// Between progress checks: each lists every SmscCluster and child (7 N objects), load on the API
/// server the operator competes with; the times it reports are this coarse.
const PROGRESS_POLL: Duration = Duration::from_secs(2);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn cluster_name(i: u64) -> String {
    format!("s{i:05}")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// (VmRSS, VmHWM) in KiB of a process.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (utime + stime) of a process, in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// The control plane's processes (name, pid), from the state dir `tools/cluster.sh` names next to
/// the kubeconfig; empty when the cluster was not started by it.
fn control_plane_pids(kubeconfig: &std::path::Path) -> Vec<(&'static str, u32)> {
    let names = ["kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok"];
    let Some(state) = kubeconfig
        .parent()
        .and_then(|d| std::fs::read_to_string(d.join("state")).ok())
        .map(|s| std::path::PathBuf::from(s.trim()))
    else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|n| {
            let pid = std::fs::read_to_string(state.join("pids").join(format!("{n}.pid"))).ok()?;
            Some((*n, pid.trim().parse().ok()?))
        })
        .collect()
}

/// CPU seconds of the operator and of each control-plane process at one moment.
#[derive(Clone, Debug, Default)]
struct Cpu(Vec<(&'static str, f64)>);

impl Cpu {
    fn read(procs: &[(&'static str, u32)]) -> Cpu {
        Cpu(procs.iter().map(|(n, pid)| (*n, cpu_secs(*pid).unwrap_or(f64::NAN))).collect())
    }

    /// "name secs (cores)" per process since `before`, over `wall`.
    fn since(&self, before: &Cpu, wall: Duration) -> String {
        self.0
            .iter()
            .zip(&before.0)
            .map(|((n, a), (_, b))| {
                let d = a - b;
                format!("{n} {d:.1} s ({:.2})", d / wall.as_secs_f64().max(1e-9))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn of(&self, name: &str) -> f64 {
        self.0.iter().find(|(n, _)| *n == name).map_or(f64::NAN, |(_, v)| *v)
    }
}

/// Samples the operator's RSS every 100 ms until dropped; keeps the largest VmRSS seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    pid: u32,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, p) = (stop.clone(), peak.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some((rss, _)) = rss_kib(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RssSampler { stop, peak, pid, task }
    }

    /// (peak sampled VmRSS, VmRSS now, VmHWM now) in MiB.
    fn mib(&self) -> (f64, f64, f64) {
        let (rss, hwm) = rss_kib(self.pid).unwrap_or((0, 0));
        let m = |k: u64| k as f64 / 1024.0;
        (m(self.peak.load(Ordering::Relaxed).max(rss)), m(rss), m(hwm))
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// The operator's counters, from its /metrics.
#[derive(Clone, Debug, Default)]
struct Counters {
    reconciles: f64,
    child_writes: f64,
    requests: BTreeMap<(String, String), f64>,
}

impl Counters {
    async fn read(port: u16) -> anyhow::Result<Counters> {
        let (status, text) = http_get(port, "/metrics").await?;
        ensure!(status == 200, "/metrics answered {status}");
        let mut requests = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("smsc_operator_api_requests_total{")) {
            let label = |k: &str| {
                line.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).map(str::to_string)
            };
            let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if let (Some(verb), Some(res), Some(v)) = (label("verb"), label("resource"), value) {
                requests.insert((verb, res), v);
            }
        }
        Ok(Counters {
            reconciles: metric_sum(&text, "smsc_operator_reconciles_total", &[]),
            child_writes: metric_sum(&text, "smsc_operator_child_writes_total", &[]),
            requests,
        })
    }

    fn total(&self) -> f64 {
        self.requests.values().sum()
    }

    fn writes(&self) -> f64 {
        self.requests.iter().filter(|((v, _), _)| is_write(v)).map(|(_, n)| n).sum()
    }

    /// Requests since `before`, by (verb, resource), largest first.
    fn since(&self, before: &Counters) -> Vec<((String, String), f64)> {
        let mut d: Vec<_> = self
            .requests
            .iter()
            .map(|(k, v)| (k.clone(), v - before.requests.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect();
        d.sort_by(|a, b| b.1.total_cmp(&a.1));
        d
    }
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

/// Cluster instances that have a child of kind `K`.
async fn instances<K>(ns: &TestNamespace) -> anyhow::Result<BTreeSet<String>>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    let list = ns.api::<K>().list_metadata(&ListParams::default().labels(MANAGED)).await?;
    Ok(list.items.iter().filter_map(|o| o.labels().get(INSTANCE).cloned()).collect())
}

/// (name -> version) of what only the operator writes: SmscClusters' and status-less children's
/// resourceVersions, the Deployments' generations (kube-controller-manager writes their status).
async fn fingerprint(ns: &TestNamespace) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    async fn rvs<K>(ns: &TestNamespace, kind: &str, out: &mut BTreeMap<String, String>) -> anyhow::Result<()>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        for o in ns.api::<K>().list_metadata(&ListParams::default()).await?.items {
            out.insert(format!("{kind}/{}", o.name_any()), o.resource_version().unwrap_or_default());
        }
        Ok(())
    }
    rvs::<SmscCluster>(ns, "SmscCluster", &mut out).await?;
    rvs::<ServiceAccount>(ns, "ServiceAccount", &mut out).await?;
    rvs::<Role>(ns, "Role", &mut out).await?;
    rvs::<RoleBinding>(ns, "RoleBinding", &mut out).await?;
    rvs::<ConfigMap>(ns, "ConfigMap", &mut out).await?;
    rvs::<Service>(ns, "Service", &mut out).await?;
    for d in ns.api::<Deployment>().list_metadata(&ListParams::default()).await?.items {
        out.insert(format!("Deployment/{}", d.name_any()), format!("{:?}", d.metadata.generation));
    }
    Ok(out)
}

/// Deployments' resourceVersions: kube-controller-manager's status writes, which the SmscCluster
/// status follows (context for any status patch in the quiet period).
async fn deployment_rvs(ns: &TestNamespace) -> anyhow::Result<BTreeMap<String, String>> {
    let list = ns.api::<Deployment>().list_metadata(&ListParams::default()).await?.items;
    Ok(list.iter().map(|d| (d.name_any(), d.resource_version().unwrap_or_default())).collect())
}

/// Per cluster: reconciled (status at its generation, not degraded, not paused) and Available.
fn cluster_state(c: &SmscCluster) -> (bool, bool) {
    let Some(st) = &c.status else { return (false, false) };
    let cond = |t: ConditionType| st.conditions.iter().find(|c| c.type_ == t).map(|c| c.status);
    let reconciled = st.observed_generation.is_some()
        && st.observed_generation == c.metadata.generation
        && cond(ConditionType::Degraded) == Some(ConditionStatus::False)
        && cond(ConditionType::ReconciliationPaused) == Some(ConditionStatus::False);
    (reconciled, cond(ConditionType::Available) == Some(ConditionStatus::True))
}

#[derive(Debug, Default)]
struct Progress {
    children: usize,
    reconciled: usize,
    available: usize,
}

async fn progress(ns: &TestNamespace) -> anyhow::Result<Progress> {
    let sets = [
        instances::<ServiceAccount>(ns).await?,
        instances::<Role>(ns).await?,
        instances::<RoleBinding>(ns).await?,
        instances::<ConfigMap>(ns).await?,
        instances::<Deployment>(ns).await?,
        instances::<Service>(ns).await?,
    ];
    let clusters = ns.api::<SmscCluster>().list(&ListParams::default()).await?.items;
    let mut p = Progress::default();
    for c in &clusters {
        let name = c.name_any();
        let children = sets.iter().all(|s| s.contains(&name));
        let (reconciled, available) = cluster_state(c);
        p.children += usize::from(children);
        p.reconciled += usize::from(children && reconciled);
        p.available += usize::from(children && reconciled && available);
    }
    Ok(p)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: make bench-operator"]
async fn operator_scale() -> anyhow::Result<()> {
    let n = env_u64("OPSCALE_N", 1000);
    let concurrency = env_u64("OPSCALE_CONCURRENCY", 16).max(1) as usize;
    let wait = Duration::from_secs(env_u64("OPSCALE_WAIT_SECS", 900));
    let available_wait = Duration::from_secs(env_u64("OPSCALE_AVAILABLE_SECS", 15));
    let quiet = Duration::from_secs(env_u64("OPSCALE_QUIET_SECS", 60));
    let changes = env_u64("OPSCALE_SPEC_CHANGES", 20).min(n);
    let load_start = load_average();

    binaries()?;
    let cp = control_plane().await?;
    smsc_e2e::smsc::install_crd(cp.client().await?, Duration::from_secs(60)).await?;
    let ns = cp.namespace("opscale").await?;
    let dir = WorkDir::new("smsc-opscale")?;
    let operator = Operator::start(&dir, cp.kubeconfig(), ns.name()).await?;
    let pid = operator.proc.pid().context("the operator has no pid")?;
    let rss = RssSampler::start(pid);
    let (_, rss_idle, _) = rss.mib();
    let c0 = Counters::read(operator.metrics).await?;
    let mut procs = vec![("operator", pid)];
    procs.extend(control_plane_pids(cp.kubeconfig()));
    let cpu0 = Cpu::read(&procs);
    eprintln!("[opscale] operator pid {pid} up, {rss_idle:.1} MiB; creating {n} SmscClusters");

    // 1. Create.
    let api: Api<SmscCluster> = ns.api();
    let t0 = Instant::now();
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let obj: SmscCluster = serde_json::from_value(serde_json::json!({
                    "apiVersion": "smsc.io/v1alpha1", "kind": "SmscCluster",
                    "metadata": { "name": cluster_name(i) },
                    "spec": { "replicas": 1, "routing": { "defaultChain": ["sim"] } },
                }))?;
                api.create(&PostParams::default(), &obj).await?;
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let t_created = t0.elapsed();
    created.into_iter().collect::<anyhow::Result<Vec<()>>>().context("creating the SmscClusters")?;
    eprintln!("[opscale] {n} created in {:.1} s", t_created.as_secs_f64());

    // 2. Wait: children, then reconciled, then Available.
    let total = usize::try_from(n)?;
    let (mut t_children, mut t_reconciled, mut t_available) = (None, None, None);
    let mut c_reconciled = None;
    let mut cpu_reconciled = None;
    let deadline = Instant::now() + wait;
    let mut available_deadline = None;
    let mut last_print = Instant::now();
    let mut p;
    loop {
        p = match progress(&ns).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("[opscale] progress: {e:#}");
                Progress::default()
            }
        };
        let now = t0.elapsed();
        if t_children.is_none() && p.children == total {
            t_children = Some(now);
        }
        if t_reconciled.is_none() && p.reconciled == total {
            t_reconciled = Some(now);
            c_reconciled = Some(Counters::read(operator.metrics).await?);
            cpu_reconciled = Some(Cpu::read(&procs));
            available_deadline = Some(Instant::now() + available_wait);
        }
        if p.available == total {
            t_available = Some(now);
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            eprintln!(
                "[opscale] t={:>5.1}s children {}/{total} reconciled {} available {} rss {:.1} MiB load {}",
                now.as_secs_f64(),
                p.children,
                p.reconciled,
                p.available,
                rss.mib().1,
                load_average()
            );
        }
        // kwok leaves a Pod unready after its fake Node flapped NotReady (late heartbeats on a
        // loaded machine): Available is reported as far as it got, the rest still runs.
        if available_deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!("[opscale] only {}/{total} Available after {available_wait:?}", p.available);
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "after {wait:?}: {p:?} of {total}; operator log:\n{}",
            tail(&operator.proc.log(), 40)
        );
        tokio::time::sleep(PROGRESS_POLL).await;
    }
    let load_created = load_average();
    let c_available = Counters::read(operator.metrics).await?;
    let cpu_available = Cpu::read(&procs);
    let t_done = t0.elapsed();
    let c_rec = c_reconciled.clone().unwrap_or_else(|| c_available.clone());

    // 3. Settle: no reconcile for 10 s (bounded), then the quiet period.
    let settle_deadline = Instant::now() + wait;
    let mut last = Counters::read(operator.metrics).await?.reconciles;
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(10) {
        ensure!(Instant::now() < settle_deadline, "the operator never settled");
        tokio::time::sleep(POLL).await;
        let r = Counters::read(operator.metrics).await?.reconciles;
        if r != last {
            (last, still_since) = (r, Instant::now());
        }
    }
    let (_, rss_settled, _) = rss.mib();
    let fp0 = fingerprint(&ns).await?;
    let d0 = deployment_rvs(&ns).await?;
    let q0 = Counters::read(operator.metrics).await?;
    let cpu_q0 = Cpu::read(&procs);
    eprintln!("[opscale] settled; quiet period of {} s", quiet.as_secs());
    tokio::time::sleep(quiet).await;
    let q1 = Counters::read(operator.metrics).await?;
    let cpu_q1 = Cpu::read(&procs);
    let fp1 = fingerprint(&ns).await?;
    let d1 = deployment_rvs(&ns).await?;
    let deployments_moved = d0.iter().filter(|(k, v)| d1.get(*k) != Some(v)).count();
    let moved: Vec<&String> = fp0.iter().filter(|(k, v)| fp1.get(*k) != Some(v)).map(|(k, _)| k).collect();

    // 4. Spec changes, one at a time.
    let deployments: Api<Deployment> = ns.api();
    let mut lat = Vec::new();
    for i in 0..changes {
        let name = cluster_name(i * (n / changes.max(1)));
        let image = format!("smscd:opscale-{i}");
        let start = Instant::now();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "image": image } })),
        )
        .await?;
        let limit = start + Duration::from_secs(60);
        loop {
            let d = deployments.get(&name).await?;
            let has = d
                .spec
                .and_then(|s| s.template.spec)
                .is_some_and(|s| s.containers.iter().any(|c| c.image.as_deref() == Some(image.as_str())));
            if has {
                lat.push(start.elapsed());
                break;
            }
            ensure!(Instant::now() < limit, "Deployment {name} never got {image}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    lat.sort();
    let (rss_peak, rss_end, hwm) = rss.mib();
    let load_end = load_average();

    // 5. Report.
    let secs = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    let rec_reconciles = c_rec.reconciles - c0.reconciles;
    let rec_requests = c_rec.total() - c0.total();
    let all_reconciles = c_available.reconciles - c0.reconciles;
    let all_requests = c_available.total() - c0.total();
    let per = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!(
        "\nOperator scale: {n} SmscClusters (replicas 1, 6 children each), {concurrency} creates in flight"
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| all {n} created | {:.1} s |", t_created.as_secs_f64());
    println!("| every cluster has its 6 children | {} |", secs(t_children));
    println!("| every cluster reconciled (children + status at generation) | {} |", secs(t_reconciled));
    println!(
        "| every cluster Available (paced by kube-controller-manager) | {} ({}/{total}) |",
        secs(t_available),
        p.available
    );
    println!("| reconciles until reconciled / requests | {rec_reconciles} / {rec_requests} |");
    println!(
        "| requests per reconcile / per cluster (until reconciled) | {:.1} / {:.1} |",
        per(rec_requests, rec_reconciles),
        per(rec_requests, n as f64)
    );
    println!("| reconciles until Available / requests | {all_reconciles} / {all_requests} |");
    println!(
        "| requests per reconcile / per cluster (until Available) | {:.1} / {:.1} |",
        per(all_requests, all_reconciles),
        per(all_requests, n as f64)
    );
    println!(
        "| writes (API) / child writes until Available | {} / {} |",
        c_available.writes() - c0.writes(),
        c_available.child_writes - c0.child_writes
    );
    println!("| operator RSS idle / peak (sampled) / VmHWM / settled / end | {rss_idle:.1} / {rss_peak:.1} / {hwm:.1} / {rss_settled:.1} / {rss_end:.1} MiB |");
    println!(
        "| quiet {} s: API writes / child writes / reconciles / requests | {} / {} / {} / {} |",
        quiet.as_secs(),
        q1.writes() - q0.writes(),
        q1.child_writes - q0.child_writes,
        q1.reconciles - q0.reconciles,
        q1.total() - q0.total()
    );
    println!("| quiet: objects whose resourceVersion/generation moved | {} of {} |", moved.len(), fp0.len());
    println!("| quiet: Deployments whose status kube-controller-manager wrote | {deployments_moved} |");
    println!(
        "| spec change -> Deployment ({} changes) p50 / p90 / max | {:.0} / {:.0} / {:.0} ms |",
        lat.len(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.9).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    let cpu_rec = cpu_reconciled.clone().unwrap_or_else(|| cpu_available.clone());
    let op = |c: &Cpu| c.of("operator") - cpu0.of("operator");
    println!(
        "| operator CPU until reconciled / until Available | {:.1} s ({:.1} ms per cluster) / {:.1} s ({:.1} ms per cluster) |",
        op(&cpu_rec),
        op(&cpu_rec) * 1e3 / n as f64,
        op(&cpu_available),
        op(&cpu_available) * 1e3 / n as f64
    );
    println!("| CPU s (cores) until reconciled | {} |", cpu_rec.since(&cpu0, t_reconciled.unwrap_or(t_done)));
    println!("| CPU s (cores) until Available | {} |", cpu_available.since(&cpu0, t_done));
    println!("| CPU s (cores) during the quiet period | {} |", cpu_q1.since(&cpu_q0, quiet));
    println!("| load average: start / all Available / end | {load_start} / {load_created} / {load_end} |");
    println!("\nRequests until Available, by verb and resource:");
    for ((verb, res), v) in c_available.since(&c0) {
        println!("  {verb:<8} {res:<28} {v:>8}");
    }
    let quiet_reqs = q1.since(&q0);
    if !quiet_reqs.is_empty() {
        println!("Requests during the quiet period:");
        for ((verb, res), v) in quiet_reqs {
            println!("  {verb:<8} {res:<28} {v:>8}");
        }
    }
    ensure!(
        q1.writes() == q0.writes() && moved.is_empty(),
        "writes during the quiet period: {} API writes, moved: {:?}",
        q1.writes() - q0.writes(),
        moved.iter().take(10).collect::<Vec<_>>()
    );
    drop(rss);
    drop(operator);
    drop(ns);
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
