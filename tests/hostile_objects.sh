#!/usr/bin/env bash
# Hostile objects planted before CREATE EXTENSION are never called.
#
# In schema public, before the extension exists: a shadow of every overload of every
# pg_catalog function whose name appears in the extension's SQL (sql/ and the Rust sources), of
# the common operators on the types it uses, and views named like its tables. Every shadow
# bumps a sequence (non-transactional: an exception handler swallowing the error cannot hide
# the call) and raises. The database's search_path puts public BEFORE pg_catalog, so any
# unqualified, unpinned reference would resolve to a shadow. Then the whole loop runs:
# install, events, training, serving, segments, campaigns, the outbox, experiments, imports.
# Also: a schema named personalize pre-created by another role is refused at CREATE EXTENSION.
source "$(dirname "$0")/../scripts/lib.sh"
start_cluster
db=pp_hostile
fresh_db $db
run() { psql -X -q -d $db -v ON_ERROR_STOP=1 -v ECHO=errors -v VERBOSITY=verbose "$@"; }

names=$(cat "$ROOT"/sql/*.sql "$ROOT"/src/*/*.rs \
        | grep -oE '\b[a-z_][a-z0-9_]*\s*\(' | tr -d ' (' | sort -u | paste -sd, -)

say "planting shadows in public"
run -v names="$names" <<'SQL'
SET client_min_messages = warning;
CREATE SEQUENCE public.hijack_calls;
CREATE TABLE public.planted (kind text, name text);
CREATE TEMP TABLE used_names AS SELECT unnest(string_to_array(:'names', ',')) AS name;
DO $plant$
DECLARE
    f record;
    args text;
    ret text;
    n int := 0;
BEGIN
    FOR f IN
        SELECT p.oid, p.proname, p.proretset, p.prorettype,
               pg_catalog.pg_get_function_identity_arguments(p.oid) AS identity_args
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'pg_catalog'::regnamespace
           AND p.prokind = 'f'
           AND p.proname IN (SELECT name FROM used_names)
           AND p.proname NOT IN ('nextval', 'format', 'string_to_array')  -- used by the shadows
           -- plpgsql can neither take nor return these pseudo-types
           AND NOT EXISTS (SELECT FROM unnest(p.proargtypes::oid[] || p.prorettype) t
                            WHERE t IN ('internal'::regtype, 'cstring'::regtype, '"any"'::regtype,
                                        'trigger'::regtype, 'event_trigger'::regtype,
                                        'language_handler'::regtype, 'fdw_handler'::regtype,
                                        'index_am_handler'::regtype, 'table_am_handler'::regtype,
                                        'tsm_handler'::regtype, 'anyrange'::regtype,
                                        'anymultirange'::regtype, 'anycompatiblerange'::regtype,
                                        'anycompatiblemultirange'::regtype, 'record'::regtype))
    LOOP
        ret := CASE WHEN f.proretset THEN 'SETOF ' ELSE '' END || f.prorettype::regtype::text;
        BEGIN
            EXECUTE format(
                'CREATE FUNCTION public.%I(%s) RETURNS %s LANGUAGE plpgsql
                 SET search_path = pg_catalog AS $body$
                 BEGIN
                     PERFORM pg_catalog.nextval(''public.hijack_calls'');
                     RAISE EXCEPTION ''hijacked: public.%s was called'';
                 END $body$', f.proname, f.identity_args, ret, f.proname);
            INSERT INTO public.planted VALUES ('function', f.proname || '(' || f.identity_args || ')');
        EXCEPTION WHEN OTHERS THEN
            NULL;  -- e.g. an overload whose polymorphic result plpgsql cannot declare
        END;
    END LOOP;

    -- Operators on the types the extension compares, combines and indexes into.
    FOR f IN
        SELECT o.oprname, o.oprleft::regtype::text AS l, o.oprright::regtype::text AS r,
               o.oprresult::regtype::text AS res
          FROM pg_catalog.pg_operator o
         WHERE o.oprnamespace = 'pg_catalog'::regnamespace
           AND o.oprname IN ('=', '<>', '<', '>', '<=', '>=', '||', '->', '->>', '@>', '<@',
                             '?', '+', '-', '*', '/', '~', '&&')
           AND o.oprleft IN ('text'::regtype, 'bigint'::regtype, 'integer'::regtype,
                             'jsonb'::regtype, 'timestamptz'::regtype, 'interval'::regtype,
                             'numeric'::regtype, 'double precision'::regtype, 'real'::regtype,
                             'text[]'::regtype, 'boolean'::regtype, 'uuid'::regtype,
                             'anyarray'::regtype, 'anycompatiblearray'::regtype)
           AND o.oprright <> 0
    LOOP
        n := n + 1;
        BEGIN
            EXECUTE format(
                'CREATE FUNCTION public.hijack_op_%s(%s, %s) RETURNS %s LANGUAGE plpgsql
                 SET search_path = pg_catalog AS $body$
                 BEGIN
                     PERFORM pg_catalog.nextval(''public.hijack_calls'');
                     RAISE EXCEPTION ''hijacked: operator public.%s'';
                 END $body$', n, f.l, f.r, f.res, f.oprname);
            EXECUTE format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.hijack_op_%s)',
                           f.oprname, f.l, f.r, n);
            INSERT INTO public.planted VALUES ('operator', f.l || ' ' || f.oprname || ' ' || f.r);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END LOOP;
