//! Form login for sites without an API: `POST` a login form, keep the session cookie the
//! answer sets, and send it back on later requests. Shared by the `web-report` and
//! `json-table` connectors.
//!
//! Invariant: session cookies live in memory for one `collect_page` call only (never in a
//! checkpoint, an error or a log), are sent only to the login URL's host, and the password
//! only ever travels in the login form's body.

use std::collections::BTreeMap;
use std::fmt;

use reqwest::Method;
use reqwest::header::{COOKIE, HeaderMap, HeaderValue, LOCATION, SET_COOKIE};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::http::urls::parse_http_url;
use super::{ConnectorContext, Error};
use crate::net::{CappedResponse, Retryability};

/// Redirect hops a session request follows at most, whatever the client configuration says.
const MAX_SESSION_REDIRECTS: usize = 10;

/// How to log in. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSettings {
    /// Where the form is posted (http or https).
    pub url: String,
    pub username: String,
    pub password: String,
    /// Form field carrying the user name.
    #[serde(default = "default_username_field")]
    pub username_field: String,
    /// Form field carrying the password.
    #[serde(default = "default_password_field")]
    pub password_field: String,
    /// Further form fields sent as they are, such as a submit button (`{"Submit": "Login"}`).
    #[serde(default)]
    pub extra_fields: BTreeMap<String, String>,
    /// The cookie the login answer must set; without it any cookie will do.
    #[serde(default)]
    pub success_cookie: Option<String>,
}

fn default_username_field() -> String {
    "username".to_owned()
}

fn default_password_field() -> String {
    "password".to_owned()
}

impl fmt::Debug for LoginSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginSettings")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"********")
            .field("username_field", &self.username_field)
            .field("password_field", &self.password_field)
            .field("extra_fields", &self.extra_fields)
            .field("success_cookie", &self.success_cookie)
            .finish()
    }
}

impl LoginSettings {
    /// The login URL, checked; errors name the field under `prefix` (`"login"`).
    pub fn login_url(&self, prefix: &str) -> Result<Url, Error> {
        parse_http_url(&self.url).map_err(|error| Error::Settings(format!("{prefix}.url: {error}")))
    }

    /// Checks what the schema cannot: the URL, non-empty field names, a cookie name.
    pub fn check(&self, prefix: &str) -> Result<(), Error> {
        self.login_url(prefix)?;
        for (field, name) in [
            ("username_field", &self.username_field),
            ("password_field", &self.password_field),
        ] {
            if name.is_empty() {
                return Err(Error::Settings(format!(
                    "{prefix}.{field}: must not be empty"
                )));
            }
        }
        if self.success_cookie.as_deref().is_some_and(str::is_empty) {
            return Err(Error::Settings(format!(
                "{prefix}.success_cookie: must not be empty"
            )));
        }
        Ok(())
    }
}

/// The origin of `login.url` in a connector's settings: the upstream its breaker protects.
pub fn login_origin(settings: &Value) -> Option<String> {
    super::origin_of(settings.get("login")?.get("url")?.as_str()?)
}

/// The JSON Schema of [`LoginSettings`]; `password` is `writeOnly` so it is redacted when shown.
pub fn login_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["url", "username", "password"],
        "description": "Form login: the fields are POSTed as `application/x-www-form-urlencoded` without following redirects; the answer must set the session cookie.",
        "properties": {
            "url": {
                "type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                "description": "Where the login form is posted.",
                "examples": ["https://reports.example.com/login.php"]
            },
            "username": {"type": "string", "description": "User name, sent in `username_field`."},
            "password": {"type": "string", "writeOnly": true, "description": "Password, sent in `password_field`. Never shown again."},
            "username_field": {"type": "string", "minLength": 1, "default": "username", "description": "Form field of the user name (e.g. `si_mail`)."},
            "password_field": {"type": "string", "minLength": 1, "default": "password", "description": "Form field of the password (e.g. `si_password`)."},
            "extra_fields": {
                "type": "object", "additionalProperties": {"type": "string"},
                "description": "Further form fields sent as they are. Not redacted: put no secrets here.",
                "examples": [{"Submit": "Login"}]
            },
            "success_cookie": {
                "type": "string", "minLength": 1,
                "description": "The cookie the login answer must set, else the login failed. Default: any cookie.",
                "examples": ["PHPSESSID"]
            }
        }
    })
}

