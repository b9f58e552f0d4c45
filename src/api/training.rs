//! Training and offline evaluation: `train()` and `evaluate()`.

use std::time::Instant;

use pgrx::prelude::*;
use serde_json::json;

use crate::core::als::{self, AlsParams, IterationReport, Solver, Stopped};
use crate::core::csr::Csr;
use crate::core::ease;
use crate::core::item_item::{self, ItemItem};
use crate::core::metrics;
use crate::core::rp3beta;
use crate::error::{required, PersonalizeError};
use crate::gucs;
use crate::pg::interactions::{self, Interactions};
use crate::pg::model_store;

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

fn run_als(m: &Csr, params: &AlsParams) -> als::AlsModel {
    let pool = pool();
    let total = params.iterations;
    let mut on_iteration = |r: &IterationReport| {
        // The selection's fits skip the loss: their iterations are not worth a NOTICE each.
        if !params.compute_loss {
            return;
        }
        pgrx::notice!(
            "pg_personalize: iteration {}/{}: loss {:.6}, {:.3} s",
            r.iteration,
            total,
            r.loss,
            r.seconds
        );
    };
    // Runs on this (the backend's main) thread between blocks of rows: a query cancel or
    // statement_timeout raises here and unwinds out of the training.
    let mut between_steps = || -> Result<(), Stopped> {
        pgrx::check_for_interrupts!();
        Ok(())
    };
    als::train(m, params, &pool, &mut on_iteration, &mut between_steps)
        .unwrap_or_else(|Stopped| unreachable!("only interrupts stop training, and they raise"))
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

/// One model that train() may fit.
#[derive(Debug, Clone)]
enum Candidate {
    Popularity,
    /// Recency-weighted popularity: items by the sum of their decayed interaction strengths
    /// (each event halved every half-life of its type), so what sells now comes first.
    Trending,
    /// EASE with λ = `l2` and input dropout `dropout` (`ease::Penalty`).
    Ease {
        l2: f64,
        dropout: f64,
        neighbors: usize,
    },
    /// Item-item weights of a random walk item → user → item, popular targets damped by β.
    Rp3beta {
        beta: f64,
        neighbors: usize,
    },
    Als {
        params: AlsParams,
        alpha: f32,
    },
    /// `ease_share` of an EASE model and the rest of an RP3beta one, each on the scale of its
    /// mean row L1 norm (`item_item::blend`).
    Blend {
        l2: f64,
        dropout: f64,
        beta: f64,
        ease_share: f64,
        neighbors: usize,
        rp3beta_neighbors: usize,
    },
}

impl Candidate {
    /// Rank for model selection, simplest first: with no significant difference on the
    /// validation split, the simpler family is kept (popularity, trending, then the item-item
    /// models with their exact fold-in, then ALS, then a blend of two models). Among blends,
    /// the nearer a blend is to one of its two models the simpler it is: a share that only the
    /// validation split's noise prefers over a share closer to a single model is not kept.
    /// (On Online Retail the validation split preferred ½ EASE by less than its standard
    /// error, and the refit on all the data scored 0.7 and 0.9 higher: the larger training set
    /// favours EASE.)
    fn simplicity(&self) -> usize {
        match self {
            Candidate::Popularity => 0,
            Candidate::Trending => 1,
            Candidate::Rp3beta { .. } => 2,
            Candidate::Ease { .. } => 3,
            Candidate::Als { .. } => 4,
            Candidate::Blend { ease_share, .. } => {
                5 + (20.0 * ease_share.min(1.0 - ease_share)).round() as usize
            }
        }
    }

    fn family(&self) -> &'static str {
        match self {
            Candidate::Popularity => "popularity",
            Candidate::Trending => "trending",
            Candidate::Ease { .. } => "ease",
            Candidate::Rp3beta { .. } => "rp3beta",
            Candidate::Blend { .. } => "blend",
            Candidate::Als { .. } => "als",
        }
    }

    fn params(&self) -> serde_json::Value {
        match self {
            Candidate::Popularity | Candidate::Trending => json!({}),
            Candidate::Ease {
                l2,
                dropout,
                neighbors,
            } => json!({"l2": l2, "dropout": dropout, "neighbors": neighbors}),
            Candidate::Rp3beta { beta, neighbors } => {
                json!({"beta": beta, "neighbors": neighbors})
            }
            Candidate::Blend {
                l2,
                dropout,
                beta,
                ease_share,
                neighbors,
                rp3beta_neighbors,
            } => json!({"ease_share": ease_share, "l2": l2, "dropout": dropout, "beta": beta,
                        "neighbors": neighbors, "rp3beta_neighbors": rp3beta_neighbors}),
            Candidate::Als { params, alpha } => json!({
                "factors": params.factors,
                "iterations": params.iterations,
                "regularization": params.regularization,
                "alpha": alpha,
                "cg_steps": params.cg_steps,
                "solver": match params.solver {
                    Solver::ConjugateGradient => "cg",
                    Solver::Cholesky => "cholesky",
                },
                "frequency_scaling": params.reg_exponent,
            }),
        }
    }
}

