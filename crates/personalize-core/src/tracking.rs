//! The tracking plan: checks one behaviour event (its envelope and its properties) against the
//! plan and either normalises it into a row ready to store or lists every violation.
//!
//! Plain Rust, no pgrx: the Postgres side hands us the event as JSON text and the plan as data.

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;

/// Envelope fields an event may carry; anything else at the top level is a violation.
pub const ENVELOPE_FIELDS: [&str; 7] = [
    "type",
    "user_id",
    "item_id",
    "session_id",
    "occurred_at",
    "client_event_id",
    "properties",
];

/// Events older than this are almost always an unset clock (epoch zero) or a unit mix-up.
pub const EARLIEST_EVENT: &str = "1995-01-01T00:00:00Z";

/// The wall clock, for the "not in the future" check.
pub fn now_utc() -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

/// Limits a caller cannot bypass; the Postgres side fills them from GUCs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted event, in bytes of its JSON text.
    pub max_event_bytes: usize,
    /// Deepest accepted nesting of objects and arrays (the event itself is depth 1).
    pub max_depth: usize,
    /// Longest accepted id (user, item, session, client event id), in characters.
    pub max_id_chars: usize,
    /// How far in the future `occurred_at` may lie (clock skew between app servers).
    pub max_future_seconds: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 32 * 1024,
            max_depth: 16,
            max_id_chars: 256,
            max_future_seconds: 86_400,
        }
    }
}

/// One reason an event is not accepted: a stable machine-readable code, the JSON path of the
/// offending value (`$` is the event itself) and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub code: &'static str,
    pub path: String,
    pub message: String,
}

impl Violation {
    pub fn new(code: &'static str, path: impl Into<String>, message: impl Into<String>) -> Self {
        Violation {
            code,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.path, self.message, self.code)
    }
}

/// One event type of the plan, ready to check events against.
pub struct EventTypeRule {
    pub requires_item: bool,
    /// `None` when the type accepts any properties object.
    pub properties: Option<jsonschema::Validator>,
}

/// The whole tracking plan, compiled.
#[derive(Default)]
pub struct TrackingPlan {
    types: HashMap<String, EventTypeRule>,
}

/// A JSON Schema the plan cannot use, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// Compiles one properties schema. Remote `$ref`s cannot resolve: the crate is built without
/// HTTP or file retrieval, so a plan can never make the database fetch anything.
pub fn compile_schema(schema: &Value) -> Result<Option<jsonschema::Validator>, SchemaError> {
    match schema {
        Value::Bool(true) => return Ok(None),
        Value::Object(map) if map.is_empty() => return Ok(None),
        Value::Object(_) | Value::Bool(false) => {}
        other => {
            return Err(SchemaError(format!(
                "a properties schema must be a JSON object or boolean, not {}",
                json_kind(other)
            )))
        }
    }
    if let Err(e) = jsonschema::meta::validate(schema) {
        return Err(SchemaError(format!(
            "not a valid JSON Schema: {} at {}",
            e,
            pointer_to_path(e.instance_path().as_str())
        )));
    }
    jsonschema::validator_for(schema)
        .map(Some)
        .map_err(|e| SchemaError(format!("cannot compile the JSON Schema: {e}")))
}

impl TrackingPlan {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an event type; the schema is compiled here, once.
    pub fn add_type(
        &mut self,
        name: &str,
        requires_item: bool,
        properties_schema: &Value,
    ) -> Result<(), SchemaError> {
        let properties = compile_schema(properties_schema)
            .map_err(|e| SchemaError(format!("event type \"{name}\": {}", e.0)))?;
        self.types.insert(
            name.to_owned(),
            EventTypeRule {
                requires_item,
                properties,
            },
        );
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    pub fn rule(&self, name: &str) -> Option<&EventTypeRule> {
        self.types.get(name)
    }
}

/// An accepted event, normalised and ready to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    pub event_type: String,
    pub user_id: String,
    pub item_id: Option<String>,
    pub session_id: Option<String>,
    /// Unix microseconds; `None` means "now" (the database's transaction time).
    pub occurred_at_us: Option<i64>,
    pub client_event_id: Option<String>,
    /// Whether the event carried a properties object (stored as given); else `{}` is stored.
    pub has_properties: bool,
}

