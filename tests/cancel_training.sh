#!/usr/bin/env bash
# train() under statement_timeout and pg_cancel_backend() (our own cluster, port 54343): the
# training stops within the timeout plus one step (an iteration, or the read of the events),
# with SQLSTATE 57014; the same backend stays usable; the previous model stays active and no
# model row is left behind; no thread of the backend keeps burning CPU afterwards (its
# utime+stime, all threads, stays flat over a second while the session sleeps).
# Cases: statement_timeout 1 s (mid-iterations), statement_timeout 100 ms (in the read of the
# events), pg_cancel_backend() from another session after the second iteration,
# pg_cancel_backend() right after the last iteration (while the model is being written), and
# statement_timeout 1 s inside EASE's dense solve (its threads get 0.5 s to end their step).
# Prints PASS/FAIL per case; exits non-zero on any failure.
PP_PORT=54343
unset PP_RUN
source "$(dirname "$0")/../scripts/lib.sh"
DB=pp_cancel
FACTORS=64
source "$(dirname "$0")/scenarios.sh"
all_sleeping() { ! echo "$1" | grep -q ':[^S]'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }   # le A B: A <= B (decimals)
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
# utime + stime of the whole process (every thread, live or ended), in clock ticks.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# One "tid:state" per thread of the process (a thread that ends meanwhile is left out).
thread_states() {
    local t state
    for t in /proc/"$1"/task/*; do
        state=$(sed 's/^.*) //' "$t/stat" 2>/dev/null | cut -d' ' -f1) || true
        [ -z "$state" ] || printf '%s:%s ' "${t##*/}" "$state"
    done
}
TICK=$(getconf CLK_TCK)

say "Setup: cluster on port $PP_PORT, a synthetic shop of 200,000 events, a first model"
stop_cluster
rm -rf "$PP_RUN"
start_cluster
fresh_db $DB
sql <<'SQL'
CREATE EXTENSION pg_personalize;
SELECT 'generate_shop: items, accepted, duplicates, rejected', * FROM personalize.generate_shop(200000, users => 20000, items => 2000, seed => 11);
SQL
m1=$(sql -c "SELECT model_id FROM personalize.train(factors => 16, iterations => 3)")
echo "first model (the one that must stay active): $m1"
# What one step costs: an uncancelled run of the same shape (3 iterations), under another name.
probe=$(sql -c "SELECT model_id FROM personalize.train('probe', factors => $FACTORS, iterations => 3)")
read -r iter_max read_s write_s < <(sql -F ' ' -c "
    SELECT (SELECT max(s) FROM unnest(seconds_per_iteration) s), read_seconds, write_seconds
      FROM personalize.models WHERE model_id = $probe")
step=$(calc "($iter_max > $read_s) ? $iter_max : $read_s")
# Enough iterations that an uncancelled run takes about 8 s (at least 50, at most 1000).
ITERATIONS=$(awk -v t="$iter_max" 'BEGIN { n = int(8 / t) + 1; print (n < 50) ? 50 : (n > 1000 ? 1000 : n) }')
full=$(calc "$read_s + $ITERATIONS * $iter_max + $write_s")
echo "uncancelled ($FACTORS factors): read $(calc "$read_s") s, iteration up to $(calc "$iter_max") s, write $(calc "$write_s") s;"
echo "one step = $step s; a full $ITERATIONS-iteration run would take about $full s"
if ! le 4 "$full"; then
    echo "FAIL: too small for a meaningful test (a full run would take under 4 s)"; exit 1
fi

# cancel_case NAME MODE [ITERATIONS [AT]]: MODE is a statement_timeout (e.g. 1s, 100ms) or
# "cancel": another session calls pg_cancel_backend once the NOTICE of iteration AT (default 2)
# arrived. Returns 1, checking nothing, when the training finished before the cancel landed.
cancel_case() {
    local name=$1 mode=$2 iters=${3:-$ITERATIONS} at=${4:-2}
    local out=$WORK/$1.out err=$WORK/$1.err set_timeout="" pid tp timeout=""
    if [ "$mode" != cancel ]; then
        set_timeout="SET statement_timeout = '$mode';"
        case $mode in *ms) timeout=$(calc "${mode%ms} / 1000") ;; *s) timeout=$(calc "${mode%s}") ;; esac
    fi
    psql -X -q -At -d $DB >"$out" 2>"$err" <<SQL & tp=$!
