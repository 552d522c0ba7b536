//! List query parameters of the wazo-provd REST API (`q`/`q64`, `fields`, `skip`, `limit`, `sort`,
//! `sort_ord`, `recurse`) and their evaluation over JSON documents.
//!
//! This follows `find_arguments_from_request` and the JSON document collection of wazo-provd
//! (research/provd-api.md §2.7), with one deliberate difference: a value that wazo-provd would log
//! and ignore is rejected here with a [`QueryError`], which the API turns into a 400.

use std::cmp::Ordering;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Number, Value};

/// A parsed list query (`q`/`q64`, `fields`, `skip`, `limit`, `sort`, `sort_ord`, `recurse`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// The selector from `q64` or `q`; `None` when neither was given.
    pub selector: Option<Map<String, Value>>,
    /// The (possibly dotted) keys to keep besides `id`; `None` keeps whole documents.
    pub fields: Option<Vec<String>>,
    /// How many matching documents to skip.
    pub skip: usize,
    /// The maximum number of documents to return; `None` means no limit.
    pub limit: Option<usize>,
    /// The (possibly dotted) key to sort on.
    pub sort: Option<String>,
    /// Whether `sort_ord=DESC` was given.
    pub descending: bool,
    /// Whether sub-tenants are included (`recurse`, devices list only).
    pub recurse: bool,
}

/// A query parameter that cannot be used; the API answers 400 naming `param`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter {param}: {message}")]
pub struct QueryError {
    /// The name of the offending query parameter.
    pub param: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl QueryError {
    fn new(param: &'static str, message: impl Into<String>) -> QueryError {
        QueryError {
            param,
            message: message.into(),
        }
    }
}

/// The parameters of a list query; each takes one value.
const PARAMS: [&str; 8] = [
    "q", "q64", "fields", "skip", "limit", "sort", "sort_ord", "recurse",
];

impl ListQuery {
    /// Parses decoded query pairs (as axum's Query<Vec<(String, String)>> gives them). Unknown
    /// parameters are ignored; a known one given more than once is an error.
    pub fn parse(pairs: &[(String, String)]) -> Result<ListQuery, QueryError> {
        // wazo-provd takes the first of repeated values (`args[name][0]`); here a repeat is
        // refused, since the client may well have meant the other value.
        for name in PARAMS {
            if pairs.iter().filter(|(key, _)| key == name).count() > 1 {
                return Err(QueryError::new(name, "given more than once"));
            }
        }
        let first = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        let mut query = ListQuery::default();

        // `q64` wins over `q`; like wazo-provd (`if 'q64' ... elif 'q'`), `q` is then not looked at.
        let selector = match (first("q64"), first("q")) {
            (Some(raw), _) => Some(("q64", parse_q64(raw)?)),
            (None, Some(raw)) => Some(("q", parse_selector(raw.as_bytes(), "q")?)),
            (None, None) => None,
        };
        if let Some((param, selector)) = selector {
            // Check operators and operands now so a bad selector fails early, naming the
            // parameter the client actually sent.
            compile_selector(&selector).map_err(|message| QueryError::new(param, message))?;
            query.selector = Some(selector);
        }

        if let Some(raw) = first("fields") {
            let fields = raw
                .split(',')
                .map(str::trim)
                .filter(|field| !field.is_empty())
                .map(str::to_owned)
                .collect();
            query.fields = Some(fields);
        }
        if let Some(raw) = first("skip") {
            query.skip = parse_count(raw, "skip")?;
        }
        if let Some(raw) = first("limit") {
            // `limit=0` means no limit, as in wazo-provd.
            query.limit = Some(parse_count(raw, "limit")?).filter(|&limit| limit > 0);
        }
        if let Some(raw) = first("sort") {
            if raw.is_empty() {
                return Err(QueryError::new("sort", "must name a key"));
            }
            query.sort = Some(raw.to_owned());
        }
        if let Some(raw) = first("sort_ord") {
            query.descending = if raw.eq_ignore_ascii_case("ASC") {
                false
            } else if raw.eq_ignore_ascii_case("DESC") {
                true
            } else {
                return Err(QueryError::new(
                    "sort_ord",
                    format!("must be ASC or DESC, not {}", shown(raw)),
                ));
            };
        }
        if let Some(raw) = first("recurse") {
            query.recurse = match raw {
                "true" | "True" | "1" => true,
                "false" | "False" | "0" => false,
                _ => {
                    return Err(QueryError::new(
                        "recurse",
                        format!(
                            "must be true, True, 1, false, False or 0, not {}",
                            shown(raw)
                        ),
                    ))
                }
            };
        }
        Ok(query)
    }

    /// Whether a document matches the selector (no selector: everything matches). Errors for an invalid operator or operand (e.g. `$in` with a non-list), naming param "q".
    pub fn matches(&self, doc: &Value) -> Result<bool, QueryError> {
        match &self.selector {
            None => Ok(true),
            Some(selector) => {
                let clauses =
                    compile_selector(selector).map_err(|message| QueryError::new("q", message))?;
                Ok(clauses_match(&clauses, doc))
            }
        }
    }

    /// Filters (selector), sorts, skips, limits and projects `docs` (each a JSON object), in that order.
    pub fn apply(&self, docs: Vec<Value>) -> Result<Vec<Value>, QueryError> {
        let mut out = Vec::new();
        self.run(docs.into_iter().map(Ok), false, |doc| {
            out.push(doc);
            true
        })?;
        Ok(out)
    }

