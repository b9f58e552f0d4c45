//! Bulk ingestion: validate a chunk of events in Rust, then store the valid ones with one
//! INSERT … SELECT FROM unnest(…) and quarantine the rest with another. Two SPI calls per chunk,
//! whatever its size; every input event ends up accepted, duplicate or rejected.

use std::rc::Rc;

use chrono::{DateTime, Utc};
use pgrx::datum::{AnyArray, DatumWithOid};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::{json, Value};

use crate::core::tracking::{check_event_text, Limits, TrackingPlan, Verdict, Violation};
use crate::error::{spi_failed, PersonalizeError};

/// `ON CONFLICT DO NOTHING` without a target: the arbiter is the client_event_id index,
/// whatever its columns (per user and event type since 0.7.0; a library installed before
/// `ALTER EXTENSION … UPDATE` still tracks into a 0.6.0 schema, de-duplicating as that did).
///
/// The functions calling into this module pin `search_path = pg_catalog, pg_temp`, so the
/// unqualified built-ins below cannot be shadowed; our own tables are qualified.
const INSERT_EVENTS: &str = "\
INSERT INTO personalize.events
       (event_type, user_id, item_id, session_id, occurred_at, client_event_id, properties)
SELECT x.t, x.u, x.i, x.s, COALESCE(x.o, now()), x.c,
       CASE WHEN x.hp THEN jsonb_extract_path(CAST(x.r AS jsonb), 'properties')
            ELSE CAST('{}' AS jsonb) END
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
              $7::text[], $8::boolean[]) AS x(t, u, i, s, o, c, r, hp)
ON CONFLICT DO NOTHING
RETURNING event_id";

/// The same, when the caller's own jsonb[] is at hand (track_batch): properties come straight
/// from the original jsonb values (no second parse); the arrays are full length, aligned with
/// the input, and `ok` marks the valid events.
const INSERT_EVENTS_FROM_JSONB: &str = "\
INSERT INTO personalize.events
       (event_type, user_id, item_id, session_id, occurred_at, client_event_id, properties)
