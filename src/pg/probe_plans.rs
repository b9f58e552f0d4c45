//! How the statements that run inside the events trigger and `claim_messages()` are planned.
//! They touch a few rows per event or message, so the right plan is always nested loops over
//! index probes; `with_probe_plans` makes that the only plan the planner can choose, once per
//! backend for each prepared statement (generic plans), and custom plans while the table read
//! is too small for its statistics to be sound.

use std::ffi::CStr;

/// The planner settings the statements run under. Their plans are generic, made once per
/// backend: planning on every execution cost a single-event insert more than running its
/// statements. Without sequential and bitmap scans, hash and merge joins, nested loops over
/// index probes are what the planner makes whatever the statistics say (a bitmap AND of a
/// user's history with the time BRIN was one generic plan's idea). No JIT for such small
/// statements.
const PLANNER_SETTINGS: [(&CStr, &CStr); 6] = [
    (c"plan_cache_mode", c"force_generic_plan"),
    (c"enable_seqscan", c"off"),
    (c"enable_bitmapscan", c"off"),
    (c"enable_hashjoin", c"off"),
    (c"enable_mergejoin", c"off"),
    (c"jit", c"off"),
];

/// A generic plan is fixed when it is made. Made while a table is (nearly) empty, with
/// statistics that say so, its costs tie and it may pick the wrong index (a full scan of the
/// outbox's queue index per probe instead of the unique index: quadratic). So statements that
/// read a table are planned for each execution until it has this many pages, when estimates
/// from its size are sound, and generic after.
const GENERIC_PLAN_MIN_PAGES: u32 = 8;

/// Runs `f` (which executes prepared statements) under `PLANNER_SETTINGS`, for its duration
/// only. `reads`: the personalize table whose size decides between a custom plan per
/// execution (small) and the generic plan (big enough); `None` for statements whose plan does
/// not depend on a table's size (the outbox INSERTs): always generic.
pub fn with_probe_plans<R>(reads: Option<&CStr>, f: impl FnOnce() -> R) -> R {
    let custom = reads.is_some_and(|table| {
        crate::pg::relation_pages(crate::pg::personalize_relid(table)) < GENERIC_PLAN_MIN_PAGES
    });
    let mut settings = PLANNER_SETTINGS.to_vec();
    if custom {
        settings[0].1 = c"force_custom_plan";
    }
    crate::pg::with_settings(&settings, f)
}
