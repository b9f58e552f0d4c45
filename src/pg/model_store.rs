//! Writing a trained model: the model row, its factors in chunks, then the flip that makes it
//! the active model of its name — all in the caller's transaction, so a failed or cancelled
//! training leaves the previous model active and no rows behind.

use ndarray::Array2;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgMemoryContexts;

use crate::error::PersonalizeError;

const CHUNK_ROWS: usize = 5_000;

fn failed(what: &str, e: impl std::fmt::Display) -> ! {
    PersonalizeError::NotReady {
        message: format!("{what} failed: {e}"),
        hint: "Check that the extension's model tables exist and the role may write them.".into(),
    }
    .raise()
}

pub struct ModelRow<'a> {
    pub name: &'a str,
    pub params: serde_json::Value,
    pub as_of: TimestampWithTimeZone,
    pub n_users: i32,
    pub n_items: i32,
    pub n_interactions: i64,
    pub losses: Vec<f64>,
    pub seconds: Vec<f64>,
    pub read_seconds: f64,
    pub train_seconds: f64,
}

pub fn insert_model(client: &mut SpiClient<'_>, m: ModelRow<'_>) -> i64 {
    let args: [DatumWithOid; 10] = [
        m.name.into(),
        pgrx::JsonB(m.params).into(),
        m.as_of.into(),
        m.n_users.into(),
        m.n_items.into(),
        m.n_interactions.into(),
        m.losses.into(),
        m.seconds.into(),
        m.read_seconds.into(),
        m.train_seconds.into(),
    ];
    client
        .update(
            "INSERT INTO personalize.models (name, status, params, as_of, n_users, n_items, \
               n_interactions, loss_per_iteration, seconds_per_iteration, read_seconds, train_seconds) \
             VALUES ($1, 'inactive', $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING model_id",
            None,
            &args,
        )
        .and_then(|t| t.first().get::<i64>(1))
        .unwrap_or_else(|e| failed("writing the model row", e))
        .unwrap_or_else(|| failed("writing the model row", "no id returned"))
}

/// Whether personalize.model_users has the `purchased` column (0.4.0). The library of a newer
/// package runs against the older schema until ALTER EXTENSION pg_personalize UPDATE, and
/// must keep training and serving there (without stored purchases) in the meantime.
pub fn stores_purchases(client: &SpiClient<'_>) -> bool {
    client
        .select(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute \
                             WHERE attrelid = 'personalize.model_users'::pg_catalog.regclass \
                               AND attname = 'purchased' AND NOT attisdropped)",
            None,
            &[],
        )
        .and_then(|t| t.first().get::<bool>(1))
        .unwrap_or_else(|e| failed("reading the model tables' columns", e))
        .unwrap_or(false)
}

/// What a user row holds besides its factors: per user, the model item indexes of their
/// purchases (`offsets` has one entry per user and one more, `items` is sorted within each user).
pub struct PurchaseLists {
    pub offsets: Vec<usize>,
    pub items: Vec<i32>,
}

impl PurchaseLists {
    /// Groups (user index, item index) pairs by user.
    pub fn from_pairs(n_users: usize, pairs: &[(u32, u32)]) -> Self {
        let mut sorted: Vec<(u32, u32)> = pairs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut offsets = vec![0usize; n_users + 1];
        for &(u, _) in &sorted {
            offsets[u as usize + 1] += 1;
        }
        for u in 0..n_users {
            offsets[u + 1] += offsets[u];
        }
        PurchaseLists {
            offsets,
            items: sorted.iter().map(|&(_, i)| i as i32).collect(),
        }
    }
}

