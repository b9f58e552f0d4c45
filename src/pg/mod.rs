//! Postgres plumbing below the SQL-facing `api`: caches per backend, bulk ingestion, the
//! shared model files, the serving engine, and the outbox's readers and writers.

pub mod campaign_cache;
pub mod compat;
pub mod consent_check;
pub mod experiment_cache;
pub mod index_probe;
pub mod ingest;
pub mod interactions;
pub mod intervals;
pub mod model_cache;
pub mod model_files;
pub mod model_store;
pub mod outbox_probe;
pub mod outbox_sink;
pub mod outbox_writer;
pub mod plan_cache;
pub mod probe_plans;
pub mod quiet_hours;
pub mod random;
pub mod recommender;
pub mod segment_cache;
pub mod spi_row;
pub mod subtransaction;
pub mod training_host;
pub mod transition_table;
pub mod watched_table;

/// Microseconds between the Unix epoch and Postgres's (2000-01-01).
pub const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// This transaction's start time in Unix seconds (what now() returns).
pub fn transaction_start_unix_seconds() -> f64 {
    // SAFETY: reads the backend's transaction start time; main thread.
    let pg_micros = unsafe { pgrx::pg_sys::GetCurrentTransactionStartTimestamp() };
    (pg_micros + POSTGRES_EPOCH_UNIX_MICROS) as f64 / 1e6
}

/// Raises 25006 (read_only_sql_transaction) in a read-only transaction and on a hot standby,
/// before a function writes anything. Without it, pgrx's `SpiClient::update()` first asks for a
/// transaction id, which on a standby is an internal error (XX000) instead of the read-only
/// error a client or pooler reroutes to the primary on.
pub fn require_writable(function: &std::ffi::CStr) {
    // SAFETY: a plain backend call on the main thread; it raises through pgrx's guard.
    unsafe { pgrx::pg_sys::PreventCommandIfReadOnly(function.as_ptr()) }
}

/// Runs `f` with settings changed for its duration only, as a function's `SET` clause does:
/// a new GUC nest level, popped after `f`. An error inside `f` pops it with the transaction's
/// (or subtransaction's) abort, so nothing leaks into the caller's session either way.
pub fn with_settings<R>(
    settings: &[(&std::ffi::CStr, &std::ffi::CStr)],
    f: impl FnOnce() -> R,
) -> R {
    // SAFETY: a main-thread backend call.
    let nest_level = unsafe { pgrx::pg_sys::NewGUCNestLevel() };
    for (name, value) in settings {
        set_setting(name, value);
    }
    let result = f();
    unsafe { pgrx::pg_sys::AtEOXact_GUC(true, nest_level) };
    result
}

/// CurrentMemoryContext switched to another context until dropped (also when an error
/// unwinds), as MemoryContextSwitchTo and its restore in a PG_FINALLY would.
pub struct MemoryContextSwitch {
    previous: pgrx::pg_sys::MemoryContext,
}

impl MemoryContextSwitch {
    /// # Safety
    /// `context` is a valid memory context that outlives the switch; main thread only.
    pub unsafe fn to(context: pgrx::pg_sys::MemoryContext) -> Self {
        let previous = pgrx::pg_sys::CurrentMemoryContext;
        pgrx::pg_sys::CurrentMemoryContext = context;
        MemoryContextSwitch { previous }
    }
}

impl Drop for MemoryContextSwitch {
    fn drop(&mut self) {
        // SAFETY: restores the context that was current when the switch was made.
        unsafe { pgrx::pg_sys::CurrentMemoryContext = self.previous };
    }
}

/// A timestamptz from Postgres microseconds (since 2000-01-01); 22008 when out of range.
pub fn timestamptz(micros: i64) -> pgrx::datum::TimestampWithTimeZone {
    pgrx::datum::TimestampWithTimeZone::try_from(micros).unwrap_or_else(|_| {
        crate::error::PersonalizeError::invalid(
            format!("timestamp {micros} µs after 2000-01-01 is out of range"),
            "Check the events' occurred_at and the campaign's delay.",
        )
        .raise()
    })
}

/// Sends `pg_notify(channel, payload)` without a query: NOTIFY queues it for commit.
pub fn notify(channel: &str, payload: &str) {
    use pgrx::IntoDatum;
    let args = [channel.into_datum(), payload.into_datum()];
    // SAFETY: pg_notify is a plain fmgr function of two non-null text arguments; it raises
    // (through pgrx's guard) only for an overlong payload or a parallel worker.
    unsafe {
        pgrx::fcinfo::direct_function_call_as_datum(pgrx::pg_sys::pg_notify, &args);
    }
}

/// Changes a setting inside `with_settings` (its nest level restores the caller's value).
fn set_setting(name: &std::ffi::CStr, value: &std::ffi::CStr) {
    use pgrx::pg_sys;
    // SAFETY: a main-thread backend call; the names and values are valid C strings of
    // user-settable parameters.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
}

/// The oid of table `name` in schema personalize, InvalidOid when there is none (two syscache
/// lookups, no query).
pub fn personalize_relid(name: &std::ffi::CStr) -> pgrx::pg_sys::Oid {
    use pgrx::pg_sys;
    // SAFETY: main-thread backend calls with valid C strings; missing_ok returns InvalidOid.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"personalize".as_ptr(), true);
        if namespace == pg_sys::InvalidOid {
            return pg_sys::InvalidOid;
        }
        pg_sys::get_relname_relid(name.as_ptr(), namespace)
    }
}

/// The pages of a table's main fork now (0 when it no longer exists). Takes the
/// AccessShareLock any read of the table would, kept to the end of the transaction.
pub fn relation_pages(relid: pgrx::pg_sys::Oid) -> u32 {
    use pgrx::pg_sys;
    // SAFETY: main-thread backend calls; try_relation_open returns NULL for a dropped table.
    unsafe {
        let rel = pg_sys::try_relation_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        if rel.is_null() {
            return 0;
        }
        let pages = pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM);
        pg_sys::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        pages
    }
}
