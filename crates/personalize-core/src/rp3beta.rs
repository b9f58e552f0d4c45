//! RP3beta (Paudel et al. 2017, "Updatable, accurate, diverse, and scalable recommendations for
//! interactive applications"; a strong baseline in Dacrema et al. 2019): item-item weights from
//! a three-step random walk item → user → item on the binary interaction pattern,
//!
//!   W_ij = P(u|i) · P(j|u) summed over the users u of both, divided by popularity_j^β,
//!
//! with P(u|i) = 1/|users of i| and P(j|u) = 1/|items of u|. β > 0 takes weight from popular
//! items, which the walk otherwise favours. Unlike EASE there is no dense solve: a row costs
//! the items of the item's users, Σ (items per user)² in all, and memory is one dense score
//! row per thread, so it trains catalogues far beyond EASE's n² budget. Each item keeps its
//! `neighbors` largest weights (all weights are ≥ 0).

use rayon::prelude::*;

use crate::csr::Csr;
use crate::serving::TopK;

/// The random walk's transition probabilities, computed once per interaction matrix; rows of
/// the weight matrix are then computed in blocks (`rows`), so a caller can stop between them.
pub struct Walk<'a> {
    by_user: &'a Csr,
    by_item: Csr,
    /// 1 / |items of u|.
    user_step: Vec<f32>,
    /// 1 / |users of i|.
    item_step: Vec<f32>,
    /// |users of j|^-β: how much of its walk weight item j keeps.
    penalty: Vec<f32>,
}

impl<'a> Walk<'a> {
    /// The walk over `m` (users × items; only the pattern counts), popular targets damped by
    /// `beta`.
    pub fn new(m: &'a Csr, beta: f32) -> Walk<'a> {
        let by_item = m.transpose();
        let inverse = |n: usize| if n == 0 { 0.0 } else { 1.0 / n as f32 };
        let user_step = (0..m.n_rows).map(|u| inverse(m.row(u).0.len())).collect();
        let item_step: Vec<f32> = (0..m.n_cols)
            .map(|i| inverse(by_item.row(i).0.len()))
            .collect();
        // |users of j|^-β = item_step^β.
        let penalty = item_step.iter().map(|&s| s.powf(beta)).collect();
        Walk {
            by_user: m,
            by_item,
            user_step,
            item_step,
            penalty,
        }
    }

    pub fn n_items(&self) -> usize {
        self.by_user.n_cols
    }

    /// Rows `items` of W, each cut to its `neighbors` largest weights (largest first; ties:
    /// lower index). Parallel on the current rayon pool.
    pub fn rows(
        &self,
        items: std::ops::Range<usize>,
        neighbors: usize,
    ) -> Vec<(Vec<u32>, Vec<f32>)> {
        let n = self.n_items();
        let keep = neighbors.min(n.saturating_sub(1));
        items
            .into_par_iter()
            .map_init(
                || (vec![0f32; n], Vec::<u32>::new()),
                |(acc, touched), i| {
                    let from_item = self.item_step[i];
                    for &u in self.by_item.row(i).0 {
                        let step = from_item * self.user_step[u as usize];
                        for &j in self.by_user.row(u as usize).0 {
                            let slot = &mut acc[j as usize];
                            if *slot == 0.0 {
                                touched.push(j);
                            }
                            *slot += step;
                        }
                    }
                    let mut top = TopK::new(keep);
                    for &j in touched.iter() {
                        let w = acc[j as usize] * self.penalty[j as usize];
                        acc[j as usize] = 0.0;
                        if j as usize != i && w > 0.0 {
                            top.offer(j, w);
                        }
                    }
                    touched.clear();
                    top.into_sorted().into_iter().unzip()
                },
            )
            .collect()
    }
}

/// Bytes RP3beta needs beyond the interactions: the transposed pattern and the kept weights
/// (8 bytes a weight), plus a dense score row per thread.
pub fn fit_bytes(m: &Csr, neighbors: usize, threads: usize) -> usize {
    let n = m.n_cols;
    let kept = n.saturating_mul(neighbors.min(n.saturating_sub(1)));
    m.heap_bytes()
        .saturating_add(kept.saturating_mul(8))
        .saturating_add(threads.saturating_mul(n).saturating_mul(8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ease::tests::{assert_top_10_holds_the_category, category_shop};
    use crate::item_item::ItemItem;

    fn fit(m: &Csr, beta: f32, neighbors: usize) -> ItemItem {
        let walk = Walk::new(m, beta);
        ItemItem::from_rows(walk.rows(0..m.n_cols, neighbors))
    }

    #[test]
    fn weights_match_the_walk() {
        // Users {0, 1}, {1, 2}, {1}: item 1 has three users, items 0 and 2 one each.
        let m = Csr::from_triplets(3, 3, &[0, 0, 1, 1, 2], &[0, 1, 1, 2, 1], &[1.0; 5]);
        let w = fit(&m, 0.0, 5);
        // From item 0: its one user (0) has two items: W_01 = 1 · 1/2.
        assert!((w.weight(0, 1) - 0.5).abs() < 1e-6);
        assert_eq!(w.weight(0, 2), 0.0);
        // From item 1: users 0, 1 (two items each) and 2; W_10 = 1/3 · 1/2, W_12 the same.
        assert!((w.weight(1, 0) - 1.0 / 6.0).abs() < 1e-6);
        assert!((w.weight(1, 2) - 1.0 / 6.0).abs() < 1e-6);
        // β = 1 divides by the target's users: W_01 = 1/2 / 3.
        let w = fit(&m, 1.0, 5);
        assert!((w.weight(0, 1) - 0.5 / 3.0).abs() < 1e-6);
        // No self-loops, largest first.
        assert!((0..3).all(|h| !w.row(h).0.contains(&h)));
    }

    #[test]
    fn fills_a_users_top_10_with_their_category() {
        let (m, bought) = category_shop();
        assert_top_10_holds_the_category(&fit(&m, 0.5, 50), &bought);
    }

    #[test]
    fn same_weights_for_any_thread_count_and_block_size() {
        let (m, _) = category_shop();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let a = one.install(|| fit(&m, 0.3, 7));
        let walk = Walk::new(&m, 0.3);
        let mut rows = two.install(|| walk.rows(0..77, 7));
        rows.extend(two.install(|| walk.rows(77..200, 7)));
        assert_eq!(a, ItemItem::from_rows(rows));
        assert!((0..200).all(|h| a.row(h).0.len() <= 7));
    }
}
