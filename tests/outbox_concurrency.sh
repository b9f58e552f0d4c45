#!/usr/bin/env bash
# The outbox under real concurrency and crashes (our own cluster):
#  1. NOTIFY: a due message wakes a LISTENing session.
#  2. Four concurrent workers drain 20,000 messages: every message is claimed exactly once
#     (no two workers ever hold the same message) and acked exactly once.
#  3. Crash: one worker's backend is ended with pg_terminate_backend and another's with
#     kill -9 (the postmaster then resets every backend) right after they claimed 300
#     messages each: after the visibility timeout those messages are claimed again; nothing
#     is lost, nothing is acked twice, and the redeliveries are counted and reported.
#  4. Concurrent writers of the same (campaign, user): eight sessions track views of twenty
#     users for five seconds, each holding its transaction open a moment after the event,
#     while a worker claims (freeing the pending slots): the trigger's ON CONFLICT DO NOTHING
#     (its own speculative insertion, src/pg/outbox_writer.rs) absorbs every race without an
#     error, and no user ever has two pending messages of one campaign.
# Each race on its own, interleaving by interleaving (two writers of one pair, REPEATABLE
# READ, claim against claim, a cancel during a claim, lease expiry against ack), is an
# isolation spec: tests/isolation/specs/outbox_races.spec.
source "$(dirname "$0")/../scripts/lib.sh"
start_cluster
DB=pp_outbox_test
fresh_db $DB
# The cluster runs with synchronous_commit=off for speed; a crash may then forget the last
# commits (as documented). These sessions commit durably, as a production server does.
sql() { PGOPTIONS="-c synchronous_commit=on" psql -X -q -At -v ON_ERROR_STOP=1 -d $DB "$@"; }
fail() { echo "FAIL: $*"; exit 1; }

sql <<'SQL'
CREATE EXTENSION pg_personalize;
-- Consent is not what this test is about: no channel needs an opt-in (tests/pg_regress/sql/consent.sql).
INSERT INTO personalize.channel_policies VALUES ('push', false), ('sms', false), ('whatsapp', false);
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, template)
VALUES ('views', 'view', 'email', '{"hi": "{{user_id}}"}'),
       ('carts', 'add_to_cart', 'sms', '{"cart": "{{item_id}}"}');
CREATE TABLE test_claims (message_id bigint, lease uuid, worker int, at timestamptz DEFAULT clock_timestamp());
CREATE TABLE test_acks (message_id bigint, worker int);
-- A worker as a procedure: claim (and log the claim) in one transaction, ack in the next.
CREATE PROCEDURE test_worker(w int, ch text, batch int, vis interval) LANGUAGE plpgsql AS $$
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
        INSERT INTO test_acks SELECT m, w FROM unnest(ids) m WHERE personalize.ack(m, lease);
        COMMIT;
    END LOOP;
END $$;
SQL

say "1. NOTIFY wakes a listening worker"
out=$(sql <<'SQL'
LISTEN personalize_outbox;
SELECT personalize.track('{"type": "view", "user_id": "listener", "item_id": "i"}') > 0;
SQL
)
echo "$out" | grep -q 'Asynchronous notification "personalize_outbox" with payload "email"' \
    || fail "no notification: $out"
echo "received: $(echo "$out" | grep -o 'Asynchronous notification "personalize_outbox" with payload "email"')"

say "2. Four concurrent workers, 20,000 messages"
for half in 0 1; do
    sql -c "SELECT accepted FROM personalize.track_batch(ARRAY(SELECT jsonb_build_object('type', 'view',
              'user_id', 'u' || g, 'item_id', 'i1') FROM generate_series($half * 10000 + 1, $half * 10000 + 10000) g))" >/dev/null
done
n=$(sql -c "SELECT count(*) FROM personalize.outbox WHERE channel = 'email' AND state = 'pending'")
echo "pending email messages: $n"
t0=$(date +%s.%N)
pids=()
for w in 1 2 3 4; do sql -c "CALL test_worker($w, 'email', 50, '60 seconds')" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p" || fail "worker exited with an error"; done
t1=$(date +%s.%N)
read -r claims distinct acks distinct_acks sent per_worker < <(sql -F ' ' -c "
  SELECT (SELECT count(*) FROM test_claims), (SELECT count(DISTINCT message_id) FROM test_claims),
         (SELECT count(*) FROM test_acks), (SELECT count(DISTINCT message_id) FROM test_acks),
         (SELECT count(*) FROM personalize.outbox WHERE channel = 'email' AND state = 'sent'),
         (SELECT string_agg(worker || ':' || c, ',' ORDER BY worker) FROM (SELECT worker, count(*) c FROM test_claims GROUP BY worker) x)")
echo "claims $claims (distinct messages $distinct), acks $acks (distinct $distinct_acks), sent $sent, per worker $per_worker"
echo "4 workers: $(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", n / (b - a) }') messages/s claimed and acked (batches of 50, one ack call per message)"
[ "$claims" = "$n" ] && [ "$distinct" = "$n" ] || fail "a message was handed out twice or not at all"
[ "$acks" = "$n" ] && [ "$distinct_acks" = "$n" ] && [ "$sent" = "$n" ] || fail "acks do not match"

say "3. Crash: pg_terminate_backend and kill -9 of workers holding claims"
sql -c "SELECT accepted FROM personalize.track_batch(ARRAY(SELECT jsonb_build_object('type', 'add_to_cart',
          'user_id', 'c' || g, 'item_id', 'i' || g) FROM generate_series(1, 1000) g))" >/dev/null
