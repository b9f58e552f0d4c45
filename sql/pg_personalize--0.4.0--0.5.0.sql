-- pg_personalize 0.4.0 → 0.5.0: cheaper campaign triggering. The quiet-hours function loses
-- its SET clause (every name in it is qualified) so the planner inlines it; the campaign
-- trigger prepares each segment once per backend, so the segments get a trigger that makes
-- every backend drop them when they change; the queue index's predicate keeps it out of the
-- trigger's plans. tests/upgrade.sh
-- checks that an updated database has exactly the catalogue of a fresh 0.5.0 install and
-- passes the regression suite.
\echo Use "ALTER EXTENSION pg_personalize UPDATE TO '0.5.0'" to load this file. \quit

DROP INDEX personalize.outbox_queue_idx;
CREATE INDEX outbox_queue_idx ON personalize.outbox (channel, visible_at)
    WHERE state IN ('pending', 'claimed') AND visible_at IS NOT NULL;

CREATE OR REPLACE FUNCTION personalize._after_quiet_hours(t timestamptz, quiet_start time, quiet_end time, tz text)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN quiet_start IS NULL OR quiet_end IS NULL OR quiet_start OPERATOR(pg_catalog.=) quiet_end THEN t
        WHEN quiet_start OPERATOR(pg_catalog.<) quiet_end THEN
            CASE WHEN CAST(pg_catalog.timezone(tz, t) AS pg_catalog.time) OPERATOR(pg_catalog.>=) quiet_start
                  AND CAST(pg_catalog.timezone(tz, t) AS pg_catalog.time) OPERATOR(pg_catalog.<) quiet_end
                 THEN pg_catalog.timezone(tz, CAST(pg_catalog.timezone(tz, t) AS pg_catalog.date)
                                              OPERATOR(pg_catalog.+) quiet_end)
                 ELSE t END
        ELSE  -- the quiet hours wrap midnight, e.g. 21:00 to 08:00
            CASE WHEN CAST(pg_catalog.timezone(tz, t) AS pg_catalog.time) OPERATOR(pg_catalog.>=) quiet_start
                 THEN pg_catalog.timezone(tz, (CAST(pg_catalog.timezone(tz, t) AS pg_catalog.date)
                                               OPERATOR(pg_catalog.+) 1) OPERATOR(pg_catalog.+) quiet_end)
                 WHEN CAST(pg_catalog.timezone(tz, t) AS pg_catalog.time) OPERATOR(pg_catalog.<) quiet_end
                 THEN pg_catalog.timezone(tz, CAST(pg_catalog.timezone(tz, t) AS pg_catalog.date)
                                              OPERATOR(pg_catalog.+) quiet_end)
                 ELSE t END
    END
$$;

CREATE FUNCTION personalize._invalidate_segment_cache() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', '_invalidate_segment_cache_wrapper';

CREATE FUNCTION personalize._segments_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM personalize._invalidate_segment_cache();
    RETURN NULL;
END
$$;

CREATE TRIGGER segments_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.segments
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._segments_changed();

COMMENT ON FUNCTION personalize._invalidate_segment_cache() IS 'Internal: makes every backend drop the segments it prepared for the campaign trigger at commit';
COMMENT ON FUNCTION personalize._segments_changed() IS 'Trigger: tells every backend that the segments changed';

SELECT personalize._apply_privileges();
