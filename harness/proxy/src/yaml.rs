// A cursor over an Envoy YAML document that remembers where it is (`static_resources.listeners[0]…`)
// and which keys it read, so that every field ebb proxy does not serve is refused by its path.

use serde_norway::{Mapping, Value};

use crate::bootstrap::BootstrapError;

/// One mapping of the document, at a path. Keys are read with [`Node::take`] and friends;
/// [`Node::finish`] refuses whatever was left unread.
pub(crate) struct Node {
    path: String,
    map: Mapping,
}

impl Node {
    /// The document's root, which must be a mapping.
    pub fn root(value: Value) -> Result<Node, BootstrapError> {
        Node::at(String::new(), value)
    }

    fn at(path: String, value: Value) -> Result<Node, BootstrapError> {
        match value {
            Value::Mapping(map) => Ok(Node { path, map }),
            Value::Tagged(tagged) => Node::at(path, tagged.value),
            other => Err(BootstrapError::invalid(&path, format!("expected a mapping, found {}", kind(&other)))),
        }
    }

    /// The path of a field of this node, as errors show it.
    pub fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Removes a field, by its proto name or its JSON (lowerCamelCase) name, as Envoy accepts both.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        if let Some(v) = self.map.remove(key) {
            return Some(v);
        }
        let camel = camel_case(key);
        if camel != key {
            return self.map.remove(camel.as_str());
        }
        None
    }

    pub fn node(&mut self, key: &str) -> Result<Option<Node>, BootstrapError> {
        let path = self.child(key);
        self.take(key).map(|v| Node::at(path, v)).transpose()
    }

    pub fn require_node(&mut self, key: &str) -> Result<Node, BootstrapError> {
        let path = self.child(key);
        self.node(key)?.ok_or_else(|| BootstrapError::invalid(&path, "required field is missing".into()))
    }

    /// A list of mappings (absent = empty).
    pub fn nodes(&mut self, key: &str) -> Result<Vec<Node>, BootstrapError> {
        let path = self.child(key);
        match self.take(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Sequence(items)) => {
                items.into_iter().enumerate().map(|(i, v)| Node::at(format!("{path}[{i}]"), v)).collect()
            }
            Some(other) => Err(BootstrapError::invalid(&path, format!("expected a list, found {}", kind(&other)))),
        }
    }

    /// The entries of a mapping-valued field, in document order (absent = empty).
    pub fn entries(&mut self, key: &str) -> Result<Vec<(String, Node)>, BootstrapError> {
        let Some(node) = self.node(key)? else { return Ok(Vec::new()) };
        let Node { path, map } = node;
        map.into_iter()
            .map(|(k, v)| {
                let name =
                    scalar_text(&k).ok_or_else(|| BootstrapError::invalid(&path, "keys must be strings".into()))?;
                let child = format!("{path}.{name}");
                Ok((name, Node::at(child, v)?))
            })
            .collect()
    }

    pub fn string(&mut self, key: &str) -> Result<Option<String>, BootstrapError> {
        let path = self.child(key);
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => scalar_text(&v)
                .map(Some)
                .ok_or_else(|| BootstrapError::invalid(&path, format!("expected a string, found {}", kind(&v)))),
        }
    }

    pub fn require_string(&mut self, key: &str) -> Result<String, BootstrapError> {
        let path = self.child(key);
        self.string(key)?.ok_or_else(|| BootstrapError::invalid(&path, "required field is missing".into()))
    }

    pub fn strings(&mut self, key: &str) -> Result<Vec<String>, BootstrapError> {
        let path = self.child(key);
        match self.take(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    scalar_text(v).ok_or_else(|| {
                        BootstrapError::invalid(
                            &format!("{path}[{i}]"),
                            format!("expected a string, found {}", kind(v)),
                        )
                    })
                })
                .collect(),
            Some(other) => Err(BootstrapError::invalid(&path, format!("expected a list, found {}", kind(&other)))),
        }
    }

    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, BootstrapError> {
        let path = self.child(key);
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            // google.protobuf.BoolValue may be written `{value: true}`.
            Some(Value::Mapping(mut m)) if m.len() == 1 => match m.remove("value") {
                Some(Value::Bool(b)) => Ok(Some(b)),
                _ => Err(BootstrapError::invalid(&path, "expected true or false".into())),
            },
            Some(other) => {
                Err(BootstrapError::invalid(&path, format!("expected true or false, found {}", kind(&other))))
            }
        }
    }

    /// An unsigned integer (protobuf's uint32/UInt32Value; YAML may quote it).
    pub fn u64(&mut self, key: &str) -> Result<Option<u64>, BootstrapError> {
        let path = self.child(key);
        let value = match self.take(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Mapping(mut m)) if m.len() == 1 && m.contains_key("value") => m.remove("value"),
            other => other,
        };
        let parsed = match &value {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            BootstrapError::invalid(
                &path,
                format!("expected a whole number ≥ 0, found {}", value.as_ref().map_or("nothing", kind)),
            )
        })
    }

    /// A protobuf Duration in its JSON form (`2s`, `0.25s`), or `{seconds, nanos}`.
    pub fn duration(&mut self, key: &str) -> Result<Option<std::time::Duration>, BootstrapError> {
        let path = self.child(key);
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => parse_duration(&s).map(Some).ok_or_else(|| {
                BootstrapError::invalid(&path, format!("expected a duration such as \"2s\" or \"0.25s\", found {s:?}"))
            }),
            Some(Value::Mapping(m)) => {
                let mut node = Node { path: path.clone(), map: m };
                let secs = node.u64("seconds")?.unwrap_or(0);
                let nanos = node.u64("nanos")?.unwrap_or(0);
                node.finish()?;
                let nanos = u32::try_from(nanos)
                    .ok()
                    .filter(|n| *n < 1_000_000_000)
                    .ok_or_else(|| BootstrapError::invalid(&path, "nanos must be below 1000000000".into()))?;
                Ok(Some(std::time::Duration::new(secs, nanos)))
            }
            Some(other) => Err(BootstrapError::invalid(
                &path,
                format!("expected a duration such as \"2s\", found {}", kind(&other)),
            )),
        }
    }

    /// Refuses every field left unread: ebb proxy never ignores configuration silently.
    pub fn finish(self) -> Result<(), BootstrapError> {
        let Some((key, _)) = self.map.into_iter().next() else { return Ok(()) };
        let key = scalar_text(&key).unwrap_or_else(|| "?".to_string());
        let path = if self.path.is_empty() { key } else { format!("{}.{key}", self.path) };
        Err(BootstrapError::NotServed { path })
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// `stat_prefix` → `statPrefix` (protobuf's JSON names).
fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// protobuf Duration JSON: decimal seconds with an `s` suffix.
fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let secs = text.trim().strip_suffix('s')?;
    let value: f64 = secs.parse().ok()?;
    (value.is_finite() && (0.0..=315_576_000_000.0).contains(&value)).then(|| std::time::Duration::from_secs_f64(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_protobufs_json_form() {
        assert_eq!(parse_duration("2s"), Some(std::time::Duration::from_secs(2)));
        assert_eq!(parse_duration("0.25s"), Some(std::time::Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("1e300s"), None);
    }

    #[test]
    fn camel_case_names_are_accepted() {
        assert_eq!(camel_case("stat_prefix"), "statPrefix");
        let value: Value = serde_norway::from_str("statPrefix: x").unwrap();
        let mut node = Node::root(value).unwrap();
        assert_eq!(node.string("stat_prefix").unwrap().as_deref(), Some("x"));
        node.finish().unwrap();
    }

    #[test]
    fn an_unread_field_is_refused_by_its_path() {
        let value: Value = serde_norway::from_str("a: {b: 1, c: 2}").unwrap();
        let mut root = Node::root(value).unwrap();
        let mut a = root.require_node("a").unwrap();
        assert_eq!(a.u64("b").unwrap(), Some(1));
        let err = a.finish().unwrap_err();
        assert_eq!(err.to_string(), "a.c: not served by ebb proxy (remove it, or use Envoy)");
    }
}
