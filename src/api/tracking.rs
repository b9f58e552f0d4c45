//! Tracking: `track`, `track_batch` and `validate_event` (public jsonb wrappers in
//! sql/tracking.sql call these with the jsonb printed as text), and `replay_rejected`.

use pgrx::datum::AnyArray;
use pgrx::prelude::*;

use crate::core::tracking::check_event_text;
use crate::error::PersonalizeError;
use crate::gucs;
use crate::pg::ingest::Ingest;

/// Tracks one event; returns its event_id, the stored event's id for a repeat (same user,
/// event type and client_event_id, same item and properties), or NULL when the event was
/// quarantined (also for a conflicting reuse of a client_event_id).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _track_one(event: Option<&str>, strict: Option<bool>) -> Option<i64> {
    crate::pg::require_writable(c"track()");
    let strict = crate::error::strict_flag(strict);
    let mut ingest = Ingest::new("track", strict);
    Spi::connect_mut(|client| ingest.chunk(client, &[(1, event)], None));
    let tally = &ingest.tally;
    // A repeat of a stored event (same user, event type and client_event_id, same content):
    // first_event_id is the stored event's (see Ingest::repeats).
    if tally.accepted == 1 || tally.duplicates == 1 {
        return tally.first_event_id;
    }
    None
}

/// Tracks a batch; every element is accounted for as accepted, duplicate or rejected.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _track_many(
    originals: Option<AnyArray>,
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
    crate::pg::require_writable(c"track_batch()");
    let strict = crate::error::strict_flag(strict);
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
    let chunk: Vec<(i64, Option<&str>)> = events
        .iter()
        .enumerate()
        .map(|(k, e)| (k as i64 + 1, e))
        .collect();
    let mut ingest = Ingest::new("track_batch", strict);
    if !chunk.is_empty() {
        // The caller's jsonb[] (when it is one) lets the INSERT take properties without a
        // second parse.
        let original = originals
            .as_ref()
            .filter(|a| a.oid() == pg_sys::JSONBARRAYOID);
        Spi::connect_mut(|client| ingest.chunk(client, &chunk, original));
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

/// Checks quarantined events again against the current tracking plan (all, or those with a
/// reason, an event type, received in a time range): those that pass are stored once and
/// marked resolved, the rest keep fresh reasons. See `pg::ingest::replay_rejected`.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn replay_rejected(
    reason: default!(Option<&str>, "NULL"),
    event_type: default!(Option<&str>, "NULL"),
    since: default!(Option<TimestampWithTimeZone>, "NULL"),
    until: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(replayed, i64),
        name!(stored, i64),
        name!(duplicates, i64),
        name!(still_rejected, i64),
    ),
