//! EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): the item-item weights B that
//! minimise ‖X − XB‖² + λ‖B‖² with diag(B) = 0, in closed form:
//! P = (XᵀX + λI)⁻¹, B_ij = −P_ij / P_jj (i ≠ j). A user's scores are their history times B,
//! so fold-in of fresh events is exact: x_u·B over the decayed history.
//!
//! X is the binary interaction pattern (who touched what): the closed form weighs every user's
//! items alike, as the paper does; interaction strength still decides the user's history at
//! serving time. The solve is dense (n × n, f64) and runs on the caller's rayon pool through
//! faer (Cholesky, then the inverse from it). Stored sparsified: each item keeps its `neighbors`
//! largest weights, so serving memory is n × neighbors, not n².

use faer::{Mat, Side};
use rayon::prelude::*;

use crate::core::csr::Csr;
use crate::core::serving::TopK;

/// Sparse item-item weights: row h holds (item, weight) pairs, largest magnitude first.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemItem {
    pub n_items: usize,
    pub offsets: Vec<usize>,
    pub items: Vec<u32>,
    pub weights: Vec<f32>,
}

impl ItemItem {
    /// An item's neighbours and their weights, largest magnitude first.
    pub fn row(&self, h: u32) -> (&[u32], &[f32]) {
        let (a, b) = (self.offsets[h as usize], self.offsets[h as usize + 1]);
        (&self.items[a..b], &self.weights[a..b])
    }

    /// Adds Σ strength · row(h) over the history into `scores` (length n_items).
    pub fn accumulate(&self, history: &[(u32, f32)], scores: &mut [f32]) {
        for &(h, s) in history {
            if (h as usize) >= self.n_items {
                continue;
            }
            let (items, weights) = self.row(h);
            for (&j, &w) in items.iter().zip(weights) {
                scores[j as usize] += s * w;
            }
        }
    }

    /// The weight from item h to item j (0 when j is not among h's neighbours).
    pub fn weight(&self, h: u32, j: u32) -> f32 {
        let (items, weights) = self.row(h);
        items
            .iter()
            .position(|&x| x == j)
            .map_or(0.0, |p| weights[p])
    }
}

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

/// The EASE weights from a Gram matrix, sparsified to each item's `neighbors` largest.
/// `None` when the regularized Gram matrix is not positive definite (λ ≤ 0 with a singular
/// Gram matrix). Call inside the training pool: faer's parallel parts run on the current one.
pub fn fit_from_gram(gram: Vec<f64>, n: usize, lambda: f64, neighbors: usize) -> Option<ItemItem> {
    if n == 0 {
        return Some(ItemItem {
            n_items: 0,
            offsets: vec![0],
            items: Vec::new(),
            weights: Vec::new(),
        });
    }
    let g = Mat::<f64>::from_fn(n, n, |i, j| {
        gram[i * n + j] + if i == j { lambda } else { 0.0 }
    });
    // Two n × n matrices at a time from here (this copy and the factor, then the factor and
    // the inverse, with faer's scratch): `solve_bytes` counts four.
    drop(gram);
    let llt = g.llt(Side::Lower).ok()?;
    drop(g);
    let p = faer::linalg::solvers::DenseSolveCore::inverse(&llt);
    drop(llt);
    let diag: Vec<f64> = (0..n).map(|j| p[(j, j)]).collect();
    if diag.iter().any(|d| !(d.is_finite() && *d > 0.0)) {
        return None;
    }
    let keep = neighbors.min(n.saturating_sub(1));
    // Row h of B: B_hj = −P_hj / P_jj, the `keep` largest in magnitude kept, negative ones too
    // (they push down what the history speaks against; dropping them cost 4% NDCG@10 on
    // Online Retail), largest magnitude first (ties: lower item index).
    let rows: Vec<(Vec<u32>, Vec<f32>)> = (0..n)
        .into_par_iter()
        .map(|h| {
            let weight = |j: usize| (-p[(h, j)] / diag[j]) as f32;
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
        })
        .collect();
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0);
    let (mut items, mut weights) = (Vec::new(), Vec::new());
    for (i, w) in rows {
        items.extend_from_slice(&i);
        weights.extend_from_slice(&w);
        offsets.push(items.len());
    }
    Some(ItemItem {
        n_items: n,
        offsets,
        items,
        weights,
    })
}

