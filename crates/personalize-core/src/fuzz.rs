//! Property-based fuzzing (proptest) of every parser and validator that takes caller input:
//! events, JSON, segment definitions and intervals, campaign templates, experiment variants and
//! property schemas. For any input: no panic, and either a clear rejection (non-empty code,
//! path and message) or an accepted value that keeps its invariants. Inputs are drawn both as
//! raw text and as JSON built from each parser's own vocabulary, so they reach deep branches.
//!
//! The test command runs proptest's default of 256 cases per property; a longer run:
//! `PROPTEST_CASES=20000 cargo test --lib core::fuzz` (12 s here, no failure).

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Map, Value};

use super::{experiments, outbox, segments, tracking};
use crate::segments::PREDICATES;

/// Strings a hostile caller would try: quotes, comment and statement breakers, placeholders,
/// NUL escapes, huge numbers, non-ASCII, and each parser's own keywords.
fn hostile_word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x'); DROP TABLE personalize.events; --".to_string()),
        Just("$1".to_string()),
        Just("{{user_id}}".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{{recommendations}}".to_string()),
        Just("{{properties.a.b}}".to_string()),
        Just("7 days".to_string()),
        Just("-1 days".to_string()),
        Just("1e400".to_string()),
        Just("\u{0}".to_string()),
        Just("ünïcødé 🛒".to_string()),
        Just("".to_string()),
        Just("all".to_string()),
        Just("any".to_string()),
        Just("not".to_string()),
        Just("view".to_string()),
        Just("purchase".to_string()),
        "[a-z_]{1,12}",
        ".{0,24}",
    ]
}

const KEYS: &[&str] = &[
    // envelope
    "type",
    "user_id",
    "item_id",
    "session_id",
    "occurred_at",
    "client_event_id",
    "properties",
    // segments
    "all",
    "any",
    "not",
    // (and every predicate: `keys()`)
    "category",
    "within",
    "not_within",
    "min",
    "max",
    "min_count",
    "event_type",
    // variants
    "name",
    "weight",
    "model",
    // schemas
    "required",
    "additionalProperties",
    "$ref",
    "pattern",
    "enum",
];

/// KEYS and the segment predicates' names.
fn keys() -> Vec<&'static str> {
    KEYS.iter().copied().chain(PREDICATES).collect()
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(keys()).prop_map(str::to_string),
        1 => hostile_word(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        (0u64..1_000_000).prop_map(Value::from),
        Just(json!("2026-01-01T00:00:00Z")),
        Just(json!("3000-01-01T00:00:00Z")),
        Just(json!("not a time")),
        hostile_word().prop_map(Value::String),
    ]
}

/// JSON of up to 5 levels whose object keys come mostly from the parsers' vocabulary.
fn vocabulary_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn plan() -> tracking::TrackingPlan {
    let mut plan = tracking::TrackingPlan::new();
    plan.add_type("view", true, &json!({"type": "object"}))
        .unwrap();
    plan.add_type(
        "purchase",
        true,
        &json!({"type": "object", "properties": {"price": {"type": "number", "minimum": 0}},
                "additionalProperties": true}),
    )
    .unwrap();
    plan.add_type(
        "search",
        false,
        &json!({"type": "object", "required": ["query"]}),
    )
    .unwrap();
    plan
}

fn assert_clear(violations: &[tracking::Violation]) {
    for v in violations {
        assert!(
            !v.code.is_empty() && !v.message.is_empty() && v.path.starts_with('$'),
            "{v:?}"
        );
    }
}

