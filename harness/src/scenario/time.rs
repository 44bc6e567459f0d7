// Moments in a scenario: a clock time ("07:10", as incidents are told; UTC, or the scenario's
// zone: zone.rs) or an offset from the start ("+90m"). Both resolve to ms since the start.

use std::fmt;

use ebb_engine::Duration;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const DAY_MS: u64 = 86_400_000;

/// A time of day, `HH:MM` or `HH:MM:SS` (UTC, or in the scenario's `timezone`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockTime(pub u64);

impl ClockTime {
    pub fn parse(text: &str) -> Result<ClockTime, String> {
        let bad = || format!("expected a clock time like \"07:10\" or \"23:59:30\", got {text:?}");
        let parts: Vec<&str> = text.trim().split(':').collect();
        if !(2..=3).contains(&parts.len())
            || parts.iter().any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        let n: Vec<u64> = parts.iter().map(|p| p.parse().unwrap_or(99)).collect();
        let (h, m, s) = (n[0], n[1], n.get(2).copied().unwrap_or(0));
        if h > 23 || m > 59 || s > 59 {
            return Err(bad());
        }
        Ok(ClockTime(((h * 60 + m) * 60 + s) * 1000))
    }

    pub fn millis(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0 / 1000;
        if s.is_multiple_of(60) {
            write!(f, "{:02}:{:02}", s / 3600, (s / 60) % 60)
        } else {
            write!(f, "{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
        }
    }
}

impl Serialize for ClockTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ClockTime::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A moment of the scenario: a clock time (`"07:10"`, the next such time at or after the
/// start) or an offset from the start (`"+90m"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    Clock(ClockTime),
    Offset(Duration),
}

impl At {
    /// Milliseconds since the scenario's start, which is at clock time `start`, both in UTC
    /// (`Scenario::offset_ms` reads them in the scenario's zone).
    pub fn offset_ms(self, start: ClockTime) -> u64 {
        match self {
            At::Offset(d) => d.as_millis(),
            // Both are below a day when parsed; the remainders keep a hand-built one from wrapping.
            At::Clock(t) => (t.0 % DAY_MS + DAY_MS - start.0 % DAY_MS) % DAY_MS,
        }
    }

    pub fn parse(text: &str) -> Result<At, String> {
        match text.trim().strip_prefix('+') {
            Some(rest) => Duration::parse(rest).map(At::Offset),
            None if text.contains(':') => ClockTime::parse(text).map(At::Clock),
            None => Err(format!("expected a clock time like \"07:10\" or an offset like \"+90m\", got {text:?}")),
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Clock(t) => t.fmt(f),
            At::Offset(d) => write!(f, "+{d}"),
        }
    }
}

impl Serialize for At {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for At {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        At::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for ClockTime {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ClockTime".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": CLOCK_PATTERN,
            "description": "A time of day, `HH:MM` or `HH:MM:SS`: UTC, or in the scenario's `timezone`.",
            "examples": ["07:10", "23:59:30"]
        })
    }
}

impl schemars::JsonSchema for At {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "At".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": format!("{CLOCK_PATTERN}|{OFFSET_PATTERN}"),
            "description": "A moment of the scenario: a clock time (`07:10`, UTC or in the scenario's `timezone`: the next such time at or after the start) or an offset from the start (`+90m`).",
            "examples": ["07:10", "+90m"]
        })
    }
}

/// `HH:MM` or `HH:MM:SS`, as [`ClockTime::parse`] reads it.
const CLOCK_PATTERN: &str = "^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$";
/// `+` and a duration, as [`At::parse`] reads it.
const OFFSET_PATTERN: &str = "^\\+(([0-9]+(ms|s|m|h|d))+|0)$";

/// Formats seconds since the start as the clock time it was (for timelines).
pub fn clock_label(start: ClockTime, seconds: f64) -> String {
    // The float-to-integer cast saturates; the remainders keep the sum from wrapping.
    let ms = (start.0 % DAY_MS + ((seconds.max(0.0) * 1000.0) as u64) % DAY_MS) % DAY_MS;
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_times_and_offsets_resolve_from_the_start() {
        let start = ClockTime::parse("23:30").unwrap();
        assert_eq!(At::parse("00:10").unwrap().offset_ms(start), 40 * 60_000, "wraps past midnight");
        assert_eq!(At::parse("+90m").unwrap().offset_ms(start), 90 * 60_000);
        assert_eq!(clock_label(start, 3600.0), "00:30:00");
        for bad in ["7:10", "24:00", "07:60", "+soon", "10m"] {
            assert!(At::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clock_arithmetic_never_wraps() {
        let start = ClockTime(u64::MAX);
        assert!(At::Clock(ClockTime(u64::MAX - 5)).offset_ms(start) < DAY_MS);
        assert_eq!(clock_label(ClockTime::parse("23:00").unwrap(), 1e300).len(), 8);
        assert_eq!(clock_label(ClockTime(u64::MAX), f64::INFINITY).len(), 8);
    }
}
