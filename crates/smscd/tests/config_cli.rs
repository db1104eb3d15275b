//! The smscd binary's command line: check-config output and errors, and a run stopped by SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_smscd");

const REFERENCE: &str = r#"server: { bind_address: "0.0.0.0", port: 2775 }
binds:
  - { name: alpha, host: smsc-a.example.net, port: 2775, system_id: ${SMPP_ALPHA_SYSTEM_ID},
      password: ${SMPP_ALPHA_PASSWORD}, bind_type: transceiver, max_msg_per_sec: 50 }
routing: { default_chain: ["bind:alpha"] }
"#;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().expect("tempdir"))
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, text).expect("write config");
        p
    }
}

/// Runs smscd with exactly this environment.
fn smscd(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN).args(args).env_clear().envs(env.iter().copied()).output().expect("run smscd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check(path: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = smscd(&["check-config", &path.display().to_string()], env);
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn reference_file_with_env_loads_and_prints_masked() {
    let d = Dir::new();
    let path = d.file("smpp.yaml", REFERENCE);
    let (code, out, err) =
        check(&path, &[("SMPP_ALPHA_SYSTEM_ID", "alpha_esme"), ("SMPP_ALPHA_PASSWORD", "chg:#me")]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("system_id: alpha_esme"), "{out}");
    assert!(out.contains("password: '***'") || out.contains("password: \"***\""), "{out}");
    assert!(!out.contains("chg:#me"), "secret printed: {out}");
    assert!(err.contains("warning:") && err.contains("no accounts"), "{err}");
}

#[test]
fn printed_config_is_itself_a_valid_config() {
    let d = Dir::new();
    let path = d.file("smpp.yaml", REFERENCE);
    let env = [("SMPP_ALPHA_SYSTEM_ID", "a"), ("SMPP_ALPHA_PASSWORD", "b")];
    let (code, out, _) = check(&path, &env);
    assert_eq!(code, 0);
    let again = d.file("printed.yaml", &out);
    let (code, out2, err) = check(&again, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, out2);
}

#[test]
fn missing_env_var_is_named_with_its_line() {
    let d = Dir::new();
    let path = d.file("smpp.yaml", REFERENCE);
    let (code, out, err) = check(&path, &[("SMPP_ALPHA_SYSTEM_ID", "a")]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("smpp.yaml:4: environment variable SMPP_ALPHA_PASSWORD is not set"), "{err}");
    assert!(!err.contains("SMPP_ALPHA_SYSTEM_ID"), "{err}");
}

#[test]
fn typo_names_file_line_and_key() {
    let d = Dir::new();
    let path = d.file(
        "smpp.yaml",
        "server:\n  port: 2775\nbinds:\n  - name: alpha\n    host: h\n    sytem_id: x\nrouting: { default_chain: [\"bind:alpha\"] }\n",
    );
    let (code, _, err) = check(&path, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("smpp.yaml:6: binds[0].sytem_id: unknown field `sytem_id`"), "{err}");
}

#[test]
fn bad_cidr_names_the_account() {
    let d = Dir::new();
    let path = d.file(
        "smpp.yaml",
        "accounts:\n  - system_id: shop\n    password: pw\n    allowed_cidrs:\n      - 10.0.0.0/8\n      - 10.1.2.300/32\nrouting: { default_chain: [sim] }\n",
    );
    let (code, _, err) = check(&path, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("smpp.yaml:6: accounts[0].allowed_cidrs[1]: account `shop`"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let d = Dir::new();
    let path = d.file(
        "smpp.yaml",
        "server: { port: 0 }\nbinds:\n  - { name: a, host: h, system_id: s, reconnect: { min_ms: 9, max_ms: 1 } }\nrouting: { default_chain: [\"bind:b\"] }\n",
    );
    let (code, _, err) = check(&path, &[]);
    assert_eq!(code, 1);
    for needle in [
        "smpp.yaml:1: server.port",
        "smpp.yaml:3: binds[0].reconnect",
        "smpp.yaml:4: routing.default_chain[0]",
    ] {
        assert!(err.contains(needle), "{needle} missing from {err}");
    }
}

#[test]
fn env_bind_variables_apply_in_check_config() {
    let d = Dir::new();
    let path = d.file("smpp.yaml", "routing: { default_chain: [\"bind:beta\"] }\n");
    let (code, out, err) =
        check(&path, &[("SMPP_BIND_BETA_HOST", "b.example"), ("SMPP_BIND_BETA_SYSTEM_ID", "sb")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("host: b.example"), "{out}");
    let (code, _, err) = check(&path, &[("SMPP_BIND_BETA_HOST", "b.example")]);
    assert_eq!(code, 1);
    assert!(err.contains("SMPP_BIND_BETA_SYSTEM_ID"), "{err}");
}

#[test]
fn file_from_smscd_config_and_usage_errors() {
    let d = Dir::new();
    let path = d.file("smpp.yaml", "routing: { default_chain: [sim] }\n");
    let p = path.display().to_string();
    let out = smscd(&["check-config"], &[("SMSCD_CONFIG", &p)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = smscd(&[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--config"));
    let out = smscd(&["check-config", "/nonexistent/smpp.yaml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/smpp.yaml"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn runs_and_stops_on_sigterm() {
    let d = Dir::new();
    let (smpp, admin) = (free_port(), free_port());
    let path = d.file(
        "smpp.yaml",
        &format!(
            "server: {{ bind_address: 127.0.0.1, port: {smpp} }}\nadmin: {{ bind_address: 127.0.0.1, port: {admin} }}\naccounts: [{{ system_id: a, password: p }}]\nrouting: {{ default_chain: [sim] }}\nshutdown: {{ drain_secs: 2 }}\n"
        ),
    );
    let mut child = Command::new(BIN)
        .args(["--config", &path.display().to_string(), "--log-format", "json"])
        .env_clear()
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn smscd");
    // Up when the SMPP port accepts connections.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", smpp)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("smscd exited early: {status}");
        }
        assert!(Instant::now() < deadline, "smscd did not listen on {smpp}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("smscd did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let logs: Vec<String> = child
        .stderr
        .take()
        .map(|e| BufReader::new(e).lines().map_while(Result::ok).collect())
        .unwrap_or_default();
    assert!(logs.iter().any(|l| l.starts_with('{') && l.contains("shutting down")), "{logs:?}");
    // Issue 14: the memory store says at start what a restart costs.
    assert!(
        logs.iter().any(|l| l.contains("WARN") && l.contains("memory store") && l.contains("lost")),
        "{logs:?}"
    );
}

/// Issue 14: check-config masks every password form a Redis URL can carry.
#[test]
fn check_config_masks_every_redis_password_form() {
    let d = Dir::new();
    for url in [
        "unix:///run/redis.sock?db=1&pass=s3cret",
        "redis://user:s3cret@127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/0?password=s3cret",
        "rediss://s3cret@127.0.0.1?pwd=s3cret",
    ] {
        let path = d.file("smpp.yaml", &format!("store: {{ type: redis, url: \"{url}\" }}\n"));
        let (code, out, err) = check(&path, &[]);
        assert_eq!(code, 0, "{url}: {err}");
        assert!(out.contains("***"), "{url}: {out}");
        assert!(!out.contains("s3cret") && !err.contains("s3cret"), "{url} printed: {out}{err}");
    }
}
