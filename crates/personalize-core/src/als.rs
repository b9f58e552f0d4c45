//! Implicit-feedback ALS (Hu, Koren, Volinsky 2008) with the conjugate-gradient solver of
//! Takács et al. as in the `implicit` library: a few CG steps per row, warm-started from the
//! previous iteration, YᵀY computed once per half-step. An exact Cholesky solver is an option.
//!
//! The input holds confidences c_ui = 1 + alpha · strength for the observed pairs; every other
//! pair has confidence 1 and preference 0. Plain Rust: the caller hands in a rayon pool and a
//! `between_steps` callback that runs on the calling thread between blocks of rows (the
//! Postgres side checks for query cancel there), never inside the pool.

use std::time::Instant;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::csr::Csr;
use crate::kernels::{axpy, dot, dot_k, has_avx2_fma, matvec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solver {
    ConjugateGradient,
    Cholesky,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlsParams {
    pub factors: usize,
    pub iterations: usize,
    pub regularization: f32,
    pub cg_steps: usize,
    pub solver: Solver,
    pub seed: u64,
    /// Compute the training loss after each iteration (costs about one CG step).
    pub compute_loss: bool,
    /// Frequency scaling of the regularization (Rendle et al. 2022): each user's and each
    /// item's λ is `regularization · (its interactions / the mean)^exponent`, so heavy users and
    /// popular items are held back more and the average λ stays `regularization`. 0: the same λ
    /// for every row (the `implicit` formulation).
    pub reg_exponent: f32,
}

impl Default for AlsParams {
    fn default() -> Self {
        AlsParams {
            factors: 64,
            iterations: 15,
            regularization: 0.01,
            cg_steps: 3,
            solver: Solver::ConjugateGradient,
            seed: 42,
            compute_loss: true,
            reg_exponent: 0.0,
        }
    }
}

impl AlsParams {
    /// Refuses parameters that cannot work, with a sentence saying which and why.
    pub fn check(&self) -> Result<(), String> {
        if self.factors == 0 || self.factors > 1024 {
            return Err(format!(
                "factors must be between 1 and 1024, not {}",
                self.factors
            ));
        }
        if self.iterations == 0 || self.iterations > 1000 {
            return Err(format!(
                "iterations must be between 1 and 1000, not {}",
                self.iterations
            ));
        }
        if !(self.regularization.is_finite() && self.regularization >= 0.0) {
            return Err(format!(
                "regularization must be a finite number >= 0, not {}",
                self.regularization
            ));
        }
        if !(self.reg_exponent.is_finite() && (0.0..=2.0).contains(&self.reg_exponent)) {
            return Err(format!(
                "frequency_scaling must be between 0 and 2, not {}",
                self.reg_exponent
            ));
        }
        if self.cg_steps == 0 || self.cg_steps > 100 {
            return Err(format!(
                "cg_steps must be between 1 and 100, not {}",
                self.cg_steps
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct IterationReport {
    pub iteration: usize,
    /// Normalised weighted squared error plus regularisation (as `implicit` reports it);
    /// NaN when loss computation is off.
    pub loss: f64,
    pub seconds: f64,
}

pub struct AlsModel {
    /// users × factors
    pub user_factors: Array2<f32>,
    /// items × factors
    pub item_factors: Array2<f32>,
    pub reports: Vec<IterationReport>,
}

/// Why training stopped early: the `between_steps` callback said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped;

/// Rows per block between two `between_steps` calls.
const BLOCK_ROWS: usize = 4096;

/// YᵀY (+ reg·I), summed over fixed chunks in a fixed order: the same result for any number
/// of threads.
pub fn gramian(y: &[f32], k: usize, reg: f32, pool: &rayon::ThreadPool) -> Vec<f32> {
    let n = y.len() / k;
    let chunk_rows = n.div_ceil(64).max(1);
    let partials: Vec<Vec<f32>> = pool.install(|| {
        y.par_chunks(chunk_rows * k)
            .map(|chunk| {
                let rows = chunk.len() / k;
                let a = ndarray::ArrayView2::from_shape((rows, k), chunk).expect("shape");
                let g = a.t().dot(&a);
                g.into_raw_vec_and_offset().0
            })
            .collect()
    });
    let mut out = vec![0f32; k * k];
    for p in &partials {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
    for j in 0..k {
        out[j * k + j] += reg;
    }
    out
}

/// A row's λ under frequency scaling: `reg · (n / mean)^exponent` for a row with n nonzeros
/// among rows averaging `mean` (just `reg` at exponent 0). Fold-in uses it with the mean the
/// model was trained with, so a served user is regularized as a trained one.
pub fn row_regularization(reg: f32, exponent: f32, n: usize, mean: f64) -> f32 {
    if exponent == 0.0 || mean <= 0.0 {
        return reg;
    }
    (reg as f64 * (n as f64 / mean).powf(exponent as f64)) as f32
}

/// The mean number of nonzeros per row of `m`.
pub fn mean_row_nnz(m: &Csr) -> f64 {
    m.nnz() as f64 / m.n_rows.max(1) as f64
}

/// Per row of `m`: its λ minus `reg`, what its solve adds to the diagonal of YᵀY + reg·I.
fn extra_diagonal(m: &Csr, reg: f32, exponent: f32) -> Vec<f32> {
    let mean = mean_row_nnz(m);
    (0..m.n_rows)
        .map(|r| row_regularization(reg, exponent, m.row(r).0.len(), mean) - reg)
        .collect()
}

/// The row solver compiled for AVX2+FMA; callers check `has_avx2_fma()` first.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn cg_row_avx2(
    cols: &[u32],
    conf: &[f32],
    y: &[f32],
    yty: &[f32],
    x: &mut [f32],
    steps: usize,
    scratch: &mut [f32],
    t: &mut Vec<f32>,
    extra: f32,
) {
    use crate::als_avx2::cg_row as fast;
    // Common factor counts get the intrinsics solver with k a constant (accumulators in
    // registers, loops unrolled); others the portable one, vectorised by the compiler.
    unsafe {
        match x.len() {
            16 => fast::<2>(cols, conf, y, yty, x, steps, scratch, t, extra),
            32 => fast::<4>(cols, conf, y, yty, x, steps, scratch, t, extra),
            64 => fast::<8>(cols, conf, y, yty, x, steps, scratch, t, extra),
            128 => fast::<16>(cols, conf, y, yty, x, steps, scratch, t, extra),
            _ => cg_row::<true>(cols, conf, y, yty, x, steps, scratch, extra),
        }
    }
}

/// One CG solve of row `x` against fixed factors `y` (the `implicit` formulation), with
/// `extra` added to the diagonal of YᵀY + reg·I (the row's λ − reg; 0 adds exactly nothing).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn cg_row<const FMA: bool>(
    cols: &[u32],
    conf: &[f32],
    y: &[f32],
    yty: &[f32],
    x: &mut [f32],
    steps: usize,
    scratch: &mut [f32],
    extra: f32,
) {
    let k = x.len();
    let x = &mut x[..k];
    let (r, rest) = scratch.split_at_mut(k);
    let (p, rest) = rest.split_at_mut(k);
    let ap = &mut rest[..k];
    let yty = &yty[..k * k];
    // r = b - A x, with A = YᵀY + λ·I + Σ (c-1) y yᵀ and b = Σ c y
    matvec::<FMA>(yty, x, r);
    for (v, xi) in r.iter_mut().zip(x.iter()) {
        *v = -(*v + extra * xi);
    }
    for (&i, &c) in cols.iter().zip(conf) {
        let yi = &y[i as usize * k..(i as usize + 1) * k];
        let t = c - (c - 1.0) * dot_k::<FMA>(yi, x);
        axpy::<FMA>(t, yi, r);
    }
    p.copy_from_slice(r);
    let mut rsold = dot_k::<FMA>(r, r);
    if rsold < 1e-20 {
        return;
    }
    for _ in 0..steps {
        matvec::<FMA>(yty, p, ap);
        for (v, pi) in ap.iter_mut().zip(p.iter()) {
            *v += extra * pi;
        }
        for (&i, &c) in cols.iter().zip(conf) {
            let yi = &y[i as usize * k..(i as usize + 1) * k];
            let t = (c - 1.0) * dot_k::<FMA>(yi, p);
            axpy::<FMA>(t, yi, ap);
        }
        let pap = dot_k::<FMA>(p, ap);
        if pap <= 0.0 || !pap.is_finite() {
            return;
        }
        let a = rsold / pap;
        axpy::<FMA>(a, p, x);
        axpy::<FMA>(-a, ap, r);
        let rsnew = dot_k::<FMA>(r, r);
        if rsnew < 1e-20 {
            return;
        }
        let beta = rsnew / rsold;
        for (pi, ri) in p.iter_mut().zip(r.iter()) {
            *pi = ri + beta * *pi;
        }
        rsold = rsnew;
    }
}

/// The Cholesky factor of one row's system matrix A = YᵀY + reg·I + Σ (c-1) y yᵀ (in f64).
/// Training's exact solver, fold-in and explanations all solve against it.
pub struct RowSystem {
    k: usize,
    /// Lower triangle of L (row-major, k × k) with A = L Lᵀ.
    l: Vec<f64>,
}

impl RowSystem {
    /// Factors A for the given (item, confidence) pairs, `extra` added to the diagonal of
    /// YᵀY + reg·I (the row's λ − reg under frequency scaling, else 0); `None` when A is not
    /// positive definite (λ = 0 and too few items).
    pub fn new(
        cols: &[u32],
        conf: &[f32],
        y: &[f32],
        yty: &[f32],
        k: usize,
        extra: f32,
    ) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { Self::new_avx2(cols, conf, y, yty, k, extra) };
        }
        Self::new_generic(cols, conf, y, yty, k, extra)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn new_avx2(
        cols: &[u32],
        conf: &[f32],
        y: &[f32],
        yty: &[f32],
        k: usize,
        extra: f32,
    ) -> Option<Self> {
        Self::new_generic(cols, conf, y, yty, k, extra)
    }

    #[inline(always)]
    fn new_generic(
        cols: &[u32],
        conf: &[f32],
        y: &[f32],
        yty: &[f32],
        k: usize,
        extra: f32,
    ) -> Option<Self> {
        let mut a: Vec<f64> = yty[..k * k].iter().map(|&v| v as f64).collect();
        for j in 0..k {
            a[j * k + j] += extra as f64;
        }
        let mut yi = vec![0f64; k];
        for (&i, &c) in cols.iter().zip(conf) {
            for (d, &v) in yi.iter_mut().zip(&y[i as usize * k..(i as usize + 1) * k]) {
                *d = v as f64;
            }
            // Lower triangle += (c - 1) y yᵀ, one contiguous row segment at a time.
            for r in 0..k {
                let w = (c as f64 - 1.0) * yi[r];
                for (ars, &ys) in a[r * k..r * k + r + 1].iter_mut().zip(&yi[..=r]) {
                    *ars += w * ys;
                }
            }
        }
        // In-place Cholesky on the lower triangle. The inner products use four partial sums
        // so they vectorise instead of waiting on one accumulator.
        for j in 0..k {
            let (prefix, diagonal) = a[j * k..j * k + j + 1].split_at_mut(j);
            let d = diagonal[0] - dot4(prefix, prefix);
            if d <= 0.0 || !d.is_finite() {
                return None;
            }
            let d = d.sqrt();
            diagonal[0] = d;
            for r in j + 1..k {
                let (upper, lower) = a.split_at_mut(r * k);
                let row_j = &upper[j * k..j * k + j];
                let v = lower[j] - dot4(&lower[..j], row_j);
                lower[j] = v / d;
            }
        }
        Some(RowSystem { k, l: a })
    }

    /// Overwrites `b` with A⁻¹ b.
    pub fn solve(&self, b: &mut [f64]) {
        let (k, a) = (self.k, &self.l);
        for r in 0..k {
            let mut v = b[r];
            for s in 0..r {
                v -= a[r * k + s] * b[s];
            }
            b[r] = v / a[r * k + r];
        }
        for r in (0..k).rev() {
            let mut v = b[r];
            for s in r + 1..k {
                v -= a[s * k + r] * b[s];
            }
            b[r] = v / a[r * k + r];
        }
    }
}

/// Dot product of f64 slices with four partial sums.
#[inline(always)]
fn dot4(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let chunks = a.len() / 4;
    for c in 0..chunks {
        for j in 0..4 {
            acc[j] += a[c * 4 + j] * b[c * 4 + j];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for j in chunks * 4..a.len() {
        s += a[j] * b[j];
    }
    s
}

/// Σ c·y over the given pairs: the right-hand side of a row's system.
fn row_rhs(cols: &[u32], conf: &[f32], y: &[f32], k: usize) -> Vec<f64> {
    let mut b = vec![0f64; k];
    for (&i, &c) in cols.iter().zip(conf) {
        let yi = &y[i as usize * k..(i as usize + 1) * k];
        for r in 0..k {
            b[r] += c as f64 * yi[r] as f64;
        }
    }
    b
}

/// The exact solve of one row: (YᵀY + reg·I + Σ (c-1) y yᵀ) x = Σ c y, by Cholesky.
/// Keeps the old row when the system is not positive definite.
fn cholesky_row(cols: &[u32], conf: &[f32], y: &[f32], yty: &[f32], x: &mut [f32], extra: f32) {
    let k = x.len();
    let Some(system) = RowSystem::new(cols, conf, y, yty, k, extra) else {
        return;
    };
    let mut b = row_rhs(cols, conf, y, k);
    system.solve(&mut b);
    for (xi, bi) in x.iter_mut().zip(b) {
        *xi = bi as f32;
    }
}

/// Solves every row of `x` against fixed `y`, block by block, calling `between_steps` on the
/// caller's thread between blocks.
fn half_step(
    m: &Csr,
    x: &mut [f32],
    y: &[f32],
    params: &AlsParams,
    pool: &rayon::ThreadPool,
    between_steps: &mut dyn FnMut() -> Result<(), Stopped>,
) -> Result<(), Stopped> {
    let k = params.factors;
    let yty = gramian(y, k, params.regularization, pool);
    let extras = extra_diagonal(m, params.regularization, params.reg_exponent);
    let fast = has_avx2_fma();
    for (block, xs) in x.chunks_mut(BLOCK_ROWS * k).enumerate() {
        between_steps()?;
        let first = block * BLOCK_ROWS;
        pool.install(|| {
            xs.par_chunks_mut(k).enumerate().for_each_init(
                || (vec![0f32; 3 * k], Vec::new()),
                |(scratch, t), (j, xrow)| {
                    let (cols, conf) = m.row(first + j);
                    let extra = extras[first + j];
                    match params.solver {
                        #[cfg(target_arch = "x86_64")]
                        Solver::ConjugateGradient if fast => {
                            // SAFETY: the CPU has AVX2 and FMA (checked above).
                            unsafe {
                                cg_row_avx2(
                                    cols,
                                    conf,
                                    y,
                                    &yty,
                                    xrow,
                                    params.cg_steps,
                                    scratch,
                                    t,
                                    extra,
                                )
                            }
                        }
                        Solver::ConjugateGradient => cg_row::<false>(
                            cols,
                            conf,
                            y,
                            &yty,
                            xrow,
                            params.cg_steps,
                            scratch,
                            extra,
                        ),
                        Solver::Cholesky => cholesky_row(cols, conf, y, &yty, xrow, extra),
                    }
                },
            )
        });
    }
    Ok(())
}

/// One row's part of the loss: xᵀ(YᵀY)x + Σ ((c−1)p² − 2cp + c) with p = yᵢ·x, and Σ c.
fn row_loss(cols: &[u32], conf: &[f32], y: &[f32], yty: &[f32], x: &[f32]) -> (f64, f64) {
    let k = x.len();
    let mut r = vec![0f32; k];
    matvec::<false>(yty, x, &mut r);
    let mut l = dot(x, &r) as f64;
    let mut ct = 0f64;
    for (&i, &c) in cols.iter().zip(conf) {
        let p = dot(&y[i as usize * k..(i as usize + 1) * k], x) as f64;
        let c = c as f64;
        l += (c - 1.0) * p * p - 2.0 * c * p + c;
        ct += c;
    }
    (l, ct)
}

/// `row_loss` with the intrinsics kernels where k has one; callers check `has_avx2_fma()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_loss_avx2(
    cols: &[u32],
    conf: &[f32],
    y: &[f32],
    yty: &[f32],
    x: &[f32],
) -> (f64, f64) {
    use crate::als_avx2::row_loss as fast;
    unsafe {
        match x.len() {
            16 => fast::<2>(cols, conf, y, yty, x),
            32 => fast::<4>(cols, conf, y, yty, x),
            64 => fast::<8>(cols, conf, y, yty, x),
            128 => fast::<16>(cols, conf, y, yty, x),
            _ => row_loss(cols, conf, y, yty, x),
        }
    }
}

/// The training loss (see the module docs of `implicit`'s `calculate_loss`), each row's
/// squared norm weighted by its λ (`reg_exponent` > 0: frequency-scaled).
pub fn loss(
    m: &Csr,
    x: &[f32],
    y: &[f32],
    k: usize,
    reg: f32,
    reg_exponent: f32,
    pool: &rayon::ThreadPool,
) -> f64 {
    let yty = gramian(y, k, 0.0, pool);
    let fast = has_avx2_fma();
    let (sum, conf_total): (f64, f64) = pool.install(|| {
        x.par_chunks(k)
            .enumerate()
            .map(|(u, xu)| {
                let (cols, conf) = m.row(u);
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: AVX2 and FMA checked above; the sizes are k's.
                    return unsafe { row_loss_avx2(cols, conf, y, &yty, xu) };
                }
                row_loss(cols, conf, y, &yty, xu)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d))
    });
    let penalty = if reg_exponent == 0.0 {
        reg as f64 * ((dot(x, x) as f64) + (dot(y, y) as f64))
    } else {
        let weighted = |rows: &[f32], extras: Vec<f32>| -> f64 {
            rows.chunks(k)
                .zip(extras)
                .map(|(r, e)| (reg + e) as f64 * dot(r, r) as f64)
                .sum()
        };
        weighted(x, extra_diagonal(m, reg, reg_exponent))
            + weighted(y, extra_diagonal(&m.transpose(), reg, reg_exponent))
    };
    let denom = conf_total + (m.n_rows as f64) * (m.n_cols as f64) - m.nnz() as f64;
    (sum + penalty) / denom.max(1.0)
}

/// Random start, deterministic for a seed: small normal-ish values (uniform around 0 / √k).
pub fn init_factors(rows: usize, k: usize, rng: &mut ChaCha8Rng) -> Array2<f32> {
    let scale = 0.1 / (k as f32).sqrt();
    Array2::from_shape_fn((rows, k), |_| (rng.random::<f32>() - 0.5) * 2.0 * scale)
}

/// Trains on `user_items` (confidences). `on_iteration` runs on the caller's thread after each
/// iteration; `between_steps` between blocks of rows (return `Err(Stopped)` to stop).
pub fn train(
    user_items: &Csr,
    params: &AlsParams,
    pool: &rayon::ThreadPool,
    on_iteration: &mut dyn FnMut(&IterationReport),
    between_steps: &mut dyn FnMut() -> Result<(), Stopped>,
) -> Result<AlsModel, Stopped> {
    let k = params.factors;
    let item_users = user_items.transpose();
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut xf = init_factors(user_items.n_rows, k, &mut rng);
    let mut yf = init_factors(user_items.n_cols, k, &mut rng);
    let mut reports = Vec::with_capacity(params.iterations);
    for iteration in 1..=params.iterations {
        let t0 = Instant::now();
        {
            let x = xf.as_slice_mut().expect("contiguous");
            let y = yf.as_slice().expect("contiguous");
            half_step(user_items, x, y, params, pool, between_steps)?;
        }
        {
            let y = yf.as_slice_mut().expect("contiguous");
            let x = xf.as_slice().expect("contiguous");
            half_step(&item_users, y, x, params, pool, between_steps)?;
        }
        let seconds = t0.elapsed().as_secs_f64();
        let l = if params.compute_loss {
            between_steps()?;
            loss(
                user_items,
                xf.as_slice().expect("contiguous"),
                yf.as_slice().expect("contiguous"),
                k,
                params.regularization,
                params.reg_exponent,
                pool,
            )
        } else {
            f64::NAN
        };
        let report = IterationReport {
            iteration,
            loss: l,
            seconds,
        };
        on_iteration(&report);
        reports.push(report);
    }
    Ok(AlsModel {
        user_factors: xf,
        item_factors: yf,
        reports,
    })
}

/// The fold-in of `implicit`'s recalculate_user: a user vector for the given (item, confidence)
/// pairs against fixed item factors, solved exactly. `None` when the system is singular
/// (regularization 0 and too few items).
pub fn fold_in(
    items: &[u32],
    conf: &[f32],
    item_factors: &[f32],
    yty: &[f32],
    k: usize,
    extra: f32,
) -> Option<Vec<f32>> {
    let system = RowSystem::new(items, conf, item_factors, yty, k, extra)?;
    let mut b = row_rhs(items, conf, item_factors, k);
    system.solve(&mut b);
    Some(b.into_iter().map(|v| v as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Two taste groups: users 0..20 like items 0..10, users 20..40 like items 10..20.
    fn blocks() -> Csr {
        let (mut r, mut c, mut v) = (vec![], vec![], vec![]);
        for u in 0..40u32 {
            let base = if u < 20 { 0 } else { 10 };
            for j in 0..10u32 {
                if (u + j) % 3 != 0 {
                    r.push(u);
                    c.push(base + j);
                    v.push(1.0 + 10.0);
                }
            }
        }
        Csr::from_triplets(40, 20, &r, &c, &v)
    }

    fn run(m: &Csr, params: &AlsParams, threads: usize) -> (AlsModel, Vec<f64>) {
        let mut losses = vec![];
        let model = train(
            m,
            params,
            &pool(threads),
            &mut |r| losses.push(r.loss),
            &mut || Ok(()),
        )
        .unwrap();
        (model, losses)
    }

    fn score(model: &AlsModel, u: usize, i: usize) -> f32 {
        dot(
            model.user_factors.row(u).as_slice().unwrap(),
            model.item_factors.row(i).as_slice().unwrap(),
        )
    }

    /// With 2 factors the model can only represent the two taste blocks (with more it could
    /// memorise the held-out pattern, since unobserved pairs are fitted towards 0): held-out
    /// pairs inside a user's block must outscore every item of the other block.
    fn assert_learns_blocks(model: &AlsModel) {
        for u in 0..40 {
            let own = if u < 20 { 0 } else { 10 };
            let other = 10 - own;
            let best_other = (other..other + 10)
                .map(|i| score(model, u, i))
                .fold(f32::MIN, f32::max);
            for held_out in (0..10).filter(|j| (u + j) % 3 == 0).map(|j| j + own) {
                assert!(score(model, u, held_out) > best_other, "user {u}");
            }
        }
    }

    #[test]
    fn learns_the_block_structure_and_the_loss_falls() {
        let m = blocks();
        let params = AlsParams {
            factors: 2,
            iterations: 10,
            regularization: 0.1,
            ..Default::default()
        };
        let (model, losses) = run(&m, &params, 2);
        assert!(
            losses.windows(2).all(|w| w[1] <= w[0] * 1.0001),
            "{losses:?}"
        );
        assert!(losses[9] < losses[0]);
        assert_learns_blocks(&model);
    }

    #[test]
    fn deterministic_for_seed_and_across_thread_counts() {
        let m = blocks();
        let params = AlsParams {
            factors: 16,
            iterations: 3,
            ..Default::default()
        };
        let (a, _) = run(&m, &params, 1);
        let (b, _) = run(&m, &params, 2);
        let (c, _) = run(&m, &params, 2);
        assert_eq!(a.item_factors, b.item_factors);
        assert_eq!(b.user_factors, c.user_factors);
        let (d, _) = run(&m, &AlsParams { seed: 7, ..params }, 2);
        assert_ne!(d.user_factors, c.user_factors);
    }

    #[test]
    fn cholesky_and_cg_agree_closely() {
        let m = blocks();
        let base = AlsParams {
            factors: 2,
            iterations: 8,
            regularization: 0.1,
            cg_steps: 3,
            ..Default::default()
        };
        let (cg, lc) = run(&m, &base, 2);
        let exact = AlsParams {
            solver: Solver::Cholesky,
            ..base
        };
        let (ch, lh) = run(&m, &exact, 2);
        assert!((lc[7] - lh[7]).abs() / lh[7] < 0.02, "{lc:?} vs {lh:?}");
        assert_learns_blocks(&cg);
        assert_learns_blocks(&ch);
    }

    #[test]
    fn stops_when_asked() {
        let m = blocks();
        let mut calls = 0;
        let r = train(
            &m,
            &AlsParams::default(),
            &pool(1),
            &mut |_| {},
            &mut || {
                calls += 1;
                if calls > 2 {
                    Err(Stopped)
                } else {
                    Ok(())
                }
            },
        );
        assert!(r.is_err());
    }

    #[test]
    fn fold_in_matches_the_trained_user_vector() {
        let m = blocks();
        let params = AlsParams {
            factors: 8,
            iterations: 10,
            regularization: 0.1,
            solver: Solver::Cholesky,
            ..Default::default()
        };
        let (model, _) = run(&m, &params, 1);
        let y = model.item_factors.as_slice().unwrap();
        // The last half-step solved items; one more exact user solve is what fold-in computes.
        let yty = gramian(y, 8, 0.1, &pool(1));
        let (cols, conf) = m.row(3);
        let x = fold_in(cols, conf, y, &yty, 8, 0.0).unwrap();
        let mut x2 = model.user_factors.row(3).to_vec();
        cholesky_row(cols, conf, y, &yty, &mut x2, 0.0);
        for (a, b) in x.iter().zip(&x2) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn frequency_scaled_regularization_is_what_fold_in_reproduces() {
        let m = blocks();
        let params = AlsParams {
            factors: 8,
            iterations: 10,
            regularization: 0.5,
            solver: Solver::Cholesky,
            reg_exponent: 1.0,
            ..Default::default()
        };
        let (model, losses) = run(&m, &params, 2);
        assert!(
            losses.windows(2).all(|w| w[1] <= w[0] * 1.0001),
            "{losses:?}"
        );
        assert_learns_blocks(&model);
        // Fold-in with the row's λ from the training mean is one more exact user solve of the
        // training's (the last half-step solved items).
        let y = model.item_factors.as_slice().unwrap();
        let yty = gramian(y, 8, 0.5, &pool(1));
        let extras = extra_diagonal(&m, 0.5, 1.0);
        let (cols, conf) = m.row(3);
        let lambda = row_regularization(0.5, 1.0, cols.len(), mean_row_nnz(&m));
        assert!((lambda - 0.5 - extras[3]).abs() < 1e-6);
        assert!(
            extras.iter().any(|e| e.abs() > 0.01),
            "rows of different lengths"
        );
        let x = fold_in(cols, conf, y, &yty, 8, lambda - 0.5).unwrap();
        let mut x2 = model.user_factors.row(3).to_vec();
        cholesky_row(cols, conf, y, &yty, &mut x2, extras[3]);
        for (a, b) in x.iter().zip(&x2) {
            assert!((a - b).abs() < 1e-5);
        }
        // Exponent 0 is the plain model, bit for bit, and deterministic across threads.
        let plain = AlsParams {
            reg_exponent: 0.0,
            ..params
        };
        let (a, _) = run(&m, &plain, 1);
        let (b, _) = run(
            &m,
            &AlsParams {
                reg_exponent: 0.0,
                ..params
            },
            2,
        );
        assert_eq!(a.user_factors, b.user_factors);
        assert_ne!(a.user_factors, model.user_factors);
        // λ per row: the mean row gets `reg`, twice the mean twice it.
        assert_eq!(row_regularization(2.0, 1.0, 10, 10.0), 2.0);
        assert_eq!(row_regularization(2.0, 1.0, 20, 10.0), 4.0);
        assert_eq!(row_regularization(2.0, 0.0, 20, 10.0), 2.0);
    }

    #[test]
    fn parameter_checks() {
        assert!(AlsParams::default().check().is_ok());
        assert!(AlsParams {
            factors: 0,
            ..Default::default()
        }
        .check()
        .is_err());
        assert!(AlsParams {
            regularization: -1.0,
            ..Default::default()
        }
        .check()
        .is_err());
        assert!(AlsParams {
            regularization: f32::NAN,
            ..Default::default()
        }
        .check()
        .is_err());
    }

    /// The intrinsics solver (k = 16, 32, 64, 128) solves the same system as the portable one:
    /// the same x after the same CG steps, up to float rounding.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_row_solver_matches_the_portable_one() {
        if !has_avx2_fma() {
            return;
        }
        let pool = pool(1);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for k in [16usize, 32, 64, 128] {
            let n = 300;
            let y: Vec<f32> = (0..n * k).map(|_| rng.random::<f32>() - 0.5).collect();
            let yty = gramian(&y, k, 0.1, &pool);
            for nnz in [0usize, 1, 7, 150] {
                let mut cols: Vec<u32> = (0..nnz).map(|_| rng.random_range(0..n as u32)).collect();
                cols.sort_unstable();
                cols.dedup();
                let conf: Vec<f32> = cols
                    .iter()
                    .map(|_| 1.0 + 5.0 * rng.random::<f32>())
                    .collect();
                let x0: Vec<f32> = (0..k).map(|_| (rng.random::<f32>() - 0.5) * 0.1).collect();
                let (mut portable, mut fast) = (x0.clone(), x0.clone());
                let mut scratch = vec![0f32; 3 * k];
                let extra = if nnz == 7 { 0.3 } else { 0.0 };
                cg_row::<false>(
                    &cols,
                    &conf,
                    &y,
                    &yty,
                    &mut portable,
                    3,
                    &mut scratch,
                    extra,
                );
                let mut t = Vec::new();
                // SAFETY: AVX2 and FMA checked above; sizes match k.
                unsafe {
                    cg_row_avx2(
                        &cols,
                        &conf,
                        &y,
                        &yty,
                        &mut fast,
                        3,
                        &mut scratch,
                        &mut t,
                        extra,
                    )
                };
                let scale = portable.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
                for (a, b) in portable.iter().zip(&fast) {
                    assert!((a - b).abs() <= 1e-3 * scale, "k {k} nnz {nnz}: {a} vs {b}");
                }
                assert_ne!(fast, x0, "k {k} nnz {nnz}: the solve changed nothing");
                let (lp, cp) = row_loss(&cols, &conf, &y, &yty, &fast);
                // SAFETY: as above.
                let (lf, cf) = unsafe { row_loss_avx2(&cols, &conf, &y, &yty, &fast) };
                assert!(
                    (lp - lf).abs() <= 1e-4 * lp.abs().max(1.0),
                    "k {k}: loss {lp} vs {lf}"
                );
                assert_eq!(cp, cf);
            }
        }
    }
}
