//! Serving: `recommend()`, `recommend_for_session()`, `similar_items()`, `rank_items()` and
//! `explain_recommendation()`. All read-only and STABLE, so they also run on hot standbys.
//!
//! Where a user's vector comes from (the `source` column):
//! - `model`: the user's factors from training, when nothing new happened since;
//! - `fold_in`: the user has events on model items after the model's as_of (or is not in the
//!   model at all): the ALS closed form over the user's decayed history against the fixed item
//!   factors (`implicit`'s recalculate_user), so this session's clicks count now;
//! - `popularity`: no usable history: the model's most popular items (filters still apply);
//! - `similar`: similar_items() by cosine of item factors.

use std::collections::HashSet;

use pgrx::prelude::*;

use crate::core::als;
use crate::core::item_item;
use crate::core::serving::{self, HistoryEvent};
use crate::error::{required, PersonalizeError};
use crate::gucs;
use crate::pg::model_cache::{self, ServingModel};

fn k_arg(k: Option<i32>) -> usize {
    count_arg(k, "k")
}

/// A result count: at least 1, at most personalize.max_k.
fn count_arg(k: Option<i32>, name: &str) -> usize {
    let k = required(k, name);
    if k < 1 {
        PersonalizeError::invalid(
            format!("{name} must be at least 1, not {k}"),
            format!("{name} is how many rows to return, e.g. 10 for a homepage grid."),
        )
        .raise();
    }
    let max = gucs::MAX_K.get();
    if k > max {
        PersonalizeError::LimitExceeded {
            message: format!("{name} = {k} is over personalize.max_k ({max})"),
            hint: "Ask for fewer items, or have a superuser raise personalize.max_k.".into(),
        }
        .raise();
    }
    k as usize
}

/// Refuses (54000) an item list longer than personalize.max_candidates.
fn check_list_len(name: &str, len: usize, hint: &str) {
    let max = gucs::MAX_CANDIDATES.get() as usize;
    if len > max {
        PersonalizeError::LimitExceeded {
            message: format!("{name} has {len} elements, over personalize.max_candidates ({max})"),
            hint: hint.into(),
        }
        .raise();
    }
}

