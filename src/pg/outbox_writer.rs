//! Writes the campaign trigger's messages into personalize.outbox without a query: the heap
//! insert and index inserts an `INSERT … ON CONFLICT (campaign_id, user_id) WHERE state =
//! 'pending' DO NOTHING` would make, done here as the executor does them (the speculative
//! insertion protocol of nodeModifyTable.c: check the arbiter index, insert with a
//! speculative token, insert the index entries, confirm or kill the tuple on a concurrent
//! conflict and try again).
//!
//! Why: for a single tracked event the INSERT statement was two thirds of the trigger's cost,
//! mostly executor start-up (plan initialisation, the outbox's CHECK constraint parsed and
//! planned again, the unnest of ten arrays), not the row.
//!
//! The executor code it mirrors (checked against PostgreSQL 15, 16 and 18, whose differing
//! signatures `pg::compat` hides): `ExecInsert` in nodeModifyTable.c for the ON CONFLICT DO
//! NOTHING path (`ExecCheckIndexConstraints`, `SpeculativeInsertionLockAcquire`,
//! `table_tuple_insert_speculative`, `ExecInsertIndexTuples`, `table_tuple_complete_speculative`)
//! and `ExecCheckTIDVisible` for the serialization check; `ExecInitModifyTable`'s setup
//! (`InitResultRelInfo`, `ExecOpenIndices`) and `ExecEndModifyTable`'s teardown.
//! personalize.outbox_direct_write = off skips it (`pg::outbox_sink`), and the regression
//! suite compares the rows both paths write for the same events.
//!
//! Only for the outbox as the extension creates it: `open()` returns None (and the caller runs
//! its INSERT statements instead) when the table has a trigger, row-level security, a column,
//! CHECK or NOT NULL constraint the extension did not create, or a column of another type, so
//! anything a DBA adds to the table is honoured by the executor.

use std::ffi::CStr;

use pgrx::datum::Uuid;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::pg::index_probe::index_on;
use crate::pg::MemoryContextSwitch;

unsafe extern "C-unwind" {
    /// commands/sequence.h: the next value of a sequence, without a privilege check (what an
    /// identity column's default calls). Called through `next_message_id`.
    fn nextval_internal(relid: pg_sys::Oid, check_permissions: bool) -> i64;
}

/// The next value of the message id's identity sequence.
fn next_message_id(sequence: pg_sys::Oid) -> i64 {
    // SAFETY: a main-thread backend call; an ERROR (sequence exhausted) becomes a Rust panic
    // at the boundary, which pgrx turns back into the ERROR.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| nextval_internal(sequence, false)) }
}

/// The outbox's columns as the extension creates them: name, type, and whether a message
/// written here may leave it NULL (such a column must not have gained a NOT NULL).
const COLUMNS: [(&CStr, pg_sys::Oid, bool); 20] = [
    (c"message_id", pg_sys::INT8OID, false),
    (c"idempotency_key", pg_sys::UUIDOID, false),
    (c"campaign_id", pg_sys::INT8OID, false),
    (c"campaign", pg_sys::TEXTOID, false),
    (c"channel", pg_sys::TEXTOID, false),
    (c"user_id", pg_sys::TEXTOID, false),
    (c"item_id", pg_sys::TEXTOID, true),
    (c"trigger_event_id", pg_sys::INT8OID, false),
    (c"triggered_at", pg_sys::TIMESTAMPTZOID, false),
    (c"context", pg_sys::JSONBOID, false),
    (c"payload", pg_sys::JSONBOID, true),
    (c"state", pg_sys::TEXTOID, false),
    (c"visible_at", pg_sys::TIMESTAMPTZOID, false),
    (c"lease_token", pg_sys::UUIDOID, true),
    (c"attempts", pg_sys::INT4OID, false),
    (c"redeliveries", pg_sys::INT4OID, false),
    (c"last_error", pg_sys::TEXTOID, true),
    (c"created_at", pg_sys::TIMESTAMPTZOID, false),
    (c"claimed_at", pg_sys::TIMESTAMPTZOID, true),
    (c"finished_at", pg_sys::TIMESTAMPTZOID, true),
];

/// Index into COLUMNS (and into `OutboxWriter::attnum`).
#[derive(Clone, Copy)]
enum Col {
    MessageId,
    IdempotencyKey,
    CampaignId,
    Campaign,
    Channel,
    UserId,
    ItemId,
    TriggerEventId,
    TriggeredAt,
    Context,
    Payload,
    State,
    VisibleAt,
    LeaseToken,
    Attempts,
    Redeliveries,
    LastError,
    CreatedAt,
    ClaimedAt,
    FinishedAt,
}

