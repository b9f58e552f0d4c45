#!/usr/bin/env bash
# Random SQL against a database with the extension (a fuzz run with a pass/fail check, not a
# unit test): SQLsmith (Debian package sqlsmith, installed when missing) generates queries from
# the catalogue (selects, joins, subqueries, window functions, INSERT/UPDATE/DELETE/MERGE, each
# run in autocommit with a 1 s statement_timeout that sqlsmith sets) over a small trained shop
# with segments, campaigns, outbox messages, an experiment and exposures. Two phases:
#   wide     the whole catalogue (our scalar functions are ~1.5 % of pg_proc)
#   focused  pg_proc shadowed by a view (search_path smith_focus, pg_catalog): our functions,
#            every aggregate and 1 in 20 other pg_catalog functions, tables other than the
#            catalogue's only (--exclude-catalog), so most queries touch personalize.*
# SQLsmith never calls set-returning functions (recommend, rank_items, claim_messages, ...):
# it picks only scalar functions from pg_proc. So a third, deterministic phase follows:
#   edges    every function of the schema with all arguments NULL, then each argument in turn
#            NULL or a boundary value of its type (about 960 calls; see below)
# It runs as a LOGIN role without superuser (pp_smith) that has every privilege on the
# extension's schema: random superuser-only calls (lo_export, pg_terminate_backend,
# pg_read_file, replication slots, ...) would otherwise act on the host.
# PP_SMITH_SUPERUSER=1 runs as postgres instead.
# Then scans the server log (log_line_prefix with the SQLSTATE, log_min_error_statement=error)
# and reports: queries run, errors by SQLSTATE (top 10), backend crashes (must be 0: exit 1
# otherwise), and every XX000 (internal error: a Rust panic surfaces as one) raised by the
# extension (a .rs source location, or personalize in the CONTEXT) with its statement: these
# are bugs (exit 1 too). XX000s of PostgreSQL itself are listed, not counted.
#   PP_SMITH_QUERIES  queries in all (default 20000, half per phase)
#   PP_SMITH_SEED     seed of the first phase (default 42; the second uses seed + 1)
#   PP_SKIP_INSTALL=1 (or BENCH_SKIP_INSTALL=1) use the installed extension as it is
# Uses its own cluster (PP_PORT default 54345): it is restarted with the logging options, and
# a crash would reset every session on it.
PP_PORT=${PP_PORT:-54345}
source "$(dirname "$0")/lib.sh"
QUERIES=${PP_SMITH_QUERIES:-20000}
SEED=${PP_SMITH_SEED:-42}
DB=pp_sqlsmith
OUT=$ROOT/build/sqlsmith
SMITH_USER=pp_smith
[ "${PP_SMITH_SUPERUSER:-0}" = 1 ] && SMITH_USER=postgres

if [ "${PP_SKIP_INSTALL:-${BENCH_SKIP_INSTALL:-0}}" != 1 ]; then
    install_prereqs
    install_extension
fi
if ! command -v sqlsmith >/dev/null; then
    say "Installing Debian package: sqlsmith"
    if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
        echo "need root or sudo to install sqlsmith" >&2; exit 1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlsmith >/dev/null
