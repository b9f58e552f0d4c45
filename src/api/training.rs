//! Training and offline evaluation: `train()` and `evaluate()`.

use std::time::Instant;

use pgrx::prelude::*;
use serde_json::json;

use crate::core::als::{self, AlsParams, Solver};
use crate::core::csr::Csr;
use crate::core::ease;
use crate::core::item_item;
use crate::core::metrics;
use crate::core::selection::{
    self, auto_candidates, best_trial, choose, default_neighbors, ease_fits, ease_grid, fit,
    mean_users_per_item, popularity_order, rank, rp3beta_fits, rp3beta_grid, trending_order,
    Candidate, Fitted, ALS_GRID_MAX_FACTORS, MAX_DROPOUT, VALIDATION_FRACTION,
};
use crate::error::{required, PersonalizeError};
use crate::gucs;
use crate::pg::interactions::{self, Interactions};
use crate::pg::model_store;
use crate::pg::training_host::{selection_time_budget, Backend};

/// Model names: letters, digits, `_`, `.`, `-`; 1 to 63 characters (as the table checks).
fn model_name(v: Option<&str>) -> String {
    let name = required(v, "model_name");
    let ok = (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        PersonalizeError::invalid(
            format!(
                "invalid model name \"{}\"",
                name.chars().take(80).collect::<String>()
            ),
            "Use 1 to 63 letters, digits, '_', '.' or '-', e.g. 'default' or 'homepage-v2'.",
        )
        .raise();
    }
    name.to_owned()
}

/// ALS parameters from train()/evaluate() arguments, checked.
#[allow(clippy::too_many_arguments)]
fn als_params(
    factors: Option<i32>,
    iterations: Option<i32>,
    regularization: Option<f32>,
    alpha: Option<f32>,
    seed: Option<i64>,
    solver: Option<&str>,
    cg_steps: Option<i32>,
) -> (AlsParams, f32) {
    let solver = match required(solver, "solver") {
        "cg" => Solver::ConjugateGradient,
        "cholesky" => Solver::Cholesky,
        other => PersonalizeError::invalid(
            format!("unknown solver \"{}\"", crate::error::shown(other)),
            "Use 'cg' (conjugate gradient, fast) or 'cholesky' (exact).",
        )
        .raise(),
    };
    let non_negative = |v: Option<i32>, name: &str| -> usize {
        let v = required(v, name);
        usize::try_from(v).unwrap_or_else(|_| {
            PersonalizeError::invalid(
                format!("{name} must not be negative, not {v}"),
                "Typical values: factors 64, iterations 15, cg_steps 3.",
            )
            .raise()
        })
    };
    let params = AlsParams {
        factors: non_negative(factors, "factors"),
        iterations: non_negative(iterations, "iterations"),
        regularization: required(regularization, "regularization"),
        cg_steps: non_negative(cg_steps, "cg_steps"),
        solver,
        seed: required(seed, "seed") as u64,
        compute_loss: true,
        reg_exponent: 0.0,
    };
    if let Err(problem) = params.check() {
        PersonalizeError::invalid(
            problem,
            "Typical values: factors 64, iterations 15, regularization 0.01, cg_steps 3.",
        )
        .raise();
    }
    let alpha = required(alpha, "alpha");
    if !(alpha.is_finite() && alpha > 0.0) {
        PersonalizeError::invalid(
            format!("alpha must be a finite number > 0, not {alpha}"),
            "confidence = 1 + alpha * strength; typical alpha is 1 to 40.",
        )
        .raise();
    }
    (params, alpha)
}

/// The training configuration shared by train() and evaluate().
struct Config {
    params: AlsParams,
    alpha: f32,
    window: Option<Interval>,
    as_of: TimestampWithTimeZone,
    /// as_of was defaulted: events dated after it (accepted clock skew) are read too.
    include_future: bool,
}

#[allow(clippy::too_many_arguments)]
fn config(
    factors: Option<i32>,
    iterations: Option<i32>,
    regularization: Option<f32>,
    alpha: Option<f32>,
    window: Option<Interval>,
    as_of: Option<TimestampWithTimeZone>,
    seed: Option<i64>,
    solver: Option<&str>,
    cg_steps: Option<i32>,
) -> Config {
    let (params, alpha) = als_params(
        factors,
        iterations,
        regularization,
        alpha,
        seed,
        solver,
        cg_steps,
    );
    if let Some(w) = window {
        crate::pg::intervals::check_duration(
            "window",
            w,
            crate::core::intervals::Span::days(36_600),
            false,
            "window keeps only the events of that last stretch before as_of, e.g. '90 days'; \
             omit it to train on every event.",
        );
    }
    let as_of_given = as_of;
    let as_of = match as_of {
        Some(t) if !t.is_finite() => PersonalizeError::invalid(
            "as_of must be a finite timestamp",
            "Omit as_of to train as of the newest event.",
        )
        .raise(),
        Some(t) => t,
        None => interactions::newest_event().unwrap_or_else(|| no_interactions()),
    };
    let include_future = as_of_given.is_none();
    Config {
        params,
        alpha,
        window,
        as_of,
        include_future,
    }
}

fn no_interactions() -> ! {
    PersonalizeError::NotReady {
        message: "there are no interactions to train on".into(),
        hint: "Training needs events with an item_id whose event type has a non-zero weight \
               (personalize.event_types) inside the window; track some first."
            .into(),
    }
    .raise()
}

