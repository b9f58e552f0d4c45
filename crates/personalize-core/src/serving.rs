//! Serving math in plain Rust: bounded top-k over item factors with filters applied inside
//! the top-k, a user's decayed strengths from raw events (the same formula as the training
//! read), fold-in, explanations, cosine similarity and re-ranking.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::als;
use crate::kernels;

/// A scored item. `Ord` puts the *worse* entry first (lower score, then higher index), so a
/// max-heap of entries has the worst of the current top k on top.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    score: f32,
    index: u32,
}

impl Eq for Entry {}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The best `k` (index, score) pairs seen, best first; ties go to the lower index (items are
/// numbered in id order, so ties break by item id).
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(1 << 16) + 1),
        }
    }

    #[inline]
    pub fn offer(&mut self, index: u32, score: f32) {
        if self.k == 0 || score.is_nan() {
            return;
        }
        let e = Entry { score, index };
        if self.heap.len() < self.k {
            self.heap.push(e);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if e < *worst {
                *worst = e;
            }
        }
    }

    /// The lowest score that can still enter, once the top k is full.
    #[inline]
    pub fn threshold(&self) -> Option<f32> {
        if self.heap.len() < self.k {
            None
        } else {
            self.heap.peek().map(|e| e.score)
        }
    }

    pub fn into_sorted(self) -> Vec<(u32, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|e| (e.index, e.score))
            .collect()
    }
}

/// Top `k` items by `y_i · user` among those `keep` accepts. Filters run inside the top-k, so
/// the answer has k rows whenever k items are eligible. Scores are computed a block of items
/// at a time into a small buffer: no per-catalogue scratch memory is kept.
pub fn top_k_by_dot(
    y: &[f32],
    user: &[f32],
    k: usize,
    keep: impl Fn(u32) -> bool,
) -> Vec<(u32, f32)> {
    const BLOCK: usize = 1024;
    let mut top = TopK::new(k);
    if user.is_empty() {
        return top.into_sorted();
    }
    let mut scores = [0f32; BLOCK];
    for (b, rows) in y.chunks(BLOCK * user.len()).enumerate() {
        let scores = &mut scores[..rows.len() / user.len()];
        kernels::score_all(rows, user, scores);
        for (j, &s) in scores.iter().enumerate() {
            // Cheap reject before the filter: most items fall below the current k-th score.
            if let Some(t) = top.threshold() {
                if s < t {
                    continue;
                }
            }
            let i = (b * BLOCK + j) as u32;
            if keep(i) {
                top.offer(i, s);
            }
        }
    }
    top.into_sorted()
}

/// The first `k` items of a precomputed ranking (e.g. popularity) that `keep` accepts.
pub fn top_k_in_order(
    order: &[u32],
    score: &[f32],
    k: usize,
    keep: impl Fn(u32) -> bool,
) -> Vec<(u32, f32)> {
    order
        .iter()
        .copied()
        .filter(|&i| keep(i))
        .take(k)
        .map(|i| (i, score[i as usize]))
        .collect()
}

/// A set of item indexes below a bound, a bit per item.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemSet {
    bits: Vec<u64>,
}

impl ItemSet {
    /// The empty set over items 0..n.
    pub fn new(n: usize) -> Self {
        ItemSet {
            bits: vec![0; n.div_ceil(64)],
        }
    }

    /// Adds item i (ignored when i is out of the set's range).
    pub fn insert(&mut self, i: u32) {
        if let Some(word) = self.bits.get_mut(i as usize / 64) {
            *word |= 1 << (i % 64);
        }
    }

