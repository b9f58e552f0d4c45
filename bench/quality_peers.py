"""The peers of bench_quality.sh, on the interactions pg_personalize trains on, with the split
and metrics of personalize.evaluate(): per user the latest 20 % of their distinct items held
out (ties by item id), NDCG@10 and recall@10 over all items the user has not interacted with.

Each tuned peer chooses its parameters on a validation split of the training part alone (each
user's latest fifth of what is left), is refitted on the training part and scored on the
held-out items, as evaluate()'s `auto` row does for pg_personalize:
  - popularity (number of training users per item);
  - implicit ALS (conjugate gradient), a 12-point grid of factors, regularization and alpha;
  - EASE in numpy (dense solve, float64, all weights), λ from a 9-point geometric grid.

Input CSV: user_id, item_id, strength, last_at (the aggregate train() reads).
Prints one JSON object: {peer: {"ndcg", "recall", "chosen", "seconds"}}.
"""
import csv
import json
import math
import sys
import time

import numpy as np
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares

K = 10
FRACTION = 0.2


def load(path):
    rows = []
    with open(path, newline="") as f:
        for u, i, s, t in csv.reader(f):
            rows.append((u, i, float(s), int(float(t))))
    # Dense indexes as pg_personalize numbers them: ids in sorted (code-point) order.
    users = {u: n for n, u in enumerate(sorted({r[0] for r in rows}))}
    items = {i: n for n, i in enumerate(sorted({r[1] for r in rows}))}
    uu = np.array([users[r[0]] for r in rows], dtype=np.int32)
    ii = np.array([items[r[1]] for r in rows], dtype=np.int32)
    strength = np.array([r[2] for r in rows], dtype=np.float32)
    last = np.array([r[3] for r in rows], dtype=np.int64)
    return len(users), len(items), uu, ii, strength, last


def split(keep_in, uu, ii, last, fraction):
    """Temporal hold-out among the rows `keep_in` marks: returns (train mask, {user: items})."""
    idx = np.nonzero(keep_in)[0]
    order = idx[np.lexsort((ii[idx], last[idx], uu[idx]))]
    train = keep_in.copy()
    test = {}
    start = 0
    while start < len(order):
        u = uu[order[start]]
        end = start
        while end < len(order) and uu[order[end]] == u:
            end += 1
        n = end - start
        held = min(max(math.floor(n * fraction + 0.5), 1), n - 1) if n >= 2 else 0
        for j in range(end - held, end):
            train[order[j]] = False
            test.setdefault(int(u), set()).add(int(ii[order[j]]))
        start = end
    return train, test


def score(rankings, test):
    ndcg = recall = 0.0
    for u, ranked in rankings.items():
        rel = test[u]
        dcg = sum(1.0 / math.log2(r + 2) for r, i in enumerate(ranked[:K]) if i in rel)
        idcg = sum(1.0 / math.log2(r + 2) for r in range(min(K, len(rel))))
        ndcg += dcg / idcg
        recall += len(set(ranked[:K]) & rel) / len(rel)
    n = max(len(rankings), 1)
    return ndcg / n, recall / n


def top_k(scores, seen, k):
    scores = scores.copy()
    scores[seen] = -np.inf
    part = np.argpartition(-scores, k)[:k]
    return [int(i) for i in part[np.lexsort((part, -scores[part]))]]


def popularity(train, test):
    pop = np.asarray((train > 0).sum(axis=0)).ravel().astype(np.float64)
    return {u: top_k(pop, train[u].indices, K) for u in test}


def ease_fit(train, lam):
    x = (train > 0).astype(np.float64)
    g = (x.T @ x).toarray()
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    b[np.diag_indices_from(b)] = 0.0
    return b


def ease_rank(train, b, test):
    out = {}
    x = (train > 0).astype(np.float64).tocsr()
    for u in test:
        s = x[u] @ b
        out[u] = top_k(np.asarray(s).ravel(), train[u].indices, K)
    return out


def als_rank(train, params, test, threads):
    factors, reg, alpha = params
    conf = train.copy()
    conf.data = 1.0 + alpha * conf.data
    m = AlternatingLeastSquares(factors=factors, regularization=reg, alpha=1.0, iterations=15,
                                use_cg=True, calculate_training_loss=False,
                                num_threads=threads, random_state=42)
    m.fit(conf.astype(np.float32), show_progress=False)
    users = np.array(sorted(test), dtype=np.int32)
    ids, _ = m.recommend(users, conf[users], N=K, filter_already_liked_items=True)
    return {int(u): [int(i) for i in r] for u, r in zip(users, ids)}


def tuned(name, grid, fit_rank, n_users, n_items, uu, ii, strength, train_mask, test, last):
    """Chooses on a validation split of the training part, refits on it, scores on test."""
    t0 = time.perf_counter()
    inner_train, inner_test = split(train_mask, uu, ii, last, FRACTION)
    inner = sp.csr_matrix((strength[inner_train], (uu[inner_train], ii[inner_train])),
                          shape=(n_users, n_items))
    best, best_ndcg = None, -1.0
    for params in grid:
        ndcg, _ = score(fit_rank(inner, params, inner_test), inner_test)
        if ndcg > best_ndcg:
            best, best_ndcg = params, ndcg
    outer = sp.csr_matrix((strength[train_mask], (uu[train_mask], ii[train_mask])),
                          shape=(n_users, n_items))
    ndcg, recall = score(fit_rank(outer, best, test), test)
    return {"ndcg": ndcg, "recall": recall, "chosen": best,
            "seconds": time.perf_counter() - t0}


def main():
    path, threads = sys.argv[1], int(sys.argv[2])
    n_users, n_items, uu, ii, strength, last = load(path)
    train_mask, test = split(np.ones(len(uu), dtype=bool), uu, ii, last, FRACTION)
    train = sp.csr_matrix((strength[train_mask], (uu[train_mask], ii[train_mask])),
                          shape=(n_users, n_items))
    out = {}
    t0 = time.perf_counter()
    ndcg, recall = score(popularity(train, test), test)
    out["popularity"] = {"ndcg": ndcg, "recall": recall, "chosen": None,
                         "seconds": time.perf_counter() - t0}
    als_grid = [(f, r, a) for f in (32, 64, 128) for r, a in ((0.01, 1.0), (0.1, 5.0), (1.0, 5.0), (10.0, 20.0))]
    out["implicit_als"] = tuned("als", als_grid,
                                lambda m, p, t: als_rank(m, p, t, threads),
                                n_users, n_items, uu, ii, strength, train_mask, test, last)
    if n_items <= 20000:
        ease_grid = [10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 3000.0, 10000.0, 30000.0]
        out["numpy_ease"] = tuned("ease", ease_grid,
                                  lambda m, lam, t: ease_rank(m, ease_fit(m, lam), t),
                                  n_users, n_items, uu, ii, strength, train_mask, test, last)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
