//! Real processes for the multi-replica tests: a redis-server in a temp dir and smscd replicas
//! run from the built binary (so a test can SIGKILL one). Each test file writes its replicas'
//! config; the start, readiness wait, logs, metrics and kill are here, once.

use super::{http_get, metric_sum};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_smscd");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A redis-server on 127.0.0.1 in a temp dir, with an append-only file synced on every write
/// (so a restart keeps everything Redis acknowledged); killed on drop.
pub struct RedisServer {
    pub child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut r = RedisServer { child: None, port: free_port(), dir };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Start it (again, after [`RedisServer::kill`]) on the same port and directory; returns
    /// once it answers PING.
    pub fn spawn(&mut self) {
        let spawned = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::from(std::fs::File::create(self.dir.path().join("redis.log")).expect("log file")))
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot start redis-server ({e}): install it with `tools/deps.sh apt` (make test does)"
            ),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.pings() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("redis-server exited: {st}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on {}; log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 64];
        s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// SIGKILL (no shutdown save: only the append-only file survives).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The ports a replica listens on, for its config.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub smpp: u16,
    pub admin: u16,
    pub http: u16,
}

/// What [`Replica::wait_ready`] waits for besides /readyz answering 200.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ready<'a> {
    /// The body is plain `ready`: the store answers too.
    pub store_up: bool,
    /// This upstream has at least one bound session.
    pub bound: Option<&'a str>,
    /// The HTTP API listens.
    pub http: bool,
}

/// An smscd replica from the built binary; killed on drop.
pub struct Replica {
    pub name: String,
    pub child: Option<Child>,
    pub smpp: SocketAddr,
    pub admin: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
}

impl Replica {
    /// Write the config `config(ports)` to `dir/<name>.yaml` and run smscd with it (environment
    /// cleared, then `POD_NAME`, `SMSCD_LOG_LEVEL=info` and `env`); stderr goes to
    /// `dir/<name>.log`. Not waited for: see [`Replica::wait_ready`].
    pub fn spawn(
        name: &str,
        dir: &Path,
        config: impl FnOnce(Ports) -> String,
        env: &[(&str, String)],
    ) -> Replica {
        let ports = Ports { smpp: free_port(), admin: free_port(), http: free_port() };
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config(ports)).expect("write config");
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&path).env_clear().env("POD_NAME", name).env("SMSCD_LOG_LEVEL", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .spawn()
            .expect("spawn smscd");
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Replica {
            name: name.into(),
            child: Some(child),
            smpp: at(ports.smpp),
            admin: at(ports.admin),
            http: at(ports.http),
            log,
        }
    }

    /// [`Replica::spawn`], then [`Replica::wait_ready`].
    pub async fn start(
        name: &str,
        dir: &Path,
        config: impl FnOnce(Ports) -> String,
        env: &[(&str, String)],
        ready: Ready<'_>,
    ) -> Replica {
        let mut r = Replica::spawn(name, dir, config, env);
        r.wait_ready(ready).await;
        r
    }

    /// Until /readyz answers 200 and `ready`'s conditions hold (30 s at most); a replica
    /// that exits fails the test with its log.
    pub async fn wait_ready(&mut self, ready: Ready<'_>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("replica {} exited: {st}\n{}", self.name, self.logs());
            }
            if TcpStream::connect(self.admin).is_ok()
                && (!ready.http || TcpStream::connect(self.http).is_ok())
            {
                let (code, body) = http_get(self.admin, "/readyz").await;
                let bound = match ready.bound {
                    Some(up) => {
                        let m = http_get(self.admin, "/metrics").await.1;
                        metric_sum(&m, "smscd_upstream_binds", &[&format!("upstream=\"{up}\"")]) >= 1.0
                    }
                    None => true,
                };
                if code == 200 && (!ready.store_up || body.trim() == "ready") && bound {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "replica {} not ready\n{}", self.name, self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn metric(&self, name: &str, filters: &[&str]) -> f64 {
        metric_sum(&http_get(self.admin, "/metrics").await.1, name, filters)
    }

    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.sigkill();
    }
}