    #[inline]
    pub fn contains(&self, i: u32) -> bool {
        self.bits
            .get(i as usize / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// Items 0..n that are not in the set.
    pub fn complement(&self, n: usize) -> ItemSet {
        let mut out = ItemSet::new(n);
        for (o, w) in out.bits.iter_mut().zip(&self.bits) {
            *o = !w;
        }
        for w in out.bits.iter_mut().skip(self.bits.len()) {
            *w = !0;
        }
        if !n.is_multiple_of(64) {
            if let Some(last) = out.bits.last_mut() {
                *last &= (1u64 << (n % 64)) - 1;
            }
        }
        out
    }

    /// Adds every item of `other`.
    pub fn union_with(&mut self, other: &ItemSet) {
        for (w, o) in self.bits.iter_mut().zip(&other.bits) {
            *w |= o;
        }
    }
}

/// One event of a user's history, with its type's weight and half-life.
#[derive(Clone, Copy, Debug)]
pub struct HistoryEvent {
    pub item: u32,
    pub weight: f32,
    pub half_life_seconds: f64,
    /// Unix seconds.
    pub at: f64,
}

/// Per item: Σ weight · 2^(-age / half_life), age measured back from `reference`, over the
/// events inside the window — the training read's formula (including its clamp, so very old
/// events give ~0). Only positive strengths are kept, sorted by item.
pub fn decayed_strengths(
    events: &[HistoryEvent],
    reference: f64,
    window_seconds: Option<f64>,
) -> Vec<(u32, f32)> {
    let mut sums: Vec<(u32, f64)> = Vec::with_capacity(events.len());
    for e in events {
        if e.at > reference || e.weight == 0.0 || e.half_life_seconds <= 0.0 {
            continue;
        }
        if let Some(w) = window_seconds {
            if e.at <= reference - w {
                continue;
            }
        }
        let exponent =
            (-std::f64::consts::LN_2 * (reference - e.at) / e.half_life_seconds).max(-50.0);
        sums.push((e.item, e.weight as f64 * exponent.exp()));
    }
    sums.sort_by_key(|p| p.0);
    let mut out: Vec<(u32, f32)> = Vec::new();
    let mut i = 0;
    while i < sums.len() {
        let item = sums[i].0;
        let mut s = 0.0;
        while i < sums.len() && sums[i].0 == item {
            s += sums[i].1;
            i += 1;
        }
        if s > 0.0 && s.is_finite() {
            out.push((item, s as f32));
        }
    }
    out
}

/// A returning user's current session: per item the summed weights (undecayed) of their events
/// at or after `since`. `None` when there is nothing to weigh in: no such event, or no event
/// before it (a newcomer's whole history is their session, and fold-in already serves it).
pub fn current_session(events: &[HistoryEvent], since: f64) -> Option<Vec<(u32, f32)>> {
    if !events.iter().any(|e| e.at < since && e.weight > 0.0) {
        return None;
    }
    let out = sum_by_item(
        events
            .iter()
            .filter(|e| e.at >= since && e.weight > 0.0)
            .map(|e| (e.item, e.weight))
            .collect(),
    );
    (!out.is_empty()).then_some(out)
}

/// How much of the session's scores to add to the long-term ones: scaled so the session's
/// size (its best score, or its vector's length) is `weight / (1 − weight)` times the
/// long-term size — at 0.5 both speak at the same scale, however long the history. `None`
/// when the session alone should speak (weight 1, or no long-term scores to mix with).
pub fn session_scale(weight: f64, long_term_size: f64, session_size: f64) -> Option<f32> {
    let positive = |x: f64| x > 0.0;
    if weight >= 1.0 || !positive(long_term_size) || !positive(session_size) {
        return None;
    }
    Some((weight / (1.0 - weight) * long_term_size / session_size) as f32)
}

/// Confidences c = 1 + alpha · strength, as training computes them.
pub fn confidences(strengths: &[(u32, f32)], alpha: f32) -> (Vec<u32>, Vec<f32>) {
    strengths.iter().map(|&(i, s)| (i, 1.0 + alpha * s)).unzip()
}

/// An anonymous session's items as strengths: each view counts 1, repeats add up.
pub fn session_strengths(items: &[u32]) -> Vec<(u32, f32)> {
    sum_by_item(items.iter().map(|&i| (i, 1.0)).collect())
}

/// (item, value) pairs with the values of each item summed, sorted by item.
pub fn sum_by_item(mut pairs: Vec<(u32, f32)>) -> Vec<(u32, f32)> {
    pairs.sort_by_key(|p| p.0);
    let mut out: Vec<(u32, f32)> = Vec::with_capacity(pairs.len());
    for (i, v) in pairs {
        match out.last_mut() {
            Some(last) if last.0 == i => last.1 += v,
            _ => out.push((i, v)),
        }
    }
    out
}

/// Why an item scores what it does for a folded-in user: with A the user's system matrix,
/// x = A⁻¹ Σ_j c_j y_j, so score = y_tᵀ x = Σ_j c_j (A⁻¹ y_t) · y_j — one term per item of the
/// history (the explanation of `implicit`). Returns the score and the terms, largest first.
pub fn explain(
    cols: &[u32],
    conf: &[f32],
    y: &[f32],
    yty: &[f32],
    k: usize,
    target: u32,
    extra: f32,
) -> Option<(f32, Vec<(u32, f32)>)> {
    let system = als::RowSystem::new(cols, conf, y, yty, k, extra)?;
    let t = target as usize;
    let mut z: Vec<f64> = y[t * k..(t + 1) * k].iter().map(|&v| v as f64).collect();
    system.solve(&mut z);
    let mut terms: Vec<(u32, f32)> = cols
        .iter()
        .zip(conf)
        .map(|(&j, &c)| {
            let yj = &y[j as usize * k..(j as usize + 1) * k];
            let d: f64 = z.iter().zip(yj).map(|(a, &b)| a * b as f64).sum();
            (j, (c as f64 * d) as f32)
        })
        .collect();
    let score = terms.iter().map(|t| t.1 as f64).sum::<f64>() as f32;
    terms.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Some((score, terms))
}

/// Rows scaled to unit length (zero rows stay zero): dot products become cosines.
pub fn normalize_rows(y: &[f32], k: usize) -> Vec<f32> {
    let mut out = y.to_vec();
    if k == 0 {
        return out;
    }
    for row in out.chunks_exact_mut(k) {
        let norm = row
            .iter()
            .map(|v| (*v as f64) * (*v as f64))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            for v in row.iter_mut() {
                *v = (*v as f64 / norm) as f32;
            }
        }
    }
    out
}

/// Positions of `candidates` in their new order: items with a score first, best first (ties
/// keep the given order), then the ones without (unknown to the model) in the given order.
pub fn rerank(scores: &[Option<f32>]) -> Vec<usize> {
    let mut known: Vec<usize> = (0..scores.len()).filter(|&p| scores[p].is_some()).collect();
    known.sort_by(|&a, &b| {
        let (sa, sb) = (scores[a].unwrap_or(0.0), scores[b].unwrap_or(0.0));
        sb.total_cmp(&sa).then(a.cmp(&b))
    });
    known.extend((0..scores.len()).filter(|&p| scores[p].is_none()));
    known
}

#[cfg(test)]
mod tests {
    #[test]
    fn item_set_complement_and_union() {
        use super::ItemSet;
        for n in [0usize, 1, 63, 64, 65, 130] {
            let mut a = ItemSet::new(n);
            for i in (0..n as u32).step_by(3) {
                a.insert(i);
            }
            let c = a.complement(n);
            for i in 0..n as u32 {
                assert_eq!(c.contains(i), i % 3 != 0, "n {n} item {i}");
            }
            assert!(!c.contains(n as u32), "n {n}: nothing beyond the bound");
            let mut u = a.clone();
            u.union_with(&c);
            assert_eq!(u, ItemSet::new(n).complement(n));
            assert_eq!(ItemSet::new(n).complement(n).is_empty(), n == 0);
        }
    }

