//! Scenarios written in a time zone (`timezone` and `date`): clock times follow the wall clock
//! across a DST change, reports show local time with its abbreviation beside UTC, a bad zone
//! name is refused with its position and the nearest valid name, and `ebb fmt` keeps the fields.

use std::path::Path;

use ebb_harness::report::Report;
use ebb_harness::scenario::{format, Scenario};
use ebb_harness::sim;
use ebb_harness::Plugin;

use crate::wasm;

/// New York, the night clocks go forward (2018-03-11, 02:00 EST to 03:00 EDT): three hosts of ten
/// drained at 04:00 local and restored at 04:30. From a 00:30 EST start, 04:00 EDT is 2h30m in,
/// not 3h30m as the clocks' difference says.
fn across_dst(zone_fields: &str) -> String {
    format!(
        r#"{{
  "version": 1,
  "name": "dst",
  {zone_fields}
  "start": "00:30",
  "duration": "5h",
  "sample": 10,
  "pools": [{{"name": "web", "hosts": 10, "capacity_per_host": 4, "service_time": "1s"}}],
  "traffic": [{{"pool": "web", "points": [["00:30", 4]]}}],
  "timeline": [
    {{"at": "04:00", "command": {{"id": "d", "ttl": "2h", "drain": {{"pool": "web", "hosts": 3}}}}}},
    {{"at": "04:30", "restore": "web"}}
  ],
  "slos": [{{"error_ratio": {{"pool": "web", "max": 0.5}}}}]
}}"#
    )
}