fi
mkdir -p "$OUT"
rm -f "$OUT"/*

say "Restarting our cluster on port $PP_PORT with SQLSTATEs and failing statements in the log"
stop_cluster
PP_PG_OPTS="${PP_PG_OPTS:-} -c log_line_prefix='%m [%p] %e ' -c log_min_error_statement=error -c log_error_verbosity=verbose"
start_cluster
fresh_db $DB

say "Setting up: a small trained shop, segments, campaigns with messages, an experiment with exposures"
psql -X -q -d $DB -v ON_ERROR_STOP=1 -v db="$DB" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_personalize;
SELECT * FROM personalize.generate_shop(20000, users => 500, items => 200, seed => 5) \g /dev/null
SELECT * FROM personalize.train(factors => 8, iterations => 3) \g /dev/null
SELECT * FROM personalize.train('second', factors => 4, iterations => 2, "window" => '30 days') \g /dev/null
SELECT * FROM personalize.evaluate(factors => 4, iterations => 2) \g /dev/null
INSERT INTO personalize.segments (name, definition, description) VALUES
 ('camera_browsers', '{"all": [{"viewed": {"category": "cameras", "within": "365 days"}},
                               {"not": {"bought": {"category": "cameras"}}}]}', 'viewed cameras, bought none'),
 ('big_spenders', '{"total_spend": {"min": 300}}', 'spent 300 or more'),
 ('lapsed', '{"any": [{"last_seen": {"not_within": "30 days"}}, {"event_count": {"event_type": "purchase", "max": 0}}]}', 'gone or never bought');
INSERT INTO personalize.campaigns (name, trigger_event_type, trigger_category, segment, delay, cancel_on, channel,
                                   recommendations, cap_messages, cap_window, quiet_start, quiet_end, template) VALUES
 ('browse', 'view', NULL, NULL, '0', '{purchase}', 'email', 3, NULL, NULL, NULL, NULL,
  '{"to": "{{user_id}}", "subject": "{{item_title}}", "items": "{{recommendations}}"}'),
 ('cart', 'add_to_cart', NULL, 'big_spenders', '1 hour', '{purchase}', 'push', 0, 2, '1 day', '22:00', '07:00',
  '{"title": "{{item_title}} ({{category}})", "price": "{{properties.price}}"}'),
 ('cams', 'view', 'cameras', 'camera_browsers', '2 hours', '{purchase}', 'sms', 1, NULL, NULL, NULL, NULL,
  '{"text": "{{campaign}} {{message_id}} {{idempotency_key}}"}');
INSERT INTO personalize.frequency_caps (channel, max_messages, "window") VALUES ('email', 5, '1 day');
-- Recent events: they fire the campaigns (one message per campaign and user).
SELECT count(personalize.track(jsonb_build_object('type', t, 'user_id', 'U' || lpad((g % 500)::text, 7, '0'),
                                                  'item_id', 'P' || lpad((g % 200)::text, 7, '0'))))
  FROM generate_series(1, 600) g, LATERAL (SELECT CASE WHEN g % 7 = 0 THEN 'add_to_cart' WHEN g % 11 = 0 THEN 'purchase'
                                                       ELSE 'view' END AS t) x \g /dev/null
-- Some sent, some failed, some claimed.
WITH c AS (SELECT * FROM personalize.claim_messages('email', 50, '1 hour'))
SELECT personalize.ack_batch((SELECT lease_token FROM c LIMIT 1), ARRAY(SELECT message_id FROM c)) \g /dev/null
SELECT personalize.fail(message_id, lease_token, 'smtp 451') FROM personalize.claim_messages('email', 20) \g /dev/null
SELECT count(*) FROM personalize.claim_messages('email', 20, '12 hours') \g /dev/null
SELECT personalize.track('{"type": "view", "user_id": "U1"}') \g /dev/null
SELECT * FROM personalize.track_batch(ARRAY['{"type": "nope"}', '{"type": "search", "user_id": 5}', NULL]::jsonb[]) \g /dev/null
INSERT INTO personalize.experiments (name, variants, conversion_event_types, attribution_window, salt) VALUES
 ('layout', '[{"name": "grid", "weight": 50}, {"name": "carousel", "weight": 50}]', '{purchase}', '7 days', 'smith'),
 ('models', '[{"name": "a", "weight": 90}, {"name": "b", "weight": 10, "model": "second"}]', '{purchase,add_to_cart}', '1 day', 'smith2');
SELECT count(personalize.log_exposure(e, 'U' || lpad(g::text, 7, '0'), 'home')) FROM generate_series(1, 300) g, unnest(ARRAY['layout', 'models']) e \g /dev/null
VACUUM ANALYZE;

-- The role SQLsmith connects as (unless PP_SMITH_SUPERUSER=1).
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pp_smith') THEN CREATE ROLE pp_smith LOGIN; END IF;
END $$;
GRANT USAGE ON SCHEMA personalize TO pp_smith;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA personalize TO pp_smith;
GRANT ALL ON ALL TABLES IN SCHEMA personalize TO pp_smith;
GRANT ALL ON ALL SEQUENCES IN SCHEMA personalize TO pp_smith;
-- SQLsmith reads routines with "FROM pg_proc" (unqualified): with this schema ahead of
-- pg_catalog in search_path, the focused phase sees only this subset.
CREATE SCHEMA smith_focus;
CREATE VIEW smith_focus.pg_proc AS
SELECT * FROM pg_catalog.pg_proc p
 WHERE (p.pronamespace = 'personalize'::regnamespace
        -- argument-less helpers that sqlsmith would otherwise pick for every text value
        AND p.proname NOT IN ('_segment_hint', '_known_event_types_hint', '_apply_privileges'))
    OR p.prokind = 'a'
    OR (p.pronamespace = 'pg_catalog'::regnamespace AND p.oid::bigint % 20 = 0);
GRANT USAGE ON SCHEMA smith_focus TO pp_smith;
GRANT SELECT ON smith_focus.pg_proc TO pp_smith;
-- Sources for the loaders (the boundary-value sweep imports them).
CREATE TABLE public.smith_src_events (type text, user_id text, item_id text, occurred_at text, properties text,
                                      client_event_id text);
INSERT INTO public.smith_src_events VALUES ('view', 'U0000001', 'P0000001', NULL, '{}', 'c1'),
  ('view', NULL, NULL, 'not a time', '{', NULL),
  ('purchase', 'U0000002', 'P0000002', '294276-12-31 23:59:59+00', '{"price": 1e400}', NULL);
CREATE TABLE public.smith_src_retail (invoice_no text, stock_code text, description text, quantity text,
                                      invoice_date text, unit_price text, customer_id text, country text);
INSERT INTO public.smith_src_retail VALUES ('536365', '85123A', 'HEART', '6', '12/1/2010 8:26', '2.55', '17850.0', 'UK'),
  ('C536379', 'D', 'Discount', '-1', '12/1/2010 9:41', '27.5', '14527', 'UK'),
  ('1', 'X', 'd', '1e400', '99/99/9999 99:99', 'NaN', '', NULL);
CREATE TABLE public.smith_src_rr (timestamp text, visitorid text, event text, itemid text, transactionid text);
INSERT INTO public.smith_src_rr VALUES ('1433221332117', '257597', 'view', '355908', NULL),
  ('9223372036854775807', '1', 'transaction', '2', '5'), ('-9223372036854775808', '1', 'addtocart', '2', NULL),
  ('1e400', '', 'x', '', '');
GRANT SELECT ON public.smith_src_events, public.smith_src_retail, public.smith_src_rr TO pp_smith;
ALTER DATABASE :"db" SET statement_timeout = '2s';
SQL
psql -X -At -d $DB -c "SELECT 'scalar functions of personalize: ' || count(*) FILTER (WHERE pronamespace = 'personalize'::regnamespace AND prokind = 'f' AND NOT proretset)
                              || ' of ' || count(*) FILTER (WHERE prokind = 'f' AND NOT proretset) || ' in pg_proc; in the focused view: '
                              || (SELECT count(*) FROM smith_focus.pg_proc WHERE prokind = 'f' AND NOT proretset)
                         FROM pg_proc"

log_start=$(as_root stat -c %s "$PP_RUN/postgres.log")
phase() {  # phase NAME QUERIES SEED EXTRA_CONNINFO SQLSMITH_OPTIONS...
    local name=$1 n=$2 seed=$3 extra=$4; shift 4
    say "sqlsmith, $name: $n queries, seed $seed, as $SMITH_USER"
    local t0=$SECONDS rc=0
    sqlsmith --target="host=$PP_SOCK port=$PP_PORT dbname=$DB user=$SMITH_USER $extra" \
        --max-queries="$n" --seed="$seed" --verbose --dump-all-queries "$@" > "$OUT/$name.out" 2> "$OUT/$name.err" || rc=$?
    local ran; ran=$(sed -n 's/^queries: \([0-9]*\).*/\1/p' "$OUT/$name.err" | tail -1)
    local rate; rate=$(sed -n 's/^error rate: \(.*\)/\1/p' "$OUT/$name.err" | tail -1)
    # --dump-all-queries: every query on stdout, each ending with ";" on a line of its own.
    calls=$(awk 'BEGIN {RS = ";\n"} /personalize\.[a-z_]+\(/ {n++} END {print n + 0}' "$OUT/$name.out")
    echo "$name: sqlsmith exit $rc, ${ran:-?} queries in $((SECONDS - t0)) s, error rate ${rate:-?}," \
         "$calls queries call a personalize function"
    grep -o 'personalize\.[a-z_]*(' "$OUT/$name.out" | sort | uniq -c | sort -rn > "$OUT/$name.functions"
    echo "$name ${ran:-0} $rc" >> "$OUT/phases"
}
HALF=$((QUERIES / 2))
phase wide "$HALF" "$SEED" ""
phase focused "$((QUERIES - HALF))" "$((SEED + 1))" "options='-c search_path=smith_focus,pg_catalog'" --exclude-catalog

