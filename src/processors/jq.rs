//! jq filters (the jaq implementation) over JSON values, run with caps on a dedicated pool.
//!
//! Invariant: a run yields at most [`MAX_OUTPUTS`] values and answers within its budget. jaq has
//! no fuel, so an overrunning run is abandoned: its thread keeps running until the filter ends and
//! the pool starts a fresh thread in its place (at most 16 abandoned, then runs are refused).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::native::{Fun, bome};
use jaq_core::{Compiler, Ctx, Cv, Exn, Native, ValXs, Vars, data};
use jaq_json::{Map, Num, Val};
use serde::Deserialize;
use serde_json::{Number, Value};

use super::pool;

/// Longest filter source accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 4 * 1024;

/// Compiled filters kept by source text; the cache is emptied when it reaches this size.
const CACHE_ENTRIES: usize = 1024;

fn cache() -> &'static std::sync::Mutex<std::collections::HashMap<String, JqFilter>> {
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, JqFilter>>,
    > = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Most values one run may yield for one input.
pub const MAX_OUTPUTS: usize = 100_000;

/// Wall-clock time one run may take once it has started.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);

/// Deepest nesting of an output value, so every record can be parsed back by `serde_json`
/// (whose recursion limit is 128).
pub const MAX_OUTPUT_DEPTH: usize = 100;

type Data = data::JustLut<Val>;
type Filter = jaq_core::Filter<Data>;

/// A compiled jq filter; cheap to clone and shareable between threads.
#[derive(Clone)]
pub struct JqFilter {
    code: Arc<str>,
    filter: Arc<Filter>,
    budget: Duration,
}

impl fmt::Debug for JqFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JqFilter")
            .field("code", &self.code)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl JqFilter {
    /// Parses and compiles `code` with the jq standard library, minus the filters that would
    /// reach outside the sandbox (`env` yields `{}`, `debug`/`stderr` log nothing).
    pub fn compile(code: &str) -> Result<Self, String> {
        if let Some(cached) = cache()
            .lock()
            .ok()
            .and_then(|cache| cache.get(code).cloned())
        {
            return Ok(cached);
        }
        let compiled = Self::compile_uncached(code)?;
        if let Ok(mut cache) = cache().lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(code.to_owned(), compiled.clone());
        }
        Ok(compiled)
    }

    /// Compiling re-parses jq's standard library (milliseconds), so `compile` keeps compiled
    /// filters by source text; connectors compile their paths on every page.
    fn compile_uncached(code: &str) -> Result<Self, String> {
        if code.len() > MAX_FILTER_BYTES {
            return Err(format!(
                "jq filter is {} bytes long, the limit is {MAX_FILTER_BYTES}",
                code.len()
            ));
        }
        let loader = Loader::new(
            jaq_core::defs()
                .chain(jaq_std::defs())
                .chain(jaq_json::defs()),
        );
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errors| describe_load_errors(code, errors))?;
        let filter = Compiler::default()
            .with_funs(natives())
            .compile(modules)
            .map_err(describe_compile_errors)?;
        Ok(Self {
            code: code.into(),
            filter: Arc::new(filter),
            budget: DEFAULT_BUDGET,
        })
    }

    /// The same filter with another wall-clock budget per run.
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The source the filter was compiled from.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Runs the filter on `input` on the jq pool and blocks the calling thread for the outputs.
    /// From async code use [`Self::run_async`], which waits on a blocking-pool thread instead.
    pub fn run(&self, input: &Value) -> Result<Vec<Value>, String> {
        let filter = Arc::clone(&self.filter);
        let input = input.clone();
        let budget = self.budget;
        pool::run(budget, move |deadline| {
            execute(&filter, &input, deadline, budget)
        })
        .unwrap_or_else(|error| Err(format!("jq filter {error}")))
    }

    /// [`Self::run`] for async callers: never blocks a runtime worker thread.
    pub async fn run_async(&self, input: Value) -> Result<Vec<Value>, String> {
        let filter = self.clone();
        tokio::task::spawn_blocking(move || filter.run(&input))
            .await
            .unwrap_or_else(|error| Err(format!("jq filter task failed: {error}")))
    }
}

/// The native filters of jaq's core, standard and JSON libraries, with `env` replaced by an
/// empty object (the process environment holds secrets) and the logging filters silenced.
fn natives() -> impl Iterator<Item = Fun<Data>> {
    fn empty_env<'a>(_: Cv<'a, Data>) -> ValXs<'a, Val> {
        bome(Ok(Val::obj(Map::default())))
    }
    fn nothing<'a>(_: Cv<'a, Data>) -> ValXs<'a, Val> {
        Box::new(std::iter::empty())
    }
    jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .map(|(name, args, native)| match name {
            "env" => (name, args, Native::<Data>::new(empty_env)),
            "debug_empty" | "stderr_empty" => (name, args, Native::<Data>::new(nothing)),
            _ => (name, args, native),
        })
}

