#!/usr/bin/env bash
# Crash safety on our own cluster (port 54343), with durable commits (synchronous_commit=on,
# fsync=on, full_page_writes=on; restart_after_crash=on, the default):
#  1. kill -9 of a backend during batch ingestion (3 clients calling track_batch, a campaign
#     writing outbox rows): every batch whose commit was acknowledged is there, each event
#     exactly once; every batch is all or nothing; the failed ones, retried with the same
#     client_event_ids, are stored exactly once; every message has its trigger event, one per
#     user; the btree indexes pass amcheck (heapallindexed).
#  2. kill -9 of a backend during train() (mid-iterations, then right after the last iteration,
#     in the write): the previous model stays the active one, no half-written model exists
#     (every model row has all its factor rows, no orphan factors), and the next train() works.
#  3. kill -9 of a worker holding claims (claimed and committed, sleeping before its ack) while
#     another holds an uncommitted claim and two workers drain: the committed claims are
#     withheld until their lease expires and then redelivered (counted), the uncommitted ones
#     are claimable at once, and a final drain acks every message exactly once.
#  4. Immediate-mode restart (pg_ctl stop -m immediate, start) while 3 clients ingest and a
#     worker drains: the same exactly-once checks, and the outbox resumes after recovery.
#  5. kill -9 of a backend while it builds a model's shared image file (src/pg/model_files.rs):
#     nothing it left is trusted (the next call rebuilds and answers as plain SQL does); a file
#     cut short or with a flipped byte is rebuilt byte for byte; a replaced version's file goes.
# Prints PASS/FAIL per scenario; exits non-zero on any failure.
PP_PORT=54343
unset PP_RUN
# A later -c wins over start_cluster's speed settings: an acknowledged commit must survive a
# crash, and a backend killed mid-write() can tear an 8 kB page (full-page images repair it).
PP_PG_OPTS="-c synchronous_commit=on -c fsync=on -c full_page_writes=on -c restart_after_crash=on"
source "$(dirname "$0")/../scripts/lib.sh"
DB=pp_faults
BATCH=200            # events per track_batch call
USERS_PER_BATCH=20   # distinct users per batch (each gets one message)
source "$(dirname "$0")/scenarios.sh"
LOG=$PP_RUN/postgres.log
log_count() { grep -c -- "$1" "$LOG" 2>/dev/null || true; }
lines() { if [ -f "$1" ]; then wc -l < "$1"; else echo 0; fi; }
server_up() { psql -X -At -d $DB -c "SELECT 1" >/dev/null 2>&1; }
# After a crash: the postmaster has reset every backend and finished recovery.
recovered() { [ "$(log_count 'database system is ready to accept connections')" -gt "$1" ] && server_up; }
at_least() { [ "$(lines "$1")" -ge "$2" ]; }
# kill9 PID: kill -9 as the cluster's owner, and true only once the server log shows it (a
# backend that had just ended its session is a zombie until reaped: the kill then does nothing).
kill9() {
    as_pg_owner kill -9 "$1" 2>/dev/null || return 1
    wait_for 2 grep -q "server process (PID $1) was terminated by signal 9" "$LOG"
}
# q_test SQL OP VALUE: the query's single value compared with test(1), e.g. q_test "…" -ge 300.
q_test() { local v; v=$(sql -c "$1" 2>/dev/null) && [ -n "$v" ] && [ "$v" "$2" "$3" ]; }


# batch_sql NAME [EVENTS] [USERS]: a batch's call. Its events follow from its name (TAG-CLIENT-N),
# so a retry sends the same ones.
batch_sql() {
    echo "SELECT accepted, duplicates, rejected FROM personalize.track_batch(ARRAY(
            SELECT jsonb_build_object('type', 'view', 'user_id', '$1-u' || (g % ${3:-$USERS_PER_BATCH}),
                   'item_id', 'P' || lpad((g % 2000)::text, 7, '0'), 'client_event_id', '$1-' || g)
              FROM generate_series(1, ${2:-$BATCH}) g))"
}
# An ingestion client: batch after batch until the stop file appears. A batch whose psql
# returned 0 (its commit was acknowledged) goes to TAG.committed, any other to TAG.failed
# (the client then waits for the server and goes on with the next batch).
ingest_client() {
    local tag=$1 c=$2 b=0 out
    while [ ! -e "$WORK/$tag.stop" ]; do
        b=$((b + 1))
        if out=$(PGAPPNAME=ingest psql -X -q -At -F ' ' -v ON_ERROR_STOP=1 -d $DB \
                     -c "$(batch_sql "$tag-$c-$b")" 2>>"$WORK/$tag.client-errors"); then
            echo "$tag-$c-$b $out" >> "$WORK/$tag.committed"
        else
            echo "$tag-$c-$b" >> "$WORK/$tag.failed"
            wait_for 60 server_up || true
        fi
    done
}
start_clients() { local c; for c in 1 2 3; do ingest_client "$1" $c & BG+=($!); done; }
stop_clients() {
    touch "$WORK/$1.stop"
    local p
    for p in "${BG[@]}"; do wait "$p" 2>/dev/null || true; done
    BG=()
}

