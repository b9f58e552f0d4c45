------------------------------------------------------------------------------------------
-- Tracking plan upkeep
------------------------------------------------------------------------------------------

CREATE TRIGGER event_types_durations
    BEFORE INSERT OR UPDATE ON personalize.event_types
    FOR EACH ROW EXECUTE FUNCTION personalize._durations_before_write('half_life', '36600 days', '');

CREATE FUNCTION personalize._event_types_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
BEGIN
    problem := personalize._plan_schema_problem(CAST(NEW.properties_schema AS pg_catalog.text));
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid properties_schema for event type "%": %', pg_catalog.left(NEW.event_type, 100), problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'properties_schema is a JSON Schema for the properties object, e.g. '
                      || '{"type": "object", "properties": {"price": {"type": "number"}}}';
    END IF;
    IF TG_OP = 'INSERT' THEN
        -- A shop's own row for a type replaces the default one (this is also what makes a
        -- pg_dump restore work: CREATE EXTENSION inserts the defaults, the dump the shop's rows).
        IF NEW.origin = 'shop' THEN
            DELETE FROM personalize.event_types t
             WHERE t.event_type OPERATOR(pg_catalog.=) NEW.event_type
               AND t.origin OPERATOR(pg_catalog.=) 'default';
        END IF;
    ELSE
        NEW.origin := 'shop';
    END IF;
    NEW.updated_at := pg_catalog.now();
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION personalize._event_types_before_write() IS 'Trigger: validates a tracking-plan schema on write and tracks default vs shop rows';

CREATE TRIGGER event_types_before_write
    BEFORE INSERT OR UPDATE ON personalize.event_types
    FOR EACH ROW EXECUTE FUNCTION personalize._event_types_before_write();

CREATE FUNCTION personalize._event_types_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Every backend drops its compiled plan when this statement commits (relcache message).
    PERFORM personalize._invalidate_plan_cache();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION personalize._event_types_changed() IS 'Trigger: tells every backend to recompile the tracking plan';

CREATE TRIGGER event_types_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.event_types
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._event_types_changed();

------------------------------------------------------------------------------------------
-- The default tracking plan for a standard shop. Weights: view < add_to_cart < purchase.
-- Property schemas forbid unknown properties, as a tracking plan should: add a property by
-- updating the schema (plain SQL on personalize.event_types).
------------------------------------------------------------------------------------------

INSERT INTO personalize.event_types
    (event_type, description, requires_item, weight, half_life, origin, is_purchase, properties_schema)
VALUES
('view', 'A product page view', true, 1, '14 days', 'default', false,
 '{"type": "object", "additionalProperties": false, "properties": {
    "category": {"type": "string", "maxLength": 200},
    "price": {"type": "number", "minimum": 0},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "source": {"type": "string", "maxLength": 200},
    "list_id": {"type": ["string", "integer"], "maxLength": 200},
    "position": {"type": "integer", "minimum": 0},
    "experiment": {"type": "string"}, "variant": {"type": "string"}, "placement": {"type": "string"}}}'),
('add_to_cart', 'A product added to the cart', true, 4, '30 days', 'default', false,
 '{"type": "object", "additionalProperties": false, "properties": {
    "category": {"type": "string", "maxLength": 200},
    "price": {"type": "number", "minimum": 0},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "quantity": {"type": "integer", "minimum": 1, "maximum": 100000},
    "cart_id": {"type": ["string", "integer"], "maxLength": 200},
    "experiment": {"type": "string"}, "variant": {"type": "string"}, "placement": {"type": "string"}}}'),
('remove_from_cart', 'A product removed from the cart', true, 0, '30 days', 'default', false,
 '{"type": "object", "additionalProperties": false, "properties": {
    "quantity": {"type": "integer", "minimum": 1, "maximum": 100000},
    "cart_id": {"type": ["string", "integer"], "maxLength": 200}}}'),
('checkout', 'Checkout started for the whole cart', false, 0, '30 days', 'default', false,
 '{"type": "object", "additionalProperties": false, "properties": {
    "order_id": {"type": ["string", "integer"], "maxLength": 200},
    "value": {"type": "number", "minimum": 0},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "cart_id": {"type": ["string", "integer"], "maxLength": 200}}}'),
