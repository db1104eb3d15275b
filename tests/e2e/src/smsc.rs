//! smscd and the operator as local processes on 127.0.0.1, playing an SmscCluster's Pods.
//!
//! The control plane runs kwok: it schedules Pods but runs no containers. The failover tests
//! (tests/failover.rs) run one smscd process per Pod kwok made, under the Pod's name and with
//! the environment the kubelet would give its container ([`pod_env`], the Rust port of
//! tools/demo/podenv.py), so the Lease, the role label and the Service's EndpointSlice are the
//! real ones.
//!
//! Binaries: [`binaries`] runs `cargo build -p smscd -p smsc-operator --bins` once per test
//! process (a no-op when they are fresh; cargo does not hold the build lock while tests run) and
//! uses `$CARGO_TARGET_DIR` (else `<repo>/target`)`/debug`. `SMSC_E2E_BIN_DIR` names a directory
//! holding prebuilt `smscd` and `smsc-operator` instead and skips the build.
//!
//! Every process is killed (SIGKILL) and reaped when its [`Proc`] drops; logs go to a
//! per-test directory ([`WorkDir`]) kept when the test panics.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::Api;
use smpp::session::{esme, BindKind, Handler, Reply, Request, Session, SessionConfig};
use smpp::{Address, Bind, Body, CommandStatus, DeliverSm, DeliverSmResp, SubmitSm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::{repo_root, Error, Result};

/// smscd's role label (smsc_api::names::ROLE_LABEL; smsc-api is only a dev-dependency here).
const ROLE_LABEL: &str = "smsc.io/role";

/// The smscd and smsc-operator executables.
#[derive(Debug)]
pub struct Bins {
    pub smscd: PathBuf,
    pub operator: PathBuf,
}

/// Build (once per process) and locate smscd and smsc-operator.
pub fn binaries() -> Result<&'static Bins> {
    static BINS: OnceLock<std::result::Result<Bins, String>> = OnceLock::new();
    let res = BINS.get_or_init(|| {
        let dir = if let Some(dir) = std::env::var_os("SMSC_E2E_BIN_DIR").filter(|d| !d.is_empty()) {
            PathBuf::from(dir)
        } else {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(&cargo)
                .args(["build", "-q", "-p", "smscd", "-p", "smsc-operator", "--bins"])
                .current_dir(repo_root())
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("running {cargo:?} build: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build -p smscd -p smsc-operator --bins: {status}"));
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .filter(|d| !d.is_empty())
                .map_or_else(|| repo_root().join("target"), PathBuf::from);
            target.join("debug")
        };
        let bins = Bins { smscd: dir.join("smscd"), operator: dir.join("smsc-operator") };
        for b in [&bins.smscd, &bins.operator] {
            if !b.is_file() {
                return Err(format!("{} is missing", b.display()));
            }
        }
        Ok(bins)
    });
    res.as_ref().map_err(|e| Error::Setup(e.clone()))
}

/// A directory for one test's configs and logs; removed on drop unless the test panicked.
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn new(prefix: &str) -> Result<WorkDir> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Setup(format!("creating {}: {e}", dir.display())))?;
        Ok(WorkDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let p = self.0.join(name);
        std::fs::write(&p, text).map_err(|e| Error::Setup(format!("writing {}: {e}", p.display())))?;
        Ok(p)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("SMSC_E2E_KEEP_LOGS").is_some() {
            eprintln!("smsc-e2e: logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test).
pub fn free_port() -> Result<u16> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Setup(format!("free port: {e}")))?;
    let port = l.local_addr().map_err(|e| Error::Setup(format!("free port: {e}")))?.port();
    Ok(port)
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A child process, SIGKILLed and reaped on drop; stdout and stderr go to `log`.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Result<Proc> {
        let out = File::create(&log).map_err(|e| Error::Setup(format!("creating {}: {e}", log.display())))?;
        let err = out.try_clone().map_err(|e| Error::Setup(format!("{}: {e}", log.display())))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|source| Error::Spawn { cmd: format!("{cmd:?}"), source })?;
        Ok(Proc { name: name.to_string(), child: Some(child), log })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while not yet reaped (e.g. to read /proc/PID/status).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Send a signal (libc::SIGTERM, libc::SIGKILL, ...).
    pub fn signal(&self, sig: i32) -> Result<()> {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return Err(Error::Setup(format!("{} already reaped", self.name)));
        };
        let pid = i32::try_from(pid).map_err(|_| Error::Setup(format!("pid {pid} out of range")))?;
        // SAFETY: kill(2) on our own child's pid (not yet reaped, so not reused).
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(Error::Setup(format!("kill {pid}: {}", std::io::Error::last_os_error())));
        }
        Ok(())
    }

    /// Poll for the exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait().map_err(|e| Error::Setup(format!("{}: {e}", self.name)))? {
                    self.child = None;
                    return Ok(st);
                }
            } else {
                return Err(Error::Setup(format!("{} already reaped", self.name)));
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{} to exit", self.name),
                    timeout,
                    last: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL and reap.
    pub async fn kill9(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)?;
        self.wait_exit(Duration::from_secs(10)).await.map(|_| ())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait until something accepts TCP on 127.0.0.1:`port`.
pub async fn wait_port(what: &str, port: u16, timeout: Duration) -> Result<()> {
    crate::wait_for(what, timeout, || async move { TcpStream::connect(local(port)).await.map(|_| Some(())) })
        .await
}

/// A plain HTTP/1.0 GET on 127.0.0.1: (status, body).
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(local(port)).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "http get timed out"))?
}