# Checks TAG's batches against the clients' logs, retries the failed ones, checks again.
verify_ingest() {
    local tag=$1
    local committed failed
    committed=$(lines "$WORK/$tag.committed"); failed=$(lines "$WORK/$tag.failed")
    echo "  clients: $committed batches acknowledged, $failed failed (connection lost or refused)"
    check "the clients' log of acknowledged batches is not empty" [ "$committed" -gt 0 ]
    check "at least one batch failed in the crash" [ "$failed" -gt 0 ]
    awk -v t="$tag" '{ print t "," $1 ",committed," $2 "," $3 "," $4 }' "$WORK/$tag.committed" > "$WORK/$tag.csv"
    if [ -f "$WORK/$tag.failed" ]; then
        awk -v t="$tag" '{ print t "," $1 ",failed,,," }' "$WORK/$tag.failed" >> "$WORK/$tag.csv"
    fi
    sql -c "\\copy test_batches FROM '$WORK/$tag.csv' CSV"
    # Counted from the heap (no index scans), so a broken unique index cannot hide a duplicate.
    local q="SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off;
      CREATE TEMP TABLE per_batch AS
        SELECT regexp_replace(client_event_id, '-[0-9]+\$', '') AS batch, count(*) AS n,
               count(DISTINCT client_event_id) AS d
          FROM personalize.events WHERE client_event_id LIKE '$tag-%' GROUP BY 1;
      SELECT (SELECT count(*) FROM test_batches WHERE tag = '$tag' AND outcome = 'committed' AND accepted = $BATCH),
             (SELECT count(*) FROM test_batches b JOIN per_batch p USING (batch)
               WHERE b.tag = '$tag' AND b.outcome = 'committed' AND p.n = $BATCH AND p.d = $BATCH),
             (SELECT count(*) FROM per_batch WHERE n <> $BATCH OR d <> n),
             (SELECT count(*) FROM per_batch WHERE batch NOT IN (SELECT batch FROM test_batches WHERE tag = '$tag')),
             (SELECT count(*) FROM test_batches b JOIN per_batch p USING (batch) WHERE b.tag = '$tag' AND b.outcome = 'failed'),
             (SELECT sum(n) - sum(d) FROM per_batch)"
    local full present partial unknown in_doubt dups
    read -r full present partial unknown in_doubt dups < <(sql -F ' ' -c "$q")
    echo "  acknowledged batches: $full reported $BATCH accepted, $present found complete in the table"
    echo "  failed batches found complete anyway (committed, acknowledgement lost): $in_doubt"
    check "every acknowledged batch reported all $BATCH events accepted" [ "$full" = "$committed" ]
    check "every acknowledged batch is present with all $BATCH events, each once" [ "$present" = "$committed" ]
    check "no partial batch and no duplicate event (heap scan)" eq "$partial" 0 "$dups" 0
    check "no batch in the table that no client sent" [ "$unknown" = 0 ]

    # Retry each failed batch as a client would: same client_event_ids.
    local b out bad_retry=0 stored=0 dup=0
    if [ -f "$WORK/$tag.failed" ]; then
        while read -r b; do
            out=$(sql -F ' ' -c "$(batch_sql "$b")")
            case "$out" in
                "$BATCH 0 0") stored=$((stored + 1)) ;;
                "0 $BATCH 0") dup=$((dup + 1)) ;;
                *) bad_retry=$((bad_retry + 1)); echo "  retry of $b: accepted/duplicates/rejected $out" ;;
            esac
        done < "$WORK/$tag.failed"
    fi
    echo "  retries of the failed batches: $stored stored now, $dup were already all there (all duplicates)"
    check "each retried batch was either stored whole or recognised whole as duplicates" [ "$bad_retry" = 0 ]
    check "retries found exactly the in-doubt batches already stored" [ "$dup" = "$in_doubt" ]
    # A client whose acknowledgement was lost resends: an acknowledged batch again.
    b=$(head -1 "$WORK/$tag.committed" | cut -d' ' -f1)
    out=$(sql -F ' ' -c "$(batch_sql "$b")")
    echo "  an acknowledged batch sent again ($b): accepted/duplicates/rejected $out"
    check "a resent acknowledged batch is all duplicates" [ "$out" = "0 $BATCH 0" ]
    local total distinct expected
    read -r total distinct < <(sql -F ' ' -c "SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off;
        SELECT count(*), count(DISTINCT client_event_id) FROM personalize.events WHERE client_event_id LIKE '$tag-%'")
    expected=$(( (committed + failed) * BATCH ))
    echo "  events now: $total ($distinct distinct client_event_ids), expected $expected"
    check "after the retries every batch is stored exactly once" eq "$total" "$expected" "$distinct" "$expected"

    # The outbox rows written with the events: one per user of each batch (users are per
    # batch), each pointing at a stored event of that user; at most one pending per campaign
    # and user.
    local msgs users orphans dup_pending
    read -r msgs users orphans dup_pending < <(sql -F ' ' -c "
        SELECT (SELECT count(*) FROM personalize.outbox WHERE user_id LIKE '$tag-%'),
               (SELECT count(DISTINCT user_id) FROM personalize.events WHERE client_event_id LIKE '$tag-%'),
               (SELECT count(*) FROM personalize.outbox o WHERE o.user_id LIKE '$tag-%' AND NOT EXISTS (
                   SELECT 1 FROM personalize.events e WHERE e.event_id = o.trigger_event_id AND e.user_id = o.user_id)),
               (SELECT count(*) FROM (SELECT 1 FROM personalize.outbox WHERE state = 'pending'
                                       GROUP BY campaign_id, user_id HAVING count(*) > 1) x)")
    echo "  outbox: $msgs messages for $users users; without their trigger event: $orphans"
    check "one message per user with events, each with its stored trigger event" \
        eq "$msgs" "$users" "$orphans" 0 "$dup_pending" 0
}

# amcheck on every btree of the tables the crashes wrote: structure, and every heap tuple found
# in each index.
check_indexes() {
    local n
    if n=$(sql -c "SELECT c.relname, bt_index_check(i.indexrelid, true)
                     FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                    WHERE c.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')
                      AND i.indrelid IN ('personalize.events'::regclass, 'personalize.outbox'::regclass,
                                         'personalize.models'::regclass, 'personalize.model_users'::regclass,
                                         'personalize.model_items'::regclass)" 2>&1); then
        ok "amcheck: $(echo "$n" | wc -l) btree indexes of events, outbox and models consistent with their heaps"
    else
        bad "amcheck: $n"
    fi
}

# Drains the outbox after every lease ran out: two workers until nothing is due.
final_drain() {
    wait_for 60 q_test "SELECT count(*) FROM personalize.outbox WHERE state = 'claimed' AND visible_at > now()" = 0 \
        || bad "leases did not expire"
    local p pids=()
    for w in 7 8; do sql -c "CALL test_worker($w, 'push', 100, '60 seconds', 0)" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p" || bad "a draining worker failed"; done
}
# Every message sent; each ack recorded once; claims, attempts and redeliveries agree.
check_outbox() {
    local total sent acks distinct_acks unacked_sent claims distinct_claims redeliveries wrong_attempts
    read -r total sent acks distinct_acks unacked_sent claims distinct_claims redeliveries wrong_attempts < <(sql -F ' ' -c "
        SELECT (SELECT count(*) FROM personalize.outbox),
               (SELECT count(*) FROM personalize.outbox WHERE state = 'sent'),
               (SELECT count(*) FROM test_acks), (SELECT count(DISTINCT message_id) FROM test_acks),
               (SELECT count(*) FROM personalize.outbox o WHERE state = 'sent'
                   AND NOT EXISTS (SELECT 1 FROM test_acks a WHERE a.message_id = o.message_id)),
               (SELECT count(*) FROM test_claims), (SELECT count(DISTINCT message_id) FROM test_claims),
               (SELECT sum(redeliveries) FROM personalize.outbox),
               (SELECT count(*) FROM personalize.outbox o
                  LEFT JOIN (SELECT message_id, count(*) AS c FROM test_claims GROUP BY 1) t USING (message_id)
                 WHERE o.attempts <> COALESCE(t.c, 0))")
    echo "  outbox: $sent of $total messages sent; $acks acks recorded ($distinct_acks distinct);" \
         "$claims claims of $distinct_claims messages; $redeliveries redeliveries"
    check "every message sent, none lost" eq "$sent" "$total" "$([ "$total" -gt 0 ] && echo y)" y
    check "every sent message acked exactly once" eq "$acks" "$sent" "$distinct_acks" "$sent" "$unacked_sent" 0
    check "redeliveries = claims beyond each message's first, attempts = its committed claims" \
        eq "$redeliveries" $((claims - distinct_claims)) "$wrong_attempts" 0
    LAST_REDELIVERIES=$redeliveries
}

say "Setup: cluster on port $PP_PORT with durable commits, a synthetic shop, a campaign"
stop_cluster
rm -rf "$PP_RUN"
start_cluster
fresh_db $DB
sql <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_personalize;
CREATE EXTENSION amcheck;
SELECT 'generate_shop: items, accepted, duplicates, rejected', * FROM personalize.generate_shop(150000, users => 15000, items => 2000, seed => 7);
-- Consent is not what this test is about: no channel needs an opt-in (tests/pg_regress/sql/consent.sql).
INSERT INTO personalize.channel_policies VALUES ('push', false), ('sms', false), ('whatsapp', false);
-- Every view is due at once on the push channel (one pending message per user).
INSERT INTO personalize.campaigns (name, trigger_event_type, delay, channel, template)
VALUES ('fault_views', 'view', '0', 'push', '{"hi": "{{user_id}}", "item": "{{item_id}}"}');
CREATE TABLE test_batches (tag text, batch text, outcome text, accepted int, duplicates int, rejected int);
CREATE TABLE test_claims (message_id bigint, lease uuid, worker int, at timestamptz DEFAULT clock_timestamp());
CREATE TABLE test_acks (message_id bigint, worker int, at timestamptz DEFAULT clock_timestamp());
-- A worker: claim (and log the claim) in one transaction, "deliver" for pause seconds, then
-- ack (and log the acks) in the next. The logs commit with what they record.
CREATE PROCEDURE test_worker(w int, ch text, batch int, vis interval, pause float8) LANGUAGE plpgsql AS $$
DECLARE
    lease uuid;
    ids bigint[];
BEGIN
    LOOP
        WITH c AS (SELECT * FROM personalize.claim_messages(ch, batch, vis)),
             logged AS (INSERT INTO test_claims (message_id, lease, worker)
                        SELECT c.message_id, c.lease_token, w FROM c RETURNING message_id, test_claims.lease)
        SELECT CAST(min(CAST(l.lease AS text)) AS uuid), array_agg(l.message_id) INTO lease, ids FROM logged l;
        COMMIT;
        EXIT WHEN ids IS NULL;
        PERFORM pg_sleep(pause);
        INSERT INTO test_acks (message_id, worker) SELECT m, w FROM unnest(ids) m WHERE personalize.ack(m, lease);
        COMMIT;
    END LOOP;
END $$;
SQL
echo "events: $(sql -c "SELECT count(*) FROM personalize.events"), items: $(sql -c "SELECT count(*) FROM personalize.items")"

#######################################################################################
say "1. kill -9 of a backend during batch ingestion (3 clients, $BATCH events per track_batch)"
start_clients k1
wait_for 60 at_least "$WORK/k1.committed" 30 || bad "the clients did not get going"
ready=$(log_count 'database system is ready to accept connections')
# A backend running track_batch (its batch may end between the look and the kill: look again).
victim=
for _ in $(seq 300); do
    pid=$(sql -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'ingest' AND state = 'active'
                    AND query LIKE '%track_batch%' LIMIT 1")
    if [ -n "$pid" ] && kill9 "$pid"; then victim=$pid; break; fi
    sleep 0.01
done
before=$(lines "$WORK/k1.committed")
if [ -n "$victim" ]; then
    echo "kill -9 $victim (running track_batch) after $before acknowledged batches"
else
    bad "found no backend running track_batch to kill"
fi
wait_for 60 recovered "$ready" || bad "the server did not come back"
wait_for 60 at_least "$WORK/k1.committed" $((before + 30)) || bad "ingestion did not resume"
stop_clients k1
check "the server log shows the kill: $(grep -m1 "PID ${victim:-none}) was terminated by signal 9" "$LOG" | sed 's/.*LOG: *//' || true)" \
    grep -q "server process (PID ${victim:-none}) was terminated by signal 9" "$LOG"
check "the postmaster reset every backend and recovered" grep -q "all server processes terminated; reinitializing" "$LOG"
verify_ingest k1
check_indexes
result "kill -9 during batch ingestion"

#######################################################################################
say "2. kill -9 of a backend during train()"
m1=$(sql -c "SELECT model_id FROM personalize.train(factors => 16, iterations => 3)")
echo "first model: $m1 (active)"
# model_check: "ACTIVE_ID MODELS ORPHANS INCOMPLETE ACTIVE_COUNT" — every model row must have all
# its factor rows (n_users, n_items), no factor row may lack its model row.
model_check() {
    sql -F ' ' -c "SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off;
      SELECT (SELECT string_agg(model_id::text, ',') FROM personalize.models WHERE status = 'active' AND name = 'default'),
             (SELECT count(*) FROM personalize.models),
             (SELECT count(*) FROM personalize.model_users u WHERE NOT EXISTS (SELECT 1 FROM personalize.models m WHERE m.model_id = u.model_id))
           + (SELECT count(*) FROM personalize.model_items i WHERE NOT EXISTS (SELECT 1 FROM personalize.models m WHERE m.model_id = i.model_id)),
             (SELECT count(*) FROM personalize.models m
               WHERE m.n_users <> (SELECT count(*) FROM personalize.model_users u WHERE u.model_id = m.model_id)
                  OR m.n_items <> (SELECT count(*) FROM personalize.model_items i WHERE i.model_id = m.model_id)),
             (SELECT count(*) FROM personalize.models WHERE status = 'active')"
}
# kill_training ITERATIONS AT: trains 64 factors, kill -9 once the NOTICE of iteration AT arrived.
kill_training() {
    local iterations=$1 at=$2 tp pid ready
    rm -f "$WORK/train.out" "$WORK/train.err"
    PGAPPNAME=trainer psql -X -q -At -d $DB -c "SET client_min_messages = notice" \
        -c "SELECT model_id FROM personalize.train(factors => 64, iterations => $iterations)" \
        >"$WORK/train.out" 2>"$WORK/train.err" & tp=$!
    BG+=($tp)
    wait_for 120 grep -qs "iteration $at/$iterations" "$WORK/train.err" || bad "training never reached iteration $at"
    pid=$(sql -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'trainer' AND state = 'active'")
    ready=$(log_count 'database system is ready to accept connections')
    # Informational: the tables it holds row-exclusive locks on tell whether it was writing.
    local writing
    writing=$(sql -c "SELECT string_agg(relation::regclass::text, ', ' ORDER BY relation::regclass::text) FROM pg_locks
                       WHERE pid = ${pid:-0} AND locktype = 'relation' AND mode = 'RowExclusiveLock'
                         AND relation::regclass::text LIKE 'personalize.model%'")
    if [ -n "$pid" ] && kill9 "$pid"; then
        echo "  (row-exclusive locks of the backend just before the kill: ${writing:-none, not writing yet})"
        echo "kill -9 $pid after the NOTICE \"$(grep -o "iteration $at/$iterations: loss [0-9.]*, [0-9.]* s" "$WORK/train.err")\""
    else
        pid=
        echo "the training had already returned: no backend to kill"
    fi
    wait $tp && TRAIN_RC=0 || TRAIN_RC=$?
    BG=()
    [ -z "$pid" ] || wait_for 60 recovered "$ready" || bad "the server did not come back"
    KILLED_PID=$pid
}

echo "-- 2a. killed mid-iterations (factors 64, 40 iterations, after iteration 2)"
kill_training 40 2
check "the training's client got an error" [ "$TRAIN_RC" != 0 ]
check "the server log shows the kill" grep -q "server process (PID $KILLED_PID) was terminated by signal 9" "$LOG"
read -r active models orphans incomplete n_active < <(model_check)
echo "  active model: $active; model rows: $models; orphan factor rows: $orphans; incomplete models: $incomplete"
check "the first model is still the only active one" eq "$active" "$m1" "$n_active" 1
check "no model row of the killed training, no orphan or missing factor rows" \
    eq "$models" 1 "$orphans" 0 "$incomplete" 0
served=$(sql -c "SELECT DISTINCT model_id FROM personalize.recommend((SELECT min(user_id) FROM personalize.model_users WHERE model_id = $m1), 5)")
check "recommend() serves from model $m1 (got $served)" [ "$served" = "$m1" ]

echo "-- 2b. killed right after its last iteration (4 iterations), i.e. while it writes the model"
for attempt in 1 2 3; do
    read -r prev models_before _ < <(model_check)
    kill_training 4 4
    [ -n "$KILLED_PID" ] && break
    echo "  (the training finished before the kill could land; again)"
done
check "the kill landed (server log)" [ -n "$KILLED_PID" ]
read -r active models orphans incomplete n_active < <(model_check)
returned=$(cat "$WORK/train.out" 2>/dev/null || true)
echo "  client: exit $TRAIN_RC${returned:+, returned model $returned}; active model: $active; model rows: $models;" \
     "orphan factor rows: $orphans; incomplete models: $incomplete"
check "exactly one active model, with every factor row; no orphan factor rows" \
    eq "$n_active" 1 "$orphans" 0 "$incomplete" 0
if [ "$active" = "$prev" ]; then
    check "the killed training left nothing: still model $prev, no new model row" eq "$models" "$models_before" "$returned" ""
else
    # Killed after its commit (acknowledged or not): its model is complete and active.
    echo "  the kill came after the commit: model $active is complete and active"
    check "the model that replaced $prev is the one the training committed" \
        eq "${returned:-$active}" "$active" "$models" $((models_before + 1))
fi

echo "-- 2c. train again"
prev=$active
m3=$(sql -c "SELECT model_id FROM personalize.train(factors => 16, iterations => 3)")
read -r active models orphans incomplete n_active < <(model_check)
echo "  new model $m3; active: $active; model rows: $models"
check "the new model is active and complete, the previous one ($prev) inactive" \
    eq "$active" "$m3" "$n_active" 1 "$incomplete" 0 "$orphans" 0
served=$(sql -c "SELECT DISTINCT model_id FROM personalize.recommend((SELECT min(user_id) FROM personalize.model_users WHERE model_id = $m3), 5)")
check "recommend() serves from model $m3 (got $served)" [ "$served" = "$m3" ]
check_indexes
result "kill -9 during training"

#######################################################################################
say "3. kill -9 of a worker holding claims"
# More messages so the draining workers are still busy when the kill comes.
sql -c "$(batch_sql k3-1 3000 3000)" >/dev/null
pending=$(sql -c "SELECT count(*) FROM personalize.outbox WHERE state = 'pending'")
echo "pending messages: $pending"
# holder_committed: claims 100 with a 10 s lease (committed, logged), then "delivers" forever.
PGAPPNAME=holder_committed psql -X -q -At -d $DB -v ON_ERROR_STOP=1 >"$WORK/s1.out" 2>&1 <<'SQL' & s1=$!
INSERT INTO test_claims (message_id, lease, worker)
SELECT message_id, lease_token, 101 FROM personalize.claim_messages('push', 100, '10 seconds')
RETURNING message_id, lease;
SELECT pg_sleep(300);
SQL
BG+=($s1)
wait_for 30 at_least "$WORK/s1.out" 100 || bad "holder_committed did not claim 100"
# holder_open: claims 100 in a transaction it never commits (and logs them in it).
PGAPPNAME=holder_open psql -X -q -At -d $DB -v ON_ERROR_STOP=1 >"$WORK/s2.out" 2>&1 <<'SQL' & s2=$!
BEGIN;
INSERT INTO test_claims (message_id, lease, worker)
SELECT message_id, lease_token, 102 FROM personalize.claim_messages('push', 100, '10 seconds')
RETURNING message_id, lease;
SELECT pg_sleep(300);
SQL
BG+=($s2)
wait_for 30 at_least "$WORK/s2.out" 100 || bad "holder_open did not claim 100"
s1_ids=$(head -100 "$WORK/s1.out" | cut -d'|' -f1 | paste -sd,)
s1_lease=$(head -1 "$WORK/s1.out" | cut -d'|' -f2)
s2_ids=$(head -100 "$WORK/s2.out" | cut -d'|' -f1 | paste -sd,)
# Two workers drain meanwhile: batches of 10, 2 s leases, 20 ms of "delivery" before each ack.
for w in 1 2; do sql -c "CALL test_worker($w, 'push', 10, '2 seconds', 0.02)" >/dev/null 2>&1 & BG+=($!); done
wait_for 60 q_test "SELECT count(*) FROM test_acks" -ge 300 || bad "the draining workers made no progress"
victim=$(sql -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'holder_committed'")
ready=$(log_count 'database system is ready to accept connections')
acked_before=$(sql -c "SELECT count(*) FROM test_acks")
kill9 "$victim" || bad "the kill of $victim did not land"
echo "kill -9 $victim (holder_committed, sleeping before its ack) after the workers acked $acked_before"
for p in "${BG[@]}"; do wait "$p" 2>/dev/null || true; done
BG=()
wait_for 60 recovered "$ready" || bad "the server did not come back"
check "the server log shows the kill" grep -q "server process (PID $victim) was terminated by signal 9" "$LOG"
# At once: a probe claim in a transaction that is rolled back (it changes nothing).
read -r s1_held s2_free s1_probe s2_probe s2_logged probe_n < <(sql -F ' ' <<SQL
BEGIN;
CREATE TEMP TABLE before_probe AS
SELECT (SELECT count(*) FROM personalize.outbox WHERE message_id IN ($s1_ids) AND state = 'claimed' AND visible_at > now()) AS s1_held,
       (SELECT count(*) FROM personalize.outbox WHERE message_id IN ($s2_ids) AND state = 'pending' AND attempts = 0) AS s2_free,
       (SELECT count(*) FROM test_claims WHERE worker = 102) AS s2_logged;
CREATE TEMP TABLE probe AS SELECT message_id FROM personalize.claim_messages('push', 10000, '1 minute');
SELECT s1_held, s2_free,
       (SELECT count(*) FROM probe WHERE message_id IN ($s1_ids)),
       (SELECT count(*) FROM probe WHERE message_id IN ($s2_ids)),
       s2_logged, (SELECT count(*) FROM probe)
  FROM before_probe;
ROLLBACK;
SQL
)
echo "  right after recovery: of the killed worker's 100, $s1_held still leased and $s1_probe claimable;" \
     "of the uncommitted claim's 100, $s2_free pending and $s2_probe claimable ($probe_n claimable in all)"
check "the killed worker's committed claims are withheld until their lease ends" eq "$s1_held" 100 "$s1_probe" 0
check "the uncommitted claim left nothing: its 100 are pending, never attempted, claimable, its log rows gone" \
    eq "$s2_free" 100 "$s2_probe" 100 "$s2_logged" 0
final_drain
check_outbox
read -r s1_redelivered stale_ack < <(sql -F ' ' -c "
    SELECT (SELECT count(*) FROM personalize.outbox WHERE message_id IN ($s1_ids) AND redeliveries >= 1 AND state = 'sent'),
           personalize.ack(${s1_ids%%,*}, '$s1_lease')")
echo "  the killed worker's 100: $s1_redelivered redelivered and sent; its stale lease acks: $stale_ack"
check "every message the killed worker held was redelivered and sent" [ "$s1_redelivered" = 100 ]
check "its old lease cannot ack any more" [ "$stale_ack" = f ]
check "redeliveries counted (at least the 100 held)" [ "$LAST_REDELIVERIES" -ge 100 ]
check_indexes
result "kill -9 during claim"

#######################################################################################
say "4. Immediate-mode restart while 3 clients ingest and a worker drains"
drain_loop() {  # a worker that keeps polling (and reconnects after the restart)
    while [ ! -e "$WORK/k4.stop" ]; do
        sql -c "CALL test_worker(5, 'push', 20, '2 seconds', 0.01)" >/dev/null 2>&1 || wait_for 60 server_up || true
        sleep 0.1
    done
}
acks0=$(sql -c "SELECT count(*) FROM test_acks")
start_clients k4
drain_loop & BG+=($!)
wait_for 60 at_least "$WORK/k4.committed" 30 || bad "the clients did not get going"
wait_for 60 q_test "SELECT count(*) FROM test_acks" -gt "$acks0" || bad "the worker acked nothing"
before=$(lines "$WORK/k4.committed")
recoveries=$(log_count "automatic recovery in progress")
as_pg_owner "$PGBIN/pg_ctl" -D "$PP_DATA" -m immediate stop >/dev/null
echo "pg_ctl stop -m immediate after $before acknowledged batches"
start_cluster
echo "started again: $(sql -c "SELECT 'postmaster up since ' || pg_postmaster_start_time()")"
check "the server log shows the immediate shutdown and a crash recovery" \
    eq "$(log_count "received immediate shutdown request")" 1 "$(log_count "automatic recovery in progress")" $((recoveries + 1))
wait_for 60 at_least "$WORK/k4.committed" $((before + 30)) || bad "ingestion did not resume"
wait_for 60 q_test "SELECT count(*) FROM test_acks WHERE at > pg_postmaster_start_time()" -gt 0 \
    || bad "the worker acked nothing after the restart"
stop_clients k4
after=$(($(lines "$WORK/k4.committed") - before))
acked_after=$(sql -c "SELECT count(*) FROM test_acks WHERE at > pg_postmaster_start_time()")
echo "  after the restart: $after batches acknowledged, $acked_after messages acked by the worker"
check "the outbox resumed: messages acked after the restart" [ "$acked_after" -gt 0 ]
verify_ingest k4
final_drain
check_outbox
check_indexes
result "immediate restart mid-load"

#######################################################################################
say "5. kill -9 of a backend while it builds a model's shared image file"
FILES=$PP_DATA/pg_personalize
# A model whose image takes a while to build: 100k items × 64 random factors, one user.
sql <<'SQL'
SET client_min_messages = warning;
SELECT setseed(0.5);
INSERT INTO personalize.models (name, status, params, as_of, n_users, n_items, n_interactions,
        loss_per_iteration, seconds_per_iteration, read_seconds, train_seconds)
VALUES ('files', 'active', '{"factors": 64, "alpha": 1, "regularization": 0.01}',
        now() - interval '1 day', 1, 100000, 0, '{}', '{}', 0, 0);
INSERT INTO personalize.model_items (model_id, item_index, item_id, factors, popularity)
SELECT m.model_id, g, 'F' || lpad(g::text, 6, '0'),
       ARRAY(SELECT CAST(random() - 0.5 AS real) FROM generate_series(1, 64) WHERE g >= 0), g % 97
  FROM personalize.models m, generate_series(0, 99999) g WHERE m.name = 'files';
INSERT INTO personalize.model_users (model_id, user_id, factors)
SELECT model_id, 'file-user', ARRAY(SELECT CAST(random() - 0.5 AS real) FROM generate_series(1, 64))
  FROM personalize.models WHERE name = 'files';
-- The shop's catalogue lists them (an item it does not list is never served).
INSERT INTO personalize.items (item_id) SELECT 'F' || lpad(g::text, 6, '0') FROM generate_series(0, 99999) g;
SQL
fm=$(sql -c "SELECT model_id FROM personalize.models WHERE name = 'files'")
image=$(sql -c "$(model_image_sql "m.model_id = $fm")")
# The answer in plain SQL: the top 10 by dot product (no item is excluded: the user has no events).
expected=$(sql -c "SELECT string_agg(item_id, ',' ORDER BY s DESC, item_id) FROM (
    SELECT mi.item_id, (SELECT sum(a * b) FROM unnest(mi.factors, mu.factors) v(a, b)) AS s
      FROM personalize.model_items mi JOIN personalize.model_users mu USING (model_id)
     WHERE mi.model_id = $fm ORDER BY s DESC, mi.item_id LIMIT 10) t")
served() { sql -c "SELECT string_agg(item_id, ',' ORDER BY score DESC, item_id) FROM personalize.recommend('file-user', 10, 'files', available_only => false)"; }
temp_files() { as_pg_owner find "$FILES" -maxdepth 1 -name "$image.tmp.*" 2>/dev/null | wc -l; }
has_image() { as_pg_owner test -f "$FILES/$image"; }
sum() { as_pg_owner md5sum "$FILES/$image" | cut -d' ' -f1; }
# Up to five builds killed -9 once the builder's temporary file exists (it is writing). A kill
# that lands just after the rename leaves a published image: it must then be complete (the
# same bytes as a rebuild, checked below), and the next attempt tries again for a mid-build kill.
killed=; mid_build=; published_sums=()
for attempt in 1 2 3 4 5; do
    as_pg_owner rm -f "$FILES/$image"
    ready=$(log_count 'database system is ready to accept connections')
    PGAPPNAME=filebuilder psql -X -q -At -d $DB -c "SELECT count(*) FROM personalize.recommend('file-user', 10, 'files')" \
        >/dev/null 2>&1 & cp=$!
    BG+=($cp)
    pid=
    if wait_for 60 bash -c "[ \"\$(find '$FILES' -maxdepth 1 -name '$image.tmp.*' 2>/dev/null | wc -l)\" -gt 0 ] || ! kill -0 $cp 2>/dev/null"; then
        pid=$(sql -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'filebuilder' AND state = 'active'")
    fi
    if [ -n "$pid" ] && ! has_image && kill9 "$pid"; then
        killed=$pid
    else
        pid=
    fi
    wait $cp || true
    BG=()
    if [ -n "$pid" ]; then
        wait_for 60 recovered "$ready" || bad "the server did not come back"
        if has_image; then
            echo "  (attempt $attempt: the kill landed just after the image was published)"
            published_sums+=("$(sum)")
        else
            mid_build=$pid
            break
        fi
    else
        echo "  (attempt $attempt: the build finished before the kill could land)"
    fi
done
check "a backend was killed -9 while it built the file" [ -n "$killed" ]
echo "  after the last kill: temporary files: $(temp_files); image file present: $(has_image && echo yes || echo no)"
if [ -n "$mid_build" ]; then ok "a kill landed mid-build (attempt $attempt): it published no image"; fi
got=$(served)
check "the next call rebuilds the image and answers as plain SQL does" eq "$got" "$expected"
check "the image exists, the dead builders' temporary files are gone" eq "$(has_image && echo yes || echo no)" yes "$(temp_files)" 0
good=$(sum); size=$(as_pg_owner stat -c %s "$FILES/$image")
for published in "${published_sums[@]}"; do
    check "an image published just before a kill is complete (the same bytes as a rebuild)" eq "$published" "$good"
done
as_pg_owner truncate -s $((size / 2)) "$FILES/$image"
got=$(served)
check "an image cut short is rebuilt, the same bytes, and serves the same answer" eq "$(sum)" "$good" "$got" "$expected"
# Every bit of one byte inverted, a third of the way in.
as_pg_owner python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); b = f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0xff]))' \
    "$FILES/$image" $((size / 3))
check "the damaged image differs from the good one" [ "$(sum)" != "$good" ]
got=$(served)
check "an image with damaged bytes is rebuilt, the same bytes, and serves the same answer" eq "$(sum)" "$good" "$got" "$expected"
# A new version of the model: its image is built, the replaced one's file deleted.
sql <<SQL
SET client_min_messages = warning;
BEGIN;
UPDATE personalize.models SET status = 'inactive' WHERE model_id = $fm;
INSERT INTO personalize.models (name, status, params, as_of, n_users, n_items, n_interactions,
        loss_per_iteration, seconds_per_iteration, read_seconds, train_seconds)
SELECT name, 'active', params, as_of, n_users, n_items, 0, '{}', '{}', 0, 0 FROM personalize.models WHERE model_id = $fm;
INSERT INTO personalize.model_items (model_id, item_index, item_id, factors, popularity)
SELECT (SELECT max(model_id) FROM personalize.models), item_index, item_id, factors, popularity
  FROM personalize.model_items WHERE model_id = $fm;
INSERT INTO personalize.model_users (model_id, user_id, factors)
SELECT (SELECT max(model_id) FROM personalize.models), user_id, factors FROM personalize.model_users WHERE model_id = $fm;
COMMIT;
SQL
got=$(served)
check "the new version serves the same answer" eq "$got" "$expected"
check "the replaced version's image is deleted" eq "$(has_image && echo yes || echo no)" no
result "kill -9 while a model image is built; damaged images"

#######################################################################################
summary
