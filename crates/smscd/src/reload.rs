//! Hot reload: watch the config file, re-load and validate on change, publish valid configs.
//!
//! How it watches: polling, once a second by default, reading the file through its path and
//! comparing the bytes with the last ones seen (plus the contents of the TLS files the config
//! names, so a renewed certificate also triggers a reload). Polling rather than inotify because:
//! - a ConfigMap mount changes by swapping the `..data` symlink in the directory; the file's own
//!   inode never changes, and reading through the path always follows the current link;
//! - it works on every filesystem and in every container runtime, with no watch limits;
//! - the file is small, so reading it each second costs nothing. The kubelet takes up to a
//!   minute to propagate a ConfigMap anyway.
//!
//! Debounce: a changed file is read again after `settle`; it is loaded only once two reads agree,
//! so an editor's half-written file is not loaded. A file that fails to load is logged with every
//! problem, counted in [`ReloadStats::reloads_failed`], and the running config stays; it is not
//! retried until its contents change again.

use crate::config::{self, ConfigError, Loaded};
use crate::tls::FilesFingerprint;
use smsc_api::smscd_config::SmscdConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Counters the metrics endpoint reads.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Changed files that loaded and were published.
    pub reloads_ok: AtomicU64,
    /// Changed files that were refused (the old config kept running).
    pub reloads_failed: AtomicU64,
}

impl ReloadStats {
    pub fn ok(&self) -> u64 {
        self.reloads_ok.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> u64 {
        self.reloads_failed.load(Ordering::Relaxed)
    }
}

/// Turns the file's text into a config: `(path, text)`.
pub type Loader = Arc<dyn Fn(&Path, &str) -> Result<Loaded, ConfigError> + Send + Sync>;

/// A loader over the process environment as it is now (a process's environment does not change
/// under it, so one snapshot serves every reload).
pub fn env_loader() -> Loader {
    let vars: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let listed: Vec<String> = vars.keys().cloned().collect();
    Arc::new(move |path: &Path, text: &str| {
        config::load_str(text, &path.display().to_string(), &listed, &|k| vars.get(k).cloned())
    })
}

#[derive(Clone, Debug)]
pub struct Options {
    /// How often the file is read.
    pub interval: Duration,
    /// How long a change must hold before it is loaded.
    pub settle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { interval: Duration::from_secs(1), settle: Duration::from_millis(250) }
    }
}

/// A running watcher.
pub struct Watcher {
    /// The config first loaded.
    pub initial: Arc<SmscdConfig>,
    /// Warnings from the first load.
    pub warnings: Vec<String>,
    /// Every config published, starting with `initial`; hand it to the runtime.
    pub receiver: watch::Receiver<Arc<SmscdConfig>>,
    pub stats: Arc<ReloadStats>,
    pub task: JoinHandle<()>,
}

/// Loads `path` (an error here is fatal to the caller: there is no old config to keep), then
/// watches it until `shutdown` is cancelled.
pub fn start(
    path: PathBuf,
    loader: Loader,
    opts: Options,
    shutdown: CancellationToken,
) -> Result<Watcher, ConfigError> {
    let bytes = std::fs::read(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
    let loaded = load_bytes(&loader, &path, &bytes)?;
    let initial = Arc::new(loaded.config);
    let (tx, receiver) = watch::channel(initial.clone());
    let stats = Arc::new(ReloadStats::default());
    let state = State { seen: Some(bytes), tls: tls_fingerprint(&initial) };
    let task = tokio::spawn(watch_loop(path, loader, opts, shutdown, tx, stats.clone(), state));
    Ok(Watcher { initial, warnings: loaded.warnings, receiver, stats, task })
}

fn load_bytes(loader: &Loader, path: &Path, bytes: &[u8]) -> Result<Loaded, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    loader(path, text)
}

/// The TLS files the config names, whose renewal should reload it.
fn tls_fingerprint(cfg: &SmscdConfig) -> FilesFingerprint {
    let mut files: Vec<String> = Vec::new();
    if let Some(t) = &cfg.server.tls {
        files.push(t.cert_file.clone());
        files.push(t.key_file.clone());
    }
    files.extend(cfg.binds.iter().filter_map(|b| b.tls.as_ref()?.ca_file.clone()));
    FilesFingerprint::of(&files)
}