/// A fitted candidate.
enum Fitted {
    Popularity,
    Trending,
    /// EASE or RP3beta: sparse item-item weights.
    ItemItem(ItemItem),
    Als(als::AlsModel),
}

/// The most factors of the ALS grid `auto` tries.
const ALS_GRID_MAX_FACTORS: usize = 128;
/// How many weights an item-item model keeps per item by default: 1,000, fewer for catalogues
/// so large that n × 1,000 weights would pass 40 million (a 320 MB model image, one per server:
/// see `pg::model_files`). On Online Retail's held-out split, EASE at 500 weights per item
/// scored 1.4% below its dense weights and at 1,000 0.5% below; a call adds the weights of
/// each history item, so serving time grows with this number (README, Benchmarks).
fn default_neighbors(n_items: usize) -> usize {
    (40_000_000 / n_items.max(1)).clamp(100, 1_000)
}
/// The validation split train() chooses on: each user's latest fifth of their items.
const VALIDATION_FRACTION: f64 = 0.2;
/// Rank cut-off of the validation metric.
const VALIDATION_K: usize = 10;

/// The ALS configurations `auto` tries, from small and strongly regularized to large: small
/// shops overfit 64 factors at regularization 0.01 (Rendle et al. 2022), while large dense ones
/// want light regularization and confidence; the validation split keeps whichever fits.
fn als_grid(seed: u64) -> Vec<Candidate> {
    [
        (16, 1.0, 5.0, 0.0),
        (32, 0.01, 1.0, 0.0),
        (64, 1.0, 5.0, 0.0),
        (64, 20.0, 5.0, 0.0),
        (ALS_GRID_MAX_FACTORS, 10.0, 10.0, 0.0),
        // Frequency-scaled (Rendle et al. 2022): the mid and large configurations again, each
        // user's and item's λ scaled with its number of interactions.
        (64, 20.0, 5.0, 1.0),
        (ALS_GRID_MAX_FACTORS, 10.0, 10.0, 1.0),
    ]
    .into_iter()
    .map(
        |(factors, regularization, alpha, reg_exponent)| Candidate::Als {
            params: AlsParams {
                factors,
                iterations: 15,
                regularization,
                cg_steps: 3,
                solver: Solver::ConjugateGradient,
                seed,
                compute_loss: false,
                reg_exponent,
            },
            alpha,
        },
    )
    .collect()
}

/// λ for EASE: multiples of the mean number of users per item (the Gram matrix's diagonal),
/// the scale at which λ starts to matter; each with `dropout`.
fn ease_grid(mean_item_count: f64, dropout: f64, neighbors: usize) -> Vec<Candidate> {
    [0.125, 0.5, 2.0]
        .into_iter()
        .map(|f| Candidate::Ease {
            l2: (f * mean_item_count).max(1.0),
            dropout,
            neighbors,
        })
        .collect()
}

