//! `smscd queue`: what store-and-forward holds, as a table an operator can read. It asks a
//! running smscd's admin listener (`GET /queue` or `/queue/<account>`, JSON from
//! [`crate::forward::view`]) rather than the store, so it needs no store credentials and shows
//! the same thing on memory and Redis stores.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long the admin listener may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// GET `/queue` (or `/queue/<account>`) from the admin listener at `addr` (`host:port`): the JSON
/// body, or why not.
pub fn fetch(addr: &str, account: Option<&str>) -> Result<serde_json::Value, String> {
    let path = match account {
        Some(a) => format!("/queue/{}", form_urlencoded::byte_serialize(a.as_bytes()).collect::<String>()),
        None => "/queue".to_owned(),
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("admin address {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("admin address {addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&sock, TIMEOUT)
        .map_err(|e| format!("cannot reach smscd's admin at {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let _ = s.set_write_timeout(Some(TIMEOUT));
    // HTTP/1.0: the answer comes whole with its length, then the connection closes.
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("{addr}{path}: HTTP {status}, not JSON: {e}"))?;
    if status != "200" {
        let why = json.get("error").and_then(|e| e.as_str()).unwrap_or("no reason given");
        return Err(format!("{addr}{path}: HTTP {status}: {why}"));
    }
    Ok(json)
}

/// `YYMMDDhhmmss...` (SMPP absolute time, UTC) as `20YY-MM-DD hh:mm:ss`; anything else as given.
fn readable(t: &str) -> String {
    let b = t.as_bytes();
    if b.len() >= 12 && b[..12].iter().all(u8::is_ascii_digit) {
        return format!("20{}-{}-{} {}:{}:{}", &t[0..2], &t[2..4], &t[4..6], &t[6..8], &t[8..10], &t[10..12]);
    }
    t.to_owned()
}

/// Rows as left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(
                |(i, cell)| {
                    if i + 1 == r.len() {
                        cell.clone()
                    } else {
                        format!("{cell:<w$}", w = widths[i])
                    }
                },
            )
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The admin view as two tables: per account (held, oldest, most overdue, per route), then the
/// messages listed (earliest due first; the view lists at most 20 per account, 1000 for one).
pub fn render(view: &serde_json::Value) -> String {
    let empty = serde_json::Map::new();
    let accounts = view.as_object().unwrap_or(&empty);
    let mut summary = vec![["ACCOUNT", "HELD", "OLDEST", "OVERDUE", "ROUTES"].map(String::from).to_vec()];
    let mut messages =
        vec![["ACCOUNT", "ID", "DESTINATION", "ROUTE", "DUE (UTC)", "EXPIRES (UTC)", "ATTEMPTS"]
            .map(String::from)
            .to_vec()];
    for (account, a) in accounts {
        let routes = a
            .get("routes")
            .and_then(|r| r.as_object())
            .map(|r| r.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".to_owned());
        let secs = |k: &str| a.get(k).and_then(|v| v.as_u64()).map_or("-".to_owned(), |s| format!("{s}s"));
        summary.push(vec![
            account.clone(),
            a.get("held").map_or("-".to_owned(), |v| v.to_string()),
            secs("oldest_secs"),
            secs("overdue_secs"),
            routes,
        ]);
        for m in a.get("messages").and_then(|m| m.as_array()).map(Vec::as_slice).unwrap_or_default() {
            let s = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
            messages.push(vec![
                account.clone(),
                s("id"),
                s("destination"),
                s("route"),
                readable(&s("due")),
                readable(&s("expires")),
                m.get("attempts").map_or("-".to_owned(), |v| v.to_string()),
            ]);
        }
    }
    let mut out = table(&summary);
    if messages.len() > 1 {
        out.push('\n');
        out.push_str(&table(&messages));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_accounts_and_messages() {
        let v = serde_json::json!({
            "esme": { "held": 2, "oldest_secs": 7, "overdue_secs": 1, "routes": { "default": 2 },
              "messages": [ { "id": "abc", "destination": "3161", "route": "default",
                "due": "261202184000000+", "expires": "261202194000000+", "attempts": 3 } ] },
            "idle": { "held": 0, "oldest_secs": 0, "overdue_secs": 0, "routes": {}, "messages": [] }
        });
        let out = render(&v);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ACCOUNT", "HELD", "OLDEST", "OVERDUE", "ROUTES"]
        );
        assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["esme", "2", "7s", "1s", "default=2"]);
        assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["idle", "0", "0s", "0s", "-"]);
        assert!(out.contains("abc") && out.contains("2026-12-02 18:40:00"), "{out}");
    }
}
