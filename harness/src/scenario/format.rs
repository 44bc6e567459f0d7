// The layout `ebb fmt` writes scenario files in: what a person would write (a traffic point on
// one line, short objects on one line, lists of objects one entry per line), every token as written.

use std::path::Path;

use super::error::{Problem, ScenarioError};
use super::{position, source};

/// Lines are kept to this many columns where a value can be broken.
pub const WIDTH: usize = 100;
const INDENT: usize = 2;

/// A JSON value with every scalar and key as written (numbers keep their digits, strings their
/// escapes), and members in their order, duplicates included: formatting never changes meaning.
#[derive(Debug)]
enum Node {
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
    Scalar(String),
}

/// `bytes` (a scenario file; `file` names it in errors) in ebb's layout. Only the JSON's syntax is
/// checked: a file with problems of meaning is formatted as it is, as rustfmt formats code that
/// does not compile. JSON has no comments, and the loader refuses them, so there are none to keep.
pub fn format(file: &Path, bytes: &[u8]) -> Result<String, ScenarioError> {
    let text = source::strip_bom(bytes);
    let syntax = |line: usize, column: usize, message: String| ScenarioError {
        file: file.to_path_buf(),
        problems: vec![Problem { line: Some(line), column: Some(column), path: String::new(), message }],
        more: 0,
    };
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(text) {
        let mut message = e.to_string();
        if let Some(at) = message.find(" at line ") {
            message.truncate(at);
        }
        let (line, column) = match e.line() {
            0 => position::line_column(text, text.len()),
            line => (line, e.column().max(1)),
        };
        return Err(syntax(line, column, message));
    }
    // Valid JSON is valid UTF-8 (serde_json checked it).
    let text = std::str::from_utf8(text).map_err(|e| syntax(1, e.valid_up_to() + 1, "not UTF-8".into()))?;
    let mut parser = Parser { text, at: 0 };
    let node = parser.value();
    if !matches!(node, Node::Object(_)) {
        return Err(syntax(1, 1, "a scenario is a JSON object ({ ... })".into()));
    }
    let mut out = String::with_capacity(text.len());
    write(&node, 0, true, &mut out);
    out.push('\n');
    Ok(out)
}

/// The file at `path` and that file in ebb's layout.
pub fn format_file(path: &Path) -> Result<(Vec<u8>, String), ScenarioError> {
    let bytes = source::read(path).map_err(|message| ScenarioError::file(path.to_path_buf(), message))?;
    let formatted = format(path, &bytes)?;
    Ok((bytes, formatted))
}

/// A recursive-descent reader of text serde_json has already accepted: it cannot fail, and it
/// keeps each token's text.
struct Parser<'t> {
    text: &'t str,
    at: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start_matches([' ', '\t', '\n', '\r']).len();
    }

    fn peek(&self) -> u8 {
        self.text.as_bytes().get(self.at).copied().unwrap_or(b'}')
    }

    fn value(&mut self) -> Node {
        self.skip_space();
        match self.peek() {
            b'{' => {
                self.at += 1;
                let mut members = Vec::new();
                loop {
                    self.skip_space();
                    if self.peek() == b'}' {
                        self.at += 1;
                        break;
                    }
                    if self.peek() == b',' {
                        self.at += 1;
                        continue;
                    }
                    let key = self.string();
                    self.skip_space();
                    self.at += 1; // ':'
                    members.push((key, self.value()));
                }
                Node::Object(members)
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    match self.peek() {
                        b']' => {
                            self.at += 1;
                            break;
                        }
                        b',' => self.at += 1,
                        _ => items.push(self.value()),
                    }
                }
                Node::Array(items)
            }
            b'"' => Node::Scalar(self.string()),
            _ => {
                let rest = &self.text[self.at..];
                let len = rest.find([',', ']', '}', ' ', '\t', '\n', '\r']).unwrap_or(rest.len());
                self.at += len;
                Node::Scalar(rest[..len].to_string())
            }
        }
    }

    /// A string token, quotes and escapes as written.
    fn string(&mut self) -> String {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut i = start + 1;
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        self.at = (i + 1).min(bytes.len());
        self.text[start..self.at].to_string()
    }
}

impl Node {
    fn is_container(&self) -> bool {
        match self {
            Node::Object(m) => !m.is_empty(),
            Node::Array(a) => !a.is_empty(),
            Node::Scalar(_) => false,
        }
    }

    /// Containers nested in this one, itself included: 0 for a scalar or an empty container.
    fn depth(&self) -> usize {
        let inner = match self {
            Node::Object(m) => m.iter().map(|(_, v)| v.depth()).max(),
            Node::Array(a) => a.iter().map(Node::depth).max(),
            Node::Scalar(_) => return 0,
        };
        inner.map_or(0, |d| d + 1)
    }