\\set ON_ERROR_STOP off
SET client_min_messages = notice;
SET application_name = 'cancel_test';
SELECT pg_backend_pid() AS pid, (SELECT count(*) FROM personalize.models) AS models_before \\gset
\\echo PID :pid
\\echo MODELS_BEFORE :models_before
$set_timeout
SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset
SELECT 'MODEL ' || model_id FROM ${TRAIN_CALL:-personalize.train(factors => $FACTORS, iterations => $iters)};
SELECT extract(epoch FROM clock_timestamp()) AS t1 \\gset
RESET statement_timeout;
\\echo SQLSTATE :LAST_ERROR_SQLSTATE
\\echo ERROR :LAST_ERROR_MESSAGE
\\echo T0 :t0
\\echo T1 :t1
\\echo CANCELLED
SELECT pg_sleep(3);
SELECT 'AFTER', pg_backend_pid(),
       (SELECT string_agg(model_id::text, ',') FROM personalize.models WHERE status = 'active' AND name = 'default'),
       (SELECT count(*) FROM personalize.models),
       (SELECT count(*) FROM personalize.model_users u WHERE NOT EXISTS
            (SELECT 1 FROM personalize.models m WHERE m.model_id = u.model_id)),
       (SELECT count(*) FROM personalize.recommend((SELECT min(user_id) FROM personalize.model_users WHERE model_id = $m1), 5));
SQL
    BG+=($tp)
    wait_for 30 grep -q '^PID ' "$out" || bad "the session did not start"
    pid=$(sed -n 's/^PID //p' "$out")
    local during="" t_cancel="" writing=""
    if [ "$mode" = cancel ]; then
        wait_for 60 grep -q "iteration $at/$iters:" "$err" || bad "the training never reached iteration $at"
        during=$(ls "/proc/$pid/task" | wc -l)
        t_cancel=$(date +%s.%N)
        # Right before the cancel (same session): which model tables the backend was writing.
        local sent
        { read -r writing; read -r sent; } < <(sql -c "SELECT COALESCE(string_agg(DISTINCT relation::regclass::text, ', '), '-')
                FROM pg_locks WHERE pid = $pid AND locktype = 'relation' AND mode = 'RowExclusiveLock'
                 AND relation::regclass::text IN ('personalize.models', 'personalize.model_users', 'personalize.model_items')" \
            -c "SELECT pg_cancel_backend($pid)")
        [ "$sent" = t ] || bad "pg_cancel_backend($pid) returned ${sent:-nothing}"
    elif le 0.8 "$timeout"; then
        sleep 0.5   # mid-run: the threads the training has
        during=$(ls "/proc/$pid/task" 2>/dev/null | wc -l)
    fi
    wait_for 60 grep -q '^CANCELLED' "$out" || bad "the training did not stop within 60 s"
    # The session now sleeps 3 s in pg_sleep: its CPU time must stay flat. SETTLE: seconds to
    # let the pool finish the step it was in (the EASE solve's steps take tens of ms).
    sleep "${SETTLE:-0}"
    local c1 c2 states
    c1=$(cpu_ticks "$pid"); states=$(thread_states "$pid")
    sleep 1
    c2=$(cpu_ticks "$pid")
    wait $tp || true
    BG=()

    local sqlstate t0 t1 elapsed after iterations_done
    sqlstate=$(sed -n 's/^SQLSTATE //p' "$out")
    if [ "$sqlstate" != 57014 ] && grep -q '^MODEL ' "$out"; then
        echo "  the training finished ($(grep '^MODEL ' "$out")) before the cancel landed"
        return 1
    fi
    t0=$(sed -n 's/^T0 //p' "$out"); t1=$(sed -n 's/^T1 //p' "$out")
    elapsed=$(calc "$t1 - $t0")
    iterations_done=$(grep -c "pg_personalize: iteration" "$err" || true)
    IFS='|' read -r _ after_pid active models orphans recs < <(grep '^AFTER|' "$out")
    echo "  backend $pid; $(sed -n 's/^ERROR //p' "$out") (SQLSTATE $sqlstate)"
    echo "  iterations finished before it stopped: $iterations_done of $iters;" \
         "threads of the backend while training: ${during:-not sampled}"
    if [ "$mode" = cancel ]; then
        local latency
        latency=$(calc "$t1 - $t_cancel")
        [ "$at" = "$iters" ] && echo "  at the cancel the backend held row-exclusive locks on: $writing"
        echo "  from pg_cancel_backend() to the error: $latency s (bound: 2 x step + 1 s = $(calc "2 * $step + 1") s);" \
             "the statement ran $elapsed s"
        check "stopped within one step of the cancel" le "$latency" "$(calc "2 * $step + 1")"
    else
        echo "  statement_timeout $timeout s: the error came after $elapsed s (overshoot $(calc "$elapsed - $timeout") s;" \
             "bound: timeout + 2 x step + 1 s = $(calc "$timeout + 2 * $step + 1") s)"
        check "stopped within the timeout plus one step" le "$elapsed" "$(calc "$timeout + 2 * $step + 1")"
        check "it did run until the timeout" le "$timeout" "$elapsed"
    fi
    check "SQLSTATE 57014 (query_canceled)" [ "$sqlstate" = 57014 ]
    if [ "$at" = "$iters" ]; then
        check "stopped after its last iteration, while writing the model" eq "$iterations_done" "$iters"
    else
        check "a training that was stopped (it would run about $full s)" le "$iterations_done" $((iters - 1))
    fi
    echo "  after the cancel: CPU time $c1 -> $c2 ticks over 1 s ($TICK ticks = 1 s of CPU); threads: $states"
    check "no thread burns CPU after the cancel" le $((c2 - c1)) 2
    check "every remaining thread is sleeping" all_sleeping "$states"
    echo "  the same session afterwards: backend $after_pid, active model $active, $models model rows" \
         "(before: $(sed -n 's/^MODELS_BEFORE //p' "$out")), orphan factor rows $orphans, recommend() rows $recs"
    check "the same backend is still usable" eq "$after_pid" "$pid" "$recs" 5
    check "the previous model is still the active one" [ "$active" = "$m1" ]
    check "no model row or factor rows left behind" \
        eq "$models" "$(sed -n 's/^MODELS_BEFORE //p' "$out")" "$orphans" 0
}

