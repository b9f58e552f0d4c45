//! Serving: `recommend()`, `recommend_for_session()`, `similar_items()`, `rank_items()` and
//! `explain_recommendation()`. All read-only and STABLE, so they also run on hot standbys.
//!
//! The arguments are parsed here; what a user's answer is made of (the `source` column:
//! `model`, `fold_in`, `session`, `popularity`) is `pg::recommender`'s; `similar` is
//! similar_items() by cosine of item factors.

use std::collections::HashSet;

use pgrx::prelude::*;

use crate::core::item_item;
use crate::core::kernels;
use crate::core::serving;
use crate::error::{required, PersonalizeError};
use crate::gucs;
use crate::pg::model_cache::{self, ServingModel};
use crate::pg::recommender::{catalogue_filter, still_listed, top_k, user_state, Exclude};

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
/// score. Users without history get the model's popularity as the score. Items a shop's
/// catalogue no longer lists are left out.
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
    let items = still_listed(&model, items);
    let state = user_state(&model, user_id, fold_in, Exclude::Nothing, false);
    let scores: Vec<Option<f32>> = items
        .iter()
        .map(|id| {
            let i = model.item_index(id)?;
            Some(match &state.vector {
                Some(v) if model.has_factors() => kernels::dot(model.row(i), v),
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
