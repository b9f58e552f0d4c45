//! The serving engine: what serving knows about a user for a model (their vector or scores,
//! where it came from, what to leave out, the current session) and the top k under the
//! catalogue filters. `api::serving` parses the SQL calls and shapes their rows;
//! `claim_messages()` asks `top_items_for_user` for the recommendations in a message.
//!
//! Where a user's vector comes from (the `source` column):
//! - `model`: the user's factors from training, when nothing new happened since;
//! - `fold_in`: the user has events on model items after the model's as_of (or is not in the
//!   model at all): the ALS closed form over the user's decayed history against the fixed item
//!   factors (`implicit`'s recalculate_user), so this session's clicks count now;
//! - `session`: the current session's events, on top of the long-term answer;
//! - `popularity`: no usable history: the model's most popular items (filters still apply).

use std::collections::HashSet;

use crate::core::item_item;
use crate::core::serving::{self, HistoryEvent};
use crate::gucs;
use crate::pg::model_cache::{self, ServingModel};

/// Which of the user's items a call leaves out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Exclude {
    Purchased,
    Interacted,
    Nothing,
}

/// What serving knows about one user for one model.
pub struct UserState {
    pub vector: Option<Vec<f32>>,
    pub source: &'static str,
    /// The model items the call's `exclude` leaves out.
    pub excluded: HashSet<u32>,
    /// Decayed strengths over the user's history (model items only); empty unless asked for
    /// (and when the session alone speaks).
    pub strengths: Vec<(u32, f32)>,
    /// The current session's strengths and the scale its scores were added at.
    pub session: Option<(Vec<(u32, f32)>, f32)>,
}

/// The stored purchases of a user row as model item indexes.
fn stored_purchases(model: &ServingModel, purchased: &[i32]) -> HashSet<u32> {
    let n = model.n_items() as u32;
    purchased
        .iter()
        .map(|&i| i as u32)
        .filter(|&i| i < n)
        .collect()
}

/// The user's long-term answer from their decayed history (`decayed`, over `history`) and
/// their stored model row: an item-item model's scores (the history times the weights, fold-in
/// for events after the model's as_of unless `fold_in` is false), or an ALS vector (stored, or
/// folded in when there are newer events or no row). `None`: popularity.
fn long_term(
    model: &ServingModel,
    history: &[HistoryEvent],
    decayed: &[(u32, f32)],
    row_factors: Option<Vec<f32>>,
    fold_in: bool,
    has_new: bool,
) -> (Option<Vec<f32>>, &'static str) {
    let folded = || model.fold_in(decayed);
    if !model.has_factors() {
        let scores = if fold_in || !has_new {
            folded()
        } else {
            let known: Vec<HistoryEvent> = history
                .iter()
                .filter(|e| e.at <= model.info.as_of)
                .copied()
                .collect();
            model.fold_in(&serving::decayed_strengths(
                &known,
                model.info.as_of,
                model.info.window_seconds,
            ))
        };
        match scores {
            Some(v) if fold_in && has_new => (Some(v), "fold_in"),
            Some(v) => (Some(v), "model"),
            None => (None, "popularity"),
        }
    } else if fold_in && has_new {
        match folded() {
            Some(v) => (Some(v), "fold_in"),
            None => match row_factors {
                Some(v) => (Some(v), "model"),
                None => (None, "popularity"),
            },
        }
    } else if let Some(v) = row_factors {
        (Some(v), "model")
    } else if let Some(v) = fold_in.then(folded).flatten() {
        (Some(v), "fold_in")
    } else {
        (None, "popularity")
    }
}

