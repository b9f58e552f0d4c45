//! The outbox's claim: `claim_messages()` locks due messages (`FOR UPDATE SKIP LOCKED`),
//! re-checks cancel-on events, checks the campaign's segment, re-checks attempts, quiet hours
//! and frequency caps, renders each payload with fresh recommendations and hands the batch out
//! under one lease token. `ack()` and `fail()` are SQL (sql/finalize.sql); the messages are
//! written by the events trigger (`api::campaign_trigger`).

use std::collections::{BTreeMap, HashMap, HashSet};

use pgrx::datum::{DatumWithOid, Interval, Uuid};
use pgrx::prelude::*;
use pgrx::spi::SpiHeapTupleData;
use serde_json::{json, Map, Value};

use crate::core::campaigns::OutboxLookup;
use crate::core::outbox::{self, Candidate, Cap, RenderContext, Verdict};
use crate::error::{required, spi_failed, PersonalizeError};
use crate::pg::outbox_probe::OutboxLookups;

/// Why a campaign template (JSON text) is refused, or NULL when it is valid.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn _template_problem(template: Option<&str>) -> Option<String> {
    let Some(text) = template else {
        return Some("template must not be NULL".into());
    };
    outbox::check_template(text).err()
}

/// t, or the end of the quiet hours (local times of day in time zone tz) t falls in; t when
/// either end is NULL or they are equal (no quiet hours). claim_messages() calls it per locked
/// message. No SET clause: it reads no table, and the call stays a plain C call.
#[pg_extern(stable, parallel_safe)]
fn _after_quiet_hours(
    t: Option<TimestampWithTimeZone>,
    quiet_start: Option<pgrx::datum::Time>,
    quiet_end: Option<pgrx::datum::Time>,
    tz: Option<&str>,
) -> Option<TimestampWithTimeZone> {
    let t = t?;
    let (Some(start), Some(end), Some(tz)) = (quiet_start, quiet_end, tz) else {
        return Some(t);
    };
    let quiet = crate::pg::campaign_cache::QuietHours {
        start: pg_sys::TimeADT::from(start),
        end: pg_sys::TimeADT::from(end),
        timezone: tz.to_owned(),
    };
    Some(crate::pg::timestamptz(
        crate::pg::quiet_hours::after_quiet_hours(i64::from(t), &quiet),
    ))
}

const CHANNELS: [&str; 5] = ["email", "push", "sms", "whatsapp", "webhook"];
/// Most messages one claim may take.
const MAX_BATCH: i32 = 10_000;
/// Longest lease.
const MAX_VISIBILITY: crate::core::intervals::Span = crate::core::intervals::Span::hours(12);

