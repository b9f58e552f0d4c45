#!/usr/bin/env bash
# Experiments under load (a benchmark, not a test). pgbench (prepared protocol, Unix socket)
# runs, for random users of a trained synthetic shop, with 1 and 2 clients:
#   assign      SELECT personalize.assign_variant(...)
#   expose      SELECT personalize.log_exposure(...)          (one row appended per call)
#   recommend   SELECT ... FROM personalize.recommend(user, 10)
#   page view   log_exposure + recommend in one statement (the documented pattern)
# and prints throughput, p50/p99 latency and the ratio page view / recommend: what exposure
# logging adds to a page view. Then times experiment_report() over BENCH_REPORT_USERS exposed
# users (default 100,000, 2 exposures each) with their clicks and purchases.
#   BENCH_DURATION        seconds per pgbench run (default 10)
#   BENCH_SKIP_INSTALL=1  use the installed extension as it is
source "$(dirname "$0")/lib.sh"
DURATION=${BENCH_DURATION:-10}
REPORT_USERS=${BENCH_REPORT_USERS:-100000}
OUT=$ROOT/build/bench_experiments
mkdir -p "$OUT"
rm -f "$OUT"/*

install_prereqs
[ "${BENCH_SKIP_INSTALL:-0}" = 1 ] || install_extension
start_cluster
PGBENCH=$PGBIN/pgbench
DB=pp_bench_experiments
fresh_db "$DB"
say "Setting up: a synthetic shop (200,000 events, 5,000 users), a trained model, one experiment"
psql -X -q -d "$DB" -v ON_ERROR_STOP=1 <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_personalize;
SELECT * FROM personalize.generate_shop(200000, users => 5000, items => 2000, seed => 7) \g /dev/null
SELECT * FROM personalize.train(factors => 64, iterations => 5) \g /dev/null
INSERT INTO personalize.experiments (name, variants, salt)
VALUES ('homepage_layout', '[{"name": "grid", "weight": 50}, {"name": "carousel", "weight": 50}]', 'bench');
SQL

cat > "$OUT/assign.sql" <<'SQL'
\set n random(1, 5000)
SELECT personalize.assign_variant('homepage_layout', 'U' || lpad(CAST(:n AS text), 7, '0'));
SQL
cat > "$OUT/expose.sql" <<'SQL'
\set n random(1, 5000)
SELECT personalize.log_exposure('homepage_layout', 'U' || lpad(CAST(:n AS text), 7, '0'), 'homepage');
SQL
cat > "$OUT/recommend.sql" <<'SQL'
\set n random(1, 5000)
SELECT count(*) FROM personalize.recommend('U' || lpad(CAST(:n AS text), 7, '0'), 10);
SQL
cat > "$OUT/page_view.sql" <<'SQL'
\set n random(1, 5000)
WITH v AS (SELECT personalize.log_exposure('homepage_layout', 'U' || lpad(CAST(:n AS text), 7, '0'), 'homepage') AS variant)
SELECT v.variant, count(*) FROM v, personalize.recommend('U' || lpad(CAST(:n AS text), 7, '0'), 10) r GROUP BY v.variant;
SQL

printf 'scenario\tclients\ttps\tp50_ms\tp99_ms\n' > "$OUT/results.tsv"
run() {  # run SCENARIO CLIENTS
    local name=$1 clients=$2 prefix=$OUT/log_$1_$2
    "$PGBENCH" -n -M prepared -h "$PP_SOCK" -p "$PP_PORT" -U postgres -c "$clients" -j "$clients" \
        -T "$DURATION" -l --log-prefix="$prefix" -f "$OUT/$name.sql" "$DB" > "$prefix.out" 2>&1 \
        || { cat "$prefix.out"; exit 1; }
    grep -q "number of failed transactions: 0" "$prefix.out" || { echo "FAIL: errors in $name"; cat "$prefix.out"; exit 1; }
    local tps; tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$prefix.out")
    # Per-transaction log: the third field is the latency in microseconds.
    cat "$prefix".* 2>/dev/null | awk '{print $3}' | sort -n > "$prefix.lat"
    local n; n=$(wc -l < "$prefix.lat")
    local p50 p99
    p50=$(awk -v n="$n" 'NR == int(n * 0.50) + 1 {printf "%.3f", $1 / 1000}' "$prefix.lat")
    p99=$(awk -v n="$n" 'NR == int(n * 0.99) + 1 {printf "%.3f", $1 / 1000}' "$prefix.lat")
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$clients" "$tps" "$p50" "$p99" >> "$OUT/results.tsv"
}
for clients in 1 2; do
    for scenario in assign expose recommend page_view; do
        say "pgbench: $scenario, $clients client(s), ${DURATION}s"
        run "$scenario" "$clients"
    done
done
say "Results (latency per call as pgbench sees it, Unix socket, prepared protocol)"
column -t "$OUT/results.tsv"
awk -F'\t' 'NR > 1 {tps[$1 "/" $2] = $3; p50[$1 "/" $2] = $4}
    END {for (c = 1; c <= 2; c++) {
        printf "clients %d: page view (exposure + recommend) / recommend alone: throughput %.2f, p50 latency %.2f\n",
            c, tps["page_view/" c] / tps["recommend/" c], p50["page_view/" c] / p50["recommend/" c] } }' "$OUT/results.tsv"

say "experiment_report() over $REPORT_USERS exposed users (2 exposures each, clicks and purchases)"
psql -X -q -d "$DB" -v ON_ERROR_STOP=1 -v users="$REPORT_USERS" <<'SQL'
SET client_min_messages = warning;
INSERT INTO personalize.experiments (name, variants, salt, starts_at)
VALUES ('report_size', '[{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]', 'size', now() - interval '1 hour');
INSERT INTO personalize.exposures (experiment, user_id, variant, placement, exposed_at)
SELECT 'report_size', 'R' || g, personalize.assign_variant('report_size', 'R' || g), 'homepage', now() - interval '30 minutes'
  FROM generate_series(1, :users) g, generate_series(1, 2);
INSERT INTO personalize.events (event_type, user_id, item_id, occurred_at, properties)
SELECT CASE WHEN g % 3 = 0 THEN 'purchase' ELSE 'view' END, 'R' || g, 'P0000001', now() - interval '10 minutes',
       '{"experiment": "report_size"}'
  FROM generate_series(1, :users) g WHERE g % 4 = 0 OR g % 3 = 0;
ANALYZE personalize.exposures;
ANALYZE personalize.events;
\timing on
SELECT variant, users, exposures, clicks, converters, round(conversion_rate::numeric, 4) AS rate, round(p_value::numeric, 4) AS p
  FROM personalize.experiment_report('report_size');
\timing off
SQL
