//! Segments: a structured definition (JSON with `all` / `any` / `not` over predicates on the
//! event log), validated with the JSON path of every mistake and compiled to parameterised SQL.
//!
//! The compiled SQL is built only from fixed fragments in this file; every value the user wrote
//! (categories, item ids, intervals, numbers) travels as an element of one `text[]` parameter
//! (`$2[n]`, cast in SQL). User text is never spliced into the query.
//!
//! Each predicate compiles to a query yielding the set of matching user ids; `all` is
//! INTERSECT (minus the `not`s), `any` is UNION, a lone `not` is the universe minus its set.
//! The same tree compiles in two forms: for every user (`segment_members`: set operations over
//! grouped scans of the log) and for one user (`in_segment`: each scan restricted to `$1`, which
//! the events index serves).

use serde_json::{Map, Value};

use crate::tracking::json_kind;
use std::fmt::Write;

/// Deepest nesting of `all` / `any` / `not` accepted.
pub const MAX_DEPTH: usize = 12;
/// Most predicates in one definition.
pub const MAX_PREDICATES: usize = 64;
/// Longest category / item id / event type value.
pub const MAX_VALUE_CHARS: usize = 200;

/// The predicates a definition may use, for error hints.
pub const PREDICATES: [&str; 8] = [
    "bought",
    "viewed",
    "viewed_without_buying",
    "event_count",
    "total_spend",
    "average_order_value",
    "last_seen",
    "days_since_last_purchase",
];

/// Why a definition is refused: the JSON path of the offending value and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for SegmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, SegmentError> {
    Err(SegmentError {
        path: path.to_owned(),
        message: message.into(),
    })
}

/// Which items a bought / viewed predicate looks at.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    pub category: Option<String>,
    pub item_id: Option<String>,
    /// Only events newer than now() minus this interval (canonical text, e.g. "7 days").
    pub within: Option<String>,
}

/// A numeric range; at least one end is set.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    Bought {
        scope: Scope,
        min_count: i64,
    },
    Viewed {
        scope: Scope,
        min_count: i64,
    },
    ViewedWithoutBuying {
        scope: Scope,
    },
    EventCount {
        event_type: String,
        within: Option<String>,
        range: Range,
    },
    TotalSpend {
        within: Option<String>,
        range: Range,
    },
    AverageOrderValue {
        within: Option<String>,
        range: Range,
    },
    /// Last event within the interval (`seen = true`) or not within it (`seen = false`).
    LastSeen {
        interval: String,
        seen: bool,
    },
    DaysSinceLastPurchase {
        range: Range,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Predicate(Predicate),
}

/// Parses and validates a definition (JSON text).
pub fn parse(text: &str) -> Result<Node, SegmentError> {
    let value: Value =
        serde_json::from_str(text).or_else(|e| err("$", format!("not JSON: {e}")))?;
    let mut count = 0;
    parse_node(&value, "$", 1, &mut count)
}

fn parse_node(
    v: &Value,
    path: &str,
    depth: usize,
    count: &mut usize,
) -> Result<Node, SegmentError> {
    if depth > MAX_DEPTH {
        return err(path, format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let Some(obj) = v.as_object() else {
        return err(
            path,
            format!(
                "expected an object like {{\"all\": [...]}} or {{\"bought\": {{...}}}}, got {}",
                json_kind(v)
            ),
        );
    };
    if obj.len() != 1 {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        return err(
            path,
            format!(
                "expected exactly one key (all, any, not or a predicate), got {}",
                if keys.is_empty() {
                    "none".to_owned()
                } else {
                    keys.join(", ")
                }
            ),
        );
    }
    let (key, inner) = obj.iter().next().expect("one key");
    let here = format!("{path}.{key}");
    match key.as_str() {
        "all" | "any" => {
            let Some(items) = inner.as_array() else {
                return err(
                    &here,
                    format!("expected an array of conditions, got {}", json_kind(inner)),
                );
            };
            if items.is_empty() {
                return err(&here, "must hold at least one condition");
            }
            let children = items
                .iter()
                .enumerate()
                .map(|(i, c)| parse_node(c, &format!("{here}[{i}]"), depth + 1, count))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if key == "all" {
                Node::All(children)
            } else {
                Node::Any(children)
            })
        }
        "not" => Ok(Node::Not(Box::new(parse_node(
            inner,
            &here,
            depth + 1,
            count,
        )?))),
        name => {
            *count += 1;
            if *count > MAX_PREDICATES {
                return err(&here, format!("more than {MAX_PREDICATES} predicates"));
            }
            parse_predicate(name, inner, &here).map(Node::Predicate)
        }
    }
}

/// The arguments of one predicate: every key must be known, each read at most once.
struct Args<'a> {
    obj: &'a Map<String, Value>,
    path: &'a str,
}

