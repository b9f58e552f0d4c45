#!/usr/bin/env bash
# Campaign triggers and the outbox, measured in one run (a benchmark, not a test):
#  1. Ingestion with 10 enabled campaigns vs none: the same recent synthetic events through
#     track_batch (batches of BATCH) and through single track() calls, alternating rounds, on
#     top of an analyzed month of history, for two workloads (see below) (budget: ratio >= 0.7).
#     With campaigns, each round runs twice: messages written by the direct outbox writer
#     (src/pg/outbox_writer.rs) and by INSERT statements (personalize.outbox_direct_write =
#     off), so its gain is measured alone on the same build and data.
#  2. claim + ack with 4 concurrent workers (pgbench, claim_messages then ack_batch, batches
#     of CLAIM_BATCH), messages per second (budget: >= 5,000 on 2 cores); then the same with
#     3 recommendations rendered into every payload at claim time.
source "$(dirname "$0")/lib.sh"
EVENTS=${BENCH_EVENTS:-100000}
SINGLES=${BENCH_SINGLE_EVENTS:-5000}
BATCH=${BENCH_BATCH:-1000}
ROUNDS=${BENCH_ROUNDS:-3}
CLAIM_BATCH=${BENCH_CLAIM_BATCH:-100}
DURATION=${BENCH_DURATION:-10}

install_prereqs
[ "${BENCH_SKIP_INSTALL:-0}" = 1 ] || install_extension
start_cluster
fresh_db pp_bench_outbox
sql() { psql -X -q -d pp_bench_outbox -v ON_ERROR_STOP=1 "$@"; }

# Two workloads of the same size: "newcomers" (USERS_A users, a handful of events each: nearly
# every event is its user's first of its kind, so about every other one writes a message, the
# worst case for the trigger) and "sessions" (USERS_B users browsing more: later views are
# absorbed by the message already pending, as in a shop's day).
USERS_A=${BENCH_USERS_A:-20000}
USERS_B=${BENCH_USERS_B:-2000}
say "1. Ingestion: 10 enabled campaigns vs none ($EVENTS events in batches of $BATCH, $SINGLES single track() calls, $ROUNDS rounds)"
sql -v events="$EVENTS" -v batch="$BATCH" -v singles="$SINGLES" -v users_a="$USERS_A" -v users_b="$USERS_B" <<'SQL'
CREATE EXTENSION pg_personalize;
INSERT INTO personalize.items (item_id, category, title, price) SELECT * FROM personalize.synthetic_items(4000, 1);
-- A month of history before the measured events (older than every campaign's max_event_age,
-- so it fires nothing), analyzed, as in a shop that has been running.
SELECT sum(t.accepted) AS history_events
  FROM (SELECT array_agg(e) AS events
          FROM (SELECT e, row_number() OVER () / 10000 AS chunk
                  FROM personalize.synthetic_events(200000, users => :users_a, items => 4000, seed => 5,
                                                    start => now() - interval '31 days', days => 29) e) s
         GROUP BY chunk) c,
       personalize.track_batch(c.events) t;
-- The measured events: of the last day, so every campaign's age check passes (live traffic).
CREATE TABLE batches AS
SELECT w.workload, (n / :batch) AS b, array_agg(e ORDER BY n) AS events
  FROM (VALUES ('newcomers', :users_a), ('sessions', :users_b)) AS w(workload, users),
       LATERAL (SELECT e, row_number() OVER () - 1 AS n
                  FROM personalize.synthetic_events(:events, users => w.users, items => 4000, seed => 7,
                                                    start => now() - interval '1 day', days => 1) e) s
 GROUP BY 1, 2;
CREATE TABLE singles AS
SELECT w.workload, e
  FROM (VALUES ('newcomers', :users_a), ('sessions', :users_b)) AS w(workload, users),
       LATERAL personalize.synthetic_events(:singles, users => w.users, items => 4000, seed => 8,
                                            start => now() - interval '1 day', days => 1) e;
