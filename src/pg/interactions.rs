//! One bulk read of the event log into plain Rust data for training: per (user, item) the sum of
//! event-type weights, each decayed by its type's half-life back from `as_of`. Aggregation
//! happens in Postgres (one hash aggregate); rows come through a cursor in large chunks.

use std::collections::HashMap;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::error::PersonalizeError;

/// Interactions with dense indexes: `pairs` are (user index, item index, strength, unix time of
/// the latest event of the pair); `purchases` are the (user index, item index) pairs with a
/// purchase event, also those whose net strength is not positive (a purchase then a refund with
/// a negative weight): what serving leaves out of the user's recommendations.
pub struct Interactions {
    pub user_ids: Vec<String>,
    pub item_ids: Vec<String>,
    pub pairs: Vec<(u32, u32, f32, i64)>,
    pub purchases: Vec<(u32, u32)>,
}

/// exp(-ln2 · age / half_life), clamped so a very old event gives ~0 instead of an underflow
/// error (PostgreSQL raises on float underflow). An event after `as_of` (only read with $3:
/// the default as_of, see `newest_event`) has age 0.
const READ_QUERY: &str = "\
SELECT e.user_id, e.item_id,
       CAST(sum(t.weight * exp(greatest(-50.0, -0.6931471805599453
            * greatest(0.0, date_part('epoch', $1 - e.occurred_at)) / date_part('epoch', t.half_life)))) AS float8),
       date_part('epoch', max(e.occurred_at)),
       bool_or(t.is_purchase)
  FROM personalize.events e
  JOIN personalize.event_types t ON t.event_type = e.event_type
 WHERE e.item_id IS NOT NULL AND (t.weight <> 0 OR t.is_purchase)
   AND ($3 OR e.occurred_at <= $1)
   AND ($2::interval IS NULL OR e.occurred_at > $1 - $2::interval)
 GROUP BY e.user_id, e.item_id";

/// The default `as_of`: the newest event that could be trained on, but never later than the
/// transaction's start. Events are accepted up to `max_future_seconds` ahead (clock skew), and
/// one of them must not move the model's clock: a model "as of" tomorrow would treat every
/// event tracked until then as already known (no fold-in, no exclusion of new purchases).
/// Future events still count, decayed as if they happened now.
pub fn newest_event() -> Option<TimestampWithTimeZone> {
    Spi::get_one::<TimestampWithTimeZone>(
        "SELECT least(max(occurred_at), pg_catalog.now()) FROM personalize.events \
         WHERE item_id IS NOT NULL",
    )
    .unwrap_or(None)
}

/// Reads every interaction, refusing (54000) as soon as what is read already exceeds
/// `limit_bytes` for a model of `factors` factors.
pub fn read(
    as_of: TimestampWithTimeZone,
    include_future: bool,
    window: Option<Interval>,
    limit_bytes: usize,
    factors: usize,
) -> Interactions {
    let mut users: HashMap<String, u32> = HashMap::new();
    let mut items: HashMap<String, u32> = HashMap::new();
    let mut out = Interactions {
        user_ids: Vec::new(),
        item_ids: Vec::new(),
        pairs: Vec::new(),
        purchases: Vec::new(),
    };
    // Purchased pairs without positive strength, by id: their user and item may only get an
    // index from a later row (or never: a user with no positive pair is not in the model).
    let mut unscored_purchases: Vec<(String, String)> = Vec::new();
    Spi::connect(|client| {
        let args: [DatumWithOid; 3] = [
            as_of.into(),
            match window {
                Some(w) => w.into(),
                None => DatumWithOid::null::<Interval>(),
            },
            include_future.into(),
        ];
        // A cursor is planned for its first rows (cursor_tuple_fraction = 0.1), which picks a
        // sort-based aggregate; every row is read here, so plan for all of them (hash
        // aggregate). The aggregate holds one entry per (user, item): it gets an eighth of the
        // training budget, counted once (hash_mem_multiplier 1, not PostgreSQL 15's 2), and
        // spills to disk beyond that, so the read stays within the budget next to the pairs
        // it hands over. All for this transaction only; the settings are put back after.
        let work_mem_kb = ((limit_bytes / 1024).max(8192) as i64 / 8).min(2 * 1024 * 1024 - 1);
        let restore: Vec<(&str, Option<String>)> = [
            ("cursor_tuple_fraction", "1".to_string()),
            ("work_mem", format!("{work_mem_kb}kB")),
            ("hash_mem_multiplier", "1".to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name, set_local(client, name, &value)))
        .collect();
        let mut cursor = client.open_cursor(READ_QUERY, &args);
        loop {
            pgrx::check_for_interrupts!();
            let table = cursor.fetch(50_000).unwrap_or_else(|e| {
                PersonalizeError::NotReady {
                    message: format!("reading events failed: {e}"),
                    hint: "Check that the role can read personalize.events.".into(),
                }
                .raise()
            });
            if table.is_empty() {
                break;
            }
            let estimate = memory_estimate(
                out.pairs.len() + table.len(),
                out.user_ids.len(),
                out.item_ids.len(),
                factors,
            );
            if estimate > limit_bytes {
                over_memory_budget(
                    out.pairs.len() + table.len(),
                    out.user_ids.len(),
                    out.item_ids.len(),
                    factors,
                    estimate,
                    limit_bytes,
                    true,
                );
            }
            // A failed reservation is an error, never an aborted backend.
            if out.pairs.try_reserve(table.len()).is_err() {
                PersonalizeError::OutOfMemory {
                    message: format!(
                        "could not allocate memory for {} interactions",
                        out.pairs.len() + table.len()
                    ),
                    hint: "Lower personalize.training_memory_mb or train on a shorter window."
                        .into(),
                }
                .raise();
            }
            for row in table {
                let strength = row.get::<f64>(3).ok().flatten().unwrap_or(0.0);
                let purchased = row.get::<bool>(5).ok().flatten().unwrap_or(false);
                let (Some(u), Some(i)) = (
                    row.get::<String>(1).ok().flatten(),
                    row.get::<String>(2).ok().flatten(),
                ) else {
                    continue;
                };
                if !(strength > 0.0 && strength.is_finite()) {
                    // Net-negative or zero interest: no positive signal to train on.
                    if purchased {
                        unscored_purchases.push((u, i));
                    }
                    continue;
                }
                let last = row.get::<f64>(4).ok().flatten().unwrap_or(0.0) as i64;
                let n_users = out.user_ids.len() as u32;
                let ui = *users.entry(u).or_insert_with_key(|k| {
                    out.user_ids.push(k.clone());
                    n_users
                });
                let n_items = out.item_ids.len() as u32;
                let ii = *items.entry(i).or_insert_with_key(|k| {
                    out.item_ids.push(k.clone());
                    n_items
                });
                out.pairs.push((ui, ii, strength as f32, last));
                if purchased {
                    out.purchases.push((ui, ii));
                }
            }
            // SPI keeps every fetched chunk until the connection ends: the whole aggregate
            // (about 120 bytes a pair, 1.3 GB for 10M pairs) next to the pairs built from it.
            // SAFETY: SPI_tuptable is this fetch's table (no SPI call since); its rows were
            // copied into Rust values above and the table wrapper is gone.
            unsafe {
                pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable);
                pg_sys::SPI_tuptable = std::ptr::null_mut();
            }
        }
        drop(cursor);
        for (name, previous) in restore {
            if let Some(previous) = previous {
                set_local(client, name, &previous);
            }
        }
    });
    for (u, i) in unscored_purchases {
        if let (Some(&ui), Some(&ii)) = (users.get(&u), items.get(&i)) {
            out.purchases.push((ui, ii));
        }
    }
    sort_ids(&mut out);
    out
}

