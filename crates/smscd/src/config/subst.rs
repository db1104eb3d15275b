//! `${VAR}` substitution on the YAML text, before parsing.
//!
//! Why on the text: the reference file writes `system_id: ${X},` inside a flow mapping, which is
//! not valid YAML until substituted (`{` ends a plain scalar there), so we cannot parse first.
//!
//! How it stays safe: a small lexer follows the YAML context of each reference (plain scalar,
//! double-quoted, single-quoted, block scalar, comment) and inserts the value in a form that
//! YAML reads back as exactly that value:
//! - plain scalar: the whole scalar (with the value in it) is written as is when it is still a
//!   plain scalar with the same meaning (so `port: ${PORT}` stays a number), else as a
//!   double-quoted string (a password with `: `, `#`, quotes or `,` in a flow mapping);
//! - double-quoted: the value escaped for double quotes; single-quoted: `'` doubled;
//! - block scalar (`|`, `>`): as is; comments: left alone (a comment never needs a variable).
//!
//! Nothing inserted contains a line break (they become `\n` escapes, or are refused where YAML
//! has no escape), so every line keeps its number and errors point at the right line.
//!
//! Syntax: `${NAME}`, `${NAME:-default}` (default when unset or empty), `$${` for a literal `${`.

/// A problem found while substituting, at a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubstError {
    pub line: usize,
    pub message: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Carry {
    Normal,
    DoubleQuoted,
    SingleQuoted,
    /// Inside a block scalar whose header line had this indentation.
    Block(usize),
}

/// Substitutes every reference; collects every error rather than stopping at the first, so one
/// run names every missing variable.
pub(crate) fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<SubstError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut carry = Carry::Normal;
    let mut flow_depth = 0usize;
    for (idx, raw_line) in text.split_inclusive('\n').enumerate() {
        let (line, eol) = split_eol(raw_line);
        let mut lx = LineLexer {
            line,
            line_no: idx + 1,
            out: &mut out,
            errors: &mut errors,
            lookup,
            flow_depth: &mut flow_depth,
        };
        carry = lx.run(carry);
        out.push_str(eol);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn split_eol(line: &str) -> (&str, &str) {
    if let Some(l) = line.strip_suffix("\r\n") {
        (l, "\r\n")
    } else if let Some(l) = line.strip_suffix('\n') {
        (l, "\n")
    } else {
        (line, "")
    }
}

struct LineLexer<'a> {
    line: &'a str,
    line_no: usize,
    out: &'a mut String,
    errors: &'a mut Vec<SubstError>,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    flow_depth: &'a mut usize,
}

/// The context a value is inserted into.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Plain,
    DoubleQuoted,
    SingleQuoted,
    Block,
}

