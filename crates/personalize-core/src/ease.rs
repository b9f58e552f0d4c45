//! EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): the item-item weights B that
//! minimise ‖X − XB‖² + λ‖B‖² with diag(B) = 0, in closed form:
//! P = (XᵀX + λI)⁻¹, B_ij = −P_ij / P_jj (i ≠ j). A user's scores are their history times B,
//! so fold-in of fresh events is exact: x_u·B over the decayed history.
//!
//! X is the binary interaction pattern (who touched what): the closed form weighs every user's
//! items alike, as the paper does; interaction strength still decides the user's history at
//! serving time. The solve is dense (n × n, f64) and runs on the caller's rayon pool through
//! faer's blocks (Cholesky, then the inverse from it, in steps a cancel can stop between).
//! Stored sparsified: each item keeps its `neighbors` largest weights, so serving memory is
//! n × neighbors, not n².

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Accum, Mat, Side};
use rayon::prelude::*;

use crate::csr::Csr;
use crate::item_item::ItemItem;
use crate::serving::TopK;

/// Memory the dense solve is allowed to need for `n` items: four n × n f64 matrices. Its peak
/// holds two or three at a time (the Gram matrix and its copy; the copy and the Cholesky
/// factor; the factor, the inverse and faer's scratch, which can be another n × n): counted
/// with room to spare, since an allocation past the machine's memory aborts the backend.
pub fn solve_bytes(n: usize) -> usize {
    4usize.saturating_mul(n).saturating_mul(n).saturating_mul(8)
}

/// XᵀX of the binary pattern of `m` (users × items), dense row-major n × n. Row a of the
/// result is built from the users of item a (`by_item`, the transpose), so rows are
/// independent and filled in parallel: Σ over users of (items per user)² additions.
pub fn gram(m: &Csr, by_item: &Csr) -> Vec<f64> {
    let n = m.n_cols;
    let mut g = vec![0f64; n * n];
    g.par_chunks_mut(n.max(1)).enumerate().for_each(|(a, row)| {
        if a >= n {
            return;
        }
        for &u in by_item.row(a).0 {
            for &b in m.row(u as usize).0 {
                row[b as usize] += 1.0;
            }
        }
    });
    g
}

/// Why a solve ended early: `stop` asked it to.
#[derive(Debug, PartialEq, Eq)]
pub struct Stopped;

/// Rows per step of the blocked solve's updates: each step is a bounded slice of work (well
/// under a second at 14,000 items on 2 cores), so `stop` is asked often enough for a cancel.
const STEP_ROWS: usize = 512;
/// Width of the diagonal blocks of the factorisation and of the inverse's column blocks.
const BLOCK: usize = 128;

