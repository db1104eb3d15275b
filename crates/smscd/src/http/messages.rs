//! `POST /v1/messages` and `GET /v1/messages/{id}`: the JSON API.

use super::problem::Problem;
use super::records::Callback;
use super::submit::{self, Content, Fields, Submit, TextEncoding};
use super::Http;
use crate::store::queue::Lookup;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum To {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EncodingWord {
    Auto,
    Gsm7,
    Ucs2,
}

/// The request body; unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRequest {
    from: String,
    to: To,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    encoding: Option<EncodingWord>,
    /// Base64.
    #[serde(default)]
    binary: Option<String>,
    #[serde(default)]
    data_coding: Option<u8>,
    /// Absent: wanted when a callback (this one or the account's dlr_url) will get it.
    #[serde(default)]
    receipt: Option<bool>,
    /// Seconds.
    #[serde(default)]
    validity: Option<u64>,
    /// RFC 3339 UTC.
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default)]
    callback_url: Option<String>,
}

/// JSON Pointer of a serde_path_to_error path.
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        out.push('/');
        match seg {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => out.push_str(variant),
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

/// An `http://` or `https://` URL with a host.
pub fn check_url(url: &str, field: &str) -> Result<String, Problem> {
    let uri: http::Uri = url.parse().map_err(|e| Problem::invalid(field, format!("not a URL: {e}")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(Problem::invalid(field, "must be an absolute http:// or https:// URL"));
    }
    Ok(url.to_owned())
}

fn parse(body: &[u8]) -> Result<MessageRequest, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = pointer(e.path());
        let inner = e.into_inner();
        let p = if inner.is_data() {
            Problem::invalid(field.clone(), inner.to_string())
        } else {
            Problem::bad_request(format!("not valid JSON: {inner}"))
        };
        if field.is_empty() || field == "/?" {
            p
        } else {
            p.at(field)
        }
    })
}

fn to_submit(http: &Http, account: &str, r: MessageRequest) -> Result<Submit, Problem> {
    let content = match (r.text, r.binary) {
        (Some(_), Some(_)) => {
            return Err(Problem::invalid("/binary", "give either text or binary, not both"))
        }
        (None, None) => return Err(Problem::invalid("/text", "text or binary is required")),
        (Some(text), None) => {
            if r.data_coding.is_some() {
                return Err(Problem::invalid(
                    "/data_coding",
                    "data_coding goes with binary; text takes encoding",
                ));
            }
            let encoding = match r.encoding.unwrap_or(EncodingWord::Auto) {
                EncodingWord::Auto => TextEncoding::Auto,
                EncodingWord::Gsm7 => TextEncoding::Gsm7,
                EncodingWord::Ucs2 => TextEncoding::Ucs2,
            };
            Content::Text { text, encoding }
        }
        (None, Some(b64)) => {
            if r.encoding.is_some() {
                return Err(Problem::invalid(
                    "/encoding",
                    "encoding goes with text; binary takes data_coding",
                ));
            }
            let data = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| Problem::invalid("/binary", format!("not base64: {e}")))?;
            Content::Binary { data, data_coding: r.data_coding.unwrap_or(4) }
        }
    };
    let callback = match r.callback_url {
        Some(u) => Some(Callback::Json { url: check_url(&u, "/callback_url")? }),
        None => None,
    };
    let has_dlr_url = http.core.config.get().http.account(account).is_some_and(|a| a.dlr_url.is_some());
    let receipt = r.receipt.unwrap_or(callback.is_some() || has_dlr_url);
    let validity = match r.validity {
        Some(secs) => Some(
            submit::relative_time(secs)
                .filter(|_| secs > 0)
                .ok_or_else(|| Problem::invalid("/validity", "seconds, 1 to 99 days"))?,
        ),
        None => None,
    };
    let schedule = match r.schedule {
        Some(s) => Some(submit::absolute_time(&s).ok_or_else(|| {
            Problem::invalid("/schedule", "an RFC 3339 UTC time, e.g. 2026-12-24T18:00:00Z")
        })?),
        None => None,
    };
    let to = match r.to {
        To::One(t) => vec![t],
        To::Many(v) => v,
    };
    Ok(Submit {
        from: r.from,
        to,
        content,
        registered_delivery: u8::from(receipt),
        validity,
        schedule,
        callback,
    })
}

