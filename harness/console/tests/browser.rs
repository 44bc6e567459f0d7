// The console's browser code in a real browser (wasm-bindgen-test in headless Chromium, `make
// test-console`): the state it folds from live events, its clocks, and what it draws into the DOM.
#![cfg(target_arch = "wasm32")]

use ebb_chart::live::{AlertPhase, AlertState, LiveEvent, PoolSample, SloClock, SloPhase, Verdict};
use ebb_console::app::{render, Page};
use ebb_console::state::{State, MAX_SAMPLES};
use ebb_console::view;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn start(time_scale: f64) -> LiveEvent {
    LiveEvent::Start {
        scenario: "bitbucket-drain".into(),
        duration_s: 600.0,
        time_scale,
        pools: vec!["web".into(), "ssh".into()],
        targets: vec!["edge".into()],
        slos: vec![SloClock { name: "restore within 5m".into(), state: SloPhase::Waiting, deadline_s: None }],
    }
}

fn sample(t_s: f64, web: u64, firing: bool) -> LiveEvent {
    LiveEvent::Sample {
        t_s,
        phase: if web < 10 { "drain".into() } else { "steady".into() },
        pools: vec![
            PoolSample { pool: "web".into(), expected: 10, available: web },
            PoolSample { pool: "ssh".into(), expected: 4, available: 4 },
        ],
        alerts: vec![AlertState {
            name: "EbbPoolBelowExpectedCapacity web".into(),
            state: if firing { AlertPhase::Firing } else { AlertPhase::Inactive },
            since_s: firing.then_some(70.0),
        }],
        slos: vec![SloClock {
            name: "restore within 5m".into(),
            state: if web < 10 { SloPhase::Running } else { SloPhase::Waiting },
            deadline_s: (web < 10).then_some(360.0),
        }],
    }
}

fn command(t_s: f64, text: &str, ok: bool) -> LiveEvent {
    LiveEvent::Command { t_s, target: "edge".into(), command: text.into(), outcome: "applied".into(), ok }
}

/// A drain of pool web and its restore, as `ebb gameday` would send it.
fn drain_and_restore() -> Vec<LiveEvent> {
    vec![
        start(1.0),
        sample(0.0, 10, false),
        command(60.0, "add drain web 50%", true),
        sample(60.0, 5, false),
        sample(90.0, 5, true),
        command(200.0, "remove drain web", true),
        sample(210.0, 10, false),
    ]
}

#[wasm_bindgen_test]
fn the_state_follows_a_drain_and_its_restore() {
    let mut state = State::default();
    for (i, e) in drain_and_restore().iter().enumerate() {
        state.apply(e, i as f64);
    }
    let web: Vec<(f64, u64)> = state.samples["web"].iter().map(|s| (s.t_s, s.available)).collect();
    assert_eq!(web, vec![(0.0, 10), (60.0, 5), (90.0, 5), (210.0, 10)]);
    assert_eq!(state.phase, "steady");
    assert_eq!(state.commands.len(), 2);
    // The alert fired from its own `since`, and stopped at the sample that no longer had it firing.
    assert_eq!(state.alert_spans.len(), 1);
    assert_eq!((state.alert_spans[0].from_s, state.alert_spans[0].to_s), (70.0, Some(210.0)));
    // A console that reconnects is sent the Start again: it begins afresh.
    state.apply(&start(1.0), 100.0);
    assert!(state.samples.is_empty() && state.commands.is_empty() && state.alert_spans.is_empty());
}

#[wasm_bindgen_test]
fn the_clock_runs_scaled_between_events_and_stops_at_the_end() {
    let mut state = State::default();
    state.apply(&start(60.0), 0.0);
    state.apply(&sample(10.0, 10, false), 1_000.0);
    // One wall second at 60x is a scenario minute.
    assert_eq!(state.elapsed_s(2_000.0, true), 70.0);
    assert_eq!(state.elapsed_s(2_000.0, false), 10.0, "frozen while the connection is lost");
    assert_eq!(state.elapsed_s(1_000_000.0, true), 600.0, "never past the scenario's end");
    // An event older than the clock never moves it back.
    state.apply(&command(5.0, "late", true), 1_500.0);
    assert_eq!(state.commands[0].t_s, 10.0);
    state.apply(&LiveEvent::End { t_s: 300.0, verdict: Verdict::Pass, summary: "all met".into() }, 3_000.0);
    assert_eq!(state.elapsed_s(9_000.0, true), 300.0);
}

