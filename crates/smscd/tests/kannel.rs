//! Kannel (bearerbox + smsbox) as an ESME through smscd: HTTP sendsms -> submit_sm -> sim ->
//! receipt -> Kannel matches it to its message by our id and calls the DLR URL.

mod common;

use common::*;
use std::time::Duration;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("addr").port()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// run.sh in the foreground; TERM on drop so it takes both boxes down.
struct Kannel(Peer);

impl Drop for Kannel {
    fn drop(&mut self) {
        self.0.terminate();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kannel_dlr_arrives_with_our_id() {
    assert!(
        std::path::Path::new("/usr/sbin/bearerbox").exists() || which("bearerbox"),
        "Kannel bearerbox not installed: run tools/deps.sh apt (make test does)"
    );
    let mut cfg = base_config(vec![account("kannel", "secret")]);
    cfg.sim.receipt_delay_ms = 50;
    let d = Daemon::start(cfg).await;
    let mut capture = Peer::spawn(Lang::Python, "kannel/http_capture.py", &["--port".into(), "0".into()]);
    let http_port = capture.expect_event("listening").await["port"].as_u64().expect("port") as u16;
    let (admin, smsbox, sendsms) = (free_port(), free_port(), free_port());
    let args: Vec<String> = [
        "--smsc-port",
        &d.smpp.port().to_string(),
        "--system-id",
        "kannel",
        "--password",
        "secret",
        "--admin-port",
        &admin.to_string(),
        "--smsbox-port",
        &smsbox.to_string(),
        "--sendsms-port",
        &sendsms.to_string(),
        "--wait-online",
        "20",
    ]
    .map(String::from)
    .to_vec();
    let mut kannel = Kannel(Peer::spawn(Lang::Bash, "kannel/run.sh", &args));
    let ready = kannel.0.expect_event("ready").await;
    assert_eq!(ready["smsc_online"], true, "{}", kannel.0.context());

    let dlr = enc(&format!("http://127.0.0.1:{http_port}/dlr?type=%d&fid=%F&status=%A"));
    let path = format!(
        "/cgi-bin/sendsms?username=tester&password=foobar&from=12345&to=31600000000&text=hello+kannel&dlr-mask=9&dlr-url={dlr}"
    );
    let (status, body) = http_get(std::net::SocketAddr::from(([127, 0, 0, 1], sendsms)), &path).await;
    assert!(status == 202 || status == 200, "sendsms {status} {body}");

    // DLR type 8 (SMSC ack) then type 1 (delivered), both with our id.
    let mut fid_ack = None;
    let delivered = loop {
        let ev = capture.expect_event("http").await;
        let q = &ev["query"];
        match q["type"].as_str() {
            Some("8") => fid_ack = q["fid"].as_str().map(str::to_owned),
            Some("1") => break q.clone(),
            _ => {}
        }
    };
    let fid = delivered["fid"].as_str().expect("fid").to_owned();
    let text = delivered["status"].as_str().unwrap_or_default().to_owned();
    assert!(text.contains(&format!("id:{fid}")), "receipt text {text} carries our id {fid}");
    assert!(text.contains("stat:DELIVRD"), "{text}");
    if let Some(a) = fid_ack {
        assert_eq!(a, fid);
    }
    // The id is ours: it came from A's id generator (hex, no leading zero) and the sim's own id
    // (decimal) is not what Kannel saw.
    assert!(fid.bytes().all(|c| c.is_ascii_hexdigit()) && !fid.starts_with('0'), "{fid}");
    let m = d.metrics().await;
    assert_eq!(metric_sum(&m, "smscd_deliveries_total", &["result=\"delivered\""]), 1.0);
    kannel.0.terminate();
    let _ = tokio::time::timeout(Duration::from_secs(15), kannel.0.expect_event("stopped")).await;
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).exists())).unwrap_or(false)
}