/// Reads the interactions and refuses a run whose memory would exceed the budget: while reading
/// (the pairs alone can be over it, so a huge log is refused before the solver allocates
/// anything) and again with the solver's structures once the sizes are known.
fn load(cfg: &Config) -> Interactions {
    let limit = gucs::training_memory_limit_bytes();
    let k = cfg.params.factors;
    let data = interactions::read(cfg.as_of, cfg.include_future, cfg.window, limit, k);
    if data.pairs.is_empty() {
        no_interactions();
    }
    let estimate = interactions::memory_estimate(
        data.pairs.len(),
        data.user_ids.len(),
        data.item_ids.len(),
        k,
    );
    if estimate > limit {
        interactions::over_memory_budget(
            data.pairs.len(),
            data.user_ids.len(),
            data.item_ids.len(),
            k,
            estimate,
            limit,
            false,
        );
    }
    data
}

fn pool() -> rayon::ThreadPool {
    let threads = match gucs::TRAINING_THREADS.get() {
        n if n > 0 => n as usize,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // Built per call: a global pool made before Postgres forks a backend would hang.
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap_or_else(|e| {
            PersonalizeError::NotReady {
                message: format!("cannot start {threads} training threads: {e}"),
                hint: "Lower personalize.training_threads.".into(),
            }
            .raise()
        })
}

/// What a trained model stores in models.params: its family and parameters (what serving
/// reads: model_type, alpha and regularization for ALS, window_seconds), the spec it was
/// asked with and, when it was chosen, the validation leaderboard.
fn model_params(
    cfg: &Config,
    chosen: &Candidate,
    spec: &Spec,
    leaderboard: Vec<serde_json::Value>,
    mean_user_items: f64,
) -> serde_json::Value {
    let mut p = serde_json::Map::new();
    p.insert("model_type".into(), json!(chosen.family()));
    if let serde_json::Value::Object(c) = chosen.params() {
        p.extend(c);
    }
    if let Candidate::Als { params, .. } = chosen {
        if params.reg_exponent != 0.0 {
            // Fold-in scales a user's λ against the mean the model was trained with.
            p.insert("mean_user_items".into(), json!(mean_user_items));
        }
    }
    p.insert("seed".into(), json!(cfg.params.seed));
    let common = params_json(cfg);
    for key in ["window", "window_seconds"] {
        p.insert(key.into(), common[key].clone());
    }
    p.insert("spec".into(), json!(spec));
    if !leaderboard.is_empty() {
        p.insert("selection".into(), json!(leaderboard));
    }
    serde_json::Value::Object(p)
}

fn params_json(cfg: &Config) -> serde_json::Value {
    json!({
        "factors": cfg.params.factors,
        "iterations": cfg.params.iterations,
        "regularization": cfg.params.regularization,
        "alpha": cfg.alpha,
        "cg_steps": cfg.params.cg_steps,
        "solver": match cfg.params.solver { Solver::ConjugateGradient => "cg", Solver::Cholesky => "cholesky" },
        "seed": cfg.params.seed,
        "window": cfg.window.map(|w| w.to_string()),
        // What fold-in needs: the window in seconds (a month counts 30.44 days, as
        // extract(epoch FROM interval) does).
        "window_seconds": cfg.window.map(|w| {
            w.months() as f64 * 2_629_800.0 + w.days() as f64 * 86_400.0 + w.micros() as f64 / 1e6
        }),
    })
}

/// What a train() call asked for. Stored with the model ("spec"), so a later train() of the
/// same name without arguments trains the same way (a nightly `train('homepage')` keeps the
/// family and parameters it was first given, or keeps choosing when it was `auto`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Spec {
    model_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    factors: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iterations: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regularization: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alpha: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    solver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cg_steps: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    l2: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    neighbors: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    beta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_scaling: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropout: Option<f64>,
}

impl Spec {
    fn has_als_params(&self) -> bool {
        self.factors.is_some()
            || self.iterations.is_some()
            || self.regularization.is_some()
            || self.alpha.is_some()
            || self.solver.is_some()
            || self.cg_steps.is_some()
            || self.frequency_scaling.is_some()
    }

    /// EASE's or RP3beta's: `neighbors` belongs to both.
    fn has_item_item_params(&self) -> bool {
        self.l2.is_some()
            || self.dropout.is_some()
            || self.neighbors.is_some()
            || self.beta.is_some()
    }
}

