// Clock times in a named time zone (`"timezone": "America/New_York"` with `"date"`): IANA names
// from the tz database bundled with jiff (never the machine's), DST changes, and report offsets.

use std::fmt;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::nearest;
use super::time::{clock_label, At, ClockTime};
use super::Scenario;

const DAY_MS: u64 = 86_400_000;

/// 2021-02-05T00:00:00Z, the seed incident's day: a scenario without `date` is replayed on it, so
/// the filter sees plausible times and every existing report stays as it was.
pub const DEFAULT_DAY_MS: u64 = 1_612_483_200_000;

/// Earliest and latest year of a `date`: the filter's clock counts from the Unix epoch, and a
/// replay's nanoseconds must fit in 64 bits.
const YEARS: std::ops::RangeInclusive<i16> = 1970..=2200;

/// An IANA time zone, by its name in the bundled database.
#[derive(Clone, Debug)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl Zone {
    /// The zone named exactly `name` (`America/New_York`); otherwise what was expected, with the
    /// nearest valid name when one is close.
    pub fn parse(name: &str) -> Result<Zone, String> {
        let db = jiff::tz::db();
        let found = db.get(name).ok().filter(|_| !name.eq_ignore_ascii_case("Etc/Unknown"));
        if let Some(tz) = found {
            // The database matches without regard to case; the file keeps one spelling.
            let canonical = tz.iana_name().unwrap_or(name).to_string();
            if canonical == name {
                return Ok(Zone { name: name.to_string(), tz });
            }
            return Err(format!(
                "expected an IANA time zone name, spelled as the tz database does: {canonical:?}, not {name:?}"
            ));
        }
        let names: Vec<String> = db.available().map(|n| n.as_str().to_string()).collect();
        let hint = suggestion(name, &names).map(|n| format!(" (did you mean {n:?}?)")).unwrap_or_default();
        let abbreviation = name.len() <= 5 && !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase());
        let why = if abbreviation {
            " an abbreviation such as EDT or PST names no place and no DST rules: name the place's zone"
        } else {
            ""
        };
        Err(format!(
            "expected an IANA time zone name like \"America/New_York\", \"Europe/Berlin\" or \"UTC\"{hint}, not {name:?}{}",
            if why.is_empty() { String::new() } else { format!(";{why}") }
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// UTC itself.
    pub fn utc() -> &'static Zone {
        &UTC
    }

    /// The local day at `epoch_ms`, `YYYY-MM-DD`.
    pub fn date_at(&self, epoch_ms: u64) -> String {
        i64::try_from(epoch_ms)
            .ok()
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .map(|ts| Day(self.tz.to_datetime(ts).date()).to_string())
            .unwrap_or_default()
    }

    /// Milliseconds since the Unix epoch of clock time `time` on `date` here. A time that does not
    /// exist that day (skipped when clocks go forward) is the moment as long after the jump (02:30
    /// is 03:30 after a jump from 02:00 to 03:00); a time that happens twice (when clocks go back)
    /// is its first occurrence. None only outside the years a `date` may have.
    pub fn epoch_ms(&self, date: Date, time: ClockTime) -> Option<u64> {
        let s = (time.millis() % DAY_MS) / 1000;
        let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
        let civil = date.at(h as i8, m as i8, sec as i8, 0);
        let zoned = civil.to_zoned_datetime(self.tz.clone()).ok()?;
        u64::try_from(zoned.timestamp().as_millisecond()).ok()
    }

    /// Milliseconds from clock time `start` on `date` to the next moment at or after it when the
    /// local clock reads `time` (the next day's when that day's has passed), DST changes included.
    pub fn offset_ms(&self, date: Date, start: ClockTime, time: ClockTime) -> u64 {
        let Some(from) = self.epoch_ms(date, start) else {
            return At::Clock(time).offset_ms(start);
        };
        let mut day = date;
        // Today, tomorrow or (after a start in a skipped hour) the day after.
        for _ in 0..3 {
            if let Some(at) = self.epoch_ms(day, time).filter(|&at| at >= from) {
                return at - from;
            }
            match day.tomorrow() {
                Ok(next) => day = next,
                Err(_) => break,
            }
        }
        At::Clock(time).offset_ms(start)
    }

    /// The zone's abbreviation and offset from UTC in seconds at `epoch_ms` (`EDT`, -14400).
    pub fn at(&self, epoch_ms: u64) -> (String, i32) {
        let Some(ts) = i64::try_from(epoch_ms).ok().and_then(|ms| Timestamp::from_millisecond(ms).ok()) else {
            return ("UTC".into(), 0);
        };
        let info = self.tz.to_offset_info(ts);
        (info.abbreviation().to_string(), info.offset().seconds())
    }

    /// The offset at `from_ms` and each change of it up to `to_ms` (ms since the Unix epoch), in
    /// order: `(epoch ms, abbreviation, offset seconds)`.
    pub fn offsets(&self, from_ms: u64, to_ms: u64) -> Vec<(u64, String, i32)> {
        let (abbreviation, offset) = self.at(from_ms);
        let mut out = vec![(from_ms, abbreviation, offset)];
        let Some(from) = i64::try_from(from_ms).ok().and_then(|ms| Timestamp::from_millisecond(ms).ok()) else {
            return out;
        };
        for transition in self.tz.following(from) {
            let Ok(at) = u64::try_from(transition.timestamp().as_millisecond()) else { break };
            // A replay lasts at most 7 days: a zone changes its offset a few times in that at most.
            if at > to_ms || out.len() > 16 {
                break;
            }
            out.push((at, transition.abbreviation().to_string(), transition.offset().seconds()));
        }
        out
    }
}