    /// [`ListQuery::apply`] over a stream: documents are read one at a time and each answer
    /// is handed to `emit` as soon as it is known (`emit` answers false to stop). With
    /// `presorted`, `docs` already come in the order of `sort` and nothing is held in memory;
    /// otherwise a `sort` holds the matching documents until the last one is read. An error
    /// of the stream stops the run and is returned.
    pub fn run<E: From<QueryError>>(
        &self,
        docs: impl Iterator<Item = Result<Value, E>>,
        presorted: bool,
        mut emit: impl FnMut(Value) -> bool,
    ) -> Result<(), E> {
        // Compile once, and before looking at any document, so a bad selector is an error even
        // for an empty collection.
        let clauses = match &self.selector {
            Some(selector) => {
                compile_selector(selector).map_err(|message| QueryError::new("q", message))?
            }
            None => Vec::new(),
        };
        let project = |doc: Value| match &self.fields {
            Some(fields) => project(&doc, fields),
            None => doc,
        };
        let limit = self.limit.unwrap_or(usize::MAX);
        let (mut skipped, mut sent) = (0, 0);
        let mut page = |doc: Value| -> bool {
            if skipped < self.skip {
                skipped += 1;
                return true;
            }
            if sent >= limit {
                return false;
            }
            sent += 1;
            emit(project(doc)) && sent < limit
        };
        let mut matching = docs.filter(|doc| match doc {
            Ok(doc) => clauses_match(&clauses, doc),
            Err(_) => true,
        });
        match &self.sort {
            Some(key) if !presorted => {
                let all = matching.collect::<Result<Vec<Value>, E>>()?;
                for doc in sort_docs(all, key, self.descending) {
                    if !page(doc) {
                        break;
                    }
                }
            }
            _ => {
                for doc in matching.by_ref() {
                    if !page(doc?) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// The equality tests of the selector that an index may answer: top-level keys tested
    /// against a string or an `$in` list (its strings only: an indexed key never holds
    /// anything else, so the other members can match nothing). Every matching document has,
    /// for each key returned, one of its values; the selector is still applied in full.
    pub fn index_hints(&self) -> Vec<(String, Vec<String>)> {
        let Some(selector) = &self.selector else {
            return Vec::new();
        };
        let Ok(clauses) = compile_selector(selector) else {
            return Vec::new();
        };
        let mut hints = Vec::new();
        for clause in clauses {
            let [key] = clause.path.as_slice() else {
                continue;
            };
            for cond in &clause.conds {
                let values = match cond {
                    Cond::Eq(Value::String(v)) => vec![v.clone()],
                    Cond::In(list) => list
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                    _ => continue,
                };
                hints.push(((*key).to_owned(), values));
            }
        }
        hints
    }
}

// ---------------------------------------------------------------------------------------------
// Parameter parsing

/// Renders a client value for an error message, bounded so a huge value does not flood the body.
fn shown(raw: &str) -> String {
    const MAX_CHARS: usize = 64;
    if raw.chars().count() <= MAX_CHARS {
        format!("{raw:?}")
    } else {
        let head: String = raw.chars().take(MAX_CHARS).collect();
        format!("{head:?}…")
    }
}

fn parse_count(raw: &str, param: &'static str) -> Result<usize, QueryError> {
    raw.parse::<usize>().map_err(|_| {
        QueryError::new(
            param,
            format!("must be a non-negative integer, not {}", shown(raw)),
        )
    })
}

fn parse_selector(raw: &[u8], param: &'static str) -> Result<Map<String, Value>, QueryError> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(selector)) => Ok(selector),
        Ok(_) => Err(QueryError::new(param, "must be a JSON object")),
        Err(e) => Err(QueryError::new(param, format!("invalid JSON: {e}"))),
    }
}

fn parse_q64(raw: &str) -> Result<Map<String, Value>, QueryError> {
    // The form decoding of a query string turns an unescaped '+' into a space, and a space is
    // never base64, so it can only have been a '+'. Line breaks (as `base64` wraps its output) are
    // dropped, as Python's a2b_base64 does.
    let cleaned: String = raw
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .map(|c| if c == ' ' { '+' } else { c })
        .collect();
    // Padding is optional, and the URL-safe alphabet is recognised by its '-' or '_' (a mix of
    // both alphabets is rejected by the decoder).
    let url_safe = cleaned.contains(['-', '_']);
    let config = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let engine = if url_safe {
        GeneralPurpose::new(&alphabet::URL_SAFE, config)
    } else {
        GeneralPurpose::new(&alphabet::STANDARD, config)
    };
    let bytes = engine
        .decode(cleaned.as_bytes())
        .map_err(|e| QueryError::new("q64", format!("invalid base64: {e}")))?;
    parse_selector(&bytes, "q64")
}

// ---------------------------------------------------------------------------------------------
// Selector

/// One test on the values found at a selector key.
#[derive(Debug)]
enum Cond<'a> {
    /// A plain selector value: some doc value equals it.
    Eq(&'a Value),
    /// `$in`: some doc value equals one of the list.
    In(&'a [Value]),
    /// `$nin`: no doc value equals one of the list.
    Nin(&'a [Value]),
    /// `$contains`: some doc value is an array holding it, or a string holding the substring.
    Contains(&'a Value),
    /// `$gt`, `$ge`, `$lt`, `$le`: some doc value compares so; the operand is a number or string.
    Cmp(CmpOp, &'a Value),
    /// `$ne`: no doc value equals it.
    Ne(&'a Value),
    /// `$exists`: whether the key path yields any value.
    Exists(bool),
}

#[derive(Debug, Clone, Copy)]
enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn accepts(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
        }
    }
}

/// A selector key split into its path, with the tests that must all hold on it.
#[derive(Debug)]
struct Clause<'a> {
    path: Vec<&'a str>,
    conds: Vec<Cond<'a>>,
}

/// Checks a selector and turns it into clauses; the error is the message of a [`QueryError`].
fn compile_selector(selector: &Map<String, Value>) -> Result<Vec<Clause<'_>>, String> {
    selector
        .iter()
        .map(|(key, value)| {
            Ok(Clause {
                path: key.split('.').collect(),
                conds: compile_matcher(key, value)?,
            })
        })
        .collect()
}

fn compile_matcher<'a>(key: &str, value: &'a Value) -> Result<Vec<Cond<'a>>, String> {
    // Like wazo-provd, an object is an operator object as soon as one of its keys starts with
    // '$'; otherwise it is a plain value compared for equality.
    let ops = match value {
        Value::Object(ops) if ops.keys().any(|k| k.starts_with('$')) => ops,
        _ => return Ok(vec![Cond::Eq(value)]),
    };
    ops.iter()
        .map(|(op, operand)| {
            let cond = match op.as_str() {
                "$in" => Cond::In(list_operand(op, operand)?),
                "$nin" => Cond::Nin(list_operand(op, operand)?),
                "$contains" => Cond::Contains(operand),
                "$ne" => Cond::Ne(operand),
                "$gt" => Cond::Cmp(CmpOp::Gt, ordered_operand(op, operand)?),
                "$ge" => Cond::Cmp(CmpOp::Ge, ordered_operand(op, operand)?),
                "$lt" => Cond::Cmp(CmpOp::Lt, ordered_operand(op, operand)?),
                "$le" => Cond::Cmp(CmpOp::Le, ordered_operand(op, operand)?),
                "$exists" => match operand {
                    Value::Bool(wanted) => Cond::Exists(*wanted),
                    _ => return Err(format!("{op} expects true or false")),
                },
                _ if op.starts_with('$') => return Err(format!("unknown operator {op}")),
                // wazo-provd would report "invalid operator: name" here.
                _ => {
                    return Err(format!(
                        "the operator object of key {key:?} has the non-operator key {op:?}"
                    ))
                }
            };
            Ok(cond)
        })
        .collect()
}

fn list_operand<'a>(op: &str, operand: &'a Value) -> Result<&'a [Value], String> {
    match operand {
        Value::Array(list) => Ok(list),
        _ => Err(format!("{op} expects a list")),
    }
}

fn ordered_operand<'a>(op: &str, operand: &'a Value) -> Result<&'a Value, String> {
    // Only numbers and strings are ordered; any other operand could never match.
    match operand {
        Value::Number(_) | Value::String(_) => Ok(operand),
        _ => Err(format!("{op} expects a number or a string")),
    }
}

