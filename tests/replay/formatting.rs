//! `ebb fmt`: the shipped scenarios stay in its layout, formatting never changes what a file
//! means, and `--check` tells CI which files are not formatted.

use std::path::Path;

use ebb_harness::scenario::{format, Scenario};

use crate::{ebb, root};

fn shipped() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(root().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    files
}

#[test]
fn the_shipped_scenarios_are_formatted() {
    let mut stale = Vec::new();
    for file in shipped() {
        let (bytes, formatted) = format::format_file(&file).unwrap_or_else(|e| panic!("{e}"));
        if bytes != formatted.as_bytes() {
            stale.push(file.display().to_string());
        }
    }
    assert!(stale.is_empty(), "not formatted (run `ebb fmt scenarios/*.json`): {stale:?}");
}

#[test]
fn formatting_keeps_what_every_shipped_scenario_means() {
    for file in shipped() {
        let (bytes, formatted) = format::format_file(&file).unwrap_or_else(|e| panic!("{e}"));
        let before = Scenario::parse(&file, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let after = Scenario::parse(&file, formatted.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(before, after, "{}", file.display());
        let again = format::format(&file, formatted.as_bytes()).unwrap();
        assert_eq!(again, formatted, "{}: formatting twice changes it", file.display());
        // A traffic point never takes four lines.
        assert!(!formatted.contains("[\n          \""), "{}:\n{formatted}", file.display());
    }
}

#[test]
fn fmt_check_lists_unformatted_files_and_fmt_rewrites_them() {
    let dir = std::env::temp_dir().join(format!("ebb-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = std::fs::read(root().join("scenarios/blackhole-drain.json")).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&source).unwrap();
    // serde_json's own pretty layout: a point on four lines.
    let ugly = serde_json::to_string_pretty(&value).unwrap();
    let file = dir.join("ugly.json");
    std::fs::write(&file, &ugly).unwrap();
    let path = file.to_str().unwrap();

    let out = ebb(&["fmt", "--check", path]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ugly.json: not formatted"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), ugly, "--check changes nothing");

    let out = ebb(&["fmt", path]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let formatted = std::fs::read_to_string(&file).unwrap();
    assert!(formatted.lines().count() < ugly.lines().count(), "{formatted}");
    let before = Scenario::parse(Path::new("a.json"), ugly.as_bytes()).unwrap();
    let after = Scenario::parse(Path::new("a.json"), formatted.as_bytes()).unwrap();
    assert_eq!(before, after);
    assert_eq!(ebb(&["fmt", "--check", path]).status.code(), Some(0));

    std::fs::write(&file, "{\n  \"version\": 1,\n  \"name\": \"x\",\n}\n").unwrap();
    let out = ebb(&["fmt", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ugly.json:4:1: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}
