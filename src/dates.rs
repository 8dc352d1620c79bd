//! Relative dates in connector settings: `"4 days back"`, `"yesterday 00:00"`, `"last monday"`
//! or an ISO date, resolved against the submission time in the configured time zone.
//!
//! Invariant: a resolved value is always a plain `YYYY-MM-DD` date or an RFC 3339 date-time with
//! its offset, so what is stored in a job needs no time zone or clock to be read again.
//!
//! A day phrase without a time is local midnight, where the replaced service filled in 09:00
//! (parsedatetime's default hour): its platforms only used the date part, and midnight is the
//! one time of day that reads the same for a date and a date-time setting.

use std::fmt;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// What a setting holds: a calendar date or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateKind {
    /// JSON Schema `"format": "date"`: resolves to `YYYY-MM-DD`.
    Date,
    /// JSON Schema `"format": "date-time"`: resolves to RFC 3339 with the zone's offset.
    DateTime,
}

/// A resolved phrase; it serialises to (and displays as) its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Date(Date),
    DateTime(Zoned),
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resolved::Date(date) => write!(f, "{date}"),
            Resolved::DateTime(zoned) => {
                write!(
                    f,
                    "{}",
                    zoned.timestamp().display_with_offset(zoned.offset())
                )
            }
        }
    }
}

impl Serialize for Resolved {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The phrases `resolve` reads, for error messages.
pub const ACCEPTED: &str = "an ISO date (2017-10-01) or date-time (2017-10-01T12:00:00, \
    with or without Z or an offset), today, yesterday, tomorrow, now, \"N days|weeks|months|years \
    ago\" or \"back\" (4 days back, a month ago), \"in N days\", \"N hours ago\", \
    \"last|this|next monday\", each optionally with a time (13:30, 00:00, midnight, noon)";

/// Why a phrase could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateError {
    pub phrase: String,
    pub kind: DateKind,
    pub reason: DateErrorReason,
}

/// What was wrong with a phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateErrorReason {
    /// Not one of the accepted phrases.
    Unrecognised,
    /// `daily`, `every monday`…: it names many dates, a setting needs one.
    Recurring,
    /// The arithmetic left the supported years (-9999 to 9999).
    OutOfRange,
}

impl DateErrorReason {
    fn suffix(self) -> &'static str {
        match self {
            DateErrorReason::Unrecognised => "",
            DateErrorReason::Recurring => " (a recurring phrase names many dates, not one)",
            DateErrorReason::OutOfRange => " (it is out of range)",
        }
    }
}

impl fmt::Display for DateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = match self.kind {
            DateKind::Date => "date",
            DateKind::DateTime => "date-time",
        };
        let (phrase, reason) = (&self.phrase, self.reason.suffix());
        write!(
            f,
            "cannot read {phrase:?} as a {noun}{reason}; use {ACCEPTED}"
        )
    }
}

impl std::error::Error for DateError {}

/// Resolves `phrase` (case-insensitive, surrounding blanks ignored) at `now` in `tz`.
///
/// Calendar arithmetic happens on local dates, so `yesterday 13:30` is 13:30 on the wall clock
/// whatever the DST changes in between; months clamp to the month's last day (Mar 31 − 1 month
/// is Feb 28 or 29). A local time that does not exist (a DST gap) becomes the first valid
/// instant after it, an ambiguous one the earlier instant (jiff's compatible disambiguation).
/// An instant (`now`, an offset date-time) resolved as a date is its date in `tz`.
pub fn resolve(
    phrase: &str,
    kind: DateKind,
    now: Timestamp,
    tz: &TimeZone,
) -> Result<Resolved, DateError> {
    let fail = |reason| DateError {
        phrase: phrase.to_owned(),
        kind,
        reason,
    };
    let moment = read(phrase.trim(), now, tz).map_err(fail)?;
    let resolved = match (moment, kind) {
        (Moment::Instant(instant), DateKind::Date) => {
            Resolved::Date(instant.to_zoned(tz.clone()).date())
        }
        (Moment::Instant(instant), DateKind::DateTime) => {
            Resolved::DateTime(instant.to_zoned(tz.clone()))
        }
        (Moment::Local(date, _), DateKind::Date) => Resolved::Date(date),
        (Moment::Local(date, time), DateKind::DateTime) => {
            let local = date.to_datetime(time.unwrap_or(Time::midnight()));
            let zoned = local
                .to_zoned(tz.clone())
                .map_err(|_| fail(DateErrorReason::OutOfRange))?;
            Resolved::DateTime(zoned)
        }
    };
    Ok(resolved)
}