/// Locks the due messages of a channel, oldest first, with what the checks need. The columns
/// come from the locked row version itself (not a second read), so a row another worker just
/// changed is judged as it is now. `{consent}`: the user's consent rows on the channel
/// (`pg::consent_check::records_sql`, one index probe per message), judged in Rust.
static LOCK_DUE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    LOCK_DUE_TEMPLATE.replace(
        "{consent}",
        &crate::pg::consent_check::records_sql("o.user_id", "$1", "o.campaign"),
    )
});
const LOCK_DUE_TEMPLATE: &str = "\
WITH due AS (
    -- Only the outbox here, so the plan is the queue index in visible_at order under the LIMIT
    -- whatever the joins below would estimate (a misestimated join once made this a sequential
    -- scan of the outbox joined with the whole catalogue for every row: 89 s per claim).
    SELECT o.message_id, o.user_id, o.campaign_id, o.attempts, o.last_error, o.idempotency_key,
           o.campaign, o.item_id, o.context, o.triggered_at, o.trigger_event_id, o.visible_at
      FROM personalize.outbox o
     WHERE o.channel OPERATOR(pg_catalog.=) $1
       AND o.state IN ('pending', 'claimed')
       AND o.visible_at OPERATOR(pg_catalog.<=) pg_catalog.now()
       -- A paused campaign's messages wait (a deleted campaign's do not: campaign_id NULL, or
       -- an id with no campaign left, which the outer join below reads as NULL).
       -- A CASE, not a join or `<> ALL`: the planner estimates those from campaign_id's
       -- statistics, and when one campaign owns the whole queue it expects no row to pass and
       -- sorts the whole outbox. A CASE gets a neutral estimate and leaves the index order.
       AND CASE WHEN o.campaign_id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT p.campaign_id FROM personalize.campaigns p
                                                                      WHERE NOT p.enabled))
                THEN false ELSE true END
     ORDER BY o.visible_at
     LIMIT $2
       FOR UPDATE OF o SKIP LOCKED
)
SELECT o.message_id, o.user_id, c.campaign_id, o.attempts,
       COALESCE(c.max_attempts, 5) AS max_attempts,
       o.last_error, o.idempotency_key, o.campaign, o.item_id, it.title AS item_title,
       -- The events trigger leaves context empty; it is read from the trigger event here,
       -- once per delivery instead of once per message written.
       CAST(CASE WHEN o.context OPERATOR(pg_catalog.<>) '{}' THEN o.context
                 ELSE (SELECT pg_catalog.jsonb_build_object(
                                  'event_type', e.event_type,
                                  'category', COALESCE(it.category, e.properties OPERATOR(pg_catalog.->>) 'category'),
                                  'occurred_at', e.occurred_at,
                                  'properties', e.properties)
                         FROM personalize.events e
                        WHERE e.event_id OPERATOR(pg_catalog.=) o.trigger_event_id)
            END AS pg_catalog.text) AS context,
       COALESCE(c.recommendations, 0) AS recommendations, c.model,
       CAST(c.template AS pg_catalog.text) AS template,
       c.cap_messages, pg_catalog.date_part('epoch', c.cap_window) AS cap_window_seconds,
       (SELECT CAST(e.event_id AS pg_catalog.text) OPERATOR(pg_catalog.||) ' (' OPERATOR(pg_catalog.||)
               e.event_type OPERATOR(pg_catalog.||) ')'
          FROM personalize.events e
         WHERE e.user_id OPERATOR(pg_catalog.=) o.user_id
           AND e.occurred_at OPERATOR(pg_catalog.>=) o.triggered_at
           AND e.event_id OPERATOR(pg_catalog.<>) o.trigger_event_id
           AND e.event_type OPERATOR(pg_catalog.=) ANY (c.cancel_on)
         ORDER BY e.occurred_at LIMIT 1) AS cancelled_by,
       pg_catalog.date_part('epoch', personalize._after_quiet_hours(pg_catalog.now(), c.quiet_start,
                                                                    c.quiet_end, c.quiet_timezone))
           AS quiet_until,
       pg_catalog.date_part('epoch', pg_catalog.now()) AS now_seconds,
       c.segment,
       {consent} AS consents
  FROM due o
  LEFT JOIN personalize.campaigns c ON c.campaign_id OPERATOR(pg_catalog.=) o.campaign_id
  LEFT JOIN personalize.items it ON it.item_id OPERATOR(pg_catalog.=) o.item_id
 ORDER BY o.visible_at";

// Multi-argument unnest is FROM-clause syntax and cannot be schema-qualified; the function
// pins search_path to pg_catalog, so it is the catalogue's.
const APPLY: &str = "\
UPDATE personalize.outbox o
   -- 'failed': the claim failed for this message alone (outbox::failed). It counts as an
   -- attempt; it is retried at v.until, or dead without one.
   SET state = CASE WHEN v.state OPERATOR(pg_catalog.<>) 'failed' THEN v.state
                    WHEN v.until IS NULL THEN 'dead' ELSE 'pending' END,
       lease_token = CASE WHEN v.state OPERATOR(pg_catalog.=) 'claimed' THEN $2 END,
       attempts = o.attempts OPERATOR(pg_catalog.+) CASE WHEN v.state IN ('claimed', 'failed') THEN 1 ELSE 0 END,
       redeliveries = o.redeliveries OPERATOR(pg_catalog.+)
           CASE WHEN v.state OPERATOR(pg_catalog.=) 'claimed' AND o.state OPERATOR(pg_catalog.=) 'claimed' THEN 1 ELSE 0 END,
       visible_at = CASE v.state WHEN 'claimed' THEN pg_catalog.now() OPERATOR(pg_catalog.+) $3
                                 WHEN 'pending' THEN pg_catalog.to_timestamp(v.until)
                                 WHEN 'failed' THEN COALESCE(pg_catalog.to_timestamp(v.until), o.visible_at)
                                 ELSE o.visible_at END,
       claimed_at = CASE WHEN v.state OPERATOR(pg_catalog.=) 'claimed' THEN pg_catalog.now() ELSE o.claimed_at END,
       payload = COALESCE(CAST(v.payload AS pg_catalog.jsonb), o.payload),
       last_error = COALESCE(v.reason, o.last_error),
       finished_at = CASE WHEN v.state IN ('cancelled', 'dead')
                            OR (v.state OPERATOR(pg_catalog.=) 'failed' AND v.until IS NULL)
                          THEN pg_catalog.now() END
  FROM unnest($1::pg_catalog.int8[], $4::pg_catalog.text[], $5::pg_catalog.float8[],
                         $6::pg_catalog.text[], $7::pg_catalog.text[]) AS v(message_id, state, until, payload, reason)
 WHERE o.message_id OPERATOR(pg_catalog.=) v.message_id
