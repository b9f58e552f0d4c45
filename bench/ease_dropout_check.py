"""How EASE with dropout scores on evaluate()'s splits (a check, not a test): NDCG@10 and
recall@10 on the validation split (the training part's own latest fifth, where train()
chooses) and on the held-out split (where bench_quality.sh scores), for penalties on an item of
mean popularity of 2, 4 and 8 times the mean number of users per item, with 0%, 50%, 80% and
95% of it moved from λ into dropout: λ + ρ · users of the item with ρ = p / (1 − p)
(EDLAE, Steck 2020; `core::ease::Penalty`). Dense weights cut to BLEND_NEIGHBORS (default
1,000) per item, as train() keeps.

    build/venv/bin/python bench/ease_dropout_check.py build/bench_quality/online-retail.csv

The CSV is the one scripts/bench_quality.sh exports (user_id, item_id, strength, last_at).
"""
import os
import sys

import numpy as np
import scipy.sparse as sp

from blend_check import sparsify
from quality_peers import FRACTION, K, load, score, split, top_k


def fit(x, l2, rho, keep):
    g = (x.T @ x).toarray()
    g[np.diag_indices_from(g)] += l2 + rho * np.diag(g)
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return sparsify(b, keep) if keep < b.shape[1] else b


def main():
    n_users, n_items, uu, ii, strength, last = load(sys.argv[1])
    keep = int(os.environ.get("BLEND_NEIGHBORS", "1000"))
    mask, test = split(np.ones(len(uu), dtype=bool), uu, ii, last, FRACTION)
    inner, valid = split(mask, uu, ii, last, FRACTION)
    print(f"{'split':<11}{'penalty':>8}{'in dropout':>12}{'l2':>8}{'rho':>7}{'NDCG@10':>9}{'recall':>9}")
    for name, m, held in (("validation", inner, valid), ("held-out", mask, test)):
        train = sp.csr_matrix((strength[m], (uu[m], ii[m])), shape=(n_users, n_items))
        x = (train > 0).astype(np.float64).tocsr()
        mean = x.sum() / n_items
        users = sorted(held)
        for factor in (2.0, 4.0, 8.0):
            total = factor * mean
            for share in (0.0, 0.5, 0.8, 0.95):
                l2, rho = max((1 - share) * total, 1.0), share * total / mean
                s = x[users] @ fit(x, l2, rho, keep)
                ranked = {u: top_k(np.asarray(s[j]).ravel(), train[u].indices, K)
                          for j, u in enumerate(users)}
                ndcg, recall = score(ranked, held)
                print(f"{name:<11}{factor:>7g}x{share:>12.0%}{l2:>8.0f}{rho:>7.2f}{ndcg:>9.4f}{recall:>9.4f}",
                      flush=True)


if __name__ == "__main__":
    main()
