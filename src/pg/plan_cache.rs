//! The tracking plan, compiled once per backend and kept until `personalize.event_types`
//! changes (see `watched_table`).

use std::cell::RefCell;
use std::rc::Rc;

use pgrx::prelude::*;

use crate::core::tracking::TrackingPlan;
use crate::error::PersonalizeError;
use crate::pg::watched_table::WatchedTable;

static EVENT_TYPES: WatchedTable = WatchedTable::new("personalize.event_types");

thread_local! {
    /// The compiled plan and the generation of personalize.event_types it was read at.
    static PLAN: RefCell<Option<(u64, Rc<TrackingPlan>)>> = const { RefCell::new(None) };
}

pub fn register_invalidation_callback() {
    EVENT_TYPES.register();
}

/// Sends the invalidation that makes every backend recompile the plan.
pub fn invalidate() {
    EVENT_TYPES.invalidate();
}

/// The compiled plan in force for this backend.
pub fn current() -> Rc<TrackingPlan> {
    let generation = EVENT_TYPES.generation();
    if let Some((at, plan)) = PLAN.with(|p| p.borrow().clone()) {
        if at == generation {
            return plan;
        }
    }
    let plan = Rc::new(load());
    PLAN.with(|p| *p.borrow_mut() = Some((generation, Rc::clone(&plan))));
    plan
}

fn load() -> TrackingPlan {
    Spi::connect(|client| {
        if EVENT_TYPES.note_relid(client).is_none() {
            PersonalizeError::NotReady {
                message: "personalize.event_types does not exist".into(),
                hint: "Run CREATE EXTENSION pg_personalize (or ALTER EXTENSION ... UPDATE).".into(),
            }
            .raise()
        }
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
