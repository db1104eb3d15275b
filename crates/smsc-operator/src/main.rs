//! `smsc-operator`: runs the SmscCluster controller, or renders children offline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use kube::client::ClientBuilder;
use kube::Client;
use smsc_operator::controller::{self, Context, Settings};
use smsc_operator::http::{self, HttpState};
use smsc_operator::leader;
use smsc_operator::metrics::Metrics;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    name = "smsc-operator",
    version,
    about = "Kubernetes operator for SMS centres (SmscCluster -> smscd)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// smscd image for SmscClusters that name none.
    #[arg(long, env = "SMSCD_IMAGE", default_value = "smscd:latest", global = true)]
    smscd_image: String,
    /// Watch only this namespace; repeat for several (default: all namespaces).
    #[arg(long = "namespace", env = "WATCH_NAMESPACE", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    #[arg(long, value_enum, env = "LOG_FORMAT", default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Run the controller only while holding a Lease (for several operator replicas).
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: POD_NAMESPACE, else "default").
    #[arg(long, env = "POD_NAMESPACE")]
    leader_elect_namespace: Option<String>,
    #[arg(long, default_value = "smsc-operator-leader")]
    leader_elect_lease: String,
    /// Bring the SmscCluster CRD to this operator's schema before reconciling (Helm never
    /// upgrades `crds/`); see crd.rs.
    #[arg(long, env = "MANAGE_CRD", default_value_t = true, action = clap::ArgAction::Set)]
    manage_crd: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the children of an SmscCluster as YAML (no cluster needed; secrets stay references).
    Render {
        /// The SmscCluster manifest ("-" for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn render(file: &PathBuf, image: &str) -> ExitCode {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("smsc-operator render: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match smsc_operator::render::render(&text, image) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smsc-operator render: {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The CRD at our schema (crd.rs). Failing to is logged, not fatal: the CRD in the cluster may
/// still be good enough, and the Events of refused fields will say so.
async fn apply_crd(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use smsc_operator::crd::{ensure, Outcome};
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    let desired = <smsc_api::crd::SmscCluster as kube::CustomResourceExt>::crd();
    let version = env!("CARGO_PKG_VERSION");
    match ensure(&api, desired, version).await {
        Ok(Outcome::Applied) => tracing::info!(version, "SmscCluster CRD at this operator's schema"),
        Ok(Outcome::Missing) => {
            tracing::warn!("the SmscCluster CRD is not installed (the chart's crds/ installs it)")
        }
        Ok(Outcome::Newer(theirs)) => tracing::warn!(
            ours = version,
            theirs,
            "the SmscCluster CRD was applied by a newer operator: left as it is"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not apply the SmscCluster CRD (--manage-crd=false to stop trying)")
        }
    }
}

/// The default client, with every request counted on /metrics.
async fn client(metrics: Arc<Metrics>) -> Result<Client, kube::Error> {
    let config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
    Ok(ClientBuilder::try_from(config)?.with_layer(&smsc_operator::requests::layer(metrics)).build())
}

async fn run(cli: Cli) -> ExitCode {
    let metrics = Arc::new(Metrics::default());
    let client = match client(metrics.clone()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no Kubernetes client configuration");
            return ExitCode::FAILURE;
        }
    };
    let state = HttpState { metrics: metrics.clone(), ready: Arc::default() };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = tokio::spawn(http::serve(cli.metrics_addr, state.clone(), stopped(stop_rx.clone())));
    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        terminated().await;
        tracing::info!("SIGTERM: shutting down");
        let _ = signal_tx.send(true);
    });

    // In a Pod, HOSTNAME is the Pod name: unique among replicas, unlike a PID.
    let identity = ["POD_NAME", "HOSTNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| format!("smsc-operator-{}", std::process::id()));
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lease = if cli.leader_elect {
        // Waiting for the Lease: serving, nothing to sync, so ready. Readiness never waits for
        // leadership (a new replica that waits for the old one's Lease would stall a rolling
        // update); the smsc_operator_leader gauge tells which replica leads.
        metrics.leader.set(0);
        state.ready.store(true, Ordering::Relaxed);
        let ns = cli.leader_elect_namespace.clone().unwrap_or_else(|| "default".into());
        let elector = match leader::start(client.clone(), &ns, &cli.leader_elect_lease, &identity) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "leader election");
                return ExitCode::FAILURE;
            }
        };
        let mut leading = elector.watch();
        let mut rx = stop_rx.clone();
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() {
                tracing::error!("leader election ended before we led");
                return ExitCode::FAILURE;
            },
            _ = rx.wait_for(|s| *s) => {
                elector.release().await;
                return ExitCode::SUCCESS;
            }
        }
        tracing::info!(lease = %cli.leader_elect_lease, identity = %identity, "became leader");
        let (tx, lost2) = (stop_tx.clone(), lost.clone());
        let metrics2 = metrics.clone();
        let watcher = tokio::spawn(async move {
            // The elector publishes `false` at the renew deadline at the latest.
            let _ = leading.wait_for(|l| !*l).await;
            tracing::error!("leadership lost");
            metrics2.leader.set(0);
            lost2.store(true, Ordering::Relaxed);
            let _ = tx.send(true);
        });
        Some((elector, watcher))
    } else {
        None
    };

    if cli.manage_crd {
        apply_crd(&client).await;
    }

    // One controller per watched namespace (None: all), sharing the metrics.
    let scopes: Vec<Option<String>> = if cli.namespaces.is_empty() {
        vec![None]
    } else {
        cli.namespaces.iter().cloned().map(Some).collect()
    };
    metrics.leader.set(1);
    let contexts: Vec<Arc<Context>> = scopes
        .into_iter()
        .map(|namespace| {
            tracing::info!(?namespace, image = %cli.smscd_image, "controller starting");
            let settings = Settings {
                smscd_image: cli.smscd_image.clone(),
                namespace,
                instance: Some(identity.clone()),
            };
            Context::new(client.clone(), settings, metrics.clone())
        })
        .collect();
    // Reconciling: ready once every controller's caches have listed.
    state.ready.store(false, Ordering::Relaxed);
    let (synced_state, synced_contexts) = (state.clone(), contexts.clone());
    let synced = tokio::spawn(async move {
        for ctx in &synced_contexts {
            ctx.synced().await;
        }
        tracing::info!("caches synced: ready");
        synced_state.ready.store(true, Ordering::Relaxed);
    });
    let controllers = contexts.into_iter().map(|ctx| controller::run(ctx, stopped(stop_rx.clone())));
    futures::future::join_all(controllers).await;
    synced.abort();
    state.ready.store(false, Ordering::Relaxed);
    metrics.leader.set(0);
    state.ready.store(false, Ordering::Relaxed);
    let lost = lost.load(Ordering::Relaxed);
    if let Some((elector, watcher)) = lease {
        // Our own release below publishes `false` too: not a loss.
        watcher.abort();
        // A clean stop releases the Lease for a fast hand-over; a lost one is not ours to release.
        if lost {
            elector.abort();
        } else {
            elector.release().await;
        }
    }
    let _ = stop_tx.send(true);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "metrics server"),
        Err(e) => tracing::error!(error = %e, "metrics server task"),
    }
    if lost {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Some(Command::Render { file }) = &cli.command {
        return render(file, &cli.smscd_image);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("smsc-operator: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(cli))
}
