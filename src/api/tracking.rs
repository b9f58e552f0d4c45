//! Tracking: `track`, `track_batch` and `validate_event` (public jsonb wrappers in
//! sql/finalize.sql call these with the jsonb printed as text).

use pgrx::prelude::*;

use crate::core::tracking::check_event_text;
use crate::error::PersonalizeError;
use crate::gucs;
use crate::pg::ingest::Ingest;

fn strict_flag(strict: Option<bool>) -> bool {
    strict.unwrap_or_else(|| {
        PersonalizeError::invalid(
            "strict must be true or false, not NULL",
            "Omit the argument for the default (false: invalid events are quarantined).",
        )
        .raise()
    })
}

/// Tracks one event; returns its event_id, the stored id for a repeated client_event_id, or
/// NULL when the event was quarantined.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _track_one(event: Option<&str>, strict: Option<bool>) -> Option<i64> {
    let strict = strict_flag(strict);
    let mut ingest = Ingest::new("track", strict);
    let text = event.map(str::to_owned);
    let client_event_id = text
        .as_deref()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .and_then(|v| v.get("client_event_id").cloned());
    Spi::connect_mut(|client| ingest.chunk(client, &[(1, text)]));
    let tally = &ingest.tally;
    if tally.accepted == 1 {
        return tally.first_event_id;
    }
    if tally.duplicates == 1 {
        // Same client_event_id as a stored event: answer with that event's id.
        let id = match client_event_id {
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }?;
        return Spi::get_one_with_args::<i64>(
            "SELECT event_id FROM personalize.events WHERE client_event_id = $1",
            &[id.into()],
        )
        .ok()
        .flatten();
    }
    None
}

/// Tracks a batch; every element is accounted for as accepted, duplicate or rejected.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _track_many(
    events: Option<Array<'_, &str>>,
    strict: Option<bool>,
) -> TableIterator<
    'static,
    (
        name!(accepted, i32),
        name!(duplicates, i32),
        name!(rejected, i32),
        name!(rejected_positions, Vec<i32>),
    ),
> {
    let strict = strict_flag(strict);
    let Some(events) = events else {
        PersonalizeError::invalid(
            "events must not be NULL",
            "Pass an array of events; an empty array tracks nothing.",
        )
        .raise()
    };
    let limit = gucs::MAX_BATCH_EVENTS.get() as usize;
    if events.len() > limit {
        PersonalizeError::LimitExceeded {
            message: format!(
                "a batch of {} events is larger than personalize.max_batch_events ({limit})",
                events.len()
            ),
            hint: "Split the batch into smaller calls.".into(),
        }
        .raise();
    }
    let chunk: Vec<(i64, Option<String>)> = events
        .iter()
        .enumerate()
        .map(|(k, e)| (k as i64 + 1, e.map(str::to_owned)))
        .collect();
    let mut ingest = Ingest::new("track_batch", strict);
    if !chunk.is_empty() {
        Spi::connect_mut(|client| ingest.chunk(client, &chunk));
    }
    let t = ingest.tally;
    TableIterator::once((
        t.accepted as i32,
        t.duplicates as i32,
        t.rejected as i32,
        t.rejected_positions,
    ))
}

/// Every violation of one event against the tracking plan; empty when it is valid.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn _validate_one(event: Option<&str>) -> Vec<String> {
    let plan = crate::pg::plan_cache::current();
    check_event_text(
        event,
        &plan,
        &gucs::limits(),
        crate::core::tracking::now_utc(),
    )
    .violations()
    .iter()
    .map(|v| v.to_string())
    .collect()
}
