//! The transactional outbox's writer: a statement-level AFTER INSERT trigger on
//! `personalize.events` that writes each campaign's messages in the events' own transaction,
//! so a message exists exactly when its event does.
//!
//! Per statement it costs, when no campaign cares about the events' types, nothing but a
//! look at the cached campaigns (`pg::campaign_cache`). Otherwise: one pass over the
//! statement's transition table `new_events` in Rust (no query; item categories come from the
//! per-backend catalogue cache), the rules in Rust (`core::campaigns`), probes of the
//! outbox's indexes for the firing and cancelling pairs' pending messages and the firing
//! users' recent deliveries (`pg::outbox_probe`, no query; absorbed firings go no further),
//! and the writes, decided in Rust first: a message that an event of the same statement
//! cancels (a view, then a purchase, in one batch) is written cancelled, the others pending
//! with ON CONFLICT DO NOTHING, both by `pg::outbox_writer` (no statement), and only messages
//! pending from earlier statements need an UPDATE by message id. A campaign's segment is
//! checked when its message is due, by `claim_messages`, not here. The statements still run
//! (that UPDATE, and the INSERTs when the outbox was altered) are prepared once per backend
//! and run with generic plans under planner settings that leave index probes as the only plan
//! (see PLANNER_SETTINGS); NOTIFY is a direct call.

use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};

use pgrx::datum::{DatumWithOid, TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgOid;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::api::outbox::{strong_random, uuid_v4};
use crate::core::campaigns::{self, TriggerEvent};
use crate::core::outbox::{cap_reason, Recipient};
use crate::error::{spi_failed, PersonalizeError};
use crate::pg::campaign_cache::{self, Campaigns};
use crate::pg::outbox_probe::OutboxProbe;
use crate::pg::outbox_writer::{NewMessage, OutboxWriter};
use crate::pg::quiet_hours::after_quiet_hours;
use crate::pg::POSTGRES_EPOCH_UNIX_MICROS;

/// The planner settings the trigger's statements run under. Their plans are generic, made
/// once per backend: planning on every execution cost a single-event insert more than running
/// its statements. Every statement touches a few rows per event, so the right plan is always
/// nested loops over index probes; without sequential and bitmap scans, hash and merge joins,
/// that is what the planner makes whatever the statistics say (a bitmap AND of a user's
/// history with the time BRIN was one generic plan's idea). No JIT for such small statements.
pub(crate) const PLANNER_SETTINGS: &[(&std::ffi::CStr, &std::ffi::CStr)] = &[
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
/// (`claim_messages` checks segments the same way.)
pub(crate) const GENERIC_PLAN_MIN_PAGES: u32 = 8;

/// Runs `f` with a generic plan when `sized` (the table it reads is big enough), else with a
/// custom plan; inside `PLANNER_SETTINGS`, whose default is generic.
pub(crate) fn planned<R>(sized: bool, f: impl FnOnce() -> R) -> R {
    if sized {
        return f();
    }
    crate::pg::set_setting(c"plan_cache_mode", c"force_custom_plan");
    let result = f();
    crate::pg::set_setting(c"plan_cache_mode", c"force_generic_plan");
    result
}

/// The INSERT statements below serve when the outbox is not as the extension made it (see
/// `pg::outbox_writer`, which writes the same rows without a statement otherwise). Both take
/// the message columns of `MessageColumns` as their first nine parameters; delivery times
/// (quiet hours included) and cancel reasons are computed in Rust.
///
/// One pending message per (campaign, user): the firings are those without a pending message
/// when the trigger probed; one a concurrent transaction commits in between absorbs the new
/// trigger here (the unique partial index).
const INSERT_MESSAGES: &str = "\
INSERT INTO personalize.outbox
       (campaign_id, campaign, channel, user_id, item_id, trigger_event_id, triggered_at,
        visible_at, idempotency_key)
SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[],
                     $7::timestamptz[], $8::timestamptz[], $9::uuid[])
ON CONFLICT (campaign_id, user_id) WHERE state = 'pending' DO NOTHING";

/// Messages fired and cancelled by events of the same statement (a view and then a purchase
/// in one batch): written as cancelled at once, as the pending row and the UPDATE that
/// cancelled it would have left them. They never enter the queue or the one-pending index,
/// so a plain INSERT writes them (no arbiter to check).
const INSERT_CANCELLED: &str = "\
INSERT INTO personalize.outbox
       (campaign_id, campaign, channel, user_id, item_id, trigger_event_id, triggered_at,
        visible_at, idempotency_key, last_error, state, finished_at)
SELECT m.*, 'cancelled', now()
  FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[],
              $7::timestamptz[], $8::timestamptz[], $9::uuid[], $10::text[]) AS m";

