//! What serving needs, kept per backend so a call does no detoasting and no planning:
//!
//! - each model version's image (item factors or item-item weights, ids and their hash table,
//!   YᵀY + reg·I, popularity and its order), mapped from the file every backend of the server
//!   shares (`model_files`), keyed by model version (model_id + created_at, so a re-created
//!   extension's reused ids cannot hit a stale entry); a newly activated model is a new key,
//!   picked up by the next call;
//! - per model, the catalogue's unavailable items (flagged not available, or not listed at all
//!   once the shop has a catalogue) and the items of each category asked for, as bitsets over
//!   its items, dropped when `personalize.items` changes (see `watched_table`);
//! - the per-call queries, prepared once (SPI_keepplan).

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::ops::Deref;
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::PgOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};

use crate::core::item_item::ItemItem;
use crate::core::model_image::{ModelInfo, ModelParts};
use crate::core::serving::{self, ItemSet};
use crate::error::{spi_failed, PersonalizeError};
use crate::pg::model_files::{self, SharedImage};
use crate::pg::model_store;
use crate::pg::watched_table::WatchedTable;

/// Model versions kept per backend: the active one, the one it replaced (calls in flight while
/// a training commits) and an A/B test's alternatives.
const MAX_MODELS: usize = 4;

/// The catalogue's flags are reloaded when personalize.items changes.
static ITEMS: WatchedTable = WatchedTable::new("personalize.items");

/// One trained model as serving uses it: its shared image, and this backend's view of the
/// catalogue over its items.
pub struct ServingModel {
    name: String,
    image: SharedImage,
    filters: RefCell<Option<ItemFilters>>,
    /// The model's items missing from the catalogue, with the fingerprint of the catalogue's
    /// item ids they were computed for: kept across changes that only flip flags.
    unlisted: RefCell<Option<(String, Rc<ItemSet>)>>,
}

/// The catalogue's serving fields over one model's items, as of one catalogue generation: the
/// items not listed (once the catalogue has any row), those not listed or not available, and
/// the items of each category asked for so far. Sets of model item indexes, a bit per item
/// (12.5 kB per set at 100k items).
struct ItemFilters {
    generation: u64,
    unlisted: Rc<ItemSet>,
    unavailable: Rc<ItemSet>,
    categories: HashMap<String, Rc<ItemSet>>,
}

/// Category sets kept per model: enough for a shop's navigation, bounded for one that passes
/// arbitrary strings.
const MAX_CATEGORY_SETS: usize = 256;

impl Deref for ServingModel {
    type Target = SharedImage;

    fn deref(&self) -> &SharedImage {
        &self.image
    }
}

impl ServingModel {
    pub fn model_id(&self) -> i64 {
        self.image.info.model_id
    }

    /// What serving scores a user with, from these (item, strength) pairs: for ALS the user
    /// vector of the closed form with the model's alpha and regularization; for an item-item
    /// model the scores of every item (the history times the weights: exact, no
    /// approximation); nothing for a popularity model. `None` without usable history.
    pub fn fold_in(&self, strengths: &[(u32, f32)]) -> Option<Vec<f32>> {
        if strengths.is_empty() {
            return None;
        }
        if let Some(b) = self.item_item() {
            let mut scores = vec![0f32; self.n_items()];
            b.accumulate(strengths, &mut scores);
            return scores.iter().any(|&x| x != 0.0).then_some(scores);
        }
        if !self.has_factors() {
            return None;
        }
        let (cols, conf) = serving::confidences(strengths, self.info.alpha);
        crate::core::als::fold_in(
            &cols,
            &conf,
            self.factors(),
            self.yty(),
            self.info.k,
            self.extra_regularization(cols.len()),
        )
    }

    /// What a user with `n` items adds to the diagonal of YᵀY + reg·I: their λ − reg under
    /// frequency scaling (0 without it).
    pub fn extra_regularization(&self, n: usize) -> f32 {
        let info = &self.image.info;
        crate::core::als::row_regularization(
            info.regularization,
            info.reg_exponent,
            n,
            info.mean_user_items,
        ) - info.regularization
    }

