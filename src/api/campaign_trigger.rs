//! The transactional outbox's writer: a statement-level AFTER INSERT trigger on
//! `personalize.events` that writes each campaign's messages in the events' own transaction,
//! so a message exists exactly when its event does.
//!
//! Per statement it costs, when no campaign cares about the events' types, nothing but a
//! look at the cached campaigns (`pg::campaign_cache`). Otherwise: one read of the statement's
//! relevant events (the transition table `new_events`; item categories come from the
//! per-backend catalogue cache), the rules in Rust (`core::campaigns`), one read of the
//! firing and cancelling users' pending messages (absorbed firings go no further), one query
//! per segment and one for the frequency caps when a remaining firing needs them, one INSERT
//! of all messages and one UPDATE by message id for the cancellations, decided in Rust. The
//! statements are prepared once per backend and run with generic plans under planner settings
//! that leave index probes as the only plan (see PLANNER_SETTINGS).

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashSet};

use pgrx::datum::{DatumWithOid, TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgOid;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::api::outbox::{recent_deliveries, strong_random, uuid_v4};
use crate::core::campaigns::{self, TriggerEvent};
use crate::core::outbox::{cap_reason, Recipient};
use crate::error::{spi_failed, PersonalizeError};
use crate::pg::campaign_cache::{self, Campaigns};
use crate::pg::POSTGRES_EPOCH_UNIX_MICROS;

/// The statement's events of the types the campaigns read, with the category their
/// properties name (for trigger types of category campaigns; the item's catalogue category
/// comes from the per-backend catalogue cache) and the ids of the campaigns whose
/// trigger_properties they contain (Postgres's own `@>`, only for types such campaigns have).
const READ_EVENTS: &str = "\
SELECT e.event_id, e.event_type, e.user_id, e.occurred_at, e.item_id,
       CASE WHEN e.event_type = ANY ($2) THEN e.properties ->> 'category' END,
       CASE WHEN e.event_type = ANY ($3)
            THEN ARRAY(SELECT p.id FROM unnest($4::int8[], $5::text[]) AS p(id, filter)
                        WHERE e.properties @> CAST(p.filter AS jsonb)) END
  FROM new_events e
 WHERE e.event_type = ANY ($1)";

/// The planner settings the trigger's statements run under. Their plans are generic, made
/// once per backend: planning on every execution cost a single-event insert more than running
/// its statements. Every statement touches a few rows per event, so the right plan is always
/// nested loops over index probes; without sequential and bitmap scans, hash and merge joins,
/// that is what the planner makes whatever the statistics say (a bitmap AND of a user's
/// history with the time BRIN was one generic plan's idea). No JIT for such small statements.
const PLANNER_SETTINGS: &[(&std::ffi::CStr, &std::ffi::CStr)] = &[
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
/// read the outbox (or, for segments, the events) are planned for each execution until the
/// table has this many pages, when estimates from its size are sound, and generic after.
const GENERIC_PLAN_MIN_PAGES: u32 = 8;

/// Runs `f` with a generic plan when `sized` (the table it reads is big enough), else with a
/// custom plan; inside `PLANNER_SETTINGS`, whose default is generic.
fn planned<R>(sized: bool, f: impl FnOnce() -> R) -> R {
    if sized {
        return f();
    }
    crate::pg::set_setting(c"plan_cache_mode", c"force_custom_plan");
    let result = f();
    crate::pg::set_setting(c"plan_cache_mode", c"force_generic_plan");
    result
}

/// The pending messages of the (campaign, user) pairs the statement fires or may cancel:
/// a firing whose pair has one is absorbed by it (no segment check, no frequency-cap read, no
/// insert), and the cancellations are decided from them in Rust
/// (`core::campaigns::cancellations`).
///
/// Every statement here that reads the outbox probes an index once per row of its input
/// (LATERAL with OFFSET 0, which the planner does not flatten, or a join on the primary key):
/// an `= ANY (array)` scan is costed for ten elements in a generic plan, and one made while
/// the outbox was small chose a full scan of the queue index instead (quadratic).
const PENDING_MESSAGES: &str = "\
SELECT q.message_id, q.campaign_id, q.user_id, q.triggered_at, q.trigger_event_id
  FROM unnest($1::int8[], $2::text[]) AS r(campaign_id, user_id)
 CROSS JOIN LATERAL (
       SELECT p.message_id, p.campaign_id, p.user_id, p.triggered_at, p.trigger_event_id
         FROM personalize.outbox p
        WHERE p.campaign_id = r.campaign_id AND p.user_id = r.user_id AND p.state = 'pending'
       OFFSET 0) AS q";

/// One message per (campaign, user). The firings are those without a pending message when
/// PENDING_MESSAGES read; one a concurrent transaction commits in between absorbs the new
/// trigger here (the unique partial index). Quiet hours move the delivery time to their end.
/// The written messages come back, as candidates for the statement's cancellations.
const INSERT_MESSAGES: &str = "\
INSERT INTO personalize.outbox
       (campaign_id, campaign, channel, user_id, item_id, trigger_event_id, triggered_at,
        visible_at, idempotency_key)
SELECT m.campaign_id, m.campaign, m.channel, m.user_id, m.item_id, m.event_id, m.occurred_at,
       CASE WHEN m.quiet
            THEN COALESCE((SELECT personalize._after_quiet_hours(m.visible_at, c.quiet_start,
                                                                  c.quiet_end, c.quiet_timezone)
                             FROM personalize.campaigns c
                            WHERE c.campaign_id = m.campaign_id), m.visible_at)
            ELSE m.visible_at END,
       m.idempotency_key
  FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[],
              $7::timestamptz[], $8::timestamptz[], $9::bool[], $10::uuid[])
       AS m(campaign_id, campaign, channel, user_id, item_id, event_id, occurred_at,
            visible_at, quiet, idempotency_key)
ON CONFLICT (campaign_id, user_id) WHERE state = 'pending' DO NOTHING
RETURNING message_id, campaign_id, user_id, triggered_at, trigger_event_id";

/// Cancel-on, decided in Rust: each message by id, with the event that cancels it. A message
/// a worker claimed in the meantime is no longer pending and stays as it is. The state test is
/// a CASE so that it proves no partial index's predicate: the only path to the outbox is then
/// the primary key, probed once per message (with `state = 'pending'` a plan made on empty
/// statistics scanned the whole pending index once per message instead).
const CANCEL_MESSAGES: &str = "\
UPDATE personalize.outbox o
   SET state = 'cancelled', finished_at = now(),
       last_error = 'cancelled by event ' || c.event_id || ' (' || c.event_type || ')'
  FROM unnest($1::int8[], $2::int8[], $3::text[]) AS c(message_id, event_id, event_type)
 WHERE o.message_id = c.message_id AND CASE o.state WHEN 'pending' THEN true ELSE false END";

const NOTIFY: &str = "SELECT pg_notify('personalize_outbox', c) FROM unnest($1::text[]) AS c";

struct Statements {
    read_events: OwnedPreparedStatement,
    pending_messages: OwnedPreparedStatement,
    insert_messages: OwnedPreparedStatement,
    cancel_messages: OwnedPreparedStatement,
    notify: OwnedPreparedStatement,
    recent_deliveries: OwnedPreparedStatement,
    /// personalize.outbox, whose size decides how its readers are planned.
    outbox: pg_sys::Oid,
}

thread_local! {
    static STATEMENTS: OnceCell<Statements> = const { OnceCell::new() };
    /// Idempotency keys: random v4 UUIDs from a ChaCha20 stream seeded from the server's
    /// strong random source on first use in this backend (not in the postmaster, so no two
    /// backends share a stream).
    static KEYS: RefCell<Option<ChaCha20Rng>> = const { RefCell::new(None) };
}

fn new_idempotency_key() -> Uuid {
    KEYS.with(|k| {
        let mut k = k.borrow_mut();
        let rng = k.get_or_insert_with(|| ChaCha20Rng::from_seed(strong_random()));
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        uuid_v4(b)
    })
}

fn prepare(client: &mut pgrx::spi::SpiClient<'_>) -> Statements {
    let oid = |o: pg_sys::Oid| PgOid::from(o);
    let texts = oid(pg_sys::TEXTARRAYOID);
    let int8s = oid(pg_sys::INT8ARRAYOID);
    let times = oid(pg_sys::TIMESTAMPTZARRAYOID);
    let read_events = client
        .prepare(READ_EVENTS, &[texts, texts, texts, int8s, texts])
        .unwrap_or_else(|e| spi_failed("preparing the campaign trigger's read", e))
        .keep();
    let pending_messages = client
        .prepare(PENDING_MESSAGES, &[int8s, texts])
        .unwrap_or_else(|e| spi_failed("preparing the pending-message read", e))
        .keep();
    let insert_messages = client
        .prepare_mut(
            INSERT_MESSAGES,
            &[
                int8s,
                texts,
                texts,
                texts,
                texts,
                int8s,
                times,
                times,
                oid(pg_sys::BOOLARRAYOID),
                oid(pg_sys::UUIDARRAYOID),
            ],
        )
        .unwrap_or_else(|e| spi_failed("preparing the outbox insert", e))
        .keep();
    let cancel_messages = client
        .prepare_mut(CANCEL_MESSAGES, &[int8s, int8s, texts])
        .unwrap_or_else(|e| spi_failed("preparing the outbox cancel", e))
        .keep();
    let notify = client
        .prepare_mut(NOTIFY, &[texts])
        .unwrap_or_else(|e| spi_failed("preparing the outbox notify", e))
        .keep();
    let recent_deliveries = client
        .prepare(
            crate::api::outbox::RECENT_DELIVERIES,
            &[texts, oid(pg_sys::FLOAT8OID)],
        )
        .unwrap_or_else(|e| spi_failed("preparing the frequency cap read", e))
        .keep();
    let outbox = client
        .select(
            "SELECT CAST(to_regclass('personalize.outbox') AS oid)",
            None,
            &[],
        )
        .and_then(|t| t.first().get::<pg_sys::Oid>(1))
        .unwrap_or(None)
        .unwrap_or(pg_sys::InvalidOid);
    Statements {
        outbox,
        recent_deliveries,
        read_events,
        pending_messages,
        insert_messages,
        cancel_messages,
        notify,
    }
}

fn timestamp(micros: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(micros).unwrap_or_else(|_| {
        PersonalizeError::invalid(
            format!("timestamp {micros} µs after 2000-01-01 is out of range"),
            "Check the events' occurred_at and the campaign's delay.",
        )
        .raise()
    })
}

/// The event read from the transition table, with what the message needs besides the rule.
struct ReadEvent {
    event: TriggerEvent,
    item_id: Option<String>,
}

/// The trigger function (see the module comment). Created by sql/finalize.sql as
/// `personalize._events_fire_campaigns()` on `AFTER INSERT ... REFERENCING NEW TABLE AS
/// new_events FOR EACH STATEMENT`.
#[pg_trigger]
fn _events_fire_campaigns<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, PersonalizeError> {
    let set = campaign_cache::current();
    if set.relevant_types.is_empty() {
        return Ok(None);
    }
    if trigger.new_transition_table_name().ok().flatten() != Some("new_events") {
        PersonalizeError::NotReady {
            message: "_events_fire_campaigns() must run as an AFTER INSERT statement trigger \
                      with REFERENCING NEW TABLE AS new_events"
                .into(),
            hint: "Recreate the trigger as sql/finalize.sql defines it.".into(),
        }
        .raise()
    }
    let trigger_data = trigger.trigger_data() as *const pg_sys::TriggerData;
    // SAFETY: the trigger data and its relation are valid for this call.
    let events_relid = unsafe { (*(*trigger_data).tg_relation).rd_id };
    Spi::connect_mut(|client| {
        // SAFETY: the trigger data outlives this call; SPI keeps a pointer to its transition
        // tables only for this connection.
        let registered = unsafe { pg_sys::SPI_register_trigger_data(trigger_data.cast_mut()) };
        if registered < 0 {
            spi_failed("cannot read the inserted events", registered);
        }
        STATEMENTS.with(|cell| {
            if cell.get().is_none() {
                let _ = cell.set(prepare(client));
            }
            let st = cell.get().expect("prepared above");
            crate::pg::with_settings(PLANNER_SETTINGS, || fire(client, st, &set, events_relid));
        });
    });
    Ok(None)
}

fn fire(
    client: &mut pgrx::spi::SpiClient<'_>,
    st: &Statements,
    set: &Campaigns,
    events_relid: pg_sys::Oid,
) {
    let args: [DatumWithOid; 5] = [
        set.relevant_types.clone().into(),
        set.category_types.clone().into(),
        set.property_types.clone().into(),
        set.property_ids.clone().into(),
        set.property_filters.clone().into(),
    ];
    let catalog = (!set.category_types.is_empty()).then(crate::pg::model_cache::catalog);
    let mut read: Vec<ReadEvent> = client
        .select(&st.read_events, None, &args)
        .unwrap_or_else(|e| spi_failed("cannot read the inserted events", e))
        .map(|row| {
            let occurred_at = row
                .get::<TimestampWithTimeZone>(4)
                .ok()
                .flatten()
                .map_or(0, i64::from);
            let event_type = row.get::<String>(2).ok().flatten().unwrap_or_default();
            let item_id = row.get::<String>(5).ok().flatten();
            let item_category = match (&catalog, &item_id) {
                (Some(catalog), Some(item)) if set.category_types.contains(&event_type) => {
                    catalog.category_of(item).map(str::to_owned)
                }
                _ => None,
            };
            ReadEvent {
                event: TriggerEvent {
                    event_id: row.get::<i64>(1).ok().flatten().unwrap_or(0),
                    event_type,
                    user_id: row.get::<String>(3).ok().flatten().unwrap_or_default(),
                    occurred_at,
                    item_category,
                    property_category: row.get::<String>(6).ok().flatten(),
                    property_matches: row.get::<Vec<i64>>(7).ok().flatten().unwrap_or_default(),
                },
                item_id,
            }
        })
        .collect();
    if read.is_empty() {
        return;
    }
    read.sort_by_key(|r| (r.event.occurred_at, r.event.event_id));
    let (events, item_ids): (Vec<TriggerEvent>, Vec<Option<String>>) =
        read.into_iter().map(|r| (r.event, r.item_id)).unzip();

    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let now_ts = timestamp(now);
    let oldest: Vec<i64> = set
        .list
        .iter()
        .map(|c| i64::from(now_ts - c.max_event_age))
        .collect();
    let mut firings = campaigns::fire(&set.rules, &events, &oldest);
    let cancels = campaigns::cancel_requests(&set.rules, &events);
    if firings.is_empty() && cancels.is_empty() {
        return;
    }
    let outbox_sized = crate::pg::relation_pages(st.outbox) >= GENERIC_PLAN_MIN_PAGES;
    let mut pending = planned(outbox_sized, || {
        read_pending(client, st, set, &events, &firings, &cancels)
    });
    if !pending.is_empty() && !firings.is_empty() {
        // Absorbed: the (campaign, user) already has a pending message.
        let waiting: HashSet<(i64, &str)> = pending
            .iter()
            .map(|m| (m.campaign_id, m.user_id.as_str()))
            .collect();
        firings.retain(|f| {
            !waiting.contains(&(
                set.list[f.campaign].rule.campaign_id,
                events[f.event].user_id.as_str(),
            ))
        });
    }

    // Segments: one set query per segment, over the users that fired its campaigns.
    let mut by_segment: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    for f in &firings {
        if let Some(s) = &set.list[f.campaign].segment {
            by_segment
                .entry(s.as_str())
                .or_default()
                .insert(events[f.event].user_id.as_str());
        }
    }
    if !by_segment.is_empty() {
        let events_sized = crate::pg::relation_pages(events_relid) >= GENERIC_PLAN_MIN_PAGES;
        let members: BTreeMap<&str, HashSet<String>> = by_segment
            .into_iter()
            .map(|(segment, users)| {
                let users: Vec<String> = users.into_iter().map(str::to_owned).collect();
                let members = planned(events_sized, || {
                    crate::pg::segment_cache::members_among(client, segment, users)
                });
                (segment, members.into_iter().collect())
            })
            .collect();
        firings.retain(|f| {
            set.list[f.campaign]
                .segment
                .as_deref()
                .is_none_or(|s| members[s].contains(&events[f.event].user_id))
        });
    }

    // Frequency caps: what the firing users were handed out lately (claimed or sent).
    let capped_campaigns = firings.iter().any(|f| set.list[f.campaign].cap.is_some());
    if capped_campaigns || !set.global_caps.is_empty() {
        let longest_window = set
            .global_caps
            .iter()
            .map(|g| g.cap.window_seconds)
            .chain(
                set.list
                    .iter()
                    .filter_map(|c| c.cap.map(|c| c.window_seconds)),
            )
            .fold(0.0, f64::max);
        let users: Vec<String> = firings
            .iter()
            .map(|f| events[f.event].user_id.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .map(str::to_owned)
            .collect();
        if longest_window > 0.0 && !users.is_empty() {
            let recent = planned(outbox_sized, || {
                recent_deliveries(client, &st.recent_deliveries, users, longest_window)
            });
            if !recent.is_empty() {
                let now_seconds = (now + POSTGRES_EPOCH_UNIX_MICROS) as f64 / 1e6;
                firings.retain(|f| {
                    let c = &set.list[f.campaign];
                    let recipient = Recipient {
                        message_id: 0,
                        user_id: &events[f.event].user_id,
                        campaign_id: Some(c.rule.campaign_id),
                        channel: &c.channel,
                        campaign_cap: c.cap.as_ref(),
                    };
                    cap_reason(now_seconds, &recipient, &recent, &set.global_caps).is_none()
                });
            }
        }
    }

    if !firings.is_empty() {
        let written = write_messages(client, st, set, &events, &item_ids, &firings, now_ts);
        if !cancels.is_empty() {
            pending.extend(written);
        }
    }

    let cancelled = campaigns::cancellations(&set.rules, &events, &cancels, &pending);
    if !cancelled.is_empty() {
        let ids: Vec<i64> = cancelled.iter().map(|c| c.message_id).collect();
        let event_ids: Vec<i64> = cancelled.iter().map(|c| events[c.event].event_id).collect();
        let types: Vec<String> = cancelled
            .iter()
            .map(|c| events[c.event].event_type.clone())
            .collect();
        let args: [DatumWithOid; 3] = [ids.into(), event_ids.into(), types.into()];
        planned(outbox_sized, || {
            client
                .update(&st.cancel_messages, None, &args)
                .unwrap_or_else(|e| spi_failed("cannot cancel messages in personalize.outbox", e))
        });
    }
}

/// The pending messages (PENDING_MESSAGES) of the (campaign, user) pairs that fire or may be
/// cancelled in this statement.
fn read_pending(
    client: &mut pgrx::spi::SpiClient<'_>,
    st: &Statements,
    set: &Campaigns,
    events: &[TriggerEvent],
    firings: &[campaigns::Firing],
    cancels: &[campaigns::Firing],
) -> Vec<campaigns::PendingMessage> {
    let pairs: HashSet<(i64, &str)> = firings
        .iter()
        .chain(cancels)
        .map(|f| {
            (
                set.rules[f.campaign].campaign_id,
                events[f.event].user_id.as_str(),
            )
        })
        .collect();
    let (campaign_ids, users): (Vec<i64>, Vec<String>) =
        pairs.into_iter().map(|(c, u)| (c, u.to_owned())).unzip();
    let args: [DatumWithOid; 2] = [campaign_ids.into(), users.into()];
    client
        .select(&st.pending_messages, None, &args)
        .unwrap_or_else(|e| spi_failed("cannot read personalize.outbox", e))
        .filter_map(pending_message)
        .collect()
}

/// A row of (message_id, campaign_id, user_id, triggered_at, trigger_event_id).
fn pending_message(row: pgrx::spi::SpiHeapTupleData<'_>) -> Option<campaigns::PendingMessage> {
    Some(campaigns::PendingMessage {
        message_id: row.get::<i64>(1).ok()??,
        campaign_id: row.get::<i64>(2).ok()??,
        user_id: row.get::<String>(3).ok()??,
        triggered_at: i64::from(row.get::<TimestampWithTimeZone>(4).ok()??),
        trigger_event_id: row.get::<i64>(5).ok()??,
    })
}

fn write_messages(
    client: &mut pgrx::spi::SpiClient<'_>,
    st: &Statements,
    set: &Campaigns,
    events: &[TriggerEvent],
    item_ids: &[Option<String>],
    firings: &[campaigns::Firing],
    now: TimestampWithTimeZone,
) -> Vec<campaigns::PendingMessage> {
    let n = firings.len();
    let mut campaign_ids = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut channels = Vec::with_capacity(n);
    let mut users = Vec::with_capacity(n);
    let mut items = Vec::with_capacity(n);
    let mut event_ids = Vec::with_capacity(n);
    let mut occurred = Vec::with_capacity(n);
    let mut visible = Vec::with_capacity(n);
    let mut quiet = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut due_channels: Vec<String> = Vec::new();
    let now_micros = i64::from(now);
    for f in firings {
        let c = &set.list[f.campaign];
        let e = &events[f.event];
        let at = timestamp(e.occurred_at);
        let due = at + c.delay;
        campaign_ids.push(c.rule.campaign_id);
        names.push(c.name.clone());
        channels.push(c.channel.clone());
        users.push(e.user_id.clone());
        items.push(item_ids[f.event].clone());
        event_ids.push(e.event_id);
        occurred.push(at);
        visible.push(if i64::from(due) < now_micros {
            now
        } else {
            due
        });
        quiet.push(c.has_quiet_hours);
        if !c.has_quiet_hours && i64::from(due) <= now_micros {
            due_channels.push(c.channel.clone());
        }
        keys.push(new_idempotency_key());
    }
    let args: [DatumWithOid; 10] = [
        campaign_ids.into(),
        names.into(),
        channels.into(),
        users.into(),
        items.into(),
        event_ids.into(),
        occurred.into(),
        visible.into(),
        quiet.into(),
        keys.into(),
    ];
    let written: Vec<campaigns::PendingMessage> = client
        .update(&st.insert_messages, None, &args)
        .unwrap_or_else(|e| spi_failed("cannot write personalize.outbox", e))
        .filter_map(pending_message)
        .collect();
    // Wakes idle workers (LISTEN personalize_outbox) when something is due now. A message
    // absorbed by one already pending may wake them for nothing, which costs a worker one
    // empty claim; reading back what was written would cost every statement more.
    if !due_channels.is_empty() {
        due_channels.sort();
        due_channels.dedup();
        let args: [DatumWithOid; 1] = [due_channels.into()];
        client
            .update(&st.notify, None, &args)
            .unwrap_or_else(|e| spi_failed("cannot notify personalize_outbox", e));
    }
    written
}

/// Makes every backend re-read the campaigns and frequency caps (at commit; this one at once).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _invalidate_campaign_cache() {
    campaign_cache::invalidate();
}