proptest! {

    #[test]
    fn any_text_is_a_valid_event_or_clearly_rejected(text in ".{0,200}") {
        let verdict = tracking::check_event_text(
            Some(&text), &plan(), &tracking::Limits::default(), tracking::now_utc());
        assert_clear(verdict.violations());
    }

    #[test]
    fn any_json_is_a_valid_event_or_clearly_rejected(event in vocabulary_json()) {
        let text = event.to_string();
        let limits = tracking::Limits { max_event_bytes: 4096, max_depth: 4, ..Default::default() };
        let verdict = tracking::check_event_text(Some(&text), &plan(), &limits, tracking::now_utc());
        match &verdict {
            tracking::Verdict::Valid(e) => {
                // Accepted means the envelope held: a known type and a bounded user id.
                prop_assert!(plan().rule(&e.event_type).is_some());
                prop_assert!(!e.user_id.is_empty() && e.user_id.chars().count() <= 256);
            }
            tracking::Verdict::Rejected(r) => {
                prop_assert!(!r.violations.is_empty());
                assert_clear(&r.violations);
            }
        }
    }

    #[test]
    fn json_parsing_never_panics(text in "[\\[\\]{}\":,0-9eE.+\\-a-z\\\\ ]{0,120}") {
        if let Err(v) = tracking::parse_json(&text) {
            assert_clear(&[v]);
        }
    }

    #[test]
    fn segment_values_never_reach_the_sql(definition in vocabulary_json()) {
        let text = definition.to_string();
        match segments::parse(&text) {
            Err(e) => prop_assert!(e.path.starts_with('$') && !e.message.is_empty()),
            Ok(node) => {
                for form in [segments::Form::Members, segments::Form::OneUser, segments::Form::Among] {
                    let compiled = segments::compile(&node, form);
                    // Every value travels as a parameter: nothing a caller wrote is SQL text.
                    prop_assert!(!compiled.sql.contains("DROP TABLE"), "{}", compiled.sql);
                    prop_assert!(!compiled.sql.contains(';'), "{}", compiled.sql);
                    prop_assert!(!compiled.sql.contains("--"), "{}", compiled.sql);
                }
            }
        }
    }

    #[test]
    fn intervals_parse_or_refuse(text in prop_oneof![hostile_word(), "[0-9 a-z:.-]{0,30}"]) {
        if let Ok(normalised) = segments::parse_interval(&text) {
            prop_assert!(!normalised.contains('\''));
        }
    }

    #[test]
    fn templates_check_and_render(template in vocabulary_json(), props in vocabulary_json()) {
        let text = template.to_string();
        if outbox::check_template(&text).is_ok() {
            let ctx = outbox::RenderContext {
                values: [("user_id".to_string(), json!("u1"))].into_iter().collect(),
                properties: props.as_object().cloned().unwrap_or_default(),
                recommendations: vec![json!({"item_id": "i1"})],
            };
            let rendered = outbox::render(&template, &ctx, true);
            prop_assert_eq!(rendered.is_object(), template.is_object());
        }
    }

    #[test]
    fn template_text_never_panics(text in ".{0,120}") {
        let _ = outbox::check_template(&text);
    }

    #[test]
    fn variants_parse_and_every_user_gets_one(variants in vocabulary_json(), user in ".{0,40}") {
        if let Ok(parsed) = experiments::parse_variants(&variants.to_string()) {
            prop_assert!((2..=20).contains(&parsed.len()));
            prop_assert!(parsed.iter().all(|v| (1..=1_000_000).contains(&v.weight)));
            let chosen = experiments::assign(&parsed, "salt", &user);
            prop_assert!(parsed.iter().any(|v| v.name == chosen.name));
        }
    }

    #[test]
    fn property_schemas_compile_or_refuse(schema in vocabulary_json()) {
        if let Err(e) = tracking::compile_schema(&schema) {
            prop_assert!(!e.0.is_empty());
        }
    }
}

/// Some valid, some not: arguments a predicate takes, with hostile or plausible values.
fn segment_predicate() -> impl Strategy<Value = Value> {
    let names: Vec<&str> = ["any", "not"].into_iter().chain(PREDICATES).collect();
    let name = proptest::sample::select(names);
    let arg = prop_oneof![
        Just("category"),
        Just("within"),
        Just("not_within"),
        Just("min"),
        Just("max"),
        Just("min_count"),
        Just("event_type"),
        Just("item_id"),
    ];
    let value = prop_oneof![
        hostile_word().prop_map(Value::String),
        Just(json!("30 days")),
        Just(json!("view")),
        (0u32..1000).prop_map(Value::from),
    ];
    (name, proptest::collection::vec((arg, value), 0..3)).prop_map(|(name, args)| {
        let args: Map<String, Value> = args.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        json!({ name: args })
    })
}

