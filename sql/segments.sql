------------------------------------------------------------------------------------------
-- Segments: named definitions over the event log, compiled by core::segments. What each
-- predicate means is defined once there; the predicates as SQL functions (usable in any WHERE
-- clause) are generated from it into sql/segment_predicates.sql. Spend is price (the event's,
-- else the catalogue's) times quantity (default 1), defined here once for both.
------------------------------------------------------------------------------------------

-- The one definition of a purchase's value, used by the predicates and by compiled segments.
-- No SET clause, so the planner inlines it into their scans; every name is qualified instead.
CREATE FUNCTION personalize._event_value(properties jsonb, catalogue_price numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(CASE WHEN pg_catalog.jsonb_typeof(properties OPERATOR(pg_catalog.->) 'price')
                              OPERATOR(pg_catalog.=) 'number'
                         THEN CAST(properties OPERATOR(pg_catalog.->>) 'price' AS pg_catalog.numeric) END,
                    catalogue_price, 0)
         OPERATOR(pg_catalog.*)
           COALESCE(CASE WHEN pg_catalog.jsonb_typeof(properties OPERATOR(pg_catalog.->) 'quantity')
                              OPERATOR(pg_catalog.=) 'number'
                         THEN CAST(properties OPERATOR(pg_catalog.->>) 'quantity' AS pg_catalog.numeric) END, 1)
$$;
COMMENT ON FUNCTION personalize._event_value(jsonb, numeric) IS 'Internal: one purchase event''s value: price (event, else catalogue) times quantity (default 1)';

CREATE FUNCTION personalize._segments_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
BEGIN
    problem := personalize._segment_problem(CAST(NEW.definition AS text));
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid definition for segment "%": %', pg_catalog.left(NEW.name, 100), problem
            USING ERRCODE = 'invalid_parameter_value', HINT = personalize._segment_hint();
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION personalize._segments_before_write() IS 'Trigger: checks a segment definition on write';

CREATE TRIGGER segments_before_write
    BEFORE INSERT OR UPDATE ON personalize.segments
    FOR EACH ROW EXECUTE FUNCTION personalize._segments_before_write();

-- claim_messages() prepares each segment it checks once per backend; a change to the
-- segments makes every backend drop them at its next transaction (relcache message).
CREATE FUNCTION personalize._segments_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM personalize._invalidate_segment_cache();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION personalize._segments_changed() IS 'Trigger: tells every backend that the segments changed';

CREATE TRIGGER segments_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.segments
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._segments_changed();

CREATE FUNCTION personalize.segment_sql(definition jsonb, one_user boolean DEFAULT false)
RETURNS TABLE (sql text, params text[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize._segment_sql(CAST(definition AS pg_catalog.text), one_user) $$;
COMMENT ON FUNCTION personalize.segment_sql(jsonb, boolean) IS 'The parameterised SQL a segment definition compiles to (one_user: the in_segment form, $1 = user), and its parameter values ($2)';

-- The Rust functions' comments (their code: see CONTRIBUTING.md's function table).
COMMENT ON FUNCTION personalize.in_segment(text, text) IS 'Whether a user is in a named segment now';
COMMENT ON FUNCTION personalize.segment_members(text) IS 'Every user with at least one event who is in a named segment, sorted';
COMMENT ON FUNCTION personalize.user_segments(text) IS 'Names of the segments a user is in, sorted';
COMMENT ON FUNCTION personalize._segment_sql(text, boolean) IS 'Internal: segment_sql() on the definition''s JSON text';
COMMENT ON FUNCTION personalize._segment_members_among(text, text[]) IS 'Internal: the members of a named segment among the given users (one set query, as claim_messages() checks a campaign''s segment)';
COMMENT ON FUNCTION personalize._segment_problem(text) IS 'Internal: why a segment definition is refused, NULL when valid';
COMMENT ON FUNCTION personalize._segment_hint() IS 'Internal: the hint shown under a refused segment definition';
COMMENT ON FUNCTION personalize._invalidate_segment_cache() IS 'Internal: makes every backend drop the segments it prepared for claim_messages() at commit';