impl<'a> Args<'a> {
    fn new(v: &'a Value, path: &'a str, allowed: &[&str]) -> Result<Self, SegmentError> {
        let Some(obj) = v.as_object() else {
            return err(
                path,
                format!("expected an object of arguments, got {}", json_kind(v)),
            );
        };
        for k in obj.keys() {
            if !allowed.contains(&k.as_str()) {
                return err(
                    &format!("{path}.{k}"),
                    format!("unknown argument; allowed: {}", allowed.join(", ")),
                );
            }
        }
        Ok(Args { obj, path })
    }

    fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn text(&self, key: &str) -> Result<Option<String>, SegmentError> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_VALUE_CHARS => {
                Ok(Some(s.clone()))
            }
            Some(Value::String(_)) => err(
                &self.path(key),
                format!("must be a non-empty string of at most {MAX_VALUE_CHARS} characters"),
            ),
            Some(v) => err(
                &self.path(key),
                format!("expected a string, got {}", json_kind(v)),
            ),
        }
    }

    fn interval(&self, key: &str) -> Result<Option<String>, SegmentError> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => parse_interval(s)
                .map(Some)
                .or_else(|m| err(&self.path(key), m)),
            Some(v) => err(
                &self.path(key),
                format!(
                    "expected an interval string like \"7 days\", got {}",
                    json_kind(v)
                ),
            ),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>, SegmentError> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if (0.0..=1e15).contains(&x) => Ok(Some(x)),
                _ => err(&self.path(key), "must be a number between 0 and 1e15"),
            },
            Some(v) => err(
                &self.path(key),
                format!("expected a number, got {}", json_kind(v)),
            ),
        }
    }

    fn count(&self, key: &str) -> Result<Option<i64>, SegmentError> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(x) if (1..=1_000_000_000).contains(&x) => Ok(Some(x)),
                _ => err(
                    &self.path(key),
                    "must be a whole number between 1 and 1000000000",
                ),
            },
            Some(v) => err(
                &self.path(key),
                format!("expected a whole number, got {}", json_kind(v)),
            ),
        }
    }

    fn range(&self) -> Result<Range, SegmentError> {
        let range = Range {
            min: self.number("min")?,
            max: self.number("max")?,
        };
        match (range.min, range.max) {
            (None, None) => err(self.path, "needs min, max or both"),
            (Some(lo), Some(hi)) if lo > hi => {
                err(self.path, format!("min ({lo}) is above max ({hi})"))
            }
            _ => Ok(range),
        }
    }

    fn scope(&self) -> Result<Scope, SegmentError> {
        Ok(Scope {
            category: self.text("category")?,
            item_id: self.text("item_id")?,
            within: self.interval("within")?,
        })
    }
}

fn parse_predicate(name: &str, v: &Value, path: &str) -> Result<Predicate, SegmentError> {
    Ok(match name {
        "bought" | "viewed" => {
            let a = Args::new(v, path, &["category", "item_id", "within", "min_count"])?;
            let scope = a.scope()?;
            let min_count = a.count("min_count")?.unwrap_or(1);
            if name == "bought" {
                Predicate::Bought { scope, min_count }
            } else {
                Predicate::Viewed { scope, min_count }
            }
        }
        "viewed_without_buying" => {
            let a = Args::new(v, path, &["category", "item_id", "within"])?;
            Predicate::ViewedWithoutBuying { scope: a.scope()? }
        }
        "event_count" => {
            let a = Args::new(v, path, &["event_type", "within", "min", "max"])?;
            let Some(event_type) = a.text("event_type")? else {
                return err(path, "needs event_type");
            };
            let range = a.range()?;
            Predicate::EventCount {
                event_type,
                within: a.interval("within")?,
                range,
            }
        }
        "total_spend" | "average_order_value" => {
            let a = Args::new(v, path, &["within", "min", "max"])?;
            let (within, range) = (a.interval("within")?, a.range()?);
            if name == "total_spend" {
                Predicate::TotalSpend { within, range }
            } else {
                Predicate::AverageOrderValue { within, range }
            }
        }
        "last_seen" => {
            let a = Args::new(v, path, &["within", "not_within"])?;
            match (a.interval("within")?, a.interval("not_within")?) {
                (Some(i), None) => Predicate::LastSeen {
                    interval: i,
                    seen: true,
                },
                (None, Some(i)) => Predicate::LastSeen {
                    interval: i,
                    seen: false,
                },
                _ => {
                    return err(
                        path,
                        "needs exactly one of within (active users) or not_within (lapsed users)",
                    )
                }
            }
        }
        "days_since_last_purchase" => {
            let a = Args::new(v, path, &["min", "max"])?;
            Predicate::DaysSinceLastPurchase { range: a.range()? }
        }
        other => {
            return err(
                path,
                format!(
                    "unknown condition \"{}\"; use all, any, not or one of: {}",
                    other.chars().take(60).collect::<String>(),
                    PREDICATES.join(", ")
                ),
            )
        }
    })
}

