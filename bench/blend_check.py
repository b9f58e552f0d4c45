"""How blends of EASE and RP3beta score on evaluate()'s held-out split (a check, not a test):
NDCG@10 and recall@10 of EASE (λ given, BLEND_NEIGHBORS weights per item, default 1,000 as
train() keeps), of RP3beta (β ½, as many weights) and of their blends at several EASE shares,
each model's weights divided by its mean row L1 norm first and each row cut back to
BLEND_NEIGHBORS weights afterwards, as train()'s blends are.

    build/venv/bin/python bench/blend_check.py build/bench_quality/online-retail.csv 291 466

The CSV is the one scripts/bench_quality.sh exports (user_id, item_id, strength, last_at).
"""
import os
import sys

import numpy as np
import scipy.sparse as sp

from quality_peers import FRACTION, K, ease_fit, load, score, split, top_k


def rp3beta(x, beta, keep):
    users_per_item = np.maximum(np.asarray(x.sum(0)).ravel(), 1)
    items_per_user = np.maximum(np.asarray(x.sum(1)).ravel(), 1)
    w = ((sp.diags(1.0 / users_per_item) @ x.T) @ (sp.diags(1.0 / items_per_user) @ x)).toarray()
    w /= np.power(users_per_item, beta)[None, :]
    np.fill_diagonal(w, 0.0)
    return sparsify(w, keep)


def sparsify(w, keep):
    w = w.copy()
    drop = np.argpartition(-np.abs(w), keep, axis=1)[:, keep:]
    np.put_along_axis(w, drop, 0.0, axis=1)
    return w


def main():
    path, lambdas = sys.argv[1], [float(v) for v in sys.argv[2:]] or [500.0]
    n_users, n_items, uu, ii, strength, last = load(path)
    mask, test = split(np.ones(len(uu), dtype=bool), uu, ii, last, FRACTION)
    train = sp.csr_matrix((strength[mask], (uu[mask], ii[mask])), shape=(n_users, n_items))
    x = (train > 0).astype(np.float64).tocsr()

    def report(name, w):
        ranked = {u: top_k(np.asarray(x[u] @ w).ravel(), train[u].indices, K) for u in test}
        ndcg, recall = score(ranked, test)
        print(f"{name:<36}{ndcg:>9.4f}{recall:>9.4f}", flush=True)

    keep = int(os.environ.get("BLEND_NEIGHBORS", "1000"))
    r = rp3beta(x, 0.5, keep)
    report("rp3beta beta 0.5", r)
    for lam in lambdas:
        dense = ease_fit(train, lam)
        report(f"ease l2 {lam:g} dense", dense)
        b = sparsify(dense, keep)
        report(f"ease l2 {lam:g}", b)
        for share in (0.9, 0.8, 0.7, 0.6, 0.5):
            mix = share * b / np.abs(b).sum(1).mean() + (1 - share) * r / np.abs(r).sum(1).mean()
            report(f"blend {share} ease l2 {lam:g}", sparsify(mix, keep))


if __name__ == "__main__":
    main()
