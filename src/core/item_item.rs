//! Sparse item-item models (EASE, RP3beta): per item its strongest neighbours and their
//! weights. A user's scores are their history times the weights, so fold-in of fresh events is
//! exact; items the history says nothing about follow in popularity order.

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

    /// Built from per-item rows of (neighbour, weight), in item order.
    pub fn from_rows(rows: Vec<(Vec<u32>, Vec<f32>)>) -> ItemItem {
        let n_items = rows.len();
        let mut offsets = Vec::with_capacity(n_items + 1);
        offsets.push(0);
        let total = rows.iter().map(|r| r.0.len()).sum();
        let (mut items, mut weights) = (Vec::with_capacity(total), Vec::with_capacity(total));
        for (i, w) in rows {
            items.extend_from_slice(&i);
            weights.extend_from_slice(&w);
            offsets.push(items.len());
        }
        ItemItem {
            n_items,
            offsets,
            items,
            weights,
        }
    }
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
mod tests {
    use super::*;

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
}