END $plant$;

-- Views named like the extension's tables: reading one calls a shadow.
CREATE FUNCTION public.hijack_row() RETURNS int LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN PERFORM pg_catalog.nextval('public.hijack_calls'); RAISE EXCEPTION 'hijacked: a public table'; END $$;
DO $views$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'event_types', 'rejected_events', 'items', 'models',
                             'model_users', 'model_items', 'segments', 'campaigns', 'outbox',
                             'frequency_caps', 'experiments', 'exposures', 'evaluations']
    LOOP
        EXECUTE format('CREATE VIEW public.%I AS SELECT public.hijack_row() AS x', t);
        INSERT INTO public.planted VALUES ('view', t);
    END LOOP;
END $views$;
SQL
run -At -c "SELECT kind || 's: ' || count(*) FROM public.planted GROUP BY kind ORDER BY kind"
planted_functions=$(run -At -c "SELECT count(*) FROM public.planted WHERE kind = 'function'")
[ "$planted_functions" -gt 100 ] || { echo "FAIL: only $planted_functions shadows planted"; exit 1; }
# Shadows are live: with public first, a plain call reaches one.
if PGOPTIONS="-c search_path=public,pg_catalog" psql -X -q -d $db -c "SELECT now()" >/dev/null 2>&1; then
    echo "FAIL: the shadow of now() was not called"; exit 1
fi
run -c "ALTER SEQUENCE public.hijack_calls RESTART"
run -c "ALTER DATABASE $db SET search_path = public, pg_catalog"

say "the whole loop with public first on the search_path"
# Only extension calls here, with literal arguments: the test's own SQL must not reach a
# shadow either (no operators, no built-in functions).
run <<'SQL'
SHOW search_path;
CREATE EXTENSION pg_personalize;
SET personalize.training_threads = 1;
SET client_min_messages = warning;
SELECT * FROM personalize.generate_shop(5000, 300, 80, 5) \g /dev/null
SELECT * FROM personalize.train('default', 8, 3) \g /dev/null
SELECT * FROM personalize.train('second', 8, 2) \g /dev/null
SELECT * FROM personalize.evaluate('default', 5) \g /dev/null
SELECT * FROM personalize.recommend('U0000001', 5) \g /dev/null
SELECT * FROM personalize.recommend('U0000002', 5, 'default', 'none', '{P0000001}', NULL, false, false) \g /dev/null
SELECT * FROM personalize.recommend_for_session('{P0000001,P0000002}', 5) \g /dev/null
SELECT * FROM personalize.similar_items('P0000001', 5) \g /dev/null
SELECT * FROM personalize.rank_items('U0000001', '{P0000001,P0000002,P0000003}') \g /dev/null
SELECT * FROM personalize.explain_recommendation('U0000001', 'P0000002') \g /dev/null
SELECT personalize.bought('U0000001'), personalize.viewed('U0000001', 'cameras', '30 days'),
       personalize.viewed_without_buying('U0000001'), personalize.event_count('U0000001', 'view'),
       personalize.total_spend('U0000001'), personalize.average_order_value('U0000001'),
       personalize.last_seen('U0000001'), personalize.days_since_last_purchase('U0000001') \g /dev/null