    /// This backend's filters, as of the current catalogue generation (re-read when
    /// `personalize.items` changed).
    fn current_filters<R>(&self, f: impl FnOnce(&mut ItemFilters) -> R) -> R {
        let generation = ITEMS.generation();
        let mut slot = self.filters.borrow_mut();
        if slot.as_ref().is_none_or(|x| x.generation != generation) {
            let (unlisted, flagged) = self.read_catalogue();
            let mut unavailable = flagged;
            unavailable.union_with(&unlisted);
            *slot = Some(ItemFilters {
                generation,
                unlisted,
                unavailable: Rc::new(unavailable),
                categories: HashMap::new(),
            });
        }
        f(slot.as_mut().expect("just set"))
    }

    /// The model's items missing from the catalogue (none while the catalogue is empty) and
    /// those it flags not available. One scan of the catalogue answers the flags, whether it
    /// is empty and a fingerprint of its item ids; the ids themselves are read only when the
    /// fingerprint changed (rows added or deleted), not on a stock update.
    fn read_catalogue(&self) -> (Rc<ItemSet>, ItemSet) {
        let n = self.n_items();
        let (listed, fingerprint, flagged_ids) = Spi::connect(|client| {
            ITEMS.note_relid(client);
            let table = client
                .select(
                    "SELECT pg_catalog.count(*), \
                            coalesce(pg_catalog.sum(pg_catalog.hashtextextended(item_id, 0)), 0)::pg_catalog.text, \
                            coalesce(pg_catalog.array_agg(item_id) FILTER (WHERE NOT available), '{}') \
                       FROM personalize.items",
                    None,
                    &[],
                )
                .unwrap_or_else(|e| spi_failed("cannot read personalize.items", e));
            let row = table.first();
            (
                row.get::<i64>(1).ok().flatten().unwrap_or(0),
                row.get::<String>(2).ok().flatten().unwrap_or_default(),
                row.get::<Vec<String>>(3).ok().flatten().unwrap_or_default(),
            )
        });
        let mut flagged = ItemSet::new(n);
        for i in flagged_ids.iter().filter_map(|id| self.item_index(id)) {
            flagged.insert(i);
        }
        if listed == 0 {
            // A shop without a catalogue: every item counts as available.
            *self.unlisted.borrow_mut() = None;
            return (Rc::new(ItemSet::new(n)), flagged);
        }
        let fingerprint = format!("{listed}:{fingerprint}");
        if let Some((seen, set)) = self.unlisted.borrow().as_ref() {
            if *seen == fingerprint {
                return (Rc::clone(set), flagged);
            }
        }
        let unlisted = Rc::new(
            self.items_where("SELECT item_id FROM personalize.items", None)
                .complement(n),
        );
        *self.unlisted.borrow_mut() = Some((fingerprint, Rc::clone(&unlisted)));
        (unlisted, flagged)
    }

    /// The model's items the catalogue flags not available or does not list (once it lists
    /// any item).
    pub fn unavailable(&self) -> Rc<ItemSet> {
        self.current_filters(|f| Rc::clone(&f.unavailable))
    }

    /// The model's items the catalogue does not list, once it lists any: deleted products,
    /// never served.
    pub fn unlisted(&self) -> Rc<ItemSet> {
        self.current_filters(|f| Rc::clone(&f.unlisted))
    }

    /// The model's items of a catalogue category.
    pub fn in_category(&self, category: &str) -> Rc<ItemSet> {
        self.current_filters(|f| {
            if let Some(set) = f.categories.get(category) {
                return Rc::clone(set);
            }
            let set = Rc::new(self.items_where(
                "SELECT item_id FROM personalize.items WHERE category = $1",
                Some(category),
            ));
            if f.categories.len() >= MAX_CATEGORY_SETS {
                f.categories.clear();
            }
            f.categories.insert(category.to_owned(), Rc::clone(&set));
            set
        })
    }