/// A phrase's meaning before it is shaped into a date or a date-time.
#[derive(Debug, PartialEq)]
enum Moment {
    /// A wall-clock date, with the time the phrase named (else midnight).
    Local(Date, Option<Time>),
    /// An exact instant: `now`, `3 hours ago`, a date-time with an offset.
    Instant(Timestamp),
}

/// Words that make a phrase recurring (the replaced service's parser returned a rule for them).
const RECURRING: &[&str] = &[
    "every", "each", "daily", "weekly", "monthly", "yearly", "hourly", "weekdays", "weekends",
];

fn read(phrase: &str, now: Timestamp, tz: &TimeZone) -> Result<Moment, DateErrorReason> {
    if let Some(moment) = read_iso(phrase) {
        return Ok(moment);
    }
    let lower = phrase.to_lowercase();
    let mut words: Vec<&str> = lower.split_whitespace().collect();
    if words.iter().any(|word| RECURRING.contains(word)) {
        return Err(DateErrorReason::Recurring);
    }
    let time = take_time(&mut words)?;
    let today = now.to_zoned(tz.clone()).date();
    let moment = match words.as_slice() {
        // A time alone is today at that time.
        [] if time.is_some() => Moment::Local(today, None),
        ["now"] => Moment::Instant(now),
        ["today"] => Moment::Local(today, None),
        ["yesterday"] => Moment::Local(shift(today, Unit::Day, -1)?, None),
        ["tomorrow"] => Moment::Local(shift(today, Unit::Day, 1)?, None),
        [count, unit, "ago" | "back"] => offset(today, now, count, unit, -1)?,
        ["in", count, unit] | [count, unit, "from", "now"] => offset(today, now, count, unit, 1)?,
        [which, day] => Moment::Local(weekday_date(today, which, day)?, None),
        [day] => match Date::strptime("%Y-%m-%d", day) {
            Ok(date) => Moment::Local(date, None),
            Err(_) => return Err(DateErrorReason::Unrecognised),
        },
        _ => return Err(DateErrorReason::Unrecognised),
    };
    match (moment, time) {
        (Moment::Local(date, _), Some(time)) => Ok(Moment::Local(date, Some(time))),
        // `now 13:30` or `3 hours ago noon` name two times.
        (Moment::Instant(_), Some(_)) => Err(DateErrorReason::Unrecognised),
        (moment, None) => Ok(moment),
    }
}

/// An ISO 8601 / RFC 3339 date or date-time: with an offset it is an instant, without one it
/// is wall-clock time in the configured zone.
fn read_iso(phrase: &str) -> Option<Moment> {
    let starts_with_date = phrase.len() >= 10
        && phrase.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && phrase.as_bytes()[4] == b'-';
    if !starts_with_date {
        return None;
    }
    if let Ok(instant) = phrase.parse::<Timestamp>() {
        return Some(Moment::Instant(instant));
    }
    if phrase.len() == 10 {
        return phrase
            .parse::<Date>()
            .ok()
            .map(|date| Moment::Local(date, None));
    }
    let local = phrase.parse::<jiff::civil::DateTime>().ok()?;
    Some(Moment::Local(local.date(), Some(local.time())))
}