/// The spec a train() call means: its arguments; with none at all, the spec the active model of
/// the name was trained with; else `auto`. A model type left out is implied by the
/// parameters given (ALS's or EASE's).
fn resolve_spec(name: &str, mut given: Spec) -> Spec {
    let nothing_given =
        given.model_type.is_empty() && !given.has_als_params() && !given.has_item_item_params();
    if nothing_given {
        if let Some(remembered) = remembered_spec(name) {
            return remembered;
        }
        given.model_type = "auto".into();
        return given;
    }
    if given.model_type.is_empty() {
        given.model_type = match (
            given.has_als_params(),
            given.l2.is_some(),
            given.beta.is_some(),
        ) {
            (true, false, false) if given.neighbors.is_none() => "als",
            (false, _, false) => "ease",
            (false, false, true) if given.dropout.is_none() => "rp3beta",
            _ => PersonalizeError::invalid(
                "the parameters given belong to different model families",
                "ALS takes factors, iterations, regularization, alpha, solver, cg_steps and \
                 frequency_scaling; EASE l2, dropout and neighbors; RP3beta beta and neighbors. Pass \
                 model_type with one family's parameters.",
            )
            .raise(),
        }
        .into();
    }
    let fits = match given.model_type.as_str() {
        "auto" | "popularity" | "trending" => {
            !given.has_als_params() && !given.has_item_item_params()
        }
        "als" => !given.has_item_item_params(),
        "ease" => !given.has_als_params() && given.beta.is_none(),
        "rp3beta" => !given.has_als_params() && given.l2.is_none() && given.dropout.is_none(),
        other => PersonalizeError::invalid(
            format!("unknown model_type \"{}\"", crate::error::shown(other)),
            "Use 'auto' (the default: the best family on a validation split), 'als', 'ease', \
             'rp3beta', 'popularity' or 'trending'.",
        )
        .raise(),
    };
    if !fits {
        PersonalizeError::invalid(
            format!(
                "model_type '{}' takes none of the parameters given",
                given.model_type
            ),
            "ALS takes factors, iterations, regularization, alpha, solver, cg_steps and \
             frequency_scaling; EASE takes l2, dropout and neighbors; RP3beta beta and neighbors; auto, \
             popularity and trending take none of them.",
        )
        .raise();
    }
    given
}

/// The spec the active model of `name` was trained with (None: no such model, or one trained
/// before 0.7.0, whose parameters were the defaults of their day).
fn remembered_spec(name: &str) -> Option<Spec> {
    let text = Spi::get_one_with_args::<String>(
        "SELECT CAST(params -> 'spec' AS text) FROM personalize.models \
          WHERE name = $1 AND status = 'active'",
        &[name.into()],
    )
    .ok()
    .flatten()?;
    serde_json::from_str(&text).ok()
}

fn rp3beta_beta(spec: &Spec) -> Option<f64> {
    spec.beta.inspect(|&beta| {
        if !(beta.is_finite() && (-1.0..=2.0).contains(&beta)) {
            PersonalizeError::invalid(
                format!("beta must be between -1 and 2, not {beta}"),
                "beta damps popular items in RP3beta (0: none; 0.5 is typical; below 0 favours \
                 them); omit it to choose it on a validation split.",
            )
            .raise();
        }
    })
}

/// The explicit ALS configuration of a spec, with the defaults of `train()` before 0.7.0 for
/// what it leaves out.
fn als_candidate(spec: &Spec, seed: Option<i64>) -> Candidate {
    let (params, alpha) = als_params(
        spec.factors.or(Some(64)),
        spec.iterations.or(Some(15)),
        spec.regularization.or(Some(0.01)),
        spec.alpha.or(Some(1.0)),
        seed,
        spec.solver.as_deref().or(Some("cg")),
        spec.cg_steps.or(Some(3)),
    );
    let params = AlsParams {
        reg_exponent: spec.frequency_scaling.unwrap_or(0.0),
        ..params
    };
    if let Err(problem) = params.check() {
        PersonalizeError::invalid(
            problem,
            "frequency_scaling is the exponent of frequency-scaled regularization: 0 (the \
             default) gives every user and item the same λ, 1 scales it with their number of \
             interactions.",
        )
        .raise();
    }
    Candidate::Als { params, alpha }
}

/// The `neighbors` argument, checked (None: the default for the catalogue's size).
fn ease_neighbors(spec: &Spec) -> Option<usize> {
    match spec.neighbors {
        None => None,
        Some(n) if (1..=10_000).contains(&n) => Some(n as usize),
        Some(n) => PersonalizeError::invalid(
            format!("neighbors must be between 1 and 10000, not {n}"),
            "neighbors is how many weights an item-item model (EASE, RP3beta) keeps per item, \
             e.g. 200.",
        )
        .raise(),
    }
}

fn ease_l2(spec: &Spec) -> Option<f64> {
    spec.l2.inspect(|&l2| {
        if !(l2.is_finite() && l2 > 0.0) {
            PersonalizeError::invalid(
                format!("l2 must be a finite number > 0, not {l2}"),
                "l2 is EASE's regularization, typically about the number of users per item; \
                 omit it to choose it on a validation split.",
            )
            .raise();
        }
    })
}

/// The `dropout` argument, checked (None: chosen on the validation split).
fn ease_dropout(spec: &Spec) -> Option<f64> {
    spec.dropout.inspect(|&p| {
        if !(p.is_finite() && (0.0..=MAX_DROPOUT).contains(&p)) {
            PersonalizeError::invalid(
                format!("dropout must be between 0 and 0.99, not {p}"),
                "dropout is the probability with which EASE drops each history item in \
                 training, shrinking popular items' weights (0: plain EASE); omit it to choose \
                 it on a validation split (with l2 given, omitted means 0).",
            )
            .raise();
        }
    })
}

