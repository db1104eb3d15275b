//! Loading the smscd config file: `${VAR}` substitution, parsing into
//! [`smsc_api::smscd_config::SmscdConfig`], `SMPP_BIND_*` overrides, validation.
//!
//! Every problem names the file and line (or the environment variable) and the key path, e.g.
//! `smpp.yaml:7: binds[0].port: invalid value ...`. All problems are reported at once.
//!
//! Pipeline: text -> [`subst`] (line-preserving, so lines stay right) -> serde_norway through
//! serde_path_to_error (key path; the parser's mark gives the line) -> `SMPP_BIND_*` (typed, so a
//! bad value names its variable) -> [`validate`]. A key path -> line index ([`positions`]) of the
//! substituted text places problems found after parsing.

mod env_binds;
mod error;
mod mask;
mod positions;
mod subst;
mod validate;

pub use error::{ConfigError, Origin, Problem};
pub use mask::{masked, MASK};
pub use validate::parse_cidr;

use positions::Positions;
use smsc_api::smscd_config::SmscdConfig;
use std::collections::HashMap;
use std::path::Path;

/// A config that passed validation, with the warnings found on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: SmscdConfig,
    /// Formatted like errors: `smpp.yaml:3: binds[0]: bind `alpha` is in no routing chain`.
    pub warnings: Vec<String>,
}

/// Loads `path`, reading variables through `env`. `env` can only be asked by name, so
/// `SMPP_BIND_*` variables here override binds the file declares but cannot declare new ones;
/// [`load_file_with_vars`] and [`load_from_env_file`] can.
pub fn load_file(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
    let text = read(path)?;
    load_str(&text, &label(path), &[], env)
}

/// Loads `path` with these variables as the whole environment.
pub fn load_file_with_vars(path: &Path, vars: &HashMap<String, String>) -> Result<Loaded, ConfigError> {
    let text = read(path)?;
    let listed: Vec<String> = vars.keys().cloned().collect();
    load_str(&text, &label(path), &listed, &|k| vars.get(k).cloned())
}

/// Loads `path` with the process environment (variables that are not UTF-8 are ignored).
pub fn load_from_env_file(path: &Path) -> Result<Loaded, ConfigError> {
    let vars: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    load_file_with_vars(path, &vars)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })
}

/// What errors call the file: its path as given.
fn label(path: &Path) -> String {
    path.display().to_string()
}

/// Loads config text. `file` names it in errors; `listed` are the variable names known to be set
/// (for `SMPP_BIND_*` discovery); `lookup` answers for any name.
pub fn load_str(
    text: &str,
    file: &str,
    listed: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let at = |line: Option<usize>| Origin::File { file: file.to_string(), line };
    let text = subst::substitute(text, lookup).map_err(|errs| {
        ConfigError::Invalid(
            errs.into_iter()
                .map(|e| Problem { origin: at(Some(e.line)), key: String::new(), message: e.message })
                .collect(),
        )
    })?;
    let positions = Positions::index(&text);
    let mut config = parse(&text, &positions).map_err(|(line, key, message)| {
        ConfigError::Invalid(vec![Problem { origin: at(line), key, message }])
    })?;

    resolve_script(&mut config, file);
    let mut problems = Vec::new();
    let env_origins = env_binds::apply(&mut config, listed, lookup, &mut problems);
    let locate = |key: &str| -> Origin {
        let mut k = key;
        loop {
            if let Some(var) = env_origins.get(k) {
                return Origin::Env { var: var.clone() };
            }
            match k.rfind(['.', '[']) {
                Some(cut) => k = &k[..cut],
                None => return at(positions.line_of(key)),
            }
        }
    };
    let mut findings = validate::validate(&config);
    if findings.errors.is_empty() {
        tls_material(&config, &mut findings);
    }
    problems.extend(findings.errors.into_iter().map(|f| Problem {
        origin: locate(&f.key),
        key: f.key,
        message: f.message,
    }));
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    let warnings = findings
        .warnings
        .into_iter()
        .map(|f| Problem { origin: locate(&f.key), key: f.key, message: f.message }.to_string())
        .collect();
    Ok(Loaded { config, warnings })
}

/// A relative `handlers.script` is taken from the config file's directory (where a ConfigMap
/// mounts both).
fn resolve_script(cfg: &mut SmscdConfig, file: &str) {
    let Some(h) = &mut cfg.handlers else { return };
    let script = Path::new(&h.script);
    if script.is_relative() && !h.script.is_empty() {
        if let Some(dir) = Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()) {
            h.script = dir.join(script).display().to_string();
        }
    }
}

/// Parses the certificate material, so a file that exists but holds no usable key is refused at
/// load (and on reload, where the old config then keeps running).
fn tls_material(cfg: &SmscdConfig, f: &mut validate::Findings) {
    if let Some(tls) = &cfg.server.tls {
        if let Err(e) = crate::tls::server_config(tls) {
            f.errors.push(validate::Finding { key: "server.tls".into(), message: e.to_string() });
        }
    }
    for (i, b) in cfg.binds.iter().enumerate() {
        if let Some(tls) = &b.tls {
            if let Err(e) = crate::tls::client_config(tls) {
                f.errors.push(validate::Finding { key: format!("binds[{i}].tls"), message: e.to_string() });
            }
        }
    }
}

/// Deserialises substituted text; an error is (line, key path, message).
fn parse(text: &str, positions: &Positions) -> Result<SmscdConfig, (Option<usize>, String, String)> {
    if is_blank(text) {
        return Ok(SmscdConfig::default());
    }
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." { String::new() } else { path };
        let inner = e.into_inner();
        let mut message = inner.to_string();
        let mut line = None;
        if let Some(loc) = inner.location() {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(m) = message.strip_suffix(&suffix) {
                message = m.to_string();
            }
            // An error raised after the parser moved on (e.g. inside `store`, an internally
            // tagged enum) carries the document start; the index knows better.
            if loc.index() > 0 || key.is_empty() {
                line = Some(loc.line());
            }
        }
        // serde_norway prefixes its own path, which for an unknown key is the parent's.
        let mut p = key.as_str();
        while !p.is_empty() {
            if let Some(m) = message.strip_prefix(&format!("{p}: ")) {
                message = m.to_string();
                break;
            }
            p = p.rfind(['.', '[']).map_or("", |cut| &p[..cut]);
        }
        if line.is_none() {
            line = positions.line_of(&key);
        }
        (line, key, message)
    })
}

/// Only comments, blank lines and document markers: all defaults.
fn is_blank(text: &str) -> bool {
    text.lines().map(str::trim).all(|l| l.is_empty() || l.starts_with('#') || l == "---" || l == "...")
}

#[cfg(test)]
mod tests;
