//! pg_personalize: e-commerce personalization inside PostgreSQL.
//!
//! Layers: `core` is plain Rust (no pgrx) and tested with `cargo test`; `pg` is the Postgres
//! plumbing (plan cache, bulk ingestion); `api` holds the SQL-facing functions, one file per
//! capability. Hand-written SQL lives in `sql/`.

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

pub mod core;

mod api;
mod error;
mod gucs;
mod pg;

// Tables first; the Rust functions are created between these two; then everything that
// refers to them (triggers, wrappers, default plan, views, comments).
pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    pg::plan_cache::register_invalidation_callback();
    pg::model_cache::register_invalidation_callback();
    pg::experiment_cache::register_invalidation_callback();
    pg::campaign_cache::register_invalidation_callbacks();
    pg::segment_cache::register_invalidation_callback();
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