/// Trains the model family a spec asks for — by default the best of popularity, EASE and a
/// small ALS grid on a temporal validation split, refitted on all the data — and makes the
/// result the active model of `model_name`, in the caller's transaction.
// pgrx reads the column names from the spelled-out TableIterator type (an alias hides them).
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(name = "train", volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn train_recommender(
    model_name: default!(Option<&str>, "'default'"),
    factors: default!(Option<i32>, "NULL"),
    iterations: default!(Option<i32>, "NULL"),
    regularization: default!(Option<f32>, "NULL"),
    alpha: default!(Option<f32>, "NULL"),
    window: default!(Option<Interval>, "NULL"),
    as_of: default!(Option<TimestampWithTimeZone>, "NULL"),
    seed: default!(Option<i64>, 42),
    solver: default!(Option<&str>, "NULL"),
    cg_steps: default!(Option<i32>, "NULL"),
    model_type: default!(Option<&str>, "NULL"),
    l2: default!(Option<f64>, "NULL"),
    neighbors: default!(Option<i32>, "NULL"),
    beta: default!(Option<f64>, "NULL"),
    frequency_scaling: default!(Option<f32>, "NULL"),
    dropout: default!(Option<f64>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(model_id, i64),
        name!(model_name, String),
        name!(users, i32),
        name!(items, i32),
        name!(interactions, i64),
        name!(final_loss, Option<f64>),
        name!(read_seconds, f64),
        name!(train_seconds, f64),
        name!(write_seconds, f64),
    ),
> {
    crate::pg::require_writable(c"train()");
    let name = self::model_name(model_name);
    let spec = resolve_spec(
        &name,
        Spec {
            model_type: model_type.unwrap_or_default().to_owned(),
            factors,
            iterations,
            regularization,
            alpha,
            solver: solver.map(str::to_owned),
            cg_steps,
            l2,
            neighbors,
            beta,
            frequency_scaling,
            dropout,
        },
    );
    let seed_value = required(seed, "seed");
    // Validates the parameters given (and window, as_of) before anything is read.
    let explicit_als = (spec.model_type == "als").then(|| als_candidate(&spec, seed));
    let neighbors = ease_neighbors(&spec);
    let l2 = ease_l2(&spec);
    let dropout = ease_dropout(&spec);
    let beta = rp3beta_beta(&spec);
    // The read's memory check counts the factors of the largest ALS that may be fitted.
    let memory_factors = match (&explicit_als, spec.model_type.as_str()) {
        (Some(Candidate::Als { params, .. }), _) => params.factors as i32,
        (_, "auto") => ALS_GRID_MAX_FACTORS as i32,
        _ => 1,
    };
    let cfg = config(
        Some(memory_factors),
        Some(15),
        Some(0.01),
        Some(1.0),
        window,
        as_of,
        seed,
        Some("cg"),
        Some(3),
    );
    let t_read = Instant::now();
    let data = load(&cfg);
    let (n_users, n_items) = (data.user_ids.len(), data.item_ids.len());
    let neighbors = neighbors.unwrap_or_else(|| default_neighbors(n_items));
    let strengths = strength_matrix(n_users, n_items, &data.pairs);
    let read_seconds = t_read.elapsed().as_secs_f64();
    let t_train = Instant::now();
    let pool = pool();

    let candidates: Vec<Candidate> = match spec.model_type.as_str() {
        "popularity" => vec![Candidate::Popularity],
        "trending" => vec![Candidate::Trending],
        "als" => vec![explicit_als.expect("made above for als")],
        "ease" => {
            if !ease_fits(n_items, &Backend) {
                PersonalizeError::LimitExceeded {
                    message: format!(
                        "EASE cannot train on {n_items} items within the training memory \
                         budget"
                    ),
                    hint: "Raise personalize.training_memory_mb, or train another family \
                           (model_type => 'auto' picks one that fits)."
                        .into(),
                }
                .raise();
            }
            match l2 {
                Some(l2) => vec![Candidate::Ease {
                    l2,
                    dropout: dropout.unwrap_or(0.0),
                    neighbors,
                }],
                None => ease_grid(
                    mean_users_per_item(&strengths),
                    dropout.unwrap_or(0.0),
                    neighbors,
                ),
            }
        }
        "rp3beta" => {
            if !rp3beta_fits(&strengths, neighbors, pool.current_num_threads(), &Backend) {
                PersonalizeError::LimitExceeded {
                    message: format!(
                        "RP3beta cannot keep {neighbors} neighbours for {n_items} items within \
                         the training memory budget"
                    ),
                    hint: "Lower neighbors or raise personalize.training_memory_mb.".into(),
                }
                .raise();
            }
            match beta {
                Some(beta) => vec![Candidate::Rp3beta { beta, neighbors }],
                None => rp3beta_grid(neighbors),
            }
        }
        _ => auto_candidates(&strengths, neighbors, seed_value as u64, &pool, &Backend),
    };

    // More than one candidate: choose on a temporal validation split, then refit on all.
    let mut leaderboard = Vec::new();
    let chosen = if candidates.len() == 1 {
        candidates.into_iter().next().expect("one candidate")
    } else {
        let split = metrics::temporal_split(n_users, n_items, &data.pairs, VALIDATION_FRACTION);
        if split.test.iter().all(|t| t.is_empty()) {
            pgrx::notice!(
                "pg_personalize: no user has two or more items to hold out; training popularity"
            );
            Candidate::Popularity
        } else {
            let trials = choose(
                candidates,
                &split,
                &pool,
                dropout.is_none(),
                selection_time_budget(),
                &Backend,
            );
            let best = best_trial(&trials);
            leaderboard = trials
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    json!({
                        "family": t.candidate.family(),
                        "params": t.candidate.params(),
                        "ndcg_at_10": t.ndcg,
                        "recall_at_10": t.recall,
                        "fit_seconds": t.seconds,
                        "chosen": i == best,
                    })
                })
                .collect();
            let winner = trials[best].candidate.clone();
            let top = trials
                .iter()
                .max_by(|a, b| a.ndcg.total_cmp(&b.ndcg))
                .expect("at least one trial");
            let simpler = if top.ndcg > trials[best].ndcg {
                format!(
                    ", within one standard error of the best, {} at {:.4}",
                    top.candidate.family(),
                    top.ndcg
                )
            } else {
                String::new()
            };
            pgrx::notice!(
                "pg_personalize: chose {} {} (validation NDCG@10 {:.4}{simpler}); refitting on \
                 all the data",
                winner.family(),
                winner.params(),
                trials[best].ndcg
            );
            winner
        }
    };
    // The model that is kept reports its loss per iteration (the grid's fits skip it).
    let chosen = match chosen {
        Candidate::Als { mut params, alpha } => {
            params.compute_loss = true;
            Candidate::Als { params, alpha }
        }
        other => other,
    };
    let fitted = fit(&chosen, &strengths, &pool, &Backend);
    let train_seconds = t_train.elapsed().as_secs_f64();

    let t_write = Instant::now();
    let (losses, seconds): (Vec<f64>, Vec<f64>) = match &fitted {
        Fitted::Als(m) => m.reports.iter().map(|r| (r.loss, r.seconds)).unzip(),
        _ => (Vec::new(), Vec::new()),
    };
    let final_loss = match &fitted {
        Fitted::Als(_) => *losses.last().unwrap_or(&f64::NAN),
        _ => f64::NAN,
    };
    if let Fitted::Als(model) = &fitted {
        // A run that diverged (e.g. an alpha so large the confidences overflow f32) must not
        // replace a working model: refuse it before anything is written.
        if !final_loss.is_finite()
            || !model
                .user_factors
                .iter()
                .chain(model.item_factors.iter())
                .all(|x| x.is_finite())
        {
            PersonalizeError::invalid(
                format!(
                    "training diverged (final loss {final_loss}); the active model is unchanged"
                ),
                "Lower alpha (confidence = 1 + alpha * strength must stay well inside float \
                 range) or raise regularization.",
            )
            .raise();
        }
    }
    // What the model serves users without history (and item-item models after their
    // scores): users per item, or for a trending model the decayed strengths per item.
    let (popularity, _) = match fitted {
        Fitted::Trending => trending_order(&strengths),
        _ => popularity_order(&strengths),
    };
    let params = model_params(
        &cfg,
        &chosen,
        &spec,
        leaderboard,
        als::mean_row_nnz(&strengths),
    );
    let model_id = Spi::connect_mut(|client| {
        let id = model_store::insert_model(
            client,
            model_store::ModelRow {
                name: &name,
                params,
                as_of: cfg.as_of,
                n_users: n_users as i32,
                n_items: n_items as i32,
                n_interactions: strengths.nnz() as i64,
                losses,
                seconds,
                read_seconds,
                train_seconds,
            },
        );
        // Purchases are stored with the user rows unless a window hides older ones (serving
        // then reads them from the events).
        let purchases = cfg
            .window
            .is_none()
            .then(|| model_store::PurchaseLists::from_pairs(n_users, &data.purchases));
        let no_factors = |rows: usize| ndarray::Array2::<f32>::zeros((rows, 0));
        let user_factors = match &fitted {
            Fitted::Als(m) => m.user_factors.clone(),
            _ => no_factors(n_users),
        };
        model_store::insert_factors(
            client,
            id,
            &data.user_ids,
            &user_factors,
            model_store::FactorRows::Users(purchases.as_ref()),
        );
        drop(user_factors);
        match &fitted {
            Fitted::Als(m) => model_store::insert_factors(
                client,
                id,
                &data.item_ids,
                &m.item_factors,
                model_store::FactorRows::Items {
                    popularity: &popularity,
                },
            ),
            Fitted::ItemItem(b) => {
                model_store::insert_neighbors(client, id, &data.item_ids, b, &popularity)
            }
            Fitted::Popularity | Fitted::Trending => model_store::insert_factors(
                client,
                id,
                &data.item_ids,
                &no_factors(n_items),
                model_store::FactorRows::Items {
                    popularity: &popularity,
                },
            ),
        }
        let write_seconds = t_write.elapsed().as_secs_f64();
        model_store::activate(client, id, &name, write_seconds);
        id
    });
    TableIterator::once((
        model_id,
        name,
        n_users as i32,
        n_items as i32,
        strengths.nnz() as i64,
        // ALS's last loss; EASE and popularity have no iterations, so no loss (NULL).
        matches!(fitted, Fitted::Als(_)).then_some(final_loss),
        read_seconds,
        train_seconds,
        t_write.elapsed().as_secs_f64(),
    ))
}