> {
    crate::pg::require_writable(c"replay_rejected()");
    let t = crate::pg::ingest::replay_rejected(reason, event_type, since, until);
    TableIterator::once((t.replayed, t.stored, t.duplicates, t.still_rejected))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn one<T: pgrx::IntoDatum + pgrx::FromDatum>(sql: &str) -> Option<T> {
        Spi::get_one::<T>(sql).expect("query runs")
    }

    #[pg_test]
    fn a_retry_with_the_same_client_event_id_is_stored_once() {
        let e = r#"'{"type":"view","user_id":"u1","item_id":"i1","client_event_id":"c-1"}'"#;
        let first: Option<i64> = one(&format!("SELECT personalize.track({e})"));
        let second: Option<i64> = one(&format!("SELECT personalize.track({e})"));
        assert!(first.is_some());
        assert_eq!(first, second);
        let n: Option<i64> = one("SELECT count(*) FROM personalize.events");
        assert_eq!(n, Some(1));
    }

    #[pg_test]
    fn a_client_event_id_is_the_senders_own() {
        // Another user's or another event type's use of the same id is a separate event.
        let view = r#"'{"type":"view","user_id":"a","item_id":"i1","client_event_id":"o-77:1"}'"#;
        let buy = r#"'{"type":"purchase","user_id":"b","item_id":"i2","client_event_id":"o-77:1","properties":{"order_id":"o-77"}}'"#;
        let cart =
            r#"'{"type":"add_to_cart","user_id":"a","item_id":"i1","client_event_id":"o-77:1"}'"#;
        let v: Option<i64> = one(&format!("SELECT personalize.track({view})"));
        let b: Option<i64> = one(&format!("SELECT personalize.track({buy}, strict => true)"));
        let c: Option<i64> = one(&format!("SELECT personalize.track({cart})"));
        assert!(v.is_some() && b.is_some() && c.is_some());
        assert!(v != b && b != c && v != c);
        // Integer 0 and string "0" are the same id of the same sender.
        let zero = one::<i64>(
            r#"SELECT personalize.track('{"type":"view","user_id":"a","item_id":"i1","client_event_id":0}')"#,
        );
        let again = one::<i64>(
            r#"SELECT personalize.track('{"type":"view","user_id":"a","item_id":"i1","client_event_id":"0"}')"#,
        );
        assert_eq!(zero, again);
        // The same key with other content is reported (quarantined), not dropped silently.
        let other = one::<i64>(
            r#"SELECT personalize.track('{"type":"view","user_id":"a","item_id":"i9","client_event_id":"o-77:1"}')"#,
        );
        assert_eq!(other, None);
        let reason: Option<String> = one(
            "SELECT reasons[1] FROM personalize.rejected_events WHERE client_event_id = 'o-77:1'",
        );
        assert_eq!(reason.as_deref(), Some("client_event_id_conflict"));
        let counts: Option<String> = one(
            r#"SELECT format('%s/%s/%s', accepted, duplicates, rejected) FROM personalize.track_batch(ARRAY[
                 '{"type":"view","user_id":"c","item_id":"i1","client_event_id":"k"}',
                 '{"type":"view","user_id":"c","item_id":"i1","client_event_id":"k"}',
                 '{"type":"view","user_id":"c","item_id":"i2","client_event_id":"k"}',
                 '{"type":"view","user_id":"d","item_id":"i2","client_event_id":"k"}',
                 '{"type":"view","user_id":"a","item_id":"i1","client_event_id":"o-77:1"}']::jsonb[])"#,
        );
        assert_eq!(counts.as_deref(), Some("2/2/1"));
        let stored: Option<i64> = one("SELECT count(*) FROM personalize.events");
        assert_eq!(stored, Some(6));
    }

    #[pg_test]
    fn strict_mode_raises_on_a_conflicting_client_event_id() {
        Spi::run(
            "CREATE FUNCTION pg_temp.outcome(q text) RETURNS text LANGUAGE plpgsql AS $$ \
             BEGIN EXECUTE q; RETURN 'ok'; \
             EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $$",
        )
        .unwrap();
        let first: Option<String> = one(
            r#"SELECT pg_temp.outcome($q$SELECT personalize.track('{"type":"view","user_id":"a","item_id":"i1","client_event_id":"x"}')$q$)"#,
        );
        assert_eq!(first.as_deref(), Some("ok"));
        let second: Option<String> = one(
            r#"SELECT pg_temp.outcome($q$SELECT personalize.track('{"type":"view","user_id":"a","item_id":"i2","client_event_id":"x"}', strict => true)$q$)"#,
        );
        let second = second.unwrap_or_default();
        assert!(
            second.starts_with(
                "23505 pg_personalize: event 1: client_event_id \"x\" was already used by event "
            ) && second.ends_with(" of this user and event type, with another item or properties"),
            "{second}"
        );
        let stored: Option<i64> = one("SELECT count(*) FROM personalize.events");
        assert_eq!(stored, Some(1));
    }

    #[pg_test]
    fn a_plan_change_applies_to_the_next_statement() {
        let e = r#"'{"type":"view","user_id":"u1","item_id":"i1","properties":{"colour":"red"}}'"#;
        let before: Option<Vec<String>> = one(&format!("SELECT personalize.validate_event({e})"));
        assert_eq!(before.map(|v| v.len()), Some(1));
        Spi::run(
            "UPDATE personalize.event_types SET properties_schema = \
             '{\"type\":\"object\",\"properties\":{\"colour\":{\"type\":\"string\"}}}' \
             WHERE event_type = 'view'",
        )
        .expect("update runs");
        let after: Option<Vec<String>> = one(&format!("SELECT personalize.validate_event({e})"));
        assert_eq!(after, Some(vec![]));
    }

    #[pg_test]
    fn nothing_is_lost_from_a_mixed_batch() {
        let r: Option<i32> = one(
            r#"SELECT accepted + duplicates + rejected FROM personalize.track_batch(ARRAY[
                 '{"type":"view","user_id":"u","item_id":"i"}', NULL, '[]',
                 '{"type":"search","user_id":"u","properties":{"query":"q"}}',
                 '{"type":"nope","user_id":"u"}']::jsonb[])"#,
        );
        assert_eq!(r, Some(5));
        let stored: Option<i64> = one("SELECT (SELECT count(*) FROM personalize.events) \
                  + (SELECT count(*) FROM personalize.rejected_events)");
        assert_eq!(stored, Some(5));
    }

    #[pg_test(
        error = "pg_personalize: event 2 violates the tracking plan: $.user_id: is required: the id of the user (or anonymous visitor) who did this (missing_field)"
    )]
    fn strict_mode_raises_and_stores_nothing() {
        Spi::run(
            r#"SELECT * FROM personalize.track_batch(ARRAY[
                 '{"type":"view","user_id":"u","item_id":"i"}',
                 '{"type":"view","item_id":"i"}']::jsonb[], strict => true)"#,
        )
        .unwrap();
    }
}
