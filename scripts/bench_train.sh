#!/usr/bin/env bash
# pg_personalize's train() against the `implicit` library's CPU ALS (conjugate gradient), same
# interactions, confidences, factors, iterations, regularization, threads and temporal split;
# printed side by side in one run (a benchmark, not a test). NDCG and recall are means over
# BENCH_SEEDS (default 1..5) random starts on both sides: one seed's start moves NDCG@10 by
# about 1%, as much as the budget's tolerance.
source "$(dirname "$0")/lib.sh"
FACTORS=${BENCH_FACTORS:-64}
ITERATIONS=${BENCH_ITERATIONS:-15}
REG=${BENCH_REG:-0.01}
ALPHA=${BENCH_ALPHA:-1.0}
THREADS=${BENCH_THREADS:-2}
K=10
SEEDS=${BENCH_SEEDS:-1 2 3 4 5}
FRACTION=0.2
VENV=$ROOT/build/venv
OUT=$ROOT/build/bench_train
mkdir -p "$OUT"

install_prereqs
[ "${BENCH_SKIP_INSTALL:-0}" = 1 ] || install_extension
start_cluster
if [ ! -x "$VENV/bin/python" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 || true
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q implicit==0.7.2 numpy scipy
export OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 OMP_NUM_THREADS=1

# The exact aggregate train() reads (see src/pg/interactions.rs), as of the newest event.
EXPORT="SELECT e.user_id, e.item_id,
       CAST(sum(t.weight * exp(greatest(-50.0, -0.6931471805599453
            * date_part('epoch', m.as_of - e.occurred_at) / date_part('epoch', t.half_life)))) AS float8),
       date_part('epoch', max(e.occurred_at))
  FROM personalize.events e
  JOIN personalize.event_types t ON t.event_type = e.event_type
  CROSS JOIN (SELECT max(occurred_at) AS as_of FROM personalize.events WHERE item_id IS NOT NULL) m
 WHERE e.item_id IS NOT NULL AND t.weight <> 0 AND e.occurred_at <= m.as_of
 GROUP BY e.user_id, e.item_id
HAVING sum(t.weight * exp(greatest(-50.0, -0.6931471805599453
            * date_part('epoch', m.as_of - e.occurred_at) / date_part('epoch', t.half_life)))) > 0"

run_one() {  # run_one NAME: train, evaluate and run the peer on database pp_bench_train
    local name=$1 csv=$OUT/$1.csv
    psql -X -q -d pp_bench_train -c "\\copy ($EXPORT) TO '$csv' WITH (FORMAT csv)"
    local ours
    ours=$(psql -X -At -d pp_bench_train -v ON_ERROR_STOP=1 <<SQL
SET client_min_messages = warning;
SET personalize.training_threads = $THREADS;
CREATE TEMP TABLE run AS
SELECT * FROM personalize.train(factors => $FACTORS, iterations => $ITERATIONS,
                                regularization => $REG, alpha => $ALPHA);
SELECT json_build_object('read_seconds', read_seconds, 'train_seconds', train_seconds,
         'users', users, 'items', items, 'interactions', interactions,
         'seconds_per_iteration', (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s)
                                     FROM personalize.models m, unnest(m.seconds_per_iteration) s
                                    WHERE m.model_id = t.model_id))
  FROM run t;
SELECT json_object_agg(method, json_build_object('ndcg', ndcg, 'recall', recall, 'ndcg_per_seed', per_seed))
  FROM (SELECT e.method, avg(e.ndcg) AS ndcg, avg(e.recall) AS recall,
               array_agg(round(e.ndcg::numeric, 4) ORDER BY s) AS per_seed
          FROM unnest('{${SEEDS// /,}}'::int8[]) AS s,
               LATERAL personalize.evaluate(k => $K, test_fraction => $FRACTION, factors => $FACTORS,
                                            iterations => $ITERATIONS, regularization => $REG,
                                            alpha => $ALPHA, seed => s) AS e
         GROUP BY e.method) m;
SQL
)
    local peer
    peer=$("$VENV/bin/python" "$ROOT/bench/implicit_peer.py" "$csv" "$FACTORS" "$ITERATIONS" \
           "$REG" "$ALPHA" "$THREADS" "$K" "$FRACTION" "${SEEDS// /,}")
    printf '%s\t%s\t%s\n' "$name" "$(echo "$ours" | grep '^{' | tr '\n' '\t')" "$peer" >> "$OUT/results.tsv"
}