fn clauses_match(clauses: &[Clause<'_>], doc: &Value) -> bool {
    clauses.iter().all(|clause| {
        let mut found = Vec::new();
        collect_values(&clause.path, doc, &mut found);
        clause.conds.iter().all(|cond| cond_holds(cond, &found))
    })
}

fn cond_holds(cond: &Cond<'_>, found: &[&Value]) -> bool {
    match cond {
        Cond::Eq(wanted) => found.iter().any(|v| values_equal(v, wanted)),
        Cond::In(list) => found
            .iter()
            .any(|v| list.iter().any(|l| values_equal(v, l))),
        Cond::Nin(list) => !found
            .iter()
            .any(|v| list.iter().any(|l| values_equal(v, l))),
        Cond::Contains(wanted) => found.iter().any(|v| contains(v, wanted)),
        Cond::Cmp(op, operand) => found
            .iter()
            .any(|v| compare_ordered(v, operand).is_some_and(|ord| op.accepts(ord))),
        Cond::Ne(wanted) => !found.iter().any(|v| values_equal(v, wanted)),
        Cond::Exists(wanted) => found.is_empty() != *wanted,
    }
}

/// Collects every value at `path` in `value`. An array met before the path is used up has each
/// element tried with the same remaining path; the value at the end of the path is taken whole,
/// even an array (so a plain value compares with the whole list).
fn collect_values<'v>(path: &[&str], value: &'v Value, out: &mut Vec<&'v Value>) {
    let Some((head, rest)) = path.split_first() else {
        out.push(value);
        return;
    };
    match value {
        Value::Object(map) => {
            if let Some(child) = map.get(*head) {
                collect_values(rest, child, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_values(path, item, out);
            }
        }
        _ => {}
    }
}

fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::Array(items), _) => items.iter().any(|item| values_equal(item, needle)),
        (Value::String(text), Value::String(part)) => text.contains(part.as_str()),
        _ => false,
    }
}

/// Orders two numbers or two strings; any other pair is unordered.
fn compare_ordered(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Some(cmp_num(Num::of(x)?, Num::of(y)?)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// JSON equality, except that numbers compare by value (`1 == 1.0`, as in Python).
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (Num::of(x), Num::of(y)) {
            (Some(x), Some(y)) => cmp_num(x, y) == Ordering::Equal,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| values_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, xv)| y.get(k).is_some_and(|yv| values_equal(xv, yv)))
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// A JSON number as an exact integer or a finite float.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    /// `None` only for a number `serde_json` cannot give as `i64`, `u64` or finite `f64`.
    fn of(n: &Number) -> Option<Num> {
        if let Some(i) = n.as_i64() {
            Some(Num::Int(i.into()))
        } else if let Some(u) = n.as_u64() {
            Some(Num::Int(u.into()))
        } else {
            n.as_f64().filter(|f| f.is_finite()).map(Num::Float)
        }
    }
}

/// Compares two numbers exactly (no rounding of large integers to f64), which makes this a
/// total order: `sort_by` may panic on a comparator that is not one.
fn cmp_num(a: Num, b: Num) -> Ordering {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        // Both are finite, so partial_cmp always answers; -0.0 and 0.0 are equal.
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Num::Int(x), Num::Float(y)) => cmp_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => cmp_int_float(y, x).reverse(),
    }
}

