//! Offline evaluation: a temporal hold-out split and ranking metrics with textbook definitions.
//!
//! For one user with held-out items R and a ranked list L cut at k:
//! - precision@k = |L ∩ R| / k
//! - recall@k    = |L ∩ R| / |R|
//! - NDCG@k      = DCG / IDCG, DCG = Σ_{i ≤ k, L_i ∈ R} 1 / log2(i + 1), IDCG the DCG of a
//!   perfect list (min(k, |R|) hits first)
//! - AP@k        = Σ_{i ≤ k, L_i ∈ R} precision@i / min(k, |R|); MAP@k is its mean over users
//! - coverage    = distinct items recommended to any evaluated user / items in the catalogue
//!
//! Means are over users with at least one held-out item.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};

use rayon::prelude::*;

use crate::csr::Csr;
use crate::kernels::dot;

pub fn precision_at_k(ranked: &[u32], relevant: &HashSet<u32>, k: usize) -> f64 {
    if k == 0 {
        return 0.0;
    }
    hits(ranked, relevant, k) as f64 / k as f64
}

pub fn recall_at_k(ranked: &[u32], relevant: &HashSet<u32>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    hits(ranked, relevant, k) as f64 / relevant.len() as f64
}

pub fn ndcg_at_k(ranked: &[u32], relevant: &HashSet<u32>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, i)| relevant.contains(i))
        .map(|(pos, _)| 1.0 / ((pos + 2) as f64).log2())
        .sum();
    let ideal: f64 = (0..k.min(relevant.len()))
        .map(|pos| 1.0 / ((pos + 2) as f64).log2())
        .sum();
    if ideal == 0.0 {
        0.0
    } else {
        dcg / ideal
    }
}

pub fn average_precision_at_k(ranked: &[u32], relevant: &HashSet<u32>, k: usize) -> f64 {
    let denom = k.min(relevant.len());
    if denom == 0 {
        return 0.0;
    }
    let mut found = 0usize;
    let mut sum = 0.0;
    for (pos, item) in ranked.iter().take(k).enumerate() {
        if relevant.contains(item) {
            found += 1;
            sum += found as f64 / (pos + 1) as f64;
        }
    }
    sum / denom as f64
}

fn hits(ranked: &[u32], relevant: &HashSet<u32>, k: usize) -> usize {
    ranked
        .iter()
        .take(k)
        .filter(|i| relevant.contains(i))
        .count()
}

/// The metrics of one ranking method over a set of users.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Metrics {
    pub users: usize,
    pub precision: f64,
    pub recall: f64,
    pub ndcg: f64,
    pub map: f64,
    pub coverage: f64,
}

/// Averages per-user metrics for the given rankings (`rankings[u]` for users with a test set).
pub fn summarise(
    rankings: &[Vec<u32>],
    test: &[HashSet<u32>],
    k: usize,
    n_items: usize,
) -> Metrics {
    let mut m = Metrics::default();
    let mut seen = HashSet::new();
    for (ranked, relevant) in rankings.iter().zip(test) {
        if relevant.is_empty() {
            continue;
        }
        m.users += 1;
        m.precision += precision_at_k(ranked, relevant, k);
        m.recall += recall_at_k(ranked, relevant, k);
        m.ndcg += ndcg_at_k(ranked, relevant, k);
        m.map += average_precision_at_k(ranked, relevant, k);
        seen.extend(ranked.iter().take(k).copied());
    }
    if m.users > 0 {
        let n = m.users as f64;
        m.precision /= n;
        m.recall /= n;
        m.ndcg /= n;
        m.map /= n;
    }
    m.coverage = if n_items == 0 {
        0.0
    } else {
        seen.len() as f64 / n_items as f64
    };
    m
}

/// NDCG@k of each user with a test set, in user order (what `summarise` averages).
pub fn ndcg_per_user(rankings: &[Vec<u32>], test: &[HashSet<u32>], k: usize) -> Vec<f64> {
    rankings
        .iter()
        .zip(test)
        .filter(|(_, relevant)| !relevant.is_empty())
        .map(|(ranked, relevant)| ndcg_at_k(ranked, relevant, k))
        .collect()
}

