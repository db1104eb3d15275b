//! Key path -> line index of a YAML document, so errors found after deserialising (validation,
//! errors serde cannot place) still name a line. Paths are written like serde_path_to_error's:
//! `binds[0].port`.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Default)]
pub(crate) struct Positions {
    lines: HashMap<String, usize>,
}

impl Positions {
    /// Builds the index; a document the indexer cannot parse gives an empty index (the real
    /// parser reports the syntax error).
    pub(crate) fn index(text: &str) -> Positions {
        let mut rx = Indexer::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut rx, false).is_err() {
            return Positions::default();
        }
        Positions { lines: rx.lines }
    }

    /// The 1-based line of `path`, or of its nearest ancestor the file has.
    pub(crate) fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    Map { key: Option<String> },
    Seq { index: usize },
}

#[derive(Default)]
struct Indexer {
    stack: Vec<(String, Frame)>,
    lines: HashMap<String, usize>,
}

impl Indexer {
    /// The path of the node about to be read in the current container.
    fn child_path(&self) -> Option<String> {
        let (base, frame) = self.stack.last()?;
        Some(match frame {
            Frame::Map { key: Some(k) } if base.is_empty() => k.clone(),
            Frame::Map { key: Some(k) } => format!("{base}.{k}"),
            Frame::Map { key: None } => return None,
            Frame::Seq { index } => format!("{base}[{index}]"),
        })
    }

    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some((_, Frame::Map { key })) => *key = None,
            Some((_, Frame::Seq { index })) => *index += 1,
            None => {}
        }
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some((_, Frame::Map { key: None })))
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(value, ..) if self.expecting_key() => {
                if let Some((base, _)) = self.stack.last() {
                    let path = if base.is_empty() { value.clone() } else { format!("{base}.{value}") };
                    self.lines.entry(path).or_insert(line);
                }
                if let Some((_, Frame::Map { key })) = self.stack.last_mut() {
                    *key = Some(value);
                }
            }
            Event::Scalar(..) | Event::Alias(_) => {
                if let Some(p) = self.child_path() {
                    self.lines.entry(p).or_insert(line);
                }
                self.value_done();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // Empty: the document root, or a complex key (the schema has none).
                let path = self.child_path().unwrap_or_default();
                if !path.is_empty() {
                    self.lines.entry(path.clone()).or_insert(line);
                }
                let frame = if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map { key: None }
                } else {
                    Frame::Seq { index: 0 }
                };
                self.stack.push((path, frame));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_lines() {
        let text = "server: { port: 1 }\nbinds:\n  - name: a\n    port: 2\n  - { name: b,\n      port: 3 }\nrouting:\n  default_chain: [\"bind:a\"]\n";
        let p = Positions::index(text);
        assert_eq!(p.line_of("server.port"), Some(1));
        assert_eq!(p.line_of("binds"), Some(2));
        assert_eq!(p.line_of("binds[0]"), Some(3));
        assert_eq!(p.line_of("binds[0].port"), Some(4));
        assert_eq!(p.line_of("binds[1].name"), Some(5));
        assert_eq!(p.line_of("binds[1].port"), Some(6));
        assert_eq!(p.line_of("routing.default_chain[0]"), Some(8));
        // Not in the file: the nearest ancestor.
        assert_eq!(p.line_of("binds[1].window"), Some(5));
        assert_eq!(p.line_of("accounts[0]"), None);
    }
}