impl LineLexer<'_> {
    fn run(&mut self, carry: Carry) -> Carry {
        let bytes = self.line.as_bytes();
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        let mut i = 0;
        match carry {
            Carry::Block(parent) => {
                if self.line.trim().is_empty() || indent > parent {
                    let s = self.expand(self.line, Ctx::Block);
                    self.out.push_str(&s);
                    return carry;
                }
            }
            Carry::DoubleQuoted => {
                i = self.double_quoted(0);
                if i > bytes.len() {
                    return Carry::DoubleQuoted;
                }
            }
            Carry::SingleQuoted => {
                i = self.single_quoted(0);
                if i > bytes.len() {
                    return Carry::SingleQuoted;
                }
            }
            Carry::Normal => {}
        }
        while i < bytes.len() {
            let b = bytes[i];
            let at_token_start = i == 0 || matches!(bytes[i - 1], b' ' | b'\t');
            let next = bytes.get(i + 1).copied();
            let next_is_blank = matches!(next, None | Some(b' ') | Some(b'\t'));
            match b {
                b' ' | b'\t' => {
                    self.out.push(b as char);
                    i += 1;
                }
                b'#' if at_token_start => {
                    self.out.push_str(&self.line[i..]);
                    return Carry::Normal;
                }
                b'"' => {
                    self.out.push('"');
                    i = self.double_quoted(i + 1);
                    if i > bytes.len() {
                        return Carry::DoubleQuoted;
                    }
                }
                b'\'' => {
                    self.out.push('\'');
                    i = self.single_quoted(i + 1);
                    if i > bytes.len() {
                        return Carry::SingleQuoted;
                    }
                }
                b'[' | b'{' => {
                    *self.flow_depth += 1;
                    self.out.push(b as char);
                    i += 1;
                }
                b']' | b'}' => {
                    *self.flow_depth = self.flow_depth.saturating_sub(1);
                    self.out.push(b as char);
                    i += 1;
                }
                b',' if *self.flow_depth > 0 => {
                    self.out.push(',');
                    i += 1;
                }
                b'-' | b'?' | b':' if next_is_blank || (*self.flow_depth > 0 && b == b':') => {
                    self.out.push(b as char);
                    i += 1;
                }
                b'|' | b'>' if *self.flow_depth == 0 => {
                    // A block scalar header: the lines after it are content.
                    self.out.push_str(&self.line[i..]);
                    return Carry::Block(key_indent(self.line));
                }
                b'&' | b'*' | b'!' => {
                    let end = self.line[i..].find([' ', '\t']).map_or(bytes.len(), |e| i + e);
                    self.out.push_str(&self.line[i..end]);
                    i = end;
                }
                _ => i = self.plain(i),
            }
        }
        Carry::Normal
    }

    /// A plain scalar starting at `start`; returns where it ends.
    fn plain(&mut self, start: usize) -> usize {
        let bytes = self.line.as_bytes();
        let flow = *self.flow_depth > 0;
        let mut j = start;
        let mut has_ref = false;
        while j < bytes.len() {
            let b = bytes[j];
            if b == b'$' && bytes.get(j + 1) == Some(&b'{') {
                has_ref = true;
                j = self.line[j..].find('}').map_or(bytes.len(), |e| j + e + 1);
                continue;
            }
            if b == b'$' && self.line[j..].starts_with("$${") {
                has_ref = true;
                j = self.line[j..].find('}').map_or(bytes.len(), |e| j + e + 1);
                continue;
            }
            let next = bytes.get(j + 1).copied();
            if b == b':'
                && (matches!(next, None | Some(b' ') | Some(b'\t'))
                    || (flow && matches!(next, Some(b',' | b'[' | b']' | b'{' | b'}'))))
            {
                break;
            }
            if b == b'#' && j > start && matches!(bytes[j - 1], b' ' | b'\t') {
                break;
            }
            if flow && matches!(b, b',' | b'[' | b']' | b'{' | b'}') {
                break;
            }
            j += 1;
        }
        let raw = &self.line[start..j];
        let trimmed = raw.trim_end_matches([' ', '\t']);
        if has_ref {
            let value = self.expand(trimmed, Ctx::Plain);
            if plain_safe(&value, flow) {
                self.out.push_str(&value);
            } else {
                self.out.push_str(&double_quote(&value));
            }
            self.out.push_str(&raw[trimmed.len()..]);
        } else {
            self.out.push_str(raw);
        }
        j
    }

    /// Inside a double-quoted scalar from `start`; returns the index after the closing quote, or
    /// `len + 1` when the string goes on to the next line.
    fn double_quoted(&mut self, start: usize) -> usize {
        let bytes = self.line.as_bytes();
        let mut j = start;
        while j < bytes.len() {
            match bytes[j] {
                b'\\' => j += 2,
                b'"' => {
                    let s = self.expand(&self.line[start..j], Ctx::DoubleQuoted);
                    self.out.push_str(&s);
                    self.out.push('"');
                    return j + 1;
                }
                _ => j += 1,
            }
        }
        let s = self.expand(&self.line[start.min(bytes.len())..], Ctx::DoubleQuoted);
        self.out.push_str(&s);
        bytes.len() + 1
    }

    fn single_quoted(&mut self, start: usize) -> usize {
        let bytes = self.line.as_bytes();
        let mut j = start;
        while j < bytes.len() {
            if bytes[j] == b'\'' {
                if bytes.get(j + 1) == Some(&b'\'') {
                    j += 2;
                    continue;
                }
                let s = self.expand(&self.line[start..j], Ctx::SingleQuoted);
                self.out.push_str(&s);
                self.out.push('\'');
                return j + 1;
            }
            j += 1;
        }
        let s = self.expand(&self.line[start..], Ctx::SingleQuoted);
        self.out.push_str(&s);
        bytes.len() + 1
    }

    /// Replaces the references in `s`, escaping values for `ctx`. In plain context the result is
    /// the unescaped text; the caller decides how to write it.
    fn expand(&mut self, s: &str, ctx: Ctx) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let tail = &rest[pos..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
                continue;
            }
            let Some(body_start) = tail.strip_prefix("${") else {
                out.push('$');
                rest = &tail[1..];
                continue;
            };
            let Some(close) = body_start.find('}') else {
                self.error(format!("unterminated `${{` in `{}`", tail.trim_end()));
                return out;
            };
            let body = &body_start[..close];
            rest = &body_start[close + 1..];
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (body, None),
            };
            if !valid_name(name) {
                self.error(format!(
                    "`${{{body}}}`: invalid variable name (letters, digits and `_`; `$${{` for a literal `${{`)"
                ));
                continue;
            }
            let value = match ((self.lookup)(name), default) {
                (Some(v), Some(d)) if v.is_empty() => d.to_string(),
                (Some(v), _) => v,
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    self.error(format!("environment variable {name} is not set"));
                    continue;
                }
            };
            match ctx {
                Ctx::Plain => out.push_str(&value),
                Ctx::DoubleQuoted => out.push_str(&escape_double(&value)),
                Ctx::SingleQuoted | Ctx::Block if value.chars().any(|c| c != '\t' && !yaml_printable(c)) => self.error(format!(
                    "environment variable {name} holds a line break or control character, which cannot go in a {} scalar; use a double-quoted or plain one",
                    if ctx == Ctx::Block { "block" } else { "single-quoted" }
                )),
                Ctx::SingleQuoted => out.push_str(&value.replace('\'', "''")),
                Ctx::Block => out.push_str(&value),
            }
        }
        out.push_str(rest);
        out
    }

    fn error(&mut self, message: String) {
        self.errors.push(SubstError { line: self.line_no, message });
    }
}