#[wasm_bindgen_test]
fn slo_clocks_count_down_and_then_over() {
    let running = SloClock { name: "restore".into(), state: SloPhase::Running, deadline_s: Some(360.0) };
    assert_eq!(view::countdown(&running, 60.0), "5:00 left");
    assert_eq!(view::countdown(&running, 359.4), "0:01 left");
    assert_eq!(view::countdown(&running, 400.0), "over by 0:40");
    let met = SloClock { state: SloPhase::Met, ..running.clone() };
    assert_eq!(view::countdown(&met, 400.0), "met");
    let waiting = SloClock { state: SloPhase::Waiting, deadline_s: None, ..running };
    assert_eq!(view::countdown(&waiting, 0.0), "not started");
}

#[wasm_bindgen_test]
fn a_long_game_day_keeps_a_bounded_history_with_its_whole_span() {
    let mut state = State::default();
    state.apply(&start(1.0), 0.0);
    let n = MAX_SAMPLES * 3;
    for i in 0..n {
        // Changes every sample: thinning has to drop real points, not only repeats.
        state.apply(&sample(i as f64, if i % 2 == 0 { 10 } else { 5 }, false), 0.0);
    }
    let web = &state.samples["web"];
    assert!(web.len() <= MAX_SAMPLES, "{} samples kept", web.len());
    assert_eq!(web[0].t_s, 0.0);
    assert_eq!(web[web.len() - 1].t_s, (n - 1) as f64);
    // Repeats alone are folded away without losing a change.
    let mut state = State::default();
    state.apply(&start(1.0), 0.0);
    for i in 0..=MAX_SAMPLES {
        state.apply(&sample(i as f64, if i < 100 { 10 } else { 5 }, false), 0.0);
    }
    let ssh: Vec<(f64, u64)> = state.samples["ssh"].iter().map(|s| (s.t_s, s.available)).collect();
    assert_eq!(ssh, vec![(0.0, 4), (MAX_SAMPLES as f64, 4)]);
    let web: Vec<(f64, u64)> = state.samples["web"].iter().map(|s| (s.t_s, s.available)).collect();
    assert_eq!(web, vec![(0.0, 10), (100.0, 5), (MAX_SAMPLES as f64, 5)]);
}

/// The elements of index.html that the page draws into.
fn page_skeleton() -> web_sys::Document {
    let document = web_sys::window().and_then(|w| w.document()).expect("a document");
    // A container of its own: the test runner reports through elements of the body.
    if let Some(old) = document.get_element_by_id("under-test") {
        old.remove();
    }
    let container = document.create_element("div").expect("a div");
    container.set_id("under-test");
    container.set_inner_html(
        r#"<main id="console"><div id="header"></div><button id="halt">Halt</button><p id="halt-result"></p><p id="problem"></p>
        <div id="slos"></div><div id="alerts"></div><div id="pools"></div><div id="commands"></div><div id="notes"></div></main>"#,
    );
    document.body().expect("a body").append_child(&container).expect("appended");
    document
}

fn text_of(document: &web_sys::Document, selector: &str) -> String {
    document
        .query_selector(selector)
        .expect("a valid selector")
        .unwrap_or_else(|| panic!("nothing matches {selector}"))
        .text_content()
        .unwrap_or_default()
}

