#!/usr/bin/env bash
# recommend() under load while train() keeps replacing the active model (a load script, not a
# unit test). 8 pgbench clients call recommend() for random users for DURATION seconds; a
# background session retrains the model in a loop. Every call is logged with the model
# versions its rows came from. Passes when: no client errors, every call answered from exactly
# one model version with k rows, several versions served during the run, and every logged
# score equals the dot product of that version's stored factors.
#   SWAP_DURATION  seconds (default 60)   SWAP_CLIENTS  pgbench clients (default 8)
source "$(dirname "$0")/lib.sh"
DURATION=${SWAP_DURATION:-60}
CLIENTS=${SWAP_CLIENTS:-8}
DB=pp_serve_swap
OUT=$ROOT/build/serve_swap
mkdir -p "$OUT"

install_prereqs
[ "${BENCH_SKIP_INSTALL:-0}" = 1 ] || install_extension
start_cluster
fresh_db $DB
psql -X -q -d $DB -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_personalize;
SELECT * FROM personalize.generate_shop(60000, users => 3000, items => 800, seed => 11);
SELECT * FROM personalize.train(factors => 16, iterations => 4);
CREATE SCHEMA swap;
CREATE TABLE swap.users AS SELECT row_number() OVER (ORDER BY user_id)::int AS n, user_id
  FROM (SELECT DISTINCT user_id FROM personalize.events) u;
CREATE UNLOGGED TABLE swap.calls (user_id text, versions int, model_id bigint, rows int,
                                  top_item text, top_score real, source text);
SQL
NUSERS=$(psql -X -At -d $DB -c "SELECT count(*) FROM swap.users")
cat > "$OUT/call.sql" <<'SQL'
\set n random(1, :nusers)
INSERT INTO swap.calls
SELECT b.user_id, count(DISTINCT r.model_id), min(r.model_id), count(*),
       (array_agg(r.item_id ORDER BY r.score DESC, r.item_id))[1], max(r.score), min(r.source)
  FROM swap.users b, personalize.recommend(b.user_id, 10) r WHERE b.n = :n GROUP BY b.user_id;
SQL

say "recommend() with $CLIENTS clients for $DURATION s while train() replaces the model"
: > "$OUT/trained.txt"; : > "$OUT/train_errors.txt"
(
    end=$((SECONDS + DURATION))
    while [ $SECONDS -lt $end ]; do
        psql -X -q -At -d $DB -c "SET client_min_messages = warning" \
            -c "SELECT model_id FROM personalize.train(factors => 16, iterations => 4, seed => (random() * 1000)::int)" \
            >> "$OUT/trained.txt" 2>> "$OUT/train_errors.txt"
    done
) &
trainer=$!
"$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T "$DURATION" -D nusers="$NUSERS" -f "$OUT/call.sql" $DB \
    > "$OUT/pgbench.txt" 2>&1
wait $trainer
cat "$OUT/pgbench.txt" | grep -E "transactions actually processed|failed|aborted|tps =|latency average" || true

say "checks"
result=$(psql -X -At -F ' ' -d $DB <<'SQL'
WITH c AS (SELECT * FROM swap.calls),
wrong AS (
  SELECT count(*) AS n FROM c
    JOIN personalize.model_users mu ON mu.model_id = c.model_id AND mu.user_id = c.user_id
    JOIN personalize.model_items mi ON mi.model_id = c.model_id AND mi.item_id = c.top_item
   WHERE c.source = 'model'
     AND abs((SELECT sum(a * b) FROM unnest(mu.factors, mi.factors) v(a, b)) - c.top_score) > 1e-4)
SELECT (SELECT count(*) FROM c),
       (SELECT count(*) FROM c WHERE versions <> 1),
       (SELECT count(*) FROM c WHERE rows <> 10),
       (SELECT count(DISTINCT model_id) FROM c),
       (SELECT count(*) FROM c WHERE source = 'model'),
       (SELECT n FROM wrong);
SQL
)
read -r calls mixed short versions checked wrong <<<"$result"
trained=$(grep -c . "$OUT/trained.txt" || true)
train_errors=$(grep -c ERROR "$OUT/train_errors.txt" || true)
client_errors=$(grep -cE "aborted|ERROR" "$OUT/pgbench.txt" || true)
echo "calls: $calls; models trained during the run: $trained; model versions that answered: $versions"
echo "calls answered from more than one version: $mixed; calls with fewer than 10 rows: $short"
echo "client errors: $client_errors; training errors: $train_errors"
echo "scores checked against the answering version's stored factors: $checked, mismatches: $wrong"
if [ "$mixed" = 0 ] && [ "$short" = 0 ] && [ "$client_errors" = 0 ] && [ "$train_errors" = 0 ] \
   && [ "$wrong" = 0 ] && [ "$versions" -ge 2 ] && [ "$calls" -gt 0 ]; then
    echo "PASS"
else
    echo "FAIL"; exit 1
fi