RETURNING o.message_id, o.visible_at";

/// One locked message and what rendering it needs.
struct Locked {
    candidate: Candidate,
    idempotency_key: Uuid,
    campaign: String,
    item_id: Option<String>,
    item_title: Option<String>,
    context: Value,
    recommendations: i32,
    model: Option<String>,
    template: Option<String>,
    /// The campaign's segment, if it has one.
    segment: Option<String>,
}

/// A column of a locked outbox row, by name.
fn column<T: IntoDatum + FromDatum>(row: &SpiHeapTupleData<'_>, name: &str) -> Option<T> {
    crate::pg::spi_row::column(row, name, "cannot read a locked outbox row")
}

impl Locked {
    /// `requires_opt_in`: the channel's policy.
    fn from_row(row: &SpiHeapTupleData<'_>, channel: &str, requires_opt_in: bool) -> Self {
        let text = |name: &str| column::<String>(row, name);
        let campaign = text("campaign").unwrap_or_default();
        let no_consent = crate::core::consent::refusal(
            channel,
            &campaign,
            requires_opt_in,
            &crate::pg::consent_check::parse(text("consents").as_deref()),
        );
        let cap = match (
            column::<i32>(row, "cap_messages"),
            column::<f64>(row, "cap_window_seconds"),
        ) {
            (Some(m), Some(w)) => Some(Cap {
                max_messages: i64::from(m),
                window_seconds: w,
            }),
            _ => None,
        };
        Locked {
            candidate: Candidate {
                message_id: column::<i64>(row, "message_id").unwrap_or(0),
                user_id: text("user_id").unwrap_or_default(),
                channel: channel.to_owned(),
                campaign_id: column::<i64>(row, "campaign_id"),
                campaign_cap: cap,
                attempts: column::<i32>(row, "attempts").unwrap_or(0),
                max_attempts: column::<i32>(row, "max_attempts").unwrap_or(5),
                cancelled_by: text("cancelled_by"),
                // Filled in by claim_messages, from one query per segment over the batch.
                outside_segment: None,
                quiet_until: column::<f64>(row, "quiet_until"),
                last_error: text("last_error"),
                // Filled in by claim_messages when the segment's query fails.
                check_failed: None,
                no_consent,
            },
            idempotency_key: column::<Uuid>(row, "idempotency_key")
                .unwrap_or_else(|| Uuid::from_bytes([0; 16])),
            campaign,
            item_id: text("item_id"),
            item_title: text("item_title"),
            context: text("context")
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null),
            recommendations: column::<i32>(row, "recommendations").unwrap_or(0),
            model: text("model"),
            template: text("template"),
            segment: text("segment"),
        }
    }
}

fn check_visibility(v: Interval) {
    crate::pg::intervals::check_duration(
        "visibility",
        v,
        MAX_VISIBILITY,
        false,
        "visibility is how long a worker may hold the messages before they can be claimed \
         again; make it longer than a batch takes to deliver, e.g. '30 seconds'.",
    );
}

/// Claims up to `batch` due messages of a channel for `visibility`: returns them with one
/// lease token for `ack()` / `fail()`.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn claim_messages(
    channel: Option<&str>,
    batch: default!(Option<i32>, 10),
    visibility: default!(Option<Interval>, "'30 seconds'"),
) -> TableIterator<
    'static,
    (
        name!(message_id, i64),
        name!(lease_token, Uuid),
        name!(idempotency_key, Uuid),
        name!(campaign, String),
        name!(channel, String),
        name!(user_id, String),
        name!(payload, pgrx::JsonB),
        name!(attempt, i32),
        name!(lease_expires_at, TimestampWithTimeZone),
    ),
