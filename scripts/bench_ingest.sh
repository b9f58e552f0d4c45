#!/usr/bin/env bash
# Validated ingestion vs a plain INSERT, side by side in one run (a benchmark, not a test).
# Both take the same synthetic events as jsonb arrays of BATCH events and write the same columns
# into a table with the same indexes and the same client_event_id de-duplication; the only
# difference is the tracking-plan check (and quarantine bookkeeping) of track_batch.
source "$(dirname "$0")/lib.sh"
EVENTS=${BENCH_EVENTS:-200000}
BATCH=${BENCH_BATCH:-1000}
ROUNDS=${BENCH_ROUNDS:-3}

install_prereqs
[ "${BENCH_SKIP_INSTALL:-0}" = 1 ] || install_extension
start_cluster
fresh_db pp_bench
psql -X -q -d pp_bench -v ON_ERROR_STOP=1 -v events="$EVENTS" -v batch="$BATCH" -v rounds="$ROUNDS" <<'SQL'
SET client_min_messages = notice;
CREATE EXTENSION pg_personalize;
CREATE TABLE plain_events (LIKE personalize.events INCLUDING ALL);
CREATE TABLE batches AS
SELECT (n / :batch) AS b, array_agg(e ORDER BY n) AS events
  FROM (SELECT e, row_number() OVER () - 1 AS n
          FROM personalize.synthetic_events(:events, users => 20000, items => 4000, seed => 1) e) s
 GROUP BY 1;
VACUUM ANALYZE batches;
CREATE TABLE timings (round int, method text, seconds float8, rows bigint);

CREATE PROCEDURE run_round(r int) LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; n bigint;
BEGIN
  TRUNCATE personalize.events, plain_events;
  COMMIT;
  t0 := clock_timestamp();
  INSERT INTO plain_events (event_type, user_id, item_id, session_id, occurred_at, client_event_id, properties)
  SELECT e->>'type', e->>'user_id', e->>'item_id', e->>'session_id',
         COALESCE((e->>'occurred_at')::timestamptz, now()), e->>'client_event_id',
         COALESCE(e->'properties', '{}')
    FROM batches, unnest(events) e
  ON CONFLICT (client_event_id, user_id, event_type) WHERE client_event_id IS NOT NULL DO NOTHING;
  GET DIAGNOSTICS n = ROW_COUNT;
  INSERT INTO timings VALUES (r, 'plain INSERT (no validation)', extract(epoch FROM clock_timestamp() - t0), n);
  COMMIT;
  t0 := clock_timestamp();
  SELECT sum(t.accepted) INTO n FROM batches, personalize.track_batch(events) t;
  INSERT INTO timings VALUES (r, 'track_batch (validated)', extract(epoch FROM clock_timestamp() - t0), n);
  COMMIT;
END $$;
SELECT format('CALL run_round(%s)', g) FROM generate_series(1, :rounds) g \gexec

\echo
\echo 'Validated ingestion vs plain INSERT (median of rounds):'
WITH m AS (
  SELECT method, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS seconds, max(rows) AS rows
    FROM timings GROUP BY method)
SELECT method, rows, round(seconds::numeric, 3) AS seconds, round((rows / seconds)::numeric) AS rows_per_s
  FROM m ORDER BY method DESC;
SELECT round(( (SELECT rows / seconds FROM (SELECT max(rows) rows, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) seconds FROM timings WHERE method LIKE 'track%') a)
             / (SELECT rows / seconds FROM (SELECT max(rows) rows, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) seconds FROM timings WHERE method LIKE 'plain%') b))::numeric, 3)
       AS "ratio validated/plain (budget >= 0.7)";
SELECT round, method, round(seconds::numeric, 3) AS seconds FROM timings ORDER BY round, method;
SQL