/// The user's vector, where it came from and what `exclude` leaves out; with `strengths`, also
/// the decayed strengths of their history (explanations).
///
/// One query reads the user's model row (factors, purchases up to the model's as_of) and the
/// time of their newest event. When the model knows the user, nothing happened since its
/// as_of and the exclusions are stored (or none are asked for), that is the whole answer: a
/// wholesale customer with thousands of events costs what a newcomer does. Otherwise the
/// user's newest events are read (personalize.serving_history_events of them) for fold-in and
/// new purchases; only a user with more new events than that, or a model that stores no
/// purchases, needs a read of all their purchased items.
pub fn user_state(
    model: &ServingModel,
    user_id: &str,
    fold_in: bool,
    exclude: Exclude,
    strengths: bool,
) -> UserState {
    let row = model_cache::user_row(model, user_id);
    // Item-item and popularity models store no user vectors: they score from the history.
    let row_factors = if model.has_factors() {
        row.factors
    } else {
        None
    };
    let nothing_new = row.newest_event.is_some_and(|t| t <= model.info.as_of);
    // The user's current session: their events since `session_since` (now() minus
    // personalize.session_window), weighed in by personalize.session_weight when fresh events
    // are folded in.
    let session_window = gucs::SESSION_WINDOW.get();
    let session_weight = gucs::SESSION_WEIGHT.get();
    let session_since = crate::pg::transaction_start_unix_seconds() - session_window as f64;
    let in_session = fold_in
        && session_window > 0
        && session_weight > 0.0
        && (model.has_factors() || model.item_item().is_some())
        && row.newest_event.is_some_and(|t| t >= session_since);
    let stored = match exclude {
        Exclude::Nothing => Some(HashSet::new()),
        Exclude::Purchased => row.purchased.as_deref().map(|p| stored_purchases(model, p)),
        Exclude::Interacted => None,
    };
    if nothing_new && !strengths && !in_session && row_factors.is_some() {
        if let Some(excluded) = stored {
            return UserState {
                vector: row_factors,
                source: "model",
                excluded,
                strengths: Vec::new(),
                session: None,
            };
        }
    }

    // One more than the cap: tells whether the read was complete.
    let cap = gucs::SERVING_HISTORY_EVENTS.get();
    let mut events = model_cache::history(user_id, cap.saturating_add(1));
    let complete = events.len() <= cap as usize;
    events.truncate(cap as usize);
    // Newest first: the last event read is the oldest.
    let reaches_as_of = events.last().is_some_and(|e| e.at <= model.info.as_of);
    let mut history = Vec::with_capacity(events.len());
    let mut purchased = HashSet::new();
    let mut interacted = HashSet::new();
    let mut newest = f64::MIN;
    let mut has_new = false;
    for e in &events {
        let Some(i) = model.item_index(&e.item_id) else {
            continue;
        };
        interacted.insert(i);
        if e.is_purchase {
            purchased.insert(i);
        }
        if e.weight != 0.0 {
            newest = newest.max(e.at);
            has_new |= e.at > model.info.as_of;
            history.push(HistoryEvent {
                item: i,
                weight: e.weight,
                half_life_seconds: e.half_life_seconds,
                at: e.at,
            });
        }
    }
    // Decay back from the newest thing known: the model's as_of, or a newer event.
    let reference = model.info.as_of.max(newest);
    let session = in_session
        .then(|| serving::current_session(&history, session_since))
        .flatten()
        .and_then(|items| Some((model.fold_in(&items)?, items)));
    let (vector, source, decayed, session) = match session {
        None => {
            let decayed =
                serving::decayed_strengths(&history, reference, model.info.window_seconds);
            let (vector, source) =
                long_term(model, &history, &decayed, row_factors, fold_in, has_new);
            (vector, source, decayed, None)
        }
        // The current session on top of everything before it, each at the same scale.
        Some((now, items)) => {
            let before: Vec<HistoryEvent> = history
                .iter()
                .filter(|e| e.at < session_since)
                .copied()
                .collect();
            let decayed = serving::decayed_strengths(&before, reference, model.info.window_seconds);
            let size = |v: &[f32]| -> f64 {
                if model.has_factors() {
                    // A user vector: its length.
                    v.iter()
                        .map(|x| (*x as f64) * (*x as f64))
                        .sum::<f64>()
                        .sqrt()
                } else {
                    // Item-item scores: the best for an item the user has not touched (what
                    // they already have scores highest of all, and is usually left out).
                    v.iter()
                        .enumerate()
                        .filter(|(j, _)| !interacted.contains(&(*j as u32)))
                        .fold(0.0f64, |m, (_, &x)| m.max(x as f64))
                }
            };
            let long = model.fold_in(&decayed);
            let scale = long
                .as_deref()
                .and_then(|l| serving::session_scale(session_weight, size(l), size(&now)));
            match (long, scale) {
                (Some(mut long), Some(c)) => {
                    for (x, y) in long.iter_mut().zip(&now) {
                        *x += c * y;
                    }
                    (Some(long), "session", decayed, Some((items, c)))
                }
                // The session alone: weight 1, or nothing long-term to add it to.
                _ => (Some(now), "session", Vec::new(), Some((items, 1.0))),
            }
        }
    };
    let excluded = match exclude {
        Exclude::Nothing => HashSet::new(),
        Exclude::Purchased if complete => purchased,
        Exclude::Interacted if complete => interacted,
        // The read covers everything since the model's as_of; the model has the rest.
        Exclude::Purchased if reaches_as_of && stored.is_some() => {
            let mut all = stored.unwrap_or_default();
            all.extend(purchased);
            all
        }
        Exclude::Purchased | Exclude::Interacted => {
            model_cache::all_items(user_id, exclude == Exclude::Purchased)
                .iter()
                .filter_map(|id| model.item_index(id))
                .collect()
        }
    };
    UserState {
        vector,
        source,
        excluded,
        strengths: if strengths { decayed } else { Vec::new() },
        session,
    }
}