/// What can be salvaged from a rejected event for the quarantine table, so a shop can group
/// rejections by type and user without re-parsing the payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RejectedEvent {
    pub event_type: Option<String>,
    pub user_id: Option<String>,
    pub client_event_id: Option<String>,
    pub violations: Vec<Violation>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Valid(ValidEvent),
    Rejected(RejectedEvent),
}

impl Verdict {
    pub fn violations(&self) -> &[Violation] {
        match self {
            Verdict::Valid(_) => &[],
            Verdict::Rejected(r) => &r.violations,
        }
    }
}

/// Checks one event given as JSON text (as Postgres prints a jsonb value).
/// `None` is an SQL NULL event.
pub fn check_event_text(
    text: Option<&str>,
    plan: &TrackingPlan,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Verdict {
    let Some(text) = text else {
        return rejected(Violation::new("null_event", "$", "the event is NULL"));
    };
    if text.len() > limits.max_event_bytes {
        return rejected(Violation::new(
            "oversize",
            "$",
            format!(
                "the event is {} bytes; the limit is {} bytes (personalize.max_event_bytes)",
                text.len(),
                limits.max_event_bytes
            ),
        ));
    }
    match parse_json(text) {
        // JSON text can only carry a NUL inside a string as the escape \u0000: without it in
        // the text, the walk that looks for NULs (and builds paths) is skipped.
        Ok(value) => check_event_inner(
            &value,
            Some(text),
            plan,
            limits,
            now,
            text.contains("\\u0000"),
        ),
        Err(v) => rejected(v),
    }
}

fn rejected(v: Violation) -> Verdict {
    Verdict::Rejected(RejectedEvent {
        violations: vec![v],
        ..Default::default()
    })
}

/// Parses JSON text, turning every failure into a violation with the path where it happened.
/// jsonb accepts numbers (1e400) and nesting that serde_json refuses: those become violations
/// here rather than panics further down.
pub fn parse_json(text: &str) -> Result<Value, Violation> {
    // The fast path; only a failure pays for parsing again with path tracking.
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed: Result<Value, _> = serde_path_to_error::deserialize(&mut de);
    match parsed {
        Ok(v) => {
            if let Err(e) = de.end() {
                return Err(Violation::new(
                    "malformed_json",
                    "$",
                    format!("trailing characters after the event: {e}"),
                ));
            }
            Ok(v)
        }
        Err(err) => {
            let path = serde_path_to_json_path(err.path());
            let inner = err.into_inner();
            let msg = inner.to_string();
            let (code, message) = if msg.contains("number out of range") {
                (
                    "number_out_of_range",
                    "number is outside the range of a double precision float".to_owned(),
                )
            } else if msg.contains("recursion limit") {
                (
                    "too_deep",
                    "nesting is deeper than serde_json's limit of 128 levels".to_owned(),
                )
            } else {
                ("malformed_json", format!("not valid JSON: {msg}"))
            };
            Err(Violation::new(code, path, message))
        }
    }
}

/// Paths deeper than this are cut (with "…"): hostile nesting must not make messages huge.
const MAX_PATH_SEGMENTS: usize = 20;

fn serde_path_to_json_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::from("$");
    for (n, seg) in path.iter().enumerate() {
        if n == MAX_PATH_SEGMENTS {
            out.push('…');
            break;
        }
        match seg {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => push_key(&mut out, key),
            serde_path_to_error::Segment::Enum { variant } => push_key(&mut out, variant),
            serde_path_to_error::Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

fn push_key(out: &mut String, key: &str) {
    let plain = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        out.push('.');
        out.push_str(key);
    } else {
        out.push_str(&format!("[{}]", serde_json::Value::String(key.to_owned())));
    }
}

/// Turns a JSON pointer (`/properties/price`) into the `$.properties.price` form used in every
/// violation message.
pub fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::from("$");
    if pointer.is_empty() {
        return out;
    }
    for raw in pointer.trim_start_matches('/').split('/') {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            push_key(&mut out, &seg);
        }
    }
    out
}

/// "a string", "an object", …: what a JSON value is, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Depth of nesting (a scalar is 0, `{}` is 1); stops counting past `limit` so hostile input
/// costs no more than the limit.
fn depth_exceeds(v: &Value, limit: usize) -> bool {
    fn walk(v: &Value, depth: usize, limit: usize) -> bool {
        match v {
            Value::Array(a) => depth + 1 > limit || a.iter().any(|x| walk(x, depth + 1, limit)),
            Value::Object(o) => depth + 1 > limit || o.values().any(|x| walk(x, depth + 1, limit)),
            _ => false,
        }
    }
    walk(v, 0, limit)
}

