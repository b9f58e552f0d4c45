//! The outbox's two lookups by key, read through their indexes without a query: a user's
//! pending message per campaign (`outbox_one_pending_idx`) and a user's messages handed out
//! lately (`outbox_user_idx`, for the frequency caps).
//!
//! The campaign trigger runs them for every statement that fires a campaign, and for a single
//! event that was most of its cost: a prepared statement pays executor start-up, a plan-cache
//! check and SPI's copy of every row (about 10 µs), where the probe itself is one btree
//! descent. Here each probe is `index_rescan` + `index_getnext_slot` under a snapshot taken as
//! SPI takes one for a query (so the same rows are seen), and the columns are read from the
//! slot. Only the backend's main thread calls this.

use std::ffi::CStr;

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::prelude::*;

use std::collections::HashSet;

use crate::core::campaigns::{OutboxLookup, PendingMessage};
use crate::core::outbox::Delivery;
use crate::error::PersonalizeError;
use crate::pg::POSTGRES_EPOCH_UNIX_MICROS;

/// A key column of a probe: its name in the outbox and how its values compare.
struct KeyColumn {
    name: &'static CStr,
    /// The btree strategy and the comparison function for it.
    strategy: u32,
    compare: u32,
}

const CAMPAIGN_ID: KeyColumn = KeyColumn {
    name: c"campaign_id",
    strategy: pg_sys::BTEqualStrategyNumber,
    compare: pg_sys::F_INT8EQ,
};
const USER_ID: KeyColumn = KeyColumn {
    name: c"user_id",
    strategy: pg_sys::BTEqualStrategyNumber,
    compare: pg_sys::F_TEXTEQ,
};
/// claimed_at > the value: the index scan stops at the user's messages handed out lately.
const CLAIMED_AFTER: KeyColumn = KeyColumn {
    name: c"claimed_at",
    strategy: pg_sys::BTGreaterStrategyNumber,
    compare: pg_sys::F_TIMESTAMPTZ_GT,
};

/// The outbox opened for probes: the table, a snapshot, a slot and the column numbers read.
pub struct OutboxProbe {
    heap: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    slot: *mut pg_sys::TupleTableSlot,
    message_id: i16,
    campaign_id: i16,
    channel: i16,
    state: i16,
    triggered_at: i16,
    trigger_event_id: i16,
    claimed_at: i16,
}

/// One index of the outbox opened for equality probes of its leading columns.
struct IndexScan {
    index: pg_sys::Relation,
    scan: pg_sys::IndexScanDesc,
    keys: Vec<pg_sys::ScanKeyData>,
}

fn not_ready(what: String) -> ! {
    PersonalizeError::NotReady {
        message: what,
        hint: "Recreate the extension's objects: ALTER EXTENSION pg_personalize UPDATE, or \
               drop and create it again."
            .into(),
    }
    .raise()
}

