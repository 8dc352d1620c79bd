//! `--set key=value` pairs into a settings object: dotted keys nest (`auth.type=bearer`), and a
//! value that parses as JSON is taken as JSON (`max_pages=3`, `headers={"a":"b"}`), else as text.

use serde_json::{Map, Value};

/// Builds a settings object from `key=value` pairs.
pub fn from_pairs(pairs: &[String]) -> Result<Value, String> {
    let mut root = Map::new();
    for pair in pairs {
        let (key, raw) = pair
            .split_once('=')
            .ok_or_else(|| format!("--set {pair:?} is not key=value"))?;
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        let path: Vec<&str> = key.split('.').collect();
        if path.iter().any(|part| part.is_empty()) {
            return Err(format!("--set {pair:?} has an empty key part"));
        }
        insert(&mut root, &path, value)
            .map_err(|conflict| format!("--set {pair:?}: {conflict}"))?;
    }
    Ok(Value::Object(root))
}

fn insert(map: &mut Map<String, Value>, path: &[&str], value: Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(());
    };
    if rest.is_empty() {
        map.insert((*first).to_owned(), value);
        return Ok(());
    }
    let child = map
        .entry((*first).to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    match child {
        Value::Object(child) => insert(child, rest, value),
        _ => Err(format!("{first} is already set to a non-object value")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nests_dotted_keys_and_parses_json_values() {
        let settings = from_pairs(&[
            "url=http://127.0.0.1:1/x".into(),
            "auth.type=bearer".into(),
            "auth.token=abc".into(),
            "max_pages=3".into(),
            "headers={\"a\":\"b\"}".into(),
        ])
        .expect("valid");
        assert_eq!(
            settings,
            json!({"url": "http://127.0.0.1:1/x", "auth": {"type": "bearer", "token": "abc"}, "max_pages": 3, "headers": {"a": "b"}})
        );
    }

    #[test]
    fn rejects_malformed_pairs() {
        assert!(from_pairs(&["novalue".into()]).is_err());
        assert!(from_pairs(&["a..b=1".into()]).is_err());
        assert!(from_pairs(&["a=1".into(), "a.b=2".into()]).is_err());
    }
}