fn segment_definition() -> impl Strategy<Value = Value> {
    segment_predicate().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"all": v})),
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"any": v})),
            inner.prop_map(|v| json!({"not": v})),
        ]
    })
}

fn envelope() -> impl Strategy<Value = Value> {
    let ty = prop_oneof![
        Just(json!("view")),
        Just(json!("purchase")),
        Just(json!("search")),
        leaf()
    ];
    let id = prop_oneof![3 => "[a-zA-Z0-9_-]{1,12}".prop_map(Value::String), 1 => leaf()];
    let optional = prop_oneof![Just(None), leaf().prop_map(Some)];
    (
        ty,
        id.clone(),
        id,
        optional.clone(),
        optional,
        vocabulary_json(),
    )
        .prop_map(|(ty, user, item, when, client, props)| {
            let mut e = Map::new();
            e.insert("type".into(), ty);
            e.insert("user_id".into(), user);
            e.insert("item_id".into(), item);
            if let Some(w) = when {
                e.insert("occurred_at".into(), w);
            }
            if let Some(c) = client {
                e.insert("client_event_id".into(), c);
            }
            if props.is_object() {
                e.insert("properties".into(), props);
            }
            Value::Object(e)
        })
}

fn variants() -> impl Strategy<Value = Value> {
    let variant = (
        prop_oneof![3 => "[a-z]{1,8}".prop_map(Value::String), 1 => leaf()],
        prop_oneof![3 => (1u64..100).prop_map(Value::from), 1 => leaf()],
        prop_oneof![Just(None), Just(Some(json!("m2"))), leaf().prop_map(Some)],
    )
        .prop_map(|(name, weight, model)| {
            let mut v = json!({"name": name, "weight": weight});
            if let Some(m) = model {
                v["model"] = m;
            }
            v
        });
    proptest::collection::vec(variant, 0..5).prop_map(Value::Array)
}

/// Runs `cases` inputs of a shaped strategy through `check`, which says whether the input was
/// accepted; the run must reach both branches, or the fuzzing proves little.
fn both_branches<S: Strategy>(strategy: S, cases: u32, check: impl Fn(S::Value) -> bool) {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..cases {
        let value = strategy.new_tree(&mut runner).unwrap().current();
        if check(value) {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(
        accepted > 0 && rejected > 0,
        "accepted {accepted}, rejected {rejected}"
    );
}

#[test]
fn shaped_events_reach_both_branches() {
    let plan = plan();
    both_branches(envelope(), 2000, |event| {
        let verdict = tracking::check_event_text(
            Some(&event.to_string()),
            &plan,
            &tracking::Limits::default(),
            tracking::now_utc(),
        );
        assert_clear(verdict.violations());
        matches!(verdict, tracking::Verdict::Valid(_))
    });
}

#[test]
fn shaped_segments_reach_both_branches_and_values_stay_parameters() {
    both_branches(segment_definition(), 2000, |definition| {
        match segments::parse(&definition.to_string()) {
            Err(e) => {
                assert!(e.path.starts_with('$') && !e.message.is_empty());
                false
            }
            Ok(node) => {
                for form in [
                    segments::Form::Members,
                    segments::Form::OneUser,
                    segments::Form::Among,
                ] {
                    let sql = segments::compile(&node, form).sql;
                    // The hostile words never appear: values travel as parameters.
                    for marker in ["DROP", ";", "{{", "ünïcødé", "--"] {
                        assert!(!sql.contains(marker), "{marker} in {sql}");
                    }
                }
                true
            }
        }
    });
}

#[test]
fn shaped_variants_reach_both_branches() {
    both_branches(variants(), 2000, |v| {
        match experiments::parse_variants(&v.to_string()) {
            Err(e) => {
                assert!(!e.is_empty());
                false
            }
            Ok(parsed) => {
                let chosen = experiments::assign(&parsed, "s", "u");
                assert!(parsed.iter().any(|v| v.name == chosen.name));
                true
            }
        }
    });
}
