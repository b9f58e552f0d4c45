//! The tracking plan, compiled once per backend and kept until the plan changes.
//!
//! A statement trigger on `personalize.event_types` sends a relcache invalidation for that table;
//! every backend (this one at the next command, the others when they next read invalidations)
//! runs our callback, which marks the compiled plan stale. An aborted transaction replays its
//! invalidations locally too, so a plan read inside a rolled-back change is dropped as well.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::core::tracking::TrackingPlan;
use crate::error::PersonalizeError;

static STALE: AtomicBool = AtomicBool::new(true);
/// OID of personalize.event_types when the plan was loaded (0: not known yet).
static PLAN_RELID: AtomicU32 = AtomicU32::new(0);

thread_local! {
    static PLAN: RefCell<Option<Rc<TrackingPlan>>> = const { RefCell::new(None) };
}

unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let watched = PLAN_RELID.load(Ordering::Relaxed);
    if relid == pg_sys::InvalidOid || relid.to_u32() == watched {
        STALE.store(true, Ordering::Relaxed);
    }
}

pub fn register_invalidation_callback() {
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_invalidation),
            pg_sys::Datum::from(0usize),
        );
    }
}

fn event_types_relid(client: &SpiClient<'_>) -> pg_sys::Oid {
    let relid: Option<pg_sys::Oid> = client
        .select(
            "SELECT CAST(to_regclass('personalize.event_types') AS oid)",
            None,
            &[],
        )
        .and_then(|t| t.first().get(1))
        .unwrap_or(None);
    relid.unwrap_or_else(|| {
        PersonalizeError::NotReady {
            message: "personalize.event_types does not exist".into(),
            hint: "Run CREATE EXTENSION pg_personalize (or ALTER EXTENSION ... UPDATE).".into(),
        }
        .raise()
    })
}

/// Sends the invalidation that makes every backend recompile the plan.
pub fn invalidate() {
    let relid = Spi::connect(event_types_relid);
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    STALE.store(true, Ordering::Relaxed);
}

/// The compiled plan in force for this backend.
pub fn current() -> Rc<TrackingPlan> {
    if !STALE.load(Ordering::Relaxed) {
        if let Some(plan) = PLAN.with(|p| p.borrow().clone()) {
            return plan;
        }
    }
    // Cleared before reading: an invalidation that arrives while we read sets it again.
    STALE.store(false, Ordering::Relaxed);
    let plan = Rc::new(load());
    PLAN.with(|p| *p.borrow_mut() = Some(Rc::clone(&plan)));
    plan
}

fn load() -> TrackingPlan {
    Spi::connect(|client| {
        let relid = event_types_relid(client);
        PLAN_RELID.store(relid.to_u32(), Ordering::Relaxed);
        let rows = client
            .select(
                "SELECT event_type, requires_item, CAST(properties_schema AS text) \
                 FROM personalize.event_types",
                None,
                &[],
            )
            .unwrap_or_else(|e| {
                PersonalizeError::NotReady {
                    message: format!("cannot read the tracking plan: {e}"),
                    hint: "Check that the role can SELECT from personalize.event_types.".into(),
                }
                .raise()
            });
        let mut plan = TrackingPlan::new();
        for row in rows {
            let name: String = row.get(1).ok().flatten().unwrap_or_default();
            let requires_item: bool = row.get(2).ok().flatten().unwrap_or(false);
            let schema_text: String = row.get(3).ok().flatten().unwrap_or_default();
            let compiled = crate::core::tracking::parse_json(&schema_text)
                .map_err(|v| v.to_string())
                .and_then(|schema| {
                    plan.add_type(&name, requires_item, &schema)
                        .map_err(|e| e.to_string())
                });
            if let Err(problem) = compiled {
                PersonalizeError::NotReady {
                    message: format!("the tracking plan for \"{name}\" cannot be used: {problem}"),
                    hint: "Fix properties_schema of that row in personalize.event_types.".into(),
                }
                .raise();
            }
        }
        plan
    })
}