struct State {
    /// The file's bytes when last looked at (None: could not be read).
    seen: Option<Vec<u8>>,
    tls: FilesFingerprint,
}

async fn watch_loop(
    path: PathBuf,
    loader: Loader,
    opts: Options,
    shutdown: CancellationToken,
    tx: watch::Sender<Arc<SmscdConfig>>,
    stats: Arc<ReloadStats>,
    mut state: State,
) {
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = read(&path).await;
        if now == state.seen && !state.tls.changed() {
            continue;
        }
        // Settle: load only contents that held still for `settle`.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(opts.settle) => {}
        }
        let again = read(&path).await;
        if again != now {
            continue;
        }
        let Some(bytes) = now else {
            // Gone or unreadable mid-swap: keep running, look again next tick.
            if state.seen.is_some() {
                tracing::warn!(path = %path.display(), "config file cannot be read; keeping the running config");
                state.seen = None;
            }
            continue;
        };
        let result = {
            let loader = loader.clone();
            let path = path.clone();
            let bytes = bytes.clone();
            tokio::task::spawn_blocking(move || load_bytes(&loader, &path, &bytes)).await
        };
        state.seen = Some(bytes);
        match result {
            Ok(Ok(loaded)) => {
                for w in &loaded.warnings {
                    tracing::warn!(path = %path.display(), "config warning: {w}");
                }
                let cfg = Arc::new(loaded.config);
                state.tls = tls_fingerprint(&cfg);
                stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %path.display(), "config reloaded");
                tx.send_replace(cfg);
            }
            Ok(Err(e)) => {
                // Remember the TLS state too, so a still-broken certificate is not retried
                // every tick.
                state.tls = tls_fingerprint(&tx.borrow());
                stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %path.display(), error = %e, "config reload refused; the running config stays");
            }
            Err(join) => {
                stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %join, "config reload task failed; the running config stays");
            }
        }
    }
}

