//! `_check_duration()`: the interval check of `pg::intervals` for the SQL side (fail(),
//! archive_messages() and the before-write triggers of campaigns, caps, event types and
//! experiments).

use pgrx::datum::Interval;
use pgrx::prelude::*;

use crate::error::required;

/// Raises 22023 unless `value` is a duration from 0 (`allow_zero`; else more than 0) to `max`
/// with no negative part; NULL `value` passes (the callers say where NULL means a default).
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn _check_duration(
    what: Option<&str>,
    value: Option<Interval>,
    max: Option<Interval>,
    allow_zero: Option<bool>,
    hint: default!(Option<&str>, "''"),
) {
    let Some(value) = value else { return };
    let max = crate::pg::intervals::span(required(max, "max"));
    crate::pg::intervals::check_duration(
        required(what, "what"),
        value,
        max,
        required(allow_zero, "allow_zero"),
        hint.unwrap_or(""),
    );
}
