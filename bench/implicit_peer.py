"""The peer in bench_train.sh: the `implicit` library's CPU ALS (conjugate gradient) on the
interactions pg_personalize trained on, with the same confidences, split and metrics.

Input CSV (from the same aggregate train() runs): user_id, item_id, strength, last_at.
The timed fit uses the first seed; NDCG and recall are the means over every seed's hold-out fit
(one seed's random start moves NDCG by about 1%, as much as the budget's tolerance).
Prints one JSON object.
"""
import csv
import json
import math
import sys
import time

import numpy as np
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares


def main():
    path, factors, iterations, reg, alpha, threads, k, fraction, seeds = sys.argv[1:10]
    seeds = [int(x) for x in seeds.split(",")]
    factors, iterations, threads, k = int(factors), int(iterations), int(threads), int(k)
    reg, alpha, fraction = float(reg), float(alpha), float(fraction)

    rows = []
    with open(path, newline="") as f:
        for u, i, s, t in csv.reader(f):
            rows.append((u, i, float(s), int(float(t))))
    # Same dense indexes as pg_personalize: ids in sorted order (code-point order = UTF-8
    # byte order, as Rust sorts Strings).
    users = {u: n for n, u in enumerate(sorted({r[0] for r in rows}))}
    items = {i: n for n, i in enumerate(sorted({r[1] for r in rows}))}
    n_users, n_items = len(users), len(items)
    uu = np.array([users[r[0]] for r in rows], dtype=np.int32)
    ii = np.array([items[r[1]] for r in rows], dtype=np.int32)
    conf = np.array([1.0 + alpha * r[2] for r in rows], dtype=np.float32)
    last = np.array([r[3] for r in rows], dtype=np.int64)

    # implicit's CG takes the stored values as the confidence c_ui (with the (c - 1) terms), so
    # storing 1 + alpha * strength with its own alpha = 1 is exactly pg_personalize's objective.
    def model(seed):
        return AlternatingLeastSquares(factors=factors, regularization=reg, alpha=1.0,
                                       iterations=iterations, use_cg=True,
                                       calculate_training_loss=False, num_threads=threads,
                                       random_state=seed)

    full = sp.csr_matrix((conf, (uu, ii)), shape=(n_users, n_items))
    times = []
    m = model(seeds[0])
    t0 = time.perf_counter()
    m.fit(full, show_progress=False, callback=lambda it, el, loss: times.append(el))
    total = time.perf_counter() - t0

    # Temporal hold-out: per user, the latest `fraction` of items (ties by item index).
    order = np.lexsort((ii, last, uu))
    test = {}
    keep = np.ones(len(rows), dtype=bool)
    start = 0
    while start < len(order):
        u = uu[order[start]]
        end = start
        while end < len(order) and uu[order[end]] == u:
            end += 1
        n = end - start
        held = min(max(math.floor(n * fraction + 0.5), 1), n - 1) if n >= 2 else 0
        for j in range(end - held, end):
            keep[order[j]] = False
            test.setdefault(int(u), set()).add(int(ii[order[j]]))
        start = end
    train = sp.csr_matrix((conf[keep], (uu[keep], ii[keep])), shape=(n_users, n_items))
    test_users = np.array(sorted(test), dtype=np.int32)
    ndcgs, recalls = [], []
    for seed in seeds:
        m2 = model(seed)
        m2.fit(train, show_progress=False)
        ids, _ = m2.recommend(test_users, train[test_users], N=k, filter_already_liked_items=True)
        ndcg = recall = 0.0
        for u, rec in zip(test_users, ids):
            rel = test[int(u)]
            hits = [p for p, i in enumerate(rec[:k]) if int(i) in rel]
            dcg = sum(1.0 / math.log2(p + 2) for p in hits)
            idcg = sum(1.0 / math.log2(p + 2) for p in range(min(k, len(rel))))
            ndcg += dcg / idcg
            recall += len(hits) / len(rel)
        ndcgs.append(ndcg / len(test_users))
        recalls.append(recall / len(test_users))
    print(json.dumps({
        "users": n_users, "items": n_items, "interactions": int(full.nnz),
        "seconds_per_iteration": float(np.median(times)), "fit_seconds": total,
        "ndcg": float(np.mean(ndcgs)), "recall": float(np.mean(recalls)),
        "ndcg_per_seed": ndcgs, "test_users": len(test_users),
    }))


if __name__ == "__main__":
    main()