/// A logged-in session: the cookies the site set, sent back to its host.
pub struct Session<'a> {
    ctx: &'a ConnectorContext,
    login_url: Url,
    cookies: CookieJar,
}

impl fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("login_url", &self.login_url.as_str())
            .field("cookies", &self.cookies.names())
            .finish()
    }
}

/// Posts the login form and keeps the cookies of the answer.
///
/// A permanent refusal (401, 403, …) or an answer without the expected cookie is a permanent
/// "login failed"; 429, 5xx and network failures are upstream errors, retried as usual.
pub async fn log_in<'a>(
    ctx: &'a ConnectorContext,
    settings: &LoginSettings,
) -> Result<Session<'a>, Error> {
    let login_url = settings.login_url("login")?;
    let mut form: Vec<(&str, &str)> = vec![
        (&settings.username_field, &settings.username),
        (&settings.password_field, &settings.password),
    ];
    form.extend(
        settings
            .extra_fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    let request = ctx
        .http
        .request(Method::POST, login_url.clone())
        .form(&form)
        .build()
        .map_err(|error| {
            Error::Settings(format!(
                "login: cannot build the form: {}",
                error.without_url()
            ))
        })?;
    let response = ctx.http.execute_without_redirects(request).await?;
    // A redirect is the usual success. A refusal the retry rules call permanent (401, 403,
    // 404, …) is a failed login; 429, 5xx and the like are retried as usual.
    let status = response.status;
    let response = match status {
        300..=399 => response,
        _ => match response.error_for_status() {
            Ok(response) => response,
            Err(error) if error.retryability() == Retryability::Permanent => {
                return Err(login_failed(format!("the login answered {status}")));
            }
            Err(error) => return Err(error.into()),
        },
    };
    let mut cookies = CookieJar::default();
    cookies.absorb(&response.headers);
    let wanted = settings.success_cookie.as_deref();
    let logged_in = match wanted {
        Some(name) => cookies.contains(name),
        None => !cookies.is_empty(),
    };
    if !logged_in {
        let cookie = wanted.map_or("session".to_owned(), |name| format!("{name:?}"));
        crate::job::progress::report("login", "failed");
        return Err(login_failed(format!(
            "the answer set no {cookie} cookie (wrong user name or password?)"
        )));
    }
    crate::job::progress::report("login", "ok");
    Ok(Session {
        ctx,
        login_url,
        cookies,
    })
}

fn login_failed(reason: String) -> Error {
    Error::Response(format!("login failed: {reason}"))
}

impl Session<'_> {
    /// GETs `url` with the session cookies, following redirects hop by hop (each one guarded,
    /// cookies only to the login host). A redirect to the login page means the session was
    /// refused; `what` names the request in that error ("the listing").
    pub async fn get(&mut self, url: Url, what: &str) -> Result<CappedResponse, Error> {
        let hops = self
            .ctx
            .http
            .config()
            .max_redirects
            .min(MAX_SESSION_REDIRECTS);
        let mut url = url;
        for _ in 0..=hops {
            let same_host = self.is_login_host(&url);
            let mut request = self.ctx.http.request(Method::GET, url.clone());
            if same_host && let Some(cookie) = self.cookies.header_value() {
                request = request.header(COOKIE, cookie);
            }
            let request = request.build().map_err(|error| {
                Error::Response(format!("{what}: invalid request: {}", error.without_url()))
            })?;
            let response = self.ctx.http.execute_without_redirects(request).await?;
            if same_host {
                self.cookies.absorb(&response.headers);
            }
            if !(300..400).contains(&response.status) {
                return Ok(response.error_for_status()?);
            }
            let Some(next) = redirect_target(&url, &response.headers) else {
                return Ok(response.error_for_status()?);
            };
            if self.is_login_page(&next) {
                return Err(Error::Response(format!(
                    "{what} redirected to the login page: the session was not accepted"
                )));
            }
            url = next;
        }
        Err(Error::Response(format!(
            "{what}: stopped after {hops} redirects"
        )))
    }

    fn is_login_host(&self, url: &Url) -> bool {
        url.host() == self.login_url.host()
    }

    fn is_login_page(&self, url: &Url) -> bool {
        self.is_login_host(url) && url.path() == self.login_url.path()
    }
}