/// Which candidate to keep, from each one's per-user scores on the same users and its
/// simplicity rank (lower: simpler): the simplest candidate whose mean is not significantly
/// below the best mean — the mean of its paired per-user differences to the best is at most
/// one standard error of those differences (the one-standard-error rule of model selection).
/// Among candidates of the same rank the higher mean wins; then the earlier. Choosing the
/// plain best of many noisy candidates tends to pick one that was lucky on the validation
/// split; this keeps a more complex model only where its gain is larger than the noise.
pub fn simplest_within_one_se(per_user: &[&[f64]], simplicity: &[usize]) -> usize {
    assert_eq!(per_user.len(), simplicity.len());
    assert!(!per_user.is_empty(), "at least one candidate");
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let means: Vec<f64> = per_user.iter().map(|v| mean(v)).collect();
    let best = (0..means.len())
        .max_by(|&a, &b| means[a].total_cmp(&means[b]).then(b.cmp(&a)))
        .expect("at least one candidate");
    let close = |c: usize| -> bool {
        let (b, v) = (per_user[best], per_user[c]);
        if c == best || b.len() != v.len() || b.len() < 2 {
            return c == best;
        }
        let n = b.len() as f64;
        let d: Vec<f64> = b.iter().zip(v).map(|(x, y)| x - y).collect();
        let m = d.iter().sum::<f64>() / n;
        let var = d.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
        m <= (var / n).sqrt()
    };
    (0..means.len())
        .filter(|&c| close(c))
        .min_by(|&a, &b| {
            simplicity[a]
                .cmp(&simplicity[b])
                .then(means[b].total_cmp(&means[a]))
                .then(a.cmp(&b))
        })
        .expect("the best is always close to itself")
}

