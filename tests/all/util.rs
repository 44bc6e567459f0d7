// Shared helpers of the integration tests: build the test filters (and the ebb command) once
// per run from source, start proxies on them, and read back logs. Failures print the
// command, its output and the files involved.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ebb_harness::{Clock, HostProfile, Plugin, Proxy, ProxyOptions, Step};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The target directory this test binary was built in (`target/debug/deps/all-*` → `target`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| workspace().join("target"))
}

/// Runs cargo with `args` in the workspace; panics with the command and its output on failure.
fn cargo(args: &[&str]) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace()).args(args).env("CARGO_TARGET_DIR", target_dir());
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test filters, built once per run from `tests/filters/*` (never stale, never committed).
pub fn filter(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        cargo(&[
            "build",
            "--target",
            "wasm32-wasip1",
            "--profile",
            "wasm",
            "-p",
            "ebb-testfilter-probe",
            "-p",
            "ebb-testfilter-passthrough",
            "-p",
            "ebb-testfilter-trap",
        ])
    });
    let path = target_dir().join("wasm32-wasip1/wasm").join(format!("ebb_testfilter_{name}.wasm"));
    assert!(path.exists(), "test filter {name} was built but {} is missing", path.display());
    path
}

/// The ebb filter itself, built from `plugin/` once per run.
pub fn ebb_wasm() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| cargo(&["build", "--target", "wasm32-wasip1", "--profile", "wasm", "-p", "ebb-plugin"]));
    let path = target_dir().join("wasm32-wasip1/wasm/ebb_plugin.wasm");
    assert!(path.exists(), "ebb-plugin was built but {} is missing", path.display());
    path
}

/// The profile this test binary was built with (`target/release/deps/all-*` → `release`), so the
/// `ebb` command is built with the same one and shares its compiled dependencies.
fn profile() -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.ancestors().nth(2).and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
    dir.unwrap_or_else(|| "debug".to_string())
}

/// The `ebb` command, built once per run (this test binary's profile, same target directory).
pub fn ebb_binary() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let profile = profile();
    BUILT.get_or_init(|| {
        let cargo_profile = if profile == "debug" { "dev" } else { profile.as_str() };
        cargo(&["build", "--profile", cargo_profile, "-p", "ebb-harness", "--bin", "ebb"])
    });
    target_dir().join(&profile).join("ebb")
}

/// The proxy the real filter's end-to-end tests (tests/filter) play: `EBB_TEST_HOST_PROFILE`
/// (envoy, ngx-wasm or strict; default envoy). `make test` runs them under envoy and strict, so a
/// change that works only in Envoy fails there.
pub fn host_profile() -> HostProfile {
    match std::env::var("EBB_TEST_HOST_PROFILE") {
        Ok(name) if !name.is_empty() => name.parse().unwrap_or_else(|e| panic!("EBB_TEST_HOST_PROFILE: {e}")),
        _ => HostProfile::Envoy,
    }
}

pub fn plugin(name: &str) -> Plugin {
    let path = filter(name);
    Plugin::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// A proxy on the probe filter with `config` and `workers`, on a fresh simulated clock.
pub fn probe(config: &str, workers: usize) -> Proxy {
    probe_with(ProxyOptions {
        plugin_config: config.as_bytes().to_vec(),
        workers,
        log_level: ebb_harness::LogLevel::Trace,
        ..ProxyOptions::default()
    })
}

pub fn probe_with(options: ProxyOptions) -> Proxy {
    Proxy::new(&plugin("probe"), options, Clock::default()).unwrap_or_else(|e| panic!("probe proxy: {e}"))
}

/// Request headers for `x-probe` commands.
pub fn request(commands: &str) -> Vec<(String, String)> {
    vec![
        (":method".into(), "GET".into()),
        (":path".into(), "/probe?x=1".into()),
        (":authority".into(), "app".into()),
        ("x-probe".into(), commands.into()),
    ]
}

/// Log messages so far, in order.
pub fn messages(proxy: &Proxy) -> Vec<String> {
    proxy.logs().into_iter().map(|l| l.message).collect()
}

/// The result the probe logged for `command` (`probe <command> => <result>`).
pub fn result_of(proxy: &Proxy, command: &str) -> String {
    let prefix = format!("probe {command} => ");
    let all = messages(proxy);
    all.iter()
        .rev()
        .find_map(|m| m.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no result for {command:?} in the logs:\n{}", all.join("\n")))
}

/// Runs one bodiless request through worker `w` with `commands`, answers 200 if it reaches
/// the upstream, finishes it, and returns the request step.
pub fn exchange(proxy: &mut Proxy, w: usize, commands: &str) -> Step {
    let mut http = proxy.worker(w).expect("worker").http();
    let step = http.request_headers(&request(commands), true);
    if matches!(step, Step::Continue) {
        http.response_headers(&[(":status", "200")], true);
    }
    http.finish().expect("finish");
    step
}

/// A hand-assembled module: a memory, one empty function exported under each of `exports`.
pub fn tiny_module(exports: &[&str], memory: bool) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend([0x01, 0x04, 0x01, 0x60, 0x00, 0x00]); // type 0: () -> ()
    m.extend([0x03, 0x02, 0x01, 0x00]); // function 0 of type 0
    if memory {
        m.extend([0x05, 0x03, 0x01, 0x00, 0x01]); // memory 0: 1 page
    }
    let mut section = vec![(exports.len() + usize::from(memory)) as u8];
    if memory {
        section.push(6);
        section.extend(b"memory");
        section.extend([0x02, 0x00]);
    }
    for e in exports {
        section.push(e.len() as u8);
        section.extend(e.as_bytes());
        section.extend([0x00, 0x00]);
    }
    m.extend([0x07, section.len() as u8]);
    m.extend(section);
    m.extend([0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b]); // function 0: empty body
    m
}

/// Fails with the logs attached unless `cond`.
pub fn check(proxy: &Proxy, cond: bool, what: &str) {
    assert!(cond, "{what}\nlogs:\n{}", messages(proxy).join("\n"));
}