impl OutboxProbe {
    /// Opens personalize.outbox (AccessShareLock, kept to the end of the transaction as a
    /// query's would be) with a snapshot like the one SPI would give the next query.
    pub fn open() -> Self {
        let relid = crate::pg::personalize_relid(c"outbox");
        if relid == pg_sys::InvalidOid {
            not_ready("personalize.outbox is missing".into());
        }
        // SAFETY: main-thread backend calls. The relation stays open (and locked), the
        // snapshot registered and the slot allocated until the probe is dropped.
        unsafe {
            let heap = pg_sys::table_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let column = |name: &CStr| -> i16 {
                let n = pg_sys::get_attnum(relid, name.as_ptr());
                if n <= 0 {
                    not_ready(format!(
                        "personalize.outbox has no column {}",
                        name.to_string_lossy()
                    ));
                }
                n
            };
            OutboxProbe {
                message_id: column(c"message_id"),
                campaign_id: column(CAMPAIGN_ID.name),
                channel: column(c"channel"),
                state: column(c"state"),
                triggered_at: column(c"triggered_at"),
                trigger_event_id: column(c"trigger_event_id"),
                claimed_at: column(c"claimed_at"),
                heap,
                // What SPI does before a query in a read-write function: count this
                // transaction's earlier writes as done, then take the statement's snapshot
                // (a fresh one in READ COMMITTED, the transaction's in REPEATABLE READ).
                snapshot: {
                    pg_sys::CommandCounterIncrement();
                    pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot())
                },
                slot: pg_sys::table_slot_create(heap, std::ptr::null_mut()),
            }
        }
    }

    /// Opens index `name` for probes by `columns` (equality, or a bound on the last), which
    /// must be its leading key columns.
    fn index(&self, name: &CStr, columns: &[KeyColumn]) -> IndexScan {
        let names: Vec<&CStr> = columns.iter().map(|c| c.name).collect();
        // SAFETY: as in open(); the index is opened (and locked) by index_on_outbox.
        unsafe {
            let relid = index_on_outbox(self.heap, name, &names, false);
            if relid == pg_sys::InvalidOid {
                not_ready(format!(
                    "personalize.{} is missing or is not the extension's index",
                    name.to_string_lossy()
                ));
            }
            let index = pg_sys::index_open(relid, pg_sys::NoLock as pg_sys::LOCKMODE);
            let keys: Vec<pg_sys::ScanKeyData> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut key = pg_sys::ScanKeyData::default();
                    // The index column's collation: the btree orders text by it.
                    pg_sys::ScanKeyEntryInitialize(
                        &mut key,
                        0,
                        (i + 1) as pg_sys::AttrNumber,
                        c.strategy as pg_sys::StrategyNumber,
                        pg_sys::InvalidOid,
                        *(*index).rd_indcollation.add(i),
                        pg_sys::Oid::from(c.compare),
                        pg_sys::Datum::from(0),
                    );
                    key
                })
                .collect();
            let scan = crate::pg::compat::index_begin_scan(
                self.heap,
                index,
                self.snapshot,
                keys.len() as i32,
                0,
            );
            IndexScan { index, scan, keys }
        }
    }

    /// Calls `row` for each visible row the index holds for `values` (one per key column).
    fn probe(&self, scan: &mut IndexScan, values: &[pg_sys::Datum], mut row: impl FnMut(&Self)) {
        // SAFETY: the scan and slot are open (see open()); the values outlive the probe.
        unsafe {
            for (key, value) in scan.keys.iter_mut().zip(values) {
                key.sk_argument = *value;
            }
            pg_sys::index_rescan(
                scan.scan,
                scan.keys.as_mut_ptr(),
                scan.keys.len() as i32,
                std::ptr::null_mut(),
                0,
            );
            while pg_sys::index_getnext_slot(
                scan.scan,
                pg_sys::ScanDirection::ForwardScanDirection,
                self.slot,
            ) {
                row(self);
            }
        }
    }

    fn attr<T: FromDatum>(&self, column: i16) -> Option<T> {
        // SAFETY: the slot holds the row index_getnext_slot just returned.
        unsafe {
            let mut isnull = false;
            let d = pg_sys::slot_getattr(self.slot, column.into(), &mut isnull);
            T::from_datum(d, isnull)
        }
    }

    fn state_is(&self, states: &[&str]) -> bool {
        self.attr::<&str>(self.state)
            .is_some_and(|s| states.contains(&s))
    }

    /// The pending message of each (campaign, user) pair that has one.
    pub fn pending_messages<'a>(
        &self,
        pairs: impl IntoIterator<Item = (i64, &'a str)>,
    ) -> Vec<PendingMessage> {
        let mut scan = self.index(c"outbox_one_pending_idx", &[CAMPAIGN_ID, USER_ID]);
        let mut found = Vec::new();
        for (campaign_id, user_id) in pairs {
            let user = user_id.into_datum().unwrap_or(pg_sys::Datum::from(0));
            self.probe(&mut scan, &[campaign_id.into(), user], |r| {
                // The index holds pending messages only; the state test guards the row
                // version read against any other (a claim makes a new version).
                if !r.state_is(&["pending"]) {
                    return;
                }
                if let (Some(message_id), Some(triggered_at), Some(trigger_event_id)) = (
                    r.attr::<i64>(r.message_id),
                    r.attr::<TimestampWithTimeZone>(r.triggered_at),
                    r.attr::<i64>(r.trigger_event_id),
                ) {
                    found.push(PendingMessage {
                        message_id,
                        campaign_id,
                        user_id: user_id.to_owned(),
                        triggered_at: i64::from(triggered_at),
                        trigger_event_id,
                    });
                }
            });
        }
        drop(scan);
        found
    }

    /// The messages handed out (claimed or sent) to each user after `since` (Postgres
    /// microseconds), for the frequency caps.
    pub fn recent_deliveries<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
        since: i64,
    ) -> Vec<Delivery> {
        let mut scan = self.index(c"outbox_user_idx", &[USER_ID, CLAIMED_AFTER]);
        let mut found = Vec::new();
        for user_id in users {
            let user = user_id.into_datum().unwrap_or(pg_sys::Datum::from(0));
            self.probe(&mut scan, &[user, pg_sys::Datum::from(since)], |r| {
                let Some(claimed_at) = r.attr::<TimestampWithTimeZone>(r.claimed_at) else {
                    return;
                };
                let claimed_at = i64::from(claimed_at);
                // claimed_at > since is the scan's own key.
                if !r.state_is(&["claimed", "sent"]) {
                    return;
                }
                if let (Some(message_id), Some(channel)) =
                    (r.attr::<i64>(r.message_id), r.attr::<String>(r.channel))
                {
                    found.push(Delivery {
                        message_id,
                        user_id: user_id.to_owned(),
                        campaign_id: r.attr::<i64>(r.campaign_id),
                        channel,
                        at: (claimed_at + POSTGRES_EPOCH_UNIX_MICROS) as f64 / 1e6,
                    });
                }
            });
        }
        drop(scan);
        found
    }
}

