//! Where the events trigger's decisions go: the outbox rows of new messages (pending, or
//! cancelled at birth) and the cancellation of messages pending from earlier statements.
//!
//! New messages are written by `pg::outbox_writer` (the executor's insert calls, no statement)
//! when the outbox is as the extension made it and personalize.outbox_direct_write is on;
//! otherwise by prepared INSERT statements, so that whatever a DBA added to the table (a
//! trigger, a constraint, a rule) is honoured. The rows are the same either way. The
//! statements are prepared once per backend and run with generic plans under
//! `pg::probe_plans`.

use std::cell::OnceCell;

use pgrx::datum::{DatumWithOid, TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::PgOid;

use crate::error::spi_failed;
pub use crate::pg::outbox_writer::NewMessage;
use crate::pg::outbox_writer::OutboxWriter;
use crate::pg::probe_plans::with_probe_plans;

/// The INSERT statements serve when the outbox is not as the extension made it, or
/// personalize.outbox_direct_write is off (`pg::outbox_writer` writes the same rows without a
/// statement otherwise). Both take
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

/// Runs `f` with the backend's prepared statements (prepared on first use).
fn with_statements<R>(
    client: &mut SpiClient<'_>,
    f: impl FnOnce(&mut SpiClient<'_>, &Statements) -> R,
) -> R {
    STATEMENTS.with(|cell| {
        if cell.get().is_none() {
            let _ = cell.set(prepare(client));
        }
        f(client, cell.get().expect("prepared above"))
    })
}

/// Cancels messages pending from earlier statements, each by id with its reason. A message a
/// worker claimed in the meantime is no longer pending and stays as it is.
pub fn cancel_pending(client: &mut SpiClient<'_>, ids: Vec<i64>, reasons: Vec<String>) {
    if ids.is_empty() {
        return;
    }
    let args: [DatumWithOid; 2] = [ids.into(), reasons.into()];
    with_statements(client, |client, st| {
        with_probe_plans(Some(c"outbox"), || {
            client
                .update(&st.cancel_messages, None, &args)
                .unwrap_or_else(|e| spi_failed("cannot cancel messages in personalize.outbox", e));
        })
    });
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
        self.occurred.push(crate::pg::timestamptz(m.triggered_at));
        self.visible.push(crate::pg::timestamptz(m.visible_at));
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

/// Says at DEBUG1 which path wrote the statement's messages (the regress suite checks it);
/// costs one level check, not a formatted message, when nobody listens at DEBUG1.
fn report_path(how: &str) {
    // SAFETY: reads the backend's log and client message levels.
    if unsafe { pg_sys::message_level_is_interesting(pg_sys::DEBUG1 as i32) } {
        pgrx::debug1!("pg_personalize: outbox messages written {how}");
    }
}

/// How new messages reach the outbox (see the module comment): the direct writer, or the
/// messages buffered for the INSERT statements.
pub struct OutboxSink {
    direct: Option<OutboxWriter>,
    pending: MessageColumns,
    cancelled: MessageColumns,
    reasons: Vec<String>,
}

impl OutboxSink {
    /// The direct writer when the outbox allows it and the setting asks for it, else the
    /// INSERT statements.
    pub fn open() -> Self {
        OutboxSink {
            direct: crate::gucs::OUTBOX_DIRECT_WRITE
                .get()
                .then(OutboxWriter::open)
                .flatten(),
            pending: MessageColumns::default(),
            cancelled: MessageColumns::default(),
            reasons: Vec::new(),
        }
    }

    /// Writes one message: pending (absorbed, with ON CONFLICT DO NOTHING semantics, when its
    /// (campaign, user) already has a pending one), or cancelled with `cancel_reason`.
    pub fn write(&mut self, m: &NewMessage<'_>, cancel_reason: Option<String>) {
        match (&mut self.direct, cancel_reason) {
            (Some(w), Some(reason)) => w.insert_cancelled(m, &reason),
            (Some(w), None) => {
                w.insert_pending(m);
            }
            (None, Some(reason)) => {
                self.cancelled.push(m);
                self.reasons.push(reason);
            }
            (None, None) => self.pending.push(m),
        }
    }

    /// Finishes the writes: closes the writer, or runs the INSERT statements.
    pub fn finish(self, client: &mut SpiClient<'_>) {
        let OutboxSink {
            direct,
            pending,
            cancelled,
            reasons,
        } = self;
        if let Some(w) = direct {
            drop(w);
            report_path("directly");
            return;
        }
        report_path("by INSERT statements");
        with_statements(client, |client, st| {
            for (columns, statement, more) in [
                (pending, &st.insert_messages, None),
                (cancelled, &st.insert_cancelled, Some(reasons)),
            ] {
                if columns.users.is_empty() {
                    continue;
                }
                let args = columns.into_args(more.map(DatumWithOid::from));
                with_probe_plans(None, || {
                    client
                        .update(statement, None, &args)
                        .unwrap_or_else(|e| spi_failed("cannot write personalize.outbox", e));
                });
            }
        });
    }
}