/// Removes a leading or trailing time of day (`13:30`, `13:30:15`, `midnight`, `noon`, with an
/// optional `at` before a trailing one) from `words`.
fn take_time(words: &mut Vec<&str>) -> Result<Option<Time>, DateErrorReason> {
    if let Some(time) = words.last().and_then(|word| time_of_day(word)) {
        words.pop();
        if words.last() == Some(&"at") {
            words.pop();
        }
        return Ok(Some(time?));
    }
    if let Some(time) = words.first().and_then(|word| time_of_day(word)) {
        words.remove(0);
        return Ok(Some(time?));
    }
    Ok(None)
}

/// `Some(Err)` for something shaped like a time that is not one (`25:00`).
fn time_of_day(word: &str) -> Option<Result<Time, DateErrorReason>> {
    match word {
        "midnight" => return Some(Ok(Time::midnight())),
        "noon" => return Some(Ok(Time::constant(12, 0, 0, 0))),
        _ => {}
    }
    let parts: Vec<&str> = word.split(':').collect();
    let shaped = (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|part| (1..=2).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()));
    if !shaped {
        return None;
    }
    let number = |index: usize| parts.get(index).map_or(Ok(0), |part| part.parse::<i8>());
    let time = match (number(0), number(1), number(2)) {
        (Ok(hour), Ok(minute), Ok(second)) => Time::new(hour, minute, second, 0).ok(),
        _ => None,
    };
    Some(time.ok_or(DateErrorReason::Unrecognised))
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

fn unit(word: &str) -> Option<Unit> {
    let unit = match word.strip_suffix('s').unwrap_or(word) {
        "minute" | "min" => Unit::Minute,
        "hour" => Unit::Hour,
        "day" => Unit::Day,
        "week" => Unit::Week,
        "month" => Unit::Month,
        "year" => Unit::Year,
        _ => return None,
    };
    Some(unit)
}

/// `N <unit>` before or after today (days and longer: a local date) or now (hours, minutes:
/// an instant).
fn offset(
    today: Date,
    now: Timestamp,
    count: &str,
    unit_word: &str,
    sign: i64,
) -> Result<Moment, DateErrorReason> {
    let count: i64 = match count {
        "a" | "an" | "one" => 1,
        digits if digits.bytes().all(|b| b.is_ascii_digit()) && digits.len() <= 7 => {
            digits.parse().map_err(|_| DateErrorReason::Unrecognised)?
        }
        _ => return Err(DateErrorReason::Unrecognised),
    };
    let unit = unit(unit_word).ok_or(DateErrorReason::Unrecognised)?;
    let amount = sign * count;
    match unit {
        Unit::Minute | Unit::Hour => {
            let span = match unit {
                Unit::Minute => Span::new().try_minutes(amount),
                _ => Span::new().try_hours(amount),
            };
            let span = span.map_err(|_| DateErrorReason::OutOfRange)?;
            let instant = now
                .checked_add(span)
                .map_err(|_| DateErrorReason::OutOfRange)?;
            Ok(Moment::Instant(instant))
        }
        _ => Ok(Moment::Local(shift(today, unit, amount)?, None)),
    }
}

/// `date` moved by `amount` calendar units; months and years clamp to the month's last day.
fn shift(date: Date, unit: Unit, amount: i64) -> Result<Date, DateErrorReason> {
    let span = match unit {
        Unit::Day => Span::new().try_days(amount),
        Unit::Week => Span::new().try_weeks(amount),
        Unit::Month => Span::new().try_months(amount),
        Unit::Year => Span::new().try_years(amount),
        Unit::Minute | Unit::Hour => Ok(Span::new()),
    };
    let span = span.map_err(|_| DateErrorReason::OutOfRange)?;
    date.checked_add(span)
        .map_err(|_| DateErrorReason::OutOfRange)
}

