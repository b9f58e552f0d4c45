//! Postgres plumbing: the compiled tracking plan per backend and bulk ingestion through SPI.

pub mod campaign_cache;
pub mod experiment_cache;
pub mod ingest;
pub mod interactions;
pub mod model_cache;
pub mod model_store;
pub mod plan_cache;
pub mod watched_table;

/// Microseconds between the Unix epoch and Postgres's (2000-01-01).
pub const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Raises 25006 (read_only_sql_transaction) in a read-only transaction and on a hot standby,
/// before a function writes anything. Without it, pgrx's `SpiClient::update()` first asks for a
/// transaction id, which on a standby is an internal error (XX000) instead of the read-only
/// error a client or pooler reroutes to the primary on.
pub fn require_writable(function: &std::ffi::CStr) {
    // SAFETY: a plain backend call on the main thread; it raises through pgrx's guard.
    unsafe { pgrx::pg_sys::PreventCommandIfReadOnly(function.as_ptr()) }
}
