//! Experiments, read once per backend and kept until `personalize.experiments` changes, so
//! `assign_variant()` costs a hash and a lookup, not a query, on every page view.
//!
//! Dropped when the table changes, as the tracking plan is (see `watched_table`).

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgOid;

use crate::core::experiments::{parse_variants, Variant};
use crate::error::{spi_failed, PersonalizeError};
use crate::pg::watched_table::WatchedTable;
use crate::pg::POSTGRES_EPOCH_UNIX_MICROS;

pub struct Experiment {
    pub name: String,
    pub salt: String,
    pub variants: Vec<Variant>,
    /// Unix microseconds.
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    /// Of the report's confidence intervals.
    pub confidence_level: f64,
}

impl Experiment {
    /// Whether the experiment runs at this transaction's start time.
    pub fn running(&self) -> bool {
        let now =
            unsafe { pg_sys::GetCurrentTransactionStartTimestamp() } + POSTGRES_EPOCH_UNIX_MICROS;
        now >= self.starts_at && self.ends_at.is_none_or(|end| now < end)
    }

    pub fn control(&self) -> &Variant {
        &self.variants[0]
    }
}

static EXPERIMENTS_TABLE: WatchedTable = WatchedTable::new("personalize.experiments");

/// Every experiment by name.
type Experiments = HashMap<String, Rc<Experiment>>;

thread_local! {
    /// The experiments and the generation of personalize.experiments they were read at.
    static EXPERIMENTS: RefCell<Option<(u64, Rc<Experiments>)>> = const { RefCell::new(None) };
    static INSERT_EXPOSURE: OnceCell<OwnedPreparedStatement> = const { OnceCell::new() };
}

pub fn register_invalidation_callback() {
    EXPERIMENTS_TABLE.register();
}

/// Sends the invalidation that makes every backend re-read the experiments.
pub fn invalidate() {
    EXPERIMENTS_TABLE.invalidate();
}

fn all() -> Rc<Experiments> {
    let generation = EXPERIMENTS_TABLE.generation();
    if let Some((at, map)) = EXPERIMENTS.with(|e| e.borrow().clone()) {
        if at == generation {
            return map;
        }
    }
    let map = Rc::new(load());
    EXPERIMENTS.with(|e| *e.borrow_mut() = Some((generation, Rc::clone(&map))));
    map
}

fn load() -> Experiments {
    Spi::connect(|client| {
        EXPERIMENTS_TABLE.note_relid(client);
        let rows = client
            .select(
                "SELECT name, salt, CAST(variants AS text), \
                        CAST(date_part('epoch', starts_at) * 1000000 AS int8), \
                        CAST(date_part('epoch', ends_at) * 1000000 AS int8), confidence_level \
                   FROM personalize.experiments",
                None,
                &[],
            )
            .unwrap_or_else(|e| spi_failed("cannot read personalize.experiments", e));
        let mut map = HashMap::with_capacity(rows.len());
        for row in rows {
            let name: String = row.get(1).ok().flatten().unwrap_or_default();
            let salt: String = row.get(2).ok().flatten().unwrap_or_default();
            let variants_text: String = row.get(3).ok().flatten().unwrap_or_default();
            let variants = parse_variants(&variants_text).unwrap_or_else(|problem| {
                PersonalizeError::NotReady {
                    message: format!("experiment \"{name}\" cannot be used: variants {problem}"),
                    hint: "Fix its variants in personalize.experiments.".into(),
                }
                .raise()
            });
            let experiment = Experiment {
                name: name.clone(),
                salt,
                variants,
                starts_at: row.get(4).ok().flatten().unwrap_or(i64::MIN),
                ends_at: row.get(5).ok().flatten(),
                confidence_level: row.get(6).ok().flatten().unwrap_or(0.95),
            };
            map.insert(name, Rc::new(experiment));
        }
        map
    })
}

/// The named experiment, or 42704 naming the ones that exist.
pub fn experiment(name: &str) -> Rc<Experiment> {
    let map = all();
    if let Some(e) = map.get(name) {
        return Rc::clone(e);
    }
    let mut known: Vec<&str> = map.keys().map(String::as_str).collect();
    known.sort_unstable();
    PersonalizeError::Undefined {
        message: format!(
            "there is no experiment named \"{}\"",
            crate::error::shown(name)
        ),
        hint: if known.is_empty() {
            "Create one: INSERT INTO personalize.experiments (name, variants) VALUES (...).".into()
        } else {
            format!("Known experiments: {}.", known.join(", "))
        },
    }
    .raise()
}

/// Appends one exposure (a prepared statement kept for the backend's life).
pub fn insert_exposure(experiment: &str, user_id: &str, variant: &str, placement: Option<&str>) {
    Spi::connect_mut(|client| {
        INSERT_EXPOSURE.with(|cell| {
            let statement = cell.get_or_init(|| {
                let text = PgOid::from(pg_sys::TEXTOID);
                client
                    .prepare_mut(
                        "INSERT INTO personalize.exposures (experiment, user_id, variant, placement) \
                         VALUES ($1, $2, $3, $4)",
                        &[text, text, text, text],
                    )
                    .unwrap_or_else(|e| spi_failed("preparing the exposure insert", e))
                    .keep()
            });
            let args: [DatumWithOid; 4] = [
                experiment.into(),
                user_id.into(),
                variant.into(),
                placement.into(),
            ];
            client
                .update(statement, None, &args)
                .unwrap_or_else(|e| spi_failed("cannot write personalize.exposures", e));
        })
    })
}
