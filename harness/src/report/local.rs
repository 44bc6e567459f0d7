// How a report reads its times: UTC clock times (as always), or, for a scenario with `timezone` or
// `date`, local times with the zone's abbreviation beside UTC, from offsets the report carries.

use serde::{Deserialize, Serialize};

use super::Report;
use crate::scenario::time::clock_label;
use crate::scenario::{ClockTime, Scenario, Zone};

const DAY_MS: u64 = 86_400_000;

/// The time zone of a report's times: every `*_s` of the report is local time as the offset in
/// force at that moment says, and UTC as `start_utc` plus the seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeZone {
    /// The IANA name (`America/New_York`; `UTC` when the scenario gives only a `date`).
    pub name: String,
    /// The local day of t = 0, `YYYY-MM-DD`.
    pub date: String,
    /// Local clock time of t = 0 with the zone's abbreviation: `06:00 EDT`.
    pub start: String,
    /// t = 0 in UTC, RFC 3339: `2018-04-18T10:00:00Z`.
    pub start_utc: String,
    /// The offset from UTC at t = 0 and each change of it during the run (DST), in order.
    pub offsets: Vec<ZoneOffset>,
}

/// From `t_s` on, local time is UTC plus `utc_offset_s`, abbreviated `abbreviation`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneOffset {
    pub t_s: f64,
    pub abbreviation: String,
    pub utc_offset_s: i32,
}

/// The report's zone for `scenario` over `duration_s`; None when it has neither `timezone` nor `date`.
pub fn time_zone(scenario: &Scenario, duration_s: f64) -> Option<TimeZone> {
    let zone = scenario.zone()?;
    let start_ms = scenario.start_epoch_ms();
    let end_ms = start_ms.saturating_add((duration_s.max(0.0) * 1000.0) as u64);
    let offsets = zone
        .offsets(start_ms, end_ms)
        .into_iter()
        .map(|(at, abbreviation, utc_offset_s)| ZoneOffset {
            t_s: at.saturating_sub(start_ms) as f64 / 1000.0,
            abbreviation,
            utc_offset_s,
        })
        .collect();
    let reading = scenario.reading(0.0)?;
    Some(TimeZone {
        name: zone.name().to_string(),
        date: zone.date_at(start_ms),
        start: format!("{} {}", ClockTime(reading.local_s * 1000), reading.abbreviation),
        start_utc: format!(
            "{}T{}Z",
            Zone::utc().date_at(start_ms),
            clock_label(ClockTime(0), (start_ms % DAY_MS) as f64 / 1000.0)
        ),
        offsets,
    })
}

impl Report {
    /// Seconds since midnight UTC of t = 0.
    fn start_utc_ms(&self) -> u64 {
        ClockTime::parse(&self.start).unwrap_or_default().millis()
    }

    /// `(local HH:MM:SS, abbreviation, UTC HH:MM:SS)` of `t` seconds after the start; None
    /// without a zone.
    fn reading(&self, t: f64) -> Option<(String, &str, String)> {
        let zone = self.timezone.as_ref()?;
        let offset = zone.offsets.iter().rev().find(|o| o.t_s <= t).or(zone.offsets.first())?;
        let utc_ms = (self.start_utc_ms() % DAY_MS).saturating_add((t.max(0.0) * 1000.0) as u64 % DAY_MS);
        let shift = i64::from(offset.utc_offset_s).rem_euclid(86_400) as u64 * 1000;
        let local_ms = (utc_ms + shift) % DAY_MS;
        Some((
            clock_label(ClockTime(0), local_ms as f64 / 1000.0),
            offset.abbreviation.as_str(),
            clock_label(ClockTime(0), (utc_ms % DAY_MS) as f64 / 1000.0),
        ))
    }

    /// `t` seconds after the start on the report's clock: `HH:MM:SS` UTC, or local time with the
    /// zone's abbreviation (`06:22:00 EDT`).
    pub fn clock(&self, t: f64) -> String {
        match self.reading(t) {
            Some((local, abbreviation, _)) => format!("{local} {abbreviation}"),
            None => clock_label(ClockTime::parse(&self.start).unwrap_or_default(), t),
        }
    }

    /// As [`Report::clock`], with UTC beside a local time: `06:22:00 EDT (10:22:00 UTC)`.
    pub fn clock_and_utc(&self, t: f64) -> String {
        match self.reading(t) {
            Some((local, abbreviation, utc)) if !self.in_utc() => format!("{local} {abbreviation} ({utc} UTC)"),
            _ => self.clock(t),
        }
    }

    /// Whether the report's zone is UTC all along (only a `date` given, or `"timezone": "UTC"`).
    fn in_utc(&self) -> bool {
        self.timezone.as_ref().is_none_or(|z| z.offsets.iter().all(|o| o.utc_offset_s == 0))
    }

    /// When t = 0 was: `07:00 UTC`, or `2018-04-18 06:00 EDT (10:00 UTC)`.
    pub fn start_words(&self) -> String {
        match &self.timezone {
            None => format!("{} UTC", self.start),
            Some(zone) if self.in_utc() => format!("{} {}", zone.date, zone.start),
            Some(zone) => format!("{} {} ({} UTC)", zone.date, zone.start, self.start),
        }
    }

    /// What the times of a table are in: `UTC`, or the zone's name.
    pub fn zone_name(&self) -> &str {
        self.timezone.as_ref().map_or("UTC", |z| z.name.as_str())
    }

    /// The local clock of t = 0 as seconds since the local midnight, for charts' time axes.
    pub fn local_start_s(&self) -> f64 {
        match self.reading(0.0) {
            Some((local, _, _)) => ClockTime::parse(&local).unwrap_or_default().millis() as f64 / 1000.0,
            None => self.start_utc_ms() as f64 / 1000.0,
        }
    }
}
