//! The smscd binary: `smscd --config FILE` runs the daemon; `smscd check-config FILE` validates a
//! config and prints it with secrets masked; `smscd queue` prints what store-and-forward holds,
//! asking a running daemon's admin listener.
//!
//! Exit codes: 0 done, 1 bad config or runtime failure, 2 usage error.

use clap::{Parser, Subcommand, ValueEnum};
use smscd::config;
use smscd::metrics::ResultLabel;
use smscd::reload;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc malloc: every relayed message allocates on one worker thread and
/// frees on another, which glibc's arenas handle slowly (malloc/free were 20-25 % of the relay's
/// CPU in the profiles of docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "smscd", version, about = "SMSC data plane: SMPP server, router and upstream binds")]
struct Cli {
    /// Config file (YAML) to run with.
    #[arg(long, short = 'c', env = smsc_api::names::CONFIG_ENV, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log line format.
    #[arg(long, value_enum, env = "SMSCD_LOG_FORMAT", default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    /// Log filter, e.g. `info` or `smscd=debug,smpp=info`. Default: RUST_LOG, else `info`.
    #[arg(long, env = "SMSCD_LOG_LEVEL", value_name = "FILTER", global = true)]
    log_level: Option<String>,

    /// How often the config file is checked for changes, in milliseconds.
    #[arg(long, env = "SMSCD_RELOAD_INTERVAL_MS", default_value_t = 1000, hide = true)]
    reload_interval_ms: u64,

    /// Listen for SMPP here instead of the config's server.bind_address:port (for running
    /// several replicas on one host, as the tests and the demo do).
    #[arg(long, env = "SMSCD_LISTEN", value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,

    /// Serve /healthz, /readyz and /metrics here instead of the config's admin address.
    #[arg(long, env = "SMSCD_ADMIN_LISTEN", value_name = "ADDR:PORT")]
    admin_listen: Option<std::net::SocketAddr>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a config file and print the effective config (environment applied, secrets
    /// masked). Exits 1 with every problem, each naming file, line and key.
    CheckConfig {
        /// The file; default: --config / SMSCD_CONFIG.
        file: Option<PathBuf>,
    },
    /// Print what store-and-forward holds (per account: held, oldest, most overdue, per route;
    /// then the first messages, earliest due first), from a running smscd's admin listener.
    Queue {
        /// One account; default: every configured account (the first 20 messages of each).
        account: Option<String>,
        /// The admin listener, HOST:PORT. Default: --admin-listen / SMSCD_ADMIN_LISTEN, else the
        /// admin address of --config / SMSCD_CONFIG (0.0.0.0 asked on 127.0.0.1), else
        /// 127.0.0.1 and the default admin port.
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
        /// Print the daemon's JSON as it is.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Queue { account, admin, json }) => {
            queue(&cli, account.as_deref(), admin.clone(), *json)
        }
        Some(Command::CheckConfig { file }) => match file.clone().or_else(|| cli.config.clone()) {
            Some(path) => check_config(&path),
            None => usage("check-config needs a FILE (or --config / SMSCD_CONFIG)"),
        },
        None => {
            let Some(path) = cli.config.clone() else {
                return usage("no config file: pass --config FILE or set SMSCD_CONFIG");
            };
            if let Err(e) = init_logging(&cli) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let listen = Listen { smpp: cli.listen, admin: cli.admin_listen };
            rt.block_on(run(path, Duration::from_millis(cli.reload_interval_ms.max(10)), listen))
        }
    }
}

