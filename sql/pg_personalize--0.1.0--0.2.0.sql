-- pg_personalize 0.1.0 → 0.2.0: least-privilege roles and grants, every function's search_path
-- pinned. tests/upgrade.sh checks that an upgraded database has exactly the catalogue of a fresh
-- 0.2.0 install and passes the regression suite.
\echo Use "ALTER EXTENSION pg_personalize UPDATE TO '0.2.0'" to load this file. \quit

-- search_path pinned on the functions 0.1.0 left unpinned (SQL wrappers qualified every name;
-- now SECURITY DEFINER ones need the pin, and a uniform rule is easier to check).
ALTER FUNCTION personalize.track(jsonb, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize.track_batch(jsonb[], boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize.validate_event(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize.import_events(regclass, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize.import_online_retail(regclass) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize.import_retailrocket(regclass) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize.segment_sql(jsonb, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize._invalidate_experiment_cache() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize._plan_schema_problem(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize._segment_hint() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize._segment_problem(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize._template_problem(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize._variants_problem(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize.synthetic_events(bigint, integer, integer, bigint, timestamptz, integer)
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION personalize.synthetic_items(integer, bigint) SET search_path = pg_catalog, pg_temp;

-- Roles and grants: the same function the 0.2.0 install script ends with.
CREATE FUNCTION personalize._apply_privileges() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', '_apply_privileges_wrapper';
COMMENT ON FUNCTION personalize._apply_privileges() IS 'Internal: creates the roles personalize_reader, personalize_writer, personalize_worker and personalize_admin when missing, revokes EXECUTE from PUBLIC, makes the reader/writer/worker functions SECURITY DEFINER and grants them; run by the install and every upgrade script';
SELECT personalize._apply_privileges();
