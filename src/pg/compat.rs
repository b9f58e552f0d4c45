//! What differs between the PostgreSQL majors the extension builds for (15, 16 and 18), in one
//! place: the rest of the code calls these and stays free of version switches.

use pgrx::pg_sys;

/// `ExecInsertIndexTuples` as PostgreSQL 15 has it; 16 added `onlySummarizing` (false: every
/// index of the relation, what 15 always did).
///
/// # Safety
/// As `ExecInsertIndexTuples`: an open result relation with its indexes, a stored tuple in
/// `slot`, and `spec_conflict` null or valid.
pub unsafe fn exec_insert_index_tuples(
    rri: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    estate: *mut pg_sys::EState,
    update: bool,
    no_dup_err: bool,
    spec_conflict: *mut bool,
    arbiter_indexes: *mut pg_sys::List,
) -> *mut pg_sys::List {
    #[cfg(feature = "pg15")]
    {
        pg_sys::ExecInsertIndexTuples(
            rri,
            slot,
            estate,
            update,
            no_dup_err,
            spec_conflict,
            arbiter_indexes,
        )
    }
    #[cfg(any(feature = "pg16", feature = "pg18"))]
    {
        pg_sys::ExecInsertIndexTuples(
            rri,
            slot,
            estate,
            update,
            no_dup_err,
            spec_conflict,
            arbiter_indexes,
            false,
        )
    }
}

/// `ExecCheckIndexConstraints` for an insert; 18 added the TID of the tuple being updated
/// (null for an insert).
///
/// # Safety
/// As `ExecCheckIndexConstraints`: an open result relation with its indexes and arbiter
/// indexes, a stored tuple in `slot`.
pub unsafe fn exec_check_index_constraints(
    rri: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    estate: *mut pg_sys::EState,
    conflict_tid: *mut pg_sys::ItemPointerData,
    arbiter_indexes: *mut pg_sys::List,
) -> bool {
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    {
        pg_sys::ExecCheckIndexConstraints(rri, slot, estate, conflict_tid, arbiter_indexes)
    }
    #[cfg(feature = "pg18")]
    {
        pg_sys::ExecCheckIndexConstraints(
            rri,
            slot,
            estate,
            conflict_tid,
            std::ptr::null_mut(),
            arbiter_indexes,
        )
    }
}

/// `index_beginscan`; 18 added the scan's instrumentation (none here).
///
/// # Safety
/// As `index_beginscan`: open heap and index relations and a registered snapshot.
pub unsafe fn index_begin_scan(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    nkeys: i32,
    norderbys: i32,
) -> pg_sys::IndexScanDesc {
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    {
        pg_sys::index_beginscan(heap, index, snapshot, nkeys, norderbys)
    }
    #[cfg(feature = "pg18")]
    {
        pg_sys::index_beginscan(
            heap,
            index,
            snapshot,
            std::ptr::null_mut(),
            nkeys,
            norderbys,
        )
    }
}

/// The identity sequence of a column (invalid when it has none); 17 takes the relation
/// instead of its oid.
///
/// # Safety
/// `rel` is an open relation.
pub unsafe fn identity_sequence(rel: pg_sys::Relation, attnum: i16) -> pg_sys::Oid {
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    {
        pg_sys::getIdentitySequence((*rel).rd_id, attnum, true)
    }
    #[cfg(feature = "pg18")]
    {
        pg_sys::getIdentitySequence(rel, attnum, true)
    }
}

/// A tuple descriptor's attributes; 18 keeps them behind its compact attributes, reached
/// through `TupleDescAttr`.
///
/// # Safety
/// `desc` is a valid tuple descriptor that outlives the slice.
pub unsafe fn tuple_desc_attrs<'a>(desc: pg_sys::TupleDesc) -> &'a [pg_sys::FormData_pg_attribute] {
    let natts = (*desc).natts as usize;
    #[cfg(any(feature = "pg15", feature = "pg16"))]
    {
        (*desc).attrs.as_slice(natts)
    }
    #[cfg(feature = "pg18")]
    {
        if natts == 0 {
            return &[];
        }
        // The attributes are one array: the first one's address starts it.
        std::slice::from_raw_parts(pg_sys::TupleDescAttr(desc, 0), natts)
    }
}