    /// The model items among the item ids a catalogue query returns.
    fn items_where(&self, sql: &str, arg: Option<&str>) -> ItemSet {
        let mut set = ItemSet::new(self.n_items());
        Spi::connect(|client| {
            ITEMS.note_relid(client);
            let args: Vec<DatumWithOid> = arg.into_iter().map(DatumWithOid::from).collect();
            let mut cursor = client.open_cursor(sql, &args);
            loop {
                pgrx::check_for_interrupts!();
                let rows = cursor
                    .fetch(1_000)
                    .unwrap_or_else(|e| spi_failed("cannot read personalize.items", e));
                if rows.is_empty() {
                    break;
                }
                for row in rows {
                    if let Some(i) = row
                        .get::<&str>(1)
                        .ok()
                        .flatten()
                        .and_then(|id| self.item_index(id))
                    {
                        set.insert(i);
                    }
                }
            }
        });
        set
    }
}

pub struct Catalog {
    generation: u64,
    /// Per item id its category's number (None: no category).
    items: HashMap<String, Option<u32>>,
    /// The categories by number.
    category_names: Vec<String>,
}

impl Catalog {
    /// An item's category in the catalogue (None when it has none or is not listed).
    pub fn category_of(&self, item_id: &str) -> Option<&str> {
        let cat = (*self.items.get(item_id)?)?;
        self.category_names.get(cat as usize).map(String::as_str)
    }
}

/// The prepared per-call queries.
struct Statements {
    active_model: OwnedPreparedStatement,
    user_row: OwnedPreparedStatement,
    history: OwnedPreparedStatement,
    all_items: OwnedPreparedStatement,
}

thread_local! {
    static MODELS: RefCell<Vec<Rc<ServingModel>>> = const { RefCell::new(Vec::new()) };
    static CATALOG: RefCell<Option<Rc<Catalog>>> = const { RefCell::new(None) };
    static STATEMENTS: OnceCell<Statements> = const { OnceCell::new() };
}

pub fn register_invalidation_callback() {
    ITEMS.register();
}

/// Sends the invalidation that makes every backend re-read the catalogue flags.
pub fn invalidate_catalog() {
    ITEMS.invalidate();
}

/// The catalogue's item categories, read once per backend and kept until `personalize.items`
/// changes: where the campaign trigger reads item categories (serving reads the catalogue
/// straight into per-model bitsets, `ServingModel::unavailable` and `in_category`).
pub fn catalog() -> Rc<Catalog> {
    let generation = ITEMS.generation();
    if let Some(c) = CATALOG.with(|c| c.borrow().clone()) {
        if c.generation == generation {
            return c;
        }
    }
    let catalog = Spi::connect(|client| {
        ITEMS.note_relid(client);
        let rows = client
            .select("SELECT item_id, category FROM personalize.items", None, &[])
            .unwrap_or_else(|e| spi_failed("cannot read personalize.items", e));
        let mut items = HashMap::with_capacity(rows.len());
        let mut numbers: HashMap<String, u32> = HashMap::new();
        let mut category_names: Vec<String> = Vec::new();
        for row in rows {
            let Some(id) = row.get::<String>(1).ok().flatten() else {
                continue;
            };
            let cat = row.get::<String>(2).ok().flatten().map(|c| {
                *numbers.entry(c).or_insert_with_key(|c| {
                    category_names.push(c.clone());
                    category_names.len() as u32 - 1
                })
            });
            items.insert(id, cat);
        }
        Catalog {
            generation,
            items,
            category_names,
        }
    });
    let catalog = Rc::new(catalog);
    CATALOG.with(|c| *c.borrow_mut() = Some(Rc::clone(&catalog)));
    catalog
}