fn replay(text: &str) -> Report {
    let scenario = Scenario::parse(Path::new("dst.json"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let plugin = Plugin::load(wasm()).expect("load ebb.wasm");
    sim::replay(&scenario, &plugin, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn clock_times_follow_the_wall_clock_across_a_dst_change() {
    let r = replay(&across_dst(r#""timezone": "America/New_York", "date": "2018-03-11","#));
    let command = r.events.iter().find(|e| e.kind == "command").expect("the drain is sent");
    assert_eq!(command.t_s, 2.5 * 3600.0, "04:00 EDT is 2h30m after 00:30 EST");
    let lost = r.pools[0].capacity_lost_s.expect("the drain is a capacity loss");
    assert!((2.5 * 3600.0..2.5 * 3600.0 + 30.0).contains(&lost), "{lost}");
    let restored = r.pools[0].restored_s.expect("restored");
    assert!((3.0 * 3600.0..3.0 * 3600.0 + 30.0).contains(&restored), "{restored}");

    // Text: local time with its abbreviation, UTC beside it, the zone named.
    let text = r.render(false);
    assert!(text.contains("(5h from 2018-03-11 00:30 EST (05:30 UTC), seed 1)"), "{text}");
    assert!(text.contains("timeline (America/New_York, UTC in brackets):"), "{text}");
    assert!(text.contains("  04:00:00 EDT (08:00:00 UTC)  command "), "{text}");
    assert!(text.contains("pools (America/New_York):"), "{text}");

    // JSON: `start` stays UTC; `timezone` has the local start and each offset in force.
    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(json["start"], "05:30");
    let zone = &json["timezone"];
    assert_eq!(zone["name"], "America/New_York");
    assert_eq!(zone["date"], "2018-03-11");
    assert_eq!(zone["start"], "00:30 EST");
    assert_eq!(zone["start_utc"], "2018-03-11T05:30:00Z");
    let offsets: Vec<(f64, &str, i64)> = zone["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["t_s"].as_f64().unwrap(), o["abbreviation"].as_str().unwrap(), o["utc_offset_s"].as_i64().unwrap()))
        .collect();
    assert_eq!(offsets, [(0.0, "EST", -18_000), (5400.0, "EDT", -14_400)], "02:00 EST is 1h30m in");
    let back: ebb_harness::report::TimeZone = serde_json::from_value(zone.clone()).unwrap();
    assert_eq!(Some(back), r.timezone, "the report's zone reads back");

    // HTML: the events in local time with UTC, the zone in the footer, the chart's axis local.
    let html = ebb_harness::report::html(&r);
    assert!(html.contains("<th>America/New_York (UTC)</th>"), "events table header");
    assert!(html.contains(">04:00:00 EDT (08:00:00 UTC)<"), "the drain's event row");
    assert!(html.contains("times in America/New_York from 2018-03-11 00:30 EST (05:30 UTC)"), "footer");
    // A half-hourly axis: 01:30 EST, then 03:00 EDT (02:00 and 02:30 never happened), 04:00, 05:00.
    for tick in [">01:00</text>", ">03:00</text>", ">04:00</text>", ">05:00</text>"] {
        assert!(html.contains(tick), "axis tick {tick}");
    }
    assert!(!html.contains(">02:00</text>"), "no 02:00 tick on a night without one");
}

#[test]
fn a_date_alone_is_utc_and_no_zone_reports_as_before() {
    let r = replay(&across_dst(r#""date": "2018-03-11","#));
    let command = r.events.iter().find(|e| e.kind == "command").unwrap();
    assert_eq!(command.t_s, 3.5 * 3600.0, "in UTC there is no DST: 04:00 is 3h30m after 00:30");
    let text = r.render(false);
    assert!(text.contains("(5h from 2018-03-11 00:30 UTC, seed 1)"), "{text}");
    assert!(text.contains("timeline (UTC):\n  04:00:00 UTC  command "), "{text}");

    let r = replay(&across_dst(""));
    assert_eq!(r.events.iter().find(|e| e.kind == "command").unwrap().t_s, 3.5 * 3600.0);
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("\"timezone\""), "no zone, no field: reports stay as they were");
    let text = r.render(false);
    assert!(
        text.contains("(5h from 00:30 UTC, seed 1)") && text.contains("timeline (UTC):\n  04:00:00  command "),
        "{text}"
    );
}

#[test]
fn bad_zones_are_refused_with_their_position_and_the_nearest_name() {
    let refused = |fields: &str| {
        let text = across_dst(fields);
        Scenario::parse(Path::new("dst.json"), text.as_bytes()).map(|_| ()).expect_err(fields).to_string()
    };
    let err = refused(r#""timezone": "America/NewYork", "date": "2018-03-11","#);
    assert!(err.starts_with("dst.json:4:") && err.contains(": timezone: "), "{err}");
    assert!(
        err.contains("expected an IANA time zone name") && err.contains("did you mean \"America/New_York\"?"),
        "{err}"
    );
    let err = refused(r#""timezone": "EDT", "date": "2018-03-11","#);
    assert!(err.contains("abbreviation"), "{err}");
    let err = refused(r#""timezone": "America/New_York","#);
    assert!(err.starts_with("dst.json:4:") && err.contains(": timezone: a timezone needs a `date`"), "{err}");
    let text = across_dst(r#""timezone": "America/New_York", "date": "2018-03-11","#).replace("\"00:30\"", "\"02:30\"");
    let err = Scenario::parse(Path::new("dst.json"), text.as_bytes()).map(|_| ()).expect_err("02:30").to_string();
    assert!(err.contains(": start: 02:30 does not exist on 2018-03-11 in America/New_York"), "{err}");
    let err = refused(r#""timezone": "America/New_York", "date": "2018-03-32","#);
    assert!(err.contains("date: expected a date like \"2018-04-18\" (YYYY-MM-DD)"), "{err}");
}

#[test]
fn ebb_fmt_keeps_the_zone_fields() {
    let text = across_dst(r#""timezone": "America/New_York", "date": "2018-03-11","#);
    let formatted = format::format(Path::new("dst.json"), text.as_bytes()).unwrap();
    assert!(formatted.contains("  \"timezone\": \"America/New_York\",\n  \"date\": \"2018-03-11\",\n"), "{formatted}");
    let before = Scenario::parse(Path::new("dst.json"), text.as_bytes()).unwrap();
    let after = Scenario::parse(Path::new("dst.json"), formatted.as_bytes()).unwrap();
    assert_eq!(before, after);
    assert_eq!(after.timezone.as_ref().map(|z| z.name()), Some("America/New_York"));
}