SELECT x.t, x.u, x.i, x.s, COALESCE(x.o, now()), x.c,
       CASE WHEN x.hp THEN jsonb_extract_path(x.e, 'properties') ELSE CAST('{}' AS jsonb) END
  FROM unnest($1::jsonb[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
              $7::text[], $8::boolean[], $9::boolean[]) AS x(e, t, u, i, s, o, c, hp, ok)
 WHERE x.ok
ON CONFLICT DO NOTHING";

thread_local! {
    /// How many of the extension's event inserts are running in this backend (nested: a
    /// trigger may track). The campaign trigger fires only inside one: events that reach the
    /// table any other way (pg_restore, COPY of history, a superuser's INSERT, replication)
    /// are history and write no messages.
    static STORING_TRACKED_EVENTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether the statement now inserting into personalize.events is one of ours.
pub fn storing_tracked_events() -> bool {
    STORING_TRACKED_EVENTS.with(|c| c.get() > 0)
}

/// Marks our event insert for its lifetime (also when an error unwinds through it).
struct StoringTrackedEvents;

impl StoringTrackedEvents {
    fn begin() -> Self {
        STORING_TRACKED_EVENTS.with(|c| c.set(c.get() + 1));
        StoringTrackedEvents
    }
}

impl Drop for StoringTrackedEvents {
    fn drop(&mut self) {
        STORING_TRACKED_EVENTS.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// For the chunk's valid events with a client_event_id, the stored event of the same key (user,
/// event type, client_event_id) and whether it has the same content (item and properties;
/// not the time, which a retry may stamp anew). Run only when the insert stored fewer events
/// than were valid: the ones it skipped are repeats of an earlier event, or conflicts with it.
const SAME_KEY_EVENTS: &str = "\
SELECT k.p, e.event_id,
       e.item_id IS NOT DISTINCT FROM k.i
       AND e.properties = CASE WHEN k.hp THEN jsonb_extract_path(CAST(k.r AS jsonb), 'properties')
                               ELSE CAST('{}' AS jsonb) END
  FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
              $7::boolean[]) AS k(p, t, u, c, i, r, hp)
  JOIN personalize.events e
    ON e.client_event_id = k.c AND e.user_id = k.u AND e.event_type = k.t";

/// Unix microseconds → timestamptz (PostgreSQL counts from 2000-01-01).
fn timestamptz(unix_us: i64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(unix_us - 946_684_800_000_000).ok()
}

const INSERT_REJECTED: &str = "\
INSERT INTO personalize.rejected_events
       (source, batch_position, event_type, user_id, client_event_id, reasons, violations, payload)
SELECT $1, x.p, x.t, x.u, x.c, string_to_array(x.rs, ' '), CAST(x.v AS jsonb), CAST(x.r AS jsonb)
  FROM unnest($2::integer[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
              $8::text[]) AS x(p, t, u, c, rs, v, r)";

/// Counts of one ingestion call, summed over its chunks.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub accepted: i64,
    pub duplicates: i64,
    pub rejected: i64,
    pub rejected_positions: Vec<i32>,
    /// The id of the first stored event of the last chunk (used by single-event `track`; not
    /// known for the jsonb[] batch form, which skips RETURNING).
    pub first_event_id: Option<i64>,
}

/// One ingestion call: the plan and limits are read once, then chunks are fed in.
pub struct Ingest {
    source: &'static str,
    strict: bool,
    plan: Rc<TrackingPlan>,
    limits: Limits,
    now: DateTime<Utc>,
    pub tally: Tally,
    /// When replaying the quarantine: the chunk's events that fail again, as (position,
    /// violation codes separated by spaces, violations JSON), instead of new quarantine rows.
    kept_rejections: Option<Vec<(i32, String, String)>>,
}

/// Salvaged text for the quarantine row: no NUL bytes, bounded length.
fn salvage(s: &Option<String>) -> Option<String> {
    s.as_ref()
        .map(|s| s.replace('\0', "").chars().take(256).collect())
}

/// What the quarantine keeps of an event over `max_event_bytes`: its size, its SHA-256 and its
/// first kilobyte (cut at a character boundary), so a client's oversize events are still
/// evidence without letting them fill the disk (a 10 MB event was once kept whole).
fn oversize_evidence(text: &str) -> Value {
    use sha2::{Digest, Sha256};
    const PREFIX_BYTES: usize = 1024;
    let mut end = PREFIX_BYTES.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    json!({
        "oversize": true,
        "bytes": text.len(),
        "sha256": hex,
        "prefix": text[..end].replace('\0', ""),
    })
}

fn violations_json(v: &[Violation]) -> String {
    Value::Array(
        v.iter()
            .map(|v| json!({"code": v.code, "path": v.path, "message": v.message}))
            .collect(),
    )
    .to_string()
}

impl Ingest {
    pub fn new(source: &'static str, strict: bool) -> Self {
        Ingest {
            source,
            strict,
            plan: crate::pg::plan_cache::current(),
            limits: crate::gucs::limits(),
            now: crate::core::tracking::now_utc(),
            tally: Tally::default(),
            kept_rejections: None,
        }
    }

    /// Validates and stores one chunk of `(position, event JSON text)`; `None` is a NULL event.
    /// `original`, when given, is the caller's jsonb[] the texts were printed from, in order.
    pub fn chunk<S: AsRef<str>>(
        &mut self,
        client: &mut SpiClient<'_>,
        events: &[(i64, Option<S>)],
        original: Option<&AnyArray>,
    ) {
        let verdicts: Vec<Verdict> = events
            .iter()
            .map(|(_, text)| {
                let text = text.as_ref().map(|t| t.as_ref());
                check_event_text(text, &self.plan, &self.limits, self.now)
            })
            .collect();
        self.store(client, events, verdicts, original);
    }

    /// Stores one chunk whose events were already checked (`verdicts`, in order): the valid
    /// ones as events, the rest in the quarantine (or, when replaying, handed back in
    /// `kept_rejections`).
    fn store<S: AsRef<str>>(
        &mut self,
        client: &mut SpiClient<'_>,
        events: &[(i64, Option<S>)],
        verdicts: Vec<Verdict>,
        original: Option<&AnyArray>,
    ) {
        if self.strict {
            if let Some(((pos, _), verdict)) = events
                .iter()
                .zip(&verdicts)
                .find(|(_, v)| matches!(v, Verdict::Rejected(_)))
            {
                let list: Vec<String> =
                    verdict.violations().iter().map(|v| v.to_string()).collect();
                PersonalizeError::PlanViolation {
                    message: format!(
                        "event {pos} violates the tracking plan: {}",
                        list.join("; ")
                    ),
                    hint: "Fix the event, or call without strict => true to keep invalid events \
                           in personalize.rejected_events. Nothing from this call was stored."
                        .into(),
                }
                .raise();
            }
        }

        let n = events.len();
        let (mut t, mut u, mut i, mut s, mut o, mut c, mut r, mut hp) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut rp, mut rt, mut ru, mut rc, mut rs, mut rv, mut rr) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        // With the original jsonb[], the column arrays stay aligned with the input (NULLs and
        // ok = false for rejected events); otherwise they hold the valid events only.
        let aligned = original.is_some();
        let mut ok: Vec<bool> = Vec::with_capacity(if aligned { n } else { 0 });
        let mut valid = 0i64;
        for ((pos, text), verdict) in events.iter().zip(verdicts) {
            match verdict {
                Verdict::Valid(e) => {
                    valid += 1;
                    t.push(Some(e.event_type));
                    u.push(Some(e.user_id));
                    i.push(e.item_id);
                    s.push(e.session_id);
                    o.push(e.occurred_at_us.and_then(timestamptz));
                    c.push(e.client_event_id);
                    if aligned {
                        ok.push(true);
                    } else {
                        r.push(text.as_ref().map(|t| t.as_ref().to_owned()));
                    }
                    hp.push(e.has_properties);
                }
                Verdict::Rejected(rej) => {
                    if aligned {
                        t.push(None);
                        u.push(None);
                        i.push(None);
                        s.push(None);
                        o.push(None);
                        c.push(None);
                        hp.push(false);
                        ok.push(false);
                    }
                    let unparsable = rej
                        .violations
                        .iter()
                        .any(|v| matches!(v.code, "malformed_json" | "invalid_string"));
                    // A payload that is not storable JSON is kept as a JSON string of its text;
                    // an oversize one as evidence, not whole (see `oversize_evidence`).
                    let payload = match text.as_ref().map(|t| t.as_ref()) {
                        None => None,
                        Some(t) if t.len() > self.limits.max_event_bytes => {
                            Some(oversize_evidence(t).to_string())
                        }
                        Some(t) if unparsable => {
                            Some(Value::String(t.replace('\0', "")).to_string())
                        }
                        Some(t) => Some(t.to_owned()),
                    };
                    rp.push(i32::try_from(*pos).unwrap_or(i32::MAX));
                    rt.push(salvage(&rej.event_type));
                    ru.push(salvage(&rej.user_id));
                    rc.push(salvage(&rej.client_event_id));
                    let codes: Vec<&str> = rej.violations.iter().map(|v| v.code).collect();
                    rs.push(Some(codes.join(" ")));
                    rv.push(Some(violations_json(&rej.violations)));
                    rr.push(payload);
                }
            }
        }

        if valid > 0 {
            let storing = StoringTrackedEvents::begin();
            let stored = match original {
                Some(jsonb_array) => {
                    // SAFETY: the datum is the caller's jsonb[] argument, alive for this call.
                    let events_arg =
                        unsafe { DatumWithOid::new(*jsonb_array, pg_sys::JSONBARRAYOID) };
                    let args: [DatumWithOid; 9] = [
                        events_arg,
                        t.into(),
                        u.into(),
                        i.into(),
                        s.into(),
                        o.into(),
                        c.into(),
                        hp.into(),
                        ok.into(),
                    ];
                    client.update(INSERT_EVENTS_FROM_JSONB, None, &args)
                }
                None => {
                    let args: [DatumWithOid; 8] = [
                        t.into(),
                        u.into(),
                        i.into(),
                        s.into(),
                        o.into(),
                        c.into(),
                        r.into(),
                        hp.into(),
                    ];
                    client.update(INSERT_EVENTS, None, &args)
                }
            }
            .unwrap_or_else(|e| spi_failed("storing events failed", e));
            drop(storing);
            // Rows inserted (SPI_processed; the batch form returns no ids).
            let inserted = stored.len() as i64;
            self.tally.first_event_id = if inserted > 0 && original.is_none() {
                stored.first().get::<i64>(1).ok().flatten()
            } else {
                None
            };
            self.tally.accepted += inserted;
            let mut conflicts = 0;
            if inserted < valid {
                let quarantine = Quarantine {
                    positions: &mut rp,
                    types: &mut rt,
                    users: &mut ru,
                    client_ids: &mut rc,
                    reasons: &mut rs,
                    violations: &mut rv,
                    payloads: &mut rr,
                };
                conflicts = self.repeats(client, events, quarantine);
            }
            self.tally.duplicates += valid - inserted - conflicts;
        } else {
            self.tally.first_event_id = None;
        }

        if !rp.is_empty() {
            self.tally.rejected += rp.len() as i64;
            self.tally.rejected_positions.extend_from_slice(&rp);
            if let Some(kept) = self.kept_rejections.as_mut() {
                for ((p, codes), v) in rp.iter().zip(rs).zip(rv) {
                    kept.push((*p, codes.unwrap_or_default(), v.unwrap_or_default()));
                }
                return;
            }
            let args: [DatumWithOid; 8] = [
                self.source.into(),
                rp.into(),
                rt.into(),
                ru.into(),
                rc.into(),
                rs.into(),
                rv.into(),
                rr.into(),
            ];
            client
                .update(INSERT_REJECTED, None, &args)
                .unwrap_or_else(|e| spi_failed("quarantining rejected events failed", e));
        }
    }
}

/// The quarantine's column arrays of a chunk.
struct Quarantine<'a> {
    positions: &'a mut Vec<i32>,
    types: &'a mut Vec<Option<String>>,
    users: &'a mut Vec<Option<String>>,
    client_ids: &'a mut Vec<Option<String>>,
    reasons: &'a mut Vec<Option<String>>,
    violations: &'a mut Vec<Option<String>>,
    payloads: &'a mut Vec<Option<String>>,
}

impl Ingest {
    /// The chunk's events that the insert skipped for their key (user, event type,
    /// client_event_id): a repeat of the stored event is a duplicate (single-event `track`
    /// answers with the stored id); a different item or properties under the same key is a
    /// conflict, quarantined as `client_event_id_conflict` (strict: raised, SQLSTATE 23505),
    /// never silently dropped. Returns the number of conflicts. Only runs when the insert
    /// stored fewer events than were valid, so it may validate the events again.
    fn repeats<S: AsRef<str>>(
        &mut self,
        client: &mut SpiClient<'_>,
        events: &[(i64, Option<S>)],
        q: Quarantine<'_>,
    ) -> i64 {
        let (mut p, mut t, mut u, mut c, mut i, mut r, mut hp) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for (k, (_, text)) in events.iter().enumerate() {
            let text = text.as_ref().map(|t| t.as_ref());
            if let Verdict::Valid(e) = check_event_text(text, &self.plan, &self.limits, self.now) {
                if let Some(cid) = e.client_event_id {
                    p.push(k as i64);
                    t.push(e.event_type);
                    u.push(e.user_id);
                    c.push(cid);
                    i.push(e.item_id);
                    r.push(text.map(str::to_owned));
                    hp.push(e.has_properties);
                }
            }
        }
        if p.is_empty() {
            return 0;
        }
        let args: [DatumWithOid; 7] = [
            p.into(),
            t.into(),
            u.into(),
            c.into(),
            i.into(),
            r.into(),
            hp.into(),
        ];
        let rows: Vec<(usize, i64, bool)> = client
            .select(SAME_KEY_EVENTS, None, &args)
            .unwrap_or_else(|e| spi_failed("reading events of the same client_event_id failed", e))
            .filter_map(|row| {
                Some((
                    row.get::<i64>(1).ok()?? as usize,
                    row.get::<i64>(2).ok()??,
                    row.get::<bool>(3).ok()??,
                ))
            })
            .collect();
        let mut conflicts = 0;
        for (k, stored_id, same) in rows {
            let (pos, text) = &events[k];
            let text = text.as_ref().map(|t| t.as_ref());
            if same {
                if events.len() == 1 {
                    self.tally.first_event_id = Some(stored_id);
                }
                continue;
            }
            let Verdict::Valid(e) = check_event_text(text, &self.plan, &self.limits, self.now)
            else {
                continue;
            };
            let cid = e.client_event_id.clone().unwrap_or_default();
            let message = format!(
                "client_event_id \"{}\" was already used by event {stored_id} of this user and \
                 event type, with another item or properties",
                crate::error::shown(&cid)
            );
            if self.strict {
                PersonalizeError::DuplicateKey {
                    message: format!("event {pos}: {message}"),
                    hint: "A retry must send the same event; give a different event its own \
                           client_event_id. Nothing from this call was stored."
                        .into(),
                }
                .raise();
            }
            conflicts += 1;
            let v = Violation::new("client_event_id_conflict", "$.client_event_id", message);
            q.positions.push(i32::try_from(*pos).unwrap_or(i32::MAX));
            q.types.push(Some(e.event_type));
            q.users.push(salvage(&Some(e.user_id)));
            q.client_ids.push(salvage(&e.client_event_id));
            q.reasons.push(Some(v.code.to_owned()));
            q.violations
                .push(Some(violations_json(std::slice::from_ref(&v))));
            q.payloads.push(text.map(str::to_owned));
        }
        conflicts
    }
}

/// Runs `query` (whose rows are turned into event JSON text by `to_event`) through a cursor in
/// chunks, so an import of any size needs only one chunk of memory. Checks for query cancel
/// between chunks.
pub fn ingest_query(
    query: &str,
    source: &'static str,
    strict: bool,
    chunk_rows: i64,
    to_event: impl Fn(&[Option<String>]) -> Option<String>,
) -> Tally {
    let mut ingest = Ingest::new(source, strict);
    Spi::connect_mut(|client| {
        let mut cursor = client
            .try_open_cursor(query, &[])
            .unwrap_or_else(|e| spi_failed("reading the source failed", e));
        let mut position: i64 = 0;
        loop {
            pgrx::check_for_interrupts!();
            let table = cursor
                .fetch(chunk_rows)
                .unwrap_or_else(|e| spi_failed("reading the source failed", e));
            if table.is_empty() {
                break;
            }
            let ncols = table.columns().unwrap_or(0);
            let mut chunk = Vec::with_capacity(table.len());
            for row in table {
                position += 1;
                let cols: Vec<Option<String>> = (1..=ncols)
                    .map(|k| row.get::<String>(k).ok().flatten())
                    .collect();
                chunk.push((position, to_event(&cols)));
            }
            ingest.chunk(client, &chunk, None);
        }
    });
    ingest.tally
}

/// What a replay of the quarantine did.
#[derive(Debug, Default)]
pub struct ReplayTally {
    /// Quarantined events checked again.
    pub replayed: i64,
    /// Of them, stored as events now.
    pub stored: i64,
    /// Of them, already stored (a retry under the same client_event_id): resolved, not stored.
    pub duplicates: i64,
    /// Of them, still failing: left in the quarantine with their fresh reasons.
    pub still_rejected: i64,
}

/// The open quarantine rows a replay takes, in id order, a chunk at a time, locked so that a
/// concurrent replay skips them once they are resolved. Payloads that can never pass are left
/// out: NULL events, text that was not JSON (kept as a JSON string) and oversize evidence.
const SELECT_OPEN_REJECTIONS: &str = "\
SELECT r.rejected_id, extract(epoch FROM r.received_at)::float8, CAST(r.payload AS text)
  FROM personalize.rejected_events r
 WHERE r.resolved_at IS NULL AND r.rejected_id > $5
   AND ($1::text IS NULL OR $1 = ANY (r.reasons))
   AND ($2::text IS NULL OR r.event_type = $2)
   AND ($3::timestamptz IS NULL OR r.received_at >= $3)
   AND ($4::timestamptz IS NULL OR r.received_at < $4)
   AND jsonb_typeof(r.payload) = 'object'
   AND NOT ('oversize' = ANY (r.reasons))
   AND r.source NOT LIKE 'sync\\_catalogue:%'
 ORDER BY r.rejected_id
 LIMIT 1000
   FOR UPDATE";

const RESOLVE_REJECTIONS: &str = "\
UPDATE personalize.rejected_events SET resolved_at = now(), replayed_at = now()
 WHERE rejected_id = ANY ($1::bigint[])";

const REFRESH_REJECTIONS: &str = "\
UPDATE personalize.rejected_events r
   SET reasons = string_to_array(x.rs, ' '), violations = CAST(x.v AS jsonb), replayed_at = now()
  FROM unnest($1::bigint[], $2::text[], $3::text[]) AS x(id, rs, v)
 WHERE r.rejected_id = x.id";

/// Checks the open quarantine rows that match the filters against the current tracking plan,
/// as of when each arrived (its `received_at` is the clock for the future-skew check and the
/// time of an event that gave none). Those that pass are stored once, through the same path
/// as `track_batch` (campaign triggers included) and marked resolved; a client_event_id that
/// is already stored makes a duplicate, also resolved. The rest keep their row with fresh
/// reasons and violations.
pub fn replay_rejected(
    reason: Option<&str>,
    event_type: Option<&str>,
    since: Option<TimestampWithTimeZone>,
    until: Option<TimestampWithTimeZone>,
) -> ReplayTally {
    let mut out = ReplayTally::default();
    let mut last_id = 0i64;
    Spi::connect_mut(|client| loop {
        pgrx::check_for_interrupts!();
        let args: [DatumWithOid; 5] = [
            reason.into(),
            event_type.into(),
            since.into(),
            until.into(),
            last_id.into(),
        ];
        let rows = client
            .update(SELECT_OPEN_REJECTIONS, None, &args)
            .unwrap_or_else(|e| spi_failed("cannot read personalize.rejected_events", e));
        let mut ids = Vec::with_capacity(rows.len());
        let mut events: Vec<(i64, Option<String>)> = Vec::with_capacity(rows.len());
        let mut arrived = Vec::with_capacity(rows.len());
        for row in rows {
            let id = row.get::<i64>(1).ok().flatten().unwrap_or_default();
            let received = row.get::<f64>(2).ok().flatten().unwrap_or_default();
            let payload = row.get::<String>(3).ok().flatten();
            events.push((ids.len() as i64, payload));
            ids.push(id);
            arrived.push(received);
        }
        let Some(&max_id) = ids.last() else {
            return;
        };
        last_id = max_id;
        let mut ingest = Ingest::new("replay", false);
        ingest.kept_rejections = Some(Vec::new());
        let verdicts: Vec<Verdict> = events
            .iter()
            .zip(&arrived)
            .map(|((_, text), &received)| {
                let received_us = (received * 1e6).round() as i64;
                let now = DateTime::<Utc>::from_timestamp_micros(received_us).unwrap_or(ingest.now);
                let mut verdict =
                    check_event_text(text.as_deref(), &ingest.plan, &ingest.limits, now);
                if let Verdict::Valid(e) = &mut verdict {
                    e.occurred_at_us.get_or_insert(received_us);
                }
                verdict
            })
            .collect();
        ingest.store(client, &events, verdicts, None);
        let failed = ingest.kept_rejections.take().unwrap_or_default();
        let failed_positions: std::collections::HashSet<i32> = failed.iter().map(|f| f.0).collect();
        let resolved: Vec<i64> = ids
            .iter()
            .enumerate()
            .filter(|(p, _)| !failed_positions.contains(&(*p as i32)))
            .map(|(_, &id)| id)
            .collect();
        if !resolved.is_empty() {
            client
                .update(RESOLVE_REJECTIONS, None, &[resolved.into()])
                .unwrap_or_else(|e| spi_failed("cannot resolve replayed rejections", e));
        }
        if !failed.is_empty() {
            let (fid, (codes, violations)): (Vec<i64>, (Vec<String>, Vec<String>)) = failed
                .into_iter()
                .map(|(p, c, v)| (ids[p as usize], (c, v)))
                .unzip();
            let args: [DatumWithOid; 3] = [fid.into(), codes.into(), violations.into()];
            client
                .update(REFRESH_REJECTIONS, None, &args)
                .unwrap_or_else(|e| spi_failed("cannot update replayed rejections", e));
        }
        out.replayed += ids.len() as i64;
        out.stored += ingest.tally.accepted;
        out.duplicates += ingest.tally.duplicates;
        out.still_rejected += ingest.tally.rejected;
    });
    out
}
