#!/usr/bin/env bash
# Recommendation quality (a benchmark, not a test): on UCI Online Retail (when ../shared/data
# has it) and two synthetic shops of different sizes, printed side by side in one run:
#   - ours with defaults: evaluate()'s `auto` row, i.e. what train() with no arguments would
#     serve (its choice made on a validation split of the training part alone);
#   - each of our families at fixed settings (ALS as train(model_type => 'als') defaults, EASE
#     at the middle of the λ grid, RP3beta at beta 0.5, popularity, trending);
#   - the peers of bench/quality_peers.py, each tuned on the same kind of validation split:
#     implicit ALS (12-point grid), numpy EASE (9 λ), popularity;
#   - train()'s seconds with defaults (selection and refit on all the data).
# Protocol of evaluate(): per user the latest 20 % of their distinct items held out; NDCG@10 and
# recall@10 over every item the user has not interacted with.
source "$(dirname "$0")/lib.sh"
THREADS=${BENCH_THREADS:-2}
VENV=$ROOT/build/venv
OUT=$ROOT/build/bench_quality
mkdir -p "$OUT"

install_prereqs
[ "${BENCH_SKIP_INSTALL:-0}" = 1 ] || install_extension
start_cluster
if [ ! -x "$VENV/bin/python" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 || true
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q implicit==0.7.2 numpy scipy
# implicit asks for single-threaded BLAS (its own threads do the work); numpy EASE gets the same.
export OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 OMP_NUM_THREADS=1

# The aggregate train() reads with its default as_of (see src/pg/interactions.rs).
EXPORT="SELECT e.user_id, e.item_id,
       CAST(sum(t.weight * exp(greatest(-50.0, -0.6931471805599453
            * greatest(0.0, date_part('epoch', m.as_of - e.occurred_at)) / date_part('epoch', t.half_life)))) AS float8),
       date_part('epoch', max(e.occurred_at))
  FROM personalize.events e
  JOIN personalize.event_types t ON t.event_type = e.event_type
  CROSS JOIN (SELECT least(max(occurred_at), now()) AS as_of FROM personalize.events WHERE item_id IS NOT NULL) m
 WHERE e.item_id IS NOT NULL AND t.weight <> 0
 GROUP BY e.user_id, e.item_id
HAVING sum(t.weight * exp(greatest(-50.0, -0.6931471805599453
            * greatest(0.0, date_part('epoch', m.as_of - e.occurred_at)) / date_part('epoch', t.half_life)))) > 0"

run_one() {  # run_one NAME: ours and the peers on database pp_bench_quality
    local name=$1 csv=$OUT/$1.csv
    psql -X -q -d pp_bench_quality -c "\\copy ($EXPORT) TO '$csv' WITH (FORMAT csv)"
    local ours
    ours=$(psql -X -q -At -d pp_bench_quality -v ON_ERROR_STOP=1 <<SQL
SET client_min_messages = warning;
SET personalize.training_threads = $THREADS;
SELECT json_object_agg(method, json_build_object('ndcg', round(ndcg::numeric, 4), 'recall', round(recall::numeric, 4)))
  FROM personalize.evaluate(k => 10);
CREATE TEMP TABLE trained AS SELECT * FROM personalize.train();
SELECT json_build_object('train_seconds', round((read_seconds + train_seconds + write_seconds)::numeric, 1),
                         'chosen', (SELECT params ->> 'model_type' || ' ' || (params - 'spec' - 'selection' - 'window' - 'window_seconds' - 'model_type' - 'seed')::text
                                      FROM personalize.models m WHERE m.model_id = t.model_id))
  FROM trained t;
SQL
)
    local peers
    peers=$("$VENV/bin/python" "$ROOT/bench/quality_peers.py" "$csv" "$THREADS")
    "$VENV/bin/python" - "$name" "$ours" "$peers" <<'PY'
import json, sys
name, ours, peers = sys.argv[1], sys.argv[2].strip().splitlines(), json.loads(sys.argv[3])
evals, train = json.loads(ours[0]), json.loads(ours[1])
best_peer = max(p["ndcg"] for p in peers.values())
print(f"\n{name}: train() with defaults chose {train['chosen']} in {train['train_seconds']} s")
print(f"  {'method':<26}{'NDCG@10':>10}{'recall@10':>11}")
for m in ("auto", "ease", "rp3beta", "als", "popularity", "trending"):
    if m in evals:
        label = "ours, defaults (auto)" if m == "auto" else f"ours, {m}"
        print(f"  {label:<26}{float(evals[m]['ndcg']):>10.4f}{float(evals[m]['recall']):>11.4f}")
for m, p in peers.items():
    print(f"  {'peer, ' + m:<26}{p['ndcg']:>10.4f}{p['recall']:>11.4f}   chosen {p['chosen']}, {p['seconds']:.1f} s")
auto = float(evals.get("auto", {"ndcg": 0})["ndcg"])
print(f"  ours with defaults / best tuned peer: {auto / best_peer:.3f} (budget >= 1)")
PY
}

for spec in ${BENCH_SYNTHETIC:-shop-small:100000:5000:1000 shop-large:1000000:50000:5000}; do
    IFS=: read -r name events users items <<<"$spec"
    say "$name: generating $events events ($users users, $items items)"
    fresh_db pp_bench_quality
    psql -X -q -d pp_bench_quality -v ON_ERROR_STOP=1 -c "CREATE EXTENSION pg_personalize" \
        -c "SELECT * FROM personalize.generate_shop($events, users => $users, items => $items, seed => 1)" >/dev/null
    run_one "$name"
done
DATA=$ROOT/../shared/data/online_retail.csv.gz
if [ -f "$DATA" ] && [ "${BENCH_SKIP_RETAIL:-0}" != 1 ]; then
    say "online-retail: importing"
    fresh_db pp_bench_quality
    psql -X -q -d pp_bench_quality -v ON_ERROR_STOP=1 <<SQL >/dev/null
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
