//! Training and offline evaluation: `train()` and `evaluate()`.

use std::time::Instant;

use pgrx::prelude::*;
use serde_json::json;

use crate::core::als::{self, AlsParams, IterationReport, Solver, Stopped};
use crate::core::csr::Csr;
use crate::core::metrics;
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

fn confidences(n_users: usize, n_items: usize, pairs: &[(u32, u32, f32, i64)], alpha: f32) -> Csr {
    let rows: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let cols: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    let vals: Vec<f32> = pairs.iter().map(|p| 1.0 + alpha * p.2).collect();
    Csr::from_triplets(n_users, n_items, &rows, &cols, &vals)
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

/// Trains implicit-feedback ALS on the event log and makes the result the active model of
/// `model_name`, in the caller's transaction.
// pgrx reads the column names from the spelled-out TableIterator type (an alias hides them).
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn train(
    model_name: default!(Option<&str>, "'default'"),
    factors: default!(Option<i32>, 64),
    iterations: default!(Option<i32>, 15),
    regularization: default!(Option<f32>, 0.01),
    alpha: default!(Option<f32>, 1.0),
    window: default!(Option<Interval>, "NULL"),
    as_of: default!(Option<TimestampWithTimeZone>, "NULL"),
    seed: default!(Option<i64>, 42),
    solver: default!(Option<&str>, "'cg'"),
    cg_steps: default!(Option<i32>, 3),
) -> TableIterator<
    'static,
    (
        name!(model_id, i64),
        name!(model_name, String),
        name!(users, i32),
        name!(items, i32),
        name!(interactions, i64),
        name!(final_loss, f64),
        name!(read_seconds, f64),
        name!(train_seconds, f64),
        name!(write_seconds, f64),
    ),
> {
    crate::pg::require_writable(c"train()");
    let name = self::model_name(model_name);
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
    let t_read = Instant::now();
    let mut data = load(&cfg);
    let m = confidences(
        data.user_ids.len(),
        data.item_ids.len(),
        &data.pairs,
        cfg.alpha,
    );
    // What the model rows need from the pairs, before they go: the CSR holds the rest, and
    // the pairs would otherwise stay allocated through the training (24 bytes each).
    let mut popularity = vec![0f32; data.item_ids.len()];
    for p in &data.pairs {
        popularity[p.1 as usize] += 1.0;
    }
    drop(std::mem::take(&mut data.pairs));
    let read_seconds = t_read.elapsed().as_secs_f64();
    let t_train = Instant::now();
    let model = run_als(&m, &cfg.params);
    let train_seconds = t_train.elapsed().as_secs_f64();
    let t_write = Instant::now();
    let losses: Vec<f64> = model.reports.iter().map(|r| r.loss).collect();
    let final_loss = *losses.last().unwrap_or(&f64::NAN);
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
            format!("training diverged (final loss {final_loss}); the active model is unchanged"),
            "Lower alpha (confidence = 1 + alpha * strength must stay well inside float range) \
             or raise regularization.",
        )
        .raise();
    }
    let model_id = Spi::connect_mut(|client| {
        let id = model_store::insert_model(
            client,
            model_store::ModelRow {
                name: &name,
                params: params_json(&cfg),
                as_of: cfg.as_of,
                n_users: data.user_ids.len() as i32,
                n_items: data.item_ids.len() as i32,
                n_interactions: m.nnz() as i64,
                losses,
                seconds: model.reports.iter().map(|r| r.seconds).collect(),
                read_seconds,
                train_seconds,
            },
        );
        // Serving leaves a user's purchases out of their recommendations: stored with the user,
        // one lookup instead of a read of all their events. A window hides older purchases,
        // so a windowed model stores none and serving reads them from the events.
        let purchases = cfg
            .window
            .is_none()
            .then(|| model_store::PurchaseLists::from_pairs(data.user_ids.len(), &data.purchases));
        model_store::insert_factors(
            client,
            id,
            &data.user_ids,
            &model.user_factors,
            model_store::FactorRows::Users(purchases.as_ref()),
        );
        model_store::insert_factors(
            client,
            id,
            &data.item_ids,
            &model.item_factors,
            model_store::FactorRows::Items {
                popularity: &popularity,
            },
        );
        let write_seconds = t_write.elapsed().as_secs_f64();
        model_store::activate(client, id, &name, write_seconds);
        id
    });
    TableIterator::once((
        model_id,
        name,
        data.user_ids.len() as i32,
        data.item_ids.len() as i32,
        m.nnz() as i64,
        final_loss,
        read_seconds,
        train_seconds,
        t_write.elapsed().as_secs_f64(),
    ))
}

/// Temporal hold-out evaluation of a training configuration against a popularity baseline.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn evaluate(
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
    let split = metrics::temporal_split(n_users, n_items, &pairs, fraction);
    if split.test.iter().all(|t| t.is_empty()) {
        PersonalizeError::NotReady {
            message: "no user has two or more items, so nothing can be held out".into(),
            hint: "Evaluation needs users with several interactions.".into(),
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
    let results = [
        (
            "als",
            metrics::summarise(&als_rank, &split.test, k, n_items),
        ),
        (
            "popularity",
            metrics::summarise(&pop_rank, &split.test, k, n_items),
        ),
    ];
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
        pgrx::JsonB(params_json(&cfg)).into(),
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
