//! Quiet hours: when a message due at t may go out. The one definition, used by the events
//! trigger (which writes its messages without a statement) and, as the SQL function
//! `personalize._after_quiet_hours(t, quiet_start, quiet_end, tz)`, by the claims; Postgres's
//! own time zone functions are called directly.

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::pg::campaign_cache::QuietHours;

/// Microseconds in a day.
const DAY: i64 = 86_400_000_000;

/// Calls a Postgres date/time function of plain (by-value) arguments.
fn call(
    f: unsafe fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
    args: &[pg_sys::Datum],
) -> pg_sys::Datum {
    let args: Vec<Option<pg_sys::Datum>> = args.iter().map(|d| Some(*d)).collect();
    // SAFETY: the functions called here are strict fmgr functions of non-null arguments that
    // return a non-null by-value datum; an ERROR (a time zone that no longer exists) is
    // raised through pgrx's guard.
    unsafe { pgrx::fcinfo::direct_function_call_as_datum(f, &args) }
        .expect("date/time functions return a value")
}

/// `t` (a Postgres timestamptz, µs since 2000-01-01 UTC), or the end of the quiet hours it
/// falls in.
pub fn after_quiet_hours(t: i64, quiet: &QuietHours) -> i64 {
    let (start, end) = (quiet.start, quiet.end);
    // ±infinity (DT_NOBEGIN / DT_NOEND) has no time of day: the SQL function's casts give
    // NULL there and it returns t.
    if start == end || t == i64::MIN || t == i64::MAX {
        return t;
    }
    let zone = quiet
        .timezone
        .as_str()
        .into_datum()
        .expect("text is not null");
    // timezone(tz, t): the local timestamp; its time of day and date.
    let local = call(pg_sys::timestamptz_zone, &[zone, pg_sys::Datum::from(t)]);
    let local = local.value() as i64;
    let time_of_day = local.rem_euclid(DAY);
    let midnight = local - time_of_day;
    // timezone(tz, local date + days + quiet_end): back to a timestamptz.
    let at_end = |days: i64| -> i64 {
        let local_end = midnight + days * DAY + end;
        call(
            pg_sys::timestamp_zone,
            &[zone, pg_sys::Datum::from(local_end)],
        )
        .value() as i64
    };
    if start < end {
        if time_of_day >= start && time_of_day < end {
            at_end(0)
        } else {
            t
        }
    } else if time_of_day >= start {
        // The quiet hours wrap midnight (e.g. 21:00 to 08:00): they end tomorrow.
        at_end(1)
    } else if time_of_day < end {
        at_end(0)
    } else {
        t
    }
}