/// The longest interval a segment may use: 100 years (counted as 365-day years; a month is 30
/// days here, so no calendar reading of an accepted interval reaches 102 years).
const MAX_SEGMENT_INTERVAL_SECONDS: u128 = 100 * 31_536_000;

/// Parses an interval such as "7 days", "2 hours 30 minutes" or "1 week" into its canonical
/// text. Only whole numbers and these units, so Postgres reads it the same way.
pub fn parse_interval(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "\"{}\" is not an interval like \"7 days\" or \"2 hours 30 minutes\" \
             (units: seconds, minutes, hours, days, weeks, months, years)",
            s.chars().take(60).collect::<String>()
        )
    };
    let words: Vec<&str> = s.split_whitespace().collect();
    if words.is_empty() || !words.len().is_multiple_of(2) || words.len() > 14 {
        return Err(bad());
    }
    let mut parts = Vec::new();
    let mut total = 0u128;
    for pair in words.chunks(2) {
        let n: u64 = pair[0].parse().map_err(|_| bad())?;
        if n > 100_000_000 {
            return Err(bad());
        }
        let unit = pair[1].to_ascii_lowercase();
        let (unit, seconds) = match unit.trim_end_matches('s') {
            "second" | "sec" => ("seconds", 1),
            "minute" | "min" => ("minutes", 60),
            "hour" => ("hours", 3600),
            "day" => ("days", 86_400),
            "week" => ("weeks", 604_800),
            "month" | "mon" => ("months", 2_592_000),
            "year" => ("years", 31_536_000),
            _ => return Err(bad()),
        };
        total += u128::from(n) * seconds;
        parts.push(format!("{n} {unit}"));
    }
    if total == 0 {
        return Err(format!(
            "\"{s}\" is an empty interval; use a positive one like \"7 days\""
        ));
    }
    // now() minus the interval must stay a valid timestamp for as long as the segment is
    // used (a segment of "7000 years" passed this check once and then made every query of it,
    // and every claim of its campaigns' channel, fail with 22008).
    if total > MAX_SEGMENT_INTERVAL_SECONDS {
        return Err(format!(
            "\"{}\" is longer than 100 years, the longest interval a segment may look back",
            s.chars().take(60).collect::<String>()
        ));
    }
    Ok(parts.join(" "))
}

/// A compiled definition: SQL with `$1` the user id (one-user form) and `$2` a `text[]` of
/// the definition's values.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub sql: String,
    pub params: Vec<String>,
}

/// The form a definition compiles to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `SELECT user_id` of every member, sorted (`segment_members`).
    Members,
    /// `SELECT boolean`: is `$1` a member (`in_segment`).
    OneUser,
    /// `SELECT user_id` of the members among the users in `$1` (`text[]`), unsorted: the
    /// campaign trigger checks a whole statement's users in one query. Each candidate is
    /// tested on their own events (the one-user form, correlated), so the cost follows the
    /// candidates' events, never the whole log or catalogue.
    Among,
}

pub fn compile(node: &Node, form: Form) -> Compiled {
    let mut c = Compiler {
        params: Vec::new(),
        form,
    };
    let set = c.node(node);
    let sql = match form {
        Form::Members => format!("SELECT s.user_id FROM ({set}) AS s(user_id) ORDER BY 1"),
        Form::OneUser => format!("SELECT EXISTS ({set})"),
        Form::Among => format!(
            "SELECT cand.user_id \
               FROM (SELECT DISTINCT c.u FROM pg_catalog.unnest(CAST($1 AS pg_catalog.text[])) AS c(u)) \
                    AS cand(user_id) \
              WHERE EXISTS ({set})"
        ),
    };
    Compiled {
        sql,
        params: c.params,
    }
}

// What each predicate means, over one event row `e` and its catalogue row `i`: the one
// definition both the compiled segments (below) and the SQL predicate functions
// (`predicate_functions_sql`, installed from sql/segment_predicates.sql) are built from.