/// Sum of the samples of a metric whose line contains every filter (e.g. `account="x"`).
pub fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

// ---- the carrier -------------------------------------------------------------------------------

/// The upstream's account for our cluster.
pub const CARRIER_SYSTEM_ID: &str = "legacy_gw";
pub const CARRIER_PASSWORD: &str = "changeme";

/// An upstream SMSC (smscd with its simulator) allowing ONE bind for [`CARRIER_SYSTEM_ID`].
pub struct Carrier {
    pub proc: Proc,
    pub port: u16,
    pub admin: u16,
}

impl Carrier {
    pub async fn start(dir: &WorkDir, receipt_delay_ms: u64) -> Result<Carrier> {
        let (port, admin) = (free_port()?, free_port()?);
        let cfg = dir.write(
            "carrier.yaml",
            &format!(
                "server: {{ bind_address: 127.0.0.1, port: {port} }}\n\
                 admin: {{ bind_address: 127.0.0.1, port: {admin} }}\n\
                 accounts:\n  - {{ system_id: {CARRIER_SYSTEM_ID}, password: {CARRIER_PASSWORD}, max_binds: 1 }}\n\
                 routing: {{ default_chain: [sim] }}\n\
                 sim: {{ receipt_delay_ms: {receipt_delay_ms}, outcomes: {{ DELIVRD: 1.0 }} }}\n"
            ),
        )?;
        let proc = Proc::spawn(
            "carrier",
            Command::new(&binaries()?.smscd).arg("--config").arg(cfg).env_remove("KUBECONFIG"),
            dir.path().join("carrier.log"),
        )?;
        wait_port("the carrier's SMPP port", port, Duration::from_secs(30)).await?;
        Ok(Carrier { proc, port, admin })
    }

    /// Sessions currently bound for our account (its `smscd_inbound_binds` gauge).
    pub async fn binds(&self) -> std::io::Result<f64> {
        let (_, body) = http_get(self.admin, "/metrics").await?;
        Ok(metric_sum(&body, "smscd_inbound_binds", &[&format!("account=\"{CARRIER_SYSTEM_ID}\"")]))
    }

    /// Binds it refused, from its log.
    pub fn refused_binds(&self) -> usize {
        self.proc.log().lines().filter(|l| l.contains("bind refused")).count()
    }
}

/// Polls a carrier's bind gauge for one account in the background and keeps the highest value
/// seen; stops when dropped.
pub struct BindWatch {
    max: Arc<Mutex<f64>>,
    samples: Arc<AtomicU32>,
    task: JoinHandle<()>,
}

impl BindWatch {
    /// [`Carrier`]'s account, every 25 ms, through its admin port on 127.0.0.1.
    pub fn start(admin: u16) -> BindWatch {
        BindWatch::for_account(admin, CARRIER_SYSTEM_ID, Duration::from_millis(25))
    }