/// Runs `filter` on the calling (pool) thread, stopping at the output cap or the deadline.
fn execute(
    filter: &Filter,
    input: &Value,
    deadline: Instant,
    budget: Duration,
) -> Result<Vec<Value>, String> {
    let input = Val::deserialize(input)
        .map_err(|error| format!("jq input is not representable: {error}"))?;
    let ctx = Ctx::<Data>::new(&filter.lut, Vars::new([]));
    let mut outputs = Vec::new();
    for output in filter.id.run((ctx, input)) {
        if Instant::now() >= deadline {
            return Err(format!("jq filter exceeded its time budget of {budget:?}"));
        }
        let value = output.map_err(describe_exception)?;
        if outputs.len() == MAX_OUTPUTS {
            return Err(format!(
                "jq filter yielded more than {MAX_OUTPUTS} outputs for one input"
            ));
        }
        outputs.push(to_json(&value, 0)?);
    }
    Ok(outputs)
}

/// A runtime exception as text: the error's message, or the exit code of `halt`.
fn describe_exception(exception: Exn<'_, Val>) -> String {
    match exception.get_err() {
        Ok(error) => match error.into_val() {
            Val::TStr(text) | Val::BStr(text) => {
                format!("jq error: {}", String::from_utf8_lossy(&text))
            }
            other => format!("jq error: {other}"),
        },
        Err(exception) => match exception.get_halt() {
            Ok(code) => format!("jq filter halted with exit code {code}"),
            Err(_) => "jq filter ended with an unexpected control-flow exception".to_owned(),
        },
    }
}

/// Converts a jaq value to JSON: byte strings and invalid UTF-8 are decoded lossily, NaN becomes
/// null and infinities the largest finite numbers (as jq prints them), non-string object keys
/// their jq text.
fn to_json(value: &Val, depth: usize) -> Result<Value, String> {
    if depth > MAX_OUTPUT_DEPTH {
        return Err(format!(
            "jq output is nested deeper than {MAX_OUTPUT_DEPTH} levels"
        ));
    }
    Ok(match value {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(num) => number(num),
        Val::TStr(text) | Val::BStr(text) => {
            Value::String(String::from_utf8_lossy(text).into_owned())
        }
        Val::Arr(items) => Value::Array(
            items
                .iter()
                .map(|item| to_json(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, field)| {
                    let key = match key {
                        Val::TStr(text) | Val::BStr(text) => {
                            String::from_utf8_lossy(text).into_owned()
                        }
                        other => other.to_string(),
                    };
                    Ok((key, to_json(field, depth + 1)?))
                })
                .collect::<Result<_, String>>()?,
        ),
    })
}

fn number(num: &Num) -> Value {
    match num {
        Num::Int(int) => i64::try_from(*int).map_or_else(|_| float(*int as f64), Value::from),
        Num::Float(f) => float(*f),
        other => {
            let text = other.to_string();
            serde_json::from_str::<Number>(&text)
                .map(Value::Number)
                .unwrap_or_else(|_| text.parse::<f64>().map_or(Value::Null, float))
        }
    }
}

fn float(f: f64) -> Value {
    if f.is_nan() {
        return Value::Null;
    }
    Number::from_f64(f.clamp(f64::MIN, f64::MAX)).map_or(Value::Null, Value::Number)
}

/// Lexer, parser and module errors, each with its byte offset in the filter.
fn describe_load_errors(code: &str, errors: load::Errors<&str, ()>) -> String {
    let found = |part: &str| {
        let offset = load::span(code, part).start;
        let snippet: String = part.chars().take(20).collect();
        if snippet.is_empty() {
            format!("the end of the filter (offset {offset})")
        } else {
            format!("`{snippet}` (offset {offset})")
        }
    };
    let mut messages = Vec::new();
    for (_file, error) in errors {
        match error {
            load::Error::Io(failures) => messages.extend(
                failures
                    .into_iter()
                    .map(|(path, why)| format!("cannot load module {path:?}: {why}")),
            ),
            load::Error::Lex(failures) => {
                messages.extend(failures.into_iter().map(|(expected, part)| {
                    format!("expected {} at {}", expected.as_str(), found(part))
                }))
            }
            load::Error::Parse(failures) => {
                messages.extend(failures.into_iter().map(|(expected, part)| {
                    format!("expected {}, found {}", expected.as_str(), found(part))
                }))
            }
        }
    }
    format!("invalid jq filter: {}", messages.join("; "))
}

