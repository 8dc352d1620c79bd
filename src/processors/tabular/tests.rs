use serde_json::{Value, json};

use crate::processors::{Error, Lookups, ProcessorChain, ProcessorSpec, processors_schema};

fn chain(specs: Value) -> ProcessorChain {
    let specs: Vec<ProcessorSpec> = serde_json::from_value(specs).expect("specs parse");
    ProcessorChain::compile(&specs).expect("specs compile")
}

fn compile_error(spec: Value) -> String {
    let specs: Vec<ProcessorSpec> = serde_json::from_value(json!([spec])).expect("specs parse");
    match ProcessorChain::compile(&specs) {
        Err(Error::Compile(message)) => message,
        other => panic!("expected a compile error, got {other:?}"),
    }
}

fn run(specs: Value, rows: Vec<Value>) -> Vec<Value> {
    chain(specs).apply(rows, &Lookups::new()).expect("applies")
}

fn run_error(specs: Value, rows: Vec<Value>) -> String {
    match chain(specs).apply(rows, &Lookups::new()) {
        Err(Error::Run(message)) => message,
        other => panic!("expected a run error, got {other:?}"),
    }
}

fn close(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|n| (n - expected).abs() < 1e-9)
}

#[test]
fn specs_round_trip_through_json() {
    let specs = json!([
        {"type": "rename", "columns": {"Searches": "impressions"}},
        {"type": "set", "values": {"revenue_type": "search"}},
        {"type": "multiply", "column": "gross", "by": 0.95},
        {"type": "multiply", "column": "gross", "by_column": "rate", "divide": true},
        {"type": "map", "column": "country", "values": {"UK": "GB"}, "lowercase": true},
        {"type": "map", "column": "currency", "table": "currency", "default": "1", "into": "rate"},
        {"type": "extract", "column": "channel", "pattern": "^(\\d+)$", "format": "$1", "fallback": "x"},
        {"type": "drop_rows", "where": {"column": "channel", "in": ["A", "B"]}},
        {"type": "group_by", "keys": ["date"], "sum": ["gross"], "last": ["x"], "count_as": "n"}
    ]);
    let parsed: Vec<ProcessorSpec> = serde_json::from_value(specs.clone()).expect("parse");
    assert_eq!(serde_json::to_value(&parsed).expect("serialize"), specs);
    for bad in [
        json!({"type": "rename", "columns": {"a": "b"}, "extra": 1}),
        json!({"type": "drop_rows", "where": {"column": "a", "equal": 1}}),
        json!({"type": "multiply", "column": "a", "by": "x"}),
    ] {
        assert!(
            serde_json::from_value::<ProcessorSpec>(bad.clone()).is_err(),
            "{bad} accepted"
        );
    }
    let schema = crate::connectors::schema::SettingsSchema::compile(processors_schema())
        .expect("valid schema");
    assert!(schema.validate(&specs).is_ok());
    assert!(
        schema
            .validate(&json!([{"type": "drop_rows", "where": {"column": "a"}}]))
            .is_err()
    );
}

#[test]
fn invalid_specs_are_refused_at_compile_time() {
    let cases = [
        (json!({"type": "rename", "columns": {}}), "at least one"),
        (
            json!({"type": "rename", "columns": {"a": "x", "b": "x"}}),
            "renamed to \"x\"",
        ),
        (json!({"type": "set", "values": {}}), "at least one"),
        (
            json!({"type": "multiply", "column": "a"}),
            "exactly one of by",
        ),
        (
            json!({"type": "multiply", "column": "a", "by": 2, "by_column": "b"}),
            "exactly one",
        ),
        (
            json!({"type": "multiply", "column": "a", "by": 0, "divide": true}),
            "divide by 0",
        ),
        (
            json!({"type": "multiply", "column": "", "by": 1}),
            "must not be empty",
        ),
        (
            json!({"type": "map", "column": "a"}),
            "exactly one of values and table",
        ),
        (
            json!({"type": "map", "column": "a", "table": "no spaces"}),
            "table name",
        ),
        (
            json!({"type": "extract", "column": "a", "pattern": "(unclosed"}),
            "invalid pattern",
        ),
        (
            json!({"type": "extract", "column": "a", "pattern": "abc"}),
            "group \"1\"",
        ),
        (
            json!({"type": "extract", "column": "a", "pattern": "(a)", "format": "$2"}),
            "group \"2\"",
        ),
        (
            json!({"type": "extract", "column": "a", "pattern": "(?P<y>a)", "format": "${z}"}),
            "\"z\"",
        ),
        (
            json!({"type": "drop_rows", "where": {"column": "a"}}),
            "exactly one of equals",
        ),
        (
            json!({"type": "drop_rows", "where": {"column": "a", "equals": 1, "missing": true}}),
            "exactly one",
        ),
        (
            json!({"type": "drop_rows", "where": {"column": "a", "matches": "["}}),
            "invalid pattern",
        ),
        (json!({"type": "group_by", "keys": []}), "at least one"),
        (
            json!({"type": "group_by", "keys": ["a"], "sum": ["a"]}),
            "named twice",
        ),
    ];
    for (spec, expected) in cases {
        let message = compile_error(spec.clone());
        assert!(message.starts_with("processor 0 ("), "{spec}: {message}");
        assert!(message.contains(expected), "{spec}: {message}");
    }
}

