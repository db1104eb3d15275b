//! The one connection to Redis the store (and anything else that keeps state in the same Redis)
//! uses, whichever form the config names: one instance (`url`), a master set behind Redis
//! Sentinel (`sentinel`) or a Redis Cluster (`cluster`).
//!
//! [`Link::conn`] hands out a [`Conn`], a cheap clone that implements redis-rs' `ConnectionLike`,
//! so `Cmd::query_async`, pipelines and `Script::invoke_async` work on every form. Feed every
//! error a command returned to [`Link::saw`]: with Sentinel it is how a failover is noticed.
//!
//! - `url`: redis-rs' `ConnectionManager` (one multiplexed connection that reconnects by itself).
//! - `sentinel`: redis-rs' `Sentinel` resolves the master (asks the sentinels, then checks
//!   `ROLE` on the address they give); a `ConnectionManager` is opened to it. A connection error
//!   or a `READONLY` reply (the old master came back as a replica) marks the link stale; the next
//!   `conn()` asks the sentinels again (at most every [`RESOLVE_EVERY`]) and, when the master
//!   moved, opens a new manager and counts a failover. Until the sentinels name a usable master
//!   (the failover takes their `down-after-milliseconds` plus an election), commands fail fast
//!   and callers retry as they do for a single instance that is down. redis-rs 0.32 has no
//!   Sentinel-aware connection manager, hence this small loop around its `Sentinel`.
//! - `cluster`: redis-rs' cluster-async connection: it reads the slot map, follows MOVED/ASK and
//!   refreshes the map after a failover by itself. Keys one script or MULTI touches must share
//!   a hash slot (the store's keys carry the account as a hash tag: see [`Link::is_cluster`]).

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, Pipeline, RedisConnectionInfo, RedisError,
    RedisFuture, RedisResult, TlsMode, Value,
};
use smsc_api::smscd_config::{redis_node, RedisClusterConfig, RedisSentinelConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Short, so an outage turns into a clear error quickly instead of a stalled session.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Least time between two questions to the sentinels while the master is unusable.
pub const RESOLVE_EVERY: Duration = Duration::from_millis(200);
/// The whole of one resolution (every sentinel, then `ROLE` on the master).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
const SENTINEL_PORT: u16 = 26379;
const REDIS_PORT: u16 = 6379;

/// A connection from [`Link::conn`]: clone it freely, it is a handle to a shared connection.
#[derive(Clone)]
pub enum Conn {
    /// One instance, or the current master of a Sentinel master set.
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where Redis is, as the config says.
pub enum Target {
    Url(Client),
    Sentinel(SentinelTarget),
    Cluster(ClusterClient),
}

pub struct SentinelTarget {
    sentinel: tokio::sync::Mutex<Sentinel>,
    master_name: String,
    node: SentinelNodeConnectionInfo,
    /// For error messages: the sentinels as configured.
    listed: String,
    /// To tell a wrong master name from a master that is down (see [`Link::resolve`]).
    first: ConnectionInfo,
}

impl Target {
    /// The store's Redis as configured: Sentinel when set, else Cluster when set, else the
    /// single instance at `url`. Every user of the store's Redis (the store, HTTP records,
    /// `smpp.cache`) takes this one choice.
    pub fn configured(
        url: &str,
        sentinel: Option<&RedisSentinelConfig>,
        cluster: Option<&RedisClusterConfig>,
    ) -> RedisResult<Target> {
        match (sentinel, cluster) {
            (Some(s), _) => Target::sentinel(s),
            (None, Some(c)) => Target::cluster(c),
            (None, None) => Target::url(url),
        }
    }

    /// How the target was named, for logs: `sentinel`, `cluster` or `url`.
    pub fn form(&self) -> &'static str {
        match self {
            Target::Url(_) => "url",
            Target::Sentinel(_) => "sentinel",
            Target::Cluster(_) => "cluster",
        }
    }

    /// A single instance from a `redis://`, `rediss://` or `unix://` URL.
    pub fn url(url: &str) -> RedisResult<Target> {
        Ok(Target::Url(Client::open(url)?))
    }

    pub fn sentinel(c: &RedisSentinelConfig) -> RedisResult<Target> {
        let tls = c.tls.then_some(TlsMode::Secure);
        let auth = RedisConnectionInfo {
            username: None,
            password: c.sentinel_password.clone(),
            ..Default::default()
        };
        let mut nodes = Vec::new();
        for n in &c.sentinels {
            let (host, port) = redis_node(n, SENTINEL_PORT).map_err(config_error)?;
            nodes.push(ConnectionInfo { addr: addr(host, port, c.tls), redis: auth.clone() });
        }
        let Some(first) = nodes.first().cloned() else {
            return Err(config_error("store.sentinel.sentinels: name at least one sentinel".into()));
        };
        let node = SentinelNodeConnectionInfo {
            tls_mode: tls,
            redis_connection_info: Some(RedisConnectionInfo {
                db: c.db,
                username: c.username.clone(),
                password: c.password.clone(),
                ..Default::default()
            }),
        };
        Ok(Target::Sentinel(SentinelTarget {
            sentinel: tokio::sync::Mutex::new(Sentinel::build(nodes)?),
            master_name: c.master_name.clone(),
            node,
            listed: c.sentinels.join(", "),
            first,
        }))
    }

    pub fn cluster(c: &RedisClusterConfig) -> RedisResult<Target> {
        let mut nodes = Vec::new();
        for n in &c.nodes {
            let (host, port) = redis_node(n, REDIS_PORT).map_err(config_error)?;
            nodes.push(ConnectionInfo {
                addr: addr(host, port, c.tls),
                redis: RedisConnectionInfo::default(),
            });
        }
        let mut b = ClusterClient::builder(nodes)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            // Few and short retries inside the client (MOVED/ASK and a refreshed slot map after a
            // failover need one or two): our callers retry at their own pace, within the
            // submit's budget, as they do for a single instance.
            .retries(3)
            .min_retry_wait(20)
            .max_retry_wait(300);
        if let Some(u) = &c.username {
            b = b.username(u.clone());
        }
        if let Some(p) = &c.password {
            b = b.password(p.clone());
        }
        if c.tls {
            b = b.tls(TlsMode::Secure);
        }
        Ok(Target::Cluster(b.build()?))
    }
}

fn addr(host: String, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None }
    } else {
        ConnectionAddr::Tcp(host, port)
    }
}

