// Objects only where the format has objects. serde reads a struct from a JSON array too, by
// position (`"topology": [4]` would be 4 proxies): a scenario that reads so is refused instead.

use serde_json::Value;

use super::error::Problems;

/// Problems where `input` (the JSON as written) has an array and `parsed` (the scenario as read,
/// serialized again) has an object: that array was read field by field, in order.
pub fn objects_where_expected(input: &Value, parsed: &Value, problems: &mut Problems) {
    // An explicit stack: nesting in a valid scenario is shallow, but costs no recursion anyway.
    let mut stack: Vec<(&Value, &Value, String)> = vec![(input, parsed, String::new())];
    while let Some((input, parsed, path)) = stack.pop() {
        match (input, parsed) {
            (Value::Array(_), Value::Object(_)) => {
                problems.add(path, || "expected an object ({\"field\": value, ...}), not an array".into());
            }
            (Value::Object(input), Value::Object(parsed)) => {
                for (key, value) in parsed {
                    if let Some(written) = input.get(key) {
                        let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                        stack.push((written, value, child));
                    }
                }
            }
            (Value::Array(input), Value::Array(parsed)) => {
                for (i, (written, value)) in input.iter().zip(parsed).enumerate() {
                    stack.push((written, value, format!("{path}[{i}]")));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_read_as_objects_are_found_at_any_depth() {
        let input = serde_json::json!({"a": [1, 2], "b": {"c": [[3]], "d": [{"e": 1}]}, "f": [5]});
        let parsed = serde_json::json!({"a": {"x": 1, "y": 2}, "b": {"c": [{"z": 3}], "d": [{"e": 1}]}, "f": [5]});
        let mut p = Problems::default();
        objects_where_expected(&input, &parsed, &mut p);
        let mut paths: Vec<&str> = p.kept.iter().map(|(path, _)| path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["a", "b.c[0]"]);
    }
}