/// Releases the slot and the snapshot and closes the table (its lock is kept); also when an
/// error unwinds past the probe, before the (sub)transaction's abort.
impl Drop for OutboxProbe {
    fn drop(&mut self) {
        // SAFETY: opened in open(), released once.
        unsafe {
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::UnregisterSnapshot(self.snapshot);
            pg_sys::table_close(self.heap, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}

/// The oid of index `name` of the outbox when it is a btree (unique, if `unique`) whose
/// leading key columns are `columns`, else InvalidOid. The index is locked (AccessShareLock,
/// to the end of the transaction) when it is returned.
///
/// # Safety
/// `heap` is the open outbox.
pub(crate) unsafe fn index_on_outbox(
    heap: pg_sys::Relation,
    name: &CStr,
    columns: &[&CStr],
    unique: bool,
) -> pg_sys::Oid {
    let relid = crate::pg::personalize_relid(name);
    if relid == pg_sys::InvalidOid {
        return relid;
    }
    let index = pg_sys::index_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    let form = (*index).rd_index;
    let heap_relid = (*(*heap).rd_rel).oid;
    let key_columns = (*form).indnkeyatts as usize;
    let indkey = (*form)
        .indkey
        .values
        .as_slice(key_columns.min(columns.len()));
    let leading = columns
        .iter()
        .enumerate()
        .all(|(i, c)| indkey.get(i).copied() == Some(pg_sys::get_attnum(heap_relid, c.as_ptr())));
    // An arbiter must have exactly the conflict's columns (as ON CONFLICT's inference needs).
    let fits = (*form).indrelid == heap_relid
        && (*(*index).rd_rel).relam == pg_sys::BTREE_AM_OID
        && (key_columns == columns.len() || (!unique && key_columns > columns.len()))
        && leading
        && (!unique || (*form).indisunique);
    pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
    if fits {
        relid
    } else {
        pg_sys::InvalidOid
    }
}

impl Drop for IndexScan {
    fn drop(&mut self) {
        // SAFETY: opened in OutboxProbe::index(), closed once; the lock is kept.
        unsafe {
            pg_sys::index_endscan(self.scan);
            pg_sys::index_close(self.index, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}

/// The outbox as `core::campaigns::decide` asks it, opened on its first question (a statement
/// whose events fire and cancel nothing never opens it).
pub struct OutboxLookups {
    probe: Option<OutboxProbe>,
    /// The transaction's start (Postgres microseconds), the end of the caps' windows.
    now: i64,
}

impl OutboxLookups {
    pub fn new(now: i64) -> Self {
        OutboxLookups { probe: None, now }
    }

    fn probe(&mut self) -> &OutboxProbe {
        self.probe.get_or_insert_with(OutboxProbe::open)
    }
}

impl OutboxLookup for OutboxLookups {
    fn pending_messages(&mut self, pairs: HashSet<(i64, &str)>) -> Vec<PendingMessage> {
        self.probe().pending_messages(pairs)
    }

    fn recent_deliveries(&mut self, users: HashSet<&str>, window_seconds: f64) -> Vec<Delivery> {
        let since = self.now - (window_seconds * 1e6) as i64;
        self.probe().recent_deliveries(users, since)
    }
}