INSERT INTO personalize.segments (name, definition)
VALUES ('lapsed', '{"all": [{"bought": {"within": "1000 days"}}, {"last_seen": {"not_within": "1 day"}}, {"not": {"total_spend": {"min": 100000}}}]}');
INSERT INTO personalize.segments (name, definition) VALUES ('viewers', '{"viewed": {"within": "1000 days"}}');
SELECT personalize.in_segment('U0000001', 'lapsed') \g /dev/null
SELECT count(*) FROM personalize.segment_members('lapsed') \g /dev/null
SELECT * FROM personalize.user_segments('U0000001') \g /dev/null
SELECT * FROM personalize.segment_sql('{"viewed": {"category": "cameras"}}') \g /dev/null
INSERT INTO personalize.campaigns (name, trigger_event_type, cancel_on, channel, template, recommendations, segment, cap_messages, cap_window, quiet_start, quiet_end)
VALUES ('browse', 'view', '{purchase}', 'email', '{"to": "{{user_id}}", "recs": "{{recommendations}}"}', 3, 'viewers', 5, '1 day', '03:00', '03:01');
INSERT INTO personalize.frequency_caps (channel, max_messages, "window") VALUES ('email', 10, '1 day');
SELECT personalize.track('{"type": "view", "user_id": "U0000001", "item_id": "P0000003"}') \g /dev/null
SELECT * FROM personalize.track_batch('{"{\"type\": \"view\", \"user_id\": \"U0000002\", \"item_id\": \"P0000004\"}","{\"type\": \"bogus\", \"user_id\": \"x\"}"}') \g /dev/null
SELECT personalize.validate_event('{"type": "view"}') \g /dev/null
SELECT personalize.track('{"type": "purchase", "user_id": "U0000002", "item_id": "P0000004", "properties": {"price": 10}}') \g /dev/null
SELECT * FROM personalize.claim_messages('email', 10) \g /dev/null
SELECT personalize.ack(1, '00000000-0000-0000-0000-000000000000') \g /dev/null
SELECT personalize.ack_batch('00000000-0000-0000-0000-000000000000', '{1,2}') \g /dev/null
SELECT personalize.fail(1, '00000000-0000-0000-0000-000000000000', 'smtp down') \g /dev/null
SELECT personalize.archive_messages('0 seconds') \g /dev/null
INSERT INTO personalize.experiments (name, variants, starts_at)
VALUES ('grid', '[{"name": "control", "weight": 1}, {"name": "b", "weight": 1, "model": "second"}]', '2020-01-01');
SELECT personalize.assign_variant('grid', 'U0000001'), personalize.variant_model('grid', 'U0000001'),
       personalize.log_exposure('grid', 'U0000001', 'home') \g /dev/null
SELECT * FROM personalize.experiment_report('grid') \g /dev/null
SELECT personalize.upsert_item('P9', 'cameras', 'Camera', '{}', true, 10) \g /dev/null
SELECT personalize.upsert_items('[{"item_id": "P10", "category": "lenses"}]') \g /dev/null
CREATE TABLE staging (type text, user_id text, item_id text);
INSERT INTO staging VALUES ('view', 'U9', 'P9');
SELECT * FROM personalize.import_events('staging') \g /dev/null
UPDATE personalize.event_types SET weight = 2 WHERE event_type OPERATOR(pg_catalog.=) 'view';
SELECT * FROM personalize.status \g /dev/null
SELECT personalize.prune_models('default', 0) \g /dev/null
SELECT * FROM personalize.recommend('U0000001', 5) \g /dev/null
SQL
calls=$(PGOPTIONS="-c search_path=pg_catalog" psql -X -At -d $db -c \
    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.hijack_calls")
messages=$(PGOPTIONS="-c search_path=pg_catalog" psql -X -At -d $db -c \
    "SELECT count(*) FROM personalize.outbox")
echo "shadow calls: $calls; outbox messages written: $messages"
[ "$calls" = 0 ] || { echo "FAIL: a planted object was called $calls times"; exit 1; }
[ "$messages" -gt 0 ] || { echo "FAIL: the campaign wrote nothing, so the trigger was not exercised"; exit 1; }

say "a schema named personalize owned by another role is refused"
fresh_db pp_hostile_schema
psql -X -q -d pp_hostile_schema -v ON_ERROR_STOP=1 <<'SQL'
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_pp_squatter;
CREATE ROLE regress_pp_squatter;
CREATE SCHEMA personalize AUTHORIZATION regress_pp_squatter;
SQL
out=$(psql -X -q -d pp_hostile_schema -v VERBOSITY=verbose -c "CREATE EXTENSION pg_personalize" 2>&1 || true)
echo "$out" | head -3
psql -X -q -d postgres -c "DROP DATABASE pp_hostile_schema" -c "DROP ROLE regress_pp_squatter"
echo "$out" | grep -q "42501" || { echo "FAIL: CREATE EXTENSION accepted a schema owned by another role"; exit 1; }
psql -X -q -d postgres -c "DROP DATABASE $db"
echo "PASS: no planted object was called; a squatted schema is refused"
