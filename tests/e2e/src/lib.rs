//! Test harness for the end-to-end tiers: a real Kubernetes control plane on 127.0.0.1.
//!
//! [`control_plane`] gives every test in a test binary the same control plane. It reuses one that
//! is already running (named by `KUBECONFIG` when that points at a loopback address, else the one
//! `make cluster-up` leaves at `$SMSC_CACHE/cluster/kubeconfig`), or starts its own with
//! `tools/cluster.sh up` in a directory private to this process and stops it when the process
//! exits (at exit, and by a watchdog should the process be killed). `SMSC_E2E_OWN_CLUSTER=1`
//! skips the reuse and always starts a private one.
//!
//! [`TestNamespace`] is a fresh namespace per test, deleted on drop.
//!
//! ```no_run
//! # async fn t() -> Result<(), smsc_e2e::Error> {
//! let cp = smsc_e2e::control_plane().await?;
//! let ns = cp.namespace("my-test").await?;
//! let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = ns.api();
//! # Ok(()) }
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub mod smsc;

/// What can go wrong while setting up or talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Setup(String),
    #[error("running {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed ({status}):\n{output}")]
    Command { cmd: String, status: String, output: String },
    #[error("kubeconfig {path}: {msg}")]
    Kubeconfig { path: PathBuf, msg: String },
    #[error("refusing to talk to {0}: tests only talk to 127.0.0.1")]
    NotLoopback(String),
    #[error("timed out after {timeout:?} waiting for {what}{last}")]
    Timeout { what: String, timeout: Duration, last: String },
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The repository root (this crate lives at `tests/e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// A fixture file or directory under `tests/e2e/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// The cache root: `$SMSC_CACHE`, else `~/.cache/smsc-operator`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SMSC_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/smsc-operator")
}

/// The fixed kubeconfig path of `make cluster-up`.
pub fn default_kubeconfig() -> PathBuf {
    cache_dir().join("cluster/kubeconfig")
}

/// A version pinned in `tools/k8s/versions.env` (e.g. `KUBE_VERSION`).
pub fn pinned_version(key: &str) -> Result<String> {
    let path = repo_root().join("tools/k8s/versions.env");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Setup(format!("reading {}: {e}", path.display())))?;
    text.lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .ok_or_else(|| Error::Setup(format!("{key} not found in {}", path.display())))
}

fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out =
        cmd.stdin(Stdio::null()).output().map_err(|source| Error::Spawn { cmd: shown.clone(), source })?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Ok(text);
    }
    text.push_str(&err);
    Err(Error::Command { cmd: shown, status: out.status.to_string(), output: text })
}

/// The directory holding etcd, kube-apiserver, kubectl, kwok and helm, built (or found cached)
/// by `tools/k8s/build.sh`. Building is a no-op when cached.
pub fn k8s_bin_dir() -> Result<&'static Path> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let res = BIN.get_or_init(|| {
        let script = repo_root().join("tools/k8s/build.sh");
        run(Command::new(&script).stdout(Stdio::null()).stderr(Stdio::inherit()))
            .map_err(|e| e.to_string())?;
        let out = run(Command::new(&script).arg("--bin-dir")).map_err(|e| e.to_string())?;
        Ok(PathBuf::from(out.trim()))
    });
    match res {
        Ok(p) => Ok(p.as_path()),
        Err(e) => Err(Error::Setup(e.clone())),
    }
}

/// The server URL of a kubeconfig file, if it is readable.
fn kubeconfig_server(path: &Path) -> Result<String> {
    let kc = Kubeconfig::read_from(path)
        .map_err(|e| Error::Kubeconfig { path: path.to_path_buf(), msg: e.to_string() })?;
    let current = kc.current_context.clone().unwrap_or_default();
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .ok_or_else(|| Error::Kubeconfig {
            path: path.to_path_buf(),
            msg: format!("no context {current:?}"),
        })?;
    kc.clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| Error::Kubeconfig {
            path: path.to_path_buf(),
            msg: format!("no server for cluster {cluster_name:?}"),
        })
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).unwrap_or(url);
    let host = rest.split('/').next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    host == "localhost"
        || host == "[::1]"
        || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Does the control plane named by this kubeconfig answer `/readyz`?
fn answers_readyz(kubeconfig: &Path) -> bool {
    let Ok(server) = kubeconfig_server(kubeconfig) else {
        return false;
    };
    if !is_loopback_url(&server) {
        return false;
    }
    let Ok(bin) = k8s_bin_dir() else {
        return false;
    };
    run(Command::new(bin.join("kubectl")).arg("--kubeconfig").arg(kubeconfig).args([
        "--request-timeout=5s",
        "get",
        "--raw",
        "/readyz",
    ]))
    .is_ok_and(|out| out.trim() == "ok")
}