fn with_statements<R>(f: impl FnOnce(&SpiClient<'_>, &Statements) -> R) -> R {
    Spi::connect(|client| {
        STATEMENTS.with(|cell| {
            let st = cell.get_or_init(|| prepare(client));
            f(client, st)
        })
    })
}

fn prepare(client: &SpiClient<'_>) -> Statements {
    let text = PgOid::from(pg_sys::TEXTOID);
    let int8 = PgOid::from(pg_sys::INT8OID);
    let int4 = PgOid::from(pg_sys::INT4OID);
    let keep = |sql: &str, args: &[PgOid]| {
        client
            .prepare(sql, args)
            .unwrap_or_else(|e| spi_failed("preparing a serving query", e))
            .keep()
    };
    Statements {
        active_model: keep(
            &format!(
                "SELECT model_id, {} FROM personalize.models \
                  WHERE name = $1 AND status = 'active'",
                model_files::VERSION_STAMP
            ),
            &[text],
        ),
        // Always one row: the user's stored factors and purchases (NULL when the model does not
        // know the user) and the time of their newest event with an item (NULL: none), which
        // tells serving whether anything happened since the model's as_of (one index probe).
        user_row: keep(
            &format!(
                "SELECT mu.factors, {}, \
                    (SELECT date_part('epoch', max(e.occurred_at)) FROM personalize.events e \
                      WHERE e.user_id = $2 AND e.item_id IS NOT NULL) \
               FROM (SELECT) AS one \
               LEFT JOIN personalize.model_users mu ON mu.model_id = $1 AND mu.user_id = $2",
                if model_store::stores_purchases(client) {
                    "mu.purchased"
                } else {
                    // A 0.3.0 schema not yet updated: exclusions are read from the events.
                    "CAST(NULL AS int4[])"
                }
            ),
            &[int8, text],
        ),
        // Newest first, so a capped history keeps the recent events. date_part, not extract:
        // it is float8 already (extract's numeric costs a text round trip per row).
        history: keep(
            "SELECT e.item_id, date_part('epoch', e.occurred_at), t.weight, \
                    date_part('epoch', t.half_life), t.is_purchase \
               FROM personalize.events e \
               JOIN personalize.event_types t ON t.event_type = e.event_type \
              WHERE e.user_id = $1 AND e.item_id IS NOT NULL \
              ORDER BY e.occurred_at DESC \
              LIMIT $2",
            &[text, int4],
        ),
        // Every item of a user's (purchase) events: exclusions for users whose history is
        // longer than the capped read above.
        all_items: keep(
            "SELECT DISTINCT e.item_id \
               FROM personalize.events e \
               JOIN personalize.event_types t ON t.event_type = e.event_type \
              WHERE e.user_id = $1 AND e.item_id IS NOT NULL AND (t.is_purchase OR NOT $2)",
            &[text, PgOid::from(pg_sys::BOOLOID)],
        ),
    }
}

/// The active model of `name`, loaded into this backend if it is not already.
pub fn active_model(name: &str) -> Rc<ServingModel> {
    find_active_model(name).unwrap_or_else(|| {
        PersonalizeError::NotReady {
            message: format!(
                "there is no active model named \"{}\"",
                crate::error::shown(name)
            ),
            hint: format!(
                "Train one with SELECT * FROM personalize.train(model_name => '{name}'), \
                 or list models in personalize.models."
            ),
        }
        .raise()
    })
}

/// The active model of a name, None when there is none.
pub fn find_active_model(name: &str) -> Option<Rc<ServingModel>> {
    let found: Option<(i64, i64)> = with_statements(|client, st| {
        let args: [DatumWithOid; 1] = [name.into()];
        let table = client
            .select(&st.active_model, None, &args)
            .unwrap_or_else(|e| spi_failed("cannot read personalize.models", e));
        if table.is_empty() {
            return None;
        }
        let row = table.first();
        Some((
            row.get::<i64>(1).ok().flatten().unwrap_or(0),
            row.get::<i64>(2).ok().flatten().unwrap_or(0),
        ))
    });
    let (model_id, stamp) = found?;
    let cached = MODELS.with(|m| {
        let mut models = m.borrow_mut();
        let pos = models
            .iter()
            .position(|x| x.info.model_id == model_id && x.info.stamp == stamp)?;
        // Most recently used last.
        let model = models.remove(pos);
        models.push(Rc::clone(&model));
        Some(model)
    });
    if cached.is_some() {
        return cached;
    }
    let model = Rc::new(ServingModel {
        name: name.to_owned(),
        image: model_files::open_or_build(model_id, stamp, || read_model(model_id, stamp)),
        filters: RefCell::new(None),
        unlisted: RefCell::new(None),
    });
    MODELS.with(|m| {
        let mut models = m.borrow_mut();
        // A name's older versions go (calls in flight keep theirs), so an idle backend does
        // not keep a replaced version's file alive.
        models.retain(|x| x.name != name);
        if models.len() >= MAX_MODELS {
            models.remove(0);
        }
        models.push(Rc::clone(&model));
    });
    Some(model)
}

/// A model version as its tables hold it.
fn read_model(model_id: i64, stamp: i64) -> ModelParts {
    Spi::connect(|client| {
        let args: [DatumWithOid; 1] = [model_id.into()];
        let meta = client
            .select(
                "SELECT CAST(params AS text), CAST(extract(epoch FROM as_of) AS float8) \
                   FROM personalize.models WHERE model_id = $1",
                None,
                &args,
            )
            .unwrap_or_else(|e| spi_failed("cannot read the model", e));
        let row = meta.first();
        let params: serde_json::Value = row
            .get::<String>(1)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        let as_of = row.get::<f64>(2).ok().flatten().unwrap_or(0.0);
        let number =
            |key: &str, default: f64| params.get(key).and_then(|v| v.as_f64()).unwrap_or(default);
        let alpha = number("alpha", 1.0) as f32;
        let regularization = number("regularization", 0.01) as f32;
        let reg_exponent = number("frequency_scaling", 0.0) as f32;
        let mean_user_items = number("mean_user_items", 0.0);
        let window_seconds = params
            .get("window_seconds")
            .and_then(|v| v.as_f64())
            .filter(|w| *w > 0.0);

        // ALS (also every model before 0.7.0), item-item (EASE, RP3beta, their blend),
        // popularity or trending.
        let model_type = params
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("als")
            .to_owned();
        let with_factors = model_type == "als";
        let mut item_ids: Vec<String> = Vec::new();
        let mut factors: Vec<f32> = Vec::new();
        let mut popularity: Vec<f32> = Vec::new();
        let mut neighbors =
            matches!(model_type.as_str(), "ease" | "rp3beta" | "blend").then(|| ItemItem {
                n_items: 0,
                offsets: vec![0],
                items: Vec::new(),
                weights: Vec::new(),
            });
        let mut k = 0usize;
        let mut cursor = client.open_cursor(
            if neighbors.is_some() {
                "SELECT item_id, factors, popularity, neighbors FROM personalize.model_items \
                  WHERE model_id = $1 ORDER BY item_index"
            } else {
                "SELECT item_id, factors, popularity FROM personalize.model_items \
                  WHERE model_id = $1 ORDER BY item_index"
            },
            &args,
        );
        loop {
            pgrx::check_for_interrupts!();
            let table = cursor
                .fetch(10_000)
                .unwrap_or_else(|e| spi_failed("cannot read the model's items", e));
            if table.is_empty() {
                break;
            }
            for row in table {
                let id: String = row.get(1).ok().flatten().unwrap_or_default();
                let f: Vec<f32> = row.get(2).ok().flatten().unwrap_or_default();
                if let Some(b) = &mut neighbors {
                    // Item-item: `factors` holds the weights of the item's neighbours.
                    let to: Vec<i32> = row.get(4).ok().flatten().unwrap_or_default();
                    b.items.extend(to.iter().map(|&j| j.max(0) as u32));
                    b.weights.extend_from_slice(&f[..f.len().min(to.len())]);
                    b.weights.resize(b.items.len(), 0.0);
                    b.offsets.push(b.items.len() as u64);
                    item_ids.push(id);
                    popularity.push(row.get::<f32>(3).ok().flatten().unwrap_or(0.0));
                    continue;
                }
                if !with_factors {
                    item_ids.push(id);
                    popularity.push(row.get::<f32>(3).ok().flatten().unwrap_or(0.0));
                    continue;
                }
                if item_ids.is_empty() {
                    k = f.len();
                }
                if f.len() != k || k == 0 {
                    PersonalizeError::NotReady {
                        message: format!(
                            "model {model_id} is inconsistent: item \"{id}\" has {} factors, \
                             the model {k}",
                            f.len()
                        ),
                        hint: "Retrain the model; every row of personalize.model_items of a \
                               model must have the same number of factors."
                            .into(),
                    }
                    .raise();
                }
                item_ids.push(id);
                factors.extend_from_slice(&f);
                popularity.push(row.get::<f32>(3).ok().flatten().unwrap_or(0.0));
            }
        }
        drop(cursor);
        if let Some(b) = &mut neighbors {
            // A neighbour index out of range (a hand-edited row) is dropped when the image is
            // written (`model_image::write`).
            b.n_items = item_ids.len();
        }
        ModelParts {
            info: ModelInfo {
                model_id,
                stamp,
                k,
                alpha,
                regularization,
                reg_exponent,
                mean_user_items,
                window_seconds,
                as_of,
            },
            item_ids,
            factors,
            popularity,
            item_item: neighbors,
        }
    })
}

/// What the model stores about one user, and whether they did anything since.
pub struct UserRow {
    /// The user's factors (None: the user was not in the model's training data).
    pub factors: Option<Vec<f32>>,
    /// Model item indexes of the user's purchases up to the model's as_of (None: not in the
    /// model, or a model that stores none: trained with a window, or before 0.4.0).
    pub purchased: Option<Vec<i32>>,
    /// Unix seconds of the user's newest event with an item (None: no such event).
    pub newest_event: Option<f64>,
}

/// The user's row of `model` and the time of their newest event, in one query.
pub fn user_row(model: &ServingModel, user_id: &str) -> UserRow {
    with_statements(|client, st| {
        let args: [DatumWithOid; 2] = [model.model_id().into(), user_id.into()];
        let table = client
            .select(&st.user_row, None, &args)
            .unwrap_or_else(|e| spi_failed("cannot read personalize.model_users", e));
        let Some(row) = table.into_iter().next() else {
            return UserRow {
                factors: None,
                purchased: None,
                newest_event: None,
            };
        };
        UserRow {
            factors: row
                .get::<Vec<f32>>(1)
                .ok()
                .flatten()
                .filter(|f| f.len() == model.info.k),
            purchased: row.get::<Vec<i32>>(2).ok().flatten(),
            newest_event: row.get::<f64>(3).ok().flatten(),
        }
    })
}

/// One event of a user's history as read for serving.
pub struct RawEvent {
    pub item_id: String,
    pub at: f64,
    pub weight: f32,
    pub half_life_seconds: f64,
    pub is_purchase: bool,
}

/// Every item the user has an event on (only purchase events when `purchases_only`).
pub fn all_items(user_id: &str, purchases_only: bool) -> Vec<String> {
    with_statements(|client, st| {
        let args: [DatumWithOid; 2] = [user_id.into(), purchases_only.into()];
        let table = client
            .select(&st.all_items, None, &args)
            .unwrap_or_else(|e| spi_failed("cannot read the user's events", e));
        table
            .into_iter()
            .filter_map(|row| row.get::<String>(1).ok().flatten())
            .collect()
    })
}

/// A user's newest `limit` events that name an item.
pub fn history(user_id: &str, limit: i32) -> Vec<RawEvent> {
    with_statements(|client, st| {
        let args: [DatumWithOid; 2] = [user_id.into(), limit.into()];
        let table = client
            .select(&st.history, None, &args)
            .unwrap_or_else(|e| spi_failed("cannot read the user's events", e));
        let mut out = Vec::with_capacity(table.len());
        for row in table {
            let Some(item_id) = row.get::<String>(1).ok().flatten() else {
                continue;
            };
            out.push(RawEvent {
                item_id,
                at: row.get::<f64>(2).ok().flatten().unwrap_or(0.0),
                weight: row.get::<f32>(3).ok().flatten().unwrap_or(0.0),
                half_life_seconds: row.get::<f64>(4).ok().flatten().unwrap_or(1.0),
                is_purchase: row.get::<bool>(5).ok().flatten().unwrap_or(false),
            });
        }
        out
    })
}