rm -f "$OUT/results.tsv"
for spec in ${BENCH_SYNTHETIC:-synthetic-1M:1000000:50000:5000 synthetic-5M:5000000:200000:20000}; do
    IFS=: read -r name events users items <<<"$spec"
    say "$name: generating $events events"
    fresh_db pp_bench_train
    psql -X -q -d pp_bench_train -v ON_ERROR_STOP=1 -c "CREATE EXTENSION pg_personalize" \
        -c "SELECT * FROM personalize.generate_shop($events, users => $users, items => $items, seed => 1)" >/dev/null
    run_one "$name"
done
DATA=$ROOT/../shared/data/online_retail.csv.gz
if [ -f "$DATA" ] && [ "${BENCH_SKIP_RETAIL:-0}" != 1 ]; then
    say "online-retail: importing"
    fresh_db pp_bench_train
    psql -X -q -d pp_bench_train -v ON_ERROR_STOP=1 <<SQL >/dev/null
CREATE EXTENSION pg_personalize;
CREATE TABLE retail (invoice_no text, stock_code text, description text, quantity text,
                     invoice_date text, unit_price text, customer_id text, country text);
\copy retail FROM PROGRAM 'gzip -dc $DATA' WITH (FORMAT csv, HEADER true)
SELECT * FROM personalize.import_online_retail('retail');
SQL
    run_one online-retail
else
    echo "online-retail: skipped ($DATA not found)"
fi

say "train(): pg_personalize vs implicit $("$VENV/bin/python" -c 'import implicit; print(implicit.__version__)') (factors $FACTORS, $ITERATIONS iterations, reg $REG, alpha $ALPHA, $THREADS threads, NDCG/recall @$K on a temporal $FRACTION hold-out)"
"$VENV/bin/python" - "$OUT/results.tsv" <<'PY'
import json, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
hdr = f"{'dataset':<15}{'interactions':>13}{'s/iter ours':>12}{'s/iter impl':>12}{'ratio':>7}{'total ours':>11}{'fit impl':>9}{'NDCG ours':>10}{'NDCG impl':>10}{'NDCG pop':>9}{'recall ours':>12}{'recall impl':>12}"
print(hdr); print("-" * len(hdr))
for name, train, ev, *_, peer in rows:
    t, e, p = json.loads(train), json.loads(ev), json.loads(peer)
    print(f"{name:<15}{t['interactions']:>13}{t['seconds_per_iteration']:>12.3f}{p['seconds_per_iteration']:>12.3f}"
          f"{t['seconds_per_iteration']/p['seconds_per_iteration']:>7.2f}{t['read_seconds']+t['train_seconds']:>11.2f}{p['fit_seconds']:>9.2f}"
          f"{e['als']['ndcg']:>10.4f}{p['ndcg']:>10.4f}{e['popularity']['ndcg']:>9.4f}{e['als']['recall']:>12.4f}{p['recall']:>12.4f}")
print("ratio = our seconds per iteration / implicit's (budget <= 0.5); total ours = read events + train.")
print("NDCG and recall: means over the seeds; NDCG ours / implicit per dataset (budget >= 0.99):")
for name, train, ev, *_, peer in rows:
    e, p = json.loads(ev), json.loads(peer)
    print(f"  {name}: {e['als']['ndcg'] / p['ndcg']:.3f}  (ours per seed {e['als']['ndcg_per_seed']}, "
          f"implicit {[round(x, 4) for x in p['ndcg_per_seed']]})")
PY