/// Indentation of the key on a `key: |` line, skipping `- ` sequence indicators, so a block
/// scalar's content is told from the next key of the same mapping.
fn key_indent(line: &str) -> usize {
    let mut n = 0;
    let mut rest = line;
    loop {
        let spaces = rest.len() - rest.trim_start_matches(' ').len();
        n += spaces;
        rest = &rest[spaces..];
        if let Some(r) = rest.strip_prefix("- ") {
            n += 2;
            rest = r;
        } else {
            return n;
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Whether `s` written bare reads back as one plain scalar with exactly this text.
fn plain_safe(s: &str, flow: bool) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if s.trim() != s || !s.chars().all(yaml_printable) {
        return false;
    }
    if "?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    if first == '-' && s.chars().nth(1).is_none_or(|c| c == ' ') {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    // libyaml (YAML 1.1) refuses any `:` in a plain scalar inside a flow collection.
    !(flow && s.contains([',', '[', ']', '{', '}', ':']))
}

/// Characters YAML takes as they are in any scalar: its printable set, less the ones a YAML 1.1
/// parser (libyaml) reads as line breaks or a byte order mark.
fn yaml_printable(c: char) -> bool {
    matches!(c as u32, 0x20..=0x7e | 0xa0..=0xd7ff | 0xe000..=0xfffd | 0x10000..=0x10ffff)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

fn escape_double(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if !yaml_printable(c) && (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if !yaml_printable(c) => out.push_str(&format!("\\U{:08x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn double_quote(s: &str) -> String {
    format!("\"{}\"", escape_double(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    fn sub(text: &str, pairs: &[(&str, &str)]) -> Result<String, Vec<SubstError>> {
        substitute(text, &env(pairs))
    }

    #[test]
    fn reference_flow_mapping() {
        let text = "binds:\n  - { name: alpha, system_id: ${ID},\n      password: ${PW}, port: 2775 }\n";
        let out = sub(text, &[("ID", "alpha_esme"), ("PW", "changeme")]).unwrap_or_default();
        assert_eq!(
            out,
            "binds:\n  - { name: alpha, system_id: alpha_esme,\n      password: changeme, port: 2775 }\n"
        );
    }

    #[test]
    fn unsafe_values_are_quoted() {
        let out = sub("a: ${X}\nb: { c: ${Y} }\n", &[("X", "p:a #ss\"\n"), ("Y", "x,y")]);
        assert_eq!(out, Ok("a: \"p:a #ss\\\"\\n\"\nb: { c: \"x,y\" }\n".to_string()));
    }

    #[test]
    fn numbers_stay_plain_and_partial_scalars_work() {
        let out =
            sub("port: ${P}\nhost: smsc-${R}.example.net # ${NOT_SET}\n", &[("P", "2775"), ("R", "eu")]);
        assert_eq!(out, Ok("port: 2775\nhost: smsc-eu.example.net # ${NOT_SET}\n".to_string()));
    }

    #[test]
    fn quoted_contexts_escape() {
        let out = sub("a: \"x${X}y\"\nb: 'x${X}y'\n", &[("X", "q\"'\\")]);
        assert_eq!(out, Ok("a: \"xq\\\"'\\\\y\"\nb: 'xq\"''\\y'\n".to_string()));
    }

    #[test]
    fn defaults_and_escapes() {
        let out = sub("a: ${A:-dflt}\nb: ${B:-}\nc: $${LIT}\nd: x$$y\n", &[("B", "")]);
        assert_eq!(out, Ok("a: dflt\nb: \"\"\nc: ${LIT}\nd: x$$y\n".to_string()));
        // In a flow mapping the literal `${` must be quoted to stay one scalar.
        assert_eq!(sub("m: { a: $${LIT} }\n", &[]), Ok("m: { a: \"${LIT}\" }\n".to_string()));
    }

    #[test]
    fn missing_variables_are_all_named_with_their_lines() {
        let err = sub("a: 1\nb: ${ONE}\nc: [${TWO}]\n", &[]).err().unwrap_or_default();
        assert_eq!(err.len(), 2);
        assert_eq!(err[0].line, 2);
        assert!(err[0].message.contains("ONE"));
        assert_eq!(err[1].line, 3);
        assert!(err[1].message.contains("TWO"));
    }

    #[test]
    fn bad_syntax_is_an_error() {
        assert!(sub("a: ${ONE\n", &[]).is_err());
        assert!(sub("a: ${1X}\n", &[]).is_err());
    }

    #[test]
    fn block_scalars_take_values_as_is() {
        let text = "note: |\n  hello ${X}: #1\nnext: ${X}\n";
        let out = sub(text, &[("X", "a: b")]);
        assert_eq!(out, Ok("note: |\n  hello a: b: #1\nnext: \"a: b\"\n".to_string()));
        assert!(sub(text, &[("X", "a\nb")]).is_err());
    }

    #[test]
    fn multi_line_double_quoted() {
        let out = sub("a: \"one\n  ${X} two\"\nb: ${X}\n", &[("X", "v#")]);
        assert_eq!(out, Ok("a: \"one\n  v# two\"\nb: v#\n".to_string()));
    }

    /// What YAML reads back for `k` after substituting `v` into `template`.
    fn read_back(template: &str, v: &str) -> Result<String, String> {
        let text = sub(template, &[("V", v)]).map_err(|e| format!("{e:?}"))?;
        let map: HashMap<String, serde_norway::Value> =
            serde_norway::from_str(&text).map_err(|e| format!("{text:?}: {e}"))?;
        match map.get("k") {
            Some(serde_norway::Value::String(s)) => Ok(s.clone()),
            // A plain scalar that YAML types (number, bool, null): its text is what a String
            // field gets, so compare that.
            Some(other) => Ok(serde_norway::to_string(other).unwrap_or_default().trim_end().to_string()),
            None => Err(format!("no k in {text:?}")),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        #[test]
        fn any_value_reads_back_exactly(v in "(\\PC|[\t\n\r\u{85}\u{2028}\u{feff}\u{0}\u{1b}]){0,24}") {
            let typed_plain = |s: &str| serde_norway::from_str::<serde_norway::Value>(s)
                .is_ok_and(|x| !matches!(x, serde_norway::Value::String(_)));
            for template in ["k: ${V}\n", "m: 1\nk: ${V} # c\n", "{ a: 1, k: ${V}, b: [x] }\n", "k: \"<${V}>\"\n"] {
                let got = read_back(template, &v);
                let want = if template.contains('<') { format!("<{v}>") } else { v.clone() };
                match got {
                    Ok(g) if g == want => {}
                    // A number, bool or null written plain reads back typed; its text is the
                    // value (checked loosely: YAML may normalise it, e.g. `0x1` to 1).
                    Ok(_) if typed_plain(&v) => {}
                    other => proptest::prop_assert!(false, "{template:?} with {v:?}: {other:?}"),
                }
            }
            if !v.contains(['\n', '\r']) && v.chars().all(|c| c == '\t' || yaml_printable(c)) {
                proptest::prop_assert_eq!(read_back("k: '${V}'\n", &v), Ok(v.clone()));
            }
        }
    }

    #[test]
    fn plain_safety() {
        assert!(plain_safe("alpha_esme", true));
        assert!(plain_safe("-5", false));
        assert!(!plain_safe("- x", false));
        assert!(!plain_safe("", false));
        assert!(!plain_safe("*x", false));
        assert!(!plain_safe("a,b", true));
        assert!(plain_safe("a,b", false));
    }
}
