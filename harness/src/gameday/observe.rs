// What a game day reads back from the live system: the filter's per-pool counters on each
// `/stats/prometheus` page, and the alerts the team's Alertmanager holds (`GET /api/v2/alerts`),
// with their start times. Parsing only: the runner decides what they mean.

use std::collections::HashMap;

/// The filter's counters whose growth is a failed request or connection (docs/metrics.md).
const FAILURE_COUNTERS: [&str; 4] =
    ["ebb_pool_shed_total", "ebb_pool_blackholed_total", "ebb_pool_aborted_total", "ebb_pool_reset_total"];
const REQUESTS: &str = "ebb_pool_requests_total";

/// A pool's counters on one or more pages (summed over proxies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    /// Requests and connections the filter failed: shed, blackholed, aborted, reset.
    pub failed: u64,
}

/// Adds the `ebb_pool="…"` counters of a Prometheus text page to `into`, by pool.
pub fn add_counters(page: &str, into: &mut HashMap<String, Counters>) {
    for line in page.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Some((name, labels)) = series.split_once('{') else { continue };
        let failed = FAILURE_COUNTERS.contains(&name);
        if !failed && name != REQUESTS {
            continue;
        }
        let Some(pool) = label(labels, "ebb_pool") else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        if !value.is_finite() || value < 0.0 {
            continue;
        }
        // The float-to-integer cast saturates.
        let value = value as u64;
        let c = into.entry(pool).or_default();
        if failed {
            c.failed = c.failed.saturating_add(value);
        } else {
            c.requests = c.requests.saturating_add(value);
        }
    }
}

/// The value of `name` in a `{a="x",b="y"}` label set (without its closing brace or with it).
pub(super) fn label(labels: &str, name: &str) -> Option<String> {
    let labels = labels.trim_end_matches('}');
    for pair in labels.split(',') {
        let (k, v) = pair.split_once('=')?;
        if k.trim() == name {
            return Some(v.trim().trim_matches('"').to_string());
        }
    }
    None
}

/// An alert Alertmanager holds as active.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveAlert {
    pub name: String,
    /// Its `ebb_pool` label (or `pool`), when it has one.
    pub pool: Option<String>,
    /// When it started firing, Unix milliseconds.
    pub starts_at_ms: Option<u64>,
}

/// Alertmanager's `GET /api/v2/alerts` answer: the active alerts (not silenced or inhibited).
pub fn active_alerts(body: &[u8]) -> Result<Vec<ActiveAlert>, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not Alertmanager's JSON: {e}"))?;
    let list = value.as_array().ok_or("not Alertmanager's JSON: expected an array of alerts")?;
    let mut out = Vec::new();
    for a in list {
        let state = a.pointer("/status/state").and_then(|s| s.as_str()).unwrap_or("active");
        if state != "active" {
            continue;
        }
        let labels = a.get("labels");
        let text = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str()).map(str::to_string);
        let Some(name) = text("alertname") else { continue };
        out.push(ActiveAlert {
            name,
            pool: text("ebb_pool").or_else(|| text("pool")),
            starts_at_ms: a.get("startsAt").and_then(|s| s.as_str()).and_then(parse_rfc3339_ms),
        });
    }
    Ok(out)
}

/// `2026-12-01T17:03:04.123456789Z` (or with `+01:00`) as Unix milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = text.get(from..from.checked_add(len)?)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let frac = &text[i + 1..i + 1 + digits];
        millis = format!("{frac:0<3}")[..3].parse().ok()?;
        i += 1 + digits;
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let o = num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    // Days from civil (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    u64::try_from(seconds.checked_mul(1000)?.checked_add(millis)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_per_pool_over_pages() {
        let page = "# TYPE ebb_pool_requests_total counter\n\
            ebb_pool_requests_total{ebb_pool=\"web\"} 40\n\
            ebb_pool_shed_total{ebb_pool=\"web\"} 3\n\
            ebb_pool_blackholed_total{ebb_pool=\"web\"} 2\n\
            ebb_pool_completed_total{ebb_pool=\"web\"} 35\n\
            ebb_pool_available_hosts{ebb_pool=\"web\"} 7\n\
            ebb_pool_requests_total{ebb_pool=\"api\"} 5\n\
            envoy_cluster_upstream_rq_total{envoy_cluster_name=\"web\"} 99\n";
        let mut counters = HashMap::new();
        add_counters(page, &mut counters);
        add_counters(page, &mut counters);
        assert_eq!(counters["web"], Counters { requests: 80, failed: 10 });
        assert_eq!(counters["api"], Counters { requests: 10, failed: 0 });
        assert_eq!(counters.len(), 2);
    }

    #[test]
    fn alertmanager_alerts_keep_name_pool_and_start() {
        let body = br#"[
          {"labels":{"alertname":"EbbPoolBelowExpectedCapacity","ebb_pool":"web","severity":"page"},
           "startsAt":"2026-12-01T17:03:04.5Z","status":{"state":"active"}},
          {"labels":{"alertname":"Silenced","ebb_pool":"api"},"startsAt":"2026-12-01T17:03:04Z","status":{"state":"suppressed"}},
          {"labels":{"alertname":"Other"},"startsAt":"bad","status":{"state":"active"}}]"#;
        let alerts = active_alerts(body).expect("alerts");
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].pool.as_deref(), Some("web"));
        assert_eq!(alerts[0].starts_at_ms, Some(1_796_144_584_500));
        assert_eq!((alerts[1].pool.as_ref(), alerts[1].starts_at_ms), (None, None));
        assert!(active_alerts(b"<html>").is_err());
    }

    #[test]
    fn rfc3339_times_read_back_what_the_replay_writes() {
        for s in [0, 951_782_400, 1_612_483_200, 1_614_556_800, 1_796_144_584] {
            assert_eq!(parse_rfc3339_ms(&crate::sim::recovery::rfc3339(s)), Some(s * 1000), "{s}");
        }
        assert_eq!(parse_rfc3339_ms("2021-02-05T01:00:00+01:00"), Some(1_612_483_200_000));
        assert_eq!(parse_rfc3339_ms("2021-02-05T00:00:00.123456789Z"), Some(1_612_483_200_123));
        for bad in ["", "2021-02-05", "2021-13-05T00:00:00Z", "2021-02-05T00:00:00", "2021-02-05T00:00:00.Z"] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }
}
