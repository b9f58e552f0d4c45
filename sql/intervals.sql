------------------------------------------------------------------------------------------
-- Interval columns checked by what they do (see src/core/intervals.rs): no negative part and
-- at most their limit in any calendar reading. The triggers pass (column, limit, 'zero' when
-- 0 is allowed) triples; the tables' own CHECKs compare intervals as 30-day months only.
------------------------------------------------------------------------------------------

CREATE FUNCTION personalize._durations_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    row_json jsonb := pg_catalog.to_jsonb(NEW);
    i integer := 0;
BEGIN
    WHILE i < TG_NARGS LOOP
        PERFORM personalize._check_duration(
            TG_TABLE_NAME || '.' || TG_ARGV[i],
            CAST(row_json OPERATOR(pg_catalog.->>) TG_ARGV[i] AS pg_catalog.interval),
            CAST(TG_ARGV[i + 1] AS pg_catalog.interval),
            TG_ARGV[i + 2] OPERATOR(pg_catalog.=) 'zero');
        i := i + 3;
    END LOOP;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION personalize._durations_before_write() IS 'Trigger: checks the interval columns named by its arguments (column, limit, ''zero'' when 0 is allowed) with _check_duration';

-- The Rust functions' comments (their code: see CONTRIBUTING.md's function table).
COMMENT ON FUNCTION personalize._check_duration(text, interval, interval, boolean, text) IS 'Internal: raises 22023 unless the interval is a duration from 0 to max with no negative part, counting a month as up to 31 days and a year as up to 366 (what it does to a timestamp, not how intervals compare)';