/// P = G⁻¹ for a symmetric positive definite G (column-major n × n, both triangles filled),
/// left in the lower triangle of `g` (the upper triangle is scratch). Blocked, so `stop` is
/// asked between steps of bounded work: 1. the Cholesky factor L (right-looking, by column
/// blocks, the trailing update in row panels), 2. X = L⁻¹ by column blocks, 3. P = XᵀX by
/// column blocks and row panels. About n³ flops in all, as faer's one-shot inverse; every
/// step runs on the current rayon pool in a fixed order, so the result does not depend on the
/// number of threads. `Ok(false)`: G is not positive definite.
fn invert_spd(g: &mut Mat<f64>, stop: &dyn Fn() -> bool) -> Result<bool, Stopped> {
    let n = g.nrows();
    let par = faer::Par::rayon(0);
    let check = || if stop() { Err(Stopped) } else { Ok(()) };
    // 1. G = L Lᵀ, L in the lower triangle.
    for j in (0..n).step_by(BLOCK) {
        let b = BLOCK.min(n - j);
        let l11 = match g.as_ref().submatrix(j, j, b, b).to_owned().llt(Side::Lower) {
            Ok(f) => f.L().to_owned(),
            Err(_) => return Ok(false),
        };
        g.as_mut()
            .submatrix_mut(j, j, b, b)
            .copy_from_triangular_lower(&l11);
        let below = n - j - b;
        if below == 0 {
            break;
        }
        // A21 ← A21 L11⁻ᵀ, i.e. A21ᵀ ← L11⁻¹ A21ᵀ.
        solve_lower_triangular_in_place(
            l11.as_ref(),
            g.as_mut().submatrix_mut(j + b, j, below, b).transpose_mut(),
            par,
        );
        check()?;
        // A22 ← A22 − A21 A21ᵀ (lower triangle), a panel of rows at a time.
        let a21 = g.as_ref().submatrix(j + b, j, below, b).to_owned();
        for r0 in (0..below).step_by(STEP_ROWS) {
            let rows = STEP_ROWS.min(below - r0);
            let (left, diag) = g
                .as_mut()
                .submatrix_mut(j + b + r0, j + b, rows, r0 + rows)
                .split_at_col_mut(r0);
            matmul(
                left,
                Accum::Add,
                a21.as_ref().submatrix(r0, 0, rows, b),
                a21.as_ref().submatrix(0, 0, r0, b).transpose(),
                -1.0,
                par,
            );
            triangular::matmul(
                diag,
                BlockStructure::TriangularLower,
                Accum::Add,
                a21.as_ref().submatrix(r0, 0, rows, b),
                BlockStructure::Rectangular,
                a21.as_ref().submatrix(r0, 0, rows, b).transpose(),
                BlockStructure::Rectangular,
                -1.0,
                par,
            );
            check()?;
        }
    }
    // 2. X = L⁻¹ (lower triangular), a block of columns at a time: L[c.., c..] X[c.., block]
    //    = the identity's columns of the block, by forward substitution a panel of rows at a
    //    time (the rows above the panel first, as one product; then the panel's own triangle).
    let mut x = Mat::<f64>::zeros(n, n);
    for c in (0..n).step_by(BLOCK) {
        let b = BLOCK.min(n - c);
        for i in 0..b {
            x[(c + i, c + i)] = 1.0;
        }
        for r0 in (c..n).step_by(STEP_ROWS) {
            let rows = STEP_ROWS.min(n - r0);
            let (above, mut panel) = x
                .as_mut()
                .submatrix_mut(c, c, r0 + rows - c, b)
                .split_at_row_mut(r0 - c);
            if r0 > c {
                matmul(
                    panel.as_mut(),
                    Accum::Add,
                    g.as_ref().submatrix(r0, c, rows, r0 - c),
                    above.as_ref(),
                    -1.0,
                    par,
                );
            }
            solve_lower_triangular_in_place(g.as_ref().submatrix(r0, r0, rows, rows), panel, par);
            check()?;
        }
    }
    // 3. P = Xᵀ X; column block c, rows from c down: P[r, c..] = Σ_k≥r X[k, r] X[k, c..].
    for c in (0..n).step_by(BLOCK) {
        let b = BLOCK.min(n - c);
        for r0 in (c..n).step_by(STEP_ROWS) {
            let rows = STEP_ROWS.min(n - r0);
            // X is lower triangular: rows k < r0 of X[:, r0..] are zero.
            matmul(
                g.as_mut().submatrix_mut(r0, c, rows, b),
                Accum::Replace,
                x.as_ref().submatrix(r0, r0, n - r0, rows).transpose(),
                x.as_ref().submatrix(r0, c, n - r0, b),
                1.0,
                par,
            );
            check()?;
        }
    }
    Ok(true)
}

/// EASE's regularization: `l2` added to every item's diagonal of the Gram matrix and, with
/// `dropout` p > 0, p / (1 − p) times the item's own diagonal (its number of users) on top.
/// The second term is the closed form of training with each history item dropped at random
/// with probability p (EDLAE: Steck, "Autoencoders that don't overfit towards the Identity",
/// NeurIPS 2020): it shrinks the weights from and to popular items the more, the more users
/// they have. On Online Retail's held-out split, half of the penalty in dropout lifted EASE's
/// NDCG@10 from 0.1188 to 0.1214 at the same total (docs/benchmarks.md); `train()` chooses it
/// on the validation split like λ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalty {
    pub l2: f64,
    /// The dropout probability p, in [0, 1).
    pub dropout: f64,
}