/// `e` is a purchase: its type is marked `is_purchase` in the tracking plan.
const PURCHASE_TYPES: &str = "e.event_type OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT t.event_type FROM personalize.event_types t WHERE t.is_purchase))";
/// `e` is a view.
const VIEW_TYPES: &str = "e.event_type OPERATOR(pg_catalog.=) 'view'";
/// The events (`e`), with their items' catalogue rows (`i`, when there are any) if `items`.
fn events_from(items: bool) -> &'static str {
    if items {
        "personalize.events e LEFT JOIN personalize.items i ON i.item_id OPERATOR(pg_catalog.=) e.item_id"
    } else {
        "personalize.events e"
    }
}
/// The purchase value of `e` (the function itself is hand-written SQL in sql/segments.sql).
const EVENT_VALUE: &str = "personalize._event_value(e.properties, i.price)";
/// The order an event belongs to (its own event when it names none).
const EVENT_ORDER: &str = "COALESCE(e.properties OPERATOR(pg_catalog.->>) 'order_id', \
CAST(e.event_id AS pg_catalog.text))";
/// Time of the newest of the events aggregated.
const NEWEST_EVENT: &str = "pg_catalog.max(e.occurred_at)";

/// `e` is of the event type `t`.
fn of_type(t: &str) -> String {
    format!("e.event_type OPERATOR(pg_catalog.=) {t}")
}

/// `e` happened less than `interval` ago.
fn newer_than(interval: &str) -> String {
    format!(
        "e.occurred_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) {interval})"
    )
}

/// `e` is about the item `item`.
fn of_item(item: &str) -> String {
    format!("e.item_id OPERATOR(pg_catalog.=) {item}")
}

/// `e` is in the category `category`: by its own properties or by its item's catalogue row.
fn in_category(category: &str) -> String {
    format!(
        "(e.properties OPERATOR(pg_catalog.->>) 'category' OPERATOR(pg_catalog.=) {category} \
         OR i.category OPERATOR(pg_catalog.=) {category})"
    )
}

/// Sum of the purchase values aggregated.
fn total_spend() -> String {
    format!("pg_catalog.sum({EVENT_VALUE})")
}

/// Total spend over the number of orders (NULL over no purchases: the division is strict).
fn average_order_value() -> String {
    format!(
        "({} OPERATOR(pg_catalog./) pg_catalog.count(DISTINCT {EVENT_ORDER}))",
        total_spend()
    )
}

/// Days (fractional, double precision) since the newest of the events aggregated.
fn days_since_newest() -> String {
    format!(
        "pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) {NEWEST_EVENT}) \
         OPERATOR(pg_catalog./) 86400"
    )
}

/// One SQL predicate function: `personalize.<name>(user_id text, <args>)`.
struct PredicateFunction {
    name: &'static str,
    /// The arguments after `user_id`, with their defaults.
    args: &'static str,
    /// The argument types after `text`, for `COMMENT ON`.
    arg_types: &'static str,
    returns: &'static str,
    comment: &'static str,
}

/// The user's events (`e`, with `i` when `items`) that meet `conds`, as FROM and WHERE.
fn users_events(f: &str, items: bool, conds: &[String]) -> String {
    let mut sql = format!(
        "FROM {}\n     WHERE e.user_id OPERATOR(pg_catalog.=) {f}.user_id",
        events_from(items)
    );
    for c in conds {
        let _ = write!(sql, "\n       AND {c}");
    }
    sql
}

/// `cond` over the argument `arg` of function `f`, true when the argument is NULL.
fn unless_null(f: &str, arg: &str, cond: impl Fn(&str) -> String) -> String {
    let reference = format!("{f}.{arg}");
    format!("({reference} IS NULL OR {})", cond(&reference))
}

/// The body of a bought / viewed predicate function: any of the user's events of `kind` in the
/// scope its NULL-able arguments (category, within, item_id) describe.
fn scope_exists(f: &str, kind: &str) -> String {
    let conds = [
        kind.to_owned(),
        unless_null(f, "within", newer_than),
        unless_null(f, "item_id", of_item),
        unless_null(f, "category", in_category),
    ];
    let events = users_events(f, true, &conds).replace('\n', "\n    ");
    format!("SELECT EXISTS (\n        SELECT 1 {events})")
}

