//! Loaders for real data: a generic table of envelope columns, the UCI Online Retail format and
//! a RetailRocket-style format. Each reads its source through a cursor in chunks and sends every
//! row through the tracking plan, so every row ends up accepted, duplicate or rejected.
//! Public wrappers taking `regclass` (resolved in the caller's search_path) are in finalize.sql.

use pgrx::prelude::*;

use crate::core::loaders::{online_retail_event, retailrocket_event};
use crate::error::PersonalizeError;
use crate::pg::ingest::{ingest_query, Tally};

const CHUNK_ROWS: i64 = 5_000;

fn counts(
    t: Tally,
) -> TableIterator<
    'static,
    (
        name!(accepted, i64),
        name!(duplicates, i64),
        name!(rejected, i64),
    ),
> {
    TableIterator::once((t.accepted, t.duplicates, t.rejected))
}

/// The source relation's name as SQL, quoted and qualified as needed.
fn relation_sql(source: pg_sys::Oid) -> String {
    Spi::get_one_with_args::<String>(
        "SELECT CAST(CAST($1 AS regclass) AS text)",
        &[source.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        PersonalizeError::invalid("the source relation does not exist", "Pass a table name.")
            .raise()
    })
}

/// Refuses a source without the expected columns before reading a row, naming the shape.
fn require_columns(source: pg_sys::Oid, relation: &str, columns: &[&str], example: &str) {
    let missing: Vec<String> = Spi::get_one_with_args::<Vec<String>>(
        "SELECT COALESCE(array_agg(c ORDER BY o), '{}') FROM unnest($2::text[]) WITH ORDINALITY AS x(c, o) \
          WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = $1 \
                              AND a.attname = x.c AND a.attnum > 0 AND NOT a.attisdropped)",
        &[source.into(), columns.iter().map(|c| c.to_string()).collect::<Vec<_>>().into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    if !missing.is_empty() {
        PersonalizeError::invalid(
            format!("{relation} has no column(s) {}", missing.join(", ")),
            format!(
                "The source needs the columns {} (any type; they are read as text), e.g. {example}",
                columns.join(", ")
            ),
        )
        .raise();
    }
}

fn select_as_text(relation: &str, columns: &[&str]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST(s.{} AS text)", pgrx::spi::quote_identifier(c)))
        .collect();
    format!("SELECT {} FROM {relation} AS s", cols.join(", "))
}

/// Imports a table whose columns are envelope fields (type, user_id, item_id, session_id,
/// occurred_at, client_event_id, properties); any other column is a violation.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _import_events(
    source: Option<pg_sys::Oid>,
    strict: Option<bool>,
) -> TableIterator<
    'static,
    (
        name!(accepted, i64),
        name!(duplicates, i64),
        name!(rejected, i64),
    ),
> {
    crate::pg::require_writable(c"import_events()");
    let source = crate::error::required(source, "source");
    let strict = crate::error::strict_flag(strict);
    let relation = relation_sql(source);
    require_columns(
        source,
        &relation,
        &["type", "user_id"],
        "CREATE TABLE staging (type text, user_id text, item_id text, session_id text, \
         occurred_at timestamptz, client_event_id text, properties jsonb)",
    );
    let query = format!("SELECT CAST(to_jsonb(s) AS text) FROM {relation} AS s");
    counts(ingest_query(
        &query,
        "import_events",
        strict,
        CHUNK_ROWS,
        |cols| cols.first().cloned().flatten(),
    ))
}

const ONLINE_RETAIL_COLUMNS: [&str; 8] = [
    "invoice_no",
    "stock_code",
    "description",
    "quantity",
    "invoice_date",
    "unit_price",
    "customer_id",
    "country",
];

/// Imports a fixed-column format: checks the columns, reads them as text, maps each row to an
/// event with `to_event`.
fn import_format(
    source: pg_sys::Oid,
    columns: &[&str],
    example: &str,
    source_name: &'static str,
    to_event: fn(&[Option<&str>]) -> serde_json::Value,
) -> Tally {
    let relation = relation_sql(source);
    require_columns(source, &relation, columns, example);
    let query = select_as_text(&relation, columns);
    ingest_query(&query, source_name, false, CHUNK_ROWS, |cols| {
        let row: Vec<Option<&str>> = cols.iter().map(|c| c.as_deref()).collect();
        Some(to_event(&row).to_string())
    })
}

/// Imports UCI Online Retail rows (see core::loaders::online_retail_event for the mapping).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _import_online_retail(
    source: pg_sys::Oid,
) -> TableIterator<
    'static,
    (
        name!(accepted, i64),
        name!(duplicates, i64),
        name!(rejected, i64),
    ),
> {
    crate::pg::require_writable(c"import_online_retail()");
    counts(import_format(
        source,
        &ONLINE_RETAIL_COLUMNS,
        "CREATE TABLE staging (invoice_no text, stock_code text, description text, quantity text, \
         invoice_date text, unit_price text, customer_id text, country text)",
        "import_online_retail",
        online_retail_event,
    ))
}

const RETAILROCKET_COLUMNS: [&str; 5] =
    ["timestamp", "visitorid", "event", "itemid", "transactionid"];

/// Imports RetailRocket-style rows: timestamp (Unix ms), visitorid, event, itemid, transactionid.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _import_retailrocket(
    source: pg_sys::Oid,
) -> TableIterator<
    'static,
    (
        name!(accepted, i64),
        name!(duplicates, i64),
        name!(rejected, i64),
    ),
> {
    crate::pg::require_writable(c"import_retailrocket()");
    counts(import_format(
        source,
        &RETAILROCKET_COLUMNS,
        "CREATE TABLE staging (timestamp bigint, visitorid bigint, event text, itemid bigint, \
         transactionid bigint)",
        "import_retailrocket",
        retailrocket_event,
    ))
}
