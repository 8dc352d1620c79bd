//! URL helpers of the `http` connector: scheme checks, query parameters and `Link` headers.
//!
//! Invariant: only absolute http(s) URLs come out of [`parse_http_url`].

use reqwest::header::{HeaderMap, LINK};
use url::Url;

/// Parses an absolute http(s) URL.
pub fn parse_http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|error| format!("{raw:?} is not a valid URL: {error}"))?;
    check_http_scheme(&url)?;
    Ok(url)
}

/// Only http and https are fetched.
pub fn check_http_scheme(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!(
            "scheme {other:?} is not allowed, use http or https"
        )),
    }
}

/// Appends `pairs` to the query (leaving the URL untouched, no `?`, when there are none).
pub fn append_query<'a>(url: &mut Url, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    let mut pairs = pairs.peekable();
    if pairs.peek().is_some() {
        url.query_pairs_mut().extend_pairs(pairs);
    }
}

/// Sets query parameter `name` to `value`, replacing any earlier occurrence.
pub fn set_query_param(url: &mut Url, name: &str, value: &str) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
}

/// Sets the page number (and page size) parameters.
pub fn set_page_params(url: &mut Url, param: &str, page: u64, size: Option<(&str, u64)>) {
    set_query_param(url, param, &page.to_string());
    if let Some((size_param, size)) = size {
        set_query_param(url, size_param, &size.to_string());
    }
}

/// The target of the first `rel="next"` link of the `Link` headers (RFC 8288).
pub fn next_link_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let mut rest = value;
            while let Some(open) = rest.find('<') {
                let after = &rest[open + 1..];
                let close = after.find('>')?;
                let target = &after[..close];
                let params_end = after[close..]
                    .find('<')
                    .map_or(after.len(), |at| close + at);
                let params = &after[close + 1..params_end];
                let is_next = params.split(';').any(|param| {
                    let Some((key, value)) = param.split_once('=') else {
                        return false;
                    };
                    key.trim().eq_ignore_ascii_case("rel")
                        && value
                            .trim()
                            .trim_end_matches(',')
                            .trim()
                            .trim_matches('"')
                            .split_ascii_whitespace()
                            .any(|rel| rel.eq_ignore_ascii_case("next"))
                });
                if is_next {
                    return Some(target.to_owned());
                }
                rest = &after[params_end..];
            }
            None
        })
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn links(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(LINK, HeaderValue::from_str(value).expect("header"));
        }
        headers
    }

    #[test]
    fn finds_the_next_link_among_others() {
        let next = |values: &[&str]| next_link_header(&links(values));
        assert_eq!(
            next(&[r#"<https://a.test/?p=2>; rel="next""#]).as_deref(),
            Some("https://a.test/?p=2")
        );
        assert_eq!(
            next(&[r#"<https://a.test/1>; rel="first", </items?p=3>; title="x"; rel="last next""#])
                .as_deref(),
            Some("/items?p=3")
        );
        assert_eq!(
            next(&[
                r#"<https://a.test/1>; rel=prev"#,
                "<https://a.test/3>; rel=NEXT"
            ])
            .as_deref(),
            Some("https://a.test/3")
        );
        assert_eq!(next(&[r#"<https://a.test/1>; rel="prev""#]), None);
        assert_eq!(next(&["garbage"]), None);
    }

    #[test]
    fn query_params_are_replaced_not_duplicated() {
        let mut url = parse_http_url("https://a.test/x?cursor=old&keep=1").expect("url");
        set_query_param(&mut url, "cursor", "new");
        assert_eq!(url.as_str(), "https://a.test/x?keep=1&cursor=new");
        append_query(&mut url, std::iter::empty());
        assert_eq!(url.as_str(), "https://a.test/x?keep=1&cursor=new");
        assert!(parse_http_url("file:///etc/passwd").is_err());
    }
}