/// β for RP3beta: from no damping of popular items (0) to strong (0.75); Dacrema et al. found
/// the best β of their datasets between 0 and 1.
fn rp3beta_grid(neighbors: usize) -> Vec<Candidate> {
    [0.0, 0.25, 0.5, 0.75]
        .into_iter()
        .map(|beta| Candidate::Rp3beta { beta, neighbors })
        .collect()
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

/// Whether RP3beta's weights for `strengths` fit the training memory budget; says why not.
fn rp3beta_fits(strengths: &Csr, neighbors: usize, threads: usize) -> bool {
    within_memory_budget(
        rp3beta::fit_bytes(strengths, neighbors, threads),
        &format!(
            "RP3beta skipped: {} items × {neighbors} neighbours need",
            strengths.n_cols
        ),
        "for their weights",
    ) && strengths.n_cols >= 2
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

/// The highest dropout train() takes or tries.
const MAX_DROPOUT: f64 = 0.99;

/// The `dropout` argument, checked (None: chosen on the validation split).
fn ease_dropout(spec: &Spec) -> Option<f64> {
    spec.dropout.inspect(|&p| {
        if !(p.is_finite() && (0.0..=MAX_DROPOUT).contains(&p)) {
            PersonalizeError::invalid(
                format!("dropout must be between 0 and 0.99, not {p}"),
                "dropout is the probability with which EASE drops each history item in \
                 training, shrinking popular items' weights (0: plain EASE); omit it to choose \
                 it on a validation split.",
            )
            .raise();
        }
    })
}

/// Whether EASE's dense solve for `n_items` fits the training memory budget; says why not.
fn ease_fits(n_items: usize) -> bool {
    within_memory_budget(
        ease::solve_bytes(n_items),
        &format!("EASE skipped: {n_items} items need"),
        "for the item-item solve",
    ) && n_items >= 2
}

/// Whether `need` bytes fit the training memory budget; otherwise a NOTICE
/// "`what` N MB `for_what`, over the training memory budget (…)".
fn within_memory_budget(need: usize, what: &str, for_what: &str) -> bool {
    let limit = gucs::training_memory_limit_bytes();
    if need > limit {
        pgrx::notice!(
            "pg_personalize: {what} {} MB {for_what}, over the training memory budget ({} MB, \
             personalize.training_memory_mb)",
            need / (1024 * 1024),
            limit / (1024 * 1024)
        );
    }
    need <= limit
}

/// Fits one candidate on `strengths` (users × items, decayed interaction strengths).
fn fit(c: &Candidate, strengths: &Csr, pool: &rayon::ThreadPool) -> Fitted {
    pgrx::check_for_interrupts!();
    match c {
        Candidate::Popularity => Fitted::Popularity,
        Candidate::Trending => Fitted::Trending,
        Candidate::Ease {
            l2,
            dropout,
            neighbors,
        } => {
            let by_item = strengths.transpose();
            let gram = pool.install(|| ease::gram(strengths, &by_item));
            pgrx::check_for_interrupts!();
            let n = strengths.n_cols;
            let penalty = ease::Penalty {
                l2: *l2,
                dropout: *dropout,
            };
            match solve_interruptibly(gram, n, penalty, *neighbors, pool) {
                Some(b) => Fitted::ItemItem(b),
                None => PersonalizeError::invalid(
                    format!("EASE with l2 = {l2} has no solution on this data"),
                    "Raise l2.",
                )
                .raise(),
            }
        }
        Candidate::Rp3beta { beta, neighbors } => {
            let walk = rp3beta::Walk::new(strengths, *beta as f32);
            let n = walk.n_items();
            let mut rows = Vec::with_capacity(n);
            // Blocks of rows on the pool; cancel and statement_timeout are checked between.
            for start in (0..n).step_by(RP3BETA_BLOCK) {
                let block = start..(start + RP3BETA_BLOCK).min(n);
                rows.extend(pool.install(|| walk.rows(block, *neighbors)));
                pgrx::check_for_interrupts!();
            }
            Fitted::ItemItem(ItemItem::from_rows(rows))
        }
        Candidate::Als { params, alpha } => {
            let m = with_confidence(strengths, *alpha);
            Fitted::Als(run_als(&m, params))
        }
        Candidate::Blend {
            l2,
            dropout,
            beta,
            ease_share,
            neighbors,
            rp3beta_neighbors,
        } => {
            let part = |c: Candidate| match fit(&c, strengths, pool) {
                Fitted::ItemItem(w) => w,
                _ => unreachable!("EASE and RP3beta fit item-item weights"),
            };
            let ease = part(Candidate::Ease {
                l2: *l2,
                dropout: *dropout,
                neighbors: *neighbors,
            });
            let rp3 = part(Candidate::Rp3beta {
                beta: *beta,
                neighbors: *rp3beta_neighbors,
            });
            Fitted::ItemItem(
                pool.install(|| item_item::blend(&ease, &rp3, *ease_share, *neighbors)),
            )
        }
    }
}

/// Items per block of an RP3beta fit between interrupt checks.
const RP3BETA_BLOCK: usize = 2048;

/// EASE's dense solve on the pool while this (the backend's main) thread checks for query
/// cancel and statement_timeout every 50 ms. A cancel raises here at once; on the way out a
/// guard sets the solve's stop flag, which the solving thread reads between steps of bounded
/// work (`ease::fit_from_gram`), so the pool stops within a fraction of a second instead of
/// finishing an abandoned solve.
fn solve_interruptibly(
    gram: Vec<f64>,
    n: usize,
    penalty: ease::Penalty,
    neighbors: usize,
    pool: &rayon::ThreadPool,
) -> Option<ItemItem> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    /// Sets the flag when dropped: on return, and on the unwind of a raised cancel.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_exit = StopOnDrop(Arc::clone(&stop));
    let (tx, rx) = std::sync::mpsc::channel();
    pool.spawn(move || {
        // A panic must not escape a spawned job (rayon would abort the process): it comes
        // back as a value instead.
        let result = std::panic::catch_unwind(move || {
            ease::fit_from_gram(gram, n, penalty, neighbors, &|| {
                stop.load(Ordering::Relaxed)
            })
        });
        let _ = tx.send(result);
    });
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(Ok(Ok(result))) => return result,
            Ok(Ok(Err(ease::Stopped))) => {
                unreachable!("the solve stops only once this function has returned")
            }
            Ok(Err(_)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                PersonalizeError::NotReady {
                    message: format!("the EASE solve for {n} items failed"),
                    hint: "Train another family (model_type => 'als') and report this.".into(),
                }
                .raise()
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                pgrx::check_for_interrupts!();
            }
        }
    }
}