fn queue(cli: &Cli, account: Option<&str>, admin: Option<String>, json: bool) -> ExitCode {
    let addr = match admin.or_else(|| cli.admin_listen.map(|a| a.to_string())) {
        Some(a) => a,
        None => match &cli.config {
            Some(path) => match config::load_from_env_file(path) {
                Ok(loaded) => {
                    let a = &loaded.config.admin;
                    let host = match a.bind_address.as_str() {
                        "0.0.0.0" => "127.0.0.1",
                        "::" => "::1",
                        h => h,
                    };
                    match host.parse::<std::net::IpAddr>() {
                        Ok(ip) => std::net::SocketAddr::new(ip, a.port).to_string(),
                        Err(_) => format!("{host}:{}", a.port),
                    }
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            },
            None => format!("127.0.0.1:{}", smsc_api::names::ADMIN_PORT),
        },
    };
    match smscd::queue_view::fetch(&addr, account) {
        Ok(v) if json => {
            println!("{v:#}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", smscd::queue_view::render(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}\n\nRun `smscd --help` for usage.");
    ExitCode::from(2)
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load_from_env_file(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            // The handlers script is compiled (not run): a syntax error names its file and line.
            if let Some(h) = &loaded.config.handlers {
                if let Err(e) = smscd::handlers::check_script(std::path::Path::new(&h.script)) {
                    eprintln!("error: handlers.script: {e}");
                    return ExitCode::FAILURE;
                }
            }
            match serde_norway::to_string(&config::masked(&loaded.config)) {
                Ok(yaml) => {
                    print!("{yaml}");
                    eprintln!("{}: OK", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot print the config: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) -> Result<(), String> {
    let filter = match &cli.log_level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| format!("--log-level `{level}`: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

/// Listener addresses given on the command line; they win over the file on every (re)load.
#[derive(Clone, Copy, Debug)]
struct Listen {
    smpp: Option<std::net::SocketAddr>,
    admin: Option<std::net::SocketAddr>,
}

fn loader_with(listen: Listen) -> reload::Loader {
    let inner = reload::env_loader();
    if listen.smpp.is_none() && listen.admin.is_none() {
        return inner;
    }
    Arc::new(move |path: &std::path::Path, text: &str| {
        let mut loaded = inner(path, text)?;
        if let Some(a) = listen.smpp {
            loaded.config.server.bind_address = a.ip().to_string();
            loaded.config.server.port = a.port();
        }
        if let Some(a) = listen.admin {
            loaded.config.admin.bind_address = a.ip().to_string();
            loaded.config.admin.port = a.port();
        }
        Ok(loaded)
    })
}

async fn run(path: PathBuf, interval: Duration, listen: Listen) -> ExitCode {
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signals(shutdown.clone()));

    let opts = reload::Options { interval, ..reload::Options::default() };
    let watcher = match reload::start(path.clone(), loader_with(listen), opts, shutdown.clone()) {
        Ok(w) => w,
        Err(e) => {
            for line in e.to_string().lines() {
                tracing::error!("config: {line}");
            }
            return ExitCode::FAILURE;
        }
    };
    for w in &watcher.warnings {
        tracing::warn!("config warning: {w}");
    }
    tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "smscd starting");

    // Active/standby: the elector gets its own token, which SIGTERM does not cancel, so this
    // replica keeps the Lease while it drains and releases it only once it has stopped acting.
    let elector = match &watcher.initial.leader_election {
        Some(le) => match smscd::leader::start(le, CancellationToken::new()).await {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(error = %e, "leader election cannot start");
                shutdown.cancel();
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let leadership = elector.as_ref().map(|h| h.watch());
    let started = smscd::daemon::start_with_leadership(
        watcher.initial.clone(),
        watcher.receiver.clone(),
        shutdown.clone(),
        leadership,
    )
    .await;
    let daemon = match started {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "smscd cannot start");
            shutdown.cancel();
            if let Some(h) = elector {
                h.release().await;
            }
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(mirror_refused_reloads(watcher.stats.clone(), daemon.core.clone(), shutdown.clone()));
    let result = daemon.wait().await;
    if let Some(h) = elector {
        // Clean shutdown: hand the Lease over at once instead of after its duration.
        h.release().await;
    }
    shutdown.cancel();
    let _ = watcher.task.await;
    match result {
        Ok(()) => {
            tracing::info!("smscd stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "smscd failed");
            ExitCode::FAILURE
        }
    }
}

/// The runtime counts the reloads it applied; refused ones never reach it, so they are counted
/// here into the same metric (`config_reloads{result="refused"}`).
async fn mirror_refused_reloads(
    stats: Arc<reload::ReloadStats>,
    core: Arc<smscd::core::Core>,
    shutdown: CancellationToken,
) {
    let counter = core.metrics.reloads.get_or_create(&ResultLabel { result: "refused".into() }).clone();
    let mut seen = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = stats.failed();
        if now > seen {
            counter.inc_by(now - seen);
            seen = now;
        }
    }
}

/// SIGTERM or SIGINT starts the drain; a second one exits at once.
async fn on_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers; stop with SIGKILL");
            return;
        }
    };
    for n in 0.. {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if n == 0 {
            tracing::info!(signal = name, "shutting down: draining");
            shutdown.cancel();
        } else {
            tracing::warn!(signal = name, "second signal: exiting without finishing the drain");
            std::process::exit(130);
        }
    }
}