/// Catalogue filters as one predicate over model item indexes. `None`: nothing can pass
/// (a category no model item has). Items missing from a shop's catalogue never pass; those
/// it flags not available pass only when `available_only` is off.
pub fn catalogue_filter(
    model: &ServingModel,
    category: Option<&str>,
    available_only: bool,
) -> Option<impl Fn(u32) -> bool> {
    let hidden = if available_only {
        model.unavailable()
    } else {
        model.unlisted()
    };
    let in_category = match category {
        Some(c) => {
            let set = model.in_category(c);
            if set.is_empty() {
                return None;
            }
            Some(set)
        }
        None => None,
    };
    Some(move |i: u32| !hidden.contains(i) && in_category.as_ref().is_none_or(|c| c.contains(i)))
}

/// The given items a shop's catalogue still lists: all of them while it lists nothing, else
/// the model items not `unlisted` and, asked of the catalogue, the ids the model does not know.
pub fn still_listed(model: &ServingModel, item_ids: Vec<String>) -> Vec<String> {
    let unlisted = model.unlisted();
    let unknown: Vec<String> = item_ids
        .iter()
        .filter(|id| model.item_index(id).is_none())
        .cloned()
        .collect();
    if unknown.is_empty() && unlisted.is_empty() {
        return item_ids;
    }
    let listed_unknown: HashSet<String> = if unknown.is_empty() {
        HashSet::new()
    } else {
        pgrx::Spi::connect(|client| {
            let args = [pgrx::datum::DatumWithOid::from(unknown)];
            client
                .select(
                    "SELECT u FROM pg_catalog.unnest($1::pg_catalog.text[]) u \
                      WHERE NOT EXISTS (SELECT FROM personalize.items) \
                         OR EXISTS (SELECT FROM personalize.items i \
                                     WHERE i.item_id OPERATOR(pg_catalog.=) u)",
                    None,
                    &args,
                )
                .unwrap_or_else(|e| crate::error::spi_failed("cannot read personalize.items", e))
                .filter_map(|row| row.get::<String>(1).ok().flatten())
                .collect()
        })
    };
    item_ids
        .into_iter()
        .filter(|id| match model.item_index(id) {
            Some(i) => !unlisted.contains(i),
            None => listed_unknown.contains(id),
        })
        .collect()
}

pub fn top_k(
    model: &ServingModel,
    vector: Option<&[f32]>,
    k: usize,
    keep: impl Fn(u32) -> bool,
) -> Vec<(u32, f32)> {
    match vector {
        // An item-item model's "vector" is every item's score (see ServingModel::fold_in).
        Some(scores) if !model.has_factors() => {
            item_item::top_scored_with_popularity(scores, model.popularity_order(), k, keep)
        }
        Some(v) => serving::top_k_by_dot(model.factors(), v, k, keep),
        None => serving::top_k_in_order(model.popularity_order(), model.popularity(), k, keep),
    }
}

/// What a campaign message shows: the user's top k available items (purchases left out, fresh
/// clicks folded in) from the active model of `model_name`; empty when there is no such model,
/// so a message still goes out before the first training.
pub fn top_items_for_user(user_id: &str, k: usize, model_name: &str) -> Vec<(String, f32)> {
    let Some(model) = model_cache::find_active_model(model_name) else {
        return Vec::new();
    };
    let state = user_state(&model, user_id, true, Exclude::Purchased, false);
    let (vector, excluded) = (state.vector, state.excluded);
    let Some(allowed) = catalogue_filter(&model, None, true) else {
        return Vec::new();
    };
    top_k(&model, vector.as_deref(), k, |i| {
        !excluded.contains(&i) && allowed(i)
    })
    .into_iter()
    .map(|(i, s)| (model.item_id(i).to_owned(), s))
    .collect()
}