/// The ALS input: confidence 1 + alpha · strength.
fn with_confidence(strengths: &Csr, alpha: f32) -> Csr {
    let mut m = strengths.clone();
    for v in &mut m.data {
        *v = 1.0 + alpha * *v;
    }
    m
}

/// Items by their number of users in `m`, most first (ties by index).
fn popularity_order(m: &Csr) -> (Vec<f32>, Vec<u32>) {
    item_order(m, |_| 1.0)
}

/// Per item the sum of `weight(value)` over `m`'s entries, and the items by it, highest first
/// (ties by index): popularity (every entry counts 1) and trending (decayed strengths).
fn item_order(m: &Csr, weight: impl Fn(f32) -> f32) -> (Vec<f32>, Vec<u32>) {
    let mut sum = vec![0f32; m.n_cols];
    for (&i, &v) in m.indices.iter().zip(&m.data) {
        sum[i as usize] += weight(v);
    }
    let mut order: Vec<u32> = (0..m.n_cols as u32).collect();
    order.sort_by(|&a, &b| sum[b as usize].total_cmp(&sum[a as usize]).then(a.cmp(&b)));
    (sum, order)
}

/// How far the λ search may leave the grid: 4⁵ = 1024 times past its edge.
const MAX_L2_STEPS: usize = 5;

/// `select`, then a search along EASE's λ while its best is at an edge of what was tried:
/// λ × 4 past the top, λ / 4 below the bottom (down to 1), up to `MAX_L2_STEPS` fits,
/// stopping as soon as a step does not improve; then λ × 2 and λ / 2 around the best. The grid
/// is relative to the data (users per item), and the best λ of a shop can still sit outside
/// it. With `search_dropout`, then the dropout step (`search_dropout`); then RP3beta's β.
fn select_searching_l2(
    candidates: Vec<Candidate>,
    split: &metrics::Split,
    pool: &rayon::ThreadPool,
    budget: &TimeBudget,
    search_dropout: bool,
) -> Vec<Trial> {
    let mut trials = select(candidates, split, pool, budget);
    for _ in 0..MAX_L2_STEPS {
        let tried = ease_trials(&trials);
        let Some(best) = best_ease(&tried) else {
            break;
        };
        let highest = tried.iter().map(|t| t.l2).fold(f64::MIN, f64::max);
        let lowest = tried.iter().map(|t| t.l2).fold(f64::MAX, f64::min);
        let next = if best.l2 >= highest {
            best.l2 * 4.0
        } else if best.l2 <= lowest && best.l2 / 4.0 >= 1.0 {
            best.l2 / 4.0
        } else {
            break;
        };
        let more = select(vec![best.with(next, best.dropout)], split, pool, budget);
        let improved = more.iter().any(|t| t.ndcg > best.ndcg);
        trials.extend(more);
        keep_best_fits(&mut trials);
        if !improved {
            break;
        }
    }
    // Then half a step either side of the best (×2, ÷2), where nothing that close was tried.
    let tried = ease_trials(&trials);
    if let Some(best) = best_ease(&tried) {
        let near = |x: f64| tried.iter().any(|t| (t.l2 / x).max(x / t.l2) < 1.5);
        let refine: Vec<Candidate> = [best.l2 * 2.0, best.l2 / 2.0]
            .into_iter()
            .filter(|&x| x >= 1.0 && !near(x))
            .map(|l2| best.with(l2, best.dropout))
            .collect();
        if !refine.is_empty() {
            trials.extend(select(refine, split, pool, budget));
            keep_best_fits(&mut trials);
        }
    }
    if search_dropout {
        search_ease_dropout(&mut trials, split, pool, budget);
    }
    search_beta(&mut trials, split, pool, budget);
    trials
}

/// An EASE trial's parameters and validation NDCG@10.
#[derive(Clone, Copy)]
struct EaseTrial {
    l2: f64,
    dropout: f64,
    neighbors: usize,
    ndcg: f64,
}

impl EaseTrial {
    fn with(&self, l2: f64, dropout: f64) -> Candidate {
        Candidate::Ease {
            l2,
            dropout,
            neighbors: self.neighbors,
        }
    }

    /// What the penalty adds to the diagonal of an item with `users` users.
    fn on_diagonal(&self, users: f64) -> f64 {
        self.l2 + self.dropout / (1.0 - self.dropout) * users
    }
}

