//! The transactional outbox's writer: a statement-level AFTER INSERT trigger on
//! `personalize.events` that writes each campaign's messages in the events' own transaction,
//! so a message exists exactly when its event does.
//!
//! Per statement it costs, when no campaign cares about the events' types, nothing but a
//! look at the cached campaigns (`pg::campaign_cache`). Otherwise: one read of the statement's
//! relevant events (the transition table `new_events`, with each event's item category), the
//! rules in Rust (`core::campaigns`), one set query per segment and one for the frequency caps
//! when a firing needs them, one INSERT of all messages and one UPDATE for the cancels. The
//! statements are prepared once per backend.

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

/// The statement's events of the types the campaigns read. An item's category is looked up
/// (index probe) only for trigger types of category campaigns, and the properties are tested
/// (Postgres's own `@>`) only against campaigns with trigger_properties of the event's type.
const READ_EVENTS: &str = "\
SELECT e.event_id, e.event_type, e.user_id, e.occurred_at,
       CASE WHEN e.event_type = ANY ($2)
            THEN (SELECT i.category FROM personalize.items i WHERE i.item_id = e.item_id) END,
       CASE WHEN e.event_type = ANY ($2) THEN e.properties ->> 'category' END,
       CASE WHEN e.event_type = ANY ($3)
            THEN ARRAY(SELECT p.id FROM unnest($4::int8[], $5::text[]) AS p(id, filter)
                        WHERE e.properties @> CAST(p.filter AS jsonb)) END,
       e.item_id
  FROM new_events e
 WHERE e.event_type = ANY ($1)";

/// One message per (campaign, user); a user who already has one pending for the campaign
/// keeps it (the unique partial index absorbs the new trigger). Quiet hours move the
/// delivery time to their end.
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
ON CONFLICT (campaign_id, user_id) WHERE state = 'pending' DO NOTHING";

/// Cancel-on: an event of a cancelling type (a purchase) after a pending message's trigger
/// cancels it (the earliest such event is named). Pending messages are found through the
/// unique (campaign_id, user_id) index, one probe per request.
const CANCEL_MESSAGES: &str = "\
WITH hits AS MATERIALIZED (
    SELECT DISTINCT ON (p.message_id) p.message_id, r.event_id, r.event_type
      FROM unnest($1::int8[], $2::text[], $3::timestamptz[], $4::int8[], $5::text[])
           AS r(campaign_id, user_id, occurred_at, event_id, event_type)
     -- LATERAL: one probe of the unique index per request, whatever the statistics say.
     CROSS JOIN LATERAL (
           SELECT q.message_id FROM personalize.outbox q
            WHERE q.campaign_id = r.campaign_id AND q.user_id = r.user_id AND q.state = 'pending'
              AND q.triggered_at <= r.occurred_at AND q.trigger_event_id <> r.event_id) AS p
     ORDER BY p.message_id, r.occurred_at, r.event_id)
UPDATE personalize.outbox o
   SET state = 'cancelled', finished_at = now(),
       last_error = 'cancelled by event ' || h.event_id || ' (' || h.event_type || ')'
  FROM hits h
 WHERE o.message_id = h.message_id AND o.state = 'pending'";

const NOTIFY: &str = "SELECT pg_notify('personalize_outbox', c) FROM unnest($1::text[]) AS c";

struct Statements {
    read_events: OwnedPreparedStatement,
    insert_messages: OwnedPreparedStatement,
    cancel_messages: OwnedPreparedStatement,
    notify: OwnedPreparedStatement,
    recent_deliveries: OwnedPreparedStatement,
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
        .prepare_mut(CANCEL_MESSAGES, &[int8s, texts, times, int8s, texts])
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
    Statements {
        recent_deliveries,
        read_events,
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
            fire(client, st, &set);
        });
    });
    Ok(None)
}

fn fire(client: &mut pgrx::spi::SpiClient<'_>, st: &Statements, set: &Campaigns) {
    let args: [DatumWithOid; 5] = [
        set.relevant_types.clone().into(),
        set.category_types.clone().into(),
        set.property_types.clone().into(),
        set.property_ids.clone().into(),
        set.property_filters.clone().into(),
    ];
    let mut read: Vec<ReadEvent> = client
        .select(&st.read_events, None, &args)
        .unwrap_or_else(|e| spi_failed("cannot read the inserted events", e))
        .map(|row| {
            let occurred_at = row
                .get::<TimestampWithTimeZone>(4)
                .ok()
                .flatten()
                .map_or(0, i64::from);
            ReadEvent {
                event: TriggerEvent {
                    event_id: row.get::<i64>(1).ok().flatten().unwrap_or(0),
                    event_type: row.get::<String>(2).ok().flatten().unwrap_or_default(),
                    user_id: row.get::<String>(3).ok().flatten().unwrap_or_default(),
                    occurred_at,
                    item_category: row.get::<String>(5).ok().flatten(),
                    property_category: row.get::<String>(6).ok().flatten(),
                    property_matches: row.get::<Vec<i64>>(7).ok().flatten().unwrap_or_default(),
                },
                item_id: row.get::<String>(8).ok().flatten(),
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
        let members: BTreeMap<&str, HashSet<String>> = by_segment
            .into_iter()
            .map(|(segment, users)| {
                let users: Vec<String> = users.into_iter().map(str::to_owned).collect();
                let members = crate::api::segments::members_among(segment, users);
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
            let recent = recent_deliveries(client, &st.recent_deliveries, users, longest_window);
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
        write_messages(client, st, set, &events, &item_ids, &firings, now_ts);
    }

    let cancels = campaigns::cancel_requests(&set.rules, &events);
    if !cancels.is_empty() {
        let n = cancels.len();
        let (mut ids, mut users, mut times, mut event_ids, mut types) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for f in &cancels {
            let e = &events[f.event];
            ids.push(set.rules[f.campaign].campaign_id);
            users.push(e.user_id.clone());
            times.push(timestamp(e.occurred_at));
            event_ids.push(e.event_id);
            types.push(e.event_type.clone());
        }
        let args: [DatumWithOid; 5] = [
            ids.into(),
            users.into(),
            times.into(),
            event_ids.into(),
            types.into(),
        ];
        client
            .update(&st.cancel_messages, None, &args)
            .unwrap_or_else(|e| spi_failed("cannot cancel messages in personalize.outbox", e));
    }
}

fn write_messages(
    client: &mut pgrx::spi::SpiClient<'_>,
    st: &Statements,
    set: &Campaigns,
    events: &[TriggerEvent],
    item_ids: &[Option<String>],
    firings: &[campaigns::Firing],
    now: TimestampWithTimeZone,
) {
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
    client
        .update(&st.insert_messages, None, &args)
        .unwrap_or_else(|e| spi_failed("cannot write personalize.outbox", e));
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
}

/// Makes every backend re-read the campaigns and frequency caps (at commit; this one at once).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _invalidate_campaign_cache() {
    campaign_cache::invalidate();
}
