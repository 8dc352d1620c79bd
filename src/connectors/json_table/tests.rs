//! Tests of the `json-table` connector's settings, page URLs and row mapping (the paging flow
//! over HTTP is covered by the black-box tests in `tests/it/web_reports.rs`).

use serde_json::{Value, json};

use super::config::Plan;
use super::{JsonTableConnector, Table};
use crate::connectors::Connector;
use crate::connectors::schema::SettingsSchema;

fn settings(change: impl FnOnce(&mut Value)) -> Value {
    let mut settings = json!({
        "login": {"url": "http://127.0.0.1:9/login.php", "username": "ann", "password": "hunter2",
                  "username_field": "si_mail", "password_field": "si_password",
                  "extra_fields": {"signin": "Sign In"}, "success_cookie": "PHPSESSID"},
        "url": "http://127.0.0.1:9/routePage.php?date_from={from}&date_to={to}&global_time_zone=0",
        "columns": ["source_date", "channel", "total_price"],
        "skip_rows": [{"column": "source_date", "equals": "Total"}],
        "start_date": "2026-11-01",
        "end_date": "2026-11-03",
        "page_size": 1000
    });
    change(&mut settings);
    settings
}

#[test]
fn the_schema_accepts_the_example_and_redacts_the_password() {
    let schema = SettingsSchema::compile(JsonTableConnector.settings_schema()).unwrap();
    let example = settings(|_| ());
    schema.validate(&example).unwrap();
    JsonTableConnector.validate(&example).unwrap();
    let shown = schema.redact(&example);
    assert_eq!(shown["login"]["password"], "********");
    assert_eq!(shown["login"]["username"], "ann");
    assert!(!shown.to_string().contains("hunter2"));
}

#[test]
fn settings_the_schema_cannot_check_are_refused_by_field() {
    for (change, needle) in [
        (
            Box::new(|s: &mut Value| s["skip_rows"][0]["column"] = json!("nope"))
                as Box<dyn FnOnce(&mut Value)>,
            "skip_rows[0].column",
        ),
        (
            Box::new(|s: &mut Value| s["end_date"] = json!("2026-10-01")),
            "end_date",
        ),
        (
            Box::new(|s: &mut Value| {
                s.as_object_mut().unwrap().remove("start_date");
            }),
            "go together",
        ),
        (
            Box::new(|s: &mut Value| s["columns"] = json!(["a", "a"])),
            "twice",
        ),
        (
            Box::new(|s: &mut Value| s["url"] = json!("ftp://x/{from}")),
            "url",
        ),
        (
            Box::new(|s: &mut Value| s["page_size"] = json!(0)),
            "page_size",
        ),
    ] {
        let error = JsonTableConnector
            .validate(&settings(change))
            .unwrap_err()
            .to_string();
        assert!(error.contains(needle), "{needle}: {error}");
    }
}

#[test]
fn page_urls_set_datatables_parameters_or_fill_placeholders() {
    let plan = Plan::new(&settings(|_| ())).unwrap();
    assert_eq!(
        plan.page_url(2000).unwrap().as_str(),
        "http://127.0.0.1:9/routePage.php?date_from=2026-11-01&date_to=2026-11-03&global_time_zone=0&iDisplayStart=2000&iDisplayLength=1000"
    );
    let placeholders = Plan::new(&settings(|s| {
        s["url"] = json!("http://127.0.0.1:9/t/{start}/{length}?from={from}");
        s["page_size"] = json!(50);
    }))
    .unwrap();
    assert_eq!(
        placeholders.page_url(100).unwrap().as_str(),
        "http://127.0.0.1:9/t/100/50?from=2026-11-01"
    );
}

#[test]
fn rows_are_named_by_columns_and_skip_rules_drop_totals() {
    let plan = Plan::new(&settings(|_| ())).unwrap();
    let body = json!({
        "aaData": [["2026-11-01", "ch<b>1</b>", 1.5], ["Total", 3], ["2026-11-02", "c2", "2"]],
        "iTotalRecords": "4", "iTotalDisplayRecords": 3
    });
    let table = Table::read(&body).unwrap();
    assert_eq!(table.total, Some(3), "iTotalDisplayRecords wins");
    let records: Vec<Value> = table
        .rows
        .iter()
        .enumerate()
        .filter_map(|(index, row)| plan.record(index as u64, row).unwrap())
        .collect();
    assert_eq!(
        records,
        [
            json!({"source_date": "2026-11-01", "channel": "ch<b>1</b>", "total_price": 1.5}),
            json!({"source_date": "2026-11-02", "channel": "c2", "total_price": "2"}),
        ]
    );
    let short = plan.record(7, &json!(["2026-11-03", "c"])).unwrap_err();
    assert!(short.to_string().contains("row 7: 2 cells"), "{short}");
    assert!(Table::read(&json!({"data": []})).is_err());
    assert!(Table::read(&json!({"aaData": {}})).is_err());
}