# SQLsmith leaves out set-returning functions and rarely reaches boundary values, so a
# deterministic sweep follows: every function of the schema (triggers and _apply_privileges
# aside), once with all arguments NULL, then each argument in turn NULL or a boundary value of
# its type (empty/huge/control-character text, 0/-1/min/max integers, NaN/Infinity, zero/
# negative/huge intervals, infinite and extreme timestamps, JSON null/arrays/deep nesting/1e400,
# empty/NULL-element/2-D/offset/20,000-element arrays, ...) with sensible values elsewhere.
say "Boundary-value sweep of every function in personalize, as $SMITH_USER"
psql -X -At -d $DB -v ON_ERROR_STOP=1 > "$OUT/edges.sql" <<'SQL'
WITH fn AS (
  SELECT p.oid, p.proname, p.pronargs, p.proargtypes::oid[] AS types, p.proargnames AS names
    FROM pg_proc p
   WHERE p.pronamespace = 'personalize'::regnamespace AND p.prorettype <> 'trigger'::regtype
     AND p.proname <> '_apply_privileges'
), arg AS (
  SELECT fn.oid, fn.proname, j, fn.names[j] AS name,
         CASE WHEN fn.types[j - 1] = 'anyarray'::regtype THEN 'jsonb[]' ELSE format_type(fn.types[j - 1], NULL) END AS t
    FROM fn, generate_series(1, fn.pronargs) j
), sample AS (   -- a sensible value for every argument, by name and type
  SELECT a.*, CASE
    WHEN a.t = 'text' THEN quote_literal(CASE a.name
        WHEN 'user_id' THEN 'U0000001' WHEN 'item_id' THEN 'P0000001' WHEN 'experiment' THEN 'layout'
        WHEN 'segment' THEN 'big_spenders' WHEN 'channel' THEN 'email' WHEN 'model' THEN 'default'
        WHEN 'model_name' THEN 'default' WHEN 'exclude' THEN 'purchased' WHEN 'solver' THEN 'cg'
        WHEN 'category' THEN 'cameras' WHEN 'event_type' THEN 'view' WHEN 'placement' THEN 'home'
        WHEN 'error' THEN 'smtp 451' WHEN 'tz' THEN 'Europe/Paris' WHEN 'title' THEN 'A title'
        WHEN 'definition' THEN '{"bought": {"within": "30 days"}}' WHEN 'schema' THEN '{"type": "object"}'
        WHEN 'template' THEN '{"to": "{{user_id}}", "items": "{{recommendations}}"}'
        WHEN 'variants' THEN '[{"name": "a", "weight": 1}, {"name": "b", "weight": 1, "model": "second"}]'
        WHEN 'event' THEN '{"type": "view", "user_id": "u1", "item_id": "P0000001"}'
        ELSE 'x' END) || '::text'
    WHEN a.t = 'text[]' AND a.name = 'events' THEN
        quote_literal(ARRAY['{"type": "view", "user_id": "u2", "item_id": "P0000002"}']::text) || '::text[]'
    WHEN a.t = 'text[]' THEN quote_literal(CASE a.name
        WHEN 'users' THEN '{U0000001,U0000002,nobody}' WHEN 'types' THEN '{view,nope}'
        ELSE '{P0000001,P0000002,P0000003}' END) || '::text[]'
    WHEN a.t = 'jsonb[]' THEN
        quote_literal(ARRAY['{"type": "view", "user_id": "u2", "item_id": "P0000002"}']::text) || '::jsonb[]'
    WHEN a.t = 'jsonb' THEN quote_literal(CASE a.name
        WHEN 'definition' THEN '{"bought": {"within": "30 days"}}' WHEN 'items' THEN '[{"item_id": "Z1", "price": 2}]'
        WHEN 'properties' THEN '{"price": 2.5, "quantity": 3}' WHEN 'attributes' THEN '{"colour": "red"}'
        ELSE '{"type": "view", "user_id": "u1", "item_id": "P0000001"}' END) || '::jsonb'
    WHEN a.t = 'integer' THEN CASE a.name WHEN 'factors' THEN '2' WHEN 'iterations' THEN '1' WHEN 'users' THEN '20'
        WHEN 'items' THEN '10' WHEN 'days' THEN '2' ELSE '3' END
    WHEN a.t = 'bigint' THEN CASE a.name WHEN 'events' THEN '20::bigint' ELSE '1::bigint' END
    WHEN a.t = 'bigint[]' THEN '''{1,2,3}''::bigint[]'
    WHEN a.t = 'real' THEN CASE a.name WHEN 'regularization' THEN '0.1::real' ELSE '1::real' END
    WHEN a.t = 'double precision' THEN '0.2::float8'
    WHEN a.t = 'numeric' THEN '9.99::numeric'
    WHEN a.t = 'interval' THEN CASE a.name WHEN 'visibility' THEN '''30 seconds''::interval'
        WHEN 'retry_in' THEN '''1 minute''::interval' ELSE '''30 days''::interval' END
    WHEN a.t = 'timestamp with time zone' THEN CASE a.name WHEN 'start' THEN '''2026-01-01''::timestamptz' ELSE 'now()' END
    WHEN a.t = 'time without time zone' THEN CASE a.name WHEN 'quiet_start' THEN '''22:00''::time' ELSE '''07:00''::time' END
    WHEN a.t = 'boolean' THEN 'false'
    WHEN a.t = 'uuid' THEN 'gen_random_uuid()'
    WHEN a.t IN ('oid', 'regclass') THEN quote_literal(CASE
        WHEN a.proname LIKE '%online_retail' THEN 'smith_src_retail'
        WHEN a.proname LIKE '%retailrocket' THEN 'smith_src_rr' ELSE 'smith_src_events' END)
        || '::regclass' || CASE WHEN a.t = 'oid' THEN '::oid' ELSE '' END
    ELSE 'NULL::' || a.t END AS v
    FROM arg a
), edge(t, v) AS (VALUES
  ('text', $$''::text$$), ('text', $$repeat('x', 100000)$$), ('text', $$('a' || chr(1) || 'b')$$),
  ('text', $$'NaN'::text$$), ('text', $$'{'::text$$), ('text', $$' '::text$$),
  ('integer', '0'), ('integer', '(-1)'), ('integer', '2147483647'), ('integer', '(-2147483648)'),
  ('bigint', '0::bigint'), ('bigint', '(-1)::bigint'), ('bigint', '9223372036854775807::bigint'),
  ('bigint', '(-9223372036854775808)::bigint'),
  ('real', $$'NaN'::real$$), ('real', $$'Infinity'::real$$), ('real', $$'-Infinity'::real$$),
  ('real', '3e38::real'), ('real', '1e-45::real'), ('real', '(-0.0)::real'),
  ('double precision', $$'NaN'::float8$$), ('double precision', $$'Infinity'::float8$$),
  ('double precision', '(-1)::float8'), ('double precision', '1e-300::float8'), ('double precision', '1e308::float8'),
  ('numeric', $$'NaN'::numeric$$), ('numeric', '1e300::numeric'), ('numeric', '(-1)::numeric'),
  ('numeric', $$'Infinity'::numeric$$),
  ('interval', $$'0'::interval$$), ('interval', $$'-1 day'::interval$$), ('interval', $$'178000000 years'::interval$$),
  ('interval', $$'-178000000 years'::interval$$), ('interval', $$'1 microsecond'::interval$$),
  ('interval', $$'1 month -30 days'::interval$$),
  ('timestamp with time zone', $$'infinity'::timestamptz$$), ('timestamp with time zone', $$'-infinity'::timestamptz$$),
  ('timestamp with time zone', $$'4713-01-01 BC'::timestamptz$$),
  ('timestamp with time zone', $$'294276-12-31 23:59:59+00'::timestamptz$$),
  ('timestamp with time zone', $$'270000-01-01'::timestamptz$$), ('timestamp with time zone', $$'1970-01-01'::timestamptz$$),
  ('jsonb', $$'null'::jsonb$$), ('jsonb', $$'[]'::jsonb$$), ('jsonb', $$'{}'::jsonb$$), ('jsonb', $$'"x"'::jsonb$$),
  ('jsonb', $$'1e400'::jsonb$$), ('jsonb', $$(repeat('[', 3000) || repeat(']', 3000))::jsonb$$),
  ('jsonb', $$'{"type": "view", "user_id": "u", "item_id": "i", "properties": {"price": 1e400, "quantity": -1e400}}'::jsonb$$),
  ('jsonb', $$(SELECT jsonb_object_agg('k' || g, g) FROM generate_series(1, 20000) g)$$),
  ('jsonb[]', $$'{}'::jsonb[]$$), ('jsonb[]', $$'{NULL}'::jsonb[]$$), ('jsonb[]', $$'{{"{}","[]"},{"1","null"}}'::jsonb[]$$),
  ('jsonb[]', $$'[0:0]={"{}"}'::jsonb[]$$),
  ('text[]', $$'{}'::text[]$$), ('text[]', $$'{NULL}'::text[]$$), ('text[]', $$'{{a,b},{c,d}}'::text[]$$),
  ('text[]', $$'[0:1]={P0000001,P0000002}'::text[]$$),
  ('text[]', $$ARRAY(SELECT 'P' || lpad(g::text, 7, '0') FROM generate_series(1, 20000) g)$$),
  ('bigint[]', $$'{}'::bigint[]$$), ('bigint[]', $$'{NULL}'::bigint[]$$), ('bigint[]', $$'{{1,2},{3,4}}'::bigint[]$$),
  ('boolean', 'true'),
  ('uuid', $$'00000000-0000-0000-0000-000000000000'::uuid$$),
  ('time without time zone', $$'24:00'::time$$), ('time without time zone', $$'00:00'::time$$),
  ('oid', '0::oid'), ('oid', $$'pg_class'::regclass::oid$$), ('oid', '4294967295::oid'),
  ('regclass', '0::regclass'), ('regclass', $$'pg_class'::regclass$$)
), variant AS (   -- (function, argument replaced (0: all of them NULL), its value)
  SELECT s.oid, 0 AS j, NULL::text AS v FROM sample s GROUP BY s.oid
  UNION ALL SELECT s.oid, s.j, 'NULL::' || s.t FROM sample s
  UNION ALL SELECT s.oid, s.j, e.v FROM sample s JOIN edge e ON e.t = s.t
), calls AS (
  SELECT fn.proname, x.j, x.v,
         (SELECT string_agg(CASE WHEN x.j = 0 THEN 'NULL::' || s.t WHEN s.j = x.j THEN x.v ELSE s.v END, ', ' ORDER BY s.j)
            FROM sample s WHERE s.oid = x.oid) AS args
    FROM variant x JOIN fn ON fn.oid = x.oid
)
SELECT format('SELECT * FROM personalize.%I(%s);', proname, args) FROM calls ORDER BY proname, j, v;
SQL
# Argument-less functions too (once each).
psql -X -At -d $DB -c "SELECT format('SELECT * FROM personalize.%I();', proname) FROM pg_proc
                        WHERE pronamespace = 'personalize'::regnamespace AND pronargs = 0
                          AND prorettype <> 'trigger'::regtype AND proname <> '_apply_privileges'" >> "$OUT/edges.sql"