fn cmp_int_float(i: i128, f: f64) -> Ordering {
    // Every integer here comes from an i64 or u64, so its magnitude is below 2^64.
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    if f >= TWO_POW_64 {
        return Ordering::Less;
    }
    if f <= -TWO_POW_64 {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    // |whole| < 2^64, so the cast is exact.
    let whole_int = whole as i128;
    match i.cmp(&whole_int) {
        Ordering::Equal => {
            let fraction = f - whole;
            if fraction > 0.0 {
                Ordering::Less
            } else if fraction < 0.0 {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        ord => ord,
    }
}

// ---------------------------------------------------------------------------------------------
// Sorting and projection

/// Looks up a dotted key through objects only (as wazo-provd's `doc[k1][k2]` for sort and fields).
fn lookup<'v>(doc: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter()
        .try_fold(doc, |value, key| value.as_object()?.get(*key))
}

/// A sort key; all the keys of one sort are of the same kind.
#[derive(Debug)]
enum SortKey {
    /// Every value is a number, null or missing (`None`, first).
    Numeric(Option<Num>),
    /// The values compared as strings, as wazo-provd documents; null and missing are "".
    Text(String),
}

fn cmp_sort_keys(a: &SortKey, b: &SortKey) -> Ordering {
    match (a, b) {
        (SortKey::Numeric(None), SortKey::Numeric(None)) => Ordering::Equal,
        (SortKey::Numeric(None), SortKey::Numeric(Some(_))) => Ordering::Less,
        (SortKey::Numeric(Some(_)), SortKey::Numeric(None)) => Ordering::Greater,
        (SortKey::Numeric(Some(x)), SortKey::Numeric(Some(y))) => cmp_num(*x, *y),
        (SortKey::Text(x), SortKey::Text(y)) => x.cmp(y),
        // Never mixed within one sort; any fixed answer keeps the order total.
        (SortKey::Numeric(_), SortKey::Text(_)) => Ordering::Less,
        (SortKey::Text(_), SortKey::Numeric(_)) => Ordering::Greater,
    }
}

fn text_of(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Sorts stably on `key`. Values compare as strings, except that numbers compare numerically
/// when every value of the key is a number (or null/missing). A pairwise rule ("numeric when
/// both are numbers") is not transitive over a mix such as 9, 10 and "5", and an inconsistent
/// comparator can make `sort_by` panic, so the choice is made for the whole list.
fn sort_docs(docs: Vec<Value>, key: &str, descending: bool) -> Vec<Value> {
    let path: Vec<&str> = key.split('.').collect();
    let values: Vec<Option<&Value>> = docs
        .iter()
        .map(|doc| lookup(doc, &path).filter(|v| !v.is_null()))
        .collect();
    let numbers: Option<Vec<Option<Num>>> = values
        .iter()
        .map(|value| match value {
            None => Some(None),
            Some(Value::Number(n)) => Num::of(n).map(Some),
            Some(_) => None,
        })
        .collect();
    let keys: Vec<SortKey> = match numbers {
        Some(numbers) => numbers.into_iter().map(SortKey::Numeric).collect(),
        None => values
            .into_iter()
            .map(|value| SortKey::Text(text_of(value)))
            .collect(),
    };
    let mut keyed: Vec<(SortKey, Value)> = keys.into_iter().zip(docs).collect();
    // sort_by is stable; reversing the comparator (not the result) keeps equal keys in their
    // original order for DESC too, as Python's sort(reverse=True) does.
    keyed.sort_by(|(a, _), (b, _)| {
        let ord = cmp_sort_keys(a, b);
        if descending {
            ord.reverse()
        } else {
            ord
        }
    });
    keyed.into_iter().map(|(_, doc)| doc).collect()
}

/// Keeps `id` and each requested key that exists, dotted keys rebuilt as nested objects.
fn project(doc: &Value, fields: &[String]) -> Value {
    let mut out = Map::new();
    if let Some(id) = doc.get("id") {
        out.insert("id".to_owned(), id.clone());
    }
    for field in fields {
        let path: Vec<&str> = field.split('.').collect();
        if let Some(value) = lookup(doc, &path) {
            insert_nested(&mut out, &path, value.clone());
        }
    }
    Value::Object(out)
}

fn insert_nested(out: &mut Map<String, Value>, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            out.insert((*last).to_owned(), value);
        }
        [head, rest @ ..] => {
            let entry = out
                .entry((*head).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            // A non-object here cannot happen: `head` was either created above or copied whole
            // by a shorter field, and a whole object already holds this value.
            if let Value::Object(inner) = entry {
                insert_nested(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use serde_json::json;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(list: &[(&str, &str)]) -> Result<ListQuery, QueryError> {
        ListQuery::parse(&pairs(list))
    }

    fn with_selector(selector: Value) -> ListQuery {
        let Value::Object(map) = selector else {
            panic!("selector must be an object")
        };
        ListQuery {
            selector: Some(map),
            ..ListQuery::default()
        }
    }

    fn matches(selector: Value, doc: Value) -> bool {
        with_selector(selector)
            .matches(&doc)
            .expect("valid selector")
    }

    fn match_error(selector: Value) -> QueryError {
        with_selector(selector)
            .matches(&json!({"id": "x"}))
            .expect_err("invalid selector")
    }

    fn ids(docs: &[Value]) -> Vec<&str> {
        docs.iter().map(|d| d["id"].as_str().expect("id")).collect()
    }

    fn device() -> Value {
        json!({
            "id": "d1",
            "mac": "00:11:22:aa:bb:cc",
            "ip": "10.34.1.110",
            "configured": true,
            "port": 5060,
            "parent_ids": ["base", "defaultconfigdevice"],
            "raw_config": {
                "sip_lines": {"1": {"username": "alice"}, "2": {"username": "bob"}},
                "funckeys": [{"type": "blf", "value": "1001"}, {"type": "speeddial", "value": "1002"}]
            },
            "nested": [[{"k": 1}], [{"k": 2}]],
            "deep": [{"a": [{"b": "x"}, {"b": "y"}]}],
            "nothing": null
        })
    }

    // ---- parse: defaults and simple params ----

    #[test]
    fn empty_query_is_default() {
        assert_eq!(parse(&[]).unwrap(), ListQuery::default());
    }

    #[test]
    fn unknown_params_are_ignored() {
        assert_eq!(
            parse(&[("offset", "3"), ("order", "x")]).unwrap(),
            ListQuery::default()
        );
    }

    #[test]
    fn q_parses_an_object() {
        let q = parse(&[("q", r#"{"ip":"10.34.1.110"}"#)]).unwrap();
        assert_eq!(
            q.selector,
            Some(json!({"ip": "10.34.1.110"}).as_object().unwrap().clone())
        );
    }

    #[test]
    fn q_numbers_are_read_exactly() {
        // Found by tests/fuzz.rs: serde_json's default float parser was one unit in the last
        // place off for such numbers, so a selector written back as JSON read as another one.
        let exact = -1.2446492070115476e-301_f64;
        let q = parse(&[("q", r#"{"n":-1.2446492070115476e-301}"#)]).unwrap();
        let n = q.selector.unwrap()["n"].as_f64().unwrap();
        assert_eq!(n.to_bits(), exact.to_bits());
    }

    #[test]
    fn q_invalid_json_is_rejected() {
        let e = parse(&[("q", "{not json")]).unwrap_err();
        assert_eq!(e.param, "q");
        assert!(e.message.starts_with("invalid JSON"), "{e}");
        assert_eq!(parse(&[("q", "")]).unwrap_err().param, "q");
    }

    #[test]
    fn q_not_an_object_is_rejected() {
        for raw in ["[1,2]", "\"x\"", "3", "null"] {
            let e = parse(&[("q", raw)]).unwrap_err();
            assert_eq!(e, QueryError::new("q", "must be a JSON object"), "{raw}");
        }
    }

    #[test]
    fn q_with_unknown_operator_is_rejected_at_parse() {
        let e = parse(&[("q", r#"{"a":{"$gte":1}}"#)]).unwrap_err();
        assert_eq!(e, QueryError::new("q", "unknown operator $gte"));
        assert_eq!(e.to_string(), "query parameter q: unknown operator $gte");
    }

    #[test]
    fn q64_all_base64_flavours() {
        let json = r#"{"X_type":"registrar","n":">>>???"}"#;
        let want = parse(&[("q", json)]).unwrap().selector;
        assert!(want.is_some());
        for encoded in [
            STANDARD.encode(json),
            STANDARD_NO_PAD.encode(json),
            URL_SAFE.encode(json),
            URL_SAFE_NO_PAD.encode(json),
        ] {
            let q = parse(&[("q64", &encoded)]).unwrap();
            assert_eq!(q.selector, want, "{encoded}");
        }
    }

    #[test]
    fn q64_standard_alphabet_really_differs_from_url_safe() {
        // Make sure the test above exercised '+', '/', '-' and '_'.
        let json = r#"{"X_type":"registrar","n":">>>???"}"#;
        assert!(STANDARD.encode(json).contains(['+', '/']));
        assert!(URL_SAFE.encode(json).contains(['-', '_']));
    }

    #[test]
    fn q64_space_is_read_as_plus_and_newlines_are_dropped() {
        let json = r#"{"n":">>>???"}"#;
        let encoded = STANDARD.encode(json);
        assert!(encoded.contains('+'));
        let mangled = format!("{}\n", encoded.replace('+', " "));
        let q = parse(&[("q64", &mangled)]).unwrap();
        assert_eq!(q.selector, parse(&[("q", json)]).unwrap().selector);
    }

    #[test]
    fn q64_wins_over_q() {
        let q = parse(&[
            ("q", r#"{"X_type":"device"}"#),
            ("q64", &STANDARD.encode(r#"{"X_type":"registrar"}"#)),
        ])
        .unwrap();
        assert_eq!(q.selector.unwrap()["X_type"], json!("registrar"));
    }

    #[test]
    fn q_is_not_looked_at_when_q64_is_given() {
        let q = parse(&[("q", "{broken"), ("q64", &STANDARD.encode(r#"{"a":1}"#))]).unwrap();
        assert_eq!(q.selector.unwrap()["a"], json!(1));
    }

    #[test]
    fn q64_errors_name_q64() {
        let bad_base64 = parse(&[("q64", "!!!!"), ("q", "{}")]).unwrap_err();
        assert_eq!(bad_base64.param, "q64");
        assert!(
            bad_base64.message.starts_with("invalid base64"),
            "{bad_base64}"
        );

        let mixed_alphabets = parse(&[("q64", "ab+-")]).unwrap_err();
        assert_eq!(mixed_alphabets.param, "q64");

        let bad_json = parse(&[("q64", &STANDARD.encode("{nope"))]).unwrap_err();
        assert_eq!(bad_json.param, "q64");
        assert!(bad_json.message.starts_with("invalid JSON"), "{bad_json}");

        let not_object = parse(&[("q64", &STANDARD.encode("[1]"))]).unwrap_err();
        assert_eq!(not_object, QueryError::new("q64", "must be a JSON object"));

        let bad_op = parse(&[("q64", &STANDARD.encode(r#"{"a":{"$in":1}}"#))]).unwrap_err();
        assert_eq!(bad_op, QueryError::new("q64", "$in expects a list"));
    }

    #[test]
    fn a_repeated_parameter_is_refused() {
        for name in PARAMS {
            let err = parse(&[(name, "1"), ("other", "x"), (name, "1")]).unwrap_err();
            assert_eq!(err, QueryError::new(name, "given more than once"));
        }
        // Unknown parameters may repeat: they are ignored.
        assert!(parse(&[("x", "1"), ("x", "2"), ("skip", "1")]).is_ok());
    }

    #[test]
    fn fields_are_split_and_trimmed_and_empty_entries_dropped() {
        let q = parse(&[("fields", "mac, ip,,raw_config.sip_lines,")]).unwrap();
        assert_eq!(
            q.fields,
            Some(vec![
                "mac".to_owned(),
                "ip".to_owned(),
                "raw_config.sip_lines".to_owned()
            ])
        );
        assert_eq!(parse(&[("fields", "")]).unwrap().fields, Some(vec![]));
    }

    #[test]
    fn skip_and_limit_parse() {
        let q = parse(&[("skip", "5"), ("limit", "10")]).unwrap();
        assert_eq!((q.skip, q.limit), (5, Some(10)));
        assert_eq!(parse(&[("limit", "0")]).unwrap().limit, None);
        assert_eq!(parse(&[("skip", "0")]).unwrap().skip, 0);
    }

    #[test]
    fn skip_and_limit_errors() {
        for param in ["skip", "limit"] {
            for raw in ["-1", "abc", "", "1.5", "99999999999999999999999999"] {
                let e = parse(&[(param, raw)]).unwrap_err();
                assert_eq!(e.param, param, "{raw}");
                assert!(
                    e.message.starts_with("must be a non-negative integer"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn error_messages_bound_long_values() {
        let long = "x".repeat(1000);
        let e = parse(&[("limit", &long)]).unwrap_err();
        assert!(e.message.len() < 200, "{}", e.message);
    }

    #[test]
    fn sort_and_sort_ord() {
        let q = parse(&[("sort", "raw_config.ip")]).unwrap();
        assert_eq!(
            (q.sort.as_deref(), q.descending),
            (Some("raw_config.ip"), false)
        );
        for (raw, desc) in [
            ("ASC", false),
            ("asc", false),
            ("DESC", true),
            ("Desc", true),
        ] {
            let q = parse(&[("sort", "mac"), ("sort_ord", raw)]).unwrap();
            assert_eq!(q.descending, desc, "{raw}");
        }
    }

    #[test]
    fn sort_errors() {
        let e = parse(&[("sort", "mac"), ("sort_ord", "DOWN")]).unwrap_err();
        assert_eq!(e.param, "sort_ord");
        // A bad sort_ord is rejected even without sort.
        assert_eq!(parse(&[("sort_ord", "")]).unwrap_err().param, "sort_ord");
        assert_eq!(
            parse(&[("sort", "")]).unwrap_err(),
            QueryError::new("sort", "must name a key")
        );
    }

    #[test]
    fn recurse_values() {
        for (raw, want) in [
            ("true", true),
            ("True", true),
            ("1", true),
            ("false", false),
            ("False", false),
            ("0", false),
        ] {
            assert_eq!(parse(&[("recurse", raw)]).unwrap().recurse, want, "{raw}");
        }
        for raw in ["TRUE", "yes", "", "2"] {
            assert_eq!(
                parse(&[("recurse", raw)]).unwrap_err().param,
                "recurse",
                "{raw}"
            );
        }
    }

    // ---- selector: equality ----

    #[test]
    fn no_selector_and_empty_selector_match_everything() {
        assert!(ListQuery::default().matches(&device()).unwrap());
        assert!(matches(json!({}), device()));
    }

    #[test]
    fn plain_equality_and_and() {
        assert!(matches(json!({"ip": "10.34.1.110"}), device()));
        assert!(matches(
            json!({"ip": "10.34.1.110", "configured": true}),
            device()
        ));
        assert!(!matches(
            json!({"ip": "10.34.1.110", "configured": false}),
            device()
        ));
        assert!(!matches(json!({"ip": "10.34.1.111"}), device()));
        assert!(!matches(json!({"absent": "x"}), device()));
        assert!(matches(json!({"nothing": null}), device()));
        assert!(!matches(json!({"absent": null}), device()));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(matches(json!({"port": 5060.0}), device()));
        assert!(!matches(json!({"port": "5060"}), device()));
    }

    #[test]
    fn list_field_is_compared_whole() {
        assert!(matches(
            json!({"parent_ids": ["base", "defaultconfigdevice"]}),
            device()
        ));
        assert!(!matches(
            json!({"parent_ids": ["defaultconfigdevice", "base"]}),
            device()
        ));
        assert!(!matches(json!({"parent_ids": "base"}), device()));
    }

    #[test]
    fn object_without_dollar_keys_is_equality() {
        let lines = json!({"1": {"username": "alice"}, "2": {"username": "bob"}});
        assert!(matches(json!({"raw_config.sip_lines": lines}), device()));
        assert!(!matches(
            json!({"raw_config.sip_lines": {"1": {"username": "alice"}}}),
            device()
        ));
    }

    #[test]
    fn dotted_paths_through_objects() {
        assert!(matches(
            json!({"raw_config.sip_lines.1.username": "alice"}),
            device()
        ));
        assert!(matches(
            json!({"raw_config.sip_lines.2.username": "bob"}),
            device()
        ));
        assert!(!matches(
            json!({"raw_config.sip_lines.1.username": "bob"}),
            device()
        ));
        assert!(!matches(
            json!({"raw_config.sip_lines.3.username": "bob"}),
            device()
        ));
        assert!(!matches(json!({"ip.x": "10"}), device()));
    }

    #[test]
    fn dotted_paths_through_arrays_try_each_element() {
        assert!(matches(
            json!({"raw_config.funckeys.value": "1002"}),
            device()
        ));
        assert!(matches(
            json!({"raw_config.funckeys.type": "blf"}),
            device()
        ));
        assert!(!matches(
            json!({"raw_config.funckeys.value": "1003"}),
            device()
        ));
        // Nested arrays and arrays in the middle of a longer path.
        assert!(matches(json!({"nested.k": 2}), device()));
        assert!(matches(json!({"deep.a.b": "y"}), device()));
        assert!(!matches(json!({"deep.a.b": "z"}), device()));
    }

    // ---- selector: operators ----

    #[test]
    fn op_in() {
        assert!(matches(
            json!({"ip": {"$in": ["1.1.1.1", "10.34.1.110"]}}),
            device()
        ));
        assert!(!matches(json!({"ip": {"$in": ["1.1.1.1"]}}), device()));
        assert!(!matches(json!({"ip": {"$in": []}}), device()));
        assert!(!matches(json!({"absent": {"$in": [null]}}), device()));
        assert!(matches(
            json!({"raw_config.funckeys.value": {"$in": ["9", "1001"]}}),
            device()
        ));
        // A list field is one value, so $in needs the whole list.
        assert!(!matches(json!({"parent_ids": {"$in": ["base"]}}), device()));
        assert!(matches(
            json!({"parent_ids": {"$in": [["base", "defaultconfigdevice"]]}}),
            device()
        ));
    }

    #[test]
    fn op_nin() {
        assert!(matches(json!({"ip": {"$nin": ["1.1.1.1"]}}), device()));
        assert!(!matches(json!({"ip": {"$nin": ["10.34.1.110"]}}), device()));
        assert!(matches(json!({"absent": {"$nin": ["x"]}}), device()));
        // No element may be in the list.
        assert!(!matches(
            json!({"raw_config.funckeys.value": {"$nin": ["1002"]}}),
            device()
        ));
        assert!(matches(
            json!({"raw_config.funckeys.value": {"$nin": ["9"]}}),
            device()
        ));
    }

    #[test]
    fn op_contains() {
        assert!(matches(
            json!({"parent_ids": {"$contains": "base"}}),
            device()
        ));
        assert!(!matches(
            json!({"parent_ids": {"$contains": "autoprov"}}),
            device()
        ));
        assert!(matches(json!({"mac": {"$contains": "aa:bb"}}), device()));
        assert!(!matches(json!({"mac": {"$contains": "ff"}}), device()));
        assert!(!matches(json!({"mac": {"$contains": 1}}), device()));
        assert!(!matches(json!({"port": {"$contains": 5}}), device()));
        assert!(!matches(
            json!({"raw_config": {"$contains": "sip_lines"}}),
            device()
        ));
        assert!(!matches(json!({"absent": {"$contains": "x"}}), device()));
        assert!(matches(json!({"deep.a.b": {"$contains": "y"}}), device()));
        assert!(matches(
            json!({"raw_config.funckeys": {"$contains": {"type": "blf", "value": "1001"}}}),
            device()
        ));
    }

    #[test]
    fn op_comparisons_numbers() {
        assert!(matches(json!({"port": {"$gt": 5059}}), device()));
        assert!(!matches(json!({"port": {"$gt": 5060}}), device()));
        assert!(matches(json!({"port": {"$ge": 5060}}), device()));
        assert!(!matches(json!({"port": {"$ge": 5060.5}}), device()));
        assert!(matches(json!({"port": {"$lt": 5060.5}}), device()));
        assert!(!matches(json!({"port": {"$lt": 5060}}), device()));
        assert!(matches(json!({"port": {"$le": 5060}}), device()));
        assert!(!matches(json!({"port": {"$le": 5059.9}}), device()));
        assert!(matches(json!({"n": {"$lt": -1}}), json!({"n": -2.5})));
        assert!(matches(
            json!({"n": {"$gt": u64::MAX - 1}}),
            json!({"n": u64::MAX})
        ));
        assert!(matches(json!({"nested.k": {"$gt": 1}}), device()));
    }

    #[test]
    fn op_comparisons_strings_and_mixed() {
        assert!(matches(json!({"ip": {"$gt": "10.34.1.1"}}), device()));
        assert!(matches(json!({"ip": {"$lt": "9"}}), device()));
        assert!(matches(
            json!({"ip": {"$ge": "10.34.1.110", "$le": "10.34.1.110"}}),
            device()
        ));
        // Mixed types never match.
        assert!(!matches(json!({"port": {"$gt": "1"}}), device()));
        assert!(!matches(json!({"port": {"$lt": "9"}}), device()));
        assert!(!matches(json!({"ip": {"$gt": 1}}), device()));
        assert!(!matches(json!({"configured": {"$gt": 0}}), device()));
        assert!(!matches(json!({"nothing": {"$lt": 1}}), device()));
        assert!(!matches(json!({"absent": {"$lt": 1}}), device()));
    }

    #[test]
    fn op_ne() {
        assert!(matches(json!({"ip": {"$ne": "1.1.1.1"}}), device()));
        assert!(!matches(json!({"ip": {"$ne": "10.34.1.110"}}), device()));
        assert!(matches(json!({"absent": {"$ne": "x"}}), device()));
        assert!(!matches(
            json!({"raw_config.funckeys.type": {"$ne": "blf"}}),
            device()
        ));
    }

    #[test]
    fn op_exists() {
        assert!(matches(json!({"mac": {"$exists": true}}), device()));
        assert!(!matches(json!({"mac": {"$exists": false}}), device()));
        assert!(matches(json!({"absent": {"$exists": false}}), device()));
        assert!(!matches(json!({"absent": {"$exists": true}}), device()));
        assert!(matches(json!({"nothing": {"$exists": true}}), device()));
        assert!(matches(
            json!({"raw_config.sip_lines.1": {"$exists": true}}),
            device()
        ));
        assert!(matches(
            json!({"raw_config.sip_lines.3": {"$exists": false}}),
            device()
        ));
        assert!(matches(
            json!({"raw_config.funckeys.value": {"$exists": true}}),
            device()
        ));
    }

    #[test]
    fn several_operators_are_anded() {
        assert!(matches(
            json!({"port": {"$gt": 5000, "$lt": 6000}}),
            device()
        ));
        assert!(!matches(
            json!({"port": {"$gt": 5000, "$lt": 5060}}),
            device()
        ));
        assert!(matches(
            json!({"mac": {"$exists": true, "$ne": "x", "$contains": "00:11"}}),
            device()
        ));
    }

    #[test]
    fn operator_errors_name_q() {
        let cases = [
            (json!({"a": {"$gte": 1}}), "unknown operator $gte"),
            (json!({"a": {"$regex": "x"}}), "unknown operator $regex"),
            (json!({"a": {"$in": "x"}}), "$in expects a list"),
            (json!({"a": {"$nin": {"x": 1}}}), "$nin expects a list"),
            (
                json!({"a": {"$exists": 1}}),
                "$exists expects true or false",
            ),
            (
                json!({"a": {"$gt": null}}),
                "$gt expects a number or a string",
            ),
            (
                json!({"a": {"$ge": [1]}}),
                "$ge expects a number or a string",
            ),
            (
                json!({"a": {"$lt": true}}),
                "$lt expects a number or a string",
            ),
            (
                json!({"a": {"$le": {}}}),
                "$le expects a number or a string",
            ),
        ];
        for (selector, message) in cases {
            assert_eq!(match_error(selector), QueryError::new("q", message));
        }
        let mixed = match_error(json!({"a": {"$in": [1], "plain": 2}}));
        assert_eq!(mixed.param, "q");
        assert!(mixed.message.contains("plain"), "{mixed}");
    }

    #[test]
    fn apply_reports_a_bad_selector_even_without_documents() {
        let q = with_selector(json!({"a": {"$bogus": 1}}));
        assert_eq!(
            q.apply(vec![]).unwrap_err(),
            QueryError::new("q", "unknown operator $bogus")
        );
    }

    #[test]
    fn non_object_document_matches_only_absence() {
        assert!(!matches(json!({"a": 1}), json!(3)));
        assert!(matches(json!({"a": {"$exists": false}}), json!("x")));
    }

    // ---- apply: filter, sort, skip, limit, fields ----

    fn docs() -> Vec<Value> {
        vec![
            json!({"id": "a", "mac": "00:00:00:00:00:03", "n": 10, "t": "x"}),
            json!({"id": "b", "mac": "00:00:00:00:00:01", "n": 9, "t": "x"}),
            json!({"id": "c", "n": 100, "t": "y"}),
            json!({"id": "d", "mac": "00:00:00:00:00:02", "n": null, "t": "x"}),
            json!({"id": "e", "mac": null, "n": 9.5, "t": "y"}),
        ]
    }

    #[test]
    fn apply_without_parameters_returns_everything_in_order() {
        assert_eq!(ListQuery::default().apply(docs()).unwrap(), docs());
    }

    #[test]
    fn apply_filters() {
        let q = parse(&[("q", r#"{"t":"y"}"#)]).unwrap();
        assert_eq!(ids(&q.apply(docs()).unwrap()), ["c", "e"]);
    }

    #[test]
    fn sort_strings_asc_with_missing_and_null_first() {
        let q = parse(&[("sort", "mac")]).unwrap();
        // c (missing) and e (null) sort as "" and keep their order (stable).
        assert_eq!(ids(&q.apply(docs()).unwrap()), ["c", "e", "b", "d", "a"]);
    }

    #[test]
    fn sort_strings_desc_is_stable_too() {
        let q = parse(&[("sort", "mac"), ("sort_ord", "DESC")]).unwrap();
        assert_eq!(ids(&q.apply(docs()).unwrap()), ["a", "d", "b", "c", "e"]);
        let q = parse(&[("sort", "t"), ("sort_ord", "desc")]).unwrap();
        assert_eq!(ids(&q.apply(docs()).unwrap()), ["c", "e", "a", "b", "d"]);
    }

    #[test]
    fn sort_numbers_numerically() {
        let q = parse(&[("sort", "n")]).unwrap();
        assert_eq!(ids(&q.apply(docs()).unwrap()), ["d", "b", "e", "a", "c"]);
        let q = parse(&[("sort", "n"), ("sort_ord", "DESC")]).unwrap();
        assert_eq!(ids(&q.apply(docs()).unwrap()), ["c", "a", "e", "b", "d"]);
    }

    #[test]
    fn sort_mixed_values_as_strings() {
        let docs = vec![
            json!({"id": "ten", "v": 10}),
            json!({"id": "nine", "v": 9}),
            json!({"id": "five", "v": "5"}),
            json!({"id": "bool", "v": true}),
            json!({"id": "none"}),
        ];
        let q = parse(&[("sort", "v")]).unwrap();
        // "" < "10" < "5" < "9" < "true"
        assert_eq!(
            ids(&q.apply(docs).unwrap()),
            ["none", "ten", "five", "nine", "bool"]
        );
    }

    #[test]
    fn sort_large_and_mixed_precision_numbers_without_panicking() {
        let big = 9_007_199_254_740_993_i64; // 2^53 + 1, not exact as f64
        let docs = vec![
            json!({"id": "int+1", "v": big}),
            json!({"id": "float", "v": 9_007_199_254_740_992.0_f64}),
            json!({"id": "int", "v": big - 1}),
            json!({"id": "neg", "v": -0.0}),
            json!({"id": "zero", "v": 0}),
        ];
        let q = parse(&[("sort", "v")]).unwrap();
        assert_eq!(
            ids(&q.apply(docs).unwrap()),
            ["neg", "zero", "float", "int", "int+1"]
        );
    }

    #[test]
    fn sort_by_dotted_key() {
        let docs = vec![
            json!({"id": "a", "raw_config": {"sip_lines": {"1": {"username": "zed"}}}}),
            json!({"id": "b", "raw_config": {"sip_lines": {"1": {"username": "amy"}}}}),
            json!({"id": "c", "raw_config": {}}),
            json!({"id": "d", "raw_config": "not an object"}),
        ];
        let q = parse(&[("sort", "raw_config.sip_lines.1.username")]).unwrap();
        assert_eq!(ids(&q.apply(docs).unwrap()), ["c", "d", "b", "a"]);
    }

    #[test]
    fn skip_and_limit() {
        let run = |list: &[(&str, &str)]| {
            ids(&parse(list).unwrap().apply(docs()).unwrap())
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(&[("skip", "2")]), ["c", "d", "e"]);
        assert_eq!(run(&[("limit", "2")]), ["a", "b"]);
        assert_eq!(run(&[("skip", "1"), ("limit", "2")]), ["b", "c"]);
        assert_eq!(run(&[("limit", "0")]), ["a", "b", "c", "d", "e"]);
        assert_eq!(run(&[("skip", "9")]), Vec::<String>::new());
        assert_eq!(run(&[("limit", "99")]).len(), 5);
    }

    #[test]
    fn order_is_filter_sort_skip_limit() {
        let q = parse(&[
            ("q", r#"{"t":"x"}"#),
            ("sort", "mac"),
            ("skip", "1"),
            ("limit", "1"),
            ("fields", "mac"),
        ])
        .unwrap();
        // x docs sorted by mac: b(01), d(02), a(03); skip 1, limit 1 → d.
        assert_eq!(
            q.apply(docs()).unwrap(),
            vec![json!({"id": "d", "mac": "00:00:00:00:00:02"})]
        );
    }

    #[test]
    fn fields_keep_id_and_existing_keys() {
        let q = parse(&[("fields", "mac,absent,n")]).unwrap();
        let out = q.apply(docs()).unwrap();
        assert_eq!(
            out[0],
            json!({"id": "a", "mac": "00:00:00:00:00:03", "n": 10})
        );
        assert_eq!(out[2], json!({"id": "c", "n": 100}));
        // An existing null is kept.
        assert_eq!(
            out[3],
            json!({"id": "d", "mac": "00:00:00:00:00:02", "n": null})
        );
    }

    #[test]
    fn fields_empty_keeps_only_id() {
        let q = parse(&[("fields", ",")]).unwrap();
        assert_eq!(q.apply(vec![device()]).unwrap(), vec![json!({"id": "d1"})]);
    }

    #[test]
    fn fields_nested_are_rebuilt() {
        let q = parse(&[(
            "fields",
            "raw_config.sip_lines.1.username,raw_config.sip_lines.2,ip,raw_config.nope,mac.x",
        )])
        .unwrap();
        assert_eq!(
            q.apply(vec![device()]).unwrap(),
            vec![json!({
                "id": "d1",
                "ip": "10.34.1.110",
                "raw_config": {"sip_lines": {"1": {"username": "alice"}, "2": {"username": "bob"}}}
            })]
        );
    }

    #[test]
    fn fields_overlapping_keep_the_whole_value() {
        let whole = device()["raw_config"].clone();
        for fields in [
            "raw_config,raw_config.sip_lines.1",
            "raw_config.sip_lines.1,raw_config",
        ] {
            let q = parse(&[("fields", fields)]).unwrap();
            let out = q.apply(vec![device()]).unwrap();
            assert_eq!(
                out,
                vec![json!({"id": "d1", "raw_config": whole})],
                "{fields}"
            );
        }
    }

    #[test]
    fn fields_do_not_cross_arrays() {
        let q = parse(&[("fields", "raw_config.funckeys.value")]).unwrap();
        assert_eq!(q.apply(vec![device()]).unwrap(), vec![json!({"id": "d1"})]);
    }

    #[test]
    fn fields_without_id_in_document() {
        let q = parse(&[("fields", "a")]).unwrap();
        assert_eq!(
            q.apply(vec![json!({"a": 1, "b": 2})]).unwrap(),
            vec![json!({"a": 1})]
        );
    }
}