/// Cancel-on, decided in Rust: each message by id, with the reason (`cancel_reason`). A
/// message a worker claimed in the meantime is no longer pending and stays as it is. The state
/// test is a CASE so that it proves no partial index's predicate: the only path to the outbox
/// is then the primary key, probed once per message (with `state = 'pending'` a plan made on
/// empty statistics scanned the whole pending index once per message instead).
const CANCEL_MESSAGES: &str = "\
UPDATE personalize.outbox o
   SET state = 'cancelled', finished_at = now(), last_error = c.reason
  FROM unnest($1::int8[], $2::text[]) AS c(message_id, reason)
 WHERE o.message_id = c.message_id AND CASE o.state WHEN 'pending' THEN true ELSE false END";

struct Statements {
    insert_messages: OwnedPreparedStatement,
    insert_cancelled: OwnedPreparedStatement,
    cancel_messages: OwnedPreparedStatement,
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
    let columns = [
        int8s,
        texts,
        texts,
        texts,
        texts,
        int8s,
        times,
        times,
        oid(pg_sys::UUIDARRAYOID),
    ];
    let insert_messages = client
        .prepare_mut(INSERT_MESSAGES, &columns)
        .unwrap_or_else(|e| spi_failed("preparing the outbox insert", e))
        .keep();
    let mut with_reasons = columns.to_vec();
    with_reasons.push(texts);
    let insert_cancelled = client
        .prepare_mut(INSERT_CANCELLED, &with_reasons)
        .unwrap_or_else(|e| spi_failed("preparing the outbox insert", e))
        .keep();
    let cancel_messages = client
        .prepare_mut(CANCEL_MESSAGES, &[int8s, texts])
        .unwrap_or_else(|e| spi_failed("preparing the outbox cancel", e))
        .keep();
    Statements {
        insert_messages,
        insert_cancelled,
        cancel_messages,
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
    // Only events tracked through the extension fire campaigns: a restore, a COPY of history
    // or a replicated insert must not write messages (the restored outbox has them already).
    if !crate::pg::ingest::storing_tracked_events() {
        return Ok(None);
    }
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
    // SAFETY: the trigger data, its relation and its transition table are valid for this
    // call, which is an AFTER INSERT statement trigger with REFERENCING NEW TABLE (checked).
    let read = unsafe { read_new_events(trigger_data, &set) };
    if read.is_empty() {
        return Ok(None);
    }
    Spi::connect_mut(|client| {
        STATEMENTS.with(|cell| {
            if cell.get().is_none() {
                let _ = cell.set(prepare(client));
            }
            let st = cell.get().expect("prepared above");
            fire(client, st, &set, read);
        });
    });
    Ok(None)
}

/// The statement's events of the types the campaigns read, straight from the trigger's
/// transition table (a query over it cost a single-event insert about a seventh of the
/// trigger's time): the item's category from the per-backend catalogue cache (for trigger
/// types of category campaigns), `properties ->> 'category'`, and the ids of the campaigns
/// whose trigger_properties the properties contain (Postgres's own `@>`, only for types such
/// campaigns have).
///
/// # Safety
/// `trigger_data` is the current call's, for an AFTER INSERT statement trigger on
/// personalize.events with a NEW transition table.
unsafe fn read_new_events(
    trigger_data: *const pg_sys::TriggerData,
    set: &Campaigns,
) -> Vec<ReadEvent> {
    let store = (*trigger_data).tg_newtable;
    if store.is_null() {
        return Vec::new();
    }
    let desc = (*(*trigger_data).tg_relation).rd_att;
    // Borrowed from the relation (neither released nor freed when dropped).
    let tupdesc = pgrx::PgTupleDesc::from_pg_unchecked(desc);
    let column = |name: &str| -> i32 {
        match tupdesc
            .iter()
            .position(|a| !a.is_dropped() && a.name() == name)
        {
            Some(i) => i as i32 + 1,
            None => PersonalizeError::NotReady {
                message: format!("personalize.events has no column {name}"),
                hint: "Update the extension: ALTER EXTENSION pg_personalize UPDATE;".into(),
            }
            .raise(),
        }
    };
    let (c_id, c_type, c_user, c_item, c_at, c_props) = (
        column("event_id"),
        column("event_type"),
        column("user_id"),
        column("item_id"),
        column("occurred_at"),
        column("properties"),
    );
    let catalog = (!set.category_types.is_empty()).then(crate::pg::model_cache::catalog);
    let category_key = "category".into_datum();
    // The trigger_properties filters as jsonb, made once per statement that needs them.
    let mut filters: Option<Vec<(i64, pg_sys::Datum)>> = None;

    let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
    // A read pointer of our own, rewound: other triggers may read the same transition table.
    let pointer = pg_sys::tuplestore_alloc_read_pointer(store, pg_sys::EXEC_FLAG_REWIND as i32);
    pg_sys::tuplestore_select_read_pointer(store, pointer);
    pg_sys::tuplestore_rescan(store);
    let mut read = Vec::new();
    while pg_sys::tuplestore_gettupleslot(store, true, false, slot) {
        let attr = |n: i32| {
            let mut isnull = false;
            let d = pg_sys::slot_getattr(slot, n, &mut isnull);
            (d, isnull)
        };
        let (d, null) = attr(c_type);
        let Some(event_type) = <&str>::from_datum(d, null) else {
            continue;
        };
        if !set.relevant_types.iter().any(|t| t == event_type) {
            continue;
        }
        let event_type = event_type.to_owned();
        let (d, null) = attr(c_item);
        let item_id = String::from_datum(d, null);
        let item_category = match (&catalog, &item_id) {
            (Some(catalog), Some(item)) if set.category_types.contains(&event_type) => {
                catalog.category_of(item).map(str::to_owned)
            }
            _ => None,
        };
        let (props, props_null) = attr(c_props);
        let property_category = if !props_null && set.category_types.contains(&event_type) {
            pgrx::fcinfo::direct_function_call::<String>(
                pg_sys::jsonb_object_field_text,
                &[Some(props), category_key],
            )
        } else {
            None
        };
        let mut property_matches = Vec::new();
        if !props_null && set.property_types.contains(&event_type) {
            let filters = filters.get_or_insert_with(|| {
                set.property_ids
                    .iter()
                    .zip(&set.property_filters)
                    .map(|(&id, filter)| {
                        let text = std::ffi::CString::new(filter.as_str())
                            .expect("a jsonb text has no NUL byte");
                        let jsonb = pgrx::fcinfo::direct_function_call_as_datum(
                            pg_sys::jsonb_in,
                            &[Some(pg_sys::Datum::from(text.as_ptr()))],
                        )
                        .expect("jsonb_in returns a value");
                        (id, jsonb)
                    })
                    .collect()
            });
            for &(id, filter) in filters.iter() {
                if pgrx::fcinfo::direct_function_call::<bool>(
                    pg_sys::jsonb_contains,
                    &[Some(props), Some(filter)],
                ) == Some(true)
                {
                    property_matches.push(id);
                }
            }
        }
        let (d, null) = attr(c_id);
        let event_id = i64::from_datum(d, null).unwrap_or(0);
        let (d, null) = attr(c_user);
        let user_id = String::from_datum(d, null).unwrap_or_default();
        let (d, null) = attr(c_at);
        let occurred_at = TimestampWithTimeZone::from_datum(d, null).map_or(0, i64::from);
        read.push(ReadEvent {
            event: TriggerEvent {
                event_id,
                event_type,
                user_id,
                occurred_at,
                item_category,
                property_category,
                property_matches,
            },
            item_id,
        });
    }
    pg_sys::tuplestore_select_read_pointer(store, 0);
    pg_sys::ExecDropSingleTupleTableSlot(slot);
    read
}

fn fire(
    client: &mut pgrx::spi::SpiClient<'_>,
    st: &Statements,
    set: &Campaigns,
    mut read: Vec<ReadEvent>,
) {
    read.sort_by_key(|r| (r.event.occurred_at, r.event.event_id));
    let (events, item_ids): (Vec<TriggerEvent>, Vec<Option<String>>) =
        read.into_iter().map(|r| (r.event, r.item_id)).unzip();

    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let now_ts = timestamp(now);
    // How old an event may be to fire each campaign, for the campaigns the statement's event
    // types can fire (the others cannot: no event is new enough for them).
    let types: HashSet<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let oldest: Vec<i64> = set
        .list
        .iter()
        .map(|c| {
            if types.contains(c.rule.trigger_event_type.as_str()) {
                i64::from(now_ts - c.max_event_age)
            } else {
                i64::MAX
            }
        })
        .collect();
    let mut firings = campaigns::fire(&set.rules, &events, &oldest);
    let cancels = campaigns::cancel_requests(&set.rules, &events);
    if firings.is_empty() && cancels.is_empty() {
        return;
    }
    // The pending messages of the pairs the statement fires or may cancel, probed through
    // the one-pending index (no query, see pg::outbox_probe): one that is there absorbs the
    // firing before any cap read or insert, and the cancellations are decided from them.
    let outbox = OutboxProbe::open();
    let pending = read_pending(&outbox, set, &events, &firings, &cancels);
    // The statement's cancellations of those pending messages (each by the earliest request
    // at or after its trigger; `core::campaigns::cancellations`).
    let cancelled_pending = if cancels.is_empty() || pending.is_empty() {
        Vec::new()
    } else {
        campaigns::cancellations(&set.rules, &events, &cancels, &pending)
    };
    if !pending.is_empty() && !firings.is_empty() {
        // Absorbed: the (campaign, user) already has a pending message, unless an event of
        // this statement that comes first cancels it (a purchase, then a view, in one batch):
        // then the firing starts a new message, as it would in a statement of its own.
        let cancelled_at: HashMap<i64, usize> = cancelled_pending
            .iter()
            .map(|c| (c.message_id, c.event))
            .collect();
        let waiting: HashMap<(i64, &str), Option<usize>> = pending
            .iter()
            .map(|m| {
                (
                    (m.campaign_id, m.user_id.as_str()),
                    cancelled_at.get(&m.message_id).copied(),
                )
            })
            .collect();
        firings.retain(|f| {
            let pair = (
                set.list[f.campaign].rule.campaign_id,
                events[f.event].user_id.as_str(),
            );
            match waiting.get(&pair) {
                None => true,
                Some(None) => false,
                Some(Some(cancelled_by)) => *cancelled_by <= f.event,
            }
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
        let users: HashSet<&str> = firings
            .iter()
            .map(|f| events[f.event].user_id.as_str())
            .collect();
        if longest_window > 0.0 && !users.is_empty() {
            let since = now - (longest_window * 1e6) as i64;
            let recent = outbox.recent_deliveries(users, since);
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

    outbox.close();

    // The firings that an event of the same statement cancels (a view, then a purchase): as
    // candidates with ids -1, -2, ... for firings 0, 1, ...; a firing's pair was probed
    // whenever the statement may cancel it, so none of these is absorbed by the insert.
    let mut cancelled_firings: Vec<Option<usize>> = vec![None; firings.len()];
    if !cancels.is_empty() && !firings.is_empty() {
        let written: Vec<campaigns::PendingMessage> = firings
            .iter()
            .enumerate()
            .map(|(i, f)| campaigns::PendingMessage {
                message_id: -1 - i as i64,
                campaign_id: set.list[f.campaign].rule.campaign_id,
                user_id: events[f.event].user_id.clone(),
                triggered_at: events[f.event].occurred_at,
                trigger_event_id: events[f.event].event_id,
            })
            .collect();
        for c in campaigns::cancellations(&set.rules, &events, &cancels, &written) {
            cancelled_firings[(-1 - c.message_id) as usize] = Some(c.event);
        }
    }

    // Cancel the messages pending from earlier statements first: a firing that comes after
    // its pair's pending message was cancelled (see the absorption above) takes its place in
    // the one-pending index.
    if !cancelled_pending.is_empty() {
        let ids: Vec<i64> = cancelled_pending.iter().map(|c| c.message_id).collect();
        let reasons: Vec<String> = cancelled_pending
            .iter()
            .map(|c| cancel_reason(&events[c.event]))
            .collect();
        let args: [DatumWithOid; 2] = [ids.into(), reasons.into()];
        let outbox = crate::pg::personalize_relid(c"outbox");
        let outbox_sized = crate::pg::relation_pages(outbox) >= GENERIC_PLAN_MIN_PAGES;
        crate::pg::with_settings(PLANNER_SETTINGS, || {
            planned(outbox_sized, || {
                client
                    .update(&st.cancel_messages, None, &args)
                    .unwrap_or_else(|e| {
                        spi_failed("cannot cancel messages in personalize.outbox", e)
                    })
            })
        });
    }

    if !firings.is_empty() {
        write_messages(
            client,
            st,
            set,
            &events,
            &item_ids,
            &firings,
            &cancelled_firings,
            now,
        );
    }
}

/// The pending messages of the (campaign, user) pairs of `firings` and of the cancel
/// requests.
fn read_pending(
    outbox: &OutboxProbe,
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
    outbox.pending_messages(pairs)
}

/// The columns of the messages one INSERT writes: its first nine parameters, in this order,
/// for INSERT_MESSAGES and INSERT_CANCELLED alike.
#[derive(Default)]
struct MessageColumns {
    campaign_ids: Vec<i64>,
    names: Vec<String>,
    channels: Vec<String>,
    users: Vec<String>,
    items: Vec<Option<String>>,
    event_ids: Vec<i64>,
    occurred: Vec<TimestampWithTimeZone>,
    visible: Vec<TimestampWithTimeZone>,
    keys: Vec<Uuid>,
}

impl MessageColumns {
    fn push(&mut self, m: &NewMessage<'_>) {
        self.campaign_ids.push(m.campaign_id);
        self.names.push(m.campaign.to_owned());
        self.channels.push(m.channel.to_owned());
        self.users.push(m.user_id.to_owned());
        self.items.push(m.item_id.map(str::to_owned));
        self.event_ids.push(m.trigger_event_id);
        self.occurred.push(timestamp(m.triggered_at));
        self.visible.push(timestamp(m.visible_at));
        self.keys.push(m.idempotency_key);
    }

    /// The statement's arguments: these columns, then `more` (the statement's own).
    fn into_args(
        self,
        more: impl IntoIterator<Item = DatumWithOid<'static>>,
    ) -> Vec<DatumWithOid<'static>> {
        let mut args: Vec<DatumWithOid<'static>> = vec![
            self.campaign_ids.into(),
            self.names.into(),
            self.channels.into(),
            self.users.into(),
            self.items.into(),
            self.event_ids.into(),
            self.occurred.into(),
            self.visible.into(),
            self.keys.into(),
        ];
        args.extend(more);
        args
    }
}

/// Writes the firings' messages, pending ones and those `cancelled_by` an event of the
/// statement (index into `events`); then wakes idle workers when something is due now.
///
/// Written by `pg::outbox_writer` (no statement) when the outbox is as the extension made it;
/// otherwise with INSERT_MESSAGES and INSERT_CANCELLED, so that whatever a DBA added to the
/// table (a trigger, a constraint, a rule) is honoured. The rows are the same either way.
#[allow(clippy::too_many_arguments)]
fn write_messages(
    client: &mut pgrx::spi::SpiClient<'_>,
    st: &Statements,
    set: &Campaigns,
    events: &[TriggerEvent],
    item_ids: &[Option<String>],
    firings: &[campaigns::Firing],
    cancelled_by: &[Option<usize>],
    now: i64,
) {
    let mut writer = OutboxWriter::open();
    let mut pending = MessageColumns::default();
    let mut cancelled = MessageColumns::default();
    let mut reasons = Vec::new();
    let mut due_channels: Vec<&str> = Vec::new();
    for (f, cancelled_by) in firings.iter().zip(cancelled_by) {
        let c = &set.list[f.campaign];
        let e = &events[f.event];
        // Due after the delay, not before now; quiet hours move a pending message's
        // delivery to their end.
        let mut visible = i64::from(timestamp(e.occurred_at) + c.delay).max(now);
        if cancelled_by.is_none() {
            if let Some(quiet) = &c.quiet {
                visible = after_quiet_hours(visible, quiet);
            }
            if visible <= now {
                due_channels.push(&c.channel);
            }
        }
        let message = NewMessage {
            campaign_id: c.rule.campaign_id,
            campaign: &c.name,
            channel: &c.channel,
            user_id: &e.user_id,
            item_id: item_ids[f.event].as_deref(),
            trigger_event_id: e.event_id,
            triggered_at: e.occurred_at,
            visible_at: visible,
            idempotency_key: new_idempotency_key(),
        };
        match (writer.as_mut(), cancelled_by) {
            (Some(w), Some(by)) => w.insert_cancelled(&message, &cancel_reason(&events[*by])),
            (Some(w), None) => {
                w.insert_pending(&message);
            }
            (None, Some(by)) => {
                cancelled.push(&message);
                reasons.push(cancel_reason(&events[*by]));
            }
            (None, None) => pending.push(&message),
        }
    }
    if let Some(w) = writer {
        w.close();
    }
    for (columns, statement, more) in [
        (pending, &st.insert_messages, None),
        (cancelled, &st.insert_cancelled, Some(reasons)),
    ] {
        if columns.users.is_empty() {
            continue;
        }
        let args = columns.into_args(more.map(DatumWithOid::from));
        crate::pg::with_settings(PLANNER_SETTINGS, || {
            client
                .update(statement, None, &args)
                .unwrap_or_else(|e| spi_failed("cannot write personalize.outbox", e))
        });
    }
    // Wakes idle workers (LISTEN personalize_outbox) when something is due now. A message
    // absorbed by one already pending may wake them for nothing, which costs a worker one
    // empty claim; reading back what was written would cost every statement more. Called
    // directly (no statement): NOTIFY queues it for commit, one per distinct channel.
    due_channels.sort_unstable();
    due_channels.dedup();
    for channel in due_channels {
        notify_outbox(channel);
    }
}

/// A message's last_error when an event of the statement cancels it (whether it is written
/// cancelled or was pending from an earlier statement).
fn cancel_reason(event: &TriggerEvent) -> String {
    format!(
        "cancelled by event {} ({})",
        event.event_id, event.event_type
    )
}

/// `pg_notify('personalize_outbox', channel)`, without a query.
fn notify_outbox(channel: &str) {
    let args = ["personalize_outbox".into_datum(), channel.into_datum()];
    // SAFETY: pg_notify is a plain fmgr function of two non-null text arguments; it raises
    // (through pgrx's guard) only for an overlong payload or a parallel worker.
    unsafe {
        pgrx::fcinfo::direct_function_call_as_datum(pg_sys::pg_notify, &args);
    }
}

/// Makes every backend re-read the campaigns and frequency caps (at commit; this one at once).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _invalidate_campaign_cache() {
    campaign_cache::invalidate();
}
