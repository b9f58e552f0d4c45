//! The deterministic synthetic shop, from SQL: its catalogue, its event stream, and
//! `generate_shop`, which loads both through the tracking plan.

use std::sync::Arc;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::core::synthetic::{ShopSpec, SyntheticShop};
use crate::error::PersonalizeError;
use crate::pg::ingest::Ingest;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// 1995-01-01 and 9999-01-01 in Unix microseconds.
const MIN_START_US: i64 = 788_918_400_000_000;
const MAX_START_US: i64 = 253_370_764_800_000_000;

fn spec(
    events: i64,
    users: i32,
    items: i32,
    seed: i64,
    start: TimestampWithTimeZone,
    days: i32,
) -> ShopSpec {
    if events < 0 {
        PersonalizeError::invalid("events must be >= 0", "Ask for a number of events.").raise();
    }
    // The generated times must stay inside what the date library and the envelope accept.
    let start_us = Some(pg_sys::TimestampTz::from(start))
        .filter(|_| start.is_finite())
        .and_then(|t| t.checked_add(PG_EPOCH_OFFSET_US))
        .filter(|us| (MIN_START_US..=MAX_START_US).contains(us))
        .unwrap_or_else(|| {
            PersonalizeError::invalid(
                "start must be between 1995-01-01 and 9999-01-01",
                "e.g. '2026-01-01'",
            )
            .raise()
        });
    let spec = ShopSpec {
        users: u32::try_from(users).unwrap_or(0),
        items: u32::try_from(items).unwrap_or(0),
        events: events as u64,
        seed: seed as u64,
        start_unix: start_us.div_euclid(1_000_000),
        days: u32::try_from(days).unwrap_or(0),
    };
    if let Err(problem) = spec.check() {
        PersonalizeError::invalid(problem, "Typical: users 1000, items 500, days 90.").raise();
    }
    spec
}

/// The synthetic catalogue: item id, category, title, price.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn synthetic_items(
    items: default!(i32, 500),
    seed: default!(i64, 42),
) -> TableIterator<
    'static,
    (
        name!(item_id, String),
        name!(category, String),
        name!(title, String),
        name!(price, f64),
    ),
> {
    let start = TimestampWithTimeZone::try_from(0i64).unwrap_or_else(|_| unreachable!());
    let shop = SyntheticShop::new(spec(0, 1, items, seed, start, 1));
    TableIterator::new(
        shop.items
            .into_iter()
            .map(|i| (i.item_id, i.category, i.title, i.price)),
    )
}

/// The synthetic event stream as the JSON an app would send to track(), in time order.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn synthetic_events(
    events: i64,
    users: default!(i32, 1000),
    items: default!(i32, 500),
    seed: default!(i64, 42),
    start: default!(TimestampWithTimeZone, "'2026-01-01 00:00:00+00'"),
    days: default!(i32, 90),
) -> SetOfIterator<'static, pgrx::JsonB> {
    let shop = Arc::new(SyntheticShop::new(spec(
        events, users, items, seed, start, days,
    )));
    SetOfIterator::new(shop.events().map(|e| pgrx::JsonB(e.to_json())))
}

/// Fills the catalogue and tracks the synthetic events through the tracking plan.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn generate_shop(
    events: default!(i64, 20000),
    users: default!(i32, 1000),
    items: default!(i32, 500),
    seed: default!(i64, 42),
    start: default!(TimestampWithTimeZone, "'2026-01-01 00:00:00+00'"),
    days: default!(i32, 90),
) -> TableIterator<
    'static,
    (
        name!(items, i32),
        name!(accepted, i64),
        name!(duplicates, i64),
        name!(rejected, i64),
    ),
> {
    crate::pg::require_writable(c"generate_shop()");
    let shop = Arc::new(SyntheticShop::new(spec(
        events, users, items, seed, start, days,
    )));
    let mut ingest = Ingest::new("generate_shop", false);
    Spi::connect_mut(|client| {
        let ids: Vec<String> = shop.items.iter().map(|i| i.item_id.clone()).collect();
        let cats: Vec<String> = shop.items.iter().map(|i| i.category.clone()).collect();
        let titles: Vec<String> = shop.items.iter().map(|i| i.title.clone()).collect();
        let prices: Vec<f64> = shop.items.iter().map(|i| i.price).collect();
        let args: [DatumWithOid; 4] = [ids.into(), cats.into(), titles.into(), prices.into()];
        client
            .update(
                "INSERT INTO personalize.items (item_id, category, title, price) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[]) \
                 ON CONFLICT (item_id) DO UPDATE SET category = EXCLUDED.category, \
                   title = EXCLUDED.title, price = EXCLUDED.price, updated_at = now()",
                None,
                &args,
            )
            .unwrap_or_else(|e| {
                PersonalizeError::NotReady {
                    message: format!("writing the catalogue failed: {e}"),
                    hint: "Check that personalize.items exists and is writable.".into(),
                }
                .raise()
            });
        let mut chunk = Vec::with_capacity(5_000);
        for (k, e) in shop.events().enumerate() {
            chunk.push((k as i64 + 1, Some(e.to_json().to_string())));
            if chunk.len() == 5_000 {
                pgrx::check_for_interrupts!();
                ingest.chunk(client, &chunk, None);
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            ingest.chunk(client, &chunk, None);
        }
    });
    let t = ingest.tally;
    TableIterator::once((
        shop.items.len() as i32,
        t.accepted,
        t.duplicates,
        t.rejected,
    ))
}
