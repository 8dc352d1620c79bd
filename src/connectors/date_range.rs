//! An inclusive range of calendar dates from settings (`start_date`, `end_date` as
//! `YYYY-MM-DD`), and URL templates with `{from}`/`{to}` placeholders filled from it.
//!
//! Relative phrases ("4 days back") are resolved before a connector sees its settings; here a
//! date is always a plain calendar date.

use jiff::civil::Date;
use serde_json::{Value, json};

use super::Error;

/// Longest range accepted, in days: about ten years of daily reports.
pub const MAX_DAYS: i64 = 3_660;

/// `start..=end`, both calendar dates, `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub start: Date,
    pub end: Date,
}

impl DateRange {
    /// Parses and checks the two settings; errors name the field.
    pub fn parse(start: &str, end: &str) -> Result<Self, Error> {
        let start = parse_date("start_date", start)?;
        let end = parse_date("end_date", end)?;
        if end < start {
            return Err(Error::Settings(format!(
                "end_date: {end} is before start_date {start}"
            )));
        }
        let range = Self { start, end };
        if range.day_count() > MAX_DAYS {
            return Err(Error::Settings(format!(
                "end_date: the range spans {} days, more than {MAX_DAYS}",
                range.day_count()
            )));
        }
        Ok(range)
    }

    /// How many days the range holds (at least 1).
    pub fn day_count(&self) -> i64 {
        let days = self
            .start
            .until(self.end)
            .map(|span| i64::from(span.get_days()))
            .unwrap_or(0);
        days + 1
    }

    /// Every date of the range, in order.
    pub fn days(&self) -> impl Iterator<Item = Date> + '_ {
        self.start
            .series(jiff::Span::new().days(1))
            .take_while(|day| *day <= self.end)
    }

    /// `template` with `{from}` and `{to}` replaced by the range's dates.
    pub fn fill(&self, template: &str) -> String {
        template
            .replace("{from}", &self.start.to_string())
            .replace("{to}", &self.end.to_string())
    }
}

/// A `YYYY-MM-DD` calendar date.
pub fn parse_date(field: &str, text: &str) -> Result<Date, Error> {
    let valid_shape = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    let date = valid_shape
        .then(|| text.parse::<Date>().ok())
        .flatten()
        .ok_or_else(|| Error::Settings(format!("{field}: {text:?} is not a YYYY-MM-DD date")))?;
    Ok(date)
}

/// JSON Schema of a date setting.
pub fn date_schema(description: &str) -> Value {
    json!({
        "type": "string", "format": "date",
        "description": description,
        "examples": ["2026-11-01"]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_lists_every_day_across_month_ends() {
        let range = DateRange::parse("2026-10-30", "2026-11-02").unwrap();
        let days: Vec<String> = range.days().map(|day| day.to_string()).collect();
        assert_eq!(
            days,
            ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"]
        );
        assert_eq!(range.day_count(), 4);
        assert_eq!(
            range.fill("https://x/members.php?dFrom={from}&dTo={to}"),
            "https://x/members.php?dFrom=2026-10-30&dTo=2026-11-02"
        );
        assert_eq!(
            DateRange::parse("2026-11-01", "2026-11-01")
                .unwrap()
                .day_count(),
            1
        );
    }

    #[test]
    fn bad_dates_and_reversed_or_huge_ranges_are_refused() {
        for (start, end, needle) in [
            ("2026-11-31", "2026-12-01", "start_date"),
            ("20261101", "2026-12-01", "start_date"),
            ("2026-11-01", "yesterday", "end_date"),
            ("2026-11-02", "2026-11-01", "before"),
            ("2000-01-01", "2026-01-01", "more than"),
        ] {
            let error = DateRange::parse(start, end).unwrap_err().to_string();
            assert!(error.contains(needle), "{start}..{end}: {error}");
        }
    }
}