/// Sets a setting for this transaction; returns its previous value, to put back.
fn set_local(client: &SpiClient<'_>, name: &str, value: &str) -> Option<String> {
    let args: [DatumWithOid; 1] = [name.into()];
    let previous = client
        .select("SELECT pg_catalog.current_setting($1)", None, &args)
        .and_then(|t| t.first().get::<String>(1))
        .unwrap_or(None);
    let args: [DatumWithOid; 2] = [name.into(), value.into()];
    let _ = client.select("SELECT pg_catalog.set_config($1, $2, true)", None, &args);
    previous
}

/// Renumbers users and items in the order of their ids, so indexes (and the tie-breaks that
/// use them: the hold-out split, top-k ties, item_index in model_items) do not depend on the
/// order the aggregate happened to return rows in.
fn sort_ids(data: &mut Interactions) {
    fn order(ids: &mut Vec<String>) -> Vec<u32> {
        let mut perm: Vec<u32> = (0..ids.len() as u32).collect();
        perm.sort_by(|&a, &b| ids[a as usize].cmp(&ids[b as usize]));
        let mut new_index = vec![0u32; ids.len()];
        for (new, &old) in perm.iter().enumerate() {
            new_index[old as usize] = new as u32;
        }
        let sorted: Vec<String> = perm
            .iter()
            .map(|&old| std::mem::take(&mut ids[old as usize]))
            .collect();
        *ids = sorted;
        new_index
    }
    let users = order(&mut data.user_ids);
    let items = order(&mut data.item_ids);
    for p in &mut data.pairs {
        p.0 = users[p.0 as usize];
        p.1 = items[p.1 as usize];
    }
    for p in &mut data.purchases {
        p.0 = users[p.0 as usize];
        p.1 = items[p.1 as usize];
    }
}

/// Pairs, two CSR orientations, the purchased pairs (at most one per pair, and their SQL copy
/// while writing), the validation split's training matrix and held-out sets (`auto`), factors
/// and their SQL copies while writing.
pub fn memory_estimate(pairs: usize, users: usize, items: usize, k: usize) -> usize {
    pairs * (24 + 16 + 12 + 16) + (users + items) * (k * 4 * 2 + 64)
}

#[allow(clippy::too_many_arguments)]
pub fn over_memory_budget(
    pairs: usize,
    users: usize,
    items: usize,
    k: usize,
    estimate: usize,
    limit: usize,
    partial: bool,
) -> ! {
    PersonalizeError::LimitExceeded {
        message: format!(
            "training on {}{pairs} interactions of {users} users and {items} items with {k} \
             factors needs {}{} MB, over the training memory budget ({} MB)",
            if partial { "at least " } else { "" },
            if partial { "more than " } else { "about " },
            estimate / (1024 * 1024),
            limit / (1024 * 1024)
        ),
        hint: "Train on a shorter window or with fewer factors, or raise \
               personalize.training_memory_mb (0, the default, means maintenance_work_mem)."
            .into(),
    }
    .raise()
}