fn ease_trials(trials: &[Trial]) -> Vec<EaseTrial> {
    trials
        .iter()
        .filter_map(|t| match t.candidate {
            Candidate::Ease {
                l2,
                dropout,
                neighbors,
            } => Some(EaseTrial {
                l2,
                dropout,
                neighbors,
                ndcg: t.ndcg,
            }),
            _ => None,
        })
        .collect()
}

fn best_ease(tried: &[EaseTrial]) -> Option<EaseTrial> {
    tried
        .iter()
        .copied()
        .max_by(|a, b| a.ndcg.total_cmp(&b.ndcg))
}

/// EASE's dropout (`ease::Penalty`), tried after λ: the best λ's penalty on an item of mean
/// popularity, half of it moved into the dropout term (λ / 2 on every item, and dropout
/// p with p / (1 − p) × mean users = λ / 2); if that improves, the same split at twice and half
/// the total. Up to three fits. Half is the middle of the range: on Online Retail's
/// validation split moving 50% of the penalty scored above 0%, 80% and 95% at each of three
/// totals (CHANGELOG 0.9.0). Dropout shrinks the weights of popular items the more, the more
/// users they have, which λ alone cannot.
fn search_ease_dropout(
    trials: &mut Vec<Trial>,
    split: &metrics::Split,
    pool: &rayon::ThreadPool,
    budget: &TimeBudget,
) {
    let Some(best) = best_ease(&ease_trials(trials)) else {
        return;
    };
    let mean = mean_users_per_item(&split.train);
    if best.dropout != 0.0 || mean <= 0.0 {
        return;
    }
    // λ and dropout that put `total` on an item of mean popularity, half in each term.
    let halved = |total: f64| {
        let rho = total / 2.0 / mean;
        best.with((total / 2.0).max(1.0), (rho / (1.0 + rho)).min(MAX_DROPOUT))
    };
    let total = best.on_diagonal(mean);
    let first = select(vec![halved(total)], split, pool, budget);
    let improved = first.iter().any(|t| t.ndcg > best.ndcg);
    trials.extend(first);
    keep_best_fits(trials);
    if improved {
        trials.extend(select(
            vec![halved(total * 2.0), halved(total / 2.0)],
            split,
            pool,
            budget,
        ));
        keep_best_fits(trials);
    }
}

/// How far the β search may leave RP3beta's grid, in steps of ¼.
const MAX_BETA_STEPS: usize = 3;

/// RP3beta's β past the edge of the grid while the best sits at an edge and each step improves:
/// ¼ more above the top (up to 2), ¼ less below the bottom (down to −¾: a negative β favours
/// popular items, which some shops' histories do); then the best β with a fifth of the
/// neighbours.
fn search_beta(
    trials: &mut Vec<Trial>,
    split: &metrics::Split,
    pool: &rayon::ThreadPool,
    budget: &TimeBudget,
) {
    let tried = |trials: &[Trial]| -> Vec<(f64, usize, f64)> {
        trials
            .iter()
            .filter_map(|t| match t.candidate {
                Candidate::Rp3beta { beta, neighbors } => Some((beta, neighbors, t.ndcg)),
                _ => None,
            })
            .collect()
    };
    for _ in 0..MAX_BETA_STEPS {
        let seen = tried(trials);
        let Some(&(best, neighbors, best_ndcg)) = seen.iter().max_by(|a, b| a.2.total_cmp(&b.2))
        else {
            return;
        };
        let highest = seen.iter().map(|t| t.0).fold(f64::MIN, f64::max);
        let lowest = seen.iter().map(|t| t.0).fold(f64::MAX, f64::min);
        let next = if best >= highest && best + 0.25 <= 2.0 {
            best + 0.25
        } else if best <= lowest && best - 0.25 >= -0.75 {
            best - 0.25
        } else {
            break;
        };
        let more = select(
            vec![Candidate::Rp3beta {
                beta: next,
                neighbors,
            }],
            split,
            pool,
            budget,
        );
        let improved = more.iter().any(|t| t.ndcg > best_ndcg);
        trials.extend(more);
        keep_best_fits(trials);
        if !improved {
            break;
        }
    }
    let seen = tried(trials);
    if let Some(&(beta, neighbors, _)) = seen.iter().max_by(|a, b| a.2.total_cmp(&b.2)) {
        let fewer = (neighbors / 5).max(20);
        if fewer < neighbors && !seen.iter().any(|t| t.0 == beta && t.1 == fewer) {
            trials.extend(select(
                vec![Candidate::Rp3beta {
                    beta,
                    neighbors: fewer,
                }],
                split,
                pool,
                budget,
            ));
            keep_best_fits(trials);
        }
    }
}