/// The valid name closest to `name`: by spelling, or by the place alone (`New York`, `berlin`).
fn suggestion<'n>(name: &str, names: &'n [String]) -> Option<&'n str> {
    let place = |n: &str| n.rsplit('/').next().unwrap_or(n).replace(' ', "_").to_ascii_lowercase();
    let wanted = place(name);
    if let Some(n) = names.iter().find(|n| !wanted.is_empty() && place(n) == wanted) {
        return Some(n);
    }
    nearest(name, names.iter().map(String::as_str))
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Zone::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Zone {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TimeZone".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An IANA time zone name, from the tz database bundled with ebb.",
            "examples": ["America/New_York", "Europe/Berlin", "UTC"]
        })
    }
}

/// A calendar day, `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Day(pub Date);

impl Day {
    pub fn parse(text: &str) -> Result<Day, String> {
        let bad = || format!("expected a date like \"2018-04-18\" (YYYY-MM-DD), not {text:?}");
        let shaped = text.len() == 10
            && text.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
        if !shaped {
            return Err(bad());
        }
        let date: Date = text.parse().map_err(|_| bad())?;
        if !YEARS.contains(&date.year()) {
            return Err(format!("expected a date from {}-01-01 to {}-12-31, not {text:?}", YEARS.start(), YEARS.end()));
        }
        Ok(Day(date))
    }

    /// Milliseconds since the Unix epoch of this day's midnight, UTC.
    fn utc_midnight_ms(self) -> u64 {
        UTC.epoch_ms(self.0, ClockTime(0)).unwrap_or(DEFAULT_DAY_MS)
    }
}

/// The zone a `date` without `timezone` is read in.
static UTC: std::sync::LazyLock<Zone> = std::sync::LazyLock::new(|| Zone { name: "UTC".into(), tz: TimeZone::UTC });

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.0.year(), self.0.month(), self.0.day())
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Day::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Day {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Date".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
            "description": "A calendar day, `YYYY-MM-DD`.",
            "examples": ["2018-04-18"]
        })
    }
}

/// How one moment of a replay reads: local clock time, abbreviation, offset from UTC.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// Seconds since the local midnight.
    pub local_s: u64,
    pub abbreviation: String,
    pub utc_offset_s: i32,
}

impl Scenario {
    /// The zone clock times are read in: `timezone`, or UTC when only `date` is given; None for
    /// a scenario with neither (clock times in UTC on the default day, as always).
    pub fn zone(&self) -> Option<&Zone> {
        match (&self.timezone, self.date) {
            (Some(zone), _) => Some(zone),
            (None, Some(_)) => Some(&UTC),
            (None, None) => None,
        }
    }

    /// The day the start falls on (the default day without `date`).
    fn day(&self) -> Date {
        self.date.map_or(Date::constant(2021, 2, 5), |d| d.0)
    }

    /// Milliseconds since the Unix epoch of the replay's start: the filter's clock reads it at t = 0.
    pub fn start_epoch_ms(&self) -> u64 {
        match (self.zone(), self.date) {
            (Some(zone), _) => zone.epoch_ms(self.day(), self.start).unwrap_or(DEFAULT_DAY_MS),
            (None, Some(day)) => day.utc_midnight_ms().saturating_add(self.start.millis()),
            (None, None) => DEFAULT_DAY_MS.saturating_add(self.start.millis()),
        }
    }

    /// Milliseconds from the start to `at`: a clock time is the next moment at or after the start
    /// when the scenario's clock reads it, across DST changes.
    pub fn offset_ms(&self, at: At) -> u64 {
        match (at, self.zone()) {
            (At::Clock(time), Some(zone)) => zone.offset_ms(self.day(), self.start, time),
            _ => at.offset_ms(self.start),
        }
    }