/// `last <day>`: the latest such day strictly before today; `next <day>`: the earliest strictly
/// after; `this <day>`: that day of the current week, Monday to Sunday.
fn weekday_date(today: Date, which: &str, day: &str) -> Result<Date, DateErrorReason> {
    let target = weekday(day).ok_or(DateErrorReason::Unrecognised)?;
    let from_today = target.to_monday_zero_offset() - today.weekday().to_monday_zero_offset();
    let days = match which {
        "last" => -nonzero_week_offset(-from_today),
        "next" => nonzero_week_offset(from_today),
        "this" => from_today,
        _ => return Err(DateErrorReason::Unrecognised),
    };
    shift(today, Unit::Day, i64::from(days))
}

/// `days` brought into 1..=7: a weekday's own day counts as a week away.
fn nonzero_week_offset(days: i8) -> i8 {
    match days.rem_euclid(7) {
        0 => 7,
        days => days,
    }
}

fn weekday(word: &str) -> Option<Weekday> {
    let day = match word {
        "monday" | "mon" => Weekday::Monday,
        "tuesday" | "tue" | "tues" => Weekday::Tuesday,
        "wednesday" | "wed" => Weekday::Wednesday,
        "thursday" | "thu" | "thurs" => Weekday::Thursday,
        "friday" | "fri" => Weekday::Friday,
        "saturday" | "sat" => Weekday::Saturday,
        "sunday" | "sun" => Weekday::Sunday,
        _ => return None,
    };
    Some(day)
}

/// One setting `resolve_dates` replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSetting {
    /// The settings key.
    pub setting: String,
    /// What the client sent.
    pub phrase: String,
    /// What the settings now hold.
    pub value: Resolved,
}

/// A date setting whose phrase could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {error}")]
pub struct DateSettingError {
    pub setting: String,
    pub error: DateError,
}