impl Penalty {
    /// Plain EASE: λ on every item.
    pub fn l2(l2: f64) -> Penalty {
        Penalty { l2, dropout: 0.0 }
    }

    /// What is added to the diagonal entry `g_ii` of the Gram matrix (an item with `g_ii`
    /// users).
    pub fn on_diagonal(&self, g_ii: f64) -> f64 {
        self.l2 + self.dropout / (1.0 - self.dropout) * g_ii
    }

    /// The dropout p whose penalty per user of an item, p / (1 − p), is `per_user`.
    pub fn dropout_for(per_user: f64) -> f64 {
        per_user / (1.0 + per_user)
    }
}

/// The EASE weights from a Gram matrix, sparsified to each item's `neighbors` largest.
/// `Ok(None)` when the regularized Gram matrix is not positive definite (λ ≤ 0 with a singular
/// Gram matrix); `Err(Stopped)` when `stop` returned true between two steps of the solve (it is
/// asked from the solving thread, a step at most a fraction of a second apart). Call inside
/// the training pool: the parallel parts run on the current one.
pub fn fit_from_gram(
    gram: Vec<f64>,
    n: usize,
    penalty: Penalty,
    neighbors: usize,
    stop: &dyn Fn() -> bool,
) -> Result<Option<ItemItem>, Stopped> {
    if n == 0 {
        return Ok(Some(ItemItem::from_rows(Vec::new())));
    }
    // G + the penalty's diagonal, column by column (G is symmetric: its rows are its
    // columns), asking `stop` every few hundred columns.
    let mut g = Mat::<f64>::zeros(n, n);
    for j in 0..n {
        if j % STEP_ROWS == 0 && stop() {
            return Err(Stopped);
        }
        g.col_as_slice_mut(j)
            .copy_from_slice(&gram[j * n..(j + 1) * n]);
        g[(j, j)] += penalty.on_diagonal(gram[j * n + j]);
    }
    // From here two n × n matrices at a time (G, becoming P, and L⁻¹): `solve_bytes` counts
    // four.
    drop(gram);
    if !invert_spd(&mut g, stop)? {
        return Ok(None);
    }
    // P is in the lower triangle.
    let p = |h: usize, j: usize| if h >= j { g[(h, j)] } else { g[(j, h)] };
    let diag: Vec<f64> = (0..n).map(|j| g[(j, j)]).collect();
    if diag.iter().any(|d| !(d.is_finite() && *d > 0.0)) {
        return Ok(None);
    }
    let keep = neighbors.min(n.saturating_sub(1));
    // Row h of B: B_hj = −P_hj / P_jj, the `keep` largest in magnitude kept, negative ones too
    // (they push down what the history speaks against; dropping them cost 4% NDCG@10 on
    // Online Retail), largest magnitude first (ties: lower item index).
    // A block of rows at a time, asking `stop` between blocks.
    let mut rows: Vec<(Vec<u32>, Vec<f32>)> = Vec::with_capacity(n);
    for start in (0..n).step_by(STEP_ROWS) {
        if stop() {
            return Err(Stopped);
        }
        rows.par_extend((start..n.min(start + STEP_ROWS)).into_par_iter().map(|h| {
            let weight = |j: usize| (-p(h, j) / diag[j]) as f32;
            let mut top = TopK::new(keep);
            for j in 0..n {
                if j != h {
                    let w = weight(j);
                    if w != 0.0 {
                        top.offer(j as u32, w.abs());
                    }
                }
            }
            top.into_sorted()
                .into_iter()
                .map(|(j, _)| (j, weight(j as usize)))
                .unzip()
        }));
    }
    Ok(Some(ItemItem::from_rows(rows)))
}