/// The SQL predicate functions (`personalize.bought(user_id, …)` and the rest, usable in any
/// WHERE clause), built from the same fragments as compiled segments so the two cannot mean
/// different things. sql/segment_predicates.sql is this text; a unit test keeps it current.
pub fn predicate_functions_sql() -> String {
    const SCOPE_ARGS: &str =
        "category text DEFAULT NULL, within interval DEFAULT NULL, item_id text DEFAULT NULL";
    let functions = [
        (
            PredicateFunction {
                name: "bought",
                args: SCOPE_ARGS,
                arg_types: "text, interval, text",
                returns: "boolean",
                comment: "Whether the user bought (an is_purchase event type) anything, in a category, an item, within an interval (NULL arguments: no restriction)",
            },
            scope_exists("bought", PURCHASE_TYPES),
        ),
        (
            PredicateFunction {
                name: "viewed",
                args: SCOPE_ARGS,
                arg_types: "text, interval, text",
                returns: "boolean",
                comment: "Whether the user viewed (event type view) anything, in a category, an item, within an interval",
            },
            scope_exists("viewed", VIEW_TYPES),
        ),
        (
            PredicateFunction {
                name: "viewed_without_buying",
                args: SCOPE_ARGS,
                arg_types: "text, interval, text",
                returns: "boolean",
                comment: "Viewed in the scope (category, item, within) and bought nothing in the same scope",
            },
            {
                let args = "viewed_without_buying.user_id, viewed_without_buying.category, \
                            viewed_without_buying.within, viewed_without_buying.item_id";
                format!(
                    "SELECT personalize.viewed({args})\n       AND NOT personalize.bought({args})"
                )
            },
        ),
        (
            PredicateFunction {
                name: "event_count",
                args: "event_type text, within interval DEFAULT NULL",
                arg_types: "text, interval",
                returns: "bigint",
                comment: "How many events of a type the user has (within an interval)",
            },
            format!(
                "SELECT pg_catalog.count(*)\n      {}",
                users_events(
                    "event_count",
                    false,
                    &[
                        of_type("event_count.event_type"),
                        unless_null("event_count", "within", newer_than),
                    ],
                )
            ),
        ),
        (
            PredicateFunction {
                name: "total_spend",
                args: "within interval DEFAULT NULL",
                arg_types: "interval",
                returns: "numeric",
                comment: "Sum of the user's purchase values (price times quantity) within an interval; 0 without purchases",
            },
            format!(
                "SELECT COALESCE({}, 0)\n      {}",
                total_spend(),
                users_events(
                    "total_spend",
                    true,
                    &[
                        PURCHASE_TYPES.to_owned(),
                        unless_null("total_spend", "within", newer_than),
                    ],
                )
            ),
        ),
        (
            PredicateFunction {
                name: "average_order_value",
                args: "within interval DEFAULT NULL",
                arg_types: "interval",
                returns: "numeric",
                comment: "Total spend divided by the number of orders (order_id property, else one order per event); NULL without purchases",
            },
            format!(
                "SELECT {}\n      {}",
                average_order_value(),
                users_events(
                    "average_order_value",
                    true,
                    &[
                        PURCHASE_TYPES.to_owned(),
                        unless_null("average_order_value", "within", newer_than),
                    ],
                )
            ),
        ),
        (
            PredicateFunction {
                name: "last_seen",
                args: "",
                arg_types: "",
                returns: "timestamptz",
                comment: "Time of the user's newest event (NULL: never seen)",
            },
            format!("SELECT {NEWEST_EVENT}\n      {}", users_events("last_seen", false, &[])),
        ),
        (
            PredicateFunction {
                name: "days_since_last_purchase",
                args: "",
                arg_types: "",
                returns: "double precision",
                comment: "Days (fractional) since the user's newest purchase; NULL if they never bought",
            },
            format!(
                "SELECT {}\n      {}",
                days_since_newest(),
                users_events(
                    "days_since_last_purchase",
                    false,
                    &[PURCHASE_TYPES.to_owned()]
                )
            ),
        ),
    ];
    let mut sql = String::from(
        "-- GENERATED by personalize_core::segments::predicate_functions_sql() from the fragments\n\
         -- compiled segments are built of: do not edit. To regenerate:\n\
         --     PP_UPDATE_GENERATED=1 cargo test -p personalize-core segment_predicates\n\
         -- Segment predicates as SQL functions, usable in any WHERE clause. CREATE OR REPLACE, so an\n\
         -- upgrade script can carry a changed definition as it stands here.\n",
    );
    for (f, body) in functions {
        let args = if f.args.is_empty() {
            "user_id text".to_owned()
        } else {
            format!("user_id text, {}", f.args)
        };
        let arg_types = if f.arg_types.is_empty() {
            "text".to_owned()
        } else {
            format!("text, {}", f.arg_types)
        };
        let _ = write!(
            sql,
            "\nCREATE OR REPLACE FUNCTION personalize.{name}({args}) RETURNS {returns}\n\
             LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$\n    \
             {body}\n$$;\n\
             COMMENT ON FUNCTION personalize.{name}({arg_types}) IS '{comment}';\n",
            name = f.name,
            returns = f.returns,
            comment = f.comment.replace('\'', "''"),
        );
    }
    sql
}

struct Compiler {
    params: Vec<String>,
    form: Form,
}

impl Compiler {
    /// Adds a value and returns its SQL reference, cast to `ty`.
    fn param(&mut self, value: String, ty: &str) -> String {
        self.params.push(value);
        format!("CAST($2[{}] AS pg_catalog.{ty})", self.params.len())
    }

    fn universe(&self) -> String {
        match self.form {
            Form::OneUser => "SELECT CAST($1 AS pg_catalog.text)".to_owned(),
            Form::Among => "SELECT cand.user_id".to_owned(),
            Form::Members => "SELECT DISTINCT e.user_id FROM personalize.events e".to_owned(),
        }
    }

