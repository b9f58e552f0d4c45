#!/usr/bin/env bash
# Scale-out on a stock engine: a real streaming replica on loopback. A model trained on the
# primary serves recommend(), similar_items(), rank_items(), assign_variant() (an ALS and an EASE model; and the other
# read-only functions) on a hot standby made with pg_basebackup, with the same results and
# comparable latency. Checks, in order:
#   1. the standby answers every serving function exactly as the primary (text diff; scores
#      are real, printed with round-trip precision);
#   2. one long-lived standby session picks up, through WAL replay alone, a model trained on
#      the primary after it started, a changed experiment and a changed catalogue row
#      (the per-backend caches are invalidated by replayed relcache messages);
#   3. the other read-only functions (validate_event, segment_sql, the segment predicates,
#      the status view) answer the same on both;
#   4. writes on the standby (track, track_batch, log_exposure, upsert_item, train, evaluate,
#      claim_messages, activate_model) fail with SQLSTATE 25006 (read_only_sql_transaction)
#      and the standby keeps running;
#   5. pgbench latency of recommend() and similar_items() on both, and the ratio.
# Ends with PASS or FAIL (non-zero exit).
#   PP_PORT                  the primary's port (default 54341); the standby uses PP_PORT + 1
#   REPLICA_BENCH_SECONDS    seconds per pgbench run (default 6)
#   REPLICA_MAX_P50_RATIO    largest accepted standby/primary p50 ratio (default 2)
PP_PORT=${PP_PORT:-54341}
# Servers started from a shell with RUST_BACKTRACE=1 capture a Rust backtrace (~0.3 s) for
# every error that crosses pgrx's FFI boundary; the read-only checks below time their errors.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
source "$(dirname "$0")/../scripts/lib.sh"

SB_PORT=$((PP_PORT + 1))
SB_RUN=$PP_RUN/standby
SB_DATA=$SB_RUN/data
SB_SOCK=$SB_RUN/sock
DB=pp_replica
BENCH_SECONDS=${REPLICA_BENCH_SECONDS:-6}
MAX_P50_RATIO=${REPLICA_MAX_P50_RATIO:-2}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pp_replica.XXXXXX")

failures=()
fail() { echo "FAIL: $*"; failures+=("$*"); }
ok() { echo "ok: $*"; }

