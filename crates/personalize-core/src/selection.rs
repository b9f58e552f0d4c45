//! Model selection: the candidates `train()` may fit, how each is fitted, scored on a temporal
//! validation split and searched (EASE's λ and dropout, RP3beta's β, blends of the two), and
//! the one-standard-error choice among them. What belongs to Postgres (NOTICEs, query cancel,
//! the memory budget's setting, raising an error) is behind `Host`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::als::{self, AlsParams, IterationReport, Solver, Stopped};
use crate::csr::Csr;
use crate::ease;
use crate::item_item::{self, ItemItem};
use crate::metrics;
use crate::rp3beta;

/// What selection and fitting need from the caller's environment (in the extension: the
/// backend's main thread).
pub trait Host {
    /// Reports a step (a NOTICE).
    fn notice(&self, message: &str);
    /// Asked on the calling thread between bounded steps of work; a query cancel or
    /// statement_timeout unwinds from here.
    fn check_interrupts(&self);
    /// The training memory budget, in bytes.
    fn memory_limit_bytes(&self) -> usize;
    /// Ends the training with an error.
    fn fail(&self, failure: Failure) -> !;
}

/// Why a fit cannot go on.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// EASE's regularized Gram matrix is not positive definite at this λ.
    NoSolution { l2: f64 },
    /// EASE's solve panicked or its thread went away.
    SolveFailed { items: usize },
}

/// One model that train() may fit.
#[derive(Debug, Clone)]
pub enum Candidate {
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
    pub fn simplicity(&self) -> usize {
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

    pub fn family(&self) -> &'static str {
        match self {
            Candidate::Popularity => "popularity",
            Candidate::Trending => "trending",
            Candidate::Ease { .. } => "ease",
            Candidate::Rp3beta { .. } => "rp3beta",
            Candidate::Blend { .. } => "blend",
            Candidate::Als { .. } => "als",
        }
    }

