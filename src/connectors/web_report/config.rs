//! Settings of the `web-report` connector, their JSON Schema, and the plan checked from them.
//!
//! Invariant: the schema and the serde structs accept the same documents; the login password
//! is `writeOnly` (see [`login_schema`]).

use regex::Regex;
use scraper::Selector;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use url::Url;

use crate::connectors::Error;
use crate::connectors::date_range::{DateRange, date_schema};
use crate::connectors::form_login::{LoginSettings, login_schema};
use crate::connectors::http::urls::parse_http_url;

/// Links picked when `listing.link_selector` is not given.
pub const DEFAULT_LINK_SELECTOR: &str = "tbody a";

/// Date pattern used when `listing.date_pattern` is not given.
pub const DEFAULT_DATE_PATTERN: &str = r"(\d{4}-\d{2}-\d{2})";

/// Longest accepted `date_pattern`, in bytes.
const MAX_PATTERN_BYTES: usize = 1_000;

/// Settings of one `web-report` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebReportSettings {
    pub login: LoginSettings,
    pub listing: ListingSettings,
    /// What link hrefs are resolved against; the listing URL when absent.
    #[serde(default)]
    pub download_base: Option<String>,
    pub start_date: String,
    pub end_date: String,
    #[serde(default)]
    pub csv: CsvSettings,
}

/// The page listing one report per date.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListingSettings {
    /// URL with `{from}`/`{to}` placeholders for the range's first and last date.
    pub url: String,
    #[serde(default = "default_link_selector")]
    pub link_selector: String,
    #[serde(default = "default_date_pattern")]
    pub date_pattern: String,
}

fn default_link_selector() -> String {
    DEFAULT_LINK_SELECTOR.to_owned()
}

fn default_date_pattern() -> String {
    DEFAULT_DATE_PATTERN.to_owned()
}

/// How report files are read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSettings {
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    #[serde(default)]
    pub gzip: Gzip,
}

impl Default for CsvSettings {
    fn default() -> Self {
        Self {
            delimiter: default_delimiter(),
            gzip: Gzip::Auto,
        }
    }
}

fn default_delimiter() -> String {
    ",".to_owned()
}

/// Whether report files are gzip-compressed: `"auto"` (by their magic bytes), `true`, `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Gzip {
    #[default]
    Auto,
    Always,
    Never,
}

impl<'de> Deserialize<'de> for Gzip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Bool(true) => Ok(Gzip::Always),
            Value::Bool(false) => Ok(Gzip::Never),
            Value::String(text) if text == "auto" => Ok(Gzip::Auto),
            other => Err(serde::de::Error::custom(format!(
                "gzip: expected \"auto\", true or false, got {other}"
            ))),
        }
    }
}

/// Settings checked and compiled for one call.
#[derive(Debug)]
pub struct Plan {
    pub settings: WebReportSettings,
    pub range: DateRange,
    /// The listing URL with the range filled in.
    pub listing_url: Url,
    pub download_base: Url,
    pub link_selector: Selector,
    pub date_pattern: Regex,
    pub delimiter: u8,
}

impl Plan {
    /// Parses and checks `settings`; every error names the offending field.
    pub fn new(settings: &Value) -> Result<Self, Error> {
        let settings: WebReportSettings = serde_json::from_value(settings.clone())
            .map_err(|error| Error::Settings(error.to_string()))?;
        settings.login.check("login")?;
        let range = DateRange::parse(&settings.start_date, &settings.end_date)?;
        let listing_url = parse_http_url(&range.fill(&settings.listing.url))
            .map_err(|error| Error::Settings(format!("listing.url: {error}")))?;
        let download_base = match &settings.download_base {
            Some(base) => parse_http_url(base)
                .map_err(|error| Error::Settings(format!("download_base: {error}")))?,
            None => listing_url.clone(),
        };
        let link_selector = Selector::parse(&settings.listing.link_selector).map_err(|error| {
            Error::Settings(format!(
                "listing.link_selector: invalid CSS selector: {error}"
            ))
        })?;
        let date_pattern = compile_date_pattern(&settings.listing.date_pattern)?;
        let delimiter = match settings.csv.delimiter.as_bytes() {
            [byte] if byte.is_ascii() && *byte != b'"' && *byte != b'\n' && *byte != b'\r' => *byte,
            _ => {
                return Err(Error::Settings(format!(
                    "csv.delimiter: expected one ASCII character other than a quote or line break, got {:?}",
                    settings.csv.delimiter
                )));
            }
        };
        Ok(Self {
            settings,
            range,
            listing_url,
            download_base,
            link_selector,
            date_pattern,
            delimiter,
        })
    }
}

fn compile_date_pattern(pattern: &str) -> Result<Regex, Error> {
    let field = "listing.date_pattern";
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(Error::Settings(format!(
            "{field}: longer than {MAX_PATTERN_BYTES} bytes"
        )));
    }
    let regex = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|error| Error::Settings(format!("{field}: {error}")))?;
    if regex.captures_len() < 2 {
        return Err(Error::Settings(format!(
            "{field}: needs a capture group holding the date, e.g. {DEFAULT_DATE_PATTERN}"
        )));
    }
    Ok(regex)
}

/// The hand-written JSON Schema of [`WebReportSettings`].
pub fn settings_schema() -> Value {
    json!({
        "type": "object",
        "title": "Web report downloads",
        "additionalProperties": false,
        "required": ["login", "listing", "start_date", "end_date"],
        "properties": {
            "login": login_schema(),
            "listing": {
                "type": "object",
                "additionalProperties": false,
                "required": ["url"],
                "description": "The HTML page listing one report link per date.",
                "properties": {
                    "url": {
                        "type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                        "description": "Listing URL; `{from}` and `{to}` become start_date and end_date (YYYY-MM-DD).",
                        "examples": ["https://reports.example.com/members.php?dFrom={from}&dTo={to}"]
                    },
                    "link_selector": {
                        "type": "string", "minLength": 1, "default": DEFAULT_LINK_SELECTOR,
                        "description": "CSS selector of the report links."
                    },
                    "date_pattern": {
                        "type": "string", "minLength": 1, "maxLength": MAX_PATTERN_BYTES,
                        "default": DEFAULT_DATE_PATTERN,
                        "description": "Regular expression matched on a link's text, then its href; capture group 1 is the report's date (YYYY-MM-DD). Links without a match are ignored."
                    }
                }
            },
            "download_base": {
                "type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                "description": "URL the link hrefs are resolved against. Default: the listing URL. The session cookie goes only to the login URL's host."
            },
            "start_date": date_schema("First report date (inclusive)."),
            "end_date": date_schema("Last report date (inclusive). Every date from start_date to end_date must have a report in the listing."),
            "csv": {
                "type": "object",
                "additionalProperties": false,
                "description": "How report files are read: a header row, then one record per row (values as strings).",
                "properties": {
                    "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "default": ","},
                    "gzip": {
                        "enum": ["auto", true, false], "default": "auto",
                        "description": "Whether files are gzip-compressed; `auto` looks at their first bytes."
                    }
                }
            }
        }
    })
}