    /// `account`'s `smscd_inbound_binds` at the admin port `admin` on 127.0.0.1, every `every`.
    pub fn for_account(admin: u16, account: &str, every: Duration) -> BindWatch {
        let max = Arc::new(Mutex::new(0.0f64));
        let samples = Arc::new(AtomicU32::new(0));
        let (m, s) = (max.clone(), samples.clone());
        let label = format!("account=\"{account}\"");
        let task = tokio::spawn(async move {
            loop {
                if let Ok((_, body)) = http_get(admin, "/metrics").await {
                    let v = metric_sum(&body, "smscd_inbound_binds", &[&label]);
                    if let Ok(mut g) = m.lock() {
                        *g = g.max(v);
                    }
                    s.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(every).await;
            }
        });
        BindWatch { max, samples, task }
    }

    /// (highest bind count seen, samples taken).
    pub fn max(&self) -> (f64, u32) {
        (self.max.lock().map(|g| *g).unwrap_or(f64::NAN), self.samples.load(Ordering::Relaxed))
    }
}

impl Drop for BindWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- redis, operator ---------------------------------------------------------------------------

/// A throwaway redis-server (no persistence) on 127.0.0.1.
pub struct RedisServer {
    pub proc: Proc,
    pub port: u16,
}

impl RedisServer {
    pub async fn start(dir: &WorkDir) -> Result<RedisServer> {
        let port = free_port()?;
        let proc = Proc::spawn(
            "redis-server",
            Command::new("redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path()),
            dir.path().join("redis.log"),
        )?;
        wait_port("redis-server", port, Duration::from_secs(20)).await?;
        Ok(RedisServer { proc, port })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

/// The operator binary watching one namespace.
pub struct Operator {
    pub proc: Proc,
    pub metrics: u16,
}

impl Operator {
    pub async fn start(dir: &WorkDir, kubeconfig: &Path, namespace: &str) -> Result<Operator> {
        let metrics = free_port()?;
        let proc = Proc::spawn(
            "smsc-operator",
            Command::new(&binaries()?.operator)
                .args(["--smscd-image", "smscd:e2e", "--namespace", namespace, "--metrics-addr"])
                .arg(format!("127.0.0.1:{metrics}"))
                .env("KUBECONFIG", kubeconfig),
            dir.path().join("operator.log"),
        )?;
        crate::wait_for("the operator's /readyz", Duration::from_secs(60), || async move {
            http_get(metrics, "/readyz").await.map(|(s, _)| (s == 200).then_some(()))
        })
        .await?;
        Ok(Operator { proc, metrics })
    }
}

// ---- the Pods' environment ---------------------------------------------------------------------

/// The environment the kubelet would give `pod`'s smscd container, from the Deployment's pod
/// template: plain values, Secret keys and the downward-API fields metadata.name/namespace.
pub async fn pod_env(
    client: kube::Client,
    namespace: &str,
    deployment: &str,
    pod: &str,
) -> Result<Vec<(String, String)>> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let d = deployments.get(deployment).await?;
    let containers = d.spec.and_then(|s| s.template.spec).map(|s| s.containers).unwrap_or_default();
    let Some(smscd) = containers.iter().find(|c| c.name == "smscd").or_else(|| containers.first()).cloned()
    else {
        return Err(Error::Setup(format!("deployment {deployment} has no containers")));
    };
    let mut cache: BTreeMap<String, BTreeMap<String, k8s_openapi::ByteString>> = BTreeMap::new();
    let mut out = Vec::new();
    for e in smscd.env.unwrap_or_default() {
        let mut value = e.value.clone();
        if let Some(src) = &e.value_from {
            if let Some(r) = &src.secret_key_ref {
                if !cache.contains_key(&r.name) {
                    let s = secrets.get(&r.name).await?;
                    cache.insert(r.name.clone(), s.data.unwrap_or_default());
                }
                let raw = cache.get(&r.name).and_then(|d| d.get(&r.key)).ok_or_else(|| {
                    Error::Setup(format!("secret {} has no key {} (env {})", r.name, r.key, e.name))
                })?;
                value = Some(String::from_utf8_lossy(&raw.0).into_owned());
            } else if let Some(f) = &src.field_ref {
                value = match f.field_path.as_str() {
                    "metadata.name" => Some(pod.to_string()),
                    "metadata.namespace" => Some(namespace.to_string()),
                    _ => None,
                };
            }
        }
        if let Some(v) = value {
            out.push((e.name, v));
        }
    }
    Ok(out)
}

// ---- a cuttable TCP proxy to the API server ----------------------------------------------------

/// A TCP relay from 127.0.0.1:`port` to the API server that the test can cut: [`ApiProxy::cut`]
/// drops every relayed connection and black-holes new ones (accepted, never answered) until
/// [`ApiProxy::heal`], like a network partition.
pub struct ApiProxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    task: JoinHandle<()>,
}

impl ApiProxy {
    pub async fn start(upstream: SocketAddr) -> Result<ApiProxy> {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.map_err(|e| Error::Setup(format!("proxy bind: {e}")))?;
        let port = listener.local_addr().map_err(|e| Error::Setup(format!("proxy: {e}")))?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, cs) = (cut.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let c2 = c.clone();
                let h = tokio::spawn(async move {
                    if c2.load(Ordering::SeqCst) {
                        // Black hole: hold the connection, say nothing.
                        let mut buf = [0u8; 4096];
                        while matches!(down.read(&mut buf).await, Ok(n) if n > 0) {}
                        return;
                    }
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                if let Ok(mut g) = cs.lock() {
                    g.retain(|h| !h.is_finished());
                    g.push(h);
                }
            }
        });
        Ok(ApiProxy { port, cut, conns, task })
    }