/// The absolute http(s) URL a 3xx answer points to, if it names one.
fn redirect_target(base: &Url, headers: &HeaderMap) -> Option<Url> {
    let location = headers.get(LOCATION)?.to_str().ok()?;
    let next = base.join(location).ok()?;
    matches!(next.scheme(), "http" | "https").then_some(next)
}

/// The cookies a site set, by name. Attributes other than a deleting `Max-Age` are ignored:
/// the jar lives for one call and is only sent to the login host.
#[derive(Default)]
struct CookieJar {
    cookies: BTreeMap<String, String>,
}

impl CookieJar {
    /// Takes in every `Set-Cookie` of an answer; `Max-Age=0` (or negative) deletes.
    fn absorb(&mut self, headers: &HeaderMap) {
        for header in headers.get_all(SET_COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            let mut parts = text.split(';');
            let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else {
                continue;
            };
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            let deleted = parts.any(|attribute| {
                attribute.split_once('=').is_some_and(|(key, age)| {
                    key.trim().eq_ignore_ascii_case("max-age")
                        && age.trim().parse::<i64>().is_ok_and(|age| age <= 0)
                })
            });
            if deleted {
                self.cookies.remove(name);
            } else {
                self.cookies
                    .insert(name.to_owned(), value.trim().trim_matches('"').to_owned());
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.cookies.contains_key(name)
    }

    fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    fn names(&self) -> Vec<&str> {
        self.cookies.keys().map(String::as_str).collect()
    }

    /// `name=value; name2=value2`, marked sensitive; `None` when empty or not a valid header.
    fn header_value(&self) -> Option<HeaderValue> {
        if self.cookies.is_empty() {
            return None;
        }
        let text = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut value = HeaderValue::from_str(&text).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_cookies(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(SET_COOKIE, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn the_jar_keeps_names_and_values_and_honours_deletion() {
        let mut jar = CookieJar::default();
        jar.absorb(&set_cookies(&[
            "PHPSESSID=abc123; path=/; HttpOnly",
            "lang=en",
            "=nameless",
            "broken",
        ]));
        assert_eq!(jar.names(), ["PHPSESSID", "lang"]);
        assert_eq!(
            jar.header_value().unwrap().to_str().unwrap(),
            "PHPSESSID=abc123; lang=en"
        );
        assert!(jar.header_value().unwrap().is_sensitive());
        jar.absorb(&set_cookies(&["lang=; Max-Age=0", "PHPSESSID=def"]));
        assert_eq!(
            jar.header_value().unwrap().to_str().unwrap(),
            "PHPSESSID=def"
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let settings: LoginSettings = serde_json::from_value(json!({
            "url": "https://example.com/login.php", "username": "ann", "password": "hunter2"
        }))
        .unwrap();
        let shown = format!("{settings:?}");
        assert!(
            shown.contains("ann") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert_eq!(settings.username_field, "username");
        assert!(settings.check("login").is_ok());
    }

    #[test]
    fn redirect_targets_resolve_against_the_request() {
        let base = Url::parse("https://example.com/a/members.php").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(LOCATION, HeaderValue::from_static("../login.php?next=1"));
        assert_eq!(
            redirect_target(&base, &headers).unwrap().as_str(),
            "https://example.com/login.php?next=1"
        );
        headers.insert(LOCATION, HeaderValue::from_static("ftp://example.com/x"));
        assert_eq!(redirect_target(&base, &headers), None);
    }

    #[tokio::test]
    async fn refusals_fail_the_login_for_good_but_overload_is_retried() {
        use axum::Router;
        use axum::http::StatusCode;
        use axum::routing::post;

        let app = Router::new()
            .route("/forbidden", post(|| async { StatusCode::FORBIDDEN }))
            .route("/busy", post(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route("/limited", post(|| async { StatusCode::TOO_MANY_REQUESTS }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let ctx = crate::connectors::test_context(std::sync::Arc::new(crate::clock::SystemClock));

        for (path, permanent) in [("/forbidden", true), ("/busy", false), ("/limited", false)] {
            let settings: LoginSettings = serde_json::from_value(json!({
                "url": format!("http://{address}{path}"), "username": "ann", "password": "pw"
            }))
            .unwrap();
            let error = log_in(&ctx, &settings).await.unwrap_err();
            assert_eq!(
                error.retryability() == Retryability::Permanent,
                permanent,
                "{path}: {error}"
            );
            assert_eq!(
                error.to_string().contains("login failed"),
                permanent,
                "{path}: {error}"
            );
        }
    }
}
