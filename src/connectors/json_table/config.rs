//! Settings of the `json-table` connector, their JSON Schema, and the plan checked from them.

use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use crate::connectors::Error;
use crate::connectors::date_range::{DateRange, date_schema};
use crate::connectors::form_login::{LoginSettings, login_schema};
use crate::connectors::http::urls::{parse_http_url, set_query_param};

/// Rows asked for per request when `page_size` is not given.
pub const DEFAULT_PAGE_SIZE: u64 = 1_000;

/// Largest accepted `page_size`.
pub const MAX_PAGE_SIZE: u64 = 100_000;

/// Query parameter of the first row, when the URL has no `{start}` placeholder.
pub const DEFAULT_START_PARAM: &str = "iDisplayStart";

/// Query parameter of the page size, when the URL has no `{length}` placeholder.
pub const DEFAULT_LENGTH_PARAM: &str = "iDisplayLength";

/// Settings of one `json-table` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonTableSettings {
    pub login: LoginSettings,
    /// Endpoint URL; `{from}`, `{to}`, `{start}`, `{length}` are filled in.
    pub url: String,
    /// Record field names for the positions of each `aaData` row.
    pub columns: Vec<String>,
    #[serde(default = "default_page_size")]
    pub page_size: u64,
    #[serde(default)]
    pub skip_rows: Vec<SkipRule>,
    #[serde(default)]
    pub start_date: Option<String>,
    #[serde(default)]
    pub end_date: Option<String>,
    #[serde(default = "default_start_param")]
    pub start_param: String,
    #[serde(default = "default_length_param")]
    pub length_param: String,
}

fn default_page_size() -> u64 {
    DEFAULT_PAGE_SIZE
}

fn default_start_param() -> String {
    DEFAULT_START_PARAM.to_owned()
}

fn default_length_param() -> String {
    DEFAULT_LENGTH_PARAM.to_owned()
}

/// Rows whose `column` holds exactly `equals` (as text) are dropped, such as a `Total` row.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipRule {
    pub column: String,
    pub equals: String,
}

/// Settings checked for one call.
#[derive(Debug)]
pub struct Plan {
    pub settings: JsonTableSettings,
    /// The URL with the dates filled in; `{start}`/`{length}` remain.
    pub template: String,
    /// Positions of the skip rules' columns, with the text they drop.
    pub skips: Vec<(usize, String)>,
}

impl Plan {
    /// Parses and checks `settings`; every error names the offending field.
    pub fn new(settings: &Value) -> Result<Self, Error> {
        let settings: JsonTableSettings = serde_json::from_value(settings.clone())
            .map_err(|error| Error::Settings(error.to_string()))?;
        settings.login.check("login")?;
        let template = match (&settings.start_date, &settings.end_date) {
            (Some(start), Some(end)) => DateRange::parse(start, end)?.fill(&settings.url),
            (None, None) if settings.url.contains("{from}") || settings.url.contains("{to}") => {
                return Err(Error::Settings(
                    "url: {from}/{to} need start_date and end_date".into(),
                ));
            }
            (None, None) => settings.url.clone(),
            _ => {
                return Err(Error::Settings(
                    "start_date and end_date go together".into(),
                ));
            }
        };
        parse_http_url(&fill_page(&template, 0, 1))
            .map_err(|error| Error::Settings(format!("url: {error}")))?;
        if settings.columns.is_empty() {
            return Err(Error::Settings("columns: name at least one column".into()));
        }
        for (index, name) in settings.columns.iter().enumerate() {
            if settings.columns[..index].contains(name) {
                return Err(Error::Settings(format!("columns: {name:?} appears twice")));
            }
        }
        if !(1..=MAX_PAGE_SIZE).contains(&settings.page_size) {
            return Err(Error::Settings(format!(
                "page_size: must be from 1 to {MAX_PAGE_SIZE}"
            )));
        }
        for (field, name) in [
            ("start_param", &settings.start_param),
            ("length_param", &settings.length_param),
        ] {
            if name.is_empty() {
                return Err(Error::Settings(format!("{field}: must not be empty")));
            }
        }
        let skips = settings.skip_rules_positions().map_err(Error::Settings)?;
        Ok(Self {
            settings,
            template,
            skips,
        })
    }

    /// The URL of the page starting at row `start`: placeholders filled, or the start and
    /// length query parameters set when the URL has no placeholders for them.
    pub fn page_url(&self, start: u64) -> Result<Url, Error> {
        let size = self.settings.page_size;
        let mut url = parse_http_url(&fill_page(&self.template, start, size))
            .map_err(|error| Error::Settings(format!("url: {error}")))?;
        if !self.template.contains("{start}") {
            set_query_param(&mut url, &self.settings.start_param, &start.to_string());
        }
        if !self.template.contains("{length}") {
            set_query_param(&mut url, &self.settings.length_param, &size.to_string());
        }
        Ok(url)
    }
}

impl JsonTableSettings {
    fn skip_rules_positions(&self) -> Result<Vec<(usize, String)>, String> {
        self.skip_rows
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                self.columns
                    .iter()
                    .position(|name| *name == rule.column)
                    .map(|position| (position, rule.equals.clone()))
                    .ok_or_else(|| {
                        format!(
                            "skip_rows[{index}].column: {:?} is not one of the columns",
                            rule.column
                        )
                    })
            })
            .collect()
    }
}

fn fill_page(template: &str, start: u64, length: u64) -> String {
    template
        .replace("{start}", &start.to_string())
        .replace("{length}", &length.to_string())
}

/// The hand-written JSON Schema of [`JsonTableSettings`].
pub fn settings_schema() -> Value {
    json!({
        "type": "object",
        "title": "DataTables JSON endpoint",
        "additionalProperties": false,
        "required": ["login", "url", "columns"],
        "properties": {
            "login": login_schema(),
            "url": {
                "type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                "description": "Endpoint answering `{\"aaData\": [[…], …], \"iTotalDisplayRecords\": n}`. `{from}`/`{to}` become start_date/end_date; `{start}`/`{length}` the first row and page size (else the start_param/length_param query parameters are set).",
                "examples": ["https://ads.example.com/routePage.php?date_from={from}&date_to={to}"]
            },
            "columns": {
                "type": "array", "minItems": 1, "uniqueItems": true,
                "items": {"type": "string", "minLength": 1},
                "description": "Record field names of the row positions; every row must have exactly this many cells.",
                "examples": [["source_date", "channel", "country"]]
            },
            "page_size": {
                "type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE,
                "description": "Rows asked for per request; a shorter page, or reaching iTotalDisplayRecords, ends the collection."
            },
            "skip_rows": {
                "type": "array",
                "items": {
                    "type": "object", "additionalProperties": false,
                    "required": ["column", "equals"],
                    "properties": {
                        "column": {"type": "string", "minLength": 1},
                        "equals": {"type": "string"}
                    }
                },
                "description": "Rows dropped when a column's value (as text) equals the given one.",
                "examples": [[{"column": "source_date", "equals": "Total"}]]
            },
            "start_date": date_schema("Fills `{from}` in the URL (with end_date)."),
            "end_date": date_schema("Fills `{to}` in the URL (with start_date)."),
            "start_param": {"type": "string", "minLength": 1, "default": DEFAULT_START_PARAM, "description": "Query parameter of the first row, when the URL has no `{start}`."},
            "length_param": {"type": "string", "minLength": 1, "default": DEFAULT_LENGTH_PARAM, "description": "Query parameter of the page size, when the URL has no `{length}`."}
        }
    })
}
