//! A subtransaction around a step that may fail on its own, as a PL/pgSQL block with an
//! EXCEPTION clause: what the step did is rolled back and its error comes back as a value,
//! so the caller can fail one message instead of the whole statement.

use std::panic::AssertUnwindSafe;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::PgTryBuilder;

/// Runs `f` in an internal subtransaction. Returns its result, or the error's message (a
/// Postgres ERROR, one of ours, or a Rust panic) after rolling the subtransaction back. A query
/// cancel or statement timeout is raised again, as PL/pgSQL's `WHEN OTHERS` leaves them.
pub fn attempt<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    // SAFETY: main-thread backend calls; the subtransaction is begun and then released or
    // rolled back on every path before returning, and the caller's memory context and
    // resource owner are put back as PL/pgSQL does after an exception block.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let outcome: Result<R, Box<CaughtError>> = PgTryBuilder::new(AssertUnwindSafe(|| Ok(f())))
            .catch_others(|e| Err(Box::new(e)))
            .execute();
        match outcome {
            Ok(r) => {
                pg_sys::ReleaseCurrentSubTransaction();
                pg_sys::MemoryContextSwitchTo(context);
                pg_sys::CurrentResourceOwner = owner;
                Ok(r)
            }
            Err(e) => {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
                pg_sys::MemoryContextSwitchTo(context);
                pg_sys::CurrentResourceOwner = owner;
                let report = match &*e {
                    CaughtError::PostgresError(r)
                    | CaughtError::ErrorReport(r)
                    | CaughtError::RustPanic { ereport: r, .. } => r,
                };
                if report.sql_error_code() == pgrx::PgSqlErrorCode::ERRCODE_QUERY_CANCELED {
                    e.rethrow();
                }
                Err(report.message().to_owned())
            }
        }
    }
}