    /// Seconds from the start to a clock time (the next such moment: the diurnal cycle's trough).
    /// Without a zone, the plain difference of clock times (negative when it is earlier), as always.
    pub fn clock_offset_s(&self, time: ClockTime) -> f64 {
        match self.zone() {
            Some(_) => self.offset_ms(At::Clock(time)) as f64 / 1000.0,
            None => (time.millis() as f64 - self.start.millis() as f64) / 1000.0,
        }
    }

    /// The scenario's clock `seconds` after the start, `HH:MM:SS` (local time in its zone).
    pub fn clock_label(&self, seconds: f64) -> String {
        match self.reading(seconds) {
            Some(r) => clock_label(ClockTime(0), r.local_s as f64),
            None => clock_label(self.start, seconds),
        }
    }

    /// How the scenario's zone reads `seconds` after the start; None without a zone.
    pub fn reading(&self, seconds: f64) -> Option<Reading> {
        let zone = self.zone()?;
        // The float-to-integer cast saturates.
        let at = self.start_epoch_ms().saturating_add((seconds.max(0.0) * 1000.0) as u64);
        let (abbreviation, utc_offset_s) = zone.at(at);
        let local_s = (at / 1000).saturating_add_signed(i64::from(utc_offset_s)) % 86_400;
        Some(Reading { local_s, abbreviation, utc_offset_s })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(text: &str) -> ClockTime {
        ClockTime::parse(text).unwrap()
    }

    fn day(text: &str) -> Date {
        Day::parse(text).unwrap().0
    }

    #[test]
    fn local_times_resolve_through_the_zone_and_its_dst_changes() {
        let ny = Zone::parse("America/New_York").unwrap();
        // 06:22 EDT is 10:22 UTC.
        let ms = ny.epoch_ms(day("2018-04-18"), clock("06:22")).unwrap();
        assert_eq!(ms % DAY_MS, (10 * 60 + 22) * 60_000);
        assert_eq!(ny.at(ms), ("EDT".to_string(), -4 * 3600));
        let ms = ny.epoch_ms(day("2018-01-18"), clock("06:22")).unwrap();
        assert_eq!(ny.at(ms), ("EST".to_string(), -5 * 3600));

        // 2018-03-11: clocks jump from 02:00 to 03:00. From 00:00, 04:00 is 3 hours away, not 4,
        // and 02:30 (which does not exist) is 03:30, 2h30m after midnight.
        let spring = day("2018-03-11");
        assert_eq!(ny.offset_ms(spring, clock("00:00"), clock("04:00")), 3 * 3_600_000);
        assert_eq!(ny.offset_ms(spring, clock("00:00"), clock("02:30")), 150 * 60_000);
        let from = ny.epoch_ms(spring, clock("00:00")).unwrap();
        let offsets = ny.offsets(from, from + 6 * 3_600_000);
        assert_eq!(offsets.iter().map(|o| (o.1.as_str(), o.2)).collect::<Vec<_>>(), [("EST", -18000), ("EDT", -14400)]);
        assert_eq!(offsets[1].0 - from, 2 * 3_600_000, "the change is at 02:00 EST");
        // 2018-11-04: 01:30 happens twice; the first counts. 03:00 is 4 hours after 00:00.
        let fall = day("2018-11-04");
        assert_eq!(ny.offset_ms(fall, clock("00:00"), clock("01:30")), 90 * 60_000);
        assert_eq!(ny.offset_ms(fall, clock("00:00"), clock("03:00")), 4 * 3_600_000);
        // A time before the start is the next day's.
        assert_eq!(ny.offset_ms(day("2018-04-18"), clock("23:30"), clock("00:10")), 40 * 60_000);
    }

    #[test]
    fn bad_zones_name_the_nearest_valid_one_and_bad_dates_are_refused() {
        let err = Zone::parse("America/NewYork").unwrap_err();
        assert!(err.contains("did you mean \"America/New_York\"?"), "{err}");
        let err = Zone::parse("New York").unwrap_err();
        assert!(err.contains("did you mean \"America/New_York\"?"), "{err}");
        let err = Zone::parse("america/new_york").unwrap_err();
        assert!(err.contains("\"America/New_York\", not \"america/new_york\""), "{err}");
        let err = Zone::parse("EDT").unwrap_err();
        assert!(err.contains("abbreviation"), "{err}");
        for bad in ["", "Nowhere/Atlantis", "Etc/Unknown"] {
            assert!(Zone::parse(bad).is_err(), "{bad}");
        }
        for good in ["UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata"] {
            assert_eq!(Zone::parse(good).unwrap().name(), good);
        }
        for bad in ["2018-4-18", "2018-02-30", "18.04.2018", "1969-12-31", "2201-01-01", "2018-04-18T06:00"] {
            assert!(Day::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Day::parse("2018-04-18").unwrap().to_string(), "2018-04-18");
        assert_eq!(Day::parse("2021-02-05").unwrap().utc_midnight_ms(), DEFAULT_DAY_MS);
    }
}