n_edges=$(grep -c . "$OUT/edges.sql")
t0=$SECONDS
psql -X -q -d "host=$PP_SOCK port=$PP_PORT dbname=$DB user=$SMITH_USER" -v ON_ERROR_STOP=0 \
    -f "$OUT/edges.sql" > /dev/null 2> "$OUT/edges.err" || true
echo "edges: $n_edges calls in $((SECONDS - t0)) s, $(grep -c 'ERROR' "$OUT/edges.err" || true) errors"
echo "edges $n_edges 0" >> "$OUT/phases"

say "Server log since the first query"
as_root tail -c +"$((log_start + 1))" "$PP_RUN/postgres.log" > "$OUT/server.log"
alive=$(psql -X -At -d $DB -c "SELECT 'up'" 2>/dev/null || echo down)
# One record per log entry: continuation lines (a statement over several lines) are joined
# with the entry they belong to. Fields: pid, sqlstate, level, text.
awk '
    /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9:.]+ [A-Z]+ \[[0-9]+\] [0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z] [A-Z]+:  / {
        if (rec != "") print rec
        pid = $4; gsub(/[][]/, "", pid)
        level = $6; sub(/:$/, "", level)
        text = $0; sub(/^[^]]*\] [0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z] [A-Z]+:  /, "", text)
        sub(/^[0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z]: /, "", text)   # verbose: the SQLSTATE again
        gsub(/\t/, " ", text)
        rec = pid "\t" $5 "\t" level "\t" text; next }
    { if (rec != "") { line = $0; gsub(/\t/, " ", line); rec = rec "\\n" line } }
    END { if (rec != "") print rec }' "$OUT/server.log" > "$OUT/records.tsv"
