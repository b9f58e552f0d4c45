//! Tracking-plan upkeep called by the triggers on personalize.event_types.

use pgrx::prelude::*;

use crate::core::tracking::{compile_schema, parse_json};

/// Why a properties schema cannot be used, or NULL when it can.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn _plan_schema_problem(schema: Option<&str>) -> Option<String> {
    let Some(text) = schema else {
        return Some("properties_schema must not be NULL".into());
    };
    match parse_json(text) {
        Err(v) => Some(v.to_string()),
        Ok(value) => compile_schema(&value).err().map(|e| e.0),
    }
}

/// Makes every backend recompile the tracking plan when this transaction commits.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _invalidate_plan_cache() {
    crate::pg::plan_cache::invalidate();
}
