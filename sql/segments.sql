------------------------------------------------------------------------------------------
-- Segments: predicates over the event log (usable in any WHERE clause) and named segments.
-- A purchase is an event whose type has is_purchase; a view is an event of type 'view'. An
-- event is in a category when its item is (personalize.items) or its properties say so.
-- Spend is price (the event's, else the catalogue's) times quantity (default 1).
------------------------------------------------------------------------------------------

CREATE FUNCTION personalize.bought(user_id text, category text DEFAULT NULL, within interval DEFAULT NULL,
                                   item_id text DEFAULT NULL) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM personalize.events e LEFT JOIN personalize.items i ON i.item_id = e.item_id
         WHERE e.user_id = bought.user_id
           AND e.event_type = ANY (ARRAY(SELECT t.event_type FROM personalize.event_types t WHERE t.is_purchase))
           AND (bought.within IS NULL OR e.occurred_at > now() - bought.within)
           AND (bought.item_id IS NULL OR e.item_id = bought.item_id)
           AND (bought.category IS NULL OR e.properties ->> 'category' = bought.category
                OR i.category = bought.category))
$$;
COMMENT ON FUNCTION personalize.bought(text, text, interval, text) IS 'Whether the user bought (an is_purchase event type) anything, in a category, an item, within an interval (NULL arguments: no restriction)';

CREATE FUNCTION personalize.viewed(user_id text, category text DEFAULT NULL, within interval DEFAULT NULL,
                                   item_id text DEFAULT NULL) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM personalize.events e LEFT JOIN personalize.items i ON i.item_id = e.item_id
         WHERE e.user_id = viewed.user_id AND e.event_type = 'view'
           AND (viewed.within IS NULL OR e.occurred_at > now() - viewed.within)
           AND (viewed.item_id IS NULL OR e.item_id = viewed.item_id)
           AND (viewed.category IS NULL OR e.properties ->> 'category' = viewed.category
                OR i.category = viewed.category))
$$;
COMMENT ON FUNCTION personalize.viewed(text, text, interval, text) IS 'Whether the user viewed (event type view) anything, in a category, an item, within an interval';

CREATE FUNCTION personalize.viewed_without_buying(user_id text, category text DEFAULT NULL,
                                                  within interval DEFAULT NULL, item_id text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT personalize.viewed(user_id, category, within, item_id)
       AND NOT personalize.bought(user_id, category, within, item_id)
$$;
COMMENT ON FUNCTION personalize.viewed_without_buying(text, text, interval, text) IS 'Viewed in the scope (category, item, within) and bought nothing in the same scope';

CREATE FUNCTION personalize.event_count(user_id text, event_type text, within interval DEFAULT NULL)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) FROM personalize.events e
     WHERE e.user_id = event_count.user_id AND e.event_type = event_count.event_type
       AND (event_count.within IS NULL OR e.occurred_at > now() - event_count.within)
$$;
COMMENT ON FUNCTION personalize.event_count(text, text, interval) IS 'How many events of a type the user has (within an interval)';

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

CREATE FUNCTION personalize.total_spend(user_id text, within interval DEFAULT NULL) RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE(sum(personalize._event_value(e.properties, i.price)), 0)
      FROM personalize.events e LEFT JOIN personalize.items i ON i.item_id = e.item_id
     WHERE e.user_id = total_spend.user_id
       AND e.event_type = ANY (ARRAY(SELECT t.event_type FROM personalize.event_types t WHERE t.is_purchase))
       AND (total_spend.within IS NULL OR e.occurred_at > now() - total_spend.within)
$$;
COMMENT ON FUNCTION personalize.total_spend(text, interval) IS 'Sum of the user''s purchase values (price times quantity) within an interval; 0 without purchases';

CREATE FUNCTION personalize.average_order_value(user_id text, within interval DEFAULT NULL) RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT sum(personalize._event_value(e.properties, i.price))
           / NULLIF(count(DISTINCT COALESCE(e.properties ->> 'order_id', CAST(e.event_id AS text))), 0)
      FROM personalize.events e LEFT JOIN personalize.items i ON i.item_id = e.item_id
     WHERE e.user_id = average_order_value.user_id
       AND e.event_type = ANY (ARRAY(SELECT t.event_type FROM personalize.event_types t WHERE t.is_purchase))
       AND (average_order_value.within IS NULL OR e.occurred_at > now() - average_order_value.within)
$$;
COMMENT ON FUNCTION personalize.average_order_value(text, interval) IS 'Total spend divided by the number of orders (order_id property, else one order per event); NULL without purchases';

CREATE FUNCTION personalize.last_seen(user_id text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT max(e.occurred_at) FROM personalize.events e WHERE e.user_id = last_seen.user_id
$$;
COMMENT ON FUNCTION personalize.last_seen(text) IS 'Time of the user''s newest event (NULL: never seen)';

CREATE FUNCTION personalize.days_since_last_purchase(user_id text) RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT date_part('epoch', now() - max(e.occurred_at)) / 86400
      FROM personalize.events e
     WHERE e.user_id = days_since_last_purchase.user_id
       AND e.event_type = ANY (ARRAY(SELECT t.event_type FROM personalize.event_types t WHERE t.is_purchase))
$$;
COMMENT ON FUNCTION personalize.days_since_last_purchase(text) IS 'Days (fractional) since the user''s newest purchase; NULL if they never bought';

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