    fn node(&mut self, node: &Node) -> String {
        match node {
            Node::Predicate(p) => self.predicate(p),
            Node::Not(inner) => format!("({}) EXCEPT ({})", self.universe(), self.node(inner)),
            Node::Any(children) => {
                let parts: Vec<String> = children
                    .iter()
                    .map(|c| format!("({})", self.node(c)))
                    .collect();
                parts.join(" UNION ")
            }
            Node::All(children) => {
                let (negatives, positives): (Vec<&Node>, Vec<&Node>) =
                    children.iter().partition(|c| matches!(c, Node::Not(_)));
                let mut sql = if positives.is_empty() {
                    format!("({})", self.universe())
                } else {
                    let parts: Vec<String> = positives
                        .iter()
                        .map(|c| format!("({})", self.node(c)))
                        .collect();
                    format!("({})", parts.join(" INTERSECT "))
                };
                for n in negatives {
                    let Node::Not(inner) = n else { unreachable!() };
                    sql = format!("({sql} EXCEPT ({}))", self.node(inner));
                }
                // An `all` whose result is itself parenthesised composes like any other set.
                format!("SELECT * FROM {sql} AS a")
            }
        }
    }

    /// `SELECT e.user_id FROM events e [JOIN items] WHERE <conds> GROUP BY e.user_id [HAVING]`.
    fn scan(&mut self, mut conds: Vec<String>, join_items: bool, having: Option<String>) -> String {
        let user = match self.form {
            Form::OneUser => Some("$1"),
            Form::Among => Some("cand.user_id"),
            Form::Members => None,
        };
        if let Some(user) = user {
            // One user's purchases with their properties or catalogue price: find them in the
            // history index first (event_type is included in it, so that is an index-only
            // scan), then fetch only their rows, not every event the user ever had.
            if join_items && conds.iter().any(|c| c == PURCHASE_TYPES) {
                conds.push(format!(
                    "e.occurred_at OPERATOR(pg_catalog.=) ANY (ARRAY(\
                     SELECT p.occurred_at FROM personalize.events p \
                      WHERE p.user_id OPERATOR(pg_catalog.=) {user} AND {}))",
                    PURCHASE_TYPES.replacen("e.event_type", "p.event_type", 1)
                ));
            }
            conds.insert(0, format!("e.user_id OPERATOR(pg_catalog.=) {user}"));
        }
        let mut sql = format!("SELECT e.user_id FROM {}", events_from(join_items));
        if !conds.is_empty() {
            let _ = write!(sql, " WHERE {}", conds.join(" AND "));
        }
        sql.push_str(" GROUP BY e.user_id");
        if let Some(h) = having {
            let _ = write!(sql, " HAVING {h}");
        }
        sql
    }

    fn within(&mut self, within: &Option<String>, conds: &mut Vec<String>) {
        if let Some(w) = within {
            let p = self.param(w.clone(), "interval");
            conds.push(newer_than(&p));
        }
    }

    fn scope_conds(&mut self, kind: &str, scope: &Scope) -> (Vec<String>, bool) {
        let mut conds = vec![kind.to_owned()];
        self.within(&scope.within, &mut conds);
        if let Some(item) = &scope.item_id {
            let p = self.param(item.clone(), "text");
            conds.push(of_item(&p));
        }
        let mut join = false;
        if let Some(cat) = &scope.category {
            let p = self.param(cat.clone(), "text");
            conds.push(in_category(&p));
            join = true;
        }
        (conds, join)
    }

    fn range(&mut self, expr: &str, range: &Range) -> String {
        let mut parts = Vec::new();
        if let Some(lo) = range.min {
            let p = self.param(lo.to_string(), "numeric");
            parts.push(format!("{expr} OPERATOR(pg_catalog.>=) {p}"));
        }
        if let Some(hi) = range.max {
            let p = self.param(hi.to_string(), "numeric");
            parts.push(format!("{expr} OPERATOR(pg_catalog.<=) {p}"));
        }
        parts.join(" AND ")
    }

    fn min_count(&mut self, n: i64) -> Option<String> {
        (n > 1).then(|| {
            let p = self.param(n.to_string(), "int8");
            format!("pg_catalog.count(*) OPERATOR(pg_catalog.>=) {p}")
        })
    }

