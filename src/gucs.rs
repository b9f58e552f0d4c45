//! Settings under the `personalize.` prefix. Limits are superuser-only (SUSET) so a caller
//! cannot lift them for its own session.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

use crate::core::tracking::Limits;

pub static MAX_EVENT_BYTES: GucSetting<i32> = GucSetting::<i32>::new(32 * 1024);
pub static MAX_EVENT_DEPTH: GucSetting<i32> = GucSetting::<i32>::new(16);
pub static MAX_FUTURE_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(86_400);
pub static MAX_BATCH_EVENTS: GucSetting<i32> = GucSetting::<i32>::new(100_000);
pub static TRAINING_THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
/// 6 GB: room for EASE's dense solve up to about 13,800 items (`core::ease::solve_bytes`:
/// 32 · n² bytes) on a stock postgresql.conf, whose maintenance_work_mem (64 MB) rules out
/// any real catalogue. A server with less memory to spare lowers it.
pub static TRAINING_MEMORY_MB: GucSetting<i32> = GucSetting::<i32>::new(6144);
pub static MAX_K: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static MAX_CANDIDATES: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static SERVING_HISTORY_EVENTS: GucSetting<i32> = GucSetting::<i32>::new(100);
/// 5 minutes: on 2 cores every candidate of a million-interaction shop fits in it
/// (`scripts/bench_quality.sh`).
pub static TRAINING_TIME_BUDGET: GucSetting<i32> = GucSetting::<i32>::new(300);
pub static SESSION_WINDOW: GucSetting<i32> = GucSetting::<i32>::new(1800);
pub static SESSION_WEIGHT: GucSetting<f64> = GucSetting::<f64>::new(0.5);
pub static OUTBOX_DIRECT_WRITE: GucSetting<bool> = GucSetting::<bool>::new(true);
/// The key of unsubscribe tokens (`core::consent`): superuser-only, hidden from others.
pub static UNSUBSCRIBE_SECRET: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);

pub fn init() {
    GucRegistry::define_bool_guc(
        c"personalize.outbox_direct_write",
        c"Whether the events trigger writes campaign messages without an INSERT statement.",
        c"On (the default), messages go into an outbox as the extension made it through the \
          executor's own insert calls (pg::outbox_writer); off, through INSERT statements, \
          as when the outbox has a trigger or constraint of the DBA's. The rows are the same.",
        &OUTBOX_DIRECT_WRITE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"personalize.unsubscribe_secret",
        c"The key that signs unsubscribe tokens (at least 32 bytes).",
        c"Set it once per server (ALTER SYSTEM SET personalize.unsubscribe_secret = '...') and \
          keep it: tokens made under another key are refused.",
        &UNSUBSCRIBE_SECRET,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_int_guc(
        c"personalize.max_event_bytes",
        c"Largest accepted event, in bytes of JSON text.",
        c"Larger events are quarantined in personalize.rejected_events with reason oversize.",
        &MAX_EVENT_BYTES,
        256,
        16 * 1024 * 1024,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"personalize.max_event_depth",
        c"Deepest accepted nesting of objects and arrays in an event.",
        c"Deeper events are quarantined with reason too_deep.",
        &MAX_EVENT_DEPTH,
        2,
        100,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"personalize.max_future_seconds",
        c"How far in the future occurred_at may lie (clock skew).",
        c"Events further in the future are quarantined with reason timestamp_out_of_range.",
        &MAX_FUTURE_SECONDS,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"personalize.max_batch_events",
        c"Most events one track_batch call accepts.",
        c"Larger batches are refused with SQLSTATE 54000; split them.",
        &MAX_BATCH_EVENTS,
        1,
        10_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"personalize.training_threads",
        c"Threads train() and evaluate() use (0: one per CPU core).",
        c"Each call builds its own thread pool of this size.",
        &TRAINING_THREADS,
        0,
        256,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"personalize.training_memory_mb",
        c"Largest memory a training run may plan to use, in MB (0: maintenance_work_mem).",
        c"A run whose estimate exceeds it is refused before allocating (SQLSTATE 54000); \
          EASE is skipped (auto) or refused when its item-item solve would exceed it.",
        &TRAINING_MEMORY_MB,
        0,
        1_048_576,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"personalize.max_k",
        c"Most results one recommend(), similar_items() or recommend_for_session() call returns.",
        c"A larger k is refused with SQLSTATE 54000.",
        &MAX_K,
        1,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"personalize.max_candidates",
        c"Most item ids one rank_items() or recommend_for_session() call accepts.",
        c"Longer arrays are refused with SQLSTATE 54000.",
        &MAX_CANDIDATES,
        1,
        10_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"personalize.serving_history_events",
        c"How many of a user's newest events serving reads (fold-in, exclusions, explanations).",
        c"Older events of very active users are left out of the per-call fold-in.",
        &SERVING_HISTORY_EVENTS,
        1,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"personalize.training_time_budget",
        c"How long train()'s choice among model families may take (default 5 min).",
        c"Candidates start only while it lasts, cheapest first; the rest are skipped with a \
          NOTICE (popularity and trending are always tried: 0 chooses between them). The \
          refit of the winner on all the data comes after it.",
        &TRAINING_TIME_BUDGET,
        0,
        7 * 86_400,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"personalize.session_window",
        c"How far back a user's current session reaches for serving (0: no session boost).",
        c"A user's events this recent (as of now()) are their current intent: recommend() and \
          campaign payloads mix them in with personalize.session_weight.",
        &SESSION_WINDOW,
        0,
        7 * 86_400,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_float_guc(
        c"personalize.session_weight",
        c"Share of the current session in a returning user's scores (0 to 1).",
        c"0 serves long-term taste only, 1 the session only; the default 0.5 gives both the \
          same scale.",
        &SESSION_WEIGHT,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// The training memory budget in bytes: `personalize.training_memory_mb` (6144 by default), or
/// when it is 0 the
/// session's `maintenance_work_mem` (the budget PostgreSQL itself gives maintenance work such as
/// index builds, which training resembles).
pub fn training_memory_limit_bytes() -> usize {
    match TRAINING_MEMORY_MB.get() {
        mb if mb > 0 => mb as usize * 1024 * 1024,
        _ => {
            // SAFETY: a plain int GUC variable of the backend, read on its main thread.
            let kb = unsafe { pgrx::pg_sys::maintenance_work_mem };
            kb.max(1024) as usize * 1024
        }
    }
}

/// The validation limits in force now.
pub fn limits() -> Limits {
    Limits {
        max_event_bytes: MAX_EVENT_BYTES.get() as usize,
        max_depth: MAX_EVENT_DEPTH.get() as usize,
        max_id_chars: 256,
        max_future_seconds: MAX_FUTURE_SECONDS.get() as i64,
    }
}
