//! Kannel's `GET/POST /cgi-bin/sendsms`, so tools that speak Kannel work unchanged: username,
//! password, from, to (several separated by spaces or `+`), text, coding (0 7-bit, 1 8-bit, 2
//! UCS2), dlr-mask, dlr-url, validity and deferred (minutes). Answers are Kannel's texts:
//! `0: Accepted for delivery` (202), `Authorization failed for sendsms` (403), ...
//!
//! The receipt callback is a GET of dlr-url with Kannel's placeholders filled
//! ([`Fill::url`]): `%d` dlr value (1 delivered, 2 failed, 4 buffered, 8 accepted by the
//! SMSC), `%p` the handset (the message's `to`), `%P` the sender (`from`), `%q`/`%Q` the same
//! with `00` as `+`, `%A` the SMSC's receipt text, `%I` our message id, `%F` our id too (the
//! upstream's id is not kept), `%T` Unix time, `%t` `YYYY-MM-DD hh:mm:ss`, `%i` the upstream
//! (smsc-id), `%n`/`%o` the account, `%%` a `%`. Values are URL-encoded.

use super::problem::Problem;
use super::records::{Callback, Record};
use super::submit::{self, Content, Fields, Submit, TextEncoding};
use super::webhook::{self, Hook};
use super::Http;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A receipt's values for a dlr-url.
pub struct Fill<'a> {
    pub record: &'a Record,
    pub dlr: u8,
    pub reply: &'a str,
    pub upstream: &'a str,
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn plus(s: &str) -> String {
    match s.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => s.to_owned(),
    }
}

impl Fill<'_> {
    /// `template` with every known placeholder replaced; unknown ones stay as written.
    pub fn url(&self, template: &str) -> String {
        let r = self.record;
        let now_ms = crate::sim::unix_ms();
        let mut out = String::with_capacity(template.len() + 64);
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let Some(k) = chars.next() else {
                out.push('%');
                break;
            };
            let v = match k {
                'd' => self.dlr.to_string(),
                'p' => enc(&r.to),
                'P' => enc(&r.from),
                'q' => enc(&plus(&r.to)),
                'Q' => enc(&plus(&r.from)),
                'A' => enc(self.reply),
                'I' | 'F' => enc(&r.id),
                'T' => (now_ms / 1000).to_string(),
                't' => enc(&datetime(now_ms)),
                'i' => enc(self.upstream),
                'n' | 'o' => enc(&r.account),
                '%' => "%".to_owned(),
                other => format!("%{other}"),
            };
            out.push_str(&v);
        }
        out
    }
}

/// `YYYY-MM-DD hh:mm:ss` UTC.
fn datetime(ms: u64) -> String {
    let d = crate::sim::receipt_date(ms); // YYMMDDhhmm
    let secs = (ms / 1000) % 60;
    let g = |r: std::ops::Range<usize>| d.get(r).unwrap_or("00").to_owned();
    format!("20{}-{}-{} {}:{}:{secs:02}", g(0..2), g(2..4), g(4..6), g(6..8), g(8..10))
}

/// Kannel's plain-text answer.
fn answer(status: StatusCode, text: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text.to_owned()).into_response()
}

