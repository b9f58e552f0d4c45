#!/usr/bin/env bash
# Serving memory per connection (a benchmark, not a test). Opens 100 connections that each call
# recommend() once for a different user and stay connected, sums their backends' private memory
# (RssAnon in /proc/PID/status), then does the same for 100 connections that ran SELECT 1. The
# difference is what serving costs in private memory; with the model image shared by every
# backend (src/pg/model_files.rs) it should stay below twice one model's image in total (not per
# connection). Runs at 100k items × 64 factors (a synthetic ALS model with a 100k-item
# catalogue, as scripts/bench_serve.sh builds it) and at shop scale (Online Retail from
# ../shared/data when present, else a synthetic shop of 4,000 items; ALS with 64 factors, then
# EASE). Uses its own cluster on port 54331 (max_connections 220).
#   BENCH_SKIP_INSTALL=1  use the installed extension as it is
#   BENCH_CONNECTIONS     connections per run (default 100)
export PP_PORT=${PP_PORT:-54331}
export PP_PG_OPTS="-c max_connections=220 ${PP_PG_OPTS:-}"
source "$(dirname "$0")/lib.sh"
CONNECTIONS=${BENCH_CONNECTIONS:-100}
OUT=$ROOT/build/bench_memory
mkdir -p "$OUT"
rm -f "$OUT/results.tsv"

install_prereqs
[ "${BENCH_SKIP_INSTALL:-0}" = 1 ] || install_extension
# A fresh server: nothing mapped or cached from an earlier run.
stop_cluster
start_cluster

# hold DB APPNAME SQLFILE: opens CONNECTIONS psql sessions; session i runs line i of SQLFILE and
# stays connected (its stdin is a FIFO kept open) until release.
FDS=()
hold() {
    local db=$1 app=$2 sql=$3 i fd
    rm -rf "$OUT/fifo"; mkdir -p "$OUT/fifo"
    FDS=()
    for i in $(seq 1 "$CONNECTIONS"); do
        mkfifo "$OUT/fifo/$i"
        PGAPPNAME=$app psql -X -q -d "$db" -v ON_ERROR_STOP=1 < "$OUT/fifo/$i" > /dev/null &
        exec {fd}> "$OUT/fifo/$i"
        FDS+=("$fd")
        sed -n "${i}p" "$sql" >&"$fd"
    done
    # Every session has run its statement: connected and idle.
    local done=0 tries=0
    while [ "$done" -lt "$CONNECTIONS" ]; do
        sleep 0.5
        tries=$((tries + 1))
        [ "$tries" -lt 600 ] || { echo "sessions did not finish" >&2; exit 1; }
        done=$(psql -X -At -d postgres -c "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = '$app' AND state = 'idle'")
    done
}
release() {
    local fd
    for fd in "${FDS[@]}"; do exec {fd}>&-; done
    wait
}