/// Undefined names, e.g. "undefined filter `foo/1`".
fn describe_compile_errors(errors: jaq_core::compile::Errors<&str, ()>) -> String {
    let messages: Vec<String> = errors
        .into_iter()
        .flat_map(|(_file, failures)| failures)
        .map(|(name, undefined)| match undefined {
            jaq_core::compile::Undefined::Filter(arity) => {
                format!("undefined filter `{name}/{arity}`")
            }
            other => format!("undefined {} `{name}`", other.as_str()),
        })
        .collect();
    format!("invalid jq filter: {}", messages.join("; "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(code: &str, input: Value) -> Result<Vec<Value>, String> {
        JqFilter::compile(code)?.run(&input)
    }

    #[test]
    fn iterating_splits_one_input_into_many() {
        let outputs = run(".items[]", json!({"items": [1, {"a": 2}, "x"]}));
        assert_eq!(outputs, Ok(vec![json!(1), json!({"a": 2}), json!("x")]));
    }

    #[test]
    fn select_drops_and_objects_map() {
        assert_eq!(run("select(.x > 1)", json!({"x": 1})), Ok(vec![]));
        assert_eq!(
            run("select(.x > 1)", json!({"x": 2})),
            Ok(vec![json!({"x": 2})])
        );
        assert_eq!(
            run("{a: .b}", json!({"b": [true]})),
            Ok(vec![json!({"a": [true]})])
        );
    }

    #[test]
    fn numbers_strings_and_keys_convert_back_to_json() {
        let outputs = run(
            r#"1, 2.5, nan, infinite, 100000000000000000000, "é", {(1): 2}"#,
            Value::Null,
        );
        let expected = [
            json!(1),
            json!(2.5),
            Value::Null,
            json!(f64::MAX),
            json!(1e20),
            json!("é"),
            json!({"1": 2}),
        ];
        assert_eq!(outputs, Ok(expected.to_vec()));
        assert_eq!(
            run("[.[] | . + 1]", json!([1, -3])),
            Ok(vec![json!([2, -2])])
        );
    }

    #[test]
    fn compile_errors_are_readable() {
        let error = JqFilter::compile(".a | ").expect_err("incomplete filter");
        assert!(
            error.contains("expected term, found the end of the filter"),
            "{error}"
        );
        let error = JqFilter::compile("foo(1)").expect_err("undefined filter");
        assert!(error.contains("undefined filter `foo/1`"), "{error}");
        let error = JqFilter::compile(r#"include "x"; ."#).expect_err("modules are not loaded");
        assert!(error.contains("cannot load module"), "{error}");
        let error = JqFilter::compile(&".".repeat(MAX_FILTER_BYTES + 1)).expect_err("too long");
        assert!(error.contains("limit is 4096"), "{error}");
    }

    #[test]
    fn runtime_errors_halts_and_sandboxed_filters() {
        assert_eq!(
            run(r#"error("boom")"#, Value::Null),
            Err("jq error: boom".into())
        );
        assert_eq!(
            run("halt", Value::Null),
            Err("jq filter halted with exit code 0".into())
        );
        assert_eq!(run("env", Value::Null), Ok(vec![json!({})]));
        assert_eq!(run("debug | stderr", json!(1)), Ok(vec![json!(1)]));
    }

    #[test]
    fn output_count_and_depth_are_capped() {
        let error = run("range(1000000)", Value::Null).expect_err("too many outputs");
        assert!(error.contains("more than 100000 outputs"), "{error}");
        assert_eq!(
            run("range(100000)", Value::Null).map(|outputs| outputs.len()),
            Ok(100_000)
        );
        let error = run("reduce range(200) as $i (0; [.])", Value::Null).expect_err("too deep");
        assert!(error.contains("deeper than 100"), "{error}");
    }

    #[test]
    fn runaway_filter_hits_the_time_budget() {
        let started = Instant::now();
        let error = run("def f: f; f", Value::Null).expect_err("never ends");
        assert!(
            error.contains("jq filter exceeded its time budget"),
            "{error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // The pool still answers.
        assert_eq!(run(".", json!(7)), Ok(vec![json!(7)]));
    }

    #[test]
    fn slow_output_stream_stops_itself_at_the_deadline() {
        let filter = JqFilter::compile("range(1e9) | select(. % 100000 == 0)")
            .expect("valid")
            .with_budget(Duration::from_millis(200));
        let error = filter.run(&Value::Null).expect_err("endless");
        assert!(error.contains("exceeded its time budget"), "{error}");
    }

    #[tokio::test]
    async fn run_async_matches_run() {
        let filter = JqFilter::compile(".[] | .id").expect("valid");
        assert_eq!(
            filter.run_async(json!([{"id": 1}, {"id": 2}])).await,
            Ok(vec![json!(1), json!(2)])
        );
    }
}
