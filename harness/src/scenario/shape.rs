// Objects only where the format has objects. serde reads a struct from a JSON array too, by
// position (`"topology": [4]` would be 4 proxies): a scenario that reads so is refused instead.

use serde_json::Value;

use super::error::Problems;

/// Problems where `input` (the JSON as written) has an array and `parsed` (the scenario as read,
/// serialized again) has an object: that array was read field by field, in order.
pub fn objects_where_expected(input: &Value, parsed: &Value, problems: &mut Problems) {
    // An explicit stack (no recursion), and paths spelled out only for a problem: each visited
    // value is a step from its parent's.
    let mut steps: Vec<(usize, Step<'_>)> = Vec::new();
    let mut stack: Vec<(&Value, &Value, Option<usize>)> = vec![(input, parsed, None)];
    while let Some((input, parsed, at)) = stack.pop() {
        match (input, parsed) {
            (Value::Array(_), Value::Object(_)) => {
                problems.add(path(&steps, at), || "expected an object ({\"field\": value, ...}), not an array".into());
            }
            (Value::Object(input), Value::Object(parsed)) => {
                for (key, value) in parsed {
                    if let Some(written) = input.get(key) {
                        steps.push((at.map_or(usize::MAX, |i| i), Step::Key(key)));
                        stack.push((written, value, Some(steps.len() - 1)));
                    }
                }
            }
            (Value::Array(input), Value::Array(parsed)) => {
                for (i, (written, value)) in input.iter().zip(parsed).enumerate() {
                    steps.push((at.map_or(usize::MAX, |i| i), Step::Index(i)));
                    stack.push((written, value, Some(steps.len() - 1)));
                }
            }
            _ => {}
        }
    }
}

#[derive(Clone, Copy)]
enum Step<'k> {
    Key(&'k str),
    Index(usize),
}

/// The JSON path of step `at` (`usize::MAX` as a parent is the root).
fn path(steps: &[(usize, Step<'_>)], at: Option<usize>) -> String {
    let mut chain = Vec::new();
    let mut next = at;
    while let Some(&(parent, step)) = next.and_then(|i| steps.get(i)) {
        chain.push(step);
        next = (parent != usize::MAX).then_some(parent);
    }
    let mut out = String::new();
    for step in chain.into_iter().rev() {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
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