#[test]
fn rename_moves_columns_at_once_and_skips_missing_ones() {
    let rows = run(
        json!([{"type": "rename", "columns": {"a": "b", "b": "a", "gone": "x"}}]),
        vec![json!({"a": 1, "b": 2, "c": 3})],
    );
    assert_eq!(rows, vec![json!({"a": 2, "b": 1, "c": 3})]);
}

#[test]
fn set_adds_and_overwrites_constants() {
    let rows = run(
        json!([{"type": "set", "values": {"revenue_type": "search", "product_id": "9999"}}]),
        vec![json!({"product_id": "1", "n": 1})],
    );
    assert_eq!(
        rows,
        vec![json!({"product_id": "9999", "n": 1, "revenue_type": "search"})]
    );
}

#[test]
fn multiply_parses_numeric_strings_and_divides_by_a_column() {
    let rows = run(
        json!([
            {"type": "multiply", "column": "gross", "by": 0.5},
            {"type": "multiply", "column": "net", "by_column": "rate", "divide": true}
        ]),
        vec![
            json!({"gross": "10", "net": 9, "rate": "2"}),
            json!({"gross": null, "net": 1, "rate": 4}),
            json!({"net": 3, "rate": 0.5}),
        ],
    );
    assert!(close(&rows[0]["gross"], 5.0), "{rows:?}");
    assert!(close(&rows[0]["net"], 4.5), "{rows:?}");
    assert_eq!(rows[1]["gross"], Value::Null, "null is left as it is");
    assert!(close(&rows[1]["net"], 0.25));
    assert!(rows[2].get("gross").is_none(), "missing stays missing");
    assert!(close(&rows[2]["net"], 6.0));
}

#[test]
fn multiply_fails_a_non_numeric_value_naming_column_and_record() {
    let message = run_error(
        json!([{"type": "multiply", "column": "gross", "by": 2}]),
        vec![json!({"gross": 1}), json!({"gross": "n/a"})],
    );
    assert_eq!(
        message,
        "processor 0 (multiply) on record 1: column \"gross\" holds \"n/a\", which is not a number"
    );
    let message = run_error(
        json!([{"type": "multiply", "column": "gross", "by_column": "rate", "divide": true}]),
        vec![json!({"gross": 1, "rate": 0})],
    );
    assert!(
        message.contains("divide column \"gross\" by 0"),
        "{message}"
    );
    let message = run_error(
        json!([{"type": "multiply", "column": "gross", "by_column": "rate"}]),
        vec![json!({"gross": 1})],
    );
    assert!(
        message.contains("\"rate\" (by_column) is missing"),
        "{message}"
    );
    let message = run_error(
        json!([{"type": "set", "values": {"a": 1}}]),
        vec![json!([1, 2])],
    );
    assert!(message.contains("an array, not an object"), "{message}");
}

#[test]
fn map_with_values_default_into_and_lowercase() {
    let rows = run(
        json!([{"type": "map", "column": "country", "values": {"UK": "GB"}, "lowercase": true}]),
        vec![
            json!({"country": "UK"}),
            json!({"country": "FR"}),
            json!({"x": 1}),
        ],
    );
    assert_eq!(
        rows,
        vec![
            json!({"country": "gb"}),
            json!({"country": "fr"}),
            json!({"x": 1})
        ]
    );
    let rows = run(
        json!([{"type": "map", "column": "code", "values": {"1": "one"}, "default": "other", "into": "name"}]),
        vec![json!({"code": 1}), json!({"code": 2}), json!({})],
    );
    assert_eq!(
        rows,
        vec![
            json!({"code": 1, "name": "one"}),
            json!({"code": 2, "name": "other"}),
            json!({"name": "other"})
        ]
    );
}

