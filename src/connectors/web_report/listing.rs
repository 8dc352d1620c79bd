//! The report listing: links picked by a CSS selector, keyed by the date their text (or href)
//! names, and the availability check that every date of the range has one.

use std::collections::BTreeMap;

use jiff::civil::Date;
use regex::Regex;
use scraper::{Html, Selector};

use crate::connectors::Error;
use crate::connectors::date_range::parse_date;

/// Report links of a listing page by date; the first link of a date wins.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub links: BTreeMap<Date, String>,
}

impl Listing {
    /// Picks the links of `html`. A link whose capture is not a valid date is an error (the
    /// pattern is wrong); a link without a match is not a report and is skipped.
    ///
    /// Synchronous on purpose: the parsed document is not `Send` and must not live across an
    /// `.await`.
    pub fn parse(html: &str, selector: &Selector, pattern: &Regex) -> Result<Self, Error> {
        let document = Html::parse_document(html);
        let mut links = BTreeMap::new();
        for element in document.select(selector) {
            let Some(href) = element.value().attr("href") else {
                continue;
            };
            let text: String = element.text().collect();
            let captured = [text.as_str(), href]
                .into_iter()
                .find_map(|haystack| pattern.captures(haystack)?.get(1));
            let Some(captured) = captured else { continue };
            let date =
                parse_date("listing.date_pattern", captured.as_str().trim()).map_err(|_| {
                    Error::Response(format!(
                        "the listing's link {:?} gives {:?} for the date, not YYYY-MM-DD",
                        text.trim(),
                        captured.as_str()
                    ))
                })?;
            links.entry(date).or_insert_with(|| href.trim().to_owned());
        }
        Ok(Self { links })
    }

    /// Fails with every date of `wanted` the listing has no link for.
    pub fn check_available(&self, wanted: impl IntoIterator<Item = Date>) -> Result<(), Error> {
        let missing: Vec<String> = wanted
            .into_iter()
            .filter(|date| !self.links.contains_key(date))
            .map(|date| date.to_string())
            .collect();
        if missing.is_empty() {
            crate::job::progress::report("availability", "every date of the range has a report");
            return Ok(());
        }
        crate::job::progress::report("availability", format!("missing: {}", missing.join(", ")));
        Err(Error::Response(format!(
            "no report for {} in the listing",
            missing.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::web_report::config::DEFAULT_DATE_PATTERN;

    fn date(text: &str) -> Date {
        text.parse().unwrap()
    }

    fn listing(html: &str) -> Result<Listing, Error> {
        let selector = Selector::parse("tbody a").unwrap();
        let pattern = Regex::new(DEFAULT_DATE_PATTERN).unwrap();
        Listing::parse(html, &selector, &pattern)
    }

    #[test]
    fn links_are_keyed_by_the_date_in_their_text_or_href() {
        let html = r#"<html><body>
            <a href="logout.php">Logout 2026-01-01</a>
            <table><thead><tr><th><a href="?sort=date">Date</a></th></tr></thead>
            <tbody>
              <tr><td><a href="files/report_2026-11-01.csv.gz">report_2026-11-01.csv.gz</a></td></tr>
              <tr><td><a href="files/r2.csv.gz">Report of <b>2026-11-02</b></a></td></tr>
              <tr><td><a href="files/x_2026-11-03.csv">download</a></td></tr>
              <tr><td><a href="files/again_2026-11-01.csv">2026-11-01</a></td></tr>
              <tr><td><a>no href 2026-11-04</a></td></tr>
            </tbody></table></body></html>"#;
        let listing = listing(html).unwrap();
        let links: Vec<(String, &str)> = listing
            .links
            .iter()
            .map(|(date, href)| (date.to_string(), href.as_str()))
            .collect();
        assert_eq!(
            links,
            [
                ("2026-11-01".to_owned(), "files/report_2026-11-01.csv.gz"),
                ("2026-11-02".to_owned(), "files/r2.csv.gz"),
                ("2026-11-03".to_owned(), "files/x_2026-11-03.csv"),
            ]
        );
        listing
            .check_available([date("2026-11-01"), date("2026-11-03")])
            .unwrap();
        let error = listing
            .check_available([date("2026-11-01"), date("2026-11-04"), date("2026-11-05")])
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "unexpected response: no report for 2026-11-04, 2026-11-05 in the listing"
        );
    }

    #[test]
    fn a_capture_that_is_no_date_is_an_error() {
        let error = listing(
            r#"<table><tbody><tr><td><a href="f">report_2026-13-45</a></td></tr></tbody></table>"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("2026-13-45"), "{error}");
    }
}