/// Resolves, in place, every string setting whose top-level property in `schema` has
/// `"format": "date"` or `"format": "date-time"`, and returns those whose text changed (an
/// ISO date given for a date setting is already resolved and is not listed).
///
/// Runs before schema validation, which may check the formats strictly.
pub fn resolve_dates(
    schema: &Value,
    settings: &mut Value,
    now: Timestamp,
    tz: &TimeZone,
) -> Result<Vec<ResolvedSetting>, DateSettingError> {
    let (Some(Value::Object(properties)), Value::Object(fields)) =
        (schema.get("properties"), settings)
    else {
        return Ok(Vec::new());
    };
    let mut resolved = Vec::new();
    for (name, property) in properties {
        let kind = match property.get("format").and_then(Value::as_str) {
            Some("date") => DateKind::Date,
            Some("date-time") => DateKind::DateTime,
            _ => continue,
        };
        let Some(Value::String(phrase)) = fields.get_mut(name) else {
            continue;
        };
        let value = resolve(phrase, kind, now, tz).map_err(|error| DateSettingError {
            setting: name.clone(),
            error,
        })?;
        let text = value.to_string();
        if text != *phrase {
            resolved.push(ResolvedSetting {
                setting: name.clone(),
                phrase: std::mem::replace(phrase, text),
                value,
            });
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).expect("zone in the bundled database")
    }

    fn at(instant: &str) -> Timestamp {
        instant.parse().expect("test instant")
    }

    /// (now, zone, phrase, kind, expected text).
    #[rustfmt::skip]
    const TABLE: &[(&str, &str, &str, DateKind, &str)] = {
        use DateKind::{Date as D, DateTime as T};
        // Monday 2026-03-30, the day after Berlin moved to summer time (02:00 → 03:00).
        const MON: &str = "2026-03-30T10:15:00+02:00";
        const BER: &str = "Europe/Berlin";
        // Monday 2026-10-26, the day after Berlin went back (03:00 → 02:00).
        const AUTUMN: &str = "2026-10-26T09:00:00+01:00";
        // Sunday 2026-03-08, New York's spring change day (02:00 → 03:00).
        const NY_DAY: &str = "2026-03-08T12:00:00-04:00";
        const NY: &str = "America/New_York";
        &[
            (MON, BER, "today", D, "2026-03-30"),
            (MON, BER, "today", T, "2026-03-30T00:00:00+02:00"),
            (MON, BER, "  Today  ", D, "2026-03-30"),
            (MON, BER, "TOMORROW", D, "2026-03-31"),
            (MON, BER, "now", T, "2026-03-30T10:15:00+02:00"),
            (MON, BER, "now", D, "2026-03-30"),
            // Midnight on the change day is still winter time.
            (MON, BER, "yesterday", T, "2026-03-29T00:00:00+01:00"),
            (MON, BER, "yesterday 00:00", T, "2026-03-29T00:00:00+01:00"),
            (MON, BER, "00:00 yesterday", T, "2026-03-29T00:00:00+01:00"),
            (MON, BER, "yesterday midnight", T, "2026-03-29T00:00:00+01:00"),
            // Wall-clock time is kept across the change.
            (MON, BER, "yesterday 13:30", T, "2026-03-29T13:30:00+02:00"),
            (MON, BER, "yesterday at noon", T, "2026-03-29T12:00:00+02:00"),
            // 02:30 does not exist that day: the first valid instant after the gap.
            (MON, BER, "yesterday 02:30", T, "2026-03-29T03:30:00+02:00"),
            (MON, BER, "today 13:30", T, "2026-03-30T13:30:00+02:00"),
            (MON, BER, "13:30", T, "2026-03-30T13:30:00+02:00"),
            (MON, BER, "2 days ago noon", T, "2026-03-28T12:00:00+01:00"),
            (MON, BER, "4 days back", D, "2026-03-26"),
            (MON, BER, "4 Days Back", T, "2026-03-26T00:00:00+01:00"),
            (MON, BER, "2 weeks back", D, "2026-03-16"),
            (MON, BER, "a day ago", D, "2026-03-29"),
            (MON, BER, "1 week ago", D, "2026-03-23"),
            (MON, BER, "in 3 days", D, "2026-04-02"),
            (MON, BER, "3 days from now", D, "2026-04-02"),
            (MON, BER, "3 hours ago", T, "2026-03-30T07:15:00+02:00"),
            (MON, BER, "90 minutes ago", T, "2026-03-30T08:45:00+02:00"),
            // On a Monday, `last monday` is a week ago and `next monday` a week ahead.
            (MON, BER, "last monday", D, "2026-03-23"),
            (MON, BER, "LAST MONDAY", D, "2026-03-23"),
            (MON, BER, "next monday", D, "2026-04-06"),
            (MON, BER, "this monday", D, "2026-03-30"),
            (MON, BER, "last sunday", D, "2026-03-29"),
            (MON, BER, "last friday 00:00", T, "2026-03-27T00:00:00+01:00"),
            (MON, BER, "next friday", D, "2026-04-03"),
            (MON, BER, "this sunday", D, "2026-04-05"),
            (MON, BER, "last tue", D, "2026-03-24"),
            // The local date, not the UTC one: 23:30 UTC is already tomorrow in Berlin.
            ("2026-03-30T23:30:00Z", BER, "today", D, "2026-03-31"),
            ("2026-03-30T23:30:00Z", "UTC", "today", D, "2026-03-30"),
            ("2026-03-30T23:30:00Z", "UTC", "today", T, "2026-03-30T00:00:00+00:00"),
            // Month arithmetic clamps to the month's last day.
            ("2026-03-31T12:00:00Z", "UTC", "1 month back", D, "2026-02-28"),
            ("2024-03-31T12:00:00Z", "UTC", "1 month ago", D, "2024-02-29"),
            ("2026-01-31T12:00:00Z", "UTC", "in 1 month", D, "2026-02-28"),
            ("2028-01-31T12:00:00Z", "UTC", "in 1 month", D, "2028-02-29"),
            ("2026-05-31T12:00:00Z", "UTC", "3 months ago", D, "2026-02-28"),
            ("2024-02-29T12:00:00Z", "UTC", "1 year ago", D, "2023-02-28"),
            ("2028-02-29T12:00:00Z", "UTC", "4 years ago", D, "2024-02-29"),
            ("2024-03-01T12:00:00Z", "UTC", "yesterday", D, "2024-02-29"),
            // Berlin's autumn change.
            (AUTUMN, BER, "yesterday", T, "2026-10-25T00:00:00+02:00"),
            // 02:30 happens twice: the earlier one.
            (AUTUMN, BER, "yesterday 02:30", T, "2026-10-25T02:30:00+02:00"),
            (AUTUMN, BER, "yesterday noon", T, "2026-10-25T12:00:00+01:00"),
            (AUTUMN, BER, "today", T, "2026-10-26T00:00:00+01:00"),
            (AUTUMN, BER, "1 week ago", T, "2026-10-19T00:00:00+02:00"),
            // New York's spring change.
            (NY_DAY, NY, "today", T, "2026-03-08T00:00:00-05:00"),
            (NY_DAY, NY, "tomorrow", T, "2026-03-09T00:00:00-04:00"),
            (NY_DAY, NY, "now", T, "2026-03-08T12:00:00-04:00"),
            (NY_DAY, NY, "yesterday 23:59", T, "2026-03-07T23:59:00-05:00"),
            (NY_DAY, NY, "last sunday", D, "2026-03-01"),
            // Havana moves from 00:00 to 01:00: that day has no midnight.
            (NY_DAY, "America/Havana", "today", T, "2026-03-08T01:00:00-04:00"),
            // ISO dates and date-times.
            (MON, BER, "2017-10-01", D, "2017-10-01"),
            (MON, BER, "2017-10-01", T, "2017-10-01T00:00:00+02:00"),
            (MON, BER, "2017-10-01 13:30", T, "2017-10-01T13:30:00+02:00"),
            (MON, BER, "2017-10-01 noon", T, "2017-10-01T12:00:00+02:00"),
            (MON, BER, "2017-10-01T12:00:00", T, "2017-10-01T12:00:00+02:00"),
            (MON, BER, "2017-10-01T12:00:00Z", T, "2017-10-01T14:00:00+02:00"),
            (MON, BER, "2017-10-01t12:00:00z", T, "2017-10-01T14:00:00+02:00"),
            (MON, "UTC", "2017-10-01T12:00:00+02:00", T, "2017-10-01T10:00:00+00:00"),
            (MON, BER, "2017-10-01T23:30:00Z", D, "2017-10-02"),
            (MON, BER, "2017-10-01T23:30:00", D, "2017-10-01"),
        ]
    };

    #[test]
    fn phrases_resolve_as_the_table_says() {
        let mut failures = Vec::new();
        for &(now, tz, phrase, kind, expected) in TABLE {
            let got = resolve(phrase, kind, at(now), &zone(tz)).map(|value| value.to_string());
            if got.as_deref() != Ok(expected) {
                failures.push(format!(
                    "{phrase:?} ({kind:?}) at {now} in {tz}: {got:?}, want {expected}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(TABLE.len() >= 30);
    }

    #[test]
    fn garbage_and_recurring_phrases_are_refused_with_what_is_accepted() {
        let now = at("2026-03-30T10:15:00+02:00");
        let unrecognised = [
            "garbage",
            "garbage text",
            "",
            "   ",
            "yesterday tomorrow",
            "now 13:30",
            "3 hours ago noon",
            "last funday",
            "today 25:00",
            "2017-13-01",
            "4 fortnights back",
            "-4 days back",
            "four days back",
        ];
        for phrase in unrecognised {
            let error = resolve(phrase, DateKind::Date, now, &TimeZone::UTC).expect_err(phrase);
            assert_eq!(error.reason, DateErrorReason::Unrecognised, "{phrase:?}");
            let message = error.to_string();
            assert!(
                message.contains("4 days back") || message.contains("days|weeks"),
                "{message}"
            );
            assert!(
                message.starts_with(&format!("cannot read {phrase:?} as a date;")),
                "{message}"
            );
        }
        for phrase in ["daily", "every day", "Every Monday", "weekly"] {
            let error = resolve(phrase, DateKind::DateTime, now, &TimeZone::UTC).expect_err(phrase);
            assert_eq!(error.reason, DateErrorReason::Recurring, "{phrase:?}");
            assert!(error.to_string().contains("recurring"), "{error}");
        }
        let error = resolve("9999999 years ago", DateKind::Date, now, &TimeZone::UTC)
            .expect_err("out of range");
        assert_eq!(error.reason, DateErrorReason::OutOfRange);
    }

    #[test]
    fn resolved_values_serialise_as_their_text() {
        let now = at("2026-03-30T10:15:00+02:00");
        let berlin = zone("Europe/Berlin");
        let date = resolve("yesterday", DateKind::Date, now, &berlin).expect("date");
        let time = resolve("yesterday", DateKind::DateTime, now, &berlin).expect("date-time");
        assert_eq!(
            serde_json::to_value([date, time]).expect("serialise"),
            json!(["2026-03-29", "2026-03-29T00:00:00+01:00"])
        );
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "start_date": {"type": "string", "format": "date"},
                "end_date": {"type": "string", "format": "date"},
                "since": {"type": "string", "format": "date-time"},
                "note": {"type": "string"},
                "nested": {"type": "object", "properties": {"day": {"type": "string", "format": "date"}}}
            }
        })
    }

    #[test]
    fn date_settings_are_replaced_and_listed() {
        let now = at("2026-11-29T08:00:00Z");
        let mut settings = json!({
            "start_date": "4 days back",
            "end_date": "2026-11-28",
            "since": "yesterday 00:00",
            "note": "yesterday",
            "nested": {"day": "yesterday"},
        });
        let resolved =
            resolve_dates(&schema(), &mut settings, now, &TimeZone::UTC).expect("resolves");
        assert_eq!(
            settings,
            json!({
                "start_date": "2026-11-25",
                "end_date": "2026-11-28",
                "since": "2026-11-28T00:00:00+00:00",
                "note": "yesterday",
                "nested": {"day": "yesterday"},
            })
        );
        let listed: Vec<(&str, &str, String)> = resolved
            .iter()
            .map(|entry| {
                (
                    entry.setting.as_str(),
                    entry.phrase.as_str(),
                    entry.value.to_string(),
                )
            })
            .collect();
        // An ISO date is already resolved and is not listed.
        assert_eq!(
            listed,
            [
                (
                    "since",
                    "yesterday 00:00",
                    "2026-11-28T00:00:00+00:00".to_owned()
                ),
                ("start_date", "4 days back", "2026-11-25".to_owned()),
            ]
        );
    }

    #[test]
    fn a_date_setting_that_cannot_be_read_is_named() {
        let now = at("2026-11-29T08:00:00Z");
        let mut settings = json!({"start_date": "garbage", "since": 12});
        let error =
            resolve_dates(&schema(), &mut settings, now, &TimeZone::UTC).expect_err("garbage");
        assert_eq!(error.setting, "start_date");
        assert!(
            error
                .to_string()
                .starts_with("start_date: cannot read \"garbage\" as a date;"),
            "{error}"
        );
        // Values that are not strings are left to schema validation.
        let mut settings = json!({"since": 12, "start_date": null});
        let resolved = resolve_dates(&schema(), &mut settings, now, &TimeZone::UTC).expect("ok");
        assert!(resolved.is_empty());
        assert_eq!(settings, json!({"since": 12, "start_date": null}));
    }

    #[test]
    fn settings_without_a_schema_object_are_left_alone() {
        let now = at("2026-11-29T08:00:00Z");
        let mut settings = json!({"start_date": "garbage"});
        let resolved = resolve_dates(
            &json!({"type": "object"}),
            &mut settings,
            now,
            &TimeZone::UTC,
        )
        .expect("no date properties");
        assert!(resolved.is_empty());
        let mut not_an_object = json!("4 days back");
        assert!(
            resolve_dates(&schema(), &mut not_an_object, now, &TimeZone::UTC)
                .expect("not an object")
                .is_empty()
        );
    }
}
