//! Named segments for the outbox's claims: each segment's `Among` form is compiled and
//! prepared once per backend and kept until `personalize.segments` changes (see
//! `watched_table`), so a claim that takes messages of a segment campaign costs one execution
//! per segment, not a read of the definition, a compilation and a planning.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::PgOid;

use crate::core::segments::{self, Form, Node};
use crate::error::{spi_failed, PersonalizeError};
use crate::pg::watched_table::WatchedTable;

static SEGMENTS_TABLE: WatchedTable = WatchedTable::new("personalize.segments");

struct PreparedSegment {
    statement: OwnedPreparedStatement,
    params: Vec<String>,
}

struct Prepared {
    generation: u64,
    by_name: HashMap<String, Rc<PreparedSegment>>,
}

thread_local! {
    static PREPARED: RefCell<Prepared> = RefCell::new(Prepared {
        generation: 0,
        by_name: HashMap::new(),
    });
    /// Whether personalize.segments has the trigger that invalidates this cache (0.5.0): a
    /// newer library on a schema not yet updated compiles each segment per call instead,
    /// rather than keeping definitions nobody would tell it have changed.
    static WATCHED: Cell<Option<bool>> = const { Cell::new(None) };
}

fn segments_are_watched(client: &SpiClient<'_>) -> bool {
    if let Some(known) = WATCHED.with(Cell::get) {
        return known;
    }
    let watched = client
        .select(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger t \
              WHERE t.tgrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('personalize.segments') \
                AND t.tgname OPERATOR(pg_catalog.=) 'segments_changed')",
            None,
            &[],
        )
        .and_then(|t| t.first().get::<bool>(1))
        .unwrap_or(None)
        .unwrap_or(false);
    // Only a positive answer is kept: the schema may be updated while this backend lives.
    if watched {
        WATCHED.with(|w| w.set(Some(true)));
    }
    watched
}

pub fn register_invalidation_callback() {
    SEGMENTS_TABLE.register();
}

/// Sends the invalidation that makes every backend drop its prepared segments.
pub fn invalidate() {
    SEGMENTS_TABLE.invalidate();
}

/// The parsed definition of a named segment.
pub fn definition(client: &SpiClient<'_>, name: &str) -> Node {
    let args: [DatumWithOid; 1] = [name.into()];
    let text: Option<String> = client
        .select(
            "SELECT CAST(s.definition AS pg_catalog.text) FROM personalize.segments s \
             WHERE s.name OPERATOR(pg_catalog.=) $1",
            None,
            &args,
        )
        .unwrap_or_else(|e| spi_failed("cannot read personalize.segments", e))
        .first()
        .get(1)
        .unwrap_or(None);
    let Some(text) = text else {
        PersonalizeError::Undefined {
            message: format!("segment \"{}\" does not exist", crate::error::shown(name)),
            hint:
                "Create it with INSERT INTO personalize.segments (name, definition) VALUES (...); \
                   list segments with SELECT name FROM personalize.segments;"
                    .into(),
        }
        .raise()
    };
    // Definitions were checked on write; a failure here means the table was edited around
    // the trigger (e.g. with triggers disabled during a restore).
    segments::parse(&text).unwrap_or_else(|e| {
        PersonalizeError::invalid(
            format!("segment \"{name}\" has an invalid definition: {e}"),
            "Fix it with UPDATE personalize.segments SET definition = ... WHERE name = ...;",
        )
        .raise()
    })
}

fn prepared(client: &SpiClient<'_>, segment: &str) -> Rc<PreparedSegment> {
    let generation = SEGMENTS_TABLE.generation();
    let cached = PREPARED.with(|p| {
        let mut p = p.borrow_mut();
        if p.generation != generation {
            p.by_name.clear();
            p.generation = generation;
        }
        p.by_name.get(segment).cloned()
    });
    if let Some(found) = cached {
        return found;
    }
    SEGMENTS_TABLE.note_relid(client);
    let compiled = segments::compile(&definition(client, segment), Form::Among);
    let texts = PgOid::from(pg_sys::TEXTARRAYOID);
    let statement = client
        .prepare(compiled.sql.as_str(), &[texts, texts])
        .unwrap_or_else(|e| spi_failed("preparing the segment", e))
        .keep();
    let prepared = Rc::new(PreparedSegment {
        statement,
        params: compiled.params,
    });
    PREPARED.with(|p| {
        p.borrow_mut()
            .by_name
            .insert(segment.to_owned(), Rc::clone(&prepared))
    });
    prepared
}

/// The members of a named segment among `users`, unsorted: one query for a whole claim's
/// users (`claim_messages`), where `in_segment()` per user would run one query each.
pub fn members_among(client: &SpiClient<'_>, segment: &str, users: Vec<String>) -> Vec<String> {
    if users.is_empty() {
        return Vec::new();
    }
    let members = |rows: pgrx::spi::SpiTupleTable<'_>| -> Vec<String> {
        rows.filter_map(|row| row.get::<String>(1).ok().flatten())
            .collect()
    };
    if !segments_are_watched(client) {
        let compiled = segments::compile(&definition(client, segment), Form::Among);
        let args: [DatumWithOid; 2] = [users.into(), compiled.params.into()];
        return members(
            client
                .select(compiled.sql.as_str(), None, &args)
                .unwrap_or_else(|e| spi_failed("cannot evaluate the segment", e)),
        );
    }
    let prepared = prepared(client, segment);
    let args: [DatumWithOid; 2] = [users.into(), prepared.params.clone().into()];
    members(
        client
            .select(&prepared.statement, None, &args)
            .unwrap_or_else(|e| spi_failed("cannot evaluate the segment", e)),
    )
}
