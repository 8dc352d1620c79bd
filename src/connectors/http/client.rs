//! Requests and pagination of the `http` connector: from settings and a checkpoint to one page.
//!
//! Invariant: the checkpoint returned with a page holds exactly what is needed to fetch the
//! next page (never a stored one again), and credentials only go to the origin of `url`.

use std::collections::BTreeMap;

use reqwest::Method;
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::config::{Auth, HttpSettings, Pagination};
use super::urls::{
    append_query, check_http_scheme, next_link_header, parse_http_url, set_page_params,
    set_query_param,
};
use crate::connectors::{
    ConnectorContext, Error, Page, checkpoint_value, json_type, read_checkpoint,
};
use crate::net::{CappedResponse, RESERVED_HEADERS};
use crate::processors::jq::JqFilter;

/// Settings checked and compiled for one call.
#[derive(Debug)]
pub struct Plan {
    settings: HttpSettings,
    url: Url,
    headers: HeaderMap,
    record_path: Option<JqFilter>,
    /// `cursor_path` or `next_path`, whichever the pagination uses.
    next_path: Option<JqFilter>,
}

/// Resume state stored with each page: how many pages were fetched and how to get the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub pages: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u64>,
}

impl Plan {
    /// Parses and checks `settings`; every error names the offending field.
    pub fn new(settings: &Value) -> Result<Self, Error> {
        let settings: HttpSettings = serde_json::from_value(settings.clone())
            .map_err(|error| Error::Settings(error.to_string()))?;
        let url = parse_http_url(&settings.url)
            .map_err(|error| Error::Settings(format!("url: {error}")))?;
        let headers = header_map(&settings.headers)?;
        if let Some(Auth::Header { name, value }) = &settings.auth {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Settings(format!("auth.name: invalid header name {name:?}")))?;
            HeaderValue::from_str(value)
                .map_err(|_| Error::Settings("auth.value: invalid header value".into()))?;
        }
        if settings.max_pages == 0 {
            return Err(Error::Settings("max_pages: must be at least 1".into()));
        }
        let compile = |field: &str, code: &str| {
            JqFilter::compile(code).map_err(|error| Error::Settings(format!("{field}: {error}")))
        };
        let record_path = settings
            .record_path
            .as_deref()
            .map(|code| compile("record_path", code))
            .transpose()?;
        let next_path = match &settings.pagination {
            Pagination::Cursor { cursor_path, param } => {
                non_empty("pagination.param", param)?;
                Some(compile("pagination.cursor_path", cursor_path)?)
            }
            Pagination::NextLink { next_path } => next_path
                .as_deref()
                .map(|code| compile("pagination.next_path", code))
                .transpose()?,
            Pagination::PageNumber {
                param,
                size_param,
                size,
                ..
            } => {
                non_empty("pagination.param", param)?;
                if size_param.as_deref().is_some_and(str::is_empty) {
                    return Err(Error::Settings(
                        "pagination.size_param: must not be empty".into(),
                    ));
                }
                if size_param.is_some() && size.is_none() {
                    return Err(Error::Settings(
                        "pagination.size: required with size_param".into(),
                    ));
                }
                if *size == Some(0) {
                    return Err(Error::Settings(
                        "pagination.size: must be at least 1".into(),
                    ));
                }
                None
            }
            Pagination::None {} => None,
        };
        Ok(Self {
            settings,
            url,
            headers,
            record_path,
            next_path,
        })
    }

    /// Fetches the page after `checkpoint` (`None`: the first page).
    pub async fn collect_page(
        &self,
        ctx: &ConnectorContext,
        checkpoint: Option<&Value>,
    ) -> Result<Page, Error> {
        let checkpoint: Option<Checkpoint> = read_checkpoint(checkpoint)?;
        let Some(url) = self.page_url(checkpoint.as_ref())? else {
            // The previous page was the last one: nothing is fetched again.
            return Ok(Page {
                records: Vec::new(),
                checkpoint: None,
                done: true,
            });
        };
        let pages = checkpoint.as_ref().map_or(0, |c| c.pages) + 1;
        let response = self.fetch(ctx, url.clone()).await?;
        let body: Value = response.json()?;
        let records = self.records(&body).await?;
        let next = self
            .next_state(&url, &response, &body, &records, checkpoint.as_ref())
            .await?;
        let done = next.is_none() || pages >= self.settings.max_pages;
        let mut state = if done {
            Checkpoint::default()
        } else {
            next.unwrap_or_default()
        };
        state.pages = pages;
        Ok(Page {
            records,
            checkpoint: Some(checkpoint_value(&state)?),
            done,
        })
    }

    /// The URL of the page after `checkpoint`, or `None` when the collection already ended.
    fn page_url(&self, checkpoint: Option<&Checkpoint>) -> Result<Option<Url>, Error> {
        let mut first = self.url.clone();
        append_query(
            &mut first,
            self.settings
                .query
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let Some(checkpoint) = checkpoint else {
            if let Pagination::PageNumber {
                param,
                start,
                size_param,
                size,
            } = &self.settings.pagination
            {
                set_page_params(&mut first, param, *start, size_param.as_deref().zip(*size));
            }
            return Ok(Some(first));
        };
        if checkpoint.pages >= self.settings.max_pages {
            return Ok(None);
        }
        Ok(match &self.settings.pagination {
            Pagination::None {} => None,
            Pagination::Cursor { param, .. } => checkpoint.cursor.as_ref().map(|cursor| {
                set_query_param(&mut first, param, cursor);
                first
            }),
            Pagination::NextLink { .. } => checkpoint
                .next
                .as_deref()
                .map(|next| {
                    parse_http_url(next)
                        .map_err(|error| Error::Settings(format!("invalid checkpoint: {error}")))
                })
                .transpose()?,
            Pagination::PageNumber {
                param,
                size_param,
                size,
                ..
            } => checkpoint.page.map(|page| {
                set_page_params(&mut first, param, page, size_param.as_deref().zip(*size));
                first
            }),
        })
    }

    /// Sends one GET through the guarded client; non-2xx statuses become upstream errors.
    async fn fetch(&self, ctx: &ConnectorContext, url: Url) -> Result<CappedResponse, Error> {
        let same_origin = url.origin() == self.url.origin();
        let mut request = ctx
            .http
            .request(Method::GET, url)
            .headers(self.headers.clone());
        if !self.headers.contains_key(ACCEPT) {
            request = request.header(ACCEPT, HeaderValue::from_static("application/json"));
        }
        if same_origin {
            request = match &self.settings.auth {
                Some(Auth::Bearer { token }) => request.bearer_auth(token),
                Some(Auth::Basic { username, password }) => {
                    request.basic_auth(username, Some(password))
                }
                Some(Auth::Header { name, value }) => {
                    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        Error::Settings(format!("auth.name: invalid header name {name:?}"))
                    })?;
                    let mut value = HeaderValue::from_str(value)
                        .map_err(|_| Error::Settings("auth.value: invalid header value".into()))?;
                    value.set_sensitive(true);
                    request.header(name, value)
                }
                None => request,
            };
        }
        let request = request.build().map_err(|error| {
            Error::Upstream(crate::net::UpstreamError::InvalidUrl {
                message: error.without_url().to_string(),
            })
        })?;
        Ok(ctx.http.execute(request).await?.error_for_status()?)
    }

    /// The records of one body: `record_path`'s outputs, else the array's items or the body.
    async fn records(&self, body: &Value) -> Result<Vec<Value>, Error> {
        match &self.record_path {
            Some(filter) => filter
                .run_async(body.clone())
                .await
                .map_err(|error| Error::Response(format!("record_path: {error}"))),
            None => Ok(match body {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            }),
        }
    }

    /// The state for the page after this one, or `None` if this page is the last.
    async fn next_state(
        &self,
        url: &Url,
        response: &CappedResponse,
        body: &Value,
        records: &[Value],
        previous: Option<&Checkpoint>,
    ) -> Result<Option<Checkpoint>, Error> {
        Ok(match &self.settings.pagination {
            Pagination::None {} => None,
            Pagination::Cursor { .. } => {
                let cursor = self.path_text("pagination.cursor_path", body).await?;
                if cursor.is_some() && cursor == previous.and_then(|c| c.cursor.clone()) {
                    return Err(Error::Response(
                        "pagination.cursor_path: the cursor did not advance".into(),
                    ));
                }
                cursor.map(|cursor| Checkpoint {
                    cursor: Some(cursor),
                    ..Checkpoint::default()
                })
            }
            Pagination::NextLink { next_path } => {
                let link = match next_path {
                    Some(_) => self.path_text("pagination.next_path", body).await?,
                    None => next_link_header(&response.headers),
                };
                match link {
                    None => None,
                    Some(link) => {
                        let next = url
                            .join(&link)
                            .map_err(|error| {
                                Error::Response(format!("next link {link:?}: {error}"))
                            })
                            .and_then(|next| {
                                check_http_scheme(&next)
                                    .map(|()| next)
                                    .map_err(Error::Response)
                            })?;
                        if next == *url {
                            return Err(Error::Response(
                                "next link points to the page itself".into(),
                            ));
                        }
                        Some(Checkpoint {
                            next: Some(next.into()),
                            ..Checkpoint::default()
                        })
                    }
                }
            }
            Pagination::PageNumber { start, size, .. } => {
                let short = size.is_some_and(|size| (records.len() as u64) < size);
                if records.is_empty() || short {
                    None
                } else {
                    let page = previous.and_then(|c| c.page).unwrap_or(*start);
                    Some(Checkpoint {
                        page: Some(page.saturating_add(1)),
                        ..Checkpoint::default()
                    })
                }
            }
        })
    }

    /// The first output of the pagination path as text; null, absent, empty or no output is
    /// `None`.
    async fn path_text(&self, field: &str, body: &Value) -> Result<Option<String>, Error> {
        let Some(filter) = &self.next_path else {
            return Ok(None);
        };
        let outputs = filter
            .run_async(body.clone())
            .await
            .map_err(|error| Error::Response(format!("{field}: {error}")))?;
        match outputs.into_iter().next() {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text).filter(|text| !text.is_empty())),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(other) => Err(Error::Response(format!(
                "{field}: expected a string or number, got {}",
                json_type(&other)
            ))),
        }
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        Err(Error::Settings(format!("{field}: must not be empty")))
    } else {
        Ok(())
    }
}

/// The settings' headers, checked: valid names and values, none that frame the request.
fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::Settings(format!("headers: invalid header name {name:?}")))?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) {
            return Err(Error::Settings(format!("headers: {name:?} may not be set")));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| Error::Settings(format!("headers: invalid value for {name:?}")))?;
        map.append(parsed, value);
    }
    Ok(map)
}