# Two workers claim 300 each with a 10-second lease, then hang before acking.
hang() {  # hang NAME: claims 300 messages, logs them, then sleeps as if delivering
    sql -c "SET application_name = '$1'" -c "INSERT INTO test_claims (message_id, lease, worker)
              SELECT message_id, lease_token, 0 FROM personalize.claim_messages('sms', 300, '10 seconds')" \
        -c "SELECT pg_sleep(120)" >/dev/null 2>&1 || true
}
hang terminated & h1=$!
hang killed & h2=$!
for _ in $(seq 100); do
    [ "$(sql -c "SELECT count(*) FROM personalize.outbox WHERE channel = 'sms' AND state = 'claimed'")" = 600 ] && break
    sleep 0.1
done
held=$(sql -c "SELECT count(*) FROM personalize.outbox WHERE channel = 'sms' AND state = 'claimed'")
echo "claimed by the two hanging workers: $held"
[ "$held" = 600 ] || fail "the hanging workers did not claim 600 messages"
sql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'terminated'" >/dev/null
victim=$(sql -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'killed'")
as_pg_owner kill -9 "$victim"
wait $h1 $h2 || true
for _ in $(seq 100); do sql -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
echo "after kill -9 of backend $victim the postmaster reset all backends; the cluster is back"
# Before the lease expires, nobody else gets those messages.
early=$(sql -c "SELECT count(*) FROM personalize.claim_messages('sms', 1000, '60 seconds')")
echo "claimable before the leases expired: $early (the 400 never claimed are; the 600 held are not)"
[ "$early" = 400 ] || fail "expected the 400 unclaimed messages only, got $early"
sql -c "INSERT INTO test_acks SELECT message_id, 0 FROM personalize.outbox WHERE channel = 'sms' AND state = 'claimed'
          AND visible_at > now() + interval '30 seconds' AND personalize.ack(message_id, lease_token)" >/dev/null
until [ "$(sql -c "SELECT count(*) FROM personalize.outbox WHERE channel = 'sms' AND state = 'claimed' AND visible_at > now()")" = 0 ]; do
    sleep 0.5
done
echo "the crashed workers' leases have expired"
pids=()
for w in 5 6; do sql -c "CALL test_worker($w, 'sms', 50, '60 seconds')" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p" || fail "worker exited with an error"; done
read -r sent acks distinct_acks redelivered other < <(sql -F ' ' -c "
  SELECT (SELECT count(*) FROM personalize.outbox WHERE channel = 'sms' AND state = 'sent'),
         (SELECT count(*) FROM test_acks a JOIN personalize.outbox o USING (message_id) WHERE o.channel = 'sms'),
         (SELECT count(DISTINCT a.message_id) FROM test_acks a JOIN personalize.outbox o USING (message_id) WHERE o.channel = 'sms'),
         (SELECT sum(redeliveries) FROM personalize.outbox WHERE channel = 'sms'),
         (SELECT count(*) FROM personalize.outbox WHERE channel = 'sms' AND state <> 'sent')")
echo "sms: sent $sent of 1000, acks $acks (distinct $distinct_acks), redeliveries $redelivered, not sent $other"
[ "$sent" = 1000 ] && [ "$other" = 0 ] || fail "messages were lost"
[ "$acks" = 1000 ] && [ "$distinct_acks" = 1000 ] || fail "a message was acked twice or not at all"
[ "$redelivered" = 600 ] || fail "expected 600 redeliveries, got $redelivered"

say "4. Concurrent writers of the same (campaign, user) pairs"
cat >"$PP_RUN/race.sql" <<'SQL'
\set u random(1, 20)
BEGIN;
SELECT personalize.track(jsonb_build_object('type', 'view', 'user_id', 'race' || :u, 'item_id', 'i1'));
SELECT pg_sleep(0.002);
COMMIT;
SQL
inserted() { sql -c "SELECT pg_stat_force_next_flush()" -c "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relid = 'personalize.outbox'::regclass" | tail -1; }
before=$(inserted)
( end=$((SECONDS + 6)); while [ $SECONDS -lt $end ]; do
    sql -c "SELECT count(personalize.ack(message_id, lease_token)) FROM personalize.claim_messages('email', 100)" >/dev/null
    sleep 0.02
  done ) & claimer=$!
PGOPTIONS="-c synchronous_commit=on" "$PGBIN/pgbench" -n -c 8 -j 2 -T 5 -f "$PP_RUN/race.sql" $DB >"$PP_RUN/race.out" 2>&1 \
    || { cat "$PP_RUN/race.out"; fail "a writer failed"; }
wait $claimer
grep -E "number of (transactions actually processed|failed transactions)" "$PP_RUN/race.out"
grep -q "aborted" "$PP_RUN/race.out" && { cat "$PP_RUN/race.out"; fail "a client aborted"; }
read -r messages doubled users < <(sql -F ' ' -c "
  SELECT count(*),
         (SELECT count(*) FROM (SELECT 1 FROM personalize.outbox WHERE user_id LIKE 'race%' AND state = 'pending'
                                 GROUP BY campaign_id, user_id HAVING count(*) > 1) d),
         count(DISTINCT user_id)
    FROM personalize.outbox WHERE user_id LIKE 'race%'")
# Tuples our speculative insertions killed on a conflict (inserted but never a message):
# how often a race was actually run into (varies from run to run; reported, not asserted).
sleep 1
killed=$(( $(inserted) - before - messages ))
echo "messages for the 20 users: $messages; pairs with two pending: $doubled; speculative conflicts resolved: $killed"
[ "$doubled" = 0 ] || fail "a (campaign, user) has two pending messages"
[ "$users" = 20 ] && [ "$messages" -gt 20 ] || fail "expected messages for all 20 users over several claim rounds"

echo "PASS"
