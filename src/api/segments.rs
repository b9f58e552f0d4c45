//! Segments: `in_segment()`, `segment_members()`, `user_segments()` and `segment_sql()` over
//! the definitions in personalize.segments (checked on write by `_segment_problem()`).

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::core::segments::{self, Compiled, Form, Node};
use crate::error::{required, spi_failed, PersonalizeError};
use crate::pg::segment_cache::{self, definition};

/// Why a segment definition (JSON text) is refused, or NULL when it is valid.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn _segment_problem(definition: Option<&str>) -> Option<String> {
    let Some(text) = definition else {
        return Some("definition must not be NULL".into());
    };
    segments::parse(text).err().map(|e| e.to_string())
}

fn args<'a>(user_id: &'a str, compiled: &'a Compiled) -> [DatumWithOid<'a>; 2] {
    [user_id.into(), compiled.params.clone().into()]
}

fn is_member(client: &SpiClient<'_>, node: &Node, user_id: &str) -> bool {
    let compiled = segments::compile(node, Form::OneUser);
    client
        .select(&compiled.sql, None, &args(user_id, &compiled))
        .unwrap_or_else(|e| spi_failed("cannot evaluate the segment", e))
        .first()
        .get::<bool>(1)
        .unwrap_or(None)
        .unwrap_or(false)
}

/// Whether a user is in a named segment now.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn in_segment(user_id: Option<&str>, segment: Option<&str>) -> bool {
    let user_id = required(user_id, "user_id");
    let segment = required(segment, "segment");
    Spi::connect(|client| {
        let node = definition(client, segment);
        is_member(client, &node, user_id)
    })
}

/// Every user (with at least one event) in a named segment, sorted.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn segment_members(segment: Option<&str>) -> SetOfIterator<'static, String> {
    let segment = required(segment, "segment");
    SetOfIterator::new(member_ids(segment))
}

/// Makes every backend drop its prepared segments (at commit; this one at once).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _invalidate_segment_cache() {
    segment_cache::invalidate();
}

/// Runs a named segment's `Members` form and collects the user ids it returns.
fn member_ids(segment: &str) -> Vec<String> {
    Spi::connect(|client| {
        let node = definition(client, segment);
        let compiled = segments::compile(&node, Form::Members);
        // $1 is not used by this form.
        let args: [DatumWithOid; 2] = ["".into(), compiled.params.clone().into()];
        client
            .select(&compiled.sql, None, &args)
            .unwrap_or_else(|e| spi_failed("cannot evaluate the segment", e))
            .filter_map(|row| row.get::<String>(1).ok().flatten())
            .collect()
    })
}

/// `members_among` as SQL. The campaign trigger (Rust since 0.3.0) no longer calls it, but it
/// stays: the 0.1.0 and 0.2.0 install scripts create it from this symbol, and installing an
/// old version to update it needs every symbol they name.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn _segment_members_among(
    segment: Option<&str>,
    users: Option<Vec<Option<String>>>,
) -> SetOfIterator<'static, String> {
    let segment = required(segment, "segment");
    let users: Vec<String> = required(users, "users").into_iter().flatten().collect();
    SetOfIterator::new(Spi::connect(|client| {
        segment_cache::members_among(client, segment, users)
    }))
}

/// The names of every segment a user is in, sorted.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn user_segments(user_id: Option<&str>) -> SetOfIterator<'static, String> {
    let user_id = required(user_id, "user_id");
    let names: Vec<String> = Spi::connect(|client| {
        let all: Vec<(String, String)> = client
            .select(
                "SELECT s.name, CAST(s.definition AS pg_catalog.text) FROM personalize.segments s ORDER BY 1",
                None,
                &[],
            )
            .unwrap_or_else(|e| spi_failed("cannot read personalize.segments", e))
            .filter_map(|row| Some((row.get(1).ok()??, row.get(2).ok()??)))
            .collect();
        all.into_iter()
            .filter(|(_, text)| {
                segments::parse(text).is_ok_and(|node| is_member(client, &node, user_id))
            })
            .map(|(name, _)| name)
            .collect()
    });
    SetOfIterator::new(names)
}

/// The SQL a definition compiles to (for reading and EXPLAIN), with its parameter values.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn _segment_sql(
    definition: Option<&str>,
    one_user: default!(Option<bool>, false),
) -> TableIterator<'static, (name!(sql, String), name!(params, Vec<String>))> {
    let text = required(definition, "definition");
    let node = segments::parse(text).unwrap_or_else(|e| {
        PersonalizeError::invalid(format!("invalid segment definition: {e}"), segment_hint())
            .raise()
    });
    let form = if required(one_user, "one_user") {
        Form::OneUser
    } else {
        Form::Members
    };
    let c = segments::compile(&node, form);
    TableIterator::once((c.sql, c.params))
}

fn segment_hint() -> String {
    format!(
        "A definition is {{\"all\": [...]}}, {{\"any\": [...]}}, {{\"not\": {{...}}}} or one predicate: {}. \
         Example: {{\"all\": [{{\"viewed\": {{\"category\": \"cameras\", \"within\": \"7 days\"}}}}, \
         {{\"not\": {{\"bought\": {{\"category\": \"cameras\"}}}}}}]}}",
        segments::PREDICATES.join(", ")
    )
}

/// The hint the segments trigger shows under a refused definition.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn _segment_hint() -> String {
    segment_hint()
}