/// An array of item ids that must not be NULL or hold NULLs; duplicates keep their first place.
fn item_list(ids: Option<Vec<Option<String>>>, name: &str) -> Vec<String> {
    let ids = required(ids, name);
    check_list_len(name, ids.len(), "Pass fewer items per call.");
    let mut seen = HashSet::with_capacity(ids.len());
    let mut out = Vec::with_capacity(ids.len());
    for (pos, id) in ids.into_iter().enumerate() {
        let Some(id) = id else {
            PersonalizeError::invalid(
                format!("{name}[{}] is NULL", pos + 1),
                "Remove NULLs, e.g. with array_remove(ids, NULL).",
            )
            .raise()
        };
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Exclude {
    Purchased,
    Interacted,
    Nothing,
}

fn exclude_arg(v: Option<&str>) -> Exclude {
    match required(v, "exclude") {
        "purchased" => Exclude::Purchased,
        "interacted" => Exclude::Interacted,
        "none" => Exclude::Nothing,
        other => PersonalizeError::invalid(
            format!(
                "exclude must be 'purchased', 'interacted' or 'none', not '{}'",
                other.chars().take(40).collect::<String>()
            ),
            "'purchased' leaves out items of the user's purchase events (event types with \
             is_purchase), 'interacted' every item the user has an event on.",
        )
        .raise(),
    }
}

/// What serving knows about one user for one model.
struct UserState {
    vector: Option<Vec<f32>>,
    source: &'static str,
    /// The model items the call's `exclude` leaves out.
    excluded: HashSet<u32>,
    /// Decayed strengths over the user's history (model items only); empty unless asked for
    /// (and when the session alone speaks).
    strengths: Vec<(u32, f32)>,
    /// The current session's strengths and the scale its scores were added at.
    session: Option<(Vec<(u32, f32)>, f32)>,
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
fn user_state(
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
/// (a category no model item has).
fn catalogue_filter(
    model: &ServingModel,
    category: Option<&str>,
    available_only: bool,
) -> Option<impl Fn(u32) -> bool> {
    let unavailable = available_only.then(|| model.unavailable());
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
    Some(move |i: u32| {
        unavailable.as_ref().is_none_or(|u| !u.contains(i))
            && in_category.as_ref().is_none_or(|c| c.contains(i))
    })
}

fn top_k(
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

type Recommendations = TableIterator<
    'static,
    (
        name!(item_id, String),
        name!(score, f32),
        name!(source, String),
        name!(model_id, i64),
    ),
>;

fn rows(model: &ServingModel, top: Vec<(u32, f32)>, source: &str) -> Recommendations {
    let model_id = model.model_id();
    let out: Vec<(String, f32, String, i64)> = top
        .into_iter()
        .map(|(i, s)| (model.item_id(i).to_owned(), s, source.to_owned(), model_id))
        .collect();
    TableIterator::new(out)
}

/// The answer of recommend() and recommend_for_session(): the top k of `vector` (popularity
/// when there is none) among the items the catalogue filters allow and `excluded` does not hold.
fn serve(
    model: &ServingModel,
    vector: Option<&[f32]>,
    k: usize,
    excluded: &HashSet<u32>,
    category: Option<&str>,
    available_only: bool,
    source: &str,
) -> Recommendations {
    let Some(allowed) = catalogue_filter(model, category, available_only) else {
        return rows(model, Vec::new(), source);
    };
    let top = top_k(model, vector, k, |i| !excluded.contains(&i) && allowed(i));
    rows(model, top, source)
}

/// What a campaign message shows: the user's top k available items (purchases left out, fresh
/// clicks folded in) from the active model of `model_name`; empty when there is no such model,
/// so a message still goes out before the first training.
pub(crate) fn top_items_for_user(user_id: &str, k: usize, model_name: &str) -> Vec<(String, f32)> {
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

/// The top k items for a user from the active model of `model`, best first.
// pgrx reads the column names from the spelled-out TableIterator type (an alias hides them).
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn recommend(
    user_id: Option<&str>,
    k: default!(Option<i32>, 10),
    model: default!(Option<&str>, "'default'"),
    exclude: default!(Option<&str>, "'purchased'"),
    exclude_items: default!(Option<Vec<Option<String>>>, "NULL"),
    category: default!(Option<&str>, "NULL"),
    available_only: default!(Option<bool>, true),
    fold_in: default!(Option<bool>, true),
) -> TableIterator<
    'static,
    (
        name!(item_id, String),
        name!(score, f32),
        name!(source, String),
        name!(model_id, i64),
    ),
> {
    let user_id = required(user_id, "user_id");
    let k = k_arg(k);
    let exclude = exclude_arg(exclude);
    let available_only = required(available_only, "available_only");
    let fold_in = required(fold_in, "fold_in");
    let model = model_cache::active_model(required(model, "model"));
    let state = user_state(&model, user_id, fold_in, exclude, false);
    let (vector, source, mut excluded) = (state.vector, state.source, state.excluded);
    if let Some(ids) = &exclude_items {
        check_list_len(
            "exclude_items",
            ids.len(),
            "Pass fewer items per call; exclude => 'purchased' or 'interacted' leaves out the \
             user's own history without listing it.",
        );
    }
    for id in exclude_items.into_iter().flatten().flatten() {
        if let Some(i) = model.item_index(&id) {
            excluded.insert(i);
        }
    }
    serve(
        &model,
        vector.as_deref(),
        k,
        &excluded,
        category,
        available_only,
        source,
    )
}

/// Recommendations for an anonymous visitor from the items of this session.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn recommend_for_session(
    item_ids: Option<Vec<Option<String>>>,
    k: default!(Option<i32>, 10),
    model: default!(Option<&str>, "'default'"),
    exclude_seen: default!(Option<bool>, true),
    category: default!(Option<&str>, "NULL"),
    available_only: default!(Option<bool>, true),
) -> TableIterator<
    'static,
    (
        name!(item_id, String),
        name!(score, f32),
        name!(source, String),
        name!(model_id, i64),
    ),
> {
    let items = item_list(item_ids, "item_ids");
    let k = k_arg(k);
    let exclude_seen = required(exclude_seen, "exclude_seen");
    let available_only = required(available_only, "available_only");
    let model = model_cache::active_model(required(model, "model"));
    let known: Vec<u32> = items.iter().filter_map(|id| model.item_index(id)).collect();
    let vector = model.fold_in(&serving::session_strengths(&known));
    let source = if vector.is_some() {
        "fold_in"
    } else {
        "popularity"
    };
    let seen: HashSet<u32> = if exclude_seen {
        known.into_iter().collect()
    } else {
        HashSet::new()
    };
    serve(
        &model,
        vector.as_deref(),
        k,
        &seen,
        category,
        available_only,
        source,
    )
}

/// Items whose factors point the same way as this item's (cosine), most similar first. An
/// item the model does not know gets the popular items instead (source 'popularity').
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn similar_items(
    item_id: Option<&str>,
    k: default!(Option<i32>, 10),
    model: default!(Option<&str>, "'default'"),
    category: default!(Option<&str>, "NULL"),
    available_only: default!(Option<bool>, true),
) -> TableIterator<
    'static,
    (
        name!(item_id, String),
        name!(score, f32),
        name!(source, String),
        name!(model_id, i64),
    ),
> {
    let item_id = required(item_id, "item_id");
    let k = k_arg(k);
    let available_only = required(available_only, "available_only");
    let model = model_cache::active_model(required(model, "model"));
    let target = model.item_index(item_id);
    let Some(allowed) = catalogue_filter(&model, category, available_only) else {
        return rows(&model, Vec::new(), "similar");
    };
    let keep = |i: u32| Some(i) != target && allowed(i);
    match target {
        // Item-item: the item's own weights to its neighbours, the rest by popularity.
        Some(t) if model.item_item().is_some() => {
            let b = model.item_item().expect("checked");
            let mut scores = vec![0f32; model.n_items()];
            let (to, weights) = b.row(t);
            for (&j, &w) in to.iter().zip(weights) {
                scores[j as usize] = w;
            }
            let top =
                item_item::top_scored_with_popularity(&scores, model.popularity_order(), k, keep);
            rows(&model, top, "similar")
        }
        Some(t) if model.has_factors() => {
            let normalized = model.normalized();
            let k_f = model.info.k;
            let row = normalized[t as usize * k_f..(t as usize + 1) * k_f].to_vec();
            let top = serving::top_k_by_dot(normalized, &row, k, keep);
            rows(&model, top, "similar")
        }
        _ => rows(&model, top_k(&model, None, k, keep), "popularity"),
    }
}

/// Re-ranks candidate items (a category page) by the user's affinity: items the model knows,
/// best first (ties keep the given order), then the others in the given order with a NULL
/// score. Users without history get the model's popularity as the score.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn rank_items(
    user_id: Option<&str>,
    item_ids: Option<Vec<Option<String>>>,
    model: default!(Option<&str>, "'default'"),
    fold_in: default!(Option<bool>, true),
) -> TableIterator<
    'static,
    (
        name!(item_id, String),
        name!(rank, i32),
        name!(score, Option<f32>),
    ),
> {
    let user_id = required(user_id, "user_id");
    let items = item_list(item_ids, "item_ids");
    let fold_in = required(fold_in, "fold_in");
    let model = model_cache::active_model(required(model, "model"));
    let state = user_state(&model, user_id, fold_in, Exclude::Nothing, false);
    let scores: Vec<Option<f32>> = items
        .iter()
        .map(|id| {
            let i = model.item_index(id)?;
            Some(match &state.vector {
                Some(v) if model.has_factors() => als::dot(model.row(i), v),
                Some(scores) => scores[i as usize],
                None => model.popularity()[i as usize],
            })
        })
        .collect();
    let order = serving::rerank(&scores);
    let out: Vec<(String, i32, Option<f32>)> = order
        .into_iter()
        .enumerate()
        .map(|(rank, p)| (items[p].clone(), rank as i32 + 1, scores[p]))
        .collect();
    TableIterator::new(out)
}

/// Which of the user's items make `item_id` score what it does: the fold-in score split into
/// one term per item of the user's history (they sum to the score), largest first.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn explain_recommendation(
    user_id: Option<&str>,
    item_id: Option<&str>,
    n: default!(Option<i32>, 5),
    model: default!(Option<&str>, "'default'"),
) -> TableIterator<
    'static,
    (
        name!(because_of, String),
        name!(contribution, f32),
        name!(share, f32),
        name!(score, f32),
    ),
> {
    let user_id = required(user_id, "user_id");
    let item_id = required(item_id, "item_id");
    let n = count_arg(n, "n");
    let model = model_cache::active_model(required(model, "model"));
    let Some(target) = model.item_index(item_id) else {
        return TableIterator::new(Vec::new());
    };
    let state = user_state(&model, user_id, true, Exclude::Nothing, true);
    // The terms of one set of strengths, each scaled by `c`.
    let explain = |strengths: &[(u32, f32)], c: f32| -> Vec<(u32, f32)> {
        let terms = match model.item_item() {
            // Item-item: the score is Σ strength(h) · weight(h → item), a term per history item.
            Some(b) => strengths
                .iter()
                .map(|&(h, s)| (h, s * b.weight(h, target)))
                .collect(),
            None if model.has_factors() && !strengths.is_empty() => {
                let (cols, conf) = serving::confidences(strengths, model.info.alpha);
                serving::explain(
                    &cols,
                    &conf,
                    model.factors(),
                    model.yty(),
                    model.info.k,
                    target,
                    model.extra_regularization(cols.len()),
                )
                .map(|(_, terms)| terms)
                .unwrap_or_default()
            }
            None => Vec::new(),
        };
        terms.into_iter().map(|(h, t)| (h, c * t)).collect()
    };
    // Long-term terms, plus the session's at the scale recommend() added them with.
    let mut terms = explain(&state.strengths, 1.0);
    if let Some((items, c)) = &state.session {
        terms.extend(explain(items, *c));
    }
    let mut merged = serving::sum_by_item(terms);
    merged.retain(|t| t.1 != 0.0);
    merged.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if merged.is_empty() {
        return TableIterator::new(Vec::new());
    }
    let score: f32 = merged.iter().map(|t| t.1).sum();
    let terms = merged;
    let out: Vec<(String, f32, f32, f32)> = terms
        .into_iter()
        .take(n)
        .map(|(j, c)| {
            let share = if score != 0.0 { c / score } else { 0.0 };
            (model.item_id(j).to_owned(), c, share, score)
        })
        .collect();
    TableIterator::new(out)
}

/// Statement trigger body on personalize.items: every backend re-reads the catalogue flags.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _invalidate_catalog_cache() {
    model_cache::invalidate_catalog();
}
