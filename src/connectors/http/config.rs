//! Settings of the `http` connector and their JSON Schema.
//!
//! Invariant: the schema and the serde structs accept exactly the same documents, and every
//! secret (`token`, `password`, `value`) is `writeOnly` so it is redacted when shown.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::processors::jq::MAX_FILTER_BYTES;

/// Pages fetched at most when `max_pages` is not given.
pub const DEFAULT_MAX_PAGES: u64 = 10_000;

/// Highest `max_pages` accepted.
pub const MAX_MAX_PAGES: u64 = 1_000_000;

/// Settings of one `http` source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// First page's URL (http or https).
    pub url: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra query parameters added to the first request's URL.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: Option<Auth>,
    /// jq filter producing the records from a response body.
    #[serde(default)]
    pub record_path: Option<String>,
    #[serde(default)]
    pub pagination: Pagination,
    #[serde(default = "default_max_pages")]
    pub max_pages: u64,
}

fn default_max_pages() -> u64 {
    DEFAULT_MAX_PAGES
}

/// How requests authenticate. `Debug` never shows the secrets.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer { token: String },
    /// `Authorization: Basic base64(username:password)`.
    Basic { username: String, password: String },
    /// A custom header such as `X-Auth-Token: <value>`.
    Header { name: String, value: String },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HIDDEN: &str = "********";
        match self {
            Auth::Bearer { .. } => f.debug_struct("Bearer").field("token", &HIDDEN).finish(),
            Auth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &HIDDEN)
                .finish(),
            Auth::Header { name, .. } => f
                .debug_struct("Header")
                .field("name", name)
                .field("value", &HIDDEN)
                .finish(),
        }
    }
}

/// How the next page is found.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One request, one page. (A struct variant, so serde rejects stray fields.)
    None {},
    /// The body carries an opaque cursor sent back as query parameter `param`.
    Cursor {
        cursor_path: String,
        #[serde(default = "default_cursor_param")]
        param: String,
    },
    /// The body (at `next_path`) or the `Link: <…>; rel="next"` header holds the next URL.
    NextLink {
        #[serde(default)]
        next_path: Option<String>,
    },
    /// Pages are numbered in query parameter `param`, from `start`.
    PageNumber {
        #[serde(default = "default_page_param")]
        param: String,
        #[serde(default = "default_start")]
        start: u64,
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default)]
        size: Option<u64>,
    },
}

impl Default for Pagination {
    fn default() -> Self {
        Pagination::None {}
    }
}

fn default_cursor_param() -> String {
    "cursor".to_owned()
}

fn default_page_param() -> String {
    "page".to_owned()
}

fn default_start() -> u64 {
    1
}

/// The hand-written JSON Schema of [`HttpSettings`].
///
/// Tagged unions list the union of their fields under `properties` (so secrets are found for
/// redaction) and restrict each variant exactly in `oneOf`.
pub fn settings_schema() -> Value {
    let jq = |description: &str| json!({"type": "string", "minLength": 1, "maxLength": MAX_FILTER_BYTES, "description": description});
    let variant = |tag: &str, required: &[&str], optional: &[&str]| {
        let mut properties = serde_json::Map::new();
        properties.insert("type".into(), json!({"const": tag}));
        for field in required.iter().chain(optional) {
            properties.insert((*field).into(), json!({}));
        }
        let mut all_required = vec!["type"];
        all_required.extend_from_slice(required);
        json!({"properties": properties, "required": all_required, "additionalProperties": false})
    };
    json!({
        "type": "object",
        "title": "HTTP JSON API",
        "additionalProperties": false,
        "required": ["url"],
        "properties": {
            "url": {
                "type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                "description": "URL of the first page (http or https).",
                "examples": ["https://api.example.com/items"]
            },
            "headers": {
                "type": "object", "additionalProperties": {"type": "string"},
                "description": "Extra request headers. Not redacted: put credentials in `auth`.",
                "examples": [{"X-Api-Version": "2"}]
            },
            "query": {
                "type": "object", "additionalProperties": {"type": "string"},
                "description": "Extra query parameters for the first request (next links are followed as given). Not redacted.",
                "examples": [{"tag": "rust"}]
            },
            "auth": {
                "type": "object",
                "description": "How requests authenticate: `bearer` (token), `basic` (username, password) or `header` (name, value). Sent only to the origin of `url`.",
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["bearer", "basic", "header"]},
                    "token": {"type": "string", "writeOnly": true, "description": "Bearer token."},
                    "username": {"type": "string", "description": "Basic auth user name."},
                    "password": {"type": "string", "writeOnly": true, "description": "Basic auth password."},
                    "name": {"type": "string", "minLength": 1, "description": "Header name, e.g. `X-Auth-Token`."},
                    "value": {"type": "string", "writeOnly": true, "description": "Header value."}
                },
                "oneOf": [
                    variant("bearer", &["token"], &[]),
                    variant("basic", &["username", "password"], &[]),
                    variant("header", &["name", "value"], &[])
                ]
            },
            "record_path": jq("jq filter producing the records from a response body, e.g. `.items[]`. Default: each element if the body is an array, else the body itself."),
            "pagination": {
                "type": "object",
                "description": "How the next page is found (default `none`).",
                "default": {"type": "none"},
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["none", "cursor", "next_link", "page_number"]},
                    "cursor_path": jq("cursor: jq path of the next cursor in the body; null, absent or \"\" ends the collection."),
                    "param": {"type": "string", "minLength": 1, "description": "cursor / page_number: query parameter carrying the cursor (default `cursor`) or page number (default `page`)."},
                    "next_path": jq("next_link: jq path of the next page's URL (absolute or relative) in the body; without it the `Link: <…>; rel=\"next\"` header is used."),
                    "start": {"type": "integer", "minimum": 0, "default": 1, "description": "page_number: number of the first page."},
                    "size_param": {"type": "string", "minLength": 1, "description": "page_number: query parameter carrying the page size (requires `size`)."},
                    "size": {"type": "integer", "minimum": 1, "description": "page_number: page size; a page with fewer records is the last."}
                },
                "oneOf": [
                    variant("none", &[], &[]),
                    variant("cursor", &["cursor_path"], &["param"]),
                    variant("next_link", &[], &["next_path"]),
                    variant("page_number", &[], &["param", "start", "size_param", "size"])
                ]
            },
            "max_pages": {
                "type": "integer", "minimum": 1, "maximum": MAX_MAX_PAGES, "default": DEFAULT_MAX_PAGES,
                "description": "Safety cap: the collection ends after this many pages."
            }
        }
    })
}