CREATE TABLE history_end AS SELECT max(event_id) AS event_id FROM personalize.events;
INSERT INTO personalize.segments VALUES ('big_spenders', '{"total_spend": {"min": 100}}');
-- Ten campaigns a shop would run: browse abandonment per category, cart abandonment,
-- post-purchase, a capped one, one with quiet hours, one for a segment.
CREATE TABLE campaign_set AS SELECT * FROM (VALUES
 ('browse_cameras', 'view', 'cameras', NULL::text, '2 hours'::interval, 'email', NULL::int, NULL::time),
 ('browse_lenses', 'view', 'lenses', NULL, '2 hours', 'email', NULL, NULL),
 ('browse_laptops', 'view', 'laptops', NULL, '4 hours', 'email', NULL, NULL),
 ('browse_any', 'view', NULL, NULL, '1 day', 'push', 1, NULL),
 ('cart_email', 'add_to_cart', NULL, NULL, '1 hour', 'email', NULL, NULL),
 ('cart_push', 'add_to_cart', NULL, NULL, '0', 'push', 1, NULL),
 ('cart_sms_big_spenders', 'add_to_cart', NULL, 'big_spenders', '30 minutes', 'sms', NULL, NULL),
 ('thank_you', 'purchase', NULL, NULL, '0', 'email', NULL, NULL),
 ('review_request', 'purchase', NULL, NULL, '7 days', 'whatsapp', NULL, '22:00'),
 ('refund_followup', 'refund', NULL, NULL, '1 day', 'webhook', NULL, NULL)) v(name, ev, cat, seg, delay, channel, cap, quiet);
CREATE TABLE timings (round int, workload text, campaigns int, writer text, method text, seconds float8, events bigint, messages bigint, cancelled bigint);
-- Puts the campaigns in place (or removes them), then times the workload's batches and singles.
-- writer: 'none' (no campaigns), 'direct' or 'statement' (personalize.outbox_direct_write).
CREATE PROCEDURE run_round(r int, w text, writer text) LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; n bigint; c int;
BEGIN
  PERFORM set_config('personalize.outbox_direct_write', CASE writer WHEN 'statement' THEN 'off' ELSE 'on' END, false);
  DELETE FROM personalize.campaigns;
  IF writer <> 'none' THEN
    INSERT INTO personalize.campaigns (name, trigger_event_type, trigger_category, segment, delay, channel,
                                       cancel_on, cap_messages, cap_window, quiet_start, quiet_end, template)
    SELECT name, ev, cat, seg, delay, channel,
           CASE WHEN ev IN ('view', 'add_to_cart') THEN '{purchase}'::text[] ELSE '{}' END,
           cap, CASE WHEN cap IS NOT NULL THEN interval '1 day' END, quiet, quiet + interval '9 hours',
           '{"to": "{{user_id}}", "item": "{{item_title}}"}'
      FROM campaign_set;
  END IF;
  SELECT count(*) INTO c FROM personalize.campaigns;
  COMMIT;
  t0 := clock_timestamp();
  SELECT sum(t.accepted) INTO n FROM batches, personalize.track_batch(events) t WHERE batches.workload = w;
  INSERT INTO timings VALUES (r, w, c, writer, 'track_batch', extract(epoch FROM clock_timestamp() - t0), n,
                              (SELECT count(*) FROM personalize.outbox),
                              (SELECT count(*) FROM personalize.outbox WHERE state = 'cancelled'));
  COMMIT;
  t0 := clock_timestamp();
  SELECT count(personalize.track(e)) INTO n FROM singles WHERE singles.workload = w;
  INSERT INTO timings VALUES (r, w, c, writer, 'track (one event per call)', extract(epoch FROM clock_timestamp() - t0), n);
  COMMIT;
END $$;
SQL
# Each round starts from the analyzed history alone (the measured events and messages removed
# and vacuumed away), alternating no campaigns, ten with the direct writer and ten with the
# INSERT statements.
reset_round() {
    sql -c "DELETE FROM personalize.events WHERE event_id > (SELECT event_id FROM history_end)" \
        -c "TRUNCATE personalize.outbox" -c "VACUUM ANALYZE personalize.events, personalize.outbox"
}
for r in $(seq "$ROUNDS"); do
    for w in newcomers sessions; do
        for writer in none direct statement; do
            reset_round; sql -c "CALL run_round($r, '$w', '$writer')"
        done
    done
done
sql <<'SQL'
\pset footer off
SELECT workload, writer, method, max(events) AS events, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds)::numeric, 3) AS median_s,
       round((max(events) / percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds))::numeric) AS events_per_s,
       max(messages) AS messages, max(cancelled) AS cancelled
  FROM timings GROUP BY 1, 2, 3 ORDER BY 1, 3, 2;