#[test]
fn map_reads_a_lookup_table_and_names_a_missing_one() {
    let chain = chain(json!([
        {"type": "map", "column": "currency", "table": "currency", "lowercase": true, "into": "rate"}
    ]));
    assert_eq!(chain.tables(), vec!["currency".to_owned()]);
    let mut lookups = Lookups::new();
    lookups.insert(
        "currency".into(),
        [("EUR".to_owned(), "0.9".to_owned())].into_iter().collect(),
    );
    let rows = chain
        .apply(vec![json!({"currency": "eur"})], &lookups)
        .expect("applies");
    assert_eq!(rows, vec![json!({"currency": "eur", "rate": "0.9"})]);

    let error = chain
        .apply(vec![json!({"currency": "eur"})], &Lookups::new())
        .expect_err("no table");
    assert_eq!(
        error,
        Error::Run(
            "processor 0 (map): lookup table \"currency\" does not exist; run the job that fills it first"
                .into()
        )
    );
}

#[test]
fn extract_formats_groups_and_applies_the_fallback() {
    let rows = run(
        json!([{"type": "extract", "column": "channel", "pattern": "^.*(\\d{4})(\\d{4})_\\d{2}$",
                "format": "$1-$2", "fallback": "unknown"}]),
        vec![
            json!({"channel": "partner_12345678_01"}),
            json!({"channel": "ORGANIC"}),
            json!({"channel": null}),
        ],
    );
    assert_eq!(
        rows,
        vec![
            json!({"channel": "1234-5678"}),
            json!({"channel": "unknown"}),
            json!({"channel": "unknown"})
        ]
    );
    let rows = run(
        json!([{"type": "extract", "column": "link", "pattern": "> (?P<name>.*)$",
                "format": "${name}!", "into": "country"},
               {"type": "extract", "column": "id", "pattern": "(\\d+)"}]),
        vec![json!({"link": "<a> France", "id": "x"}), json!({"id": 42})],
    );
    assert_eq!(
        rows,
        vec![
            json!({"link": "<a> France", "id": "x", "country": "France!"}),
            json!({"id": "42"})
        ]
    );
}

#[test]
fn drop_rows_operators() {
    let rows = || {
        vec![
            json!({"id": 1, "channel": "ORGANIC"}),
            json!({"id": 2, "channel": "paid_1"}),
            json!({"id": 3, "channel": 5}),
            json!({"id": 4}),
        ]
    };
    let kept = |condition: Value| -> Vec<i64> {
        run(json!([{"type": "drop_rows", "where": condition}]), rows())
            .iter()
            .filter_map(|row| row["id"].as_i64())
            .collect()
    };
    assert_eq!(
        kept(json!({"column": "channel", "equals": "ORGANIC"})),
        [2, 3, 4]
    );
    assert_eq!(kept(json!({"column": "channel", "equals": "5"})), [1, 2, 4]);
    assert_eq!(
        kept(json!({"column": "channel", "not_equals": "ORGANIC"})),
        [1]
    );
    assert_eq!(
        kept(json!({"column": "channel", "in": ["ORGANIC", 5]})),
        [2, 4]
    );
    assert_eq!(
        kept(json!({"column": "channel", "matches": "^paid_"})),
        [1, 3, 4]
    );
    assert_eq!(
        kept(json!({"column": "channel", "missing": true})),
        [1, 2, 3]
    );
    assert_eq!(kept(json!({"column": "channel", "missing": false})), [4]);
}

