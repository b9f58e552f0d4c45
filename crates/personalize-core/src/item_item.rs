//! Sparse item-item models (EASE, RP3beta): per item its strongest neighbours and their
//! weights. A user's scores are their history times the weights, so fold-in of fresh events is
//! exact; items the history says nothing about follow in popularity order.

use rayon::prelude::*;

use crate::csr::Csr;
use crate::serving::{sum_by_item, TopK};

/// Sparse item-item weights: row h holds (item, weight) pairs, largest magnitude first.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemItem {
    pub n_items: usize,
    /// Row h is `items[offsets[h]..offsets[h + 1]]` (u64: the layout of the shared model file).
    pub offsets: Vec<u64>,
    pub items: Vec<u32>,
    pub weights: Vec<f32>,
}

/// Borrowed item-item weights: an `ItemItem`, or the same arrays in a mapped model file.
#[derive(Debug, Clone, Copy)]
pub struct ItemItemRef<'a> {
    pub n_items: usize,
    pub offsets: &'a [u64],
    pub items: &'a [u32],
    pub weights: &'a [f32],
}

impl<'a> ItemItemRef<'a> {
    /// An item's neighbours and their weights, largest magnitude first.
    pub fn row(&self, h: u32) -> (&'a [u32], &'a [f32]) {
        let (a, b) = (
            self.offsets[h as usize] as usize,
            self.offsets[h as usize + 1] as usize,
        );
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

impl ItemItem {
    pub fn view(&self) -> ItemItemRef<'_> {
        ItemItemRef {
            n_items: self.n_items,
            offsets: &self.offsets,
            items: &self.items,
            weights: &self.weights,
        }
    }

    /// An item's neighbours and their weights, largest magnitude first.
    pub fn row(&self, h: u32) -> (&[u32], &[f32]) {
        self.view().row(h)
    }

    /// Adds Σ strength · row(h) over the history into `scores` (length n_items).
    pub fn accumulate(&self, history: &[(u32, f32)], scores: &mut [f32]) {
        self.view().accumulate(history, scores)
    }

    /// The weight from item h to item j (0 when j is not among h's neighbours).
    pub fn weight(&self, h: u32, j: u32) -> f32 {
        self.view().weight(h, j)
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
            offsets.push(items.len() as u64);
        }
        ItemItem {
            n_items,
            offsets,
            items,
            weights,
        }
    }
}

/// The mean over items of the sum of |weight| of a row: the scale a user's scores have per
/// history item, so two models' weights can be put on one scale before they are blended.
pub fn mean_row_l1(w: &ItemItem) -> f64 {
    if w.n_items == 0 {
        return 0.0;
    }
    w.weights.iter().map(|x| x.abs() as f64).sum::<f64>() / w.n_items as f64
}

/// A blend of two item-item models over the same items: `share` of `a` and `1 − share` of `b`,
/// each divided by its mean row L1 norm first (EASE's regression weights and RP3beta's walk
/// probabilities live on different scales). Each row keeps its `neighbors` weights largest in
/// magnitude (ties: lower item index), so the blend costs what either model costs to serve.
pub fn blend(a: &ItemItem, b: &ItemItem, share: f64, neighbors: usize) -> ItemItem {
    assert_eq!(
        a.n_items, b.n_items,
        "blended models must share their items"
    );
    let scale = |w: &ItemItem, part: f64| {
        let l1 = mean_row_l1(w);
        if l1 > 0.0 {
            (part / l1) as f32
        } else {
            0.0
        }
    };
    let (sa, sb) = (scale(a, share), scale(b, 1.0 - share));
    let rows: Vec<(Vec<u32>, Vec<f32>)> = (0..a.n_items as u32)
        .into_par_iter()
        .map(|h| {
            let (ia, wa) = a.row(h);
            let (ib, wb) = b.row(h);
            let summed = sum_by_item(
                ia.iter()
                    .zip(wa)
                    .map(|(&j, &w)| (j, sa * w))
                    .chain(ib.iter().zip(wb).map(|(&j, &w)| (j, sb * w)))
                    .collect(),
            );
            let mut top = TopK::new(neighbors);
            for &(j, w) in &summed {
                if w != 0.0 {
                    top.offer(j, w.abs());
                }
            }
            top.into_sorted()
                .into_iter()
                .map(|(j, _)| {
                    let at = summed.binary_search_by_key(&j, |p| p.0).expect("offered");
                    (j, summed[at].1)
                })
                .unzip()
        })
        .collect();
    ItemItem::from_rows(rows)
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

    #[test]
    fn a_blend_puts_both_models_on_one_scale() {
        // a: row 0 → 1 (weight 2); b: row 0 → 1 (0.1) and 0 → 2 (0.1). Mean row L1: a 1,
        // b 0.1 (over 2 items). Half and half: 0 → 1 = 2/1·½ + 0.1/0.1·½ = 1.5, 0 → 2 = 0.5.
        let a = ItemItem::from_rows(vec![(vec![1], vec![2.0]), (vec![], vec![])]);
        let b = ItemItem::from_rows(vec![(vec![1], vec![0.1]), (vec![], vec![])]);
        let a3 = ItemItem::from_rows(vec![
            (vec![1], vec![2.0]),
            (vec![], vec![]),
            (vec![], vec![]),
        ]);
        let b3 = ItemItem::from_rows(vec![
            (vec![1, 2], vec![0.1, 0.1]),
            (vec![], vec![]),
            (vec![0], vec![0.1]),
        ]);
        let w = blend(&a3, &b3, 0.5, 5);
        // Mean row L1 over three items: a 2/3, b 0.3/3 = 0.1.
        assert!((w.weight(0, 1) - (2.0 / (2.0 / 3.0) * 0.5 + 0.1 / 0.1 * 0.5)).abs() < 1e-5);
        assert!((w.weight(0, 2) - 0.5).abs() < 1e-5);
        assert!((w.weight(2, 0) - 0.5).abs() < 1e-5);
        // Share 1 is `a` alone (rescaled); one neighbour keeps the largest.
        let only_a = blend(&a, &b, 1.0, 5);
        assert_eq!(only_a.row(0).0, &[1]);
        let one = blend(&a3, &b3, 0.5, 1);
        assert_eq!(one.row(0).0, &[1]);
    }
}