/// train() as the 0.6.0 and older SQL defines it (ten arguments, with ALS defaults, and the
/// symbol `train_wrapper`): the library of a newer package serves that definition until
/// `ALTER EXTENSION pg_personalize UPDATE` replaces it. No SQL of its own.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(sql = false)]
fn train(
    model_name: Option<&str>,
    factors: Option<i32>,
    iterations: Option<i32>,
    regularization: Option<f32>,
    alpha: Option<f32>,
    window: Option<Interval>,
    as_of: Option<TimestampWithTimeZone>,
    seed: Option<i64>,
    solver: Option<&str>,
    cg_steps: Option<i32>,
) -> TableIterator<
    'static,
    (
        name!(model_id, i64),
        name!(model_name, String),
        name!(users, i32),
        name!(items, i32),
        name!(interactions, i64),
        name!(final_loss, Option<f64>),
        name!(read_seconds, f64),
        name!(train_seconds, f64),
        name!(write_seconds, f64),
    ),
> {
    train_recommender(
        model_name,
        factors,
        iterations,
        regularization,
        alpha,
        window,
        as_of,
        seed,
        solver,
        cg_steps,
        Some("als"),
        None,
        None,
        None,
        None,
        None,
    )
}

/// train() as the 0.7.0 SQL defines it (thirteen arguments, symbol
/// `train_with_families_wrapper`): served by a newer library until `ALTER EXTENSION … UPDATE`.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(sql = false)]
fn train_with_families(
    model_name: Option<&str>,
    factors: Option<i32>,
    iterations: Option<i32>,
    regularization: Option<f32>,
    alpha: Option<f32>,
    window: Option<Interval>,
    as_of: Option<TimestampWithTimeZone>,
    seed: Option<i64>,
    solver: Option<&str>,
    cg_steps: Option<i32>,
    model_type: Option<&str>,
    l2: Option<f64>,
    neighbors: Option<i32>,
) -> TableIterator<
    'static,
    (
        name!(model_id, i64),
        name!(model_name, String),
        name!(users, i32),
        name!(items, i32),
        name!(interactions, i64),
        name!(final_loss, Option<f64>),
        name!(read_seconds, f64),
        name!(train_seconds, f64),
        name!(write_seconds, f64),
    ),