/// Top-k lists of a fitted candidate for the split's test users, their training items left out.
fn rank(
    fitted: &Fitted,
    split: &metrics::Split,
    popularity_order: &[u32],
    k: usize,
    pool: &rayon::ThreadPool,
) -> Vec<Vec<u32>> {
    match fitted {
        Fitted::Popularity => metrics::popularity_rankings(&split.train, &split.test, k),
        Fitted::Trending => {
            let (weights, _) = trending_order(&split.train);
            (0..split.train.n_rows)
                .map(|u| {
                    if split.test[u].is_empty() {
                        Vec::new()
                    } else {
                        let scores = weights.iter().enumerate().map(|(i, &w)| (i as u32, w));
                        metrics::top_k(scores, split.train.row(u).0, k)
                    }
                })
                .collect()
        }
        Fitted::ItemItem(b) => {
            item_item::rankings(b, &split.train, &split.test, popularity_order, k, pool)
        }
        Fitted::Als(m) => metrics::factor_rankings(
            &split.train,
            &split.test,
            m.user_factors.as_slice().expect("contiguous"),
            m.item_factors.as_slice().expect("contiguous"),
            m.item_factors.ncols(),
            k,
            pool,
        ),
    }
}

/// What `auto` tries, cheapest first (so a spent time budget skips the costly ones):
/// popularity, trending, RP3beta's β grid, EASE's λ grid when its solve fits the memory
/// budget, and the ALS grid.
fn auto_candidates(
    strengths: &Csr,
    neighbors: usize,
    seed: u64,
    pool: &rayon::ThreadPool,
) -> Vec<Candidate> {
    let mut c = vec![Candidate::Popularity, Candidate::Trending];
    if rp3beta_fits(strengths, neighbors, pool.current_num_threads()) {
        c.extend(rp3beta_grid(neighbors));
    }
    if ease_fits(strengths.n_cols) {
        c.extend(ease_grid(mean_users_per_item(strengths), 0.0, neighbors));
    }
    c.extend(als_grid(seed));
    c
}

/// The trial to keep: the simplest whose validation NDCG@10 is within one standard error of
/// the best's (`metrics::simplest_within_one_se`): a blend of twenty candidates' noise does not
/// decide the family.
fn best_trial(trials: &[Trial]) -> usize {
    let per_user: Vec<&[f64]> = trials.iter().map(|t| t.per_user.as_slice()).collect();
    let simplicity: Vec<usize> = trials.iter().map(|t| t.candidate.simplicity()).collect();
    metrics::simplest_within_one_se(&per_user, &simplicity)
}

/// Items by the sum of their decayed strengths in `m`, highest first (ties by index).
fn trending_order(m: &Csr) -> (Vec<f32>, Vec<u32>) {
    item_order(m, |strength| strength)
}

/// How long the choice among candidates may take: a candidate starts only while the budget
/// lasts (the refit of the winner on all the data comes after it). Popularity and trending
/// cost milliseconds and are always tried, so there is always something to choose (a budget
/// of 0 chooses between them alone).
struct TimeBudget {
    start: Instant,
    limit: std::time::Duration,
}

impl TimeBudget {
    fn from_setting() -> TimeBudget {
        TimeBudget {
            start: Instant::now(),
            limit: std::time::Duration::from_secs(gucs::TRAINING_TIME_BUDGET.get().max(0) as u64),
        }
    }

    fn spent(&self) -> bool {
        self.start.elapsed() >= self.limit
    }

    /// Whether `c` must be left out because the budget is spent (says so in a NOTICE).
    /// Popularity and trending cost milliseconds and always run.
    fn skips(&self, c: &Candidate) -> bool {
        let cheap = matches!(c, Candidate::Popularity | Candidate::Trending);
        let skip = !cheap && self.spent();
        if skip {
            pgrx::notice!(
                "pg_personalize: candidate {} {} skipped: the selection's time budget ({} s, \
                 personalize.training_time_budget) is spent",
                c.family(),
                c.params(),
                self.limit.as_secs()
            );
        }
        skip
    }
}

/// One candidate's result on the validation split.
struct Trial {
    candidate: Candidate,
    ndcg: f64,
    recall: f64,
    seconds: f64,
    /// NDCG@10 of each validation user: what the choice weighs differences against.
    per_user: Vec<f64>,
    /// The weights of the best EASE and the best RP3beta trial so far, kept for the blends
    /// (`keep_best_fits` drops the others as soon as they are beaten).
    fitted: Option<ItemItem>,
}

/// Drops the kept weights of every item-item trial but the best of its family.
fn keep_best_fits(trials: &mut [Trial]) {
    for family in ["ease", "rp3beta"] {
        let best = trials
            .iter()
            .enumerate()
            .filter(|(_, t)| t.candidate.family() == family && t.fitted.is_some())
            .max_by(|a, b| a.1.ndcg.total_cmp(&b.1.ndcg).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i);
        for (i, t) in trials.iter_mut().enumerate() {
            if t.candidate.family() == family && Some(i) != best {
                t.fitted = None;
            }
        }
    }
}