#[test]
fn group_by_sums_and_keeps_text_columns() {
    let rows = run(
        json!([{"type": "group_by", "keys": ["date", "country"], "sum": ["impressions", "gross"],
                "last": ["updated"], "first": ["note"], "count_as": "rows"}]),
        vec![
            json!({"date": "d1", "country": "gb", "impressions": 10, "gross": "1.5",
                   "channel": "a", "updated": 1}),
            json!({"date": "d1", "country": "fr", "impressions": 1, "gross": 1}),
            json!({"date": "d1", "country": "gb", "impressions": "5", "gross": 2,
                   "channel": "b", "updated": 2, "note": "late"}),
            json!({"date": "d1", "country": "gb", "impressions": null}),
        ],
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    let gb = &rows[0];
    assert_eq!(gb["impressions"], json!(15), "integers stay integers");
    assert!(close(&gb["gross"], 3.5));
    assert_eq!(gb["channel"], "a", "text columns come from the first row");
    assert_eq!(gb["updated"], 2);
    assert_eq!(gb["note"], "late", "first non-null");
    assert_eq!(gb["rows"], 3);
    assert_eq!(rows[1]["country"], "fr");
    assert_eq!(rows[1]["rows"], 1);

    let message = run_error(
        json!([{"type": "group_by", "keys": ["k"], "sum": ["n"]}]),
        vec![json!({"k": 1, "n": 1}), json!({"k": 1, "n": "many"})],
    );
    assert_eq!(
        message,
        "processor 0 (group_by) on record 1: column \"n\" holds \"many\", which is not a number"
    );
}

/// The seed's `private_scraping_platform_1` processing, as one chain: rename, add constants,
/// apply the multiplier, map UK to GB and lowercase countries, drop organic traffic, format the
/// channel as `XXXX-XXXX`, and divide gross by the currency rate from the `currency` table.
#[test]
fn seed_platform_1_processing_chain() {
    let chain = chain(json!([
        {"type": "rename", "columns": {
            "Searches": "impressions", "Est. Gross Rev": "gross_earnings", "market": "country",
            "Bidded Searches": "searches", "datestamp": "source_date", "type_tag": "channel"}},
        {"type": "set", "values": {
            "network_name": "platform_1", "revenue_type": "search",
            "product": "toolbar", "product_id": "9999"}},
        {"type": "multiply", "column": "gross_earnings", "by": 0.95},
        {"type": "map", "column": "country", "values": {"UK": "GB"}, "lowercase": true},
        {"type": "drop_rows", "where": {"column": "channel", "equals": "ORGANIC"}},
        {"type": "extract", "column": "channel", "pattern": "^.*(\\d{4})(\\d{4})_\\d{2}$",
         "format": "$1-$2", "fallback": "unknown"},
        {"type": "map", "column": "currency_code", "table": "currency", "lowercase": true,
         "into": "currency_rate"},
        {"type": "multiply", "column": "gross_earnings", "by_column": "currency_rate",
         "divide": true}
    ]));
    assert_eq!(chain.tables(), vec!["currency".to_owned()]);
    let mut lookups = Lookups::new();
    lookups.insert(
        "currency".into(),
        [("usd", "1.0"), ("eur", "0.8")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    );
    let row = |searches: u64, gross: &str, market: &str, tag: &str, currency: &str| {
        json!({"Searches": searches, "Est. Gross Rev": gross, "market": market,
               "Bidded Searches": searches / 2, "datestamp": "2024-01-31",
               "type_tag": tag, "currency_code": currency})
    };
    let rows = chain
        .apply(
            vec![
                row(100, "20.00", "UK", "toolbar_20240131_01", "EUR"),
                row(50, "5", "DE", "ORGANIC", "EUR"),
                row(10, "4", "us", "unparsed", "USD"),
            ],
            &lookups,
        )
        .expect("applies");
    assert_eq!(rows.len(), 2, "the organic row is dropped: {rows:?}");
    let first = &rows[0];
    assert_eq!(first["impressions"], 100);
    assert_eq!(first["searches"], 50);
    assert_eq!(first["source_date"], "2024-01-31");
    assert_eq!(first["country"], "gb");
    assert_eq!(first["channel"], "2024-0131");
    assert_eq!(first["revenue_type"], "search");
    assert_eq!(first["product_id"], "9999");
    assert!(
        close(&first["gross_earnings"], 20.0 * 0.95 / 0.8),
        "{first}"
    );
    assert!(first.get("Searches").is_none() && first.get("market").is_none());
    let second = &rows[1];
    assert_eq!(second["country"], "us");
    assert_eq!(second["channel"], "unknown", "the fallback is applied");
    assert!(close(&second["gross_earnings"], 4.0 * 0.95), "{second}");
}