/// EASE on the binary pattern of `m` (users × items).
pub fn fit(m: &Csr, lambda: f64, neighbors: usize) -> Option<ItemItem> {
    let by_item = m.transpose();
    let g = gram(m, &by_item);
    fit_from_gram(g, m.n_cols, Penalty::l2(lambda), neighbors, &|| false).unwrap_or(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 300 users, 200 items in 10 categories of 20; each user bought 12 items of their category.
    pub(crate) fn category_shop() -> (Csr, Vec<Vec<u32>>) {
        let (mut r, mut c, mut v) = (vec![], vec![], vec![]);
        let mut bought = vec![];
        for u in 0..300u32 {
            let cat = u % 10;
            let start = (u / 10) * 7;
            let items: Vec<u32> = (0..12).map(|j| cat * 20 + (start + j * 3) % 20).collect();
            let mut unique = items.clone();
            unique.sort_unstable();
            unique.dedup();
            for &i in &unique {
                r.push(u);
                c.push(i);
                v.push(1.0);
            }
            bought.push(unique);
        }
        (Csr::from_triplets(300, 200, &r, &c, &v), bought)
    }

    /// Every user of the category shop gets all the unbought items of their category (up to
    /// 10) in their top 10 from `w`.
    pub(crate) fn assert_top_10_holds_the_category(w: &ItemItem, bought: &[Vec<u32>]) {
        for (u, items) in bought.iter().enumerate() {
            let history: Vec<(u32, f32)> = items.iter().map(|&i| (i, 1.0)).collect();
            let mut scores = vec![0f32; 200];
            w.accumulate(&history, &mut scores);
            let mut top = TopK::new(10);
            for (j, &s) in scores.iter().enumerate() {
                if !items.contains(&(j as u32)) {
                    top.offer(j as u32, s);
                }
            }
            let cat = u as u32 % 10;
            let in_category = top
                .into_sorted()
                .iter()
                .filter(|(j, _)| j / 20 == cat)
                .count();
            assert_eq!(in_category, (20 - items.len()).min(10), "user {u}");
        }
    }

    #[test]
    fn ease_fills_a_users_top_10_with_their_category() {
        let (m, bought) = category_shop();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let b = pool.install(|| fit(&m, 10.0, 50)).unwrap();
        assert_top_10_holds_the_category(&b, &bought);
    }

    #[test]
    fn weights_match_the_closed_form() {
        // Two users: {0, 1} and {1, 2}. G = [[1,1,0],[1,2,1],[0,1,1]] + λI.
        let m = Csr::from_triplets(2, 3, &[0, 0, 1, 1], &[0, 1, 1, 2], &[1.0; 4]);
        let b = fit(&m, 1.0, 5).unwrap();
        // P = (G + I)⁻¹ with G + I = [[2,1,0],[1,3,1],[0,1,2]]: det = 8;
        // P = 1/8 · [[5,-2,1],[-2,4,-2],[1,-2,5]]. B_01 = −P_01/P_11 = 2/4.
        assert!((b.weight(0, 1) - 0.5).abs() < 1e-6);
        assert!((b.weight(1, 0) - 0.4).abs() < 1e-6);
        // B_02 = −P_02/P_22 = −1/5: negative weights are kept too.
        assert!((b.weight(0, 2) + 0.2).abs() < 1e-6);
        assert_eq!(b.row(1).0, &[0, 2]);
        // Sparsified to one neighbour: the largest magnitude (0.5 over −0.2).
        let one = fit(&m, 1.0, 1).unwrap();
        assert_eq!(one.row(0), (&[1u32][..], &[0.5f32][..]));
    }

    #[test]
    fn dropout_raises_each_items_penalty_with_its_users() {
        // The two users of `weights_match_the_closed_form`, λ = 1 and dropout ½: each item's
        // diagonal gains λ + 1 × its users, so G + Λ = [[3,1,0],[1,5,1],[0,1,3]]: det = 39;
        // P = 1/39 · [[14,-3,1],[-3,9,-3],[1,-3,14]]. B_01 = −P_01/P_11 = 3/9,
        // B_10 = 3/14, B_02 = −1/14.
        let m = Csr::from_triplets(2, 3, &[0, 0, 1, 1], &[0, 1, 1, 2], &[1.0; 4]);
        let g = gram(&m, &m.transpose());
        let penalty = Penalty {
            l2: 1.0,
            dropout: 0.5,
        };
        let b = fit_from_gram(g.clone(), 3, penalty, 5, &|| false)
            .unwrap()
            .unwrap();
        assert!((b.weight(0, 1) - 3.0 / 9.0).abs() < 1e-6);
        assert!((b.weight(1, 0) - 3.0 / 14.0).abs() < 1e-6);
        assert!((b.weight(0, 2) + 1.0 / 14.0).abs() < 1e-6);
        // Dropout 0 is plain EASE.
        let plain = fit_from_gram(g, 3, Penalty::l2(1.0), 5, &|| false).unwrap();
        assert_eq!(plain, fit(&m, 1.0, 5));
    }

    #[test]
    fn deterministic_and_sparsified() {
        let (m, _) = category_shop();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let a = pool.install(|| fit(&m, 10.0, 5)).unwrap();
        let b = pool.install(|| fit(&m, 10.0, 5)).unwrap();
        assert_eq!(a, b);
        assert!((0..200).all(|h| a.row(h).0.len() <= 5));
        let w = a.row(0).1;
        assert!(w.windows(2).all(|x| x[0].abs() >= x[1].abs()));
    }

    #[test]
    fn same_weights_for_any_thread_count() {
        // Large enough (1,500 items) for faer's blocked, parallel Cholesky and inverse to split
        // the work between threads.
        let (n_users, n_items) = (3000u32, 1500u32);
        let (mut r, mut c) = (vec![], vec![]);
        let mut state = 12345u64;
        for u in 0..n_users {
            for _ in 0..15 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let taste = (u % 7) * 200;
                r.push(u);
                c.push((taste + (state >> 33) as u32 % 300) % n_items);
            }
        }
        let m = Csr::from_triplets(
            n_users as usize,
            n_items as usize,
            &r,
            &c,
            &vec![1.0; r.len()],
        );
        let fit_on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| fit(&m, 50.0, 40))
                .unwrap()
        };
        let one = fit_on(1);
        assert_eq!(one, fit_on(2));
        assert_eq!(one, fit_on(3));
    }

    #[test]
    fn the_blocked_inverse_matches_faers_and_stops_when_asked() {
        let close_to_faers = |g: Mat<f64>, tolerance: f64| {
            let reference =
                faer::linalg::solvers::DenseSolveCore::inverse(&g.llt(Side::Lower).unwrap());
            let mut mine = g;
            assert_eq!(invert_spd(&mut mine, &|| false), Ok(true));
            for i in 0..mine.nrows() {
                for j in 0..=i {
                    assert!(
                        (mine[(i, j)] - reference[(i, j)]).abs() < tolerance,
                        "({i}, {j})"
                    );
                }
            }
        };
        // The category shop's Gram matrix (200 items, two diagonal blocks) plus λ = 3.
        let (m, _) = category_shop();
        let g0 = gram(&m, &m.transpose());
        close_to_faers(
            Mat::<f64>::from_fn(200, 200, |i, j| {
                g0[i * 200 + j] + if i == j { 3.0 } else { 0.0 }
            }),
            1e-9,
        );
        // A dense SPD matrix of 700 (AᵀA + I): six diagonal blocks, two row panels.
        let n = 700;
        let a = Mat::<f64>::from_fn(n, n, |i, j| (((i * 31 + j * 17) % 23) as f64 - 11.0) / 7.0);
        close_to_faers(a.transpose() * &a + Mat::<f64>::identity(n, n), 1e-8);
        // Not positive definite.
        let mut bad = Mat::<f64>::from_fn(3, 3, |i, j| if i == j { -1.0 } else { 0.0 });
        assert_eq!(invert_spd(&mut bad, &|| false), Ok(false));
        // Stopped: asked between steps, it returns at the first.
        let asked = std::cell::Cell::new(0);
        let mut g = a.transpose() * &a + Mat::<f64>::identity(n, n);
        let stop = || {
            asked.set(asked.get() + 1);
            true
        };
        assert_eq!(invert_spd(&mut g, &stop), Err(Stopped));
        assert_eq!(asked.get(), 1);
        let (m, _) = category_shop();
        assert_eq!(
            fit_from_gram(gram(&m, &m.transpose()), 200, Penalty::l2(10.0), 5, &|| {
                true
            }),
            Err(Stopped)
        );
    }
}