/// The only CHECK constraint the extension puts on the outbox (its state names); the states
/// written here satisfy it.
const STATE_CHECK: &CStr = c"outbox_state_check";

/// One message to write. Times are Postgres timestamps (µs since 2000-01-01).
pub struct NewMessage<'a> {
    pub campaign_id: i64,
    pub campaign: &'a str,
    pub channel: &'a str,
    pub user_id: &'a str,
    pub item_id: Option<&'a str>,
    pub trigger_event_id: i64,
    pub triggered_at: i64,
    pub visible_at: i64,
    pub idempotency_key: Uuid,
}

/// The outbox opened for inserts, with its indexes, for one trigger call.
pub struct OutboxWriter {
    estate: *mut pg_sys::EState,
    rri: *mut pg_sys::ResultRelInfo,
    rel: pg_sys::Relation,
    slot: *mut pg_sys::TupleTableSlot,
    /// The one-pending index, as ON CONFLICT's arbiter.
    arbiter: *mut pg_sys::List,
    sequence: pg_sys::Oid,
    cid: pg_sys::CommandId,
    /// Attribute numbers of COLUMNS.
    attnum: [usize; 20],
    natts: usize,
    empty_context: pg_sys::Datum,
    now: i64,
}

impl OutboxWriter {
    /// Opens the outbox for inserts (RowExclusiveLock, as an INSERT takes), or None when the
    /// table is not as the extension made it (see the module comment).
    pub fn open() -> Option<Self> {
        let relid = crate::pg::personalize_relid(c"outbox");
        if relid == pg_sys::InvalidOid {
            return None;
        }
        // SAFETY: main-thread backend calls. Everything opened here is released when the
        // writer is dropped (also on an error unwinding past it); the executor state lives in
        // the caller's memory context.
        unsafe {
            let rel = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let Some((attnum, natts)) = Self::as_made(rel) else {
                pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
                return None;
            };
            let sequence =
                crate::pg::compat::identity_sequence(rel, attnum[Col::MessageId as usize] as i16);
            let arbiter_index = index_on(
                rel,
                c"outbox_one_pending_idx",
                &[c"campaign_id", c"user_id"],
                true,
            );
            if sequence == pg_sys::InvalidOid || arbiter_index == pg_sys::InvalidOid {
                pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
                return None;
            }
            let estate = pg_sys::CreateExecutorState();
            let in_query_context = MemoryContextSwitch::to((*estate).es_query_cxt);
            let cid = pg_sys::GetCurrentCommandId(true);
            (*estate).es_output_cid = cid;
            let rri = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>())
                as *mut pg_sys::ResultRelInfo;
            pg_sys::InitResultRelInfo(rri, rel, 1, std::ptr::null_mut(), 0);
            // Speculative: builds what the arbiter check needs for the unique index.
            pg_sys::ExecOpenIndices(rri, true);
            let slot = pg_sys::table_slot_create(rel, &mut (*estate).es_tupleTable);
            let arbiter = pg_sys::lappend_oid(std::ptr::null_mut(), arbiter_index);
            drop(in_query_context);
            let empty_context = pgrx::fcinfo::direct_function_call_as_datum(
                pg_sys::jsonb_in,
                &[Some(pg_sys::Datum::from(c"{}".as_ptr()))],
            )
            .expect("jsonb_in returns a value");
            Some(OutboxWriter {
                estate,
                rri,
                rel,
                slot,
                arbiter,
                sequence,
                cid,
                attnum,
                natts,
                empty_context,
                now: pg_sys::GetCurrentTransactionStartTimestamp(),
            })
        }
    }

    /// The attribute numbers of COLUMNS and the number of attributes, when the table has
    /// exactly those live columns, of those types, with no NOT NULL on the ones written NULL,
    /// no CHECK but the state check, no trigger, rule or row-level security, and is no
    /// partition. (Column defaults are not compared: every column is written explicitly.)
    unsafe fn as_made(rel: pg_sys::Relation) -> Option<([usize; 20], usize)> {
        let form = (*rel).rd_rel;
        if !(*rel).trigdesc.is_null()
            || (*form).relhasrules
            || (*form).relispartition
            || (*form).relrowsecurity
            || (*form).relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char
        {
            return None;
        }
        let desc = (*rel).rd_att;
        let natts = (*desc).natts as usize;
        let attrs = crate::pg::compat::tuple_desc_attrs(desc);
        let mut attnum = [0usize; 20];
        let mut live = 0;
        for (i, a) in attrs.iter().enumerate() {
            if a.attisdropped {
                continue;
            }
            live += 1;
            let name = CStr::from_ptr(a.attname.data.as_ptr());
            let (k, (_, ty, may_be_null)) = COLUMNS
                .iter()
                .enumerate()
                .find(|(_, (n, _, _))| *n == name)?;
            if a.atttypid != *ty || (a.attnotnull && *may_be_null) || a.attgenerated != 0 {
                return None;
            }
            attnum[k] = i + 1;
        }
        if live != COLUMNS.len() || attnum.contains(&0) {
            return None;
        }
        let constr = (*desc).constr;
        // `check` is NULL when the table has no CHECK constraint left.
        if !constr.is_null() && (*constr).num_check > 0 {
            let checks = std::slice::from_raw_parts((*constr).check, (*constr).num_check as usize);
            if checks
                .iter()
                .any(|c| CStr::from_ptr(c.ccname) != STATE_CHECK)
            {
                return None;
            }
        }
        Some((attnum, natts))
    }

    fn set(
        &self,
        values: &mut [pg_sys::Datum],
        nulls: &mut [bool],
        col: Col,
        value: Option<pg_sys::Datum>,
    ) {
        let i = self.attnum[col as usize] - 1;
        match value {
            Some(v) => {
                values[i] = v;
                nulls[i] = false;
            }
            None => nulls[i] = true,
        }
    }

    /// Fills the slot with the message's row (state and the cancelled columns as given).
    unsafe fn store(&self, m: &NewMessage<'_>, cancelled: Option<&str>) {
        let slot = self.slot;
        pg_sys::ExecClearTuple(slot);
        let values = std::slice::from_raw_parts_mut((*slot).tts_values, self.natts);
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, self.natts);
        nulls.fill(true);
        let text = |s: &str| s.into_datum();
        let time = |t: i64| Some(pg_sys::Datum::from(t));
        self.set(
            values,
            nulls,
            Col::MessageId,
            Some(pg_sys::Datum::from(next_message_id(self.sequence))),
        );
        self.set(
            values,
            nulls,
            Col::IdempotencyKey,
            m.idempotency_key.into_datum(),
        );
        self.set(
            values,
            nulls,
            Col::CampaignId,
            Some(pg_sys::Datum::from(m.campaign_id)),
        );
        self.set(values, nulls, Col::Campaign, text(m.campaign));
        self.set(values, nulls, Col::Channel, text(m.channel));
        self.set(values, nulls, Col::UserId, text(m.user_id));
        self.set(values, nulls, Col::ItemId, m.item_id.and_then(text));
        self.set(
            values,
            nulls,
            Col::TriggerEventId,
            Some(pg_sys::Datum::from(m.trigger_event_id)),
        );
        self.set(values, nulls, Col::TriggeredAt, time(m.triggered_at));
        self.set(values, nulls, Col::Context, Some(self.empty_context));
        self.set(values, nulls, Col::Payload, None);
        self.set(
            values,
            nulls,
            Col::State,
            text(if cancelled.is_some() {
                "cancelled"
            } else {
                "pending"
            }),
        );
        self.set(values, nulls, Col::VisibleAt, time(m.visible_at));
        self.set(values, nulls, Col::LeaseToken, None);
        self.set(
            values,
            nulls,
            Col::Attempts,
            Some(pg_sys::Datum::from(0i32)),
        );
        self.set(
            values,
            nulls,
            Col::Redeliveries,
            Some(pg_sys::Datum::from(0i32)),
        );
        self.set(values, nulls, Col::LastError, cancelled.and_then(text));
        self.set(values, nulls, Col::CreatedAt, time(self.now));
        self.set(values, nulls, Col::ClaimedAt, None);
        self.set(
            values,
            nulls,
            Col::FinishedAt,
            cancelled.and_then(|_| time(self.now)),
        );
        pg_sys::ExecStoreVirtualTuple(slot);
    }

    /// Writes a pending message unless the (campaign, user) has one already (ON CONFLICT DO
    /// NOTHING on the one-pending index, waiting for a concurrent writer of the same pair as
    /// the executor does). Returns whether it was written.
    ///
    /// The caller has just found no pending message for the pair (`OutboxProbe`), so the first
    /// attempt skips the executor's pre-check of the arbiter index and inserts speculatively at
    /// once: a conflict that arose since (a concurrent writer) is still caught by the
    /// speculative index insertion, which kills our tuple, and the next attempt runs the
    /// pre-check (which waits for that writer and then does nothing, or inserts if it
    /// rolled back).
    pub fn insert_pending(&mut self, m: &NewMessage<'_>) -> bool {
        // SAFETY: the writer is open; the protocol is ExecInsert's for ON CONFLICT DO NOTHING.
        unsafe {
            let _in_query_context = MemoryContextSwitch::to((*self.estate).es_query_cxt);
            self.store(m, None);
            let mut first_attempt = true;
            let written = loop {
                let mut conflict = pg_sys::ItemPointerData::default();
                if !first_attempt
                    && !crate::pg::compat::exec_check_index_constraints(
                        self.rri,
                        self.slot,
                        self.estate,
                        &mut conflict,
                        self.arbiter,
                    )
                {
                    // DO NOTHING; but, as the executor does, a conflicting row that this
                    // transaction's snapshot cannot see is a serialization failure under
                    // REPEATABLE READ and SERIALIZABLE.
                    self.check_conflict_visible(&mut conflict);
                    break false;
                }
                first_attempt = false;
                let xid = pg_sys::GetCurrentTransactionId();
                let token = pg_sys::SpeculativeInsertionLockAcquire(xid);
                pg_sys::table_tuple_insert_speculative(
                    self.rel,
                    self.slot,
                    self.cid,
                    0,
                    std::ptr::null_mut(),
                    token,
                );
                let mut spec_conflict = false;
                crate::pg::compat::exec_insert_index_tuples(
                    self.rri,
                    self.slot,
                    self.estate,
                    false,
                    true,
                    &mut spec_conflict,
                    self.arbiter,
                );
                pg_sys::table_tuple_complete_speculative(
                    self.rel,
                    self.slot,
                    token,
                    !spec_conflict,
                );
                pg_sys::SpeculativeInsertionLockRelease(xid);
                if !spec_conflict {
                    break true;
                }
                // A concurrent writer of the same pair got in between the check and the
                // insert: ours is killed; check again (now DO NOTHING, or insert if theirs
                // rolled back).
            };
            self.reset_per_tuple();
            written
        }
    }

    /// Writes a message cancelled at birth (by an event of the same statement): finished,
    /// with `reason`, in no partial index but the primary key's.
    pub fn insert_cancelled(&mut self, m: &NewMessage<'_>, reason: &str) {
        // SAFETY: the writer is open; a plain insert as ExecInsert makes it.
        unsafe {
            let _in_query_context = MemoryContextSwitch::to((*self.estate).es_query_cxt);
            self.store(m, Some(reason));
            pg_sys::table_tuple_insert(self.rel, self.slot, self.cid, 0, std::ptr::null_mut());
            crate::pg::compat::exec_insert_index_tuples(
                self.rri,
                self.slot,
                self.estate,
                false,
                false,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
            self.reset_per_tuple();
        }
    }

    /// ExecCheckTIDVisible for ON CONFLICT DO NOTHING: under a transaction snapshot, raises
    /// 40001 when the conflicting row (not our own transaction's) is invisible to it.
    unsafe fn check_conflict_visible(&self, conflict: &mut pg_sys::ItemPointerData) {
        if pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32 {
            return;
        }
        let slot = pg_sys::table_slot_create(self.rel, &mut (*self.estate).es_tupleTable);
        if !pg_sys::table_tuple_fetch_row_version(
            self.rel,
            conflict,
            std::ptr::addr_of_mut!(pg_sys::SnapshotAnyData),
            slot,
        ) {
            pgrx::error!("failed to fetch the conflicting outbox row for ON CONFLICT");
        }
        if !pg_sys::table_tuple_satisfies_snapshot(self.rel, slot, pg_sys::GetTransactionSnapshot())
        {
            let mut isnull = false;
            let xmin =
                pg_sys::slot_getsysattr(slot, pg_sys::MinTransactionIdAttributeNumber, &mut isnull);
            if !pg_sys::TransactionIdIsCurrentTransactionId(pg_sys::TransactionId::from(
                xmin.value() as u32,
            )) {
                pgrx::ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
                    "could not serialize access due to concurrent update",
                    "Another transaction wrote a pending message for the same campaign and user; retry the transaction."
                );
            }
        }
        pg_sys::ExecClearTuple(slot);
    }

    unsafe fn reset_per_tuple(&self) {
        let econtext = (*self.estate).es_per_tuple_exprcontext;
        if !econtext.is_null() {
            pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
        }
    }
}

/// Closes the indexes and the table (the lock is kept) and frees the executor state; also
/// when an error unwinds past the writer, before the (sub)transaction's abort.
impl Drop for OutboxWriter {
    fn drop(&mut self) {
        // SAFETY: opened in open(), released once.
        unsafe {
            pg_sys::ExecCloseIndices(self.rri);
            pg_sys::ExecResetTupleTable((*self.estate).es_tupleTable, false);
            pg_sys::FreeExecutorState(self.estate);
            pg_sys::table_close(self.rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}
