//! `SMPP_BIND_<NAME>_<FIELD>` environment variables: override a field of the bind whose name,
//! upper-cased with `-` as `_`, is NAME, or declare a new bind named NAME in lower case.

use super::error::{Origin, Problem};
use smsc_api::smscd_config::{BindConfig, BindType, ReconnectConfig, SmscdConfig};
use std::collections::{BTreeMap, HashMap};

const PREFIX: &str = smsc_api::names::BIND_ENV_PREFIX;

/// The scalar fields a variable may set, as they appear in variable names.
const FIELDS: &[&str] = &[
    "HOST",
    "PORT",
    "SYSTEM_ID",
    "PASSWORD",
    "SYSTEM_TYPE",
    "BIND_TYPE",
    "MAX_MSG_PER_SEC",
    "WINDOW",
    "BINDS",
    "ENQUIRE_LINK_SECS",
];

/// Which environment variable set each key path (`binds[1].port`), for error origins.
pub(crate) type EnvOrigins = HashMap<String, String>;

/// The name a bind answers to in variable names.
pub(crate) fn env_name(bind_name: &str) -> String {
    bind_name.to_ascii_uppercase().replace('-', "_")
}

/// Splits `SMPP_BIND_<NAME>_<FIELD>`; the longest matching FIELD wins, so `SMPP_BIND_A_BIND_TYPE`
/// is bind A's BIND_TYPE.
fn split_var(var: &str) -> Option<(&str, &'static str)> {
    let rest = var.strip_prefix(PREFIX)?;
    FIELDS
        .iter()
        .filter_map(|f| {
            let name = rest.strip_suffix(f)?.strip_suffix('_')?;
            (!name.is_empty()).then_some((name, *f))
        })
        .max_by_key(|(_, f)| f.len())
}