/// The cluster directory this process started, stopped at exit.
static OWNED_CLUSTER_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn stop_owned_cluster() {
    if let Some(dir) = OWNED_CLUSTER_DIR.get() {
        let _ = Command::new(repo_root().join("tools/cluster.sh"))
            .arg("down")
            .env("SMSC_CLUSTER_DIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status();
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn ensure_started() -> Result<PathBuf> {
    // SMSC_E2E_OWN_CLUSTER=1: always a private cluster, never a shared one.
    let reuse = std::env::var_os("SMSC_E2E_OWN_CLUSTER").is_none_or(|v| v.is_empty() || v == "0");
    // 1. KUBECONFIG, when it names a running control plane on loopback.
    if let Some(kc) = std::env::var_os("KUBECONFIG").filter(|v| reuse && !v.is_empty()) {
        let first = std::env::split_paths(&kc).next().unwrap_or_default();
        if answers_readyz(&first) {
            return Ok(first);
        }
    }
    // 2. The one `make cluster-up` left running.
    let fixed = default_kubeconfig();
    if reuse && answers_readyz(&fixed) {
        return Ok(fixed);
    }
    // 3. Our own, in a directory private to this process.
    let bin = k8s_bin_dir()?;
    sweep_dead_test_clusters();
    let dir = cache_dir().join(format!("cluster-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Setup(format!("creating {}: {e}", dir.display())))?;
    if OWNED_CLUSTER_DIR.set(dir.clone()).is_ok() {
        // SAFETY: registers a plain extern "C" fn with no captured state.
        unsafe {
            libc::atexit(stop_owned_cluster);
        }
    }
    let started = Instant::now();
    let out = run(Command::new(repo_root().join("tools/cluster.sh"))
        .arg("up")
        .env("SMSC_CLUSTER_DIR", &dir)
        .env("SMSC_CLUSTER_OWNER_PID", std::process::id().to_string())
        // A private cluster has kwok Nodes only: a machine holds one real node (fixed kubelet
        // ports), and it belongs to the shared cluster of `make test` / `make cluster-up`.
        .env("SMSC_REAL_NODE", std::env::var("SMSC_E2E_PRIVATE_REAL_NODE").unwrap_or_else(|_| "0".into()))
        .env("PATH", prepend_path(bin))
        .stderr(Stdio::inherit()))?;
    eprintln!("smsc-e2e: started a control plane in {:.1?} ({})", started.elapsed(), out.trim());
    Ok(dir.join("kubeconfig"))
}

/// Stops the clusters of test processes that are gone (their watchdog normally does this; a
/// reboot or a killed watchdog leaves the directory behind).
fn sweep_dead_test_clusters() {
    let Ok(entries) = std::fs::read_dir(cache_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) =
            name.to_str().and_then(|n| n.strip_prefix("cluster-test-")).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = Command::new(repo_root().join("tools/cluster.sh"))
            .arg("down")
            .env("SMSC_CLUSTER_DIR", entry.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status();
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

fn prepend_path(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_else(|_| dir.as_os_str().to_owned())
}

/// The running control plane shared by the tests of one test binary.
#[derive(Debug)]
pub struct ControlPlane {
    kubeconfig: PathBuf,
    server: String,
}

/// Start (once per process) or reuse the control plane.
pub async fn control_plane() -> Result<&'static ControlPlane> {
    static CP: OnceLock<std::result::Result<ControlPlane, String>> = OnceLock::new();
    if let Some(cp) = CP.get() {
        return cp.as_ref().map_err(|e| Error::Setup(e.clone()));
    }
    // Starting blocks for seconds: keep it off the async worker threads.
    let res = tokio::task::spawn_blocking(|| {
        CP.get_or_init(|| {
            let kubeconfig = ensure_started().map_err(|e| e.to_string())?;
            let server = kubeconfig_server(&kubeconfig).map_err(|e| e.to_string())?;
            if !is_loopback_url(&server) {
                return Err(Error::NotLoopback(server).to_string());
            }
            Ok(ControlPlane { kubeconfig, server })
        })
    })
    .await
    .map_err(|e| Error::Setup(format!("starting the control plane: {e}")))?;
    res.as_ref().map_err(|e| Error::Setup(e.clone()))
}

impl ControlPlane {
    /// The admin kubeconfig of this control plane.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server URL (always on 127.0.0.1).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The client configuration (a fresh one: a [`Client`] belongs to the runtime it was made on).
    pub async fn config(&self) -> Result<Config> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| Error::Kubeconfig { path: self.kubeconfig.clone(), msg: e.to_string() })?;
        let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kubeconfig { path: self.kubeconfig.clone(), msg: e.to_string() })?;
        if !is_loopback_url(&config.cluster_url.to_string()) {
            return Err(Error::NotLoopback(config.cluster_url.to_string()));
        }
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(30));
        config.write_timeout = Some(Duration::from_secs(30));
        Ok(config)
    }

    /// An admin client for the current tokio runtime.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::try_from(self.config().await?)?)
    }

    /// A fresh namespace `<prefix>-<pid>-<n>`, deleted when the returned value drops.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut name = format!("{prefix}-{}-{n}", std::process::id())
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-");
        name.truncate(63);
        let name = name.trim_matches('-').to_string();
        let client = self.client().await?;
        let nss: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("smsc.io/e2e".to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        nss.create(&PostParams::default(), &ns).await?;
        // Pods are refused until the ServiceAccount controller made the `default` account.
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(&format!("ServiceAccount {name}/default"), Duration::from_secs(60), || {
            let sas = sas.clone();
            async move { sas.get_opt("default").await.map(|sa| sa.map(|_| ())) }
        })
        .await?;
        Ok(TestNamespace { name, client, kubeconfig: self.kubeconfig.clone() })
    }

    /// `kubectl` (the one built by tools/k8s) pointed at this control plane.
    pub fn kubectl(&self) -> Result<Command> {
        self.tool("kubectl")
    }

    /// `helm` (built by tools/k8s) pointed at this control plane, with its own config/cache dirs.
    pub fn helm(&self) -> Result<Command> {
        let mut cmd = self.tool("helm")?;
        let home = std::env::temp_dir().join(format!("smsc-e2e-helm-{}", std::process::id()));
        cmd.env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"));
        Ok(cmd)
    }

    fn tool(&self, name: &str) -> Result<Command> {
        let bin = k8s_bin_dir()?;
        let mut cmd = Command::new(bin.join(name));
        cmd.env("KUBECONFIG", &self.kubeconfig).env("PATH", prepend_path(bin)).stdin(Stdio::null());
        Ok(cmd)
    }

    /// Run a command from [`Self::kubectl`] or [`Self::helm`]; its stdout, or an error with its output.
    pub fn run(&self, cmd: &mut Command) -> Result<String> {
        run(cmd)
    }
}

/// A namespace for one test; deleted (without waiting for it to be gone) on drop.
pub struct TestNamespace {
    name: String,
    client: Client,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client on the runtime of the test that made this namespace.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A namespaced API in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("SMSC_E2E_KEEP_NAMESPACES").is_some() {
            eprintln!("smsc-e2e: keeping namespace {}", self.name);
            return;
        }
        // Drop cannot await, and the test's runtime may be shutting down: delete from a thread
        // with a runtime of its own.
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let cp = ControlPlane { server: String::new(), kubeconfig };
                let client = cp.client().await.map_err(|e| e.to_string())?;
                let nss: Api<Namespace> = Api::all(client);
                match tokio::time::timeout(
                    Duration::from_secs(15),
                    nss.delete(&name, &DeleteParams::background()),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(kube::Error::Api(s))) if s.code == 404 => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".to_string()),
                }
            })
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("smsc-e2e: deleting namespace {}: {e}", self.name),
            Err(_) => eprintln!("smsc-e2e: deleting namespace {} panicked", self.name),
        }
    }
}

/// Poll `probe` every 200 ms until it returns `Ok(Some(value))` or `timeout` passes.
/// `Ok(None)` and `Err` mean "not yet"; the last error or the last `describe`d state is reported.
pub async fn wait_for<T, E, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<Option<T>, E>>,
    E: std::fmt::Display,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), probe()).await {
            Ok(Ok(Some(v))) => return Ok(v),
            Ok(Ok(None)) => last.clear(),
            Ok(Err(e)) => last = format!(" (last error: {e})"),
            Err(_) => last = " (last probe timed out)".to_string(),
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout { what: what.to_string(), timeout, last });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_url;

    #[test]
    fn only_loopback_servers_count_as_local() {
        for url in [
            "https://127.0.0.1:6443",
            "https://127.0.0.1:6443/",
            "https://localhost:6443",
            "http://127.1.2.3:80/x",
            "https://[::1]:6443",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "https://10.0.0.1:6443",
            "https://example.com:443",
            "https://localhost.example.com:6443",
            "https://1127.0.0.1:6443",
            "https://[::2]:6443",
            "https://127.example.com:6443",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