    /// Partition: drop every connection, black-hole new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(mut g) = self.conns.lock() {
            for h in g.drain(..) {
                h.abort();
            }
        }
    }

    /// End the partition (black-holed connections are dropped, so clients reconnect).
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
        if let Ok(mut g) = self.conns.lock() {
            for h in g.drain(..) {
                h.abort();
            }
        }
    }

    /// A copy of `kubeconfig` whose server is this proxy, written to `dest`.
    pub fn kubeconfig(&self, kubeconfig: &Path, server: &str, dest: &Path) -> Result<()> {
        let text = std::fs::read_to_string(kubeconfig)
            .map_err(|e| Error::Setup(format!("reading {}: {e}", kubeconfig.display())))?;
        if !text.contains(server) {
            return Err(Error::Setup(format!("{} does not name {server}", kubeconfig.display())));
        }
        let text = text.replace(server, &format!("https://127.0.0.1:{}", self.port));
        std::fs::write(dest, text).map_err(|e| Error::Setup(format!("writing {}: {e}", dest.display())))
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(mut g) = self.conns.lock() {
            for h in g.drain(..) {
                h.abort();
            }
        }
    }
}

/// host:port of an https URL.
pub fn server_addr(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or_default();
    hostport.parse().map_err(|e| Error::Setup(format!("server {url}: {e}")))
}

// ---- an ESME that follows the active replica ---------------------------------------------------

struct Collect(tokio::sync::mpsc::UnboundedSender<DeliverSm>);

impl Handler for Collect {
    fn on_request(&mut self, req: Request<'_>) -> Reply {
        match req.pdu.body {
            Body::DeliverSm(d) => {
                let _ = self.0.send(d);
                Reply::Ok(Body::DeliverSmResp(DeliverSmResp::default()))
            }
            _ => Reply::Error(CommandStatus::ESME_RINVCMDID),
        }
    }
}

/// The message id a receipt is for (receipted_message_id, else the text's `id:`).
pub fn receipt_id(d: &DeliverSm) -> Option<String> {
    if let Some(b) = d.tlvs.receipted_message_id() {
        let s = String::from_utf8_lossy(b).trim_end_matches('\0').to_string();
        if !s.is_empty() {
            return Some(s);
        }
    }
    let text = String::from_utf8_lossy(&d.short_message).into_owned();
    text.split_whitespace().find_map(|w| w.strip_prefix("id:")).map(str::to_string)
}

/// An ESME (our smpp session, transceiver) that binds to whichever replica's Pod carries
/// `smsc.io/role=active` (`ports` maps Pod names to local SMPP ports), and when the session
/// ends or a bind is refused, retries with backoff (100 ms doubling to 1 s).
pub struct FollowingEsme {
    session: Arc<Mutex<Option<(String, Session)>>>,
    receipts: Arc<Mutex<HashSet<String>>>,
    binds: Arc<AtomicU32>,
    task: JoinHandle<()>,
}