/// Finds strings (keys or values) that PostgreSQL text cannot hold (NUL), with their path.
fn find_nul_strings(v: &Value, path: &mut String, out: &mut Vec<Violation>) {
    match v {
        Value::String(s) if s.contains('\0') => out.push(Violation::new(
            "invalid_string",
            path.clone(),
            "string contains a NUL character (\\u0000), which PostgreSQL text cannot store",
        )),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                find_nul_strings(x, path, out);
                path.truncate(len);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                let len = path.len();
                push_key(path, k);
                if k.contains('\0') {
                    out.push(Violation::new(
                        "invalid_string",
                        path.clone(),
                        "key contains a NUL character (\\u0000), which PostgreSQL text cannot store",
                    ));
                }
                find_nul_strings(x, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The top-level `field` of the event's JSON text as written, when it is an integer literal
/// (digits, an optional minus, no fraction or exponent) of at most 200 digits.
fn raw_integer(text: &str, field: &str) -> Option<String> {
    let map: HashMap<&str, &serde_json::value::RawValue> = serde_json::from_str(text).ok()?;
    let raw = map.get(field)?.get();
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    (!digits.is_empty() && digits.len() <= 200 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| raw.to_owned())
}

/// Reads an id field: a non-empty string without control characters, or an integer (apps often
/// send numeric customer ids), normalised to text.
fn read_id(
    obj: &Map<String, Value>,
    text: Option<&str>,
    field: &str,
    limits: &Limits,
    out: &mut Vec<Violation>,
) -> Option<String> {
    let path = format!("$.{field}");
    match obj.get(field)? {
        Value::String(s) => {
            if s.trim().is_empty() {
                out.push(Violation::new(
                    "invalid_id",
                    path,
                    "must not be empty or only white space",
                ));
                None
            } else if s.chars().count() > limits.max_id_chars {
                out.push(Violation::new(
                    "invalid_id",
                    path,
                    format!(
                        "is {} characters long; the limit is {}",
                        s.chars().count(),
                        limits.max_id_chars
                    ),
                ));
                None
            } else if s.chars().any(char::is_control) {
                out.push(Violation::new(
                    "invalid_id",
                    path,
                    "must not contain control characters",
                ));
                None
            } else {
                Some(s.clone())
            }
        }
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        // An integer beyond 64 bits (serde_json read it as a float): the digits as written.
        Value::Number(_) if text.and_then(|t| raw_integer(t, field)).is_some() => {
            text.and_then(|t| raw_integer(t, field))
        }
        Value::Null => None,
        other => {
            out.push(Violation::new(
                "wrong_type",
                path,
                format!("must be a string or an integer, not {}", json_kind(other)),
            ));
            None
        }
    }
}

fn parse_timestamp(
    v: &Value,
    limits: &Limits,
    now: DateTime<Utc>,
    out: &mut Vec<Violation>,
) -> Option<i64> {
    let path = "$.occurred_at";
    let Value::String(s) = v else {
        out.push(Violation::new(
            "wrong_type",
            path,
            format!("must be an RFC 3339 timestamp string, not {}", json_kind(v)),
        ));
        return None;
    };
    let parsed: DateTime<FixedOffset> = match DateTime::parse_from_rfc3339(s) {
        Ok(t) => t,
        Err(e) => {
            out.push(Violation::new(
                "bad_timestamp",
                path,
                format!("\"{}\" is not an RFC 3339 timestamp with a time zone ({e}); example: 2026-11-23T14:05:00Z", truncate(s, 64)),
            ));
            return None;
        }
    };
    let utc = parsed.with_timezone(&Utc);
    let earliest = DateTime::parse_from_rfc3339(EARLIEST_EVENT)
        .expect("constant is valid")
        .with_timezone(&Utc);
    if utc < earliest {
        out.push(Violation::new(
            "timestamp_out_of_range",
            path,
            format!("{s} is before {EARLIEST_EVENT}, which is almost always an unset clock"),
        ));
        return None;
    }
    if (utc - now).num_seconds() > limits.max_future_seconds {
        out.push(Violation::new(
            "timestamp_out_of_range",
            path,
            format!(
                "{s} is more than {} seconds in the future (personalize.max_future_seconds)",
                limits.max_future_seconds
            ),
        ));
        return None;
    }
    Some(utc.timestamp_micros())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

/// Checks one parsed event against the plan; collects every violation rather than the first.
pub fn check_event(
    value: &Value,
    plan: &TrackingPlan,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Verdict {
    check_event_inner(value, None, plan, limits, now, true)
}

fn check_event_inner(
    value: &Value,
    text: Option<&str>,
    plan: &TrackingPlan,
    limits: &Limits,
    now: DateTime<Utc>,
    may_hold_nul: bool,
) -> Verdict {
    let Value::Object(obj) = value else {
        return rejected(Violation::new(
            "not_an_object",
            "$",
            format!("an event must be a JSON object, not {}", json_kind(value)),
        ));
    };
    let mut out = Vec::new();
    if depth_exceeds(value, limits.max_depth) {
        out.push(Violation::new(
            "too_deep",
            "$",
            format!(
                "nesting is deeper than {} levels (personalize.max_event_depth)",
                limits.max_depth
            ),
        ));
    }
    if may_hold_nul {
        find_nul_strings(value, &mut String::from("$"), &mut out);
    }

    for key in obj.keys() {
        if !ENVELOPE_FIELDS.contains(&key.as_str()) {
            let mut path = String::from("$");
            push_key(&mut path, key);
            out.push(Violation::new(
                "unknown_field",
                path,
                format!(
                    "is not an envelope field (allowed: {}); put custom data under properties",
                    ENVELOPE_FIELDS.join(", ")
                ),
            ));
        }
    }

    let event_type = match obj.get("type") {
        None | Some(Value::Null) => {
            out.push(Violation::new(
                "missing_field",
                "$.type",
                "is required: the event type, e.g. \"view\"",
            ));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            out.push(Violation::new(
                "wrong_type",
                "$.type",
                format!("must be a string, not {}", json_kind(other)),
            ));
            None
        }
    };
    let rule = match &event_type {
        Some(t) => match plan.rule(t) {
            Some(r) => Some(r),
            None => {
                out.push(Violation::new(
                    "unknown_event_type",
                    "$.type",
                    format!(
                        "\"{}\" is not in the tracking plan (personalize.event_types)",
                        truncate(t, 64)
                    ),
                ));
                None
            }
        },
        None => None,
    };

    let user_id = read_id(obj, text, "user_id", limits, &mut out);
    if user_id.is_none() && !out.iter().any(|v| v.path == "$.user_id") {
        out.push(Violation::new(
            "missing_field",
            "$.user_id",
            "is required: the id of the user (or anonymous visitor) who did this",
        ));
    }
    let item_id = read_id(obj, text, "item_id", limits, &mut out);
    if let Some(rule) = rule {
        if rule.requires_item && item_id.is_none() && !out.iter().any(|v| v.path == "$.item_id") {
            out.push(Violation::new(
                "missing_field",
                "$.item_id",
                format!(
                    "is required for \"{}\" events",
                    event_type.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    let session_id = read_id(obj, text, "session_id", limits, &mut out);
    let client_event_id = read_id(obj, text, "client_event_id", limits, &mut out);
    let occurred_at = match obj.get("occurred_at") {
        None | Some(Value::Null) => None,
        Some(v) => parse_timestamp(v, limits, now, &mut out),
    };

    match obj.get("properties") {
        None | Some(Value::Null) => {
            if let Some(rule) = rule {
                check_properties(rule, &Value::Object(Map::new()), &mut out);
            }
        }
        Some(props @ Value::Object(_)) => {
            if let Some(rule) = rule {
                check_properties(rule, props, &mut out);
            }
        }
        Some(other) => out.push(Violation::new(
            "wrong_type",
            "$.properties",
            format!("must be an object, not {}", json_kind(other)),
        )),
    }

    if out.is_empty() {
        Verdict::Valid(ValidEvent {
            event_type: event_type.expect("valid events have a type"),
            user_id: user_id.expect("valid events have a user"),
            item_id,
            session_id,
            occurred_at_us: occurred_at,
            client_event_id,
            has_properties: matches!(obj.get("properties"), Some(Value::Object(_))),
        })
    } else {
        Verdict::Rejected(RejectedEvent {
            event_type,
            user_id,
            client_event_id,
            violations: out,
        })
    }
}

fn check_properties(rule: &EventTypeRule, props: &Value, out: &mut Vec<Violation>) {
    let Some(validator) = &rule.properties else {
        return;
    };
    if validator.is_valid(props) {
        return;
    }
    for err in validator.iter_errors(props) {
        let keyword = err.kind().keyword();
        let code = match keyword {
            "required" => "missing_property",
            "type" => "wrong_type",
            "additionalProperties" | "unevaluatedProperties" => "unknown_property",
            _ => "schema_violation",
        };
        let mut path = String::from("$.properties");
        path.push_str(&pointer_to_path(err.instance_path().as_str())[1..]);
        let message = if code == "schema_violation" {
            format!("{err} (schema keyword \"{keyword}\")")
        } else {
            err.to_string()
        };
        out.push(Violation::new(code, path, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> TrackingPlan {
        let mut p = TrackingPlan::new();
        p.add_type(
            "view",
            true,
            &json!({"type":"object","properties":{"category":{"type":"string"},"price":{"type":"number","minimum":0}},"additionalProperties":false}),
        )
        .unwrap();
        p.add_type(
            "search",
            false,
            &json!({"type":"object","required":["query"],"properties":{"query":{"type":"string"}}}),
        )
        .unwrap();
        p
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn check(text: &str) -> Verdict {
        check_event_text(Some(text), &plan(), &Limits::default(), now())
    }

    fn codes(v: &Verdict) -> Vec<(&'static str, String)> {
        v.violations()
            .iter()
            .map(|v| (v.code, v.path.clone()))
            .collect()
    }

    #[test]
    fn accepts_a_valid_view_and_normalises_it() {
        let v = check(
            r#"{"type":"view","user_id":42,"item_id":"85123A","occurred_at":"2026-11-23T13:05:00+01:00","properties":{"price":2.5}}"#,
        );
        assert_eq!(
            v,
            Verdict::Valid(ValidEvent {
                event_type: "view".into(),
                user_id: "42".into(),
                item_id: Some("85123A".into()),
                session_id: None,
                occurred_at_us: Some(
                    DateTime::parse_from_rfc3339("2026-11-23T12:05:00Z")
                        .unwrap()
                        .timestamp_micros()
                ),
                client_event_id: None,
                has_properties: true,
            })
        );
    }

    #[test]
    fn an_integer_id_beyond_64_bits_keeps_its_digits() {
        let big = "123456789012345678901234567890";
        let v = check(&format!(
            r#"{{"type":"view","user_id":{big},"item_id":-98765432109876543210987}}"#
        ));
        let Verdict::Valid(e) = v else {
            panic!("rejected: {v:?}")
        };
        assert_eq!(e.user_id, big);
        assert_eq!(e.item_id.as_deref(), Some("-98765432109876543210987"));
        // A float is still not an id, however large.
        let v = check(r#"{"type":"view","user_id":1.5e30,"item_id":"i"}"#);
        assert_eq!(codes(&v), vec![("wrong_type", "$.user_id".to_string())]);
        let v = check(r#"{"type":"view","user_id":12.0,"item_id":"i"}"#);
        assert_eq!(codes(&v), vec![("wrong_type", "$.user_id".to_string())]);
    }

    #[test]
    fn lists_every_violation_with_its_path() {
        let v = check(
            r#"{"type":"view","user_id":"","extra":1,"properties":{"price":"cheap","colour":"red"}}"#,
        );
        let mut got = codes(&v);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("invalid_id", "$.user_id".to_string()),
                ("missing_field", "$.item_id".to_string()),
                ("unknown_field", "$.extra".to_string()),
                ("unknown_property", "$.properties".to_string()),
                ("wrong_type", "$.properties.price".to_string()),
            ]
        );
    }

    #[test]
    fn unknown_type_and_missing_user() {
        let v = check(r#"{"type":"teleport"}"#);
        assert_eq!(
            codes(&v),
            vec![
                ("unknown_event_type", "$.type".to_string()),
                ("missing_field", "$.user_id".to_string())
            ]
        );
    }

    #[test]
    fn required_property_from_schema() {
        let v = check(r#"{"type":"search","user_id":"u1"}"#);
        assert_eq!(
            codes(&v),
            vec![("missing_property", "$.properties".to_string())]
        );
        assert!(v.violations()[0].message.contains("query"));
    }

    #[test]
    fn huge_numbers_and_deep_nesting_are_violations_not_panics() {
        let big = format!("1{}", "0".repeat(400));
        let v = check(&format!(
            r#"{{"type":"view","user_id":"u","item_id":"i","properties":{{"price":{big}}}}}"#
        ));
        assert_eq!(
            codes(&v),
            vec![("number_out_of_range", "$.properties.price".to_string())]
        );
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        let v = check(&format!(
            r#"{{"type":"search","user_id":"u","properties":{{"query":"x","d":{deep}}}}}"#
        ));
        assert_eq!(v.violations()[0].code, "too_deep");
        assert!(v.violations()[0].path.ends_with("…"));
        assert!(v.violations()[0].path.len() < 120);
        let moderately_deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let v = check(&format!(
            r#"{{"type":"search","user_id":"u","properties":{{"query":"x","d":{moderately_deep}}}}}"#
        ));
        assert_eq!(codes(&v), vec![("too_deep", "$".to_string())]);
    }

    #[test]
    fn nul_and_control_characters() {
        let v = check(r#"{"type":"search","user_id":"u\u0000x","properties":{"query":"a\u0000"}}"#);
        let got = codes(&v);
        assert!(got.contains(&("invalid_string", "$.user_id".to_string())));
        assert!(got.contains(&("invalid_string", "$.properties.query".to_string())));
        assert!(got.contains(&("invalid_id", "$.user_id".to_string())));
    }

    #[test]
    fn timestamps() {
        let t = |ts: &str| {
            codes(&check(&format!(
                r#"{{"type":"search","user_id":"u","occurred_at":{ts},"properties":{{"query":"x"}}}}"#
            )))
        };
        assert_eq!(t(r#""yesterday""#)[0].0, "bad_timestamp");
        assert_eq!(
            t(r#""1970-01-01T00:00:00Z""#)[0].0,
            "timestamp_out_of_range"
        );
        assert_eq!(
            t(r#""2999-01-01T00:00:00Z""#)[0].0,
            "timestamp_out_of_range"
        );
        assert_eq!(t(r#""2026-11-23T10:00:00""#)[0].0, "bad_timestamp");
        assert_eq!(t("1700000000")[0].0, "wrong_type");
        assert!(t(r#""2026-11-23T10:00:00Z""#).is_empty());
    }

    #[test]
    fn null_non_object_oversize_and_malformed() {
        let p = plan();
        let l = Limits::default();
        assert_eq!(
            check_event_text(None, &p, &l, now()).violations()[0].code,
            "null_event"
        );
        assert_eq!(codes(&check("[1,2]"))[0].0, "not_an_object");
        assert_eq!(codes(&check("{\"type\":"))[0].0, "malformed_json");
        let small = Limits {
            max_event_bytes: 10,
            ..l
        };
        assert_eq!(
            check_event_text(
                Some(r#"{"type":"search","user_id":"u"}"#),
                &p,
                &small,
                now()
            )
            .violations()[0]
                .code,
            "oversize"
        );
    }

    #[test]
    fn properties_must_be_an_object_and_ids_must_be_scalars() {
        let got = codes(&check(
            r#"{"type":"view","user_id":["a"],"item_id":1.5,"properties":[1]}"#,
        ));
        assert!(got.contains(&("wrong_type", "$.user_id".to_string())));
        assert!(got.contains(&("wrong_type", "$.item_id".to_string())));
        assert!(got.contains(&("wrong_type", "$.properties".to_string())));
    }

    #[test]
    fn rejects_bad_schemas_on_write() {
        assert!(compile_schema(&json!({"type": "no-such-type"})).is_err());
        assert!(compile_schema(&json!(42)).is_err());
        assert!(compile_schema(&json!({})).unwrap().is_none());
        assert!(compile_schema(&json!({"type": "object"}))
            .unwrap()
            .is_some());
    }

    #[test]
    fn pointer_paths() {
        assert_eq!(pointer_to_path(""), "$");
        assert_eq!(pointer_to_path("/a/0/b c"), "$.a[0][\"b c\"]");
        assert_eq!(pointer_to_path("/x~1y"), "$[\"x/y\"]");
    }
}