('purchase', 'One purchased line (one item) of an order', true, 10, '180 days', 'default', true,
 '{"type": "object", "additionalProperties": false, "properties": {
    "order_id": {"type": ["string", "integer"], "maxLength": 200},
    "category": {"type": "string", "maxLength": 200},
    "price": {"type": "number", "minimum": 0},
    "quantity": {"type": "integer", "minimum": 1, "maximum": 1000000},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "country": {"type": "string", "maxLength": 100},
    "experiment": {"type": "string"}, "variant": {"type": "string"}, "placement": {"type": "string"}}}'),
('refund', 'A purchased line cancelled or refunded', true, 0, '180 days', 'default', false,
 '{"type": "object", "additionalProperties": false, "properties": {
    "order_id": {"type": ["string", "integer"], "maxLength": 200},
    "price": {"type": "number"},
    "quantity": {"type": "integer", "minimum": 1, "maximum": 1000000},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "country": {"type": "string", "maxLength": 100},
    "reason": {"type": "string", "maxLength": 500}}}'),
('search', 'A site search', false, 0, '7 days', 'default', false,
 '{"type": "object", "additionalProperties": false, "required": ["query"], "properties": {
    "query": {"type": "string", "minLength": 1, "maxLength": 500},
    "results": {"type": "integer", "minimum": 0}}}');

------------------------------------------------------------------------------------------
-- Tracking: the jsonb-facing wrappers. The Rust functions take jsonb as text because jsonb
-- holds numbers and nesting serde_json refuses; parsing it ourselves turns those into
-- violations instead of errors.
------------------------------------------------------------------------------------------

CREATE FUNCTION personalize.track(event jsonb, strict boolean DEFAULT false) RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize._track_one(CAST(event AS pg_catalog.text), strict) $$;
COMMENT ON FUNCTION personalize.track(jsonb, boolean) IS 'Tracks one event: stores it in personalize.events and returns its event_id (the stored event''s id for a retry: same user, type, client_event_id, item and properties), or quarantines it in personalize.rejected_events and returns NULL. strict => true raises instead (SQLSTATE 23514).';

CREATE FUNCTION personalize.track_batch(events jsonb[], strict boolean DEFAULT false)
RETURNS TABLE (accepted integer, duplicates integer, rejected integer, rejected_positions integer[])
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize._track_many(events, CAST(events AS pg_catalog.text[]), strict) $$;
COMMENT ON FUNCTION personalize.track_batch(jsonb[], boolean) IS 'Tracks many events in one call: returns how many were accepted, duplicates of stored client_event_ids, rejected (quarantined), and the 1-based positions of the rejected ones. strict => true raises on the first invalid event and stores nothing.';

CREATE FUNCTION personalize.validate_event(event jsonb) RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize._validate_one(CAST(event AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.validate_event(jsonb) IS 'Checks one event against the tracking plan without storing it: every violation as "path: message (code)", empty when valid';

-- The Rust functions' comments (their code: see CONTRIBUTING.md's function table).
COMMENT ON FUNCTION personalize._track_one(text, boolean) IS 'Internal: track() on the event''s JSON text';
COMMENT ON FUNCTION personalize._track_many(anyarray, text[], boolean) IS 'Internal: track_batch() on the events'' JSON texts';
COMMENT ON FUNCTION personalize.replay_rejected(text, text, timestamptz, timestamptz) IS 'Checks open quarantined events (all, or those with this reason, event type, received since / before) again against the current tracking plan, as of when each arrived: those that pass are stored once (campaigns fire as for track(); a client_event_id already stored makes a duplicate) and marked resolved; the rest keep their row with fresh reasons. Returns replayed, stored, duplicates, still_rejected. NULL events, text that was not JSON and oversize events are never replayed.';
COMMENT ON FUNCTION personalize._validate_one(text) IS 'Internal: validate_event() on the event''s JSON text';
COMMENT ON FUNCTION personalize._plan_schema_problem(text) IS 'Internal: why a properties schema cannot be compiled, NULL when it can';
COMMENT ON FUNCTION personalize._invalidate_plan_cache() IS 'Internal: makes every backend recompile the tracking plan at commit';
