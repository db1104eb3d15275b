//! Does a child need applying? Each applied child carries the hash of the object the operator
//! applied ([`APPLIED_HASH_ANNOTATION`]): a different desired hash means the spec changed,
//! including a field that was removed (which no comparison of the desired fields against the
//! observed ones can see). With the hash unchanged, the observed object is still compared with
//! the desired one, so an edit by someone else is undone; quantities compare by value, as the
//! API server normalises them (`0.5` CPU is stored as `500m`).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Annotation on every applied child: the hash of the object the operator last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "smsc.io/applied-hash";

/// The hash of a desired object (serialized; its maps are ordered, so the bytes are stable).
pub fn hash(desired: &Value) -> String {
    let digest = Sha256::digest(desired.to_string().as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Is `observed` what applying `desired` (whose hash is `desired_hash`) would give?
pub fn up_to_date(desired: &Value, desired_hash: &str, observed: &Value) -> bool {
    let applied = observed
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
        .and_then(Value::as_str);
    applied == Some(desired_hash) && is_subset(desired, observed)
}

/// Is every field set in `desired` equal in `observed`? Server defaults (fields only in
/// `observed`) are ignored; quantities compare by value.
pub fn is_subset(desired: &Value, observed: &Value) -> bool {
    match (desired, observed) {
        (Value::Null, _) => true,
        (Value::Object(d), Value::Object(o)) => d.iter().all(|(k, v)| match o.get(k) {
            Some(ov) => is_subset(v, ov),
            None => {
                v.is_null()
                    || v.as_object().is_some_and(|m| m.is_empty())
                    || v.as_array().is_some_and(|a| a.is_empty())
            }
        }),
        (Value::Array(d), Value::Array(o)) => {
            d.len() == o.len() && d.iter().zip(o).all(|(a, b)| is_subset(a, b))
        }
        (Value::String(d), Value::String(o)) => d == o || quantity(d).is_some_and(|q| Some(q) == quantity(o)),
        (d, o) => d == o,
    }
}

/// A Kubernetes quantity (`500m`, `0.5`, `1Gi`, `1.5e3`) as a number; None if `s` is not one.
/// Exact for the values resource fields hold: the mantissa and the scale are exact in an f64
/// and a negative decimal exponent is applied by one (correctly rounded) division, so two
/// spellings of the same number give the same value.
fn quantity(s: &str) -> Option<f64> {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let (negative, digits) = match number.as_bytes().first() {
        Some(b'-') => (true, &number[1..]),
        Some(b'+') => (false, &number[1..]),
        _ => (false, number),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() || !(int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())) {
        return None;
    }
    let mantissa_digits = format!("{int}{frac}");
    if mantissa_digits.len() > 15 {
        return None;
    }
    let mantissa: u64 = mantissa_digits.parse().ok()?;
    let (pow2, pow10): (i32, i32) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        e if e.starts_with(['e', 'E']) => (0, e[1..].parse().ok()?),
        _ => return None,
    };
    let pow10 = pow10.checked_sub(i32::try_from(frac.len()).ok()?)?;
    if pow10.abs() > 22 {
        return None;
    }
    // Products of exact values below 2^53 and powers of ten up to 1e22 are exact.
    let mut v = mantissa as f64 * 2f64.powi(pow2);
    if pow10 >= 0 {
        v *= 10f64.powi(pow10);
    } else {
        v /= 10f64.powi(-pow10);
    }
    Some(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_defaults_but_not_changes() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 2775}], "empty": {}, "none": null}});
        let observed =
            json!({"spec": {"replicas": 2, "ports": [{"port": 2775, "protocol": "TCP"}], "extra": 1}});
        assert!(is_subset(&desired, &observed));
        assert!(!is_subset(&json!({"spec": {"replicas": 3}}), &observed));
        assert!(!is_subset(&json!({"spec": {"ports": [{"port": 2775}, {"port": 8775}]}}), &observed));
        assert!(!is_subset(&json!({"spec": {"missing": 1}}), &observed));
    }

    #[test]
    fn quantities_compare_by_value() {
        for (a, b) in [("0.5", "500m"), ("1", "1000m"), ("1.5Gi", "1536Mi"), ("1e3", "1k"), ("0.1", "100m")] {
            assert_eq!(quantity(a), quantity(b), "{a} = {b}");
            assert!(is_subset(&json!({ "cpu": a }), &json!({ "cpu": b })), "{a} = {b}");
        }
        for (a, b) in [("0.5", "501m"), ("1Gi", "1G"), ("1", "1Ki")] {
            assert_ne!(quantity(a), quantity(b), "{a} != {b}");
        }
        for s in ["", "abc", "1x", "sms", "1.2.3", "-", "192.0.2.0/24"] {
            assert_eq!(quantity(s), None, "{s:?}");
        }
        assert!(!is_subset(&json!({ "name": "a" }), &json!({ "name": "b" })));
    }

    #[test]
    fn a_removed_field_or_an_edit_needs_an_apply_a_normalised_one_does_not() {
        let with = json!({ "spec": { "nodeSelector": { "pool": "sms" }, "cpu": "0.5" } });
        let without = json!({ "spec": { "cpu": "0.5" } });
        let applied = |v: &Value, h: &str| {
            let mut o = v.clone();
            o["metadata"] = json!({ "annotations": { APPLIED_HASH_ANNOTATION: h } });
            o["spec"]["cpu"] = json!("500m");
            o["spec"]["defaulted"] = json!(true);
            o
        };
        let observed = applied(&with, &hash(&with));
        assert!(up_to_date(&with, &hash(&with), &observed), "normalised and defaulted: no write");
        // nodeSelector dropped from the spec: the observed object still holds every desired field.
        assert!(is_subset(&without, &observed));
        assert!(!up_to_date(&without, &hash(&without), &observed), "removal must be applied");
        let mut edited = observed.clone();
        edited["spec"]["nodeSelector"]["pool"] = json!("other");
        assert!(!up_to_date(&with, &hash(&with), &edited), "an edit by someone else is undone");
        let mut unannotated = observed.clone();
        unannotated["metadata"] = json!({});
        assert!(!up_to_date(&with, &hash(&with), &unannotated));
        assert_ne!(hash(&with), hash(&without));
    }
}