fn config_error(msg: String) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, "invalid store config", msg))
}

struct Current {
    conn: Conn,
    /// The master's address (Sentinel), to tell a failover from a reconnection.
    master: String,
}

/// The connection to Redis and how to find it again (see the module doc).
pub struct Link {
    target: Target,
    current: Mutex<Option<Current>>,
    /// Held while connecting or asking the sentinels.
    connecting: tokio::sync::Mutex<()>,
    /// Sentinel: the master may have moved; ask the sentinels on the next `conn()`.
    stale: AtomicBool,
    last_resolve: Mutex<Option<Instant>>,
    failovers: AtomicU64,
}

impl Link {
    /// No connection is made here: the first `conn()` connects.
    pub fn new(target: Target) -> Link {
        Link {
            target,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            stale: AtomicBool::new(false),
            last_resolve: Mutex::new(None),
            failovers: AtomicU64::new(0),
        }
    }

    /// Redis Cluster: keys one script or MULTI touches must share a hash slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Times the Sentinel master moved to another address since start (Redis Cluster fails over
    /// inside the client and is not counted here).
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// Look at a command's error: with Sentinel, one that says the connection or the master's
    /// role is gone makes the next `conn()` ask the sentinels again.
    pub fn saw(&self, e: &RedisError) {
        if matches!(self.target, Target::Sentinel(_))
            && (!is_server_reply(e) || e.kind() == ErrorKind::ReadOnly || e.code() == Some("READONLY"))
        {
            self.stale.store(true, Ordering::Relaxed);
        }
    }

    fn cached(&self) -> Option<Conn> {
        lock(&self.current).as_ref().map(|c| c.conn.clone())
    }