> {
    train_recommender(
        model_name,
        factors,
        iterations,
        regularization,
        alpha,
        window,
        as_of,
        seed,
        solver,
        cg_steps,
        model_type,
        l2,
        neighbors,
        None,
        None,
        None,
    )
}

/// train() as the 0.8.0 SQL defines it (fifteen arguments, symbol `train_models_wrapper`):
/// served by a newer library until `ALTER EXTENSION … UPDATE`.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(sql = false)]
fn train_models(
    model_name: Option<&str>,
    factors: Option<i32>,
    iterations: Option<i32>,
    regularization: Option<f32>,
    alpha: Option<f32>,
    window: Option<Interval>,
    as_of: Option<TimestampWithTimeZone>,
    seed: Option<i64>,
    solver: Option<&str>,
    cg_steps: Option<i32>,
    model_type: Option<&str>,
    l2: Option<f64>,
    neighbors: Option<i32>,
    beta: Option<f64>,
    frequency_scaling: Option<f32>,
) -> TableIterator<
    'static,
    (
        name!(model_id, i64),
        name!(model_name, String),
        name!(users, i32),
        name!(items, i32),
        name!(interactions, i64),
        name!(final_loss, Option<f64>),
        name!(read_seconds, f64),
        name!(train_seconds, f64),
        name!(write_seconds, f64),
    ),
> {
    train_recommender(
        model_name,
        factors,
        iterations,
        regularization,
        alpha,
        window,
        as_of,
        seed,
        solver,
        cg_steps,
        model_type,
        l2,
        neighbors,
        beta,
        frequency_scaling,
        None,
    )
}

/// Users × items of decayed interaction strengths.
fn strength_matrix(n_users: usize, n_items: usize, pairs: &[(u32, u32, f32, i64)]) -> Csr {
    let rows: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let cols: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    let vals: Vec<f32> = pairs.iter().map(|p| p.2).collect();
    Csr::from_triplets(n_users, n_items, &rows, &cols, &vals)
}

/// evaluate() as the 0.6.0 and older SQL defines it (twelve arguments, symbol
/// `evaluate_wrapper`): served by a newer library until `ALTER EXTENSION … UPDATE`.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(sql = false)]
fn evaluate(
    model_name: Option<&str>,
    k: Option<i32>,
    test_fraction: Option<f64>,
    factors: Option<i32>,
    iterations: Option<i32>,
    regularization: Option<f32>,
    alpha: Option<f32>,
    window: Option<Interval>,
    as_of: Option<TimestampWithTimeZone>,
    seed: Option<i64>,
    solver: Option<&str>,
    cg_steps: Option<i32>,
) -> TableIterator<
    'static,
    (
        name!(method, String),
        name!(k, i32),
        name!(users, i64),
        name!(precision, f64),
        name!(recall, f64),
        name!(ndcg, f64),
        name!(map, f64),
        name!(coverage, f64),
    ),
> {
    evaluate_families(
        model_name,
        k,
        test_fraction,
        factors,
        iterations,
        regularization,
        alpha,
        window,
        as_of,
        seed,
        solver,
        cg_steps,
        Some(false),
        Some(1),
    )
}

/// Which held-out items count: only purchases (`purchases_only`), and only for users seen in
/// at least `min_sessions` sessions (distinct session_id; a day counts as one session for
/// events without one), so one-visit anonymous visitors can be left out. The items stay out of
/// the training part either way.
fn restrict_test(
    test: &mut [std::collections::HashSet<u32>],
    purchases: Option<&std::collections::HashSet<(u32, u32)>>,
    scored_users: Option<&[bool]>,
) {
    for (u, t) in test.iter_mut().enumerate() {
        if scored_users.is_some_and(|ok| !ok[u]) {
            t.clear();
        } else if let Some(p) = purchases {
            t.retain(|&i| p.contains(&(u as u32, i)));
        }
    }
}

