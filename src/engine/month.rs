//! Month identifiers: the partition key, the Flight SQL catalog name and the
//! folder name `YYYY-MM`.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Utc};
use chrono_tz::Tz;

use super::error::EngineError;

/// A calendar month. Only ever built from a validated string, so it is safe
/// to use as a path component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonthId {
    year: u16,
    month: u8,
}

impl MonthId {
    pub fn new(year: u16, month: u8) -> Option<Self> {
        ((1..=12).contains(&month) && (1000..=9999).contains(&year))
            .then_some(MonthId { year, month })
    }

    /// The current month in the given time zone.
    pub fn current(tz: Tz) -> Self {
        let now = Utc::now().with_timezone(&tz);
        MonthId {
            year: now.year() as u16,
            month: now.month() as u8,
        }
    }
}

impl fmt::Display for MonthId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for MonthId {
    type Err = EngineError;

    /// Accepts exactly `YYYY-MM` with a real month (`2026-01` .. `2026-12`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            EngineError::invalid(format!(
                "invalid month '{s}': expected YYYY-MM, e.g. 2026-01"
            ))
        };
        let b = s.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !b
                .iter()
                .enumerate()
                .all(|(i, c)| i == 4 || c.is_ascii_digit())
        {
            return Err(bad());
        }
        let year: u16 = s[0..4].parse().map_err(|_| bad())?;
        let month: u8 = s[5..7].parse().map_err(|_| bad())?;
        MonthId::new(year, month).ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_real_months() {
        assert_eq!("2026-01".parse::<MonthId>().unwrap().to_string(), "2026-01");
        assert_eq!("2026-12".parse::<MonthId>().unwrap().to_string(), "2026-12");
        for bad in [
            "2026-13",
            "2026-00",
            "26-01",
            "../x",
            "2026-1",
            "2026_01",
            "20260-1",
            "",
            "2026-01/..",
            "０２０２-01",
        ] {
            assert!(bad.parse::<MonthId>().is_err(), "{bad} must be rejected");
        }
    }
}