/// Applies the variables. `listed` are the variable names the environment is known to hold (to
/// find new binds); `lookup` answers for any name (to find overrides of declared binds).
pub(crate) fn apply(
    cfg: &mut SmscdConfig,
    listed: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> EnvOrigins {
    let mut origins = EnvOrigins::new();
    // NAME -> FIELD -> (variable, value), in a stable order.
    let mut by_name: BTreeMap<String, BTreeMap<&'static str, (String, String)>> = BTreeMap::new();
    for bind in &cfg.binds {
        let name = env_name(&bind.name);
        for field in FIELDS {
            let var = format!("{PREFIX}{name}_{field}");
            if let Some(value) = lookup(&var) {
                by_name.entry(name.clone()).or_default().insert(field, (var, value));
            }
        }
    }
    for var in listed {
        if let Some((name, field)) = split_var(var) {
            if let Some(value) = lookup(var) {
                by_name.entry(name.to_string()).or_default().insert(field, (var.clone(), value));
            }
        }
    }

    for (name, fields) in by_name {
        let index = match cfg.binds.iter().position(|b| env_name(&b.name) == name) {
            Some(i) => i,
            None => {
                let (Some(host), Some(system_id)) = (fields.get("HOST"), fields.get("SYSTEM_ID")) else {
                    let vars: Vec<&str> = fields.values().map(|(v, _)| v.as_str()).collect();
                    problems.push(Problem {
                        origin: Origin::Env { var: vars.join(", ") },
                        key: String::new(),
                        message: format!(
                            "declares a new bind `{}`, which needs at least {PREFIX}{name}_HOST and {PREFIX}{name}_SYSTEM_ID",
                            name.to_ascii_lowercase()
                        ),
                    });
                    continue;
                };
                cfg.binds.push(new_bind(name.to_ascii_lowercase(), &host.1, &system_id.1));
                let i = cfg.binds.len() - 1;
                let vars: Vec<&str> = fields.values().map(|(v, _)| v.as_str()).collect();
                origins.insert(format!("binds[{i}]"), vars.join(", "));
                i
            }
        };
        for (field, (var, value)) in fields {
            let key = format!("binds[{index}].{}", field.to_ascii_lowercase());
            let Some(bind) = cfg.binds.get_mut(index) else { continue };
            match set_field(bind, field, &value) {
                Ok(()) => {
                    origins.insert(key, var);
                }
                Err(message) => problems.push(Problem { origin: Origin::Env { var }, key, message }),
            }
        }
    }
    origins
}

fn new_bind(name: String, host: &str, system_id: &str) -> BindConfig {
    // Defaults as the file would give them: round-trip an almost empty bind through serde.
    let minimal = format!(
        "{{ name: {}, host: {}, system_id: {} }}",
        json_str(&name),
        json_str(host),
        json_str(system_id)
    );
    serde_norway::from_str(&minimal).unwrap_or(BindConfig {
        name,
        host: host.to_string(),
        port: smsc_api::names::SMPP_PORT,
        system_id: system_id.to_string(),
        password: String::new(),
        system_type: String::new(),
        bind_type: BindType::Transceiver,
        max_msg_per_sec: None,
        window: 10,
        binds: 1,
        max_binds: None,
        enquire_link_secs: 30,
        reconnect: ReconnectConfig::default(),
        tls: None,
        message_id_format: Default::default(),
    })
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn set_field(b: &mut BindConfig, field: &str, value: &str) -> Result<(), String> {
    fn num<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, String> {
        value.trim().parse().map_err(|_| format!("invalid value `{value}`, expected {what}"))
    }
    match field {
        "HOST" => b.host = value.to_string(),
        "PORT" => b.port = num(value, "a port number (1-65535)")?,
        "SYSTEM_ID" => b.system_id = value.to_string(),
        "PASSWORD" => b.password = value.to_string(),
        "SYSTEM_TYPE" => b.system_type = value.to_string(),
        "BIND_TYPE" => {
            b.bind_type = match value.trim().to_ascii_lowercase().as_str() {
                "transmitter" => BindType::Transmitter,
                "receiver" => BindType::Receiver,
                "transceiver" => BindType::Transceiver,
                _ => {
                    return Err(format!(
                        "invalid value `{value}`, expected transmitter, receiver or transceiver"
                    ))
                }
            }
        }
        "MAX_MSG_PER_SEC" => b.max_msg_per_sec = Some(num(value, "a whole number of messages per second")?),
        "WINDOW" => b.window = num(value, "a whole number")?,
        "BINDS" => b.binds = num(value, "a whole number")?,
        "MAX_BINDS" => b.max_binds = Some(num(value, "a whole number of binds")?),
        "ENQUIRE_LINK_SECS" => b.enquire_link_secs = num(value, "a whole number of seconds")?,
        _ => return Err(format!("unknown field {field}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with(name: &str) -> SmscdConfig {
        SmscdConfig { binds: vec![new_bind(name.into(), "h", "s")], ..SmscdConfig::default() }
    }

    #[test]
    fn split_prefers_longest_field() {
        assert_eq!(split_var("SMPP_BIND_A_BIND_TYPE"), Some(("A", "BIND_TYPE")));
        assert_eq!(split_var("SMPP_BIND_MY_UP_BINDS"), Some(("MY_UP", "BINDS")));
        assert_eq!(split_var("SMPP_BIND_X_SYSTEM_ID"), Some(("X", "SYSTEM_ID")));
        assert_eq!(split_var("SMPP_BIND__HOST"), None);
        assert_eq!(split_var("SMPP_BIND_X_COLOUR"), None);
        assert_eq!(split_var("OTHER"), None);
    }

    #[test]
    fn overrides_a_declared_bind_by_lookup_alone() {
        let mut cfg = cfg_with("my-up");
        let mut problems = vec![];
        let lookup = |k: &str| (k == "SMPP_BIND_MY_UP_PASSWORD").then(|| "sekrit".to_string());
        let origins = apply(&mut cfg, &[], &lookup, &mut problems);
        assert!(problems.is_empty());
        assert_eq!(cfg.binds[0].password, "sekrit");
        assert_eq!(origins.get("binds[0].password").map(String::as_str), Some("SMPP_BIND_MY_UP_PASSWORD"));
    }

    #[test]
    fn declares_a_new_bind() {
        let mut cfg = SmscdConfig::default();
        let vars: HashMap<String, String> = [
            ("SMPP_BIND_BETA_HOST", "b.example"),
            ("SMPP_BIND_BETA_SYSTEM_ID", "sid"),
            ("SMPP_BIND_BETA_PORT", "2776"),
            ("SMPP_BIND_BETA_BIND_TYPE", "Transmitter"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let listed: Vec<String> = vars.keys().cloned().collect();
        let mut problems = vec![];
        apply(&mut cfg, &listed, &|k| vars.get(k).cloned(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let b = &cfg.binds[0];
        assert_eq!((b.name.as_str(), b.host.as_str(), b.port), ("beta", "b.example", 2776));
        assert_eq!(b.bind_type, BindType::Transmitter);
        assert_eq!(b.window, 10);
    }

    #[test]
    fn bad_values_and_incomplete_binds_name_the_variable() {
        let mut cfg = cfg_with("alpha");
        let vars: HashMap<String, String> = [("SMPP_BIND_ALPHA_PORT", "http"), ("SMPP_BIND_GAMMA_HOST", "g")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let listed: Vec<String> = vars.keys().cloned().collect();
        let mut problems = vec![];
        apply(&mut cfg, &listed, &|k| vars.get(k).cloned(), &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|t| t.contains("SMPP_BIND_ALPHA_PORT") && t.contains("binds[0].port")));
        assert!(text.iter().any(|t| t.contains("SMPP_BIND_GAMMA_HOST") && t.contains("SYSTEM_ID")));
    }
}