/// A score with its item, ordered so that a max-heap of `Reverse` keeps the k best; ties go to
/// the lower item index, so results are deterministic.
#[derive(PartialEq)]
struct Scored(f32, u32);
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        // "Greater" = better: higher score, then lower index.
        self.0
            .total_cmp(&other.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// The k best of `scores` (by score, ties to the lower index), skipping `exclude` (sorted).
pub fn top_k(scores: impl Iterator<Item = (u32, f32)>, exclude: &[u32], k: usize) -> Vec<u32> {
    if k == 0 {
        return vec![];
    }
    let mut heap: BinaryHeap<std::cmp::Reverse<Scored>> = BinaryHeap::with_capacity(k + 1);
    for (i, s) in scores {
        if exclude.binary_search(&i).is_ok() || s.is_nan() {
            continue;
        }
        let cand = Scored(s, i);
        if heap.len() < k {
            heap.push(std::cmp::Reverse(cand));
        } else if cand > heap.peek().expect("non-empty").0 {
            heap.pop();
            heap.push(std::cmp::Reverse(cand));
        }
    }
    let mut v: Vec<Scored> = heap.into_iter().map(|r| r.0).collect();
    v.sort_by(|a, b| b.cmp(a));
    v.into_iter().map(|s| s.1).collect()
}

/// Per-user test sets and the training matrix from a temporal hold-out: for each user, the
/// most recent `fraction` of their distinct items (by last interaction; at least one when the
/// user has two or more items, none otherwise) is held out.
pub struct Split {
    pub train: Csr,
    pub test: Vec<HashSet<u32>>,
}

/// `pairs`: (user, item, confidence, last interaction time) with unique (user, item).
pub fn temporal_split(
    n_users: usize,
    n_items: usize,
    pairs: &[(u32, u32, f32, i64)],
    fraction: f64,
) -> Split {
    let mut by_user: Vec<Vec<(i64, u32, f32)>> = vec![Vec::new(); n_users];
    for &(u, i, c, t) in pairs {
        by_user[u as usize].push((t, i, c));
    }
    let (mut r, mut c, mut v) = (vec![], vec![], vec![]);
    let mut test = vec![HashSet::new(); n_users];
    for (u, list) in by_user.iter_mut().enumerate() {
        // Oldest first; ties by item index for determinism.
        list.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let n = list.len();
        let held = if n >= 2 {
            ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
        } else {
            0
        };
        for (pos, &(_, i, conf)) in list.iter().enumerate() {
            if pos >= n - held {
                test[u].insert(i);
            } else {
                r.push(u as u32);
                c.push(i);
                v.push(conf);
            }
        }
    }
    Split {
        train: Csr::from_triplets(n_users, n_items, &r, &c, &v),
        test,
    }
}

/// Top-k lists from factors for the users with a test set (others get an empty list), the
/// user's training items excluded.
pub fn factor_rankings(
    train: &Csr,
    test: &[HashSet<u32>],
    user_factors: &[f32],
    item_factors: &[f32],
    k_factors: usize,
    k: usize,
    pool: &rayon::ThreadPool,
) -> Vec<Vec<u32>> {
    let n_items = item_factors.len() / k_factors;
    pool.install(|| {
        (0..train.n_rows)
            .into_par_iter()
            .map(|u| {
                if test[u].is_empty() {
                    return vec![];
                }
                let xu = &user_factors[u * k_factors..(u + 1) * k_factors];
                let scores = (0..n_items).map(|i| {
                    (
                        i as u32,
                        dot(xu, &item_factors[i * k_factors..(i + 1) * k_factors]),
                    )
                });
                top_k(scores, train.row(u).0, k)
            })
            .collect()
    })
}

/// Top-k lists by popularity (number of training users per item).
pub fn popularity_rankings(train: &Csr, test: &[HashSet<u32>], k: usize) -> Vec<Vec<u32>> {
    let mut pop = vec![0f32; train.n_cols];
    for &i in &train.indices {
        pop[i as usize] += 1.0;
    }
    (0..train.n_rows)
        .map(|u| {
            if test[u].is_empty() {
                vec![]
            } else {
                top_k(
                    pop.iter().enumerate().map(|(i, &p)| (i as u32, p)),
                    train.row(u).0,
                    k,
                )
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u32]) -> HashSet<u32> {
        v.iter().copied().collect()
    }

    #[test]
    fn hand_computed_metrics() {
        // Ranked [1, 2, 3, 4, 5], relevant {2, 5, 9}, k = 5: hits at ranks 2 and 5.
        let ranked = [1, 2, 3, 4, 5];
        let rel = set(&[2, 5, 9]);
        assert_eq!(precision_at_k(&ranked, &rel, 5), 2.0 / 5.0);
        assert_eq!(recall_at_k(&ranked, &rel, 5), 2.0 / 3.0);
        // DCG = 1/log2(3) + 1/log2(6); IDCG = 1 + 1/log2(3) + 1/log2(4)
        let dcg = 1.0 / 3f64.log2() + 1.0 / 6f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2() + 0.5;
        assert!((ndcg_at_k(&ranked, &rel, 5) - dcg / idcg).abs() < 1e-12);
        // AP = (1/2 + 2/5) / min(5, 3)
        assert!((average_precision_at_k(&ranked, &rel, 5) - (0.5 + 0.4) / 3.0).abs() < 1e-12);
        // k cuts the list: at k = 1 nothing is found.
        assert_eq!(precision_at_k(&ranked, &rel, 1), 0.0);
        assert_eq!(ndcg_at_k(&ranked, &rel, 1), 0.0);
        // A perfect list scores 1.
        assert_eq!(ndcg_at_k(&[2, 5, 9], &rel, 3), 1.0);
        assert_eq!(average_precision_at_k(&[2, 5, 9], &rel, 3), 1.0);
    }

    #[test]
    fn summary_means_and_coverage() {
        let rankings = vec![vec![0, 1], vec![], vec![2, 0]];
        let test = vec![set(&[1]), set(&[]), set(&[3])];
        let m = summarise(&rankings, &test, 2, 10);
        assert_eq!(m.users, 2);
        assert_eq!(m.precision, (0.5 + 0.0) / 2.0);
        assert_eq!(m.recall, (1.0 + 0.0) / 2.0);
        assert_eq!(m.coverage, 3.0 / 10.0);
    }

    #[test]
    fn top_k_orders_breaks_ties_and_excludes() {
        let scores = [(0, 1.0), (1, 3.0), (2, 3.0), (3, 2.0), (4, 5.0)];
        assert_eq!(top_k(scores.iter().copied(), &[], 3), vec![4, 1, 2]);
        assert_eq!(top_k(scores.iter().copied(), &[1, 4], 3), vec![2, 3, 0]);
        assert_eq!(top_k(scores.iter().copied(), &[], 10), vec![4, 1, 2, 3, 0]);
        assert!(top_k(scores.iter().copied(), &[], 0).is_empty());
    }

    #[test]
    fn the_simplest_candidate_within_one_standard_error_wins() {
        // b beats a by 0.01 on average, but the per-user differences vary far more: a, the
        // simpler, is kept. c beats a by 0.1 on every user: c wins however complex it is.
        let a = [0.5, 0.3, 0.7, 0.1, 0.4, 0.6];
        let b = [0.7, 0.1, 0.9, 0.0, 0.3, 0.7];
        let c = [0.6, 0.4, 0.8, 0.2, 0.5, 0.7];
        assert_eq!(simplest_within_one_se(&[&a, &b], &[0, 1]), 0);
        assert_eq!(simplest_within_one_se(&[&a, &b, &c], &[0, 1, 2]), 2);
        // Same rank: the higher mean.
        assert_eq!(simplest_within_one_se(&[&a, &b], &[1, 1]), 1);
        // One candidate, or one user: the best.
        assert_eq!(simplest_within_one_se(&[&a], &[3]), 0);
        assert_eq!(simplest_within_one_se(&[&[0.2], &[0.3]], &[0, 1]), 1);
    }

    #[test]
    fn temporal_split_holds_out_the_latest() {
        let pairs = [
            (0, 0, 2.0, 10),
            (0, 1, 2.0, 30),
            (0, 2, 2.0, 20),
            (0, 3, 2.0, 40),
            (0, 4, 2.0, 50),
            (1, 0, 2.0, 5),
        ];
        let s = temporal_split(2, 5, &pairs, 0.4);
        assert_eq!(s.test[0], set(&[3, 4]));
        assert!(s.test[1].is_empty());
        assert_eq!(s.train.row(0).0, &[0, 1, 2]);
        assert_eq!(s.train.row(1).0, &[0]);
    }
}