say "1. statement_timeout = 1s, mid-iterations"
cancel_case timeout_1s 1s
result "statement_timeout 1s"

say "2. statement_timeout = 100ms, in the read of the events"
cancel_case timeout_100ms 100ms
result "statement_timeout 100ms"

say "3. pg_cancel_backend() from another session after the second iteration"
cancel_case cancel cancel
result "pg_cancel_backend"

say "4. pg_cancel_backend() while the model is being written (right after the last of 3 iterations)"
for attempt in 1 2 3; do
    cancel_case cancel_write cancel 3 3 && break
    sql -c "SELECT personalize.activate_model($m1)" >/dev/null   # it committed: back to the first model
    [ $attempt = 3 ] && bad "the cancel never landed before the training committed"
done
result "pg_cancel_backend during the write"

say "5. statement_timeout = 1s in EASE's dense solve (5,000 items, several seconds of solve)"
# The solve runs on the training pool in steps of bounded work; the cancel sets a flag the
# solving thread reads between them, so no thread finishes the abandoned solve.
DB=pp_cancel_ease
fresh_db $DB
sql >/dev/null <<'SQL'
CREATE EXTENSION pg_personalize;
SELECT * FROM personalize.generate_shop(150000, users => 20000, items => 5000, seed => 12);
SQL
m1=$(sql -c "SELECT model_id FROM personalize.train(model_type => 'popularity')")
ease_items=$(sql -c "SELECT count(DISTINCT item_id) FROM personalize.events WHERE item_id IS NOT NULL")
echo "first model: popularity ($m1); the EASE solve has $ease_items items"
TRAIN_CALL="personalize.train(model_type => 'ease', l2 => 500)" SETTLE=0.5 cancel_case timeout_ease 1s 1
result "statement_timeout 1s in the EASE solve"

summary