# Exit code 1 is a normal FATAL exit (a parallel worker of a failed query logs it); a signal,
# another code or a PANIC makes the postmaster reset every backend.
CRASH_RE="\] [0-9A-Z]{5} (LOG:  .*(terminated by signal|was terminated by exception|exited with exit code ([2-9]|[1-9][0-9])|all server processes terminated|reinitializing)|PANIC:  )"
crashes=$(grep -cE "$CRASH_RE" "$OUT/server.log" || true)
total=0
while read -r name ran rc; do total=$((total + ran)); done < "$OUT/phases"
echo "queries run: $total ($(awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}' "$OUT/phases"))"
echo "errors logged: $(awk -F'\t' '$3 == "ERROR"' "$OUT/records.tsv" | wc -l)"
echo "errors by SQLSTATE (top 10):"
awk -F'\t' '$3 == "ERROR" {n[$2]++; if (!($2 in ex)) ex[$2] = substr($4, 1, 90)} END {for (s in n) printf "%8d  %s  e.g. %s\n", n[s], s, ex[s]}' \
    "$OUT/records.tsv" | sort -rn | head -10
echo "server: $alive; backend crashes (terminated by signal / PANIC / reinitializing lines in the log): $crashes"
[ "$crashes" = 0 ] || grep -E "$CRASH_RE" "$OUT/server.log" | head -20