    fn predicate(&mut self, p: &Predicate) -> String {
        match p {
            Predicate::Bought { scope, min_count } => {
                let (conds, join) = self.scope_conds(PURCHASE_TYPES, scope);
                let having = self.min_count(*min_count);
                self.scan(conds, join, having)
            }
            Predicate::Viewed { scope, min_count } => {
                let (conds, join) = self.scope_conds(VIEW_TYPES, scope);
                let having = self.min_count(*min_count);
                self.scan(conds, join, having)
            }
            Predicate::ViewedWithoutBuying { scope } => {
                let (viewed, join) = self.scope_conds(VIEW_TYPES, scope);
                let viewed = self.scan(viewed, join, None);
                let (bought, join) = self.scope_conds(PURCHASE_TYPES, scope);
                let bought = self.scan(bought, join, None);
                format!("({viewed}) EXCEPT ({bought})")
            }
            Predicate::EventCount {
                event_type,
                within,
                range,
            } => {
                let t = self.param(event_type.clone(), "text");
                let mut conds = vec![of_type(&t)];
                self.within(within, &mut conds);
                let count = "pg_catalog.count(*)";
                let having = self.range(count, range);
                if range.min.is_none_or(|m| m <= 0.0) {
                    // "at most N" includes users with none of these events at all.
                    let matching = self.scan(conds, false, Some(format!("NOT ({having})")));
                    return format!("({}) EXCEPT ({matching})", self.universe());
                }
                self.scan(conds, false, Some(having))
            }
            Predicate::TotalSpend { within, range }
            | Predicate::AverageOrderValue { within, range } => {
                let mut conds = vec![PURCHASE_TYPES.to_owned()];
                self.within(within, &mut conds);
                let expr = if matches!(p, Predicate::TotalSpend { .. }) {
                    total_spend()
                } else {
                    average_order_value()
                };
                let having = self.range(&expr, range);
                self.scan(conds, true, Some(having))
            }
            Predicate::LastSeen { interval, seen } => {
                let p = self.param(interval.clone(), "interval");
                let op = if *seen { ">" } else { "<=" };
                self.scan(
                    Vec::new(),
                    false,
                    Some(format!(
                        "{NEWEST_EVENT} OPERATOR(pg_catalog.{op}) (pg_catalog.now() OPERATOR(pg_catalog.-) {p})"
                    )),
                )
            }
            Predicate::DaysSinceLastPurchase { range } => {
                let expr = format!("CAST({} AS pg_catalog.numeric)", days_since_newest());
                let having = self.range(&expr, range);
                self.scan(vec![PURCHASE_TYPES.to_owned()], false, Some(having))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> SegmentError {
        parse(text).expect_err("should be refused")
    }

    #[test]
    fn parses_the_growth_team_example() {
        let node = parse(
            r#"{"all": [{"viewed": {"category": "cameras", "within": "7 days"}},
                        {"not": {"bought": {"category": "cameras", "within": "30 days"}}},
                        {"total_spend": {"min": 100}}]}"#,
        )
        .unwrap();
        let Node::All(children) = node else { panic!() };
        assert_eq!(children.len(), 3);
        assert_eq!(
            children[0],
            Node::Predicate(Predicate::Viewed {
                scope: Scope {
                    category: Some("cameras".into()),
                    item_id: None,
                    within: Some("7 days".into())
                },
                min_count: 1
            })
        );
    }

    #[test]
    fn errors_name_the_path_of_the_mistake() {
        let e = error_of(r#"{"all": [{"viewed": {}}, {"bought": {"within": "7 dayz"}}]}"#);
        assert_eq!(e.path, "$.all[1].bought.within");
        assert!(e.message.contains("7 dayz"), "{}", e.message);

        let e = error_of(r#"{"any": [{"bougth": {}}]}"#);
        assert_eq!(e.path, "$.any[0].bougth");
        assert!(
            e.message.contains("unknown condition \"bougth\""),
            "{}",
            e.message
        );

        let e = error_of(r#"{"not": {"viewed": {"colour": "red"}}}"#);
        assert_eq!(e.path, "$.not.viewed.colour");

        let e = error_of(r#"{"total_spend": {"min": 10, "max": 5}}"#);
        assert_eq!(e.path, "$.total_spend");
        assert!(e.message.contains("above max"));

        assert_eq!(error_of(r#"{"all": []}"#).path, "$.all");
        assert_eq!(error_of(r#"{"all": [], "any": []}"#).path, "$");
        assert_eq!(error_of(r#"[1]"#).path, "$");
        assert_eq!(
            error_of(r#"{"event_count": {"min": 1}}"#).message,
            "needs event_type"
        );
        assert_eq!(
            error_of(r#"{"viewed": {"min_count": 0}}"#).path,
            "$.viewed.min_count"
        );
        assert_eq!(
            error_of(r#"{"total_spend": {"min": -1}}"#).path,
            "$.total_spend.min"
        );
        assert_eq!(error_of(r#"{"last_seen": {}}"#).path, "$.last_seen");
        assert_eq!(error_of("not json").path, "$");
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let mut text = r#"{"viewed": {}}"#.to_owned();
        for _ in 0..MAX_DEPTH {
            text = format!(r#"{{"not": {text}}}"#);
        }
        assert!(error_of(&text).message.contains("nested deeper"));
        let many = vec![r#"{"viewed": {}}"#; MAX_PREDICATES + 1].join(",");
        assert!(error_of(&format!(r#"{{"any": [{many}]}}"#))
            .message
            .contains("more than"));
    }

    #[test]
    fn intervals_are_canonical_and_positive() {
        assert_eq!(parse_interval("7 days").unwrap(), "7 days");
        assert_eq!(parse_interval("1 Day").unwrap(), "1 days");
        assert_eq!(
            parse_interval("2 hours 30 mins").unwrap(),
            "2 hours 30 minutes"
        );
        assert_eq!(parse_interval(" 1   week ").unwrap(), "1 weeks");
        assert_eq!(parse_interval("100 years").unwrap(), "100 years");
        for bad in [
            "",
            "7",
            "days",
            "-1 days",
            "1.5 days",
            "7 fortnights",
            "0 days",
            "1 day; drop",
            "1e3 days",
            "7000 years",
            "101 years",
            "1300 months",
            "99 years 100 weeks",
        ] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_values_only_travel_as_parameters() {
        let hostile = "cameras'); DROP TABLE personalize.events; --";
        let node = parse(
            &serde_json::json!({"all": [
                {"viewed": {"category": hostile, "item_id": "x' OR '1'='1"}},
                {"event_count": {"event_type": "view\"; --", "min": 2}}
            ]})
            .to_string(),
        )
        .unwrap();
        for form in [Form::Members, Form::OneUser, Form::Among] {
            let c = compile(&node, form);
            assert!(!c.sql.contains("DROP"), "{}", c.sql);
            assert!(!c.sql.contains("OR '1'"), "{}", c.sql);
            assert!(!c.sql.contains("--"), "{}", c.sql);
            assert_eq!(
                c.params,
                ["x' OR '1'='1", hostile, "view\"; --", "2"]
                    .map(String::from)
                    .to_vec()
            );
        }
    }

    #[test]
    fn compiles_to_set_operations() {
        let node = parse(
            r#"{"all": [{"viewed": {"category": "c"}}, {"not": {"bought": {"category": "c"}}}]}"#,
        )
        .unwrap();
        let members = compile(&node, Form::Members);
        assert!(members.sql.starts_with("SELECT s.user_id FROM ("));
        assert!(members.sql.contains(" EXCEPT "));
        assert!(!members.sql.contains("$1"));
        assert_eq!(members.params, vec!["c".to_owned(), "c".to_owned()]);
        let one = compile(&node, Form::OneUser);
        assert!(one.sql.starts_with("SELECT EXISTS ("));
        assert_eq!(
            one.sql
                .matches("e.user_id OPERATOR(pg_catalog.=) $1")
                .count(),
            2
        );

        let any = compile(
            &parse(r#"{"any": [{"viewed": {}}, {"last_seen": {"within": "1 day"}}]}"#).unwrap(),
            Form::Members,
        );
        assert!(any.sql.contains(" UNION "));
        let lone_not = compile(&parse(r#"{"not": {"viewed": {}}}"#).unwrap(), Form::Members);
        assert!(lone_not
            .sql
            .contains("SELECT DISTINCT e.user_id FROM personalize.events e"));
        let at_most = compile(
            &parse(r#"{"event_count": {"event_type": "view", "max": 2}}"#).unwrap(),
            Form::OneUser,
        );
        assert!(
            at_most.sql.contains("EXCEPT"),
            "users with no such events count as at most 2"
        );
    }

    /// sql/segment_predicates.sql is what `predicate_functions_sql` generates. With
    /// PP_UPDATE_GENERATED=1 the test rewrites the file instead.
    #[test]
    fn segment_predicates_sql_is_generated() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../sql/segment_predicates.sql");
        let generated = predicate_functions_sql();
        if std::env::var_os("PP_UPDATE_GENERATED").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{} is out of date: run PP_UPDATE_GENERATED=1 cargo test -p personalize-core \
             segment_predicates",
            path.display()
        );
    }

    #[test]
    fn predicate_functions_use_the_compiled_fragments() {
        let sql = predicate_functions_sql();
        for name in PREDICATES {
            assert!(
                sql.contains(&format!("FUNCTION personalize.{name}(user_id text")),
                "{name} has no SQL function"
            );
        }
        assert_eq!(sql.matches(PURCHASE_TYPES).count(), 4);
        assert_eq!(sql.matches(&in_category("bought.category")).count(), 1);
        assert_eq!(sql.matches(&in_category("viewed.category")).count(), 1);
        assert!(sql.contains(&average_order_value()));
        assert!(!sql.contains("$1"), "functions name their arguments");
    }
}
