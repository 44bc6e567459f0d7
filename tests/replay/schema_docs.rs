//! Every field of the scenario format has a row in docs/scenarios.md's tables ("The format, field
//! by field"): the fields are read from the JSON Schema `ebb schema` prints (the serde types
//! themselves), so a field added to the format without a row fails here. The filter's own formats
//! (`filter.limits`, a timeline `command`) have theirs in docs/configuration.md.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::root;

/// Fields whose insides are the filter's formats, documented in docs/configuration.md.
const IN_CONFIGURATION: [&str; 2] = ["filter.limits", "timeline[].command"];

/// The schema node `node` stands for, `$ref`s followed.
fn resolve<'s>(schema: &'s Value, node: &'s Value) -> &'s Value {
    match node.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => resolve(schema, &schema["$defs"][name]),
        None => node,
    }
}

/// Every field under `node` as a path (`traffic[].diurnal.trough`), with `prefix` before it.
fn fields(schema: &Value, node: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    let node = resolve(schema, node);
    for branch in ["anyOf", "oneOf", "allOf"] {
        for b in node.get(branch).and_then(Value::as_array).into_iter().flatten() {
            fields(schema, b, prefix, out);
        }
    }
    if let Some(items) = node.get("items") {
        let inner = format!("{}[]", prefix.trim_end_matches('.'));
        if !prefix.is_empty() {
            fields(schema, items, &format!("{inner}."), out);
        }
    }
    for (name, value) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
        let path = format!("{prefix}{name}");
        out.insert(path.clone());
        if !IN_CONFIGURATION.contains(&path.as_str()) {
            fields(schema, value, &format!("{path}."), out);
        }
    }
}

/// Backticked words of a table cell: "`above` / `below`" gives both.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// Each section of `text` between `from` and the next heading of its level, by the first
/// backticked word of its heading ("" for one without, such as "Top level"), and the fields its
/// tables' rows name: a row's first cell, and `kind.field` for the words of a "fields" column.
fn documented(text: &str, from: &str) -> BTreeMap<String, BTreeSet<String>> {
    let start = text.find(from).unwrap_or_else(|| panic!("no {from:?} in the docs"));
    let body = &text[start + from.len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut sections: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = String::new();
    let mut fields_column = None;
    for line in body.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            current = ticked(heading).into_iter().next().unwrap_or_default();
            fields_column = None;
            continue;
        }
        if !line.starts_with('|') {
            fields_column = None;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ' ')) {
            continue;
        }
        if ticked(cells[0]).is_empty() {
            // A header row.
            fields_column = cells.iter().position(|c| *c == "fields");
            continue;
        }
        let rows = sections.entry(current.clone()).or_default();
        for name in ticked(cells[0]) {
            if let Some(column) = fields_column.and_then(|k| cells.get(k)) {
                for field in ticked(column) {
                    rows.insert(format!("{name}.{field}"));
                }
            }
            rows.insert(name);
        }
    }
    sections
}

#[test]
fn every_field_of_the_scenario_schema_has_a_row_in_the_docs() {
    let schema = serde_json::to_value(ebb_harness::scenario::json_schema()).unwrap();
    let mut all = BTreeSet::new();
    fields(&schema, &schema, "", &mut all);
    assert!(all.len() > 100, "the walk found {} fields", all.len());

    let scenarios = std::fs::read_to_string(root().join("docs/scenarios.md")).unwrap();
    let sections = documented(&scenarios, "\n## The format, field by field\n");
    let configuration = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let configured: BTreeSet<String> = configuration
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| ticked(l.trim_matches('|').split('|').next().unwrap_or_default()))
        .collect();

    let mut missing = Vec::new();
    for path in &all {
        if let Some(inner) = IN_CONFIGURATION.iter().find_map(|p| path.strip_prefix(&format!("{p}."))) {
            let name = inner.rsplit('.').next().unwrap_or(inner).trim_end_matches("[]");
            if !configured.contains(name) {
                missing.push(format!("{path} (docs/configuration.md has no row `{name}`)"));
            }
            continue;
        }
        // The section with the longest name the path starts with; "" is the top level.
        let (section, rest) = sections
            .keys()
            .filter_map(|s| match s.as_str() {
                "" => Some((s.as_str(), path.as_str())),
                s => path.strip_prefix(&format!("{s}.")).map(|rest| (s, rest)),
            })
            .max_by_key(|(s, _)| s.len())
            .unwrap_or(("", path.as_str()));
        if !sections.get(section).is_some_and(|rows| rows.contains(rest)) {
            let place = if section.is_empty() { "Top level".to_string() } else { format!("`{section}`") };
            missing.push(format!("{path} (no row `{rest}` under {place})"));
        }
    }
    assert!(missing.is_empty(), "docs/scenarios.md lacks rows for:\n  {}", missing.join("\n  "));
}

#[test]
fn the_docs_check_finds_a_field_without_a_row() {
    let docs = "\n## The format, field by field\n\n### Top level\n\n| field | meaning |\n| --- | --- |\n| `name` | x |\n\
                \n### `slos[]`\n\n| kind | fields | meaning |\n| --- | --- | --- |\n| `no_page` | `alerts` | y |\n\n## Next\n| `late` | z |\n";
    let sections = documented(docs, "\n## The format, field by field\n");
    assert!(sections[""].contains("name") && !sections[""].contains("late"));
    assert!(sections["slos[]"].contains("no_page.alerts") && sections["slos[]"].contains("no_page"));
}
