//! Per-backend caches of the extension's small tables (the tracking plan, the catalogue's
//! flags, the experiments), each dropped when its table changes.
//!
//! A statement trigger on the table calls `invalidate()`, which sends a relcache invalidation
//! for it; every backend (this one at its next command, the others when they next read
//! invalidations) runs the callback, which bumps the table's generation. A cache remembers the
//! generation it was loaded at and reloads when it differs. An aborted transaction replays its
//! invalidations locally too, so a cache read inside a rolled-back change is dropped as well.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

pub struct WatchedTable {
    /// Schema-qualified name, for to_regclass().
    name: &'static str,
    generation: AtomicU64,
    /// OID of the table when last looked up (0: not known yet).
    relid: AtomicU32,
}

unsafe extern "C-unwind" fn on_relcache_invalidation(arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // SAFETY: `register` passes a pointer to a `'static` WatchedTable.
    let table = unsafe { &*(arg.value() as *const WatchedTable) };
    let watched = table.relid.load(Ordering::Relaxed);
    if relid == pg_sys::InvalidOid || relid.to_u32() == watched {
        table.generation.fetch_add(1, Ordering::Relaxed);
    }
}

impl WatchedTable {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            generation: AtomicU64::new(1),
            relid: AtomicU32::new(0),
        }
    }

    /// Registers the relcache callback (from `_PG_init`).
    pub fn register(&'static self) {
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(
                Some(on_relcache_invalidation),
                pg_sys::Datum::from(self as *const Self as usize),
            );
        }
    }

    /// The current generation: a cache loaded at another one is stale. Read it before loading,
    /// so an invalidation that arrives during the load makes the next call load again.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Looks up (and remembers) the table's OID, so its invalidations are recognised.
    pub fn note_relid(&self, client: &SpiClient<'_>) -> Option<pg_sys::Oid> {
        let sql = format!("SELECT CAST(to_regclass('{}') AS oid)", self.name);
        let relid: Option<pg_sys::Oid> = client
            .select(&sql, None, &[])
            .and_then(|t| t.first().get(1))
            .unwrap_or(None);
        self.relid
            .store(relid.map_or(0, |r| r.to_u32()), Ordering::Relaxed);
        relid
    }

    /// Makes every backend reload its cache of the table (at commit; this one at once).
    pub fn invalidate(&self) {
        if let Some(relid) = Spi::connect(|client| self.note_relid(client)) {
            unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}