/// EASE on the binary pattern of `m` (users × items).
pub fn fit(m: &Csr, lambda: f64, neighbors: usize) -> Option<ItemItem> {
    let by_item = m.transpose();
    let g = gram(m, &by_item);
    fit_from_gram(g, m.n_cols, lambda, neighbors)
}

/// Top-k lists for the users with a test set (others get an empty list): each user's training
/// items (binary, as EASE was fitted) times B, the training items excluded. Items B says
/// nothing about come after, in `popularity` order.
pub fn rankings(
    b: &ItemItem,
    train: &Csr,
    test: &[std::collections::HashSet<u32>],
    popularity_order: &[u32],
    k: usize,
    pool: &rayon::ThreadPool,
) -> Vec<Vec<u32>> {
    pool.install(|| {
        (0..train.n_rows)
            .into_par_iter()
            .map(|u| {
                if test[u].is_empty() {
                    return Vec::new();
                }
                let seen = train.row(u).0;
                let history: Vec<(u32, f32)> = seen.iter().map(|&i| (i, 1.0)).collect();
                let mut scores = vec![0f32; b.n_items];
                b.accumulate(&history, &mut scores);
                top_with_popularity(&scores, popularity_order, k, |i| !seen.contains(&i))
            })
            .collect()
    })
}

/// The best `k` items by score among those `keep` allows, then (when fewer than k have a
/// positive score) the most popular of the rest: what an item-item model serves.
pub fn top_with_popularity(
    scores: &[f32],
    popularity_order: &[u32],
    k: usize,
    keep: impl Fn(u32) -> bool,
) -> Vec<u32> {
    top_scored_with_popularity(scores, popularity_order, k, keep)
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

/// As `top_with_popularity`, with the scores: positive scores first, then the items the
/// history says nothing about (score 0) in popularity order, then the ones it speaks against
/// (negative scores), highest first.
pub fn top_scored_with_popularity(
    scores: &[f32],
    popularity_order: &[u32],
    k: usize,
    keep: impl Fn(u32) -> bool,
) -> Vec<(u32, f32)> {
    let mut top = TopK::new(k);
    for (i, &s) in scores.iter().enumerate() {
        if s > 0.0 && keep(i as u32) {
            top.offer(i as u32, s);
        }
    }
    let mut out = top.into_sorted();
    for &i in popularity_order {
        if out.len() >= k {
            return out;
        }
        if scores[i as usize] == 0.0 && keep(i) {
            out.push((i, 0.0));
        }
    }
    let mut below = TopK::new(k - out.len());
    for (i, &s) in scores.iter().enumerate() {
        if s < 0.0 && keep(i as u32) {
            below.offer(i as u32, s);
        }
    }
    out.extend(below.into_sorted());
    out
}

#[cfg(test)]
#[test]
fn the_fill_comes_in_popularity_order_and_negative_scores_last() {
    let scores = [0.0, 2.0, -1.0, 0.0, -0.5, 1.0];
    let popularity = [2, 3, 0, 4, 1, 5];
    let top = top_scored_with_popularity(&scores, &popularity, 6, |i| i != 3);
    assert_eq!(
        top,
        vec![(1, 2.0), (5, 1.0), (0, 0.0), (4, -0.5), (2, -1.0)]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 300 users, 200 items in 10 categories of 20; each user bought 12 items of their category.
    fn category_shop() -> (Csr, Vec<Vec<u32>>) {
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

    #[test]
    fn ease_fills_a_users_top_10_with_their_category() {
        let (m, bought) = category_shop();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let b = pool.install(|| fit(&m, 10.0, 50)).unwrap();
        for (u, items) in bought.iter().enumerate() {
            let history: Vec<(u32, f32)> = items.iter().map(|&i| (i, 1.0)).collect();
            let mut scores = vec![0f32; 200];
            b.accumulate(&history, &mut scores);
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
            let unbought = 20 - items.len();
            assert_eq!(in_category, unbought.min(10), "user {u}");
        }
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
}