> {
    crate::pg::require_writable(c"claim_messages()");
    let channel = required(channel, "channel");
    if !CHANNELS.contains(&channel) {
        PersonalizeError::invalid(
            format!("unknown channel \"{}\"", crate::error::shown(channel)),
            format!("Channels: {}.", CHANNELS.join(", ")),
        )
        .raise();
    }
    let batch = required(batch, "batch");
    if !(1..=MAX_BATCH).contains(&batch) {
        PersonalizeError::invalid(
            format!("batch must be between 1 and {MAX_BATCH}, not {batch}"),
            "batch is how many messages to claim at once, e.g. 100.",
        )
        .raise();
    }
    let visibility = required(visibility, "visibility");
    check_visibility(visibility);
    let lease = crate::pg::random::strong_uuid();
    let requires_opt_in = crate::pg::campaign_cache::current().requires_opt_in(channel);

    Spi::connect_mut(|client| {
        let args: [DatumWithOid; 2] = [channel.into(), batch.into()];
        let table = client
            .update(LOCK_DUE.as_str(), None, &args)
            .unwrap_or_else(|e| spi_failed("cannot read personalize.outbox", e));
        let mut now = 0.0;
        let mut locked = Vec::with_capacity(table.len());
        for row in table {
            now = column::<f64>(&row, "now_seconds").unwrap_or(0.0);
            locked.push(Locked::from_row(&row, channel, requires_opt_in));
        }
        if locked.is_empty() {
            return TableIterator::new(Vec::new());
        }

        // Frequency caps: the global ones (cached with the campaigns) and what the batch's
        // users were sent lately.
        let campaigns = crate::pg::campaign_cache::current();
        let global_caps = &campaigns.global_caps;
        let longest_window = outbox::longest_cap_window(
            global_caps,
            locked
                .iter()
                .filter_map(|l| l.candidate.campaign_cap.as_ref()),
        );
        let mut recent = Vec::new();
        if longest_window > 0.0 {
            let users: HashSet<&str> = locked
                .iter()
                .map(|l| l.candidate.user_id.as_str())
                .collect();
            // SAFETY: a plain backend call (now()).
            let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
            recent = OutboxLookups::new(now).recent_deliveries(users, longest_window);
        }

        // Segments: the user must be in the campaign's segment when the message goes out
        // (checked here, not when the event fired it, so that a "lapsed buyers" message does
        // not reach a user who bought in the meantime). One set query per segment.
        let mut by_segment: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
        for l in &locked {
            if let Some(s) = &l.segment {
                by_segment
                    .entry(s.as_str())
                    .or_default()
                    .insert(l.candidate.user_id.as_str());
            }
        }
        // A segment whose query fails (a definition stored before its check existed, a
        // dropped function) fails its own messages only: each query runs in a subtransaction.
        let members: BTreeMap<String, Result<HashSet<String>, String>> = by_segment
            .into_iter()
            .map(|(segment, users)| {
                let users: Vec<String> = users.into_iter().map(str::to_owned).collect();
                let found = crate::pg::subtransaction::attempt(|| {
                    segment_members_among(client, segment, users)
                });
                let found = found.map(|f| f.into_iter().collect());
                (segment.to_owned(), found)
            })
            .collect();
        for l in &mut locked {
            if let Some(s) = &l.segment {
                match &members[s] {
                    Ok(m) if !m.contains(&l.candidate.user_id) => {
                        l.candidate.outside_segment = Some(s.clone());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        l.candidate.check_failed =
                            Some(format!("checking segment \"{s}\" failed: {e}"));
                    }
                }
            }
        }

        // Addresses: on a channel whose policy names the shop's recipients, a user without an
        // address gets nothing (cancelled, not retried into dead). One query for the batch, in
        // a subtransaction: if it fails (the definer may not read the view), the batch's
        // messages fail alone and are retried.
        let users: Vec<String> = locked
            .iter()
            .filter(|l| l.candidate.no_consent.is_none())
            .map(|l| l.candidate.user_id.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !users.is_empty() {
            let with_address = crate::pg::subtransaction::attempt(|| {
                let args: [DatumWithOid; 2] = [channel.into(), users.into()];
                client
                    .select(
                        "SELECT personalize._users_with_address($1, $2) AS users",
                        None,
                        &args,
                    )
                    .unwrap_or_else(|e| spi_failed("cannot read the channel's recipients", e))
                    .first()
                    .get_by_name::<Vec<String>, _>("users")
                    .unwrap_or_else(|e| spi_failed("cannot read the channel's recipients", e))
                    // NULL: nobody in the batch has an address.
                    .unwrap_or_default()
                    .into_iter()
                    .collect::<HashSet<String>>()
            });
            for l in &mut locked {
                if l.candidate.no_consent.is_some() {
                    continue;
                }
                match &with_address {
                    Ok(found) if !found.contains(&l.candidate.user_id) => {
                        l.candidate.no_consent = Some(format!(
                            "no {channel} address for the user in its recipients"
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        l.candidate.check_failed =
                            Some(format!("reading the {channel} recipients failed: {e}"));
                    }
                }
            }
        }

        let candidates: Vec<Candidate> = locked.iter().map(|l| l.candidate.clone()).collect();
        let mut verdicts = outbox::decide(now, &candidates, &mut recent, global_caps);

        // Payloads of the claimed ones, with recommendations computed now: all in one
        // subtransaction, and only if that fails, one per message, so that a message whose
        // recommendations raise an error fails alone (`outbox::failed`).
        let wanted: Vec<bool> = locked
            .iter()
            .zip(&verdicts)
            .map(|(l, v)| *v == Verdict::Claim && l.recommendations > 0)
            .collect();
        let recommend = |l: &Locked| {
            crate::pg::recommender::top_items_for_user(
                &l.candidate.user_id,
                l.recommendations as usize,
                l.model.as_deref().unwrap_or("default"),
            )
        };
        let recommend_all = || -> Vec<Vec<(String, f32)>> {
            locked
                .iter()
                .zip(&wanted)
                .map(|(l, &w)| if w { recommend(l) } else { Vec::new() })
                .collect()
        };
        let recommended: Vec<Vec<(String, f32)>> = if !wanted.contains(&true) {
            vec![Vec::new(); locked.len()]
        } else {
            match crate::pg::subtransaction::attempt(recommend_all) {
                Ok(all) => all,
                Err(_) => {
                    let mut each = Vec::with_capacity(locked.len());
                    for ((l, &w), v) in locked.iter().zip(&wanted).zip(verdicts.iter_mut()) {
                        if !w {
                            each.push(Vec::new());
                            continue;
                        }
                        match crate::pg::subtransaction::attempt(|| recommend(l)) {
                            Ok(r) => each.push(r),
                            Err(e) => {
                                let error = format!("recommending items failed: {e}");
                                *v = outbox::failed(now, &l.candidate, &error);
                                each.push(Vec::new());
                            }
                        }
                    }
                    each
                }
            }
        };
        let item_info = item_details(client_ids(&recommended), |sql, args| {
            client
                .select(sql, None, args)
                .unwrap_or_else(|e| spi_failed("cannot read personalize.items", e))
                .filter_map(|row| {
                    let id = column::<String>(&row, "item_id")?;
                    let info = json!({
                        "title": column::<String>(&row, "title"),
                        "category": column::<String>(&row, "category"),
                        "price": column::<f64>(&row, "price"),
                    });
                    Some((id, info))
                })
                .collect()
        });

        let mut ids = Vec::with_capacity(locked.len());
        let mut states = Vec::with_capacity(locked.len());
        let mut until: Vec<Option<f64>> = Vec::with_capacity(locked.len());
        let mut payloads: Vec<Option<String>> = Vec::with_capacity(locked.len());
        let mut reasons: Vec<Option<String>> = Vec::with_capacity(locked.len());
        let mut rendered: HashMap<i64, Value> = HashMap::new();
        for ((l, v), recs) in locked.iter().zip(&verdicts).zip(&recommended) {
            ids.push(l.candidate.message_id);
            let (state, at, reason) = match v {
                Verdict::Claim => ("claimed", None, None),
                Verdict::Cancel(r) => ("cancelled", None, Some(r.clone())),
                Verdict::Dead(r) => ("dead", None, Some(r.clone())),
                Verdict::Defer(t) => ("pending", Some(*t), None),
                Verdict::Failed { retry_at, reason } => ("failed", *retry_at, Some(reason.clone())),
            };
            states.push(state.to_owned());
            until.push(at);
            reasons.push(reason);
            if *v == Verdict::Claim {
                let payload = render(l, recs, &item_info);
                payloads.push(Some(payload.to_string()));
                rendered.insert(l.candidate.message_id, payload);
            } else {
                payloads.push(None);
            }
        }
        let args: [DatumWithOid; 7] = [
            ids.into(),
            lease.into(),
            visibility.into(),
            states.into(),
            until.into(),
            payloads.into(),
            reasons.into(),
        ];
        let expires: HashMap<i64, TimestampWithTimeZone> = client
            .update(APPLY, None, &args)
            .unwrap_or_else(|e| spi_failed("cannot update personalize.outbox", e))
            .filter_map(|row| {
                Some((
                    column::<i64>(&row, "message_id")?,
                    column::<TimestampWithTimeZone>(&row, "visible_at")?,
                ))
            })
            .collect();

        let out: Vec<_> = locked
            .into_iter()
            .filter_map(|l| {
                let id = l.candidate.message_id;
                let payload = rendered.remove(&id)?;
                Some((
                    id,
                    lease,
                    l.idempotency_key,
                    l.campaign,
                    channel.to_owned(),
                    l.candidate.user_id,
                    pgrx::JsonB(payload),
                    l.candidate.attempts + 1,
                    *expires.get(&id)?,
                ))
            })
            .collect();
        TableIterator::new(out)
    })
}

/// The members of a named segment among `users` (one prepared set query, see
/// `pg::segment_cache`), planned as the campaign trigger plans its reads: index probes only,
/// generic once the events table is big enough for its statistics to be sound.
fn segment_members_among(
    client: &pgrx::spi::SpiClient<'_>,
    segment: &str,
    users: Vec<String>,
) -> Vec<String> {
    crate::pg::probe_plans::with_probe_plans(Some(c"events"), || {
        crate::pg::segment_cache::members_among(client, segment, users)
    })
}

/// Every recommended item id of a batch, once.
fn client_ids(recommended: &[Vec<(String, f32)>]) -> Vec<String> {
    let set: HashSet<&String> = recommended.iter().flatten().map(|(id, _)| id).collect();
    set.into_iter().cloned().collect()
}

/// Title, category and price of the recommended items (one query for the batch).
fn item_details(
    ids: Vec<String>,
    query: impl FnOnce(&str, &[DatumWithOid]) -> HashMap<String, Value>,
) -> HashMap<String, Value> {
    if ids.is_empty() {
        return HashMap::new();
    }
    let args: [DatumWithOid; 1] = [ids.into()];
    query(
        "SELECT i.item_id, i.title, i.category, CAST(i.price AS pg_catalog.float8) AS price \
         FROM personalize.items i WHERE i.item_id OPERATOR(pg_catalog.=) ANY ($1)",
        &args,
    )
}

fn render(l: &Locked, recs: &[(String, f32)], items: &HashMap<String, Value>) -> Value {
    let mut ctx = RenderContext::default();
    let c = &l.candidate;
    let context = l.context.as_object().cloned().unwrap_or_default();
    let mut put = |k: &str, v: Value| {
        ctx.values.insert(k.to_owned(), v);
    };
    put("user_id", json!(c.user_id));
    put("item_id", json!(l.item_id));
    put("item_title", json!(l.item_title));
    put("campaign", json!(l.campaign));
    put("channel", json!(c.channel));
    put("message_id", json!(c.message_id));
    put("idempotency_key", json!(l.idempotency_key.to_string()));
    for key in ["event_type", "category", "occurred_at"] {
        put(key, context.get(key).cloned().unwrap_or(Value::Null));
    }
    ctx.properties = context
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_else(Map::new);
    ctx.recommendations = recs
        .iter()
        .map(|(id, score)| {
            let mut entry = json!({"item_id": id, "score": score});
            if let (Some(Value::Object(info)), Value::Object(e)) = (items.get(id), &mut entry) {
                e.extend(info.clone());
            }
            entry
        })
        .collect();
    let template = l
        .template
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_else(|| json!({}));
    outbox::render(&template, &ctx, l.recommendations > 0)
}