impl FollowingEsme {
    pub fn start(
        pods: Api<Pod>,
        ports: BTreeMap<String, u16>,
        system_id: &str,
        password: &str,
    ) -> FollowingEsme {
        let session: Arc<Mutex<Option<(String, Session)>>> = Arc::default();
        let receipts: Arc<Mutex<HashSet<String>>> = Arc::default();
        let binds = Arc::new(AtomicU32::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DeliverSm>();
        let r = receipts.clone();
        let collector = tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                if let (Some(id), Ok(mut g)) = (receipt_id(&d), r.lock()) {
                    g.insert(id);
                }
            }
        });
        let (s, b) = (session.clone(), binds.clone());
        let bind = Bind {
            system_id: Bytes::from(system_id.to_owned()),
            password: Bytes::from(password.to_owned()),
            ..Bind::default()
        };
        let task = tokio::spawn(async move {
            let _collector = AbortOnDrop(collector);
            let mut backoff = Duration::from_millis(100);
            let label = format!("{ROLE_LABEL}=active");
            loop {
                let active = pods
                    .list(&ListParams::default().labels(&label))
                    .await
                    .ok()
                    .and_then(|l| l.items.into_iter().find_map(|p| p.metadata.name));
                let target = active.and_then(|name| ports.get(&name).map(|p| (name, *p)));
                if let Some((name, port)) = target {
                    let cfg = SessionConfig {
                        bind_timeout: Duration::from_secs(3),
                        enquire_link_interval: Duration::from_secs(1),
                        ..SessionConfig::default()
                    };
                    let bound = esme::connect(
                        local(port),
                        BindKind::Transceiver,
                        bind.clone(),
                        cfg,
                        Collect(tx.clone()),
                    )
                    .await;
                    if let Ok((sess, _)) = bound {
                        b.fetch_add(1, Ordering::SeqCst);
                        backoff = Duration::from_millis(100);
                        if let Ok(mut g) = s.lock() {
                            *g = Some((name, sess.clone()));
                        }
                        sess.closed().await;
                        if let Ok(mut g) = s.lock() {
                            *g = None;
                        }
                        continue;
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        });
        FollowingEsme { session, receipts, binds, task }
    }

    /// The Pod the ESME is bound to now, if any.
    pub fn bound_to(&self) -> Option<String> {
        self.session.lock().ok().and_then(|g| g.as_ref().map(|(n, _)| n.clone()))
    }

    /// Binds that succeeded so far.
    pub fn binds(&self) -> u32 {
        self.binds.load(Ordering::SeqCst)
    }

    /// Receipts seen (their message ids).
    pub fn receipts(&self) -> HashSet<String> {
        self.receipts.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// submit_sm with a receipt requested over the current session; the message id on success.
    pub async fn submit(&self, dest: &str) -> std::result::Result<String, String> {
        let sess = self.session.lock().ok().and_then(|g| g.as_ref().map(|(_, s)| s.clone()));
        let Some(sess) = sess else {
            return Err("not bound".into());
        };
        let body = Body::SubmitSm(SubmitSm {
            source: Address::new(0, 0, "12345"),
            destination: Address::new(1, 1, dest.to_owned()),
            registered_delivery: 1,
            short_message: Bytes::from_static(b"failover test"),
            ..SubmitSm::default()
        });
        let resp = sess.request(body).await.map_err(|e| e.to_string())?;
        if resp.command_status != CommandStatus::ESME_ROK {
            return Err(format!("submit_sm_resp {:?}", resp.command_status));
        }
        match resp.body {
            Body::SubmitSmResp(r) => {
                Ok(String::from_utf8_lossy(&r.message_id).trim_end_matches('\0').to_string())
            }
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

impl Drop for FollowingEsme {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Install the SmscCluster CRD from the types (server-side apply, so idempotent across tests)
/// and wait until the API server reports it Established.
pub async fn install_crd(client: kube::Client, timeout: Duration) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    use kube::{CustomResourceExt, ResourceExt};
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = smsc_api::crd::SmscCluster::crd();
    let name = crd.name_any();
    crds.patch(&name, &PatchParams::apply("smsc-e2e").force(), &Patch::Apply(&crd)).await?;
    crate::wait_for("the SmscCluster CRD to be established", timeout, || {
        let crds = crds.clone();
        let name = name.clone();
        async move {
            let crd = crds.get(&name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok::<_, kube::Error>(established.then_some(()))
        }
    })
    .await
}