    use super::*;

    // Four items, two factors: scores for user (1, 0) are 3, 1, 3, -2.
    const Y: [f32; 8] = [3.0, 0.0, 1.0, 5.0, 3.0, -1.0, -2.0, 0.0];

    #[test]
    fn top_k_orders_by_score_then_index() {
        let top = top_k_by_dot(&Y, &[1.0, 0.0], 3, |_| true);
        assert_eq!(top, vec![(0, 3.0), (2, 3.0), (1, 1.0)]);
        let top = top_k_by_dot(&Y, &[1.0, 0.0], 1, |_| true);
        assert_eq!(top, vec![(0, 3.0)]);
    }

    #[test]
    fn filters_apply_inside_the_top_k() {
        let top = top_k_by_dot(&Y, &[1.0, 0.0], 2, |i| i != 0);
        assert_eq!(top, vec![(2, 3.0), (1, 1.0)]);
    }

    #[test]
    fn k_larger_than_the_catalogue_returns_every_eligible_item() {
        let top = top_k_by_dot(&Y, &[1.0, 0.0], 10, |i| i != 1);
        assert_eq!(top, vec![(0, 3.0), (2, 3.0), (3, -2.0)]);
        assert!(top_k_by_dot(&Y, &[1.0, 0.0], 0, |_| true).is_empty());
    }

    #[test]
    fn top_k_matches_a_full_sort_on_random_data() {
        let k = 16;
        let n = 3000;
        let y: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 97.0)
            .collect();
        let user: Vec<f32> = (0..k).map(|i| (i as f32 - 7.5) / 3.0).collect();
        let top = top_k_by_dot(&y, &user, 25, |i| i % 3 != 0);
        // The selection is under test, so the scores come from the same kernel.
        let mut scores = vec![0f32; n];
        kernels::score_all(&y, &user, &mut scores);
        let mut all: Vec<(u32, f32)> = (0..n as u32)
            .filter(|i| i % 3 != 0)
            .map(|i| (i, scores[i as usize]))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let expected: Vec<u32> = all.iter().take(25).map(|p| p.0).collect();
        let got: Vec<u32> = top.iter().map(|p| p.0).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn ranked_order_with_filter() {
        let order = [2u32, 0, 3, 1];
        let score = [5.0f32, 1.0, 9.0, 3.0];
        assert_eq!(
            top_k_in_order(&order, &score, 2, |i| i != 0),
            vec![(2, 9.0), (3, 3.0)]
        );
    }