# psql on the primary / on the standby (unaligned, tuples only, '|' between fields).
P() { psql -X -q -At -F '|' -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
S() { psql -X -q -At -F '|' -v ON_ERROR_STOP=1 -h "$SB_SOCK" -p "$SB_PORT" -d "$DB" "$@"; }

stop_standby() {
    [ -f "$SB_DATA/PG_VERSION" ] &&
        as_pg_owner "$PGBIN/pg_ctl" -D "$SB_DATA" -m fast stop >/dev/null 2>&1 || true
}
cleanup() {
    local rc=$?
    if [ -n "${SBSESS_PID:-}" ]; then kill "$SBSESS_PID" 2>/dev/null || true; fi
    stop_standby
    stop_cluster
    rm -rf "$SB_RUN"
    rm -rf "$WORK"
    if [ $rc -ne 0 ] && [ ${#failures[@]} -eq 0 ]; then
        echo "FAIL: tests/replica.sh stopped with status $rc (see the output above)"
    fi
    exit $rc
}
trap cleanup EXIT

# A leftover standby of an interrupted run.
stop_standby
rm -rf "$SB_RUN"

say "Primary on port $PP_PORT: a synthetic shop, two models, two experiments, segments"
start_cluster
[ "$(psql -X -At -d postgres -c 'SHOW wal_level')" != minimal ] ||
    { echo "FAIL: the primary runs with wal_level = minimal"; exit 1; }
fresh_db "$DB"
P >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_personalize;
SELECT * FROM personalize.generate_shop(20000);
SELECT * FROM personalize.train(factors => 16, iterations => 5);
SELECT * FROM personalize.train('als_b', factors => 8, iterations => 5, seed => 7);
SELECT * FROM personalize.train('ease', model_type => 'ease', l2 => 50);
INSERT INTO personalize.experiments (name, variants, salt) VALUES
 ('homepage_layout', '[{"name": "grid", "weight": 50}, {"name": "carousel", "weight": 50}]', 'replica-2026'),
 ('homepage_model', '[{"name": "als16", "weight": 60}, {"name": "als8", "weight": 30, "model": "als_b"},
                      {"name": "als16_again", "weight": 10}]', 'replica-model'),
 ('salt_test', '[{"name": "a", "weight": 1}, {"name": "b", "weight": 1}, {"name": "c", "weight": 1}]', 'before');
INSERT INTO personalize.segments (name, definition) VALUES
 ('lens_buyers', '{"bought": {"category": "lenses"}}'),
 ('camera_browsers', '{"all": [{"viewed": {"category": "cameras"}}, {"not": {"bought": {"category": "cameras"}}}]}');
-- 50 probe users: 42 of the model (the first 5 get newer events: fold-in), 4 new users with
-- events (fold-in without stored factors), 4 without any history (popularity).
CREATE TABLE probe_users (ord int PRIMARY KEY, user_id text NOT NULL);
INSERT INTO probe_users
SELECT row_number() OVER (ORDER BY md5(user_id)), user_id
  FROM personalize.model_users mu JOIN personalize.models m USING (model_id)
 WHERE m.name = 'default' AND m.status = 'active' ORDER BY md5(user_id) LIMIT 42;
INSERT INTO probe_users SELECT 42 + g, 'NEW' || g FROM generate_series(1, 4) g;
INSERT INTO probe_users SELECT 46 + g, 'NOBODY' || g FROM generate_series(1, 4) g;
SELECT * FROM personalize.track_batch(ARRAY(
  SELECT jsonb_build_object('type', t, 'user_id', u.user_id,
                            'item_id', 'P' || lpad(((u.ord * 37 + j * 11) % 500)::text, 7, '0'),
                            'occurred_at', m.as_of + j * interval '1 minute')
    FROM probe_users u, personalize.models m, generate_series(1, 3) j,
         LATERAL (VALUES (CASE WHEN j = 3 THEN 'add_to_cart' ELSE 'view' END)) v(t)
   WHERE m.name = 'default' AND m.status = 'active' AND (u.ord <= 5 OR u.user_id LIKE 'NEW%')));
-- 20 probe items: 18 of the model, 2 unknown to it.
CREATE TABLE probe_items (ord int PRIMARY KEY, item_id text NOT NULL);
INSERT INTO probe_items
SELECT row_number() OVER (ORDER BY md5(item_id)), item_id
  FROM personalize.model_items mi JOIN personalize.models m USING (model_id)
 WHERE m.name = 'default' AND m.status = 'active' ORDER BY md5(item_id) LIMIT 18;
INSERT INTO probe_items VALUES (19, 'UNKNOWN-1'), (20, 'UNKNOWN-2');
SELECT count(personalize.log_exposure('homepage_layout', user_id, 'homepage')) FROM probe_users;
-- For pgbench: every user of the model.
CREATE TABLE bench_users (n int PRIMARY KEY, user_id text NOT NULL);
INSERT INTO bench_users
SELECT row_number() OVER (ORDER BY user_id), user_id
  FROM personalize.model_users mu JOIN personalize.models m USING (model_id)
 WHERE m.name = 'default' AND m.status = 'active';
CREATE TABLE replica_marker (id int PRIMARY KEY, v bigint NOT NULL);
INSERT INTO replica_marker VALUES (1, 0);
VACUUM ANALYZE;
SQL
MODEL1=$(P -c "SELECT model_id FROM personalize.models WHERE name = 'default' AND status = 'active'")
P -c "SELECT 'models: ' || string_agg(name || ' #' || model_id || ' (' || n_users || ' users, ' || n_items || ' items)', ', ' ORDER BY model_id) FROM personalize.models"

say "Standby on port $SB_PORT: pg_basebackup -R -X stream, hot standby"
as_pg_owner mkdir -p "$SB_RUN" "$SB_SOCK"
t0=$(date +%s%N)
as_pg_owner "$PGBIN/pg_basebackup" -h "$PP_SOCK" -p "$PP_PORT" -U postgres -D "$SB_DATA" \
    -R -X stream -c fast --no-sync
echo "base backup: $(du -sh "$SB_DATA" | cut -f1) in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
# Model images the base backup copied would serve as they are (same model versions); without
# them the standby has to build its own from its replicated tables, which is what is tested.
as_pg_owner rm -rf "$SB_DATA/pg_personalize"
as_pg_owner "$PGBIN/pg_ctl" -D "$SB_DATA" -l "$SB_RUN/postgres.log" -w start \
    -o "-p $SB_PORT -k $SB_SOCK -c listen_addresses='' -c hot_standby=on -c max_connections=50 \
        -c shared_buffers=256MB -c fsync=off" >/dev/null
[ "$(S -c 'SELECT pg_is_in_recovery()')" = t ] || { echo "FAIL: the standby is not in recovery"; exit 1; }
SB_STARTED=$(S -c "SELECT pg_postmaster_start_time()")
for _ in $(seq 1 100); do
    state=$(P -d postgres -c "SELECT state FROM pg_stat_replication LIMIT 1")
    [ "$state" = streaming ] && break
    sleep 0.1
done
[ "$state" = streaming ] || { echo "FAIL: no streaming replication (state '$state')"; exit 1; }
echo "pg_stat_replication on the primary: $(P -d postgres -c "SELECT application_name || ' ' || state || ', sync_state ' || sync_state FROM pg_stat_replication")"

# Waits until the standby has replayed everything the primary wrote: a synchronous commit of
# a marker, then the primary's pg_current_wal_lsn() against the standby's
# pg_last_wal_replay_lsn(); the marker must then be visible on the standby.
sync_standby() {
    local v lsn replayed t0
    v=$(PGOPTIONS="-c synchronous_commit=on" P -c "UPDATE replica_marker SET v = v + 1 RETURNING v")
    lsn=$(P -c "SELECT pg_current_wal_lsn()")
    t0=$(date +%s%N)
    for _ in $(seq 1 600); do
        replayed=$(S -c "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '$lsn') >= 0")
        [ "$replayed" = t ] && break
        sleep 0.05
    done
    if [ "$replayed" != t ]; then
        echo "FAIL: the standby did not replay up to $lsn in 30 s"; exit 1
    fi
    [ "$(S -c 'SELECT v FROM replica_marker')" = "$v" ] ||
        { echo "FAIL: replayed to $lsn but the marker is not visible on the standby"; exit 1; }
    echo "standby replayed up to primary LSN $lsn ($(S -c 'SELECT pg_last_wal_replay_lsn()')) in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}
sync_standby

# Every read-only function over the probe users and items, in a fixed order.
cat > "$WORK/compare.sql" <<'SQL'
\pset null '(null)'
SELECT 'recommend', u.ord, u.user_id, r.n, r.item_id, r.score, r.source, r.model_id
  FROM probe_users u CROSS JOIN LATERAL personalize.recommend(u.user_id, 10)
       WITH ORDINALITY AS r(item_id, score, source, model_id, n)
 ORDER BY u.ord, r.n;
SELECT 'recommend_filtered', u.ord, r.n, r.item_id, r.score, r.source, r.model_id
  FROM probe_users u CROSS JOIN LATERAL personalize.recommend(u.user_id, 5, exclude => 'interacted',
                                                              category => 'lenses')
       WITH ORDINALITY AS r(item_id, score, source, model_id, n)
 ORDER BY u.ord, r.n;
SELECT 'recommend_variant_model', u.ord, r.n, r.item_id, r.score, r.source, r.model_id
  FROM probe_users u CROSS JOIN LATERAL personalize.recommend(u.user_id, 5,
           model => personalize.variant_model('homepage_model', u.user_id))
       WITH ORDINALITY AS r(item_id, score, source, model_id, n)
 ORDER BY u.ord, r.n;
SELECT 'recommend_ease', u.ord, r.n, r.item_id, r.score, r.source, r.model_id
  FROM probe_users u CROSS JOIN LATERAL personalize.recommend(u.user_id, 5, model => 'ease')
       WITH ORDINALITY AS r(item_id, score, source, model_id, n)
 ORDER BY u.ord, r.n;
SELECT 'similar_items_ease', i.ord, r.n, r.item_id, r.score, r.source, r.model_id
  FROM probe_items i CROSS JOIN LATERAL personalize.similar_items(i.item_id, 5, model => 'ease')
       WITH ORDINALITY AS r(item_id, score, source, model_id, n)
 ORDER BY i.ord, r.n;
SELECT 'similar_items', i.ord, i.item_id, r.n, r.item_id, r.score, r.source, r.model_id
  FROM probe_items i CROSS JOIN LATERAL personalize.similar_items(i.item_id, 10)
       WITH ORDINALITY AS r(item_id, score, source, model_id, n)
 ORDER BY i.ord, r.n;
SELECT 'similar_items_cameras', i.ord, r.n, r.item_id, r.score, r.source, r.model_id
  FROM probe_items i CROSS JOIN LATERAL personalize.similar_items(i.item_id, 5, category => 'cameras')
       WITH ORDINALITY AS r(item_id, score, source, model_id, n)
 ORDER BY i.ord, r.n;
SELECT 'rank_items', u.ord, r.n, r.item_id, r.rank, r.score
  FROM probe_users u CROSS JOIN LATERAL personalize.rank_items(u.user_id,
           (SELECT array_agg(item_id ORDER BY ord) FROM probe_items))
       WITH ORDINALITY AS r(item_id, rank, score, n)
 ORDER BY u.ord, r.n;
SELECT 'recommend_for_session', i.ord, r.n, r.item_id, r.score, r.source, r.model_id
  FROM probe_items i CROSS JOIN LATERAL personalize.recommend_for_session(ARRAY[i.item_id, 'P0000001'], 5)
       WITH ORDINALITY AS r(item_id, score, source, model_id, n)
 ORDER BY i.ord, r.n;
SELECT 'explain_recommendation', u.ord, t.item_id, r.n, r.because_of, r.contribution, r.share, r.score
  FROM probe_users u
       CROSS JOIN LATERAL (SELECT item_id FROM personalize.recommend(u.user_id, 1)) t
       CROSS JOIN LATERAL personalize.explain_recommendation(u.user_id, t.item_id, 3)
       WITH ORDINALITY AS r(because_of, contribution, share, score, n)
 WHERE u.ord <= 42
 ORDER BY u.ord, r.n;
SELECT 'assign_variant', u.ord, u.user_id, personalize.assign_variant('homepage_layout', u.user_id),
       personalize.assign_variant('homepage_model', u.user_id),
       personalize.variant_model('homepage_model', u.user_id),
       personalize.assign_variant('salt_test', u.user_id)
  FROM probe_users u ORDER BY u.ord;
SELECT 'segments', u.ord, personalize.in_segment(u.user_id, 'lens_buyers'),
       personalize.in_segment(u.user_id, 'camera_browsers'),
       (SELECT string_agg(s, ',') FROM personalize.user_segments(u.user_id) s)
  FROM probe_users u ORDER BY u.ord;
SELECT 'segment_members', s, count(*), md5(string_agg(m, ',' ORDER BY m))
  FROM unnest(ARRAY['camera_browsers', 'lens_buyers']) s, personalize.segment_members(s) m
 GROUP BY s ORDER BY s;
SELECT 'experiment_report', r.* FROM personalize.experiment_report('homepage_layout') r ORDER BY r.variant;
SQL

# compare LABEL: runs compare.sql on both servers (fresh sessions) and diffs the text.
compare() {
    P -f "$WORK/compare.sql" > "$WORK/primary.$1.out"
    S -f "$WORK/compare.sql" > "$WORK/standby.$1.out"
    local rows sources models
    rows=$(wc -l < "$WORK/primary.$1.out")
    sources=$(awk -F'|' '$1 == "recommend" {print $7}' "$WORK/primary.$1.out" | sort | uniq -c | awk '{printf "%s%s %s", sep, $2, $1; sep=", "}')
    models=$(awk -F'|' '$1 == "recommend" {print $8}' "$WORK/primary.$1.out" | sort -u | paste -sd,)
    echo "$rows result rows (recommend sources: $sources; model_id $models)"
    echo "  primary $(md5sum < "$WORK/primary.$1.out" | cut -c1-32)  standby $(md5sum < "$WORK/standby.$1.out" | cut -c1-32)"
    if [ "$rows" -lt 1500 ]; then
        fail "$1: only $rows result rows on the primary"
    elif diff "$WORK/primary.$1.out" "$WORK/standby.$1.out" > "$WORK/diff.$1"; then
        ok "$1: the standby's output is identical to the primary's"
    else
        fail "$1: the standby's output differs from the primary's ($(grep -c '^[<>]' "$WORK/diff.$1") lines)"
        head -20 "$WORK/diff.$1"
    fi
}

say "Same answers on the standby (model #$MODEL1): 50 users, 20 items, every serving function"
compare "model-$MODEL1"
# The standby served from a model image it built itself, in its own data directory.
image=$(S -c "$(model_image_sql "m.model_id = $MODEL1")")
if as_pg_owner test -s "$SB_DATA/pg_personalize/$image"; then
    ok "the standby built its own shared image of model #$MODEL1 ($image)"
else
    fail "the standby has no image file of model #$MODEL1 ($SB_DATA/pg_personalize/$image)"
fi

say "A long-lived standby session picks up a new model, a changed experiment and catalogue"
# One backend on the standby for the whole step: its caches (model, experiments, catalogue
# flags) were filled before the primary changed anything.
coproc SBSESS { exec psql -X -q -At -F '|' -h "$SB_SOCK" -p "$SB_PORT" -d "$DB" 2>&1; }
sess() {  # sess SQL: runs SQL in the long-lived standby session and prints what it printed
    printf '%s\n\\echo __done__\n' "$1" >&"${SBSESS[1]}"
    local line
    while IFS= read -r -t 30 line <&"${SBSESS[0]}"; do
        [ "$line" = __done__ ] && return 0
        printf '%s\n' "$line"
    done
    echo "FAIL: the standby session did not answer"; exit 1
}
U_MODEL=$(P -c "SELECT user_id FROM probe_users WHERE ord = 10")
U_CAT=$(P -c "SELECT user_id FROM probe_users WHERE ord = 11")
ASSIGN_SQL="SELECT string_agg(personalize.assign_variant('salt_test', user_id), ',' ORDER BY ord) FROM probe_users;"
REC_SQL="SELECT string_agg(item_id || ':' || score || ':' || model_id, ',') FROM personalize.recommend('$U_CAT', 10);"
pid_before=$(sess "SELECT pg_backend_pid();")
before_model=$(sess "SELECT DISTINCT model_id FROM personalize.recommend('$U_MODEL', 10);")
before_assign=$(sess "$ASSIGN_SQL")
before_rec=$(sess "$REC_SQL")
TOP_ITEM=$(sess "SELECT item_id FROM personalize.recommend('$U_CAT', 1);")
echo "standby session pid $pid_before: $U_MODEL served by model #$before_model; $U_CAT's top item $TOP_ITEM"
# On the primary: a new model, a new salt, the top item out of stock.
MODEL2=$(PGOPTIONS="-c client_min_messages=warning" \
         P -c "SELECT model_id FROM personalize.train(factors => 16, iterations => 6, seed => 43)")
P -c "UPDATE personalize.experiments SET salt = 'after' WHERE name = 'salt_test'"
P -c "UPDATE personalize.items SET available = false WHERE item_id = '$TOP_ITEM'"
echo "primary: trained model #$MODEL2; salt_test's salt changed; $TOP_ITEM made unavailable"
sync_standby
after_model=$(sess "SELECT DISTINCT model_id FROM personalize.recommend('$U_MODEL', 10);")
after_assign=$(sess "$ASSIGN_SQL")
after_rec=$(sess "$REC_SQL")
pid_after=$(sess "SELECT pg_backend_pid();")
primary_assign=$(P -c "$ASSIGN_SQL")
primary_rec=$(P -c "$REC_SQL")
[ "$pid_before" = "$pid_after" ] || fail "the standby session was replaced ($pid_before -> $pid_after)"
if [ "$after_model" = "$MODEL2" ]; then
    ok "new model: the standby session serves model #$after_model (was #$before_model), no reconnect"
else
    fail "new model: the standby session serves model '$after_model' after replay, the primary's active model is #$MODEL2"
    echo "  a new standby session serves: $(S -c "SELECT DISTINCT model_id FROM personalize.recommend('$U_MODEL', 10)")"
fi
changed=$(paste -d' ' <(tr ',' '\n' <<< "$before_assign") <(tr ',' '\n' <<< "$primary_assign") | awk '$1 != $2' | wc -l)
if [ "$after_assign" = "$primary_assign" ] && [ "$changed" -gt 0 ]; then
    ok "experiment change: the session's assignments follow the new salt ($changed of 50 users moved)"
else
    fail "experiment change: after replay the standby session assigns '$after_assign', the primary '$primary_assign' (before: '$before_assign')"
fi
if [ "$after_rec" = "$primary_rec" ] && [[ ",$after_rec" != *",$TOP_ITEM:"* ]]; then
    ok "catalogue change: the session no longer recommends $TOP_ITEM to $U_CAT, same list as the primary"
else
    fail "catalogue change: after replay the standby session recommends '$after_rec', the primary '$primary_rec'"
fi
[ "$before_rec" != "$after_rec" ] || fail "catalogue change: the recommendations did not change at all"
printf '\\q\n' >&"${SBSESS[1]}"
if [ -n "${SBSESS_PID:-}" ]; then wait "$SBSESS_PID" 2>/dev/null || true; fi
unset SBSESS_PID

say "Same answers on the standby after the retraining (model #$MODEL2)"
compare "model-$MODEL2"

say "Other read-only functions: the same answer on both"
# same_answer NAME SQL: runs SQL on both servers and compares the text.
same_answer() {
    local p s
    p=$(P -c "$2" 2>&1) || true
    s=$(S -c "$2" 2>&1) || true
    if [ "$p" = "$s" ] && [[ "$s" != *ERROR* ]]; then
        ok "$1: identical ($(wc -l <<< "$s") rows)"
    else
        fail "$1: primary '$(head -c 120 <<< "$p")' standby '$(head -c 200 <<< "$s")'"
    fi
}
same_answer "validate_event (valid)" \
    "SELECT personalize.validate_event('{\"type\": \"view\", \"user_id\": \"u1\", \"item_id\": \"P0000001\"}')"
same_answer "validate_event (invalid)" \
    "SELECT personalize.validate_event('{\"type\": \"search\", \"user_id\": \"u1\", \"colour\": 1}')"
same_answer "segment_sql" "SELECT * FROM personalize.segment_sql((SELECT definition FROM personalize.segments WHERE name = 'camera_browsers'), true)"
same_answer "segment predicates" \
    "SELECT user_id, personalize.bought(user_id, 'lenses'), personalize.viewed_without_buying(user_id, 'cameras'),
            personalize.event_count(user_id, 'view'), personalize.total_spend(user_id), personalize.average_order_value(user_id),
            personalize.last_seen(user_id) FROM probe_users ORDER BY ord"
same_answer "status view" "SELECT * FROM personalize.status ORDER BY section, name"

say "Writes on the standby fail with SQLSTATE 25006 (read_only_sql_transaction)"
# expect_read_only NAME SQL: runs SQL on the standby and checks the SQLSTATE it fails with.
xid_hint_shown=
expect_read_only() {
    local t0 err code ms msg
    t0=$(date +%s%N)
    err=$(PGOPTIONS="-c client_min_messages=warning" psql -X -q -v VERBOSITY=verbose \
            -v ON_ERROR_STOP=1 -h "$SB_SOCK" -p "$SB_PORT" -d "$DB" -c "$2" 2>&1 >/dev/null) &&
        code=none || code=$(sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): .*/\1/p' <<< "$err" | head -1)
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    msg=$(grep -m1 '^ERROR' <<< "$err" | sed 's/^ERROR:  [0-9A-Z]\{5\}: //' | cut -c 1-80)
    if [ "$code" = 25006 ]; then
        ok "$1: 25006 after $ms ms ($msg)"
    else
        fail "$1 on the standby: SQLSTATE ${code:-?} after $ms ms, expected 25006 ($msg)"
        if [[ "$msg" == "cannot assign TransactionIds during recovery"* ]] && [ -z "$xid_hint_shown" ]; then
            xid_hint_shown=1
            echo "  GetNewTransactionId() refuses during recovery (elog ERROR, XX000) before the"
            echo "  executor's read-only check (25006) is reached: something asked for an XID"
            echo "  first (pgrx's SpiClient::update()/open_cursor_mut() call GetCurrentTransactionId())."
        fi
    fi
}
expect_read_only "track" \
    "SELECT personalize.track('{\"type\": \"view\", \"user_id\": \"u1\", \"item_id\": \"P0000001\"}')"
expect_read_only "track (a quarantined event)" \
    "SELECT personalize.track('{\"type\": \"nope\", \"user_id\": \"u1\"}')"
expect_read_only "track_batch" \
    "SELECT * FROM personalize.track_batch(ARRAY['{\"type\": \"view\", \"user_id\": \"u1\", \"item_id\": \"P0000001\"}'::jsonb])"
expect_read_only "log_exposure" "SELECT personalize.log_exposure('homepage_layout', 'u1', 'homepage')"
expect_read_only "upsert_item" "SELECT personalize.upsert_item('P0000001', 'lenses', 't', '{}', true, 1)"
expect_read_only "train" "SELECT * FROM personalize.train(factors => 16, iterations => 5)"
expect_read_only "claim_messages" "SELECT * FROM personalize.claim_messages('email', 10)"
expect_read_only "evaluate" "SELECT * FROM personalize.evaluate(factors => 16, iterations => 5)"
expect_read_only "activate_model" "SELECT personalize.activate_model($MODEL1)"
# For comparison: the primary in a read-only transaction.
code=$(PGOPTIONS="-c default_transaction_read_only=on" psql -X -q -v VERBOSITY=verbose -d "$DB" \
         -c "SELECT personalize.track('{\"type\": \"view\", \"user_id\": \"u1\", \"item_id\": \"P0000001\"}')" 2>&1 |
       sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): .*/\1/p' | head -1) || true
echo "for comparison, track() on the primary in a READ ONLY transaction: SQLSTATE ${code:-none}"
# Still the same postmaster, nothing crashed, and serving still works.
if [ "$(S -c 'SELECT pg_postmaster_start_time()')" = "$SB_STARTED" ] &&
   ! grep -Eq 'terminated by signal|was terminated|PANIC' "$SB_RUN/postgres.log" &&
   [ "$(S -c "SELECT count(*) FROM personalize.recommend('$U_MODEL', 10)")" = 10 ]; then
    ok "the standby kept running (same postmaster, no crashed backend, still serving)"
else
    fail "the standby restarted or a backend crashed: $(grep -E 'terminated by signal|was terminated|PANIC' "$SB_RUN/postgres.log" | head -3)"
fi

say "Latency: pgbench, 1 client, prepared, $BENCH_SECONDS s per run, primary vs standby"
NUSERS=$(P -c "SELECT count(*) FROM bench_users")
cat > "$WORK/recommend.sql" <<'SQL'
\set n random(1, :nusers)
SELECT r.* FROM bench_users b, personalize.recommend(b.user_id, 10) r WHERE b.n = :n;
SQL
cat > "$WORK/similar_items.sql" <<'SQL'
\set n random(0, 499)
SELECT * FROM personalize.similar_items('P' || lpad(:n::text, 7, '0'), 10);
SQL
# bench SERVER SCRIPT: prints tps, avg, p50, p99 (ms).
bench() {
    local host=$PP_SOCK port=$PP_PORT
    [ "$1" = standby ] && { host=$SB_SOCK; port=$SB_PORT; }
    rm -f "$WORK"/log.*
    local tps
    tps=$(cd "$WORK" && "$PGBIN/pgbench" -n -M prepared -c 1 -j 1 -T "$BENCH_SECONDS" \
            -h "$host" -p "$port" -D nusers="$NUSERS" -f "$WORK/$2.sql" \
            --log --log-prefix="$WORK/log" "$DB" 2>&1 | awk '/^tps = / {print $3}')
    # Per-transaction microseconds in field 3; the first call of the backend loads the model.
    cat "$WORK"/log.* | awk 'NR > 1 {print $3 / 1000}' | sort -n | awk -v tps="$tps" '
        {v[NR] = $1; s += $1}
        END {printf "%.0f %.3f %.3f %.3f %d\n", tps, s / NR, v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1], NR}'
}
printf '%-16s %-8s %9s %9s %9s %9s %8s\n' function server tps "avg ms" "p50 ms" "p99 ms" calls
for script in recommend similar_items; do
    read -r p_tps p_avg p_50 p_99 p_n <<< "$(bench primary "$script")"
    read -r s_tps s_avg s_50 s_99 s_n <<< "$(bench standby "$script")"
    printf '%-16s %-8s %9s %9s %9s %9s %8s\n' "$script" primary "$p_tps" "$p_avg" "$p_50" "$p_99" "$p_n"
    printf '%-16s %-8s %9s %9s %9s %9s %8s\n' "" standby "$s_tps" "$s_avg" "$s_50" "$s_99" "$s_n"
    ratio=$(awk -v a="$s_50" -v b="$p_50" 'BEGIN {printf "%.2f", a / b}')
    ratio99=$(awk -v a="$s_99" -v b="$p_99" 'BEGIN {printf "%.2f", a / b}')
    echo "$script: standby/primary p50 ${ratio}x, p99 ${ratio99}x"
    if awk -v r="$ratio" -v m="$MAX_P50_RATIO" 'BEGIN {exit !(r <= m)}'; then
        ok "$script latency on the standby is comparable (p50 ratio $ratio <= $MAX_P50_RATIO)"
    else
        fail "$script latency on the standby: p50 ratio $ratio > $MAX_P50_RATIO"
    fi
done

say "Result"
if [ ${#failures[@]} -eq 0 ]; then
    echo "PASS: the standby serves the primary's models with identical results"
else
    printf 'FAIL: %s\n' "${failures[@]}"
    exit 1
fi