#[wasm_bindgen_test]
fn the_page_draws_pools_alerts_clocks_and_commands() {
    let document = page_skeleton();
    let mut page = Page::new();
    page.connected = true;
    for e in drain_and_restore().iter().take(5) {
        page.receive(&serde_json::to_string(e).expect("serialises"), 0.0);
    }
    page.receive(
        &serde_json::to_string(&command(95.0, r#"<img src=x onerror="alert(1)"> web"#, false)).expect("serialises"),
        0.0,
    );
    render(&document, &page, 0.0, true);

    assert_eq!(text_of(&document, "#phase"), "drain");
    assert_eq!(text_of(&document, "#elapsed"), "1:35 / 10:00");
    // One chart per pool, each an SVG element the browser parsed, web's drawn from 10 to 5 hosts.
    let charts = document.query_selector_all("svg.chart").expect("selector");
    assert_eq!(charts.length(), 2);
    let available = document
        .query_selector(r#"svg.chart[data-pool="web"] path.available"#)
        .expect("selector")
        .expect("web's available line");
    assert_eq!(available.namespace_uri().as_deref(), Some("http://www.w3.org/2000/svg"));
    let d = available.get_attribute("d").expect("a path");
    assert!(d.starts_with("M64.0,40.0 L148.4,40.0 L148.4,125.0"), "{d}");
    assert_eq!(text_of(&document, r#"svg.chart[data-pool="web"] text.now"#), "5/10");
    assert_eq!(text_of(&document, r#"svg.chart[data-pool="ssh"] text.now"#), "4/4");
    // The alert shades web's chart only: its name names web.
    assert_eq!(document.query_selector_all(r#"svg.chart[data-pool="web"] rect.span"#).expect("selector").length(), 1);
    assert_eq!(document.query_selector_all(r#"svg.chart[data-pool="ssh"] rect.span"#).expect("selector").length(), 0);
    assert_eq!(text_of(&document, r#"tr.alert.firing td"#), "EbbPoolBelowExpectedCapacity web");
    assert_eq!(text_of(&document, r#"tr.slo.running td.clock"#), "4:25 left");
    // Commands, the latest first; a command's text is shown, never run as markup.
    let rows = document.query_selector_all("tr.command").expect("selector");
    assert_eq!(rows.length(), 2);
    assert!(document.query_selector("#commands img").expect("selector").is_none());
    assert!(text_of(&document, "tr.command.refused").contains("<img src=x"));
    assert_eq!(
        document.get_element_by_id("console").and_then(|e| e.get_attribute("data-events")).as_deref(),
        Some("6")
    );
}

#[wasm_bindgen_test]
fn the_end_shows_the_verdict_and_disables_halt() {
    let document = page_skeleton();
    let mut page = Page::new();
    page.connected = true;
    for e in drain_and_restore() {
        assert!(!page.receive(&serde_json::to_string(&e).expect("serialises"), 0.0));
    }
    let end = LiveEvent::End { t_s: 300.0, verdict: Verdict::Halted, summary: "halted from the console".into() };
    assert!(page.receive(&serde_json::to_string(&end).expect("serialises"), 0.0), "the End is the last event");
    render(&document, &page, 0.0, true);
    assert_eq!(text_of(&document, "#verdict"), "HALTED");
    assert_eq!(text_of(&document, "#summary"), "halted from the console");
    let halt: web_sys::HtmlButtonElement =
        document.get_element_by_id("halt").expect("button").dyn_into().expect("a button");
    assert!(halt.disabled());
}

#[wasm_bindgen_test]
fn unreadable_events_are_reported_and_change_nothing() {
    let document = page_skeleton();
    let mut page = Page::new();
    page.receive(&serde_json::to_string(&start(1.0)).expect("serialises"), 0.0);
    let before = page.state.clone();
    for bad in ["{not json", r#"{"type":"sample","t_s":"soon"}"#, r#"{"type":"reboot"}"#, ""] {
        assert!(!page.receive(bad, 0.0));
    }
    assert_eq!(page.state, before);
    assert_eq!(page.events, 1);
    render(&document, &page, 0.0, true);
    assert!(text_of(&document, "#problem").starts_with("unreadable event from the game day"));
}