# anon APPNAME: "sum_kB max_kB mean_file_kB" over the sessions' backends.
anon() {
    local pids pid
    pids=$(psql -X -At -d postgres -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$1'")
    for pid in $pids; do
        awk '/^RssAnon:/ {a = $2} /^RssFile:/ {f = $2} END {print a, f}' "/proc/$pid/status"
    done | awk '{s += $1; if ($1 > m) m = $1; f += $2} END {printf "%d %d %d", s, m, f / NR}'
}

# measure DB SCENARIO MODEL_NAME: one line of results for the active model of that name.
measure() {
    local db=$1 scenario=$2 name=$3
    psql -X -At -d "$db" -c "SELECT format('SELECT count(*) FROM personalize.recommend(%L, 10, %L);', user_id, '$name')
        FROM personalize.model_users mu JOIN personalize.models m USING (model_id)
       WHERE m.name = '$name' AND m.status = 'active' ORDER BY user_id LIMIT $CONNECTIONS" > "$OUT/calls.sql"
    [ "$(wc -l < "$OUT/calls.sql")" -ge "$CONNECTIONS" ] || {
        # A model that stores no users (item-item): the users of its events.
        psql -X -At -d "$db" -c "SELECT format('SELECT count(*) FROM personalize.recommend(%L, 10, %L);', user_id, '$name')
            FROM (SELECT DISTINCT user_id FROM personalize.events ORDER BY 1 LIMIT $CONNECTIONS) u" > "$OUT/calls.sql"
    }
    for _ in $(seq 1 "$CONNECTIONS"); do echo 'SELECT 1;'; done > "$OUT/select1.sql"
    hold "$db" bench_mem_call "$OUT/calls.sql"
    local call; call=$(anon bench_mem_call)
    release
    hold "$db" bench_mem_idle "$OUT/select1.sql"
    local idle; idle=$(anon bench_mem_idle)
    release
    sed "s/, '$name');/, 'bench_tiny');/" "$OUT/calls.sql" > "$OUT/tiny.sql"
    hold "$db" bench_mem_tiny "$OUT/tiny.sql"
    local tiny; tiny=$(anon bench_mem_tiny)
    release
    local file
    file=$(psql -X -At -d "$db" -c "$(model_image_sql "m.name = '$name' AND m.status = 'active'")")
    # 0: no image file (a version before 0.9.0, whose backends each hold a private copy).
    local bytes; bytes=$(as_root stat -c %s "$PP_DATA/pg_personalize/$file" 2>/dev/null || echo 0)
    local items; items=$(psql -X -At -d "$db" -c "SELECT n_items FROM personalize.models WHERE name = '$name' AND status = 'active'")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$items" "$bytes" "$call" "$idle" "$tiny" >> "$OUT/results.tsv"
}

# tiny_model DB: a 10-item popularity model, active as 'bench_tiny'.
tiny_model() {
    psql -X -q -d "$1" -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
WITH m AS (
    INSERT INTO personalize.models (name, status, params, as_of, n_users, n_items, n_interactions,
            loss_per_iteration, seconds_per_iteration, read_seconds, train_seconds)
    VALUES ('bench_tiny', 'active', '{"model_type": "popularity"}', now(), 0, 10, 0, '{}', '{}', 0, 0)
    RETURNING model_id)
INSERT INTO personalize.model_items (model_id, item_index, item_id, factors, popularity)
SELECT m.model_id, i.n - 1, i.item_id, '{}', 11 - i.n
  FROM m, (SELECT item_id, row_number() OVER (ORDER BY item_id) AS n
             FROM personalize.items ORDER BY item_id LIMIT 10) i;
SQL
}

say "100k items × 64 factors: a synthetic model (random factors, 20,000 users, a 100k-item catalogue)"
fresh_db pp_bench_memory_100k
bench_100k_model pp_bench_memory_100k
psql -X -q -d pp_bench_memory_100k -c "VACUUM ANALYZE" >/dev/null
tiny_model pp_bench_memory_100k
measure pp_bench_memory_100k "100k items, ALS" default

fresh_db pp_bench_memory_shop
bench_shop pp_bench_memory_shop
say "shop scale: $SHOP"
psql -X -q -d pp_bench_memory_shop -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET client_min_messages = warning;
SELECT * FROM personalize.train(model_name => 'als', model_type => 'als', factors => 64, iterations => 10);
SELECT * FROM personalize.train(model_name => 'ease', model_type => 'ease');
VACUUM ANALYZE;
SQL
tiny_model pp_bench_memory_shop
measure pp_bench_memory_shop "$SHOP, ALS" als
measure pp_bench_memory_shop "$SHOP, EASE" ease
stop_cluster

say "private memory (RssAnon) of $CONNECTIONS connections: one recommend() call each vs SELECT 1"
python3 - "$OUT/results.tsv" "$CONNECTIONS" <<'PY'
import sys
n = int(sys.argv[2])
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
hdr = (f"{'scenario':<24}{'items':>8}{'image':>8}{'calls':>8}{'SELECT 1':>9}{'10 items':>9}"
       f"{'diff':>8}{'model':>8}{'model/image':>12}{'max/backend':>12}{'mapped':>8}")
print("MB, summed over the connections unless per backend")
print(hdr); print("-" * len(hdr))
for scenario, items, size, call, idle, tiny in rows:
    c_sum, c_max, c_file = map(int, call.split())
    i_sum = int(idle.split()[0])
    t_sum = int(tiny.split()[0])
    image = int(size) / 2**20
    diff = (c_sum - i_sum) / 1024
    model = (c_sum - t_sum) / 1024
    ratio = f"{model / image:>12.2f}" if image else f"{'-':>12}"
    print(f"{scenario:<24}{items:>8}{image:>8.1f}{c_sum / 1024:>8.1f}{i_sum / 1024:>9.1f}"
          f"{t_sum / 1024:>9.1f}{diff:>8.1f}{model:>8.1f}{ratio}{c_max / 1024:>12.1f}"
          f"{c_file / 1024:>8.1f}")
print(f"""
calls, SELECT 1, 10 items: summed RssAnon of {n} backends after one recommend() call each, after
SELECT 1, and after one recommend() call on a 10-item model. diff = calls - SELECT 1; model =
calls - 10 items (what the model itself costs). image: the shared model file. max/backend: the
largest RssAnon among the calls' backends (one of them built the file). mapped: mean RssFile
per backend (the image's pages, one copy in the page cache).
Budget: the model's memory less than 2 x image in total (not per connection); < 10 MB per
backend at 100k items.""")
PY