SELECT workload, method, round((d.rate / n.rate)::numeric, 2) AS "10 campaigns, direct / none (budget >= 0.7)",
       round((s.rate / n.rate)::numeric, 2) AS "10 campaigns, statements / none",
       round((d.rate / s.rate)::numeric, 2) AS "direct / statements",
       round(d.messages::numeric / d.events, 2) AS messages_per_event
  FROM (SELECT workload, method, max(events) / percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS rate
          FROM timings WHERE writer = 'none' GROUP BY 1, 2) n
  JOIN (SELECT workload, method, max(events) / percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS rate,
               max(events) AS events, max(messages) AS messages
          FROM timings WHERE writer = 'direct' GROUP BY 1, 2) d USING (workload, method)
  JOIN (SELECT workload, method, max(events) / percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS rate
          FROM timings WHERE writer = 'statement' GROUP BY 1, 2) s USING (workload, method)
 ORDER BY 1, 2;
-- Each round's own ratio direct / statements (the spread shows the noise).
SELECT workload, method, string_agg(round((s.seconds / d.seconds)::numeric, 2)::text, ' ' ORDER BY round) AS "direct / statements per round"
  FROM timings d JOIN timings s USING (round, workload, method)
 WHERE d.writer = 'direct' AND s.writer = 'statement' GROUP BY 1, 2 ORDER BY 1, 2;
SQL

claim_bench() {  # claim_bench LABEL RECOMMENDATIONS PREFILL
    local label=$1 recs=$2 prefill=$3
    sql -v recs="$recs" -v prefill="$prefill" <<'SQL'
TRUNCATE personalize.outbox;
DELETE FROM personalize.campaigns;
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, recommendations, template)
VALUES ('bench', 'view', 'email', :recs, '{"to": "{{user_id}}", "items": "{{recommendations}}"}');
INSERT INTO personalize.outbox (campaign_id, campaign, channel, user_id, trigger_event_id, triggered_at, visible_at)
SELECT c.campaign_id, 'bench', 'email', 'U' || lpad((g % 20000)::text, 7, '0') || '-' || g, g, now(), now() - interval '1 minute'
  FROM personalize.campaigns c, generate_series(1, :prefill) g;
VACUUM ANALYZE personalize.outbox;
SQL
    printf '%s\n' \
      "SELECT quote_literal(lease_token) AS lease, quote_literal(array_agg(message_id)) AS ids FROM personalize.claim_messages('email', $CLAIM_BATCH, '60 seconds') GROUP BY lease_token \gset" \
      "SELECT personalize.ack_batch(CAST(:lease AS uuid), CAST(:ids AS bigint[]));" > "$PP_RUN/claim_ack.sql"
    local out; out=$(pgbench -n -c 4 -j 2 -T "$DURATION" -f "$PP_RUN/claim_ack.sql" pp_bench_outbox 2>&1) \
        || { echo "$out" | tail -5; return 1; }
    local sent; sent=$(psql -X -At -d pp_bench_outbox -c "SELECT count(*) FROM personalize.outbox WHERE state = 'sent'")
    local tps; tps=$(echo "$out" | awk '/^tps/ { print $3; exit }')
    echo "$label: $sent messages claimed and acked in ${DURATION} s by 4 workers (pgbench tps $tps, batches of $CLAIM_BATCH)"
    awk -v s="$sent" -v d="$DURATION" -v l="$label" 'BEGIN { printf "  => %.0f messages/s%s\n", s / d, (l ~ /plain/ ? " (budget >= 5,000)" : "") }'
    echo "$out" | grep -E "failed|aborted" | grep -v ": 0 " || true
}

say "2. claim + ack throughput, 4 workers, $DURATION s"
claim_bench "plain payloads" 0 400000
say "   ...with 3 recommendations per payload (needs a trained model)"
sql -c "SELECT count(*) FROM personalize.generate_shop(100000, users => 20000, items => 4000, seed => 3)" \
    -c "SELECT model_id FROM personalize.train(factors => 32, iterations => 5)" >/dev/null
claim_bench "payloads with recommendations" 3 300000