/// Which factor table a matrix goes to, with what its rows hold besides the factors.
#[derive(Clone, Copy)]
pub enum FactorRows<'a> {
    /// personalize.model_users, with each user's purchased items (None: stored as NULL).
    Users(Option<&'a PurchaseLists>),
    /// personalize.model_items, with each item's number of users in the training data.
    Items { popularity: &'a [f32] },
}

/// Writes one factor matrix in chunks; checks for cancel between chunks.
pub fn insert_factors(
    client: &mut SpiClient<'_>,
    model_id: i64,
    ids: &[String],
    factors: &Array2<f32>,
    rows: FactorRows<'_>,
) {
    let k = factors.ncols();
    let flat = factors.as_slice().expect("contiguous factors");
    // Purchases are written only where the column exists (a 0.3.0 schema not yet updated has
    // none); otherwise the rows keep the column's NULL.
    let rows = match rows {
        FactorRows::Users(Some(_)) if !stores_purchases(client) => FactorRows::Users(None),
        rows => rows,
    };
    // Slicing a fixed-width array parameter is O(k) per row; ids come through unnest. A user's
    // purchases are the slice $6[$5[g] + 1 : $5[g + 1]] of the chunk's flat list.
    let query = match rows {
        FactorRows::Users(None) => {
            "INSERT INTO personalize.model_users (model_id, user_id, factors) \
             SELECT $1, x.id, $3[(x.g - 1) * $4 + 1 : x.g * $4] \
               FROM unnest($2::text[]) WITH ORDINALITY AS o(id, n), \
                    LATERAL (SELECT o.id, CAST(o.n AS int4) AS g) AS x"
        }
        FactorRows::Users(Some(_)) => {
            "INSERT INTO personalize.model_users (model_id, user_id, factors, purchased) \
             SELECT $1, x.id, $3[(x.g - 1) * $4 + 1 : x.g * $4], $6[$5[x.g] + 1 : $5[x.g + 1]] \
               FROM unnest($2::text[]) WITH ORDINALITY AS o(id, n), \
                    LATERAL (SELECT o.id, CAST(o.n AS int4) AS g) AS x"
        }
        FactorRows::Items { .. } => {
            "INSERT INTO personalize.model_items (model_id, item_index, item_id, factors, popularity) \
             SELECT $1, $5 + x.g - 1, x.id, $3[(x.g - 1) * $4 + 1 : x.g * $4], $6[x.g] \
               FROM unnest($2::text[]) WITH ORDINALITY AS o(id, n), \
                    LATERAL (SELECT o.id, CAST(o.n AS int4) AS g) AS x"
        }
    };
    // The arguments become Postgres arrays in the current memory context, which lives until the
    // SPI connection ends: a context of their own, reset after every chunk, keeps the write of
    // a million users' factors from holding all of them twice.
    let mut chunk_memory = PgMemoryContexts::new("pg_personalize factor chunk");
    for (c, chunk) in ids.chunks(CHUNK_ROWS).enumerate() {
        pgrx::check_for_interrupts!();
        let start = c * CHUNK_ROWS;
        let end = start + chunk.len();
        let write = |client: &mut SpiClient<'_>| {
            let values: Vec<f32> = flat[start * k..end * k].to_vec();
            let mut args: Vec<DatumWithOid> = vec![
                model_id.into(),
                chunk.to_vec().into(),
                values.into(),
                (k as i32).into(),
            ];
            match rows {
                FactorRows::Users(None) => {}
                FactorRows::Users(Some(p)) => {
                    let base = p.offsets[start];
                    let offsets: Vec<i32> = p.offsets[start..=end]
                        .iter()
                        .map(|&o| (o - base) as i32)
                        .collect();
                    args.push(offsets.into());
                    args.push(p.items[base..p.offsets[end]].to_vec().into());
                }
                FactorRows::Items { popularity } => {
                    args.push((start as i32).into());
                    args.push(popularity[start..end].to_vec().into());
                }
            }
            client
                .update(query, None, &args)
                .unwrap_or_else(|e| failed("writing factors", e));
        };
        // SAFETY: nothing allocated in `chunk_memory` outlives the chunk: it holds only the
        // arguments of this chunk's INSERT, which has finished when the context is reset.
        unsafe {
            chunk_memory.switch_to(|_| write(client));
            chunk_memory.reset();
        }
    }
}

/// Writes an item-item model's rows: per item its neighbours (`neighbors`, model item
/// indexes) with their weights (`factors`), and its popularity. Checks for cancel between
/// chunks, as `insert_factors` does.
pub fn insert_neighbors(
    client: &mut SpiClient<'_>,
    model_id: i64,
    ids: &[String],
    b: &crate::core::item_item::ItemItem,
    popularity: &[f32],
) {
    const QUERY: &str = "\
        INSERT INTO personalize.model_items \
               (model_id, item_index, item_id, factors, popularity, neighbors) \
        SELECT $1, $5 + x.g - 1, x.id, $3[$6[x.g] + 1 : $6[x.g + 1]], $7[x.g], \
               $4[$6[x.g] + 1 : $6[x.g + 1]] \
          FROM unnest($2::text[]) WITH ORDINALITY AS o(id, n), \
               LATERAL (SELECT o.id, CAST(o.n AS int4) AS g) AS x";
    let mut chunk_memory = PgMemoryContexts::new("pg_personalize neighbour chunk");
    for (c, chunk) in ids.chunks(CHUNK_ROWS).enumerate() {
        pgrx::check_for_interrupts!();
        let start = c * CHUNK_ROWS;
        let end = start + chunk.len();
        let write = |client: &mut SpiClient<'_>| {
            let base = b.offsets[start];
            let offsets: Vec<i32> = b.offsets[start..=end]
                .iter()
                .map(|&o| (o - base) as i32)
                .collect();
            let span = base as usize..b.offsets[end] as usize;
            let items: Vec<i32> = b.items[span.clone()].iter().map(|&i| i as i32).collect();
            let args: Vec<DatumWithOid> = vec![
                model_id.into(),
                chunk.to_vec().into(),
                b.weights[span].to_vec().into(),
                items.into(),
                (start as i32).into(),
                offsets.into(),
                popularity[start..end].to_vec().into(),
            ];
            client
                .update(QUERY, None, &args)
                .unwrap_or_else(|e| failed("writing item neighbours", e));
        };
        // SAFETY: as in insert_factors: only this chunk's arguments live in the context.
        unsafe {
            chunk_memory.switch_to(|_| write(client));
            chunk_memory.reset();
        }
    }
}

/// Makes `model_id` the active model of `name` (and the previous one inactive). Serialised per
/// name with a transaction-scoped advisory lock, so two trainings of one name cannot both win.
pub fn activate(client: &mut SpiClient<'_>, model_id: i64, name: &str, write_seconds: f64) {
    let args: [DatumWithOid; 1] = [name.into()];
    client
        .update(
            "SELECT pg_advisory_xact_lock(hashtext('pg_personalize.model:' || $1))",
            None,
            &args,
        )
        .unwrap_or_else(|e| failed("locking the model name", e));
    client
        .update(
            "UPDATE personalize.models SET status = 'inactive' \
              WHERE name = $1 AND status = 'active'",
            None,
            &args,
        )
        .unwrap_or_else(|e| failed("deactivating the previous model", e));
    let args: [DatumWithOid; 2] = [model_id.into(), write_seconds.into()];
    client
        .update(
            "UPDATE personalize.models SET status = 'active', write_seconds = $2 \
              WHERE model_id = $1",
            None,
            &args,
        )
        .unwrap_or_else(|e| failed("activating the model", e));
}