# XX000: the ERROR, then the CONTEXT and STATEMENT entries of the same backend that follow it.
awk -F'\t' '
    $3 == "ERROR" { if (cur != "") print cur; cur = ""; if ($2 == "XX000") { cur = "ERROR: " $4; pid = $1 } ; next }
    cur != "" && $1 == pid && ($3 == "CONTEXT" || $3 == "STATEMENT" || $3 == "DETAIL" || $3 == "HINT" || $3 == "LOCATION") {
        cur = cur "\t" $3 ": " $4; next }
    { if (cur != "") print cur; cur = "" }
    END { if (cur != "") print cur }' "$OUT/records.tsv" > "$OUT/xx000.tsv"
# Ours: raised from Rust (a pgrx panic's LOCATION is a .rs file; PostgreSQL's are .c files) or
# inside one of our functions (CONTEXT).
grep -E "LOCATION: [^	]*[.]rs:|CONTEXT: [^	]*personalize" "$OUT/xx000.tsv" > "$OUT/xx000_personalize.tsv" || true
n_xx=$(wc -l < "$OUT/xx000.tsv")
n_ours=$(wc -l < "$OUT/xx000_personalize.tsv")
echo "XX000 (internal error): $n_xx, of which $n_ours raised by the extension (Rust LOCATION or personalize in CONTEXT)"
if [ "$n_xx" -gt 0 ]; then
    echo "XX000 by message:"
    cut -f1 "$OUT/xx000.tsv" | cut -c1-150 | sort | uniq -c | sort -rn | head -20
fi
if [ "$n_ours" -gt 0 ]; then
    echo "XX000 raised by the extension (first of each message; all in $OUT/xx000_personalize.tsv):"
    awk -F'\t' '!seen[substr($1, 1, 150)]++' "$OUT/xx000_personalize.tsv" | head -20 |
        awk -F'\t' '{print "----"; for (i = 1; i <= NF; i++) print substr($i, 1, 1500)}' | sed 's/\\n/\n    /g'
fi
if [ "$crashes" = 0 ] && [ "$alive" = up ] && [ "$n_ours" = 0 ]; then
    say "PASS: zero backend crashes, no internal error from personalize"
else
    say "FAIL: $crashes crash line(s), server $alive, $n_ours internal error(s) raised by the extension (logs in $OUT)"
    exit 1
fi
