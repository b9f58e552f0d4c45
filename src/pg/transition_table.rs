//! The events trigger's input: the statement's new events, read straight from its transition
//! table (a query over it cost a single-event insert about a seventh of the trigger's time).

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use crate::core::campaigns::TriggerEvent;
use crate::error::PersonalizeError;
use crate::pg::campaign_cache::Campaigns;

/// An event as the campaign rules read it, with the item the message is about.
pub struct NewEvent {
    pub event: TriggerEvent,
    pub item_id: Option<String>,
}

/// The events of the statement that fired `trigger` whose types the campaigns read (see
/// `read`). Raises 55000 unless it runs as an AFTER INSERT statement trigger with
/// `REFERENCING NEW TABLE AS new_events`.
pub fn new_events(trigger: &PgTrigger<'_>, set: &Campaigns) -> Vec<NewEvent> {
    if trigger.new_transition_table_name().ok().flatten() != Some("new_events") {
        PersonalizeError::NotReady {
            message: "_events_fire_campaigns() must run as an AFTER INSERT statement trigger \
                      with REFERENCING NEW TABLE AS new_events"
                .into(),
            hint: "Recreate the trigger as sql/finalize.sql defines it.".into(),
        }
        .raise()
    }
    let trigger_data = trigger.trigger_data() as *const pg_sys::TriggerData;
    // SAFETY: the trigger data, its relation and its transition table are valid for this
    // call, which is an AFTER INSERT statement trigger with REFERENCING NEW TABLE (checked).
    unsafe { read(trigger_data, set) }
}

/// The statement's events of the types the campaigns read, straight from the trigger's
/// transition table (a query over it cost a single-event insert about a seventh of the
/// trigger's time): the item's category from the per-backend catalogue cache (for trigger
/// types of category campaigns), `properties ->> 'category'`, and the ids of the campaigns
/// whose trigger_properties the properties contain (Postgres's own `@>`, only for types such
/// campaigns have).
///
/// # Safety
/// `trigger_data` is the current call's, for an AFTER INSERT statement trigger on
/// personalize.events with a NEW transition table.
unsafe fn read(trigger_data: *const pg_sys::TriggerData, set: &Campaigns) -> Vec<NewEvent> {
    let store = (*trigger_data).tg_newtable;
    if store.is_null() {
        return Vec::new();
    }
    let desc = (*(*trigger_data).tg_relation).rd_att;
    // Borrowed from the relation (neither released nor freed when dropped).
    let tupdesc = pgrx::PgTupleDesc::from_pg_unchecked(desc);
    let column = |name: &str| -> i32 {
        match tupdesc
            .iter()
            .position(|a| !a.is_dropped() && a.name() == name)
        {
            Some(i) => i as i32 + 1,
            None => PersonalizeError::NotReady {
                message: format!("personalize.events has no column {name}"),
                hint: "Update the extension: ALTER EXTENSION pg_personalize UPDATE;".into(),
            }
            .raise(),
        }
    };
    let (c_id, c_type, c_user, c_item, c_at, c_props) = (
        column("event_id"),
        column("event_type"),
        column("user_id"),
        column("item_id"),
        column("occurred_at"),
        column("properties"),
    );
    let catalog = (!set.category_types.is_empty()).then(crate::pg::model_cache::catalog);
    let category_key = "category".into_datum();
    // The trigger_properties filters as jsonb, made once per statement that needs them.
    let mut filters: Option<Vec<(i64, pg_sys::Datum)>> = None;

    let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
    // A read pointer of our own, rewound: other triggers may read the same transition table.
    let pointer = pg_sys::tuplestore_alloc_read_pointer(store, pg_sys::EXEC_FLAG_REWIND as i32);
    pg_sys::tuplestore_select_read_pointer(store, pointer);
    pg_sys::tuplestore_rescan(store);
    let mut read = Vec::new();
    while pg_sys::tuplestore_gettupleslot(store, true, false, slot) {
        let attr = |n: i32| {
            let mut isnull = false;
            let d = pg_sys::slot_getattr(slot, n, &mut isnull);
            (d, isnull)
        };
        let (d, null) = attr(c_type);
        let Some(event_type) = <&str>::from_datum(d, null) else {
            continue;
        };
        if !set.relevant_types.iter().any(|t| t == event_type) {
            continue;
        }
        let event_type = event_type.to_owned();
        let (d, null) = attr(c_item);
        let item_id = String::from_datum(d, null);
        let item_category = match (&catalog, &item_id) {
            (Some(catalog), Some(item)) if set.category_types.contains(&event_type) => {
                catalog.category_of(item).map(str::to_owned)
            }
            _ => None,
        };
        let (props, props_null) = attr(c_props);
        let property_category = if !props_null && set.category_types.contains(&event_type) {
            pgrx::fcinfo::direct_function_call::<String>(
                pg_sys::jsonb_object_field_text,
                &[Some(props), category_key],
            )
        } else {
            None
        };
        let mut property_matches = Vec::new();
        if !props_null && set.property_types.contains(&event_type) {
            let filters = filters.get_or_insert_with(|| {
                set.property_ids
                    .iter()
                    .zip(&set.property_filters)
                    .map(|(&id, filter)| {
                        let text = std::ffi::CString::new(filter.as_str())
                            .expect("a jsonb text has no NUL byte");
                        let jsonb = pgrx::fcinfo::direct_function_call_as_datum(
                            pg_sys::jsonb_in,
                            &[Some(pg_sys::Datum::from(text.as_ptr()))],
                        )
                        .expect("jsonb_in returns a value");
                        (id, jsonb)
                    })
                    .collect()
            });
            for &(id, filter) in filters.iter() {
                if pgrx::fcinfo::direct_function_call::<bool>(
                    pg_sys::jsonb_contains,
                    &[Some(props), Some(filter)],
                ) == Some(true)
                {
                    property_matches.push(id);
                }
            }
        }
        let (d, null) = attr(c_id);
        let event_id = i64::from_datum(d, null).unwrap_or(0);
        let (d, null) = attr(c_user);
        let user_id = String::from_datum(d, null).unwrap_or_default();
        let (d, null) = attr(c_at);
        let occurred_at = TimestampWithTimeZone::from_datum(d, null).map_or(0, i64::from);
        read.push(NewEvent {
            event: TriggerEvent {
                event_id,
                event_type,
                user_id,
                occurred_at,
                item_category,
                property_category,
                property_matches,
            },
            item_id,
        });
    }
    pg_sys::tuplestore_select_read_pointer(store, 0);
    pg_sys::ExecDropSingleTupleTableSlot(slot);
    read
}