    #[test]
    fn strengths_halve_every_half_life_and_respect_the_window() {
        let day = 86_400.0;
        let ev = |item, weight, at| HistoryEvent {
            item,
            weight,
            half_life_seconds: day,
            at,
        };
        let events = [
            ev(1, 4.0, 10.0 * day),       // age 0: 4
            ev(1, 4.0, 9.0 * day),        // age 1 day: 2
            ev(2, 1.0, 8.0 * day),        // age 2 days: 0.25
            ev(3, -1.0, 10.0 * day),      // net negative: dropped
            ev(4, 1.0, 11.0 * day),       // after the reference: ignored
            ev(5, 1.0, 10.0 * day - 1.0), // weight 1, practically no decay
        ];
        let s = decayed_strengths(&events, 10.0 * day, None);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].0, 1);
        assert!((s[0].1 - 6.0).abs() < 1e-5);
        assert!((s[1].1 - 0.25).abs() < 1e-6);
        assert_eq!(s[2].0, 5);
        let windowed = decayed_strengths(&events, 10.0 * day, Some(1.5 * day));
        assert_eq!(windowed.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 5]);
        let (cols, conf) = confidences(&s, 2.0);
        assert_eq!(cols, vec![1, 2, 5]);
        assert!((conf[0] - 13.0).abs() < 1e-4);
    }

    #[test]
    fn the_current_session_is_the_recent_events_of_a_returning_user() {
        let event = |item, weight, at| HistoryEvent {
            item,
            weight,
            half_life_seconds: 86_400.0,
            at,
        };
        let events = [
            event(7, 1.0, 100.0),
            event(3, 2.0, 100.0),
            event(7, 1.0, 99.0),
            event(9, 0.0, 98.0),
            event(1, 5.0, 10.0),
        ];
        assert_eq!(
            current_session(&events, 50.0),
            Some(vec![(3, 2.0), (7, 2.0)])
        );
        // Nothing before the session (a newcomer), or nothing in it.
        assert_eq!(current_session(&events[..4], 50.0), None);
        assert_eq!(current_session(&events, 101.0), None);
        // Scales: equal at 0.5, three times the long term at 0.75, the session alone at 1.
        assert_eq!(session_scale(0.5, 4.0, 2.0), Some(2.0));
        assert_eq!(session_scale(0.75, 1.0, 1.0), Some(3.0));
        assert_eq!(session_scale(1.0, 1.0, 1.0), None);
        assert_eq!(session_scale(0.5, 0.0, 1.0), None);
    }

    #[test]
    fn item_sets_hold_what_was_inserted() {
        let mut set = ItemSet::new(130);
        assert!(set.is_empty());
        for i in [0, 63, 64, 129, 500] {
            set.insert(i);
        }
        assert!(set.contains(0) && set.contains(63) && set.contains(64) && set.contains(129));
        assert!(!set.contains(1) && !set.contains(128) && !set.contains(500));
        assert!(!set.is_empty());
    }

    #[test]
    fn session_strengths_count_repeats() {
        assert_eq!(session_strengths(&[3, 1, 3]), vec![(1, 1.0), (3, 2.0)]);
    }

    fn gram(y: &[f32], k: usize, reg: f32) -> Vec<f32> {
        let n = y.len() / k;
        let mut g = vec![0f32; k * k];
        for i in 0..n {
            for r in 0..k {
                for s in 0..k {
                    g[r * k + s] += y[i * k + r] * y[i * k + s];
                }
            }
        }
        for r in 0..k {
            g[r * k + r] += reg;
        }
        g
    }

    #[test]
    fn explanation_terms_sum_to_the_fold_in_score() {
        let k = 2;
        let yty = gram(&Y, k, 0.1);
        let cols = [0u32, 1];
        let conf = [5.0f32, 2.0];
        let x = als::fold_in(&cols, &conf, &Y, &yty, k, 0.4).unwrap();
        for target in 0..4u32 {
            let (score, terms) = explain(&cols, &conf, &Y, &yty, k, target, 0.4).unwrap();
            let direct = kernels::dot(&Y[target as usize * k..(target as usize + 1) * k], &x);
            assert!((score - direct).abs() < 1e-4, "{score} vs {direct}");
            assert_eq!(terms.len(), 2);
            assert!(terms[0].1 >= terms[1].1);
        }
        // With no regularisation and one item in two dimensions the system is singular.
        let yty0 = gram(&[1.0, 0.0], k, 0.0);
        assert!(explain(&[0], &[2.0], &[1.0, 0.0], &yty0, k, 0, 0.0).is_none());
    }

    #[test]
    fn normalised_rows_have_unit_length() {
        let n = normalize_rows(&[3.0, 4.0, 0.0, 0.0], 2);
        assert_eq!(n, vec![0.6, 0.8, 0.0, 0.0]);
    }

    #[test]
    fn rerank_puts_unknown_items_last_in_their_order() {
        let order = rerank(&[None, Some(1.0), Some(3.0), None, Some(1.0)]);
        assert_eq!(order, vec![2, 1, 4, 0, 3]);
    }
}