/// The blend shares of EASE tried against RP3beta.
const BLEND_SHARES: [f64; 4] = [0.9, 0.7, 0.5, 0.3];

/// Blends of the best EASE and the best RP3beta trial (their weights, kept by `select`), scored
/// on the same validation split: a blend costs a merge of two sparse models, no refit. On
/// Online Retail 0.7 EASE + 0.3 RP3beta scored 1.6% above EASE alone (bench_quality.sh).
fn blend_trials(
    trials: &mut Vec<Trial>,
    split: &metrics::Split,
    pool: &rayon::ThreadPool,
    budget: &TimeBudget,
) {
    let best_of = |family: &str| {
        trials
            .iter()
            .find(|t| t.candidate.family() == family && t.fitted.is_some())
    };
    let (Some(e), Some(r)) = (best_of("ease"), best_of("rp3beta")) else {
        return;
    };
    let (
        Candidate::Ease {
            l2,
            dropout,
            neighbors,
        },
        Candidate::Rp3beta {
            beta,
            neighbors: rp3beta_neighbors,
        },
        Some(ease),
        Some(rp3),
    ) = (&e.candidate, &r.candidate, &e.fitted, &r.fitted)
    else {
        return;
    };
    let (_, order) = popularity_order(&split.train);
    let mut blends = Vec::new();
    for ease_share in BLEND_SHARES {
        let c = Candidate::Blend {
            l2: *l2,
            dropout: *dropout,
            beta: *beta,
            ease_share,
            neighbors: *neighbors,
            rp3beta_neighbors: *rp3beta_neighbors,
        };
        if budget.skips(&c) {
            continue;
        }
        let t = Instant::now();
        let w = pool.install(|| item_item::blend(ease, rp3, ease_share, *neighbors));
        pgrx::check_for_interrupts!();
        let ranked = item_item::rankings(&w, &split.train, &split.test, &order, VALIDATION_K, pool);
        blends.push(scored_trial(c, &ranked, split, t, None));
    }
    trials.extend(blends);
}

/// Everything `auto` tries: the candidates (with EASE's λ search), then the blends of the
/// best item-item models. The kept weights are dropped before it returns.
fn choose(
    candidates: Vec<Candidate>,
    split: &metrics::Split,
    pool: &rayon::ThreadPool,
    search_dropout: bool,
) -> Vec<Trial> {
    let budget = TimeBudget::from_setting();
    let mut trials = select_searching_l2(candidates, split, pool, &budget, search_dropout);
    blend_trials(&mut trials, split, pool, &budget);
    for t in &mut trials {
        t.fitted = None;
    }
    trials
}

/// Fits each candidate on the split's training part and scores it on the held-out items;
/// NOTICE per candidate. The best NDCG@10 wins (ties: the earlier, simpler candidate).
fn select(
    candidates: Vec<Candidate>,
    split: &metrics::Split,
    pool: &rayon::ThreadPool,
    budget: &TimeBudget,
) -> Vec<Trial> {
    let (_, order) = popularity_order(&split.train);
    let mut trials = Vec::with_capacity(candidates.len());
    for c in candidates {
        if budget.skips(&c) {
            continue;
        }
        let t = Instant::now();
        let fitted = fit(&c, &split.train, pool);
        pgrx::check_for_interrupts!();
        let ranked = rank(&fitted, split, &order, VALIDATION_K, pool);
        let keep = matches!(c, Candidate::Ease { .. } | Candidate::Rp3beta { .. });
        let weights = match fitted {
            Fitted::ItemItem(w) if keep => Some(w),
            _ => None,
        };
        trials.push(scored_trial(c, &ranked, split, t, weights));
        keep_best_fits(&mut trials);
    }
    trials
}