fn to_field(i: usize) -> String {
    format!("/to/{i}")
}

pub async fn post(
    State(http): State<Arc<Http>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    http.respond(post_inner(&http, peer, &headers, &body).await)
}

async fn post_inner(
    http: &Http,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Problem> {
    let account = super::auth::from_headers(&http.core, &http.tokens, headers, peer.ip())?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !ct.starts_with("application/json") {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the message as application/json",
            ));
        }
    }
    let req = parse(body)?;
    let s = to_submit(http, &account.system_id, req)?;
    let multi = s.to.len() > 1;
    let to: fn(usize) -> String = if multi { to_field } else { |_| "/to".to_owned() };
    let fields = Fields { from: "/from", to, text: "/text", validity: "/validity", schedule: "/schedule" };
    let fields = match s.content {
        Content::Binary { .. } => Fields { text: "/binary", ..fields },
        _ => fields,
    };
    let outcome = submit::submit(http, &account, s, &fields).await?;
    if outcome.accepted() == 0 {
        return Err(super::refused(outcome.first_error()));
    }
    let messages: Vec<_> = outcome
        .to
        .iter()
        .map(|(to, parts)| {
            json!({
                "to": to,
                "parts": parts.iter().map(|p| match p.result {
                    Ok(()) => json!({ "id": p.id, "status": "accepted" }),
                    Err(s) => json!({ "id": p.id, "status": "failed", "error": crate::metrics::status_name(s) }),
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let body = json!({ "messages": messages }).to_string();
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn get(
    State(http): State<Arc<Http>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let account = super::auth::from_headers(&http.core, &http.tokens, &headers, peer.ip())?;
        let rec = http
            .records
            .get(&account.system_id, &id)
            .await
            .map_err(|_| Problem::unavailable("the message store does not answer"))?
            .ok_or_else(|| {
                Problem::not_found(format!("no message `{id}` of this account (or it expired)"))
            })?;
        // Held by store-and-forward: waiting for its schedule, or queued for a retry.
        let mut state = rec.state.clone();
        if state == "accepted" {
            let now = crate::sim::unix_ms();
            if let Ok(Some(Lookup::Waiting { message, .. })) =
                http.core.queue.lookup(&account.system_id, &id, now).await
            {
                let waiting =
                    if message.attempts == 0 && message.due_ms > now { "scheduled" } else { "queued" };
                state = waiting.to_owned();
            }
        }
        let body = json!({
            "id": rec.id,
            "from": rec.from,
            "to": rec.to,
            "part": rec.part,
            "parts": rec.parts,
            "state": state,
            "error": rec.error,
            "receipt_error": rec.receipt_error,
            "submitted_at_ms": rec.submitted_at_ms,
            "updated_at_ms": rec.updated_at_ms,
        })
        .to_string();
        Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
    }
    .await;
    http.respond(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_field() {
        let e = parse(br#"{"from":"1","to":"2","text":"x","colour":"red"}"#).unwrap_err();
        assert_eq!(e.status, 422, "{e:?}");
        assert!(e.detail.contains("colour"), "{e:?}");
        let e = parse(br#"{"from":"1","to":["2",3],"text":"x"}"#).unwrap_err();
        assert_eq!(e.status, 422, "{e:?}");
        let e = parse(br#"{"from":"1","to":"2","text":"x","data_coding":300}"#).unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (422, Some("/data_coding")), "{e:?}");
        let e = parse(br#"{"from":"1","to":"2","#).unwrap_err();
        assert_eq!(e.status, 400, "{e:?}");
        assert!(parse(br#"{"from":"1","to":["2","3"],"text":"x","receipt":true}"#).is_ok());
    }

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1:9/x?y=%d", "/f").is_ok());
        assert!(check_url("https://example.net/", "/f").is_ok());
        for bad in ["ftp://x/", "/relative", "http://", "not a url"] {
            assert_eq!(check_url(bad, "/f").unwrap_err().field.as_deref(), Some("/f"), "{bad}");
        }
    }
}