async fn read(path: &Path) -> Option<Vec<u8>> {
    tokio::fs::read(path).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::Instant;

    const V1: &str = "accounts: [{ system_id: a, password: p }]\nrouting: { default_chain: [sim] }\n";
    const V2: &str = "accounts: [{ system_id: b, password: p }]\nrouting: { default_chain: [sim] }\n";
    const BAD: &str = "accounts: [{ system_id: c, pasword: p }]\n";

    fn fast() -> Options {
        Options { interval: Duration::from_millis(20), settle: Duration::from_millis(5) }
    }

    fn loader() -> Loader {
        Arc::new(|path: &Path, text: &str| {
            config::load_str(text, &path.display().to_string(), &[], &|_| None)
        })
    }

    async fn next_config(w: &mut Watcher) -> Arc<SmscdConfig> {
        match tokio::time::timeout(Duration::from_secs(10), w.receiver.changed()).await {
            Ok(Ok(())) => w.receiver.borrow_and_update().clone(),
            other => panic!("no reload within the deadline: {other:?}"),
        }
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Replaces the file atomically, so the watcher never sees it half-written (that case is
    /// what `settle` is for, but a test must not depend on timing).
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }

    fn account(cfg: &SmscdConfig) -> &str {
        cfg.accounts.first().map_or("", |a| a.system_id.as_str())
    }

    #[tokio::test]
    async fn plain_file_change_bad_change_and_recovery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("smpp.yaml");
        std::fs::write(&path, V1).expect("write");
        let stop = CancellationToken::new();
        let mut w = start(path.clone(), loader(), fast(), stop.clone()).expect("start");
        assert_eq!(account(&w.initial), "a");

        replace(&path, V2);
        assert_eq!(account(&*next_config(&mut w).await), "b");
        assert_eq!(w.stats.ok(), 1);

        replace(&path, BAD);
        let stats = w.stats.clone();
        until("the bad file to be refused", || stats.failed() == 1).await;
        assert_eq!(account(&w.receiver.borrow()), "b", "old config keeps running");
        assert!(!w.receiver.has_changed().unwrap_or(true));

        replace(&path, V1);
        assert_eq!(account(&*next_config(&mut w).await), "a");
        assert_eq!((w.stats.ok(), w.stats.failed()), (2, 1));
        stop.cancel();
        let _ = w.task.await;
    }

    /// Lays a directory out the way the kubelet mounts a ConfigMap, and updates it the way the
    /// kubelet does: a new timestamped dir, a `..data_tmp` link to it renamed over `..data`.
    struct ConfigMapDir {
        root: PathBuf,
        n: usize,
    }

    impl ConfigMapDir {
        fn new(root: &Path, content: &str) -> ConfigMapDir {
            let mut d = ConfigMapDir { root: root.to_path_buf(), n: 0 };
            let data = d.write_version(content);
            symlink(&data, root.join("..data")).expect("..data");
            symlink("..data/smpp.yaml", root.join("smpp.yaml")).expect("smpp.yaml link");
            d
        }

        fn write_version(&mut self, content: &str) -> String {
            self.n += 1;
            let name = format!("..2026_11_25_20_{:02}_00.{}", self.n, 1000 + self.n);
            let dir = self.root.join(&name);
            std::fs::create_dir(&dir).expect("version dir");
            std::fs::write(dir.join("smpp.yaml"), content).expect("write version");
            name
        }

        fn swap(&mut self, content: &str) {
            let old = std::fs::read_link(self.root.join("..data")).expect("read ..data");
            let data = self.write_version(content);
            symlink(&data, self.root.join("..data_tmp")).expect("..data_tmp");
            std::fs::rename(self.root.join("..data_tmp"), self.root.join("..data")).expect("atomic swap");
            std::fs::remove_dir_all(self.root.join(old)).expect("remove old version");
        }
    }

    #[tokio::test]
    async fn configmap_data_symlink_swap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cm = ConfigMapDir::new(dir.path(), V1);
        let path = dir.path().join("smpp.yaml");
        let stop = CancellationToken::new();
        let mut w = start(path, loader(), fast(), stop.clone()).expect("start");
        assert_eq!(account(&w.initial), "a");

        cm.swap(V2);
        assert_eq!(account(&*next_config(&mut w).await), "b");

        cm.swap(BAD);
        let stats = w.stats.clone();
        until("the bad version to be refused", || stats.failed() == 1).await;
        assert_eq!(account(&w.receiver.borrow()), "b");

        cm.swap(V1);
        assert_eq!(account(&*next_config(&mut w).await), "a");
        stop.cancel();
        let _ = w.task.await;
    }

    fn write_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, ck.cert.pem()).expect("write cert");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
        (cert, key)
    }

    #[tokio::test]
    async fn renewed_certificate_republishes_and_broken_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_pair(dir.path());
        let path = dir.path().join("smpp.yaml");
        let text = format!(
            "server: {{ tls: {{ cert_file: {}, key_file: {} }} }}\n{V1}",
            cert.display(),
            key.display()
        );
        std::fs::write(&path, text).expect("write");
        let stop = CancellationToken::new();
        let mut w = start(path, loader(), fast(), stop.clone()).expect("start");
        let first = w.initial.clone();

        // Renewal in place: same config, new file contents -> published again, so the runtime
        // rebuilds its TLS config (crate::tls::ServerTls::refresh tells it so).
        write_pair(dir.path());
        let again = next_config(&mut w).await;
        assert_eq!(*again, *first);
        assert!(!Arc::ptr_eq(&again, &first));

        // (The pair is written file by file, so the watcher may have refused a half-renewed
        // pair on the way; count from here.)
        let (ok, failed) = (w.stats.ok(), w.stats.failed());
        replace(&key, "not a key");
        let stats = w.stats.clone();
        until("the broken key to be refused", || stats.failed() > failed).await;
        assert_eq!(w.stats.ok(), ok);
        assert!(!w.receiver.has_changed().unwrap_or(true));
        stop.cancel();
        let _ = w.task.await;
    }

    #[tokio::test]
    async fn invalid_initial_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("smpp.yaml");
        std::fs::write(&path, BAD).expect("write");
        let e = start(path, loader(), fast(), CancellationToken::new()).err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("smpp.yaml:1: accounts[0].pasword: unknown field `pasword`"), "{e}");
    }
}