/// Per user of `user_ids` (sorted), whether they were seen in at least `min_sessions`
/// sessions.
fn users_with_sessions(user_ids: &[String], min_sessions: i32) -> Vec<bool> {
    let mut ok = vec![false; user_ids.len()];
    Spi::connect(|client| {
        let args: [pgrx::datum::DatumWithOid; 1] = [min_sessions.into()];
        let rows = client
            .select(
                "SELECT e.user_id FROM personalize.events e \
                  WHERE e.item_id IS NOT NULL GROUP BY e.user_id \
                 HAVING count(DISTINCT COALESCE(e.session_id, \
                              to_char(e.occurred_at, 'YYYY-MM-DD'))) >= $1",
                None,
                &args,
            )
            .unwrap_or_else(|e| crate::error::spi_failed("counting sessions", e));
        for row in rows {
            if let Some(id) = row.get::<String>(1).ok().flatten() {
                if let Ok(i) = user_ids.binary_search(&id) {
                    ok[i] = true;
                }
            }
        }
    });
    ok
}

/// Temporal hold-out evaluation of every family: ALS with the parameters given, EASE,
/// popularity, and `auto` (what train() with no arguments would serve).
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(name = "evaluate", volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn evaluate_families(
    model_name: default!(Option<&str>, "'default'"),
    k: default!(Option<i32>, 10),
    test_fraction: default!(Option<f64>, 0.2),
    factors: default!(Option<i32>, 64),
    iterations: default!(Option<i32>, 15),
    regularization: default!(Option<f32>, 0.01),
    alpha: default!(Option<f32>, 1.0),
    window: default!(Option<Interval>, "NULL"),
    as_of: default!(Option<TimestampWithTimeZone>, "NULL"),
    seed: default!(Option<i64>, 42),
    solver: default!(Option<&str>, "'cg'"),
    cg_steps: default!(Option<i32>, 3),
    purchases_only: default!(Option<bool>, false),
    min_sessions: default!(Option<i32>, 1),
) -> TableIterator<
    'static,
    (
        name!(method, String),
        name!(k, i32),
        name!(users, i64),
        name!(precision, f64),
        name!(recall, f64),
        name!(ndcg, f64),
        name!(map, f64),
        name!(coverage, f64),
    ),
> {
    crate::pg::require_writable(c"evaluate()");
    let name = self::model_name(model_name);
    let k = required(k, "k");
    if !(1..=1000).contains(&k) {
        PersonalizeError::invalid(
            format!("k must be between 1 and 1000, not {k}"),
            "e.g. k => 10",
        )
        .raise();
    }
    let fraction = required(test_fraction, "test_fraction");
    if !(fraction > 0.0 && fraction < 1.0) {
        PersonalizeError::invalid(
            format!("test_fraction must be between 0 and 1 (exclusive), not {fraction}"),
            "e.g. test_fraction => 0.2 holds out each user's latest 20% of items",
        )
        .raise();
    }
    let purchases_only = required(purchases_only, "purchases_only");
    let min_sessions = required(min_sessions, "min_sessions");
    if !(1..=1000).contains(&min_sessions) {
        PersonalizeError::invalid(
            format!("min_sessions must be between 1 and 1000, not {min_sessions}"),
            "min_sessions => 2 leaves out users seen in one session only (one-visit anonymous \
             visitors).",
        )
        .raise();
    }
    let cfg = config(
        factors,
        iterations,
        regularization,
        alpha,
        window,
        as_of,
        seed,
        solver,
        cg_steps,
    );
    let data = load(&cfg);
    let (n_users, n_items) = (data.user_ids.len(), data.item_ids.len());
    let pairs: Vec<(u32, u32, f32, i64)> = data
        .pairs
        .iter()
        .map(|&(u, i, s, t)| (u, i, 1.0 + cfg.alpha * s, t))
        .collect();
    let mut split = metrics::temporal_split(n_users, n_items, &pairs, fraction);
    if split.test.iter().all(|t| t.is_empty()) {
        PersonalizeError::NotReady {
            message: "no user has two or more items, so nothing can be held out".into(),
            hint: "Evaluation needs users with several interactions.".into(),
        }
        .raise();
    }
    let purchased: Option<std::collections::HashSet<(u32, u32)>> =
        purchases_only.then(|| data.purchases.iter().copied().collect());
    let scored_users =
        (min_sessions > 1).then(|| users_with_sessions(&data.user_ids, min_sessions));
    restrict_test(&mut split.test, purchased.as_ref(), scored_users.as_deref());
    if split.test.iter().all(|t| t.is_empty()) {
        PersonalizeError::NotReady {
            message: "no held-out item is left to score (purchases_only, min_sessions)".into(),
            hint: "Evaluate on all interactions, or with fewer sessions required.".into(),
        }
        .raise();
    }
    let pool = pool();
    let model = selection::train_als(&split.train, &cfg.params, &pool, &Backend);
    let k = k as usize;
    let als_rank = metrics::factor_rankings(
        &split.train,
        &split.test,
        model.user_factors.as_slice().expect("contiguous"),
        model.item_factors.as_slice().expect("contiguous"),
        cfg.params.factors,
        k,
        &pool,
    );
    let pop_rank = metrics::popularity_rankings(&split.train, &split.test, k);
    let mut results = vec![
        (
            "als",
            metrics::summarise(&als_rank, &split.test, k, n_items),
        ),
        (
            "popularity",
            metrics::summarise(&pop_rank, &split.test, k, n_items),
        ),
    ];
    // Recency-weighted popularity, from the decayed strengths of the same split.
    let mut strength_split = metrics::temporal_split(n_users, n_items, &data.pairs, fraction);
    // Every held-out pair, before the options narrow what is scored: none may train `auto`'s
    // choice below.
    let held_out = strength_split.test.clone();
    restrict_test(
        &mut strength_split.test,
        purchased.as_ref(),
        scored_users.as_deref(),
    );
    let trending = rank(&Fitted::Trending, &strength_split, &[], k, &pool);
    results.push((
        "trending",
        metrics::summarise(&trending, &strength_split.test, k, n_items),
    ));
    // What train() with no arguments would serve: its own choice, made on a validation split
    // of the training part alone (each user's latest fifth of what is left), refitted on the
    // training part and scored on the held-out items like the others.
    let inner_pairs: Vec<(u32, u32, f32, i64)> = data
        .pairs
        .iter()
        .filter(|p| !held_out[p.0 as usize].contains(&p.1))
        .copied()
        .collect();
    let inner = metrics::temporal_split(n_users, n_items, &inner_pairs, VALIDATION_FRACTION);
    drop(inner_pairs);
    if inner.test.iter().any(|t| !t.is_empty()) {
        let candidates = auto_candidates(
            &strength_split.train,
            default_neighbors(n_items),
            cfg.params.seed,
            &pool,
            &Backend,
        );
        let trials = choose(
            candidates,
            &inner,
            &pool,
            true,
            selection_time_budget(),
            &Backend,
        );
        let chosen = trials[best_trial(&trials)].candidate.clone();
        pgrx::notice!(
            "pg_personalize: auto chose {} {} on the training part",
            chosen.family(),
            chosen.params()
        );
        let fitted = fit(&chosen, &strength_split.train, &pool, &Backend);
        let (_, order) = popularity_order(&strength_split.train);
        let ranked = rank(&fitted, &strength_split, &order, k, &pool);
        results.push((
            "auto",
            metrics::summarise(&ranked, &strength_split.test, k, n_items),
        ));
    }
    // EASE at the middle of train()'s λ grid, on the binary pattern of the same split.
    if ease_fits(n_items, &Backend) {
        let l2 = (0.5 * mean_users_per_item(&split.train)).max(1.0);
        let gram = pool.install(|| ease::gram(&split.train, &split.train.transpose()));
        let penalty = ease::Penalty::l2(l2);
        if let Some(b) = selection::solve_interruptibly(
            gram,
            n_items,
            penalty,
            default_neighbors(n_items),
            &pool,
            &Backend,
        ) {
            let (_, order) = popularity_order(&split.train);
            let ranked = item_item::rankings(&b, &split.train, &split.test, &order, k, &pool);
            results.push(("ease", metrics::summarise(&ranked, &split.test, k, n_items)));
        }
    }
    // RP3beta at β = 0.5, the middle of train()'s grid.
    let neighbors = default_neighbors(n_items);
    if rp3beta_fits(
        &split.train,
        neighbors,
        pool.current_num_threads(),
        &Backend,
    ) {
        let fitted = fit(
            &Candidate::Rp3beta {
                beta: 0.5,
                neighbors,
            },
            &split.train,
            &pool,
            &Backend,
        );
        let (_, order) = popularity_order(&split.train);
        let ranked = rank(&fitted, &split, &order, k, &pool);
        results.push((
            "rp3beta",
            metrics::summarise(&ranked, &split.test, k, n_items),
        ));
    }
    let stored = json!(results
        .iter()
        .map(|(m, r)| (
            m.to_string(),
            json!({"users": r.users, "precision": r.precision,
            "recall": r.recall, "ndcg": r.ndcg, "map": r.map, "coverage": r.coverage})
        ))
        .collect::<serde_json::Map<_, _>>());
    let args: [pgrx::datum::DatumWithOid; 5] = [
        name.as_str().into(),
        pgrx::JsonB({
            let mut p = params_json(&cfg);
            p["purchases_only"] = json!(purchases_only);
            p["min_sessions"] = json!(min_sessions);
            p
        })
        .into(),
        (k as i32).into(),
        fraction.into(),
        pgrx::JsonB(stored).into(),
    ];
    Spi::run_with_args(
        "INSERT INTO personalize.evaluations (model_name, model_id, params, k, test_fraction, results) \
         SELECT $1, (SELECT model_id FROM personalize.models WHERE name = $1 AND status = 'active'), \
                $2, $3, $4, $5",
        &args,
    )
    .unwrap_or_else(|e| {
        PersonalizeError::NotReady {
            message: format!("storing the evaluation failed: {e}"),
            hint: "Check that personalize.evaluations exists and is writable.".into(),
        }
        .raise()
    });
    TableIterator::new(results.into_iter().map(move |(method, r)| {
        (
            method.to_string(),
            k as i32,
            r.users as i64,
            r.precision,
            r.recall,
            r.ndcg,
            r.map,
            r.coverage,
        )
    }))
}
