//! `smsc-bench esme`: drive an SMSC with a pipelined ESME fleet and report (tools/bench.sh).
//!
//! There is no `sink` subcommand: smscd's built-in `sim` target is the upstream sink for relay
//! scenarios (it answers submit_sm inline and generates receipts on the same path a real
//! upstream's take), so a second sink would only measure itself.

use clap::{Parser, Subcommand};
use smsc_bench::{EsmeConfig, Mix};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "smsc-bench", about = "SMPP load generator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// ESME fleet: N transceiver binds, each with `window` submit_sm in flight.
    Esme(EsmeArgs),
    /// HTTP API: `concurrency` keep-alive clients POSTing /v1/messages; webhooks received.
    Http(HttpArgs),
}

#[derive(clap::Args)]
struct HttpArgs {
    /// smscd's HTTP API address (127.0.0.1 only).
    #[arg(long)]
    addr: SocketAddr,
    /// Bearer token of the account.
    #[arg(long)]
    token: String,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Sending phase, seconds (at most 3600).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Ask for receipts (the account's dlr_url should point at --webhook-port).
    #[arg(long)]
    receipts: bool,
    /// Receive webhooks on 127.0.0.1:PORT.
    #[arg(long)]
    webhook_port: Option<u16>,
    /// After sending: the longest wait for webhooks, seconds.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long)]
    json: bool,
}

fn http_main(a: HttpArgs) -> ExitCode {
    if !a.addr.ip().is_loopback() {
        eprintln!("only 127.0.0.1 targets are allowed");
        return ExitCode::from(64);
    }
    if !(a.duration > 0.0 && a.duration <= 3600.0 && a.drain >= 0.0 && a.drain <= 3600.0) {
        eprintln!("--duration must be in (0, 3600] and --drain in [0, 3600]");
        return ExitCode::from(64);
    }
    let cfg = smsc_bench::http::HttpConfig {
        addr: a.addr,
        token: a.token,
        concurrency: a.concurrency,
        duration: Duration::from_secs_f64(a.duration),
        receipts: a.receipts,
        webhook_port: a.webhook_port,
        drain: Duration::from_secs_f64(a.drain),
        server_pid: a.server_pid,
    };
    let rep = smsc_bench::http::run(&cfg);
    eprintln!("{}", rep.summary());
    if a.json {
        match serde_json::to_string(&rep) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("json: {e}"),
        }
    }
    if rep.requests_ok == 0 || !rep.problems.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(clap::Args)]
struct EsmeArgs {
    /// SMSC address (127.0.0.1 only); repeat for several replicas (binds are spread round robin).
    #[arg(long, required = true)]
    addr: Vec<SocketAddr>,
    #[arg(long, default_value = "bench")]
    system_id: String,
    #[arg(long, default_value = "benchpw")]
    password: String,
    /// Label in the report (default: the address).
    #[arg(long)]
    target: Option<String>,
    #[arg(long, default_value_t = 1)]
    binds: usize,
    /// Outstanding submit_sm per bind.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// submit_sm/s across the fleet (default: as fast as the window allows).
    #[arg(long)]
    rate: Option<u64>,
    /// Sending phase, seconds (at most 3600).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after this many messages (fleet-wide; a long message counts once), if before --duration.
    #[arg(long)]
    count: Option<u64>,
    /// Message kinds and weights: gsm7, ucs2, long (3-part concatenated), e.g. gsm7=8,ucs2=1,long=1.
    #[arg(long, default_value = "gsm7=1")]
    mix: Mix,
    /// Ask for a receipt with every submit_sm and account for them.
    #[arg(long)]
    registered_delivery: bool,
    /// Spread the messages over this many destination numbers (31600000000 and the ones after
    /// it, round robin: the same sequence every run). 1 sends everything to one number.
    #[arg(long, default_value_t = 1,
        value_parser = clap::value_parser!(u64).range(1..=smsc_bench::esme::MAX_DESTINATIONS))]
    destinations: u64,
    /// After sending: the longest wait for responses and receipts, seconds.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Report this process's CPU use over the sending phase (the server's).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the report as one JSON line on stdout (the summary still goes to stderr).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let a = match Cli::parse().cmd {
        Cmd::Esme(a) => a,
        Cmd::Http(a) => return http_main(a),
    };
    if a.addr.iter().any(|x| !x.ip().is_loopback()) {
        eprintln!("only 127.0.0.1 targets are allowed");
        return ExitCode::from(64);
    }
    if !(a.duration > 0.0 && a.duration <= 3600.0 && a.drain >= 0.0 && a.drain <= 3600.0) {
        eprintln!("--duration must be in (0, 3600] and --drain in [0, 3600]");
        return ExitCode::from(64);
    }
    let cfg = EsmeConfig {
        target: a
            .target
            .unwrap_or_else(|| a.addr.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")),
        addrs: a.addr,
        system_id: a.system_id,
        password: a.password,
        binds: a.binds,
        window: a.window,
        rate: a.rate,
        duration: Duration::from_secs_f64(a.duration),
        count: a.count,
        mix: a.mix,
        registered_delivery: a.registered_delivery,
        destinations: a.destinations,
        drain: Duration::from_secs_f64(a.drain),
        server_pid: a.server_pid,
    };
    let rep = smsc_bench::run(&cfg);
    eprintln!("{}", rep.summary());
    if a.json {
        match serde_json::to_string(&rep) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("json: {e}"),
        }
    }
    if rep.submit_sm_ok == 0 || !rep.problems.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