    /// On one line: `{"a": 1, "b": [2, 3]}`.
    fn inline(&self, out: &mut String) {
        match self {
            Node::Scalar(s) => out.push_str(s),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.inline(out);
                }
                out.push(']');
            }
            Node::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(key);
                    out.push_str(": ");
                    value.inline(out);
                }
                out.push('}');
            }
        }
    }

    /// Whether a person would write this on one line: a short value of at most two levels (a
    /// point `["07:10", 18.5]`, `{"limits": {"max_ttl": "24h"}}`), and not a list of several
    /// objects or arrays (pools, points), which reads best one entry per line.
    fn one_line(&self) -> bool {
        let list_of_containers =
            matches!(self, Node::Array(items) if items.iter().filter(|i| i.is_container()).count() > 1);
        self.depth() <= 2 && !list_of_containers
    }
}

/// Writes `node` at `indent` columns; `prefix` columns (a key, a comma) share its first line.
fn write(node: &Node, indent: usize, root: bool, out: &mut String) {
    write_with(node, indent, 0, root, out);
}

fn write_with(node: &Node, indent: usize, prefix: usize, root: bool, out: &mut String) {
    if !root && node.one_line() {
        let mut line = String::new();
        node.inline(&mut line);
        // The trailing comma counts: a line that fits fits with it.
        if !node.is_container() || indent + prefix + line.len() < WIDTH {
            out.push_str(&line);
            return;
        }
    }
    let inner = indent + INDENT;
    let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
    match node {
        Node::Scalar(s) => out.push_str(s),
        Node::Array(items) if items.is_empty() => out.push_str("[]"),
        Node::Object(members) if members.is_empty() => out.push_str("{}"),
        Node::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                pad(out, inner);
                write_with(item, inner, 0, false, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push(']');
        }
        Node::Object(members) => {
            out.push_str("{\n");
            for (i, (key, value)) in members.iter().enumerate() {
                pad(out, inner);
                out.push_str(key);
                out.push_str(": ");
                write_with(value, inner, key.len() + 2, false, out);
                out.push_str(if i + 1 < members.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(text: &str) -> String {
        format(Path::new("s.json"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn points_and_short_objects_go_on_one_line_and_lists_of_objects_one_per_line() {
        let text = r#"{"version":1,"topology":{"proxies":1,"workers":2},
            "traffic":[{"pool":"web","points":[["00:00",8],["07:10",18.50]]}],
            "slos":[{"time_to_detect":{"pool":"web","max":"15m"}}], "deploys": [], "x": {}}"#;
        let want = r#"{
  "version": 1,
  "topology": {"proxies": 1, "workers": 2},
  "traffic": [
    {
      "pool": "web",
      "points": [
        ["00:00", 8],
        ["07:10", 18.50]
      ]
    }
  ],
  "slos": [
    {"time_to_detect": {"pool": "web", "max": "15m"}}
  ],
  "deploys": [],
  "x": {}
}
"#;
        assert_eq!(fmt(text), want);
        assert_eq!(fmt(want), want, "formatting is idempotent");
    }

    #[test]
    fn long_values_break_and_tokens_stay_as_written() {
        let long = "a".repeat(120);
        let text = format!(
            r#"{{"description": "{long}", "k\u00e9y": "tab\there", "n": 1e3, "o": {{"a": "{long}", "b": 1}}}}"#
        );
        let out = fmt(&text);
        assert!(out.contains(&format!("  \"description\": \"{long}\",\n")), "{out}");
        assert!(out.contains("\"k\\u00e9y\": \"tab\\there\"") && out.contains("\"n\": 1e3"), "{out}");
        assert!(out.contains("  \"o\": {\n    \"a\": "), "an object too long for a line breaks:\n{out}");
        let (a, b): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(&text).unwrap(), serde_json::from_str(&out).unwrap());
        assert_eq!(a, b);
    }

    #[test]
    fn bad_json_and_non_objects_are_refused_with_their_position() {
        let err = format(Path::new("s.json"), b"{\n  \"a\": 1,\n  // no comments\n}").unwrap_err().to_string();
        assert!(err.starts_with("s.json:3:3: "), "{err}");
        let err = format(Path::new("s.json"), b"[1, 2]").unwrap_err().to_string();
        assert!(err.contains("s.json:1:1: a scenario is a JSON object"), "{err}");
        let err = format(Path::new("s.json"), b"").unwrap_err().to_string();
        assert!(err.starts_with("s.json:1:1: "), "{err}");
    }
}