/// A candidate's trial from its top-k lists on the validation split (fitted from `started`);
/// NOTICE with its scores.
fn scored_trial(
    candidate: Candidate,
    ranked: &[Vec<u32>],
    split: &metrics::Split,
    started: Instant,
    fitted: Option<ItemItem>,
) -> Trial {
    let r = metrics::summarise(ranked, &split.test, VALIDATION_K, split.train.n_cols);
    let per_user = metrics::ndcg_per_user(ranked, &split.test, VALIDATION_K);
    let seconds = started.elapsed().as_secs_f64();
    pgrx::notice!(
        "pg_personalize: candidate {} {}: validation NDCG@10 {:.4}, recall@10 {:.4}, {:.2} s",
        candidate.family(),
        candidate.params(),
        r.ndcg,
        r.recall,
        seconds
    );
    Trial {
        candidate,
        ndcg: r.ndcg,
        recall: r.recall,
        seconds,
        per_user,
        fitted,
    }
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
            if !ease_fits(n_items) {
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
            if !rp3beta_fits(&strengths, neighbors, pool.current_num_threads()) {
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
        _ => auto_candidates(&strengths, neighbors, seed_value as u64, &pool),
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
            let trials = choose(candidates, &split, &pool, dropout.is_none());
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
    let fitted = fit(&chosen, &strengths, &pool);
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

/// The mean number of users per item: the diagonal of EASE's Gram matrix.
fn mean_users_per_item(m: &Csr) -> f64 {
    m.nnz() as f64 / m.n_cols.max(1) as f64
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
    let model = run_als(&split.train, &cfg.params);
    let pool = pool();
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
        );
        let trials = choose(candidates, &inner, &pool, true);
        let chosen = trials[best_trial(&trials)].candidate.clone();
        pgrx::notice!(
            "pg_personalize: auto chose {} {} on the training part",
            chosen.family(),
            chosen.params()
        );
        let fitted = fit(&chosen, &strength_split.train, &pool);
        let (_, order) = popularity_order(&strength_split.train);
        let ranked = rank(&fitted, &strength_split, &order, k, &pool);
        results.push((
            "auto",
            metrics::summarise(&ranked, &strength_split.test, k, n_items),
        ));
    }
    // EASE at the middle of train()'s λ grid, on the binary pattern of the same split.
    if ease_fits(n_items) {
        let l2 = (0.5 * mean_users_per_item(&split.train)).max(1.0);
        let gram = pool.install(|| ease::gram(&split.train, &split.train.transpose()));
        let penalty = ease::Penalty::l2(l2);
        if let Some(b) =
            solve_interruptibly(gram, n_items, penalty, default_neighbors(n_items), &pool)
        {
            let (_, order) = popularity_order(&split.train);
            let ranked = item_item::rankings(&b, &split.train, &split.test, &order, k, &pool);
            results.push(("ease", metrics::summarise(&ranked, &split.test, k, n_items)));
        }
    }
    // RP3beta at β = 0.5, the middle of train()'s grid.
    let neighbors = default_neighbors(n_items);
    if rp3beta_fits(&split.train, neighbors, pool.current_num_threads()) {
        let fitted = fit(
            &Candidate::Rp3beta {
                beta: 0.5,
                neighbors,
            },
            &split.train,
            &pool,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn blend(ease_share: f64) -> Candidate {
        Candidate::Blend {
            l2: 100.0,
            dropout: 0.0,
            beta: 0.5,
            ease_share,
            neighbors: 10,
            rp3beta_neighbors: 10,
        }
    }

    #[test]
    fn a_blend_nearer_one_of_its_models_is_simpler() {
        let rank = |s: f64| blend(s).simplicity();
        assert!(rank(0.9) < rank(0.7) && rank(0.7) < rank(0.5));
        assert!(rank(0.3) < rank(0.5) && rank(0.3) == rank(0.7));
        // Every blend is less simple than either model alone, or ALS.
        let ease = Candidate::Ease {
            l2: 100.0,
            dropout: 0.0,
            neighbors: 10,
        };
        assert!(ease.simplicity() < rank(0.9));
        assert!(als_grid(1).iter().all(|c| c.simplicity() < rank(0.9)));
    }

    #[test]
    fn noise_does_not_pick_a_blend_share() {
        // Per user, blend 0.5 is ahead of blend 0.9 on some users and behind on others, with a
        // mean difference well inside one standard error: the nearer blend (0.9) is kept. When
        // 0.5 is ahead on every user, it wins.
        let near: Vec<f64> = (0..200).map(|u| (u % 7) as f64 / 10.0).collect();
        let noisy: Vec<f64> = near
            .iter()
            .enumerate()
            .map(|(u, x)| x + if u % 2 == 0 { 0.05 } else { -0.049 })
            .collect();
        let ahead: Vec<f64> = near.iter().map(|x| x + 0.01).collect();
        let simplicity = [blend(0.9).simplicity(), blend(0.5).simplicity()];
        assert_eq!(
            metrics::simplest_within_one_se(&[&near, &noisy], &simplicity),
            0
        );
        assert_eq!(
            metrics::simplest_within_one_se(&[&near, &ahead], &simplicity),
            1
        );
    }

    #[test]
    fn item_item_models_keep_a_thousand_weights_unless_the_catalogue_is_huge() {
        assert_eq!(default_neighbors(3_665), 1_000);
        assert_eq!(default_neighbors(40_000), 1_000);
        assert_eq!(default_neighbors(100_000), 400);
        assert_eq!(default_neighbors(10_000_000), 100);
    }
}
