use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ValidationError;

/// A point in time, in whole seconds since the Unix epoch (UTC). Token claims carry the
/// number; JSON bodies carry RFC 3339 (`2026-11-25T10:00:00Z`). Always within years
/// 0000..=9999 in UTC (a number beyond is held at the nearer end), so every timestamp writes
/// as RFC 3339 and reads back: no stored number can make a read of the audit log fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest and latest instants RFC 3339 can write in UTC (years 0000 to 9999).
    const FIRST: i64 = -62_167_219_200;
    const LAST: i64 = 253_402_300_799;
    const WRITABLE: std::ops::RangeInclusive<i64> = Self::FIRST..=Self::LAST;

    /// `seconds` since the epoch, held within years 0000..=9999.
    pub const fn from_unix(seconds: i64) -> Self {
        Self(if seconds < Self::FIRST {
            Self::FIRST
        } else if seconds > Self::LAST {
            Self::LAST
        } else {
            seconds
        })
    }

    pub const fn unix(self) -> i64 {
        self.0
    }

    pub fn plus_seconds(self, seconds: i64) -> Self {
        Self::from_unix(self.0.saturating_add(seconds))
    }

    pub fn rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp(self.0, 0)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .expect("a Timestamp is within years 0000..=9999")
    }

    /// Parses an RFC 3339 time from a query string (fractions are cut to the second). A time
    /// whose offset carries it out of years 0000..=9999 in UTC is refused: it could not be
    /// written back, so a cursor sealed with it would never open again.
    pub fn parse_rfc3339(value: &str, field: &'static str) -> Result<Self, ValidationError> {
        DateTime::parse_from_rfc3339(value)
            .ok()
            .map(|t| t.timestamp())
            .filter(|seconds| Self::WRITABLE.contains(seconds))
            .map(Self)
            .ok_or(ValidationError::Time { field })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_rfc3339(&s, "time").map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let t = Timestamp::from_unix(1_795_000_000);
        assert_eq!(t.rfc3339(), "2026-11-18T11:06:40Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.rfc3339(), "t").unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t = Timestamp::parse_rfc3339("2026-11-18T12:06:40+01:00", "t").unwrap();
        assert_eq!(t.unix(), 1_795_000_000);
    }

    #[test]
    fn a_time_its_offset_carries_out_of_years_0000_to_9999_in_utc_is_refused() {
        assert!(Timestamp::parse_rfc3339("0000-01-01T00:00:00+00:01", "from").is_err());
        assert!(Timestamp::parse_rfc3339("9999-12-31T23:59:59-00:01", "to").is_err());
        for edge in ["0000-01-01T00:00:00Z", "0000-01-01T00:00:00-00:01", "9999-12-31T23:59:59Z"] {
            let t = Timestamp::parse_rfc3339(edge, "to").unwrap();
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t, "{edge} reads back from {json}");
        }
    }

    #[test]
    fn any_number_makes_a_timestamp_that_writes_and_reads_back() {
        for seconds in [i64::MIN, -62_167_219_201, 1 << 62, i64::MAX, 253_402_300_800] {
            let t = Timestamp::from_unix(seconds);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t, "{seconds} as {json}");
        }
        assert_eq!(Timestamp::from_unix(1 << 62).rfc3339(), "9999-12-31T23:59:59Z");
        assert_eq!(Timestamp::from_unix(i64::MIN).rfc3339(), "0000-01-01T00:00:00Z");
        assert_eq!(Timestamp::from_unix(0).plus_seconds(i64::MAX), Timestamp::from_unix(i64::MAX));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Timestamp::parse_rfc3339("yesterday", "from").is_err());
    }
}