/// Our problem in Kannel's words.
fn kannel_answer(p: &Problem) -> Response {
    let mut r = match p.status {
        401 => answer(StatusCode::FORBIDDEN, "Authorization failed for sendsms"),
        429 => {
            answer(StatusCode::TOO_MANY_REQUESTS, "Too many requests for sendsms: over the account's rate")
        }
        503 => answer(StatusCode::SERVICE_UNAVAILABLE, "Sending failed: try again later"),
        s => answer(
            StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST),
            &format!("{} ({})", p.detail, p.field.as_deref().unwrap_or("")),
        ),
    };
    if let Some(d) = p.retry_after {
        if let Ok(v) = super::problem::retry_after_secs(d).to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

pub async fn sendsms(
    State(http): State<Arc<Http>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut params: HashMap<String, String> = HashMap::new();
    if let Some(q) = &query {
        params.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if method == Method::POST && form {
        params.extend(form_urlencoded::parse(&body).into_owned());
    }
    let r = match handle(&http, peer, &params).await {
        Ok(resp) => resp,
        Err(p) => kannel_answer(&p),
    };
    http.count_status(r.status());
    r
}

async fn handle(http: &Http, peer: SocketAddr, p: &HashMap<String, String>) -> Result<Response, Problem> {
    let get = |names: &[&str]| names.iter().find_map(|n| p.get(*n)).cloned();
    let user = get(&["username", "user"]).unwrap_or_default();
    let pass = get(&["password", "pass"]).unwrap_or_default();
    let account = super::auth::with_password(&http.core, &user, &pass, peer.ip())?;
    let Some(to) = get(&["to"]).filter(|t| !t.trim().is_empty()) else {
        return Err(Problem::invalid("to", "Missing receiver number for sendsms"));
    };
    let Some(from) = get(&["from"]).filter(|t| !t.is_empty()) else {
        return Err(Problem::invalid("from", "Missing sender for sendsms"));
    };
    let Some(text) = get(&["text"]) else {
        return Err(Problem::invalid("text", "Missing text for sendsms"));
    };
    let number = |name: &str| -> Result<Option<u64>, Problem> {
        match get(&[name]) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| Problem::invalid(name, format!("`{v}` is not a number"))),
        }
    };
    let content = match number("coding")?.unwrap_or(0) {
        0 => Content::Text { text, encoding: TextEncoding::Auto },
        1 => Content::Binary { data: text.into_bytes(), data_coding: 4 },
        2 => Content::Text { text, encoding: TextEncoding::Ucs2 },
        c => return Err(Problem::invalid("coding", format!("coding {c}: 0 (7-bit), 1 (8-bit) or 2 (UCS2)"))),
    };
    let mask = number("dlr-mask")?.unwrap_or(0);
    let mask = u8::try_from(mask).map_err(|_| Problem::invalid("dlr-mask", "0 to 31"))?;
    let dlr_url = get(&["dlr-url"]).filter(|u| !u.is_empty());
    let callback = match &dlr_url {
        Some(u) => {
            super::messages::check_url(u, "dlr-url")?;
            Some(Callback::Kannel { url: u.clone(), mask })
        }
        None => None,
    };
    // Bits 1 and 2 (final outcomes) ask for the SMSC receipt; 4 (buffered) for intermediate ones.
    let mut rd = match mask & 0x03 {
        0 => 0,
        2 => 2,
        _ => 1,
    };
    if mask & 0x04 != 0 {
        rd |= 0x10;
    }
    if callback.is_none() {
        rd = 0;
    }
    let minutes = |name: &str, f: fn(u64) -> Option<String>| -> Result<Option<String>, Problem> {
        match number(name)? {
            None => Ok(None),
            Some(m) => f(m.saturating_mul(60))
                .filter(|_| m > 0)
                .map(Some)
                .ok_or_else(|| Problem::invalid(name, "minutes, 1 to 99 days")),
        }
    };
    let validity = minutes("validity", submit::relative_time)?;
    let schedule = minutes("deferred", submit::relative_time)?;
    let to: Vec<String> = to.split([' ', '+']).filter(|t| !t.is_empty()).map(str::to_owned).collect();
    let s = Submit { from, to, content, registered_delivery: rd, validity, schedule, callback };
    let fields = Fields {
        from: "from",
        to: |_| "to".to_owned(),
        text: "text",
        validity: "validity",
        schedule: "deferred",
    };
    let outcome = submit::submit(http, &account, s, &fields).await?;
    if outcome.accepted() == 0 {
        return Err(super::refused(outcome.first_error()));
    }
    // dlr-mask 8: "accepted by the SMSC", told at once for every part accepted.
    if mask & 0x08 != 0 {
        if let Some(url) = &dlr_url {
            for (_, parts) in &outcome.to {
                for part in parts.iter().filter(|p| p.result.is_ok()) {
                    let Ok(Some(rec)) = http.records.get(&account.system_id, &part.id).await else {
                        continue;
                    };
                    let fill = Fill { record: &rec, dlr: 8, reply: "ACK/", upstream: "" };
                    let hook = Hook {
                        method: "GET".into(),
                        url: fill.url(url),
                        body: String::new(),
                        id: Some(part.id.clone()),
                    };
                    if let Err(st) =
                        webhook::enqueue(&http.core, &http.wake, &account.system_id, &hook, None).await
                    {
                        tracing::warn!(status = %st, "dlr-mask 8 callback not queued");
                    }
                }
            }
        }
    }
    Ok(answer(StatusCode::ACCEPTED, "0: Accepted for delivery"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_encoded() {
        let r = Record {
            id: "abc".into(),
            account: "acme".into(),
            from: "Shop".into(),
            to: "0031612345678".into(),
            part: 1,
            parts: 1,
            state: "delivered".into(),
            submitted_at_ms: 0,
            updated_at_ms: 0,
            error: None,
            callback: None,
            receipt_error: None,
        };
        let f = Fill { record: &r, dlr: 1, reply: "id:abc stat:DELIVRD", upstream: "up" };
        assert_eq!(
            f.url("http://h/d?s=%d&to=%p&q=%q&from=%P&a=%A&id=%I&x=%Z&pc=%%&n=%n&i=%i"),
            "http://h/d?s=1&to=0031612345678&q=%2B31612345678&from=Shop&a=id%3Aabc+stat%3ADELIVRD&id=abc&x=%Z&pc=%&n=acme&i=up"
        );
        assert!(f.url("%T").parse::<u64>().is_ok());
        assert_eq!(f.url("%t").len(), "2026-12-02+15%3A04%3A05".len());
        assert_eq!(f.url("end%"), "end%");
    }
}
