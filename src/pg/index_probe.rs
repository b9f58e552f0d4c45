//! Lookups by key through a btree index, without a query: the campaign trigger's probes of
//! the outbox (`pg::outbox_probe`) and of the consents (`pg::consent_check`).
//!
//! For a single event these probes were most of the trigger's cost as prepared statements:
//! one pays executor start-up, a plan-cache check and SPI's copy of every row (about 10 µs),
//! where the probe itself is one btree descent. Here each probe is `index_rescan` +
//! `index_getnext_slot` under a snapshot taken as SPI takes one for a query (so the same rows
//! are seen), and the columns are read from the slot. Only the backend's main thread calls
//! this.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::PersonalizeError;

/// A key column of a probe: its name in the table and how its values compare.
pub struct KeyColumn {
    pub name: &'static CStr,
    /// The btree strategy and the comparison function for it.
    pub strategy: u32,
    pub compare: u32,
}

impl KeyColumn {
    pub const fn equal(name: &'static CStr, compare: u32) -> Self {
        KeyColumn {
            name,
            strategy: pg_sys::BTEqualStrategyNumber,
            compare,
        }
    }
}

/// One of the extension's tables opened for probes: the table, a snapshot and a slot.
pub struct TableProbe {
    heap: pg_sys::Relation,
    relid: pg_sys::Oid,
    name: &'static CStr,
    snapshot: pg_sys::Snapshot,
    slot: *mut pg_sys::TupleTableSlot,
}

/// One index of a probed table, opened for probes of its leading columns.
pub struct IndexScan {
    index: pg_sys::Relation,
    scan: pg_sys::IndexScanDesc,
    keys: Vec<pg_sys::ScanKeyData>,
}

pub fn not_ready(what: String) -> ! {
    PersonalizeError::NotReady {
        message: what,
        hint: "Recreate the extension's objects: ALTER EXTENSION pg_personalize UPDATE, or \
               drop and create it again."
            .into(),
    }
    .raise()
}

impl TableProbe {
    /// Opens personalize.`name` (AccessShareLock, kept to the end of the transaction as a
    /// query's would be) with a snapshot like the one SPI would give the next query.
    pub fn open(name: &'static CStr) -> Self {
        let relid = crate::pg::personalize_relid(name);
        if relid == pg_sys::InvalidOid {
            not_ready(format!("personalize.{} is missing", name.to_string_lossy()));
        }
        // SAFETY: main-thread backend calls. The relation stays open (and locked), the
        // snapshot registered and the slot allocated until the probe is dropped.
        unsafe {
            let heap = pg_sys::table_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            TableProbe {
                heap,
                relid,
                name,
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

    /// The number of column `name` (refused when the table lacks it).
    pub fn column(&self, name: &CStr) -> i16 {
        // SAFETY: a catalogue lookup by a valid C string.
        let n = unsafe { pg_sys::get_attnum(self.relid, name.as_ptr()) };
        if n <= 0 {
            not_ready(format!(
                "personalize.{} has no column {}",
                self.name.to_string_lossy(),
                name.to_string_lossy()
            ));
        }
        n
    }

    /// Opens index `name` for probes by `columns` (equality, or a bound on the last), which
    /// must be its leading key columns.
    pub fn index(&self, name: &CStr, columns: &[KeyColumn]) -> IndexScan {
        let names: Vec<&CStr> = columns.iter().map(|c| c.name).collect();
        // SAFETY: as in open(); the index is opened (and locked) by index_on.
        unsafe {
            let relid = index_on(self.heap, name, &names, false);
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
    pub fn probe(
        &self,
        scan: &mut IndexScan,
        values: &[pg_sys::Datum],
        mut row: impl FnMut(&Self),
    ) {
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

    /// Column `column` of the row the probe is at.
    pub fn attr<T: FromDatum>(&self, column: i16) -> Option<T> {
        // SAFETY: the slot holds the row index_getnext_slot just returned.
        unsafe {
            let mut isnull = false;
            let d = pg_sys::slot_getattr(self.slot, column.into(), &mut isnull);
            T::from_datum(d, isnull)
        }
    }
}

/// Releases the slot and the snapshot and closes the table (its lock is kept); also when an
/// error unwinds past the probe, before the (sub)transaction's abort.
impl Drop for TableProbe {
    fn drop(&mut self) {
        // SAFETY: opened in open(), released once.
        unsafe {
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::UnregisterSnapshot(self.snapshot);
            pg_sys::table_close(self.heap, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}

impl Drop for IndexScan {
    fn drop(&mut self) {
        // SAFETY: opened in TableProbe::index(), closed once; the lock is kept.
        unsafe {
            pg_sys::index_endscan(self.scan);
            pg_sys::index_close(self.index, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}

/// The oid of index `name` of the table `heap` when it is a btree (unique, if `unique`) whose
/// leading key columns are `columns`, else InvalidOid. The index is locked (AccessShareLock,
/// to the end of the transaction) when it is returned.
///
/// # Safety
/// `heap` is an open table.
pub(crate) unsafe fn index_on(
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