    pub fn params(&self) -> serde_json::Value {
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
pub enum Fitted {
    Popularity,
    Trending,
    /// EASE or RP3beta: sparse item-item weights.
    ItemItem(ItemItem),
    Als(als::AlsModel),
}

/// The most factors of the ALS grid `auto` tries.
pub const ALS_GRID_MAX_FACTORS: usize = 128;
/// How many weights an item-item model keeps per item by default: 1,000, fewer for catalogues
/// so large that n × 1,000 weights would pass 40 million (a 320 MB model image, one per server:
/// see `pg::model_files`). On Online Retail's held-out split, EASE at 500 weights per item
/// scored 1.4% below its dense weights and at 1,000 0.5% below; a call adds the weights of
/// each history item, so serving time grows with this number (README, Benchmarks).
pub fn default_neighbors(n_items: usize) -> usize {
    (40_000_000 / n_items.max(1)).clamp(100, 1_000)
}
/// The validation split train() chooses on: each user's latest fifth of their items.
pub const VALIDATION_FRACTION: f64 = 0.2;
/// Rank cut-off of the validation metric.
pub const VALIDATION_K: usize = 10;

/// The ALS configurations `auto` tries, from small and strongly regularized to large: small
/// shops overfit 64 factors at regularization 0.01 (Rendle et al. 2022), while large dense ones
/// want light regularization and confidence; the validation split keeps whichever fits.
pub fn als_grid(seed: u64) -> Vec<Candidate> {
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
pub fn ease_grid(mean_item_count: f64, dropout: f64, neighbors: usize) -> Vec<Candidate> {
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
pub fn rp3beta_grid(neighbors: usize) -> Vec<Candidate> {
    [0.0, 0.25, 0.5, 0.75]
        .into_iter()
        .map(|beta| Candidate::Rp3beta { beta, neighbors })
        .collect()
}

/// Whether RP3beta's weights for `strengths` fit the training memory budget; says why not.
pub fn rp3beta_fits(strengths: &Csr, neighbors: usize, threads: usize, host: &dyn Host) -> bool {
    within_memory_budget(
        rp3beta::fit_bytes(strengths, neighbors, threads),
        &format!(
            "RP3beta skipped: {} items × {neighbors} neighbours need",
            strengths.n_cols
        ),
        "for their weights",
        host,
    ) && strengths.n_cols >= 2
}

/// The highest dropout train() takes or tries.
pub const MAX_DROPOUT: f64 = 0.99;

/// Whether EASE's dense solve for `n_items` fits the training memory budget; says why not.
pub fn ease_fits(n_items: usize, host: &dyn Host) -> bool {
    within_memory_budget(
        ease::solve_bytes(n_items),
        &format!("EASE skipped: {n_items} items need"),
        "for the item-item solve",
        host,
    ) && n_items >= 2
}

/// Whether `need` bytes fit the training memory budget; otherwise a NOTICE
/// "`what` N MB `for_what`, over the training memory budget (…)".
fn within_memory_budget(need: usize, what: &str, for_what: &str, host: &dyn Host) -> bool {
    let limit = host.memory_limit_bytes();
    if need > limit {
        host.notice(&format!(
            "pg_personalize: {what} {} MB {for_what}, over the training memory budget ({} MB, \
             personalize.training_memory_mb)",
            need / (1024 * 1024),
            limit / (1024 * 1024)
        ));
    }
    need <= limit
}

/// Fits one candidate on `strengths` (users × items, decayed interaction strengths).
pub fn fit(c: &Candidate, strengths: &Csr, pool: &rayon::ThreadPool, host: &dyn Host) -> Fitted {
    host.check_interrupts();
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
            host.check_interrupts();
            let n = strengths.n_cols;
            let penalty = ease::Penalty {
                l2: *l2,
                dropout: *dropout,
            };
            match solve_interruptibly(gram, n, penalty, *neighbors, pool, host) {
                Some(b) => Fitted::ItemItem(b),
                None => host.fail(Failure::NoSolution { l2: *l2 }),
            }
        }
        Candidate::Rp3beta { beta, neighbors } => {
            let walk = rp3beta::Walk::new(strengths, *beta as f32);
            let n = walk.n_items();
            let mut rows = Vec::with_capacity(n);
            // Blocks of rows on the pool; the host is asked between (a query cancel).
            for start in (0..n).step_by(RP3BETA_BLOCK) {
                let block = start..(start + RP3BETA_BLOCK).min(n);
                rows.extend(pool.install(|| walk.rows(block, *neighbors)));
                host.check_interrupts();
            }
            Fitted::ItemItem(ItemItem::from_rows(rows))
        }
        Candidate::Als { params, alpha } => {
            let m = with_confidence(strengths, *alpha);
            Fitted::Als(train_als(&m, params, pool, host))
        }
        Candidate::Blend {
            l2,
            dropout,
            beta,
            ease_share,
            neighbors,
            rp3beta_neighbors,
        } => {
            let part = |c: Candidate| match fit(&c, strengths, pool, host) {
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

/// EASE's dense solve on the pool while the calling thread (the backend's main thread) asks
/// the host every 50 ms (a query cancel, statement_timeout). A cancel unwinds here at once; on
/// the way out a
/// guard sets the solve's stop flag, which the solving thread reads between steps of bounded
/// work (`ease::fit_from_gram`), so the pool stops within a fraction of a second instead of
/// finishing an abandoned solve.
pub fn solve_interruptibly(
    gram: Vec<f64>,
    n: usize,
    penalty: ease::Penalty,
    neighbors: usize,
    pool: &rayon::ThreadPool,
    host: &dyn Host,
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
                host.fail(Failure::SolveFailed { items: n })
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                host.check_interrupts();
            }
        }
    }
}

/// The ALS input: confidence 1 + alpha · strength.
pub fn with_confidence(strengths: &Csr, alpha: f32) -> Csr {
    let mut m = strengths.clone();
    for v in &mut m.data {
        *v = 1.0 + alpha * *v;
    }
    m
}

/// Items by their number of users in `m`, most first (ties by index).
pub fn popularity_order(m: &Csr) -> (Vec<f32>, Vec<u32>) {
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
/// it. With `search_dropout`, the dropout step (`search_ease_dropout`) comes before that
/// refinement and replaces it when it improves; then RP3beta's β.
fn select_searching_l2(
    candidates: Vec<Candidate>,
    split: &metrics::Split,
    pool: &rayon::ThreadPool,
    budget: &TimeBudget,
    search_dropout: bool,
    host: &dyn Host,
) -> Vec<Trial> {
    let mut trials = select(candidates, split, pool, budget, host);
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
        let more = select(
            vec![best.with(next, best.dropout)],
            split,
            pool,
            budget,
            host,
        );
        let improved = more.iter().any(|t| t.ndcg > best.ndcg);
        trials.extend(more);
        keep_best_fits(&mut trials);
        if !improved {
            break;
        }
    }
    // Then dropout, which also tries twice and half the best's total penalty when it
    // improves; otherwise half a step of λ either side of the best (×2, ÷2), where nothing
    // that close was tried. Dropout comes first because it gained more than the refinement
    // (2% against a few tenths on Online Retail), and a large catalogue's budget may only
    // allow one of them (an EASE fit at 12,800 items takes 41 s here).
    let improved = search_dropout && search_ease_dropout(&mut trials, split, pool, budget, host);
    // (Among the λ search's own trials: a dropout trial that only ties is not refined.)
    let tried: Vec<EaseTrial> = ease_trials(&trials)
        .into_iter()
        .filter(|t| !search_dropout || t.dropout == 0.0)
        .collect();
    if let Some(best) = best_ease(&tried).filter(|_| !improved) {
        let near = |x: f64| tried.iter().any(|t| (t.l2 / x).max(x / t.l2) < 1.5);
        let refine: Vec<Candidate> = [best.l2 * 2.0, best.l2 / 2.0]
            .into_iter()
            .filter(|&x| x >= 1.0 && !near(x))
            .map(|l2| best.with(l2, best.dropout))
            .collect();
        if !refine.is_empty() {
            trials.extend(select(refine, split, pool, budget, host));
            keep_best_fits(&mut trials);
        }
    }
    search_beta(&mut trials, split, pool, budget, host);
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

    fn penalty(&self) -> ease::Penalty {
        ease::Penalty {
            l2: self.l2,
            dropout: self.dropout,
        }
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

/// EASE's dropout (`ease::Penalty`), tried after λ's search: half of the penalty an item of
/// mean popularity gets moved into the dropout term (λ / 2 on every item, and dropout p with
/// p / (1 − p) × mean users = λ / 2), at the best λ's total and at half of it (the λ search
/// steps by 4, and the best total with dropout sat at or below plain EASE's best on Online
/// Retail); if either beats plain EASE, one more step the way the better one points (twice the
/// total, or a quarter). Up to three fits; true when dropout beat plain EASE. Half is the
/// middle of the range: on Online Retail's validation split moving 50% of the penalty scored
/// above 0%, 80% and 95% at each of three totals (docs/benchmarks.md). Dropout shrinks the
/// weights of popular items the more, the more users they have, which λ alone cannot.
fn search_ease_dropout(
    trials: &mut Vec<Trial>,
    split: &metrics::Split,
    pool: &rayon::ThreadPool,
    budget: &TimeBudget,
    host: &dyn Host,
) -> bool {
    let Some(best) = best_ease(&ease_trials(trials)) else {
        return false;
    };
    let mean = mean_users_per_item(&split.train);
    if best.dropout != 0.0 || mean <= 0.0 {
        return false;
    }
    // λ and dropout that put `total` on an item of mean popularity, half in each term.
    let halved = |total: f64| {
        let dropout = ease::Penalty::dropout_for(total / 2.0 / mean);
        best.with((total / 2.0).max(1.0), dropout.min(MAX_DROPOUT))
    };
    let total = best.penalty().on_diagonal(mean);
    let first = select(
        vec![halved(total), halved(total / 2.0)],
        split,
        pool,
        budget,
        host,
    );
    let better = first
        .iter()
        .enumerate()
        .filter(|(_, t)| t.ndcg > best.ndcg)
        .max_by(|a, b| a.1.ndcg.total_cmp(&b.1.ndcg))
        .map(|(i, _)| i);
    trials.extend(first);
    keep_best_fits(trials);
    if let Some(i) = better {
        let next = if i == 0 { total * 2.0 } else { total / 4.0 };
        trials.extend(select(vec![halved(next)], split, pool, budget, host));
        keep_best_fits(trials);
    }
    better.is_some()
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
    host: &dyn Host,
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
            host,
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
                host,
            ));
            keep_best_fits(trials);
        }
    }
}

/// Top-k lists of a fitted candidate for the split's test users, their training items left out.
pub fn rank(
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
pub fn auto_candidates(
    strengths: &Csr,
    neighbors: usize,
    seed: u64,
    pool: &rayon::ThreadPool,
    host: &dyn Host,
) -> Vec<Candidate> {
    let mut c = vec![Candidate::Popularity, Candidate::Trending];
    if rp3beta_fits(strengths, neighbors, pool.current_num_threads(), host) {
        c.extend(rp3beta_grid(neighbors));
    }
    if ease_fits(strengths.n_cols, host) {
        c.extend(ease_grid(mean_users_per_item(strengths), 0.0, neighbors));
    }
    c.extend(als_grid(seed));
    c
}

/// The trial to keep: the simplest whose validation NDCG@10 is within one standard error of
/// the best's (`metrics::simplest_within_one_se`): a blend of twenty candidates' noise does not
/// decide the family.
pub fn best_trial(trials: &[Trial]) -> usize {
    let per_user: Vec<&[f64]> = trials.iter().map(|t| t.per_user.as_slice()).collect();
    let simplicity: Vec<usize> = trials.iter().map(|t| t.candidate.simplicity()).collect();
    metrics::simplest_within_one_se(&per_user, &simplicity)
}

/// Items by the sum of their decayed strengths in `m`, highest first (ties by index).
pub fn trending_order(m: &Csr) -> (Vec<f32>, Vec<u32>) {
    item_order(m, |strength| strength)
}

/// How long the choice among candidates may take: a candidate starts only while the budget
/// lasts (the refit of the winner on all the data comes after it). Popularity and trending
/// cost milliseconds and are always tried, so there is always something to choose (a budget
/// of 0 chooses between them alone).
struct TimeBudget {
    start: Instant,
    limit: Duration,
}

impl TimeBudget {
    fn new(limit: Duration) -> TimeBudget {
        TimeBudget {
            start: Instant::now(),
            limit,
        }
    }

    fn spent(&self) -> bool {
        self.start.elapsed() >= self.limit
    }

    /// Whether `c` must be left out because the budget is spent (says so in a NOTICE).
    /// Popularity and trending cost milliseconds and always run.
    fn skips(&self, c: &Candidate, host: &dyn Host) -> bool {
        let cheap = matches!(c, Candidate::Popularity | Candidate::Trending);
        let skip = !cheap && self.spent();
        if skip {
            host.notice(&format!(
                "pg_personalize: candidate {} {} skipped: the selection's time budget ({} s, \
                 personalize.training_time_budget) is spent",
                c.family(),
                c.params(),
                self.limit.as_secs()
            ));
        }
        skip
    }
}

/// One candidate's result on the validation split.
pub struct Trial {
    pub candidate: Candidate,
    pub ndcg: f64,
    pub recall: f64,
    pub seconds: f64,
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
    host: &dyn Host,
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
        if budget.skips(&c, host) {
            continue;
        }
        let t = Instant::now();
        let w = pool.install(|| item_item::blend(ease, rp3, ease_share, *neighbors));
        host.check_interrupts();
        let ranked = item_item::rankings(&w, &split.train, &split.test, &order, VALIDATION_K, pool);
        blends.push(scored_trial(c, &ranked, split, t, None, host));
    }
    trials.extend(blends);
}

/// Everything `auto` tries: the candidates (with EASE's λ search), then the blends of the
/// best item-item models. The kept weights are dropped before it returns.
pub fn choose(
    candidates: Vec<Candidate>,
    split: &metrics::Split,
    pool: &rayon::ThreadPool,
    search_dropout: bool,
    time_budget: Duration,
    host: &dyn Host,
) -> Vec<Trial> {
    let budget = TimeBudget::new(time_budget);
    let mut trials = select_searching_l2(candidates, split, pool, &budget, search_dropout, host);
    blend_trials(&mut trials, split, pool, &budget, host);
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
    host: &dyn Host,
) -> Vec<Trial> {
    let (_, order) = popularity_order(&split.train);
    let mut trials = Vec::with_capacity(candidates.len());
    for c in candidates {
        if budget.skips(&c, host) {
            continue;
        }
        let t = Instant::now();
        let fitted = fit(&c, &split.train, pool, host);
        host.check_interrupts();
        let ranked = rank(&fitted, split, &order, VALIDATION_K, pool);
        let keep = matches!(c, Candidate::Ease { .. } | Candidate::Rp3beta { .. });
        let weights = match fitted {
            Fitted::ItemItem(w) if keep => Some(w),
            _ => None,
        };
        trials.push(scored_trial(c, &ranked, split, t, weights, host));
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
    host: &dyn Host,
) -> Trial {
    let r = metrics::summarise(ranked, &split.test, VALIDATION_K, split.train.n_cols);
    let per_user = metrics::ndcg_per_user(ranked, &split.test, VALIDATION_K);
    let seconds = started.elapsed().as_secs_f64();
    host.notice(&format!(
        "pg_personalize: candidate {} {}: validation NDCG@10 {:.4}, recall@10 {:.4}, {:.2} s",
        candidate.family(),
        candidate.params(),
        r.ndcg,
        r.recall,
        seconds
    ));
    Trial {
        candidate,
        ndcg: r.ndcg,
        recall: r.recall,
        seconds,
        per_user,
        fitted,
    }
}

/// The mean number of users per item: the diagonal of EASE's Gram matrix.
pub fn mean_users_per_item(m: &Csr) -> f64 {
    m.nnz() as f64 / m.n_cols.max(1) as f64
}

/// ALS on the pool; a NOTICE per iteration when the loss is computed (the model that is
/// kept), the host asked between blocks of rows.
pub fn train_als(
    m: &Csr,
    params: &AlsParams,
    pool: &rayon::ThreadPool,
    host: &dyn Host,
) -> als::AlsModel {
    let total = params.iterations;
    let mut on_iteration = |r: &IterationReport| {
        // The selection's fits skip the loss: their iterations are not worth a NOTICE each.
        if !params.compute_loss {
            return;
        }
        host.notice(&format!(
            "pg_personalize: iteration {}/{}: loss {:.6}, {:.3} s",
            r.iteration, total, r.loss, r.seconds
        ));
    };
    // Runs on the calling thread between blocks of rows: a query cancel unwinds from here.
    let mut between_steps = || -> Result<(), Stopped> {
        host.check_interrupts();
        Ok(())
    };
    als::train(m, params, pool, &mut on_iteration, &mut between_steps)
        .unwrap_or_else(|Stopped| unreachable!("only interrupts stop training, and they raise"))
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

    /// A host that records the NOTICEs and never cancels.
    #[derive(Default)]
    struct Recorder(std::cell::RefCell<Vec<String>>);

    impl Host for Recorder {
        fn notice(&self, message: &str) {
            self.0.borrow_mut().push(message.to_owned());
        }
        fn check_interrupts(&self) {}
        fn memory_limit_bytes(&self) -> usize {
            1 << 34
        }
        fn fail(&self, failure: Failure) -> ! {
            panic!("{failure:?}")
        }
    }

    /// The category shop's validation split: each user's items in the order bought.
    fn category_split() -> metrics::Split {
        let (_, bought) = crate::ease::tests::category_shop();
        let pairs: Vec<(u32, u32, f32, i64)> = bought
            .iter()
            .enumerate()
            .flat_map(|(u, items)| {
                items
                    .iter()
                    .enumerate()
                    .map(move |(t, &i)| (u as u32, i, 1.0, t as i64))
            })
            .collect();
        metrics::temporal_split(300, 200, &pairs, VALIDATION_FRACTION)
    }

    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    }

    fn ease_params(c: &Candidate) -> Option<(f64, f64)> {
        match c {
            Candidate::Ease { l2, dropout, .. } => Some((*l2, *dropout)),
            _ => None,
        }
    }

    #[test]
    fn the_ease_search_tries_dropout_after_lambda() {
        let split = category_split();
        let host = Recorder::default();
        let mean = mean_users_per_item(&split.train);
        let minute = Duration::from_secs(60);
        let trials = choose(
            ease_grid(mean, 0.0, 50),
            &split,
            &pool(),
            true,
            minute,
            &host,
        );
        let first_dropout = trials
            .iter()
            .position(|t| ease_params(&t.candidate).is_some_and(|(_, p)| p > 0.0))
            .expect("a trial with dropout");
        // The plain EASE trials before it: the λ grid and its extension.
        let plain: Vec<(f64, f64)> = trials[..first_dropout]
            .iter()
            .filter(|t| ease_params(&t.candidate).is_some_and(|(_, p)| p == 0.0))
            .map(|t| (ease_params(&t.candidate).unwrap().0, t.ndcg))
            .collect();
        let with_dropout: Vec<&Trial> = trials
            .iter()
            .filter(|t| ease_params(&t.candidate).is_some_and(|(_, p)| p > 0.0))
            .collect();
        let (best_l2, best_ndcg) = plain
            .iter()
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        // The first: half of the best λ stays, the other half goes into dropout at the mean
        // item (p / (1 − p) × mean users = λ / 2).
        let (l2, p) = ease_params(&with_dropout[0].candidate).unwrap();
        assert!((l2 - best_l2 / 2.0).abs() < 1e-9 || (best_l2 / 2.0 < 1.0 && l2 == 1.0));
        assert!((p / (1.0 - p) * mean - best_l2 / 2.0).abs() < 1e-6 * best_l2);
        // The second at half that total; one more when either beat plain EASE, otherwise
        // λ's ×2 and ÷2 refinement instead.
        let (l2_half, _) = ease_params(&with_dropout[1].candidate).unwrap();
        assert!((l2_half - (best_l2 / 4.0).max(1.0)).abs() < 1e-9);
        let improved = with_dropout[..2].iter().any(|t| t.ndcg > best_ndcg);
        assert_eq!(with_dropout.len(), if improved { 3 } else { 2 });
        let plain_after = trials[first_dropout..]
            .iter()
            .filter(|t| ease_params(&t.candidate).is_some_and(|(_, p)| p == 0.0))
            .count();
        assert_eq!(plain_after == 0, improved);
        assert_eq!(host.0.borrow().len(), trials.len(), "a NOTICE per trial");
        // With the dropout given, no dropout search.
        let fixed = choose(
            ease_grid(mean, 0.0, 50),
            &split,
            &pool(),
            false,
            minute,
            &host,
        );
        assert!(fixed
            .iter()
            .all(|t| ease_params(&t.candidate).is_some_and(|(_, p)| p == 0.0)));
    }

    #[test]
    fn a_spent_time_budget_leaves_popularity_and_trending() {
        let split = category_split();
        let host = Recorder::default();
        let candidates = auto_candidates(&split.train, 50, 1, &pool(), &host);
        assert!(candidates.iter().any(|c| c.family() == "ease"));
        let trials = choose(candidates, &split, &pool(), true, Duration::ZERO, &host);
        let families: Vec<&str> = trials.iter().map(|t| t.candidate.family()).collect();
        assert_eq!(families, ["popularity", "trending"]);
        assert!(host.0.borrow().iter().any(|m| m.contains("time budget")));
    }

    #[test]
    fn a_memory_budget_too_small_for_ease_leaves_it_out_and_says_why() {
        struct Small(Recorder);
        impl Host for Small {
            fn notice(&self, message: &str) {
                self.0.notice(message)
            }
            fn check_interrupts(&self) {}
            fn memory_limit_bytes(&self) -> usize {
                ease::solve_bytes(200) - 1
            }
            fn fail(&self, failure: Failure) -> ! {
                panic!("{failure:?}")
            }
        }
        let split = category_split();
        let host = Small(Recorder::default());
        let candidates = auto_candidates(&split.train, 50, 1, &pool(), &host);
        assert!(candidates.iter().all(|c| c.family() != "ease"));
        assert!(host
            .0
             .0
            .borrow()
            .iter()
            .any(|m| m.contains("EASE skipped")));
    }
}
