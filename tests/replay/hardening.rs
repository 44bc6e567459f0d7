// Odd input never gives a wrong verdict or an unbounded run: times that would overflow, rates
// that would never end, files that never end, meaningless values, huge files that must still be
// checked in linear time; errors point at the value; closed pipes end the program quietly.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration as StdDuration;

use ebb_engine::Duration;
use ebb_harness::report::Report;
use ebb_harness::scenario::Scenario;
use ebb_harness::sim::{Budget, ReplayError};
use ebb_harness::{sim, Clock, Plugin};

use super::{ebb, root, util, wasm};

/// Real time since it started, through the harness clock (the one way tests read the wall clock).
pub struct Stopwatch {
    clock: Clock,
    started_ns: u64,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        let clock = Clock::real();
        let started_ns = clock.now_ns();
        Stopwatch { clock, started_ns }
    }

    pub fn elapsed(&self) -> StdDuration {
        StdDuration::from_nanos(self.clock.now_ns().saturating_sub(self.started_ns))
    }
}

fn shipped(name: &str) -> String {
    let path = root().join("scenarios").join(format!("{name}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `text` with `from` replaced once, which must be there.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the scenario changed shape: no {from:?}");
    text.replacen(from, to, 1)
}

/// Line and column (1-based, bytes) where `needle`'s first occurrence in `text` ends: where the
/// value after a `"key": ` needle starts.
fn after(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap_or_else(|| panic!("no {needle:?}")) + needle.len();
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The error `Scenario::parse` gives, which must name `path` at `line:column` and say `message`.
fn refused_at(text: &str, path: &str, (line, column): (usize, usize), message: &str) {
    let err = Scenario::parse(Path::new("s.json"), text.as_bytes()).map(|_| ()).expect_err(path).to_string();
    let want = format!("s.json:{line}:{column}: {path}: ");
    assert!(err.lines().any(|l| l.starts_with(&want) && l.contains(message)), "want `{want}…{message}…`, got:\n{err}");
}

/// Runs `ebb` with `args`; None if it is still running after `limit` (it is killed then).
fn ebb_within(args: &[&str], limit: StdDuration) -> Option<Output> {
    let mut child = Command::new(util::ebb_binary())
        .current_dir(root())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("ebb {args:?}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let started = Stopwatch::start();
    loop {
        if let Some(status) = child.try_wait().expect("wait for ebb") {
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            return Some(Output { status, stdout, stderr });
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(StdDuration::from_millis(20));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A folder of its own for one test's files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ebb-hardening-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Scratch(dir)
    }

    fn write(&self, file: &str, text: &str) -> String {
        let path = self.0.join(file);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn replay_unchecked(scenario: &Scenario) -> Report {
    let plugin = Plugin::load(wasm()).unwrap_or_else(|e| panic!("loading ebb.wasm: {e}"));
    sim::replay(scenario, &plugin, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"))
}

// 1. Overflow.

#[test]
fn a_runbook_after_longer_than_any_replay_is_refused_where_it_is_written() {
    let text = edit(&shipped("blackhole-drain"), "\"after\": \"3m\"", "\"after\": \"213503d\"");
    refused_at(&text, "recovery[0].after", after(&text, "\"after\": "), "must be between 0s and 7d");
    let text = edit(
        &shipped("healthy-deploy-at-peak"),
        "\"batch_interval\": \"3m\"",
        "\"batch_interval\": \"3m\", \"fail_at_batch\": 2, \"retry_after\": \"213503d\"",
    );
    refused_at(&text, "deploys[0].retry_after", after(&text, "\"retry_after\": "), "must be between 0s and 7d");
}

#[test]
fn the_simulator_never_wraps_a_time_even_past_the_checks() {
    // A runbook 213,503 days after the alert: t + after in nanoseconds is past u64. It must never
    // act (it is after the end), not act at once.
    let mut s = Scenario::parse(Path::new("s.json"), shipped("blackhole-drain").as_bytes()).unwrap();
    s.recovery[0].after = Duration::from_millis(213_503 * 86_400_000);
    let r = replay_unchecked(&s);
    let timeline = r.render(false);
    assert!(!r.events.iter().any(|e| e.kind == "recovery"), "the runbook acted:\n{timeline}");
    assert_eq!(r.verdict, "fail", "the pool is never restored:\n{timeline}");

    let text = edit(
        &shipped("healthy-deploy-at-peak"),
        "\"batch_interval\": \"3m\"",
        "\"batch_interval\": \"3m\", \"fail_at_batch\": 2, \"retry_after\": \"2m\"",
    );
    let mut s = Scenario::parse(Path::new("s.json"), text.as_bytes()).unwrap();
    s.deploys[0].retry_after = Some(Duration::from_millis(u64::MAX / 2));
    let r = replay_unchecked(&s);
    assert!(
        !r.events.iter().any(|e| e.text.contains("(retry)")),
        "a retry u64::MAX/2 ms later ran within the hour:\n{}",
        r.render(false)
    );
}

// 2. Bounded work.

#[test]
fn check_prints_the_estimate_and_refuses_a_run_over_budget_unless_allowed() {
    let out = ebb(&["check", "scenarios/blackhole-drain.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("estimate: ~") && stdout.contains("simulated requests") && stdout.contains("VMs"),
        "{stdout}"
    );

    let scratch = Scratch::new("budget");
    let big = scratch.write("big.json", &edit(&shipped("blackhole-drain"), "[\"02:00\", 8]", "[\"02:00\", 10000]"));
    let out = ebb(&["check", &big]);
    assert_eq!(out.status.code(), Some(2), "36 million requests are over the default budget");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("big.json") && stderr.contains("36,000,000 simulated requests (budget 20,000,000)"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-large"), "says how to go on: {stderr}");
    let out = ebb(&["check", "--allow-large", &big]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = ebb(&["replay", "--plugin", &wasm().to_string_lossy(), &big]);
    assert_eq!(out.status.code(), Some(2), "replay refuses it too");
    assert!(text(&out.stderr).contains("--allow-large"), "{}", text(&out.stderr));
}

#[test]
fn a_rate_of_1e308_is_refused_at_once_by_check_and_replay() {
    let scratch = Scratch::new("rate");
    let file = scratch.write("huge.json", &edit(&shipped("blackhole-drain"), "[\"02:00\", 8]", "[\"02:00\", 1e308]"));
    let (line, column) = after(&std::fs::read_to_string(&file).unwrap(), "[\"02:00\", ");
    let wasm = wasm().to_string_lossy().into_owned();
    for args in [vec!["check", &file], vec!["replay", "--plugin", &wasm, &file]] {
        let out = ebb_within(&args, StdDuration::from_secs(30))
            .unwrap_or_else(|| panic!("ebb {args:?} still runs after 30s"));
        assert_eq!(out.status.code(), Some(2), "ebb {args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(&format!("huge.json:{line}:{column}: traffic[0].points[0][1]: ")), "{stderr}");
    }
}

#[test]
fn a_replay_that_does_more_than_its_budget_stops_with_a_clear_error() {
    // Requests held by a delay are polled every 10ms: work the estimate cannot foresee.
    let text = edit(
        &shipped("blackhole-drain"),
        "\"timeline\": [",
        "\"timeline\": [\n    {\"at\": \"02:05\", \"command\": {\"id\": \"slow\", \"ttl\": \"1h\", \"delay\": {\"pool\": \"web\", \"delay\": \"10s\"}}},",
    );
    let s = Scenario::parse(Path::new("s.json"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let budget = Budget { steps: 1_000_000, ..Budget::DEFAULT };
    assert!(sim::estimate(&s).over(&budget).is_empty(), "{}", sim::estimate(&s));
    let plugin = Plugin::load(wasm()).unwrap_or_else(|e| panic!("{e}"));
    match sim::replay_within(&s, &plugin, budget, &mut |_| {}) {
        Err(e @ ReplayError::OverBudget { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with("the replay stopped at 02:") && text.contains("more than 1,000,000 steps"),
                "{text}"
            );
        }
        Err(e) => panic!("{e}"),
        Ok(r) => panic!("ran to the end:\n{}", r.render(false)),
    }
    // A rate past every bound, set after the checks: refused on its estimate, never run.
    let mut s = Scenario::parse(Path::new("s.json"), shipped("blackhole-drain").as_bytes()).unwrap();
    s.traffic[0].points[0].1 = 1e308;
    let started = Stopwatch::start();
    let result = sim::replay_within(&s, &plugin, Budget::LARGE, &mut |_| {});
    assert!(matches!(result, Err(ReplayError::TooLarge { .. })), "{:?}", result.map(|r| r.verdict));
    assert!(started.elapsed() < StdDuration::from_secs(5));
}

/// A scenario with `n` pools named p0, p1...; pool p0 has traffic.
fn many_pools(n: usize) -> String {
    let mut s = String::with_capacity(n * 80);
    s.push_str(
        "{\"version\": 1, \"name\": \"many\", \"duration\": \"1m\", \"scrape_interval\": \"1m\", \"pools\": [\n",
    );
    for i in 0..n {
        let sep = if i + 1 == n { "" } else { "," };
        s.push_str(&format!(
            "{{\"name\": \"p{i}\", \"hosts\": 2, \"capacity_per_host\": 1, \"service_time\": \"1s\"}}{sep}\n"
        ));
    }
    s.push_str("], \"traffic\": [{\"pool\": \"p0\", \"points\": [[\"+0s\", 1]]}],\n");
    s.push_str("\"slos\": [{\"error_ratio\": {\"pool\": \"p0\", \"max\": 0.1, \"window\": \"1m\"}}]}\n");
    s
}

#[test]
fn check_is_linear_in_the_number_of_pools() {
    let scratch = Scratch::new("pools");
    let file = scratch.write("pools.json", &many_pools(500_000));
    let started = Stopwatch::start();
    let out = ebb_within(&["check", &file], StdDuration::from_secs(60)).expect("500,000 pools checked within a minute");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let took = started.elapsed();
    assert!(took < StdDuration::from_secs(30), "500,000 pools took {took:?}");
}

/// 200,000 alert rules on pool `web`, and one recovery rule on `on`.
fn many_alerts(n: usize, pool: &str, on: &str) -> String {
    let base = shipped("blackhole-drain");
    let mut alerts = String::with_capacity(n * 100);
    for i in 0..n {
        let sep = if i + 1 == n { "" } else { "," };
        alerts.push_str(&format!(
            "{{\"name\": \"A{i}\", \"pool\": \"{pool}\", \"signal\": \"available_ratio\", \"below\": 1.0}}{sep}\n"
        ));
    }
    let start = base.find("\"alerts\": [").expect("alerts");
    let end = base.find("\"recovery\": [").expect("recovery");
    let text = format!("{}\"alerts\": [{alerts}],\n  {}", &base[..start], &base[end..]);
    edit(&text, "\"on\": \"WebErrorRate\"", &format!("\"on\": \"{on}\""))
}

#[test]
fn two_hundred_thousand_alerts_are_checked_quickly_and_errors_stay_short() {
    let started = Stopwatch::start();
    let err = Scenario::parse(Path::new("s.json"), many_alerts(200_000, "web", "Nope").as_bytes())
        .map(|_| ())
        .expect_err("no alert named Nope")
        .to_string();
    assert!(started.elapsed() < StdDuration::from_secs(20), "took {:?}", started.elapsed());
    assert!(err.len() < 2_000, "an error of {} bytes: {}…", err.len(), &err[..300]);
    assert!(err.contains("no alert named \"Nope\"") && err.contains("… and 199,990 more"), "{err}");

    // Every alert on a pool that does not exist: 200,000 problems, ten shown.
    let err = Scenario::parse(Path::new("s.json"), many_alerts(200_000, "nope", "A0").as_bytes())
        .map(|_| ())
        .expect_err("no pool named nope")
        .to_string();
    assert_eq!(err.lines().count(), 11, "ten problems and a count:\n{err}");
    assert!(err.lines().all(|l| l.len() < 300), "{err}");
    assert!(err.ends_with("s.json: … and 199,990 more problems"), "{err}");
}

// 3. Accepted but meaningless.

#[test]
fn meaningless_values_are_refused_with_file_line_column_and_path() {
    let base = shipped("blackhole-drain");
    let traffic = "\"traffic\": [\n    {\n      \"pool\": \"web\",\n      \"points\": [[\"02:00\", 8]]\n    }";
    let second = format!("{traffic},\n    {{\"pool\": \"web\", \"points\": [[\"02:30\", 4]]}}");
    let text = edit(&base, traffic, &second);
    let pos = after(&text, "{\"pool\": ");
    refused_at(&text, "traffic[1].pool", pos, "already has traffic (traffic[0])");

    let with_burst = |burst: &str| {
        edit(
            &base,
            "\"points\": [[\"02:00\", 8]]",
            &format!("\"points\": [[\"02:00\", 8]],\n      \"bursts\": [{burst}]"),
        )
    };
    let text = with_burst("{\"at\": \"02:20\", \"for\": \"5m\", \"rate\": -50}");
    refused_at(&text, "traffic[0].bursts[0].rate", after(&text, "\"rate\": "), "0 to");
    let text = with_burst("{\"at\": \"+2h\", \"for\": \"5m\", \"rate\": 50}");
    refused_at(&text, "traffic[0].bursts[0].at", after(&text, "{\"at\": "), "after the end");

    let text = edit(&base, "\"slos\": [", "\"impact\": {\"error_ratio\": -1},\n  \"slos\": [");
    refused_at(&text, "impact.error_ratio", after(&text, "{\"error_ratio\": "), "between 0 and 1");

    let ratio = |slo: &str| edit(&base, "\"slos\": [", &format!("\"slos\": [\n    {{\"error_ratio\": {slo}}},"));
    let text = ratio("{\"pool\": \"web\", \"max\": -1}");
    refused_at(&text, "slos[0].error_ratio.max", after(&text, "\"max\": "), "between 0 and 1");
    let text = ratio("{\"pool\": \"web\", \"max\": 0.01, \"window\": \"0s\"}");
    refused_at(&text, "slos[0].error_ratio.window", after(&text, "0.01, \"window\": "), "between 1ms and 7d, not 0s");
}

#[test]
fn a_fifo_a_device_or_a_huge_file_is_refused_without_blocking_or_reading_it_all() {
    let scratch = Scratch::new("files");
    let fifo = scratch.0.join("fifo.json");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let fifo = fifo.to_string_lossy().into_owned();
    let huge = scratch.0.join("huge.json");
    std::fs::File::create(&huge).and_then(|f| f.set_len(65 * 1024 * 1024)).expect("a sparse file");
    let huge = huge.to_string_lossy().into_owned();
    for (file, why) in [
        (fifo.as_str(), "not a regular file (a FIFO)"),
        ("/dev/zero", "not a regular file (a character device)"),
        (huge.as_str(), "larger than 64 MiB"),
    ] {
        let out = ebb_within(&["check", file], StdDuration::from_secs(20))
            .unwrap_or_else(|| panic!("ebb check {file} blocks"));
        assert_eq!(out.status.code(), Some(2), "{file}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(file) && stderr.contains(why), "{file}: {stderr}");
    }
}

// 4. Positions everywhere, a byte-order mark, no `?`.

#[test]
fn errors_of_meaning_point_at_the_value_as_parse_errors_do() {
    let text = edit(&shipped("blackhole-drain"), "\"restore\": \"web\"", "\"restore\": \"wbe\"");
    refused_at(
        &text,
        "recovery[0].restore",
        after(&text, "\"restore\": "),
        "no pool named \"wbe\" (did you mean \"web\"?",
    );
    let text = edit(&shipped("blackhole-drain"), "\"hosts\": 3,", "\"hosts\": 9,");
    refused_at(&text, "timeline[0].command", after(&text, "\"command\": "), "max_drain_fraction");
}

#[test]
fn a_utf8_byte_order_mark_is_accepted_and_positions_do_not_count_it() {
    let text = format!("\u{feff}{}", shipped("blackhole-drain"));
    Scenario::parse(Path::new("s.json"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let bad =
        format!("\u{feff}{}", edit(&shipped("blackhole-drain"), "\"duration\": \"1h\"", "\"duration\": \"1 hour\""));
    let err = Scenario::parse(Path::new("s.json"), bad.as_bytes()).map(|_| ()).expect_err("a bad duration").to_string();
    let (line, column) = after(&bad[3..], "\"duration\": ");
    // serde_json points after the bad string; the line is what matters.
    assert!(
        err.starts_with(&format!("s.json:{line}:")) && err.contains("duration: "),
        "{err} (value at {line}:{column})"
    );
}

#[test]
fn no_error_shows_an_unknown_path_step() {
    let base = shipped("blackhole-drain");
    let cases = [
        edit(&base, "[\"02:00\", 8]", "[\"02:00\", \"eight\"]"),
        edit(&base, "[\"02:00\", 8]", "[\"02:00\"]"),
        edit(&base, "[\"02:00\", 8]", "[\"02:00\", 8, 9]"),
        edit(&base, "[\"02:00\", 8]", "[\"2am\", 8]"),
        "[]".to_string(),
        String::new(),
        "{\"version\": 1,".to_string(),
    ];
    for text in cases {
        let err = Scenario::parse(Path::new("s.json"), text.as_bytes()).map(|_| ()).expect_err("bad").to_string();
        assert!(!err.contains('?') || err.contains("did you mean"), "{err}");
        let (file, rest) = err.split_once(':').expect("file:");
        assert_eq!(file, "s.json");
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().and_then(|l| l.parse::<usize>().ok());
        let column = parts.next().and_then(|c| c.parse::<usize>().ok());
        assert!(line.is_some_and(|l| l > 0) && column.is_some_and(|c| c > 0), "no line and column: {err}");
    }
}

// 5. Programs.

#[test]
fn check_lists_the_programs_a_replay_would_run_and_no_programs_refuses_them() {
    let scenario = "scenarios/bitbucket-2021-02-05-external-recovery.json";
    let out = ebb(&["check", scenario]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("runs programs") && stdout.contains("recovery[3].run: ../scripts/recover-pool.sh --verbose"),
        "{stdout}"
    );
    let out = ebb(&["check", "scenarios/blackhole-drain.json"]);
    assert!(!text(&out.stdout).contains("runs programs"), "{}", text(&out.stdout));

    let wasm = wasm().to_string_lossy().into_owned();
    let out = ebb(&["replay", "--no-programs", "--plugin", &wasm, scenario]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--no-programs") && stderr.contains("recovery[3].run: ../scripts/recover-pool.sh --verbose"),
        "{stderr}"
    );
    assert!(text(&out.stdout).is_empty(), "nothing replayed: {}", text(&out.stdout));
    let out = ebb(&["replay", "--no-programs", "--quiet", "--plugin", &wasm, "scenarios/blackhole-drain.json"]);
    assert_eq!(out.status.code(), Some(0), "a scenario without programs replays: {}", text(&out.stderr));
}

// 6. The schema beside no scenario.

#[test]
fn check_over_every_file_in_scenarios_passes_and_each_names_its_schema() {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root().join("scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            files.push(path.to_string_lossy().into_owned());
        }
    }
    let args: Vec<&str> = std::iter::once("check").chain(files.iter().map(String::as_str)).collect();
    let out = ebb(&args);
    assert_eq!(out.status.code(), Some(0), "ebb check scenarios/*.json:\n{}", text(&out.stderr));
    for file in &files {
        let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let schema = value["$schema"].as_str().unwrap_or_else(|| panic!("{file} names no $schema"));
        let path = Path::new(file).parent().unwrap().join(schema);
        assert!(path.is_file(), "{file}: $schema {schema} is not a file");
    }
}

// 7. Closed pipes.

#[test]
fn a_closed_stdout_ends_ebb_quietly() {
    for args in [vec!["schema"], vec!["check", "scenarios/blackhole-drain.json", "scenarios/slow-partial-drain.json"]] {
        // ebb_binary is built before the clock starts; the read end is closed before ebb writes.
        let mut child = Command::new(util::ebb_binary())
            .current_dir(root())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "ebb {args:?}: {stderr}");
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert!(
                out.status.success() || out.status.signal() == Some(13),
                "ebb {args:?}: ended by {:?}, not SIGPIPE",
                out.status
            );
        }
    }
}
