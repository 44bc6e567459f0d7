// Human durations ("250ms", "30s", "5m", "1h30m") as used in configuration, commands and scenarios.
// Stored as whole milliseconds; the engine's clock is milliseconds since the Unix epoch.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A span of time with millisecond resolution, written in human units: `250ms`, `30s`, `5m`,
/// `2h`, `1d`, or a sum of them such as `1h30m`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms)
    }

    pub const fn from_secs(s: u64) -> Self {
        Duration(s * 1000)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Parses `1h30m`, `250ms`, `10s`, `0`. Units: ms, s, m, h, d.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = || format!("expected a duration like \"250ms\", \"30s\", \"5m\" or \"1h30m\", got {text:?}");
        let s = text.trim();
        if s == "0" {
            return Ok(Duration(0));
        }
        if s.is_empty() {
            return Err(expected());
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total: u64 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(expected());
            }
            let n: u64 = s[start..i].parse().map_err(|_| expected())?;
            let ustart = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit_ms = match &s[ustart..i] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(expected()),
            };
            total = n
                .checked_mul(unit_ms)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("duration {text:?} is too long"))?;
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    /// Prints the shortest exact form: `1h30m`, `250ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A string in human units (`250ms`, `30s`, `1h30m`, `0`), as [`Duration::parse`] reads it.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h|d))+$|^0$",
            "description": "A duration in whole units, summed: ms, s, m, h, d (`250ms`, `30s`, `5m`, `1h30m`), or `0`.",
            "examples": ["250ms", "30s", "5m", "1h30m"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(Duration::parse("250ms"), Ok(Duration(250)));
        assert_eq!(Duration::parse("1h30m"), Ok(Duration(5_400_000)));
        assert_eq!(Duration::parse("7h10m"), Ok(Duration((7 * 60 + 10) * 60_000)));
        assert_eq!(Duration::parse("0"), Ok(Duration(0)));
        assert_eq!(Duration::parse("1d"), Ok(Duration(86_400_000)));
    }

    #[test]
    fn rejects_bad_text_with_the_expected_form() {
        for bad in ["", "5", "m5", "5x", "1.5s", "-1s", "99999999999999999999d"] {
            let err = Duration::parse(bad).unwrap_err();
            assert!(err.contains("duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for ms in [0, 1, 999, 1000, 61_000, 5_400_000, 90_061_001] {
            let d = Duration(ms);
            assert_eq!(Duration::parse(&d.to_string()), Ok(d), "{d}");
        }
        assert_eq!(Duration(5_400_000).to_string(), "1h30m");
    }
}