    /// The connection; connects the first time, and with Sentinel follows the master when a
    /// command saw it go (see [`Link::saw`]).
    pub async fn conn(&self) -> RedisResult<Conn> {
        let stale = self.stale.load(Ordering::Relaxed);
        if let Some(c) = self.cached() {
            if !stale || !self.resolve_due() {
                return Ok(c);
            }
        }
        let _g = self.connecting.lock().await;
        let stale = self.stale.load(Ordering::Relaxed);
        if let Some(c) = self.cached() {
            if !stale || !self.resolve_due() {
                return Ok(c);
            }
        }
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_connection_timeout(CONNECT_TIMEOUT)
            // No retries inside the manager: its backoff starts at 1 s per attempt. A failed
            // command makes the next one reconnect, and our callers retry at their own pace
            // (health every second, correlation writes every 100 ms), so recovery is quick.
            .set_number_of_retries(0);
        match &self.target {
            Target::Url(client) => {
                let c = Conn::Single(ConnectionManager::new_with_config(client.clone(), mgr_cfg).await?);
                *lock(&self.current) = Some(Current { conn: c.clone(), master: String::new() });
                Ok(c)
            }
            Target::Cluster(client) => {
                let cfg = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT);
                let c = Conn::Cluster(client.get_async_connection_with_config(cfg).await?);
                *lock(&self.current) = Some(Current { conn: c.clone(), master: String::new() });
                Ok(c)
            }
            Target::Sentinel(s) => {
                *lock(&self.last_resolve) = Some(Instant::now());
                let client = match self.resolve(s).await {
                    Ok(c) => c,
                    // No usable master named yet (mid-failover), or the sentinels are away: keep
                    // the old connection (to a dead master it fails fast) and ask again later.
                    Err(e) => {
                        tracing::debug!(error = %e, "sentinel resolution failed");
                        return self.cached().ok_or(e);
                    }
                };
                let master = client.get_connection_info().addr.to_string();
                let before = lock(&self.current).as_ref().map(|c| c.master.clone());
                if before.as_deref() == Some(master.as_str()) {
                    // Same master: its manager reconnects by itself.
                    self.stale.store(false, Ordering::Relaxed);
                    return self.cached().ok_or_else(|| config_error("no connection".into()));
                }
                let c = Conn::Single(ConnectionManager::new_with_config(client, mgr_cfg).await?);
                if let Some(old) = before {
                    self.failovers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(master_name = %s.master_name, from = %old, to = %master, "redis master moved (Sentinel failover): reconnected");
                } else {
                    tracing::info!(master_name = %s.master_name, %master, "redis master found through Sentinel");
                }
                *lock(&self.current) = Some(Current { conn: c.clone(), master });
                self.stale.store(false, Ordering::Relaxed);
                Ok(c)
            }
        }
    }

    fn resolve_due(&self) -> bool {
        lock(&self.last_resolve).is_none_or(|t| t.elapsed() >= RESOLVE_EVERY)
    }

    /// Ask the sentinels for the master; errors name the config key to look at.
    async fn resolve(&self, s: &SentinelTarget) -> RedisResult<Client> {
        let r = tokio::time::timeout(RESOLVE_TIMEOUT, async {
            s.sentinel.lock().await.async_master_for(&s.master_name, Some(&s.node)).await
        })
        .await;
        let e = match r {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => e,
            Err(_) => RedisError::from((ErrorKind::IoError, "sentinels or master did not answer in time")),
        };
        let detail = if e.kind() == ErrorKind::MasterNameNotFoundBySentinel {
            if self.sentinel_knows(s).await == Some(false) {
                format!(
                    "store.sentinel.master_name: the sentinels ({}) know no master named `{}`",
                    s.listed, s.master_name
                )
            } else {
                format!(
                    "store.sentinel: master `{}` is down and not failed over yet (sentinels {})",
                    s.master_name, s.listed
                )
            }
        } else if matches!(e.kind(), ErrorKind::IoError) || e.is_connection_refusal() || e.is_timeout() {
            format!(
                "store.sentinel.sentinels: no sentinel answered or master unreachable ({}): {e}",
                s.listed
            )
        } else {
            format!("store.sentinel: {e}")
        };
        Err(RedisError::from((e.kind(), "sentinel", detail)))
    }

    /// Whether the first sentinel knows the master name (`SENTINEL MASTER <name>`); None when
    /// it cannot be asked.
    async fn sentinel_knows(&self, s: &SentinelTarget) -> Option<bool> {
        let client = Client::open(s.first.clone()).ok()?;
        let ask = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL").arg("MASTER").arg(&s.master_name).query_async::<Value>(&mut c).await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, ask).await {
            Ok(Ok(_)) => Some(true),
            Ok(Err(e)) if is_server_reply(&e) => Some(false),
            _ => None,
        }
    }

    /// One health probe: PING (Cluster: `CLUSTER INFO` on a node, down unless every slot is
    /// served, with how many are in the error).
    pub async fn check(&self) -> Result<(), String> {
        let mut c = self.conn().await.map_err(|e| e.to_string())?;
        if self.is_cluster() {
            let r: RedisResult<String> = redis::cmd("CLUSTER").arg("INFO").query_async(&mut c).await;
            let info = r.map_err(|e| {
                self.saw(&e);
                e.to_string()
            })?;
            let field = |k: &str| {
                info.lines().find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(':'))).map(str::trim)
            };
            if field("cluster_state") != Some("ok") {
                return Err(format!(
                    "store.cluster: the cluster is down (cluster_state:{}; slots assigned {} and served {} of 16384)",
                    field("cluster_state").unwrap_or("?"),
                    field("cluster_slots_assigned").unwrap_or("?"),
                    field("cluster_slots_ok").unwrap_or("?"),
                ));
            }
            return Ok(());
        }
        let r: RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
        r.map(|_| ()).map_err(|e| {
            self.saw(&e);
            e.to_string()
        })
    }
}

/// An error Redis answered (the connection is fine), as opposed to I/O or timeouts.
pub fn is_server_reply(e: &RedisError) -> bool {
    e.kind() == ErrorKind::ExtensionError
        || e.kind() == ErrorKind::ResponseError
        || e.code().is_some_and(|c| c == "NOGROUP" || c == "BUSYGROUP")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
