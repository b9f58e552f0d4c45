-- pg_personalize: everything that refers to the Rust functions (triggers, SQL wrappers, the
-- default tracking plan, views, comments). Runs after pgrx has created those functions.
-- Function bodies are parsed with the caller's search_path at run time, so every name in them
-- is schema-qualified and casts name pg_catalog types.

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

CREATE TRIGGER event_types_durations
    BEFORE INSERT OR UPDATE ON personalize.event_types
    FOR EACH ROW EXECUTE FUNCTION personalize._durations_before_write('half_life', '36600 days', '');

------------------------------------------------------------------------------------------
-- Tracking plan upkeep
------------------------------------------------------------------------------------------

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
    "list_id": {"type": "string", "maxLength": 200},
    "position": {"type": "integer", "minimum": 0},
    "experiment": {"type": "string"}, "variant": {"type": "string"}, "placement": {"type": "string"}}}'),
('add_to_cart', 'A product added to the cart', true, 4, '30 days', 'default', false,
 '{"type": "object", "additionalProperties": false, "properties": {
    "category": {"type": "string", "maxLength": 200},
    "price": {"type": "number", "minimum": 0},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "quantity": {"type": "integer", "minimum": 1, "maximum": 100000},
    "cart_id": {"type": "string", "maxLength": 200},
    "experiment": {"type": "string"}, "variant": {"type": "string"}, "placement": {"type": "string"}}}'),
('remove_from_cart', 'A product removed from the cart', true, 0, '30 days', 'default', false,
 '{"type": "object", "additionalProperties": false, "properties": {
    "quantity": {"type": "integer", "minimum": 1, "maximum": 100000},
    "cart_id": {"type": "string", "maxLength": 200}}}'),
('checkout', 'Checkout started for the whole cart', false, 0, '30 days', 'default', false,
 '{"type": "object", "additionalProperties": false, "properties": {
    "order_id": {"type": "string", "maxLength": 200},
    "value": {"type": "number", "minimum": 0},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "cart_id": {"type": "string", "maxLength": 200}}}'),
('purchase', 'One purchased line (one item) of an order', true, 10, '180 days', 'default', true,
 '{"type": "object", "additionalProperties": false, "properties": {
    "order_id": {"type": "string", "maxLength": 200},
    "category": {"type": "string", "maxLength": 200},
    "price": {"type": "number", "minimum": 0},
    "quantity": {"type": "integer", "minimum": 1, "maximum": 1000000},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "country": {"type": "string", "maxLength": 100},
    "experiment": {"type": "string"}, "variant": {"type": "string"}, "placement": {"type": "string"}}}'),
('refund', 'A purchased line cancelled or refunded', true, 0, '180 days', 'default', false,
 '{"type": "object", "additionalProperties": false, "properties": {
    "order_id": {"type": "string", "maxLength": 200},
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

CREATE FUNCTION personalize.track_batch(events jsonb[], strict boolean DEFAULT false)
RETURNS TABLE (accepted integer, duplicates integer, rejected integer, rejected_positions integer[])
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize._track_many(events, CAST(events AS pg_catalog.text[]), strict) $$;

CREATE FUNCTION personalize.validate_event(event jsonb) RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize._validate_one(CAST(event AS pg_catalog.text)) $$;

------------------------------------------------------------------------------------------
-- Loaders (regclass resolves the table name in the caller's search_path)
------------------------------------------------------------------------------------------

CREATE FUNCTION personalize.import_events(source regclass, strict boolean DEFAULT false)
RETURNS TABLE (accepted bigint, duplicates bigint, rejected bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize._import_events(CAST(source AS pg_catalog.oid), strict) $$;

CREATE FUNCTION personalize.import_online_retail(source regclass)
RETURNS TABLE (accepted bigint, duplicates bigint, rejected bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize._import_online_retail(CAST(source AS pg_catalog.oid)) $$;

CREATE FUNCTION personalize.import_retailrocket(source regclass)
RETURNS TABLE (accepted bigint, duplicates bigint, rejected bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize._import_retailrocket(CAST(source AS pg_catalog.oid)) $$;

------------------------------------------------------------------------------------------
-- Catalogue
------------------------------------------------------------------------------------------

CREATE FUNCTION personalize.upsert_item(
    item_id text,
    category text DEFAULT NULL,
    title text DEFAULT NULL,
    attributes jsonb DEFAULT '{}',
    available boolean DEFAULT true,
    price numeric DEFAULT NULL
) RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO personalize.items AS i (item_id, category, title, attributes, available, price)
    VALUES (upsert_item.item_id, upsert_item.category, upsert_item.title,
            COALESCE(upsert_item.attributes, '{}'), COALESCE(upsert_item.available, true),
            upsert_item.price)
    ON CONFLICT ON CONSTRAINT items_pkey DO UPDATE
       SET category = EXCLUDED.category, title = EXCLUDED.title, attributes = EXCLUDED.attributes,
           available = EXCLUDED.available, price = EXCLUDED.price, updated_at = now()
$$;

CREATE FUNCTION personalize.upsert_items(items jsonb) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    bad jsonb;
BEGIN
    IF items IS NULL OR jsonb_typeof(items) <> 'array' THEN
        RAISE EXCEPTION 'upsert_items expects a JSON array of item objects, got %',
                COALESCE(jsonb_typeof(items), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: [{"item_id": "85123A", "category": "decor", "price": 2.55}]';
    END IF;
    SELECT e INTO bad FROM jsonb_array_elements(items) e
     WHERE jsonb_typeof(e) <> 'object' OR jsonb_typeof(e -> 'item_id') IS DISTINCT FROM 'string'
        OR EXISTS (SELECT 1 FROM jsonb_object_keys(e) k
                    WHERE k NOT IN ('item_id', 'category', 'title', 'attributes', 'available', 'price'))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invalid item %', left(bad::text, 200)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Each item is an object with a string item_id and optionally category, '
                      || 'title, attributes (object), available (boolean), price (number >= 0).';
    END IF;
    -- Keys an object leaves out keep their stored values; the last object for an id wins.
    INSERT INTO personalize.items AS i (item_id, category, title, attributes, available, price)
    SELECT r.item_id, r.category, r.title, COALESCE(r.attributes, '{}'), COALESCE(r.available, true), r.price
      FROM (SELECT DISTINCT ON (x.e ->> 'item_id') x.e
              FROM jsonb_array_elements(items) WITH ORDINALITY AS x(e, n)
             ORDER BY x.e ->> 'item_id', x.n DESC) AS latest
      LEFT JOIN personalize.items AS cur ON cur.item_id = latest.e ->> 'item_id',
           jsonb_populate_record(NULL::personalize.items,
               COALESCE(to_jsonb(cur), '{}') || latest.e) AS r
    ON CONFLICT ON CONSTRAINT items_pkey DO UPDATE
       SET category = EXCLUDED.category, title = EXCLUDED.title, attributes = EXCLUDED.attributes,
           available = EXCLUDED.available, price = EXCLUDED.price, updated_at = now();
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Serving caches each item's category and availability per backend; any change to the
-- catalogue makes every backend re-read them at its next transaction (relcache message).
CREATE FUNCTION personalize._items_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM personalize._invalidate_catalog_cache();
    RETURN NULL;
END
$$;

CREATE TRIGGER items_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.items
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._items_changed();

------------------------------------------------------------------------------------------
-- Models
------------------------------------------------------------------------------------------

CREATE FUNCTION personalize.activate_model(model_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    model_name text;
BEGIN
    SELECT m.name INTO model_name FROM personalize.models m WHERE m.model_id = activate_model.model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', activate_model.model_id
            USING ERRCODE = 'undefined_object', HINT = 'SELECT model_id, name, status FROM personalize.models;';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('pg_personalize.model:' || model_name));
    UPDATE personalize.models m SET status = 'inactive' WHERE m.name = model_name AND m.status = 'active';
    UPDATE personalize.models m SET status = 'active' WHERE m.model_id = activate_model.model_id;
END
$$;

CREATE FUNCTION personalize.drop_model(model_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    model_status text;
BEGIN
    SELECT m.status INTO model_status FROM personalize.models m WHERE m.model_id = drop_model.model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', drop_model.model_id
            USING ERRCODE = 'undefined_object', HINT = 'SELECT model_id, name, status FROM personalize.models;';
    END IF;
    IF model_status = 'active' THEN
        RAISE EXCEPTION 'model % is the active model of its name', drop_model.model_id
            USING ERRCODE = 'object_in_use',
                  HINT = 'Activate another version (personalize.activate_model) or train a new one first.';
    END IF;
    DELETE FROM personalize.models m WHERE m.model_id = drop_model.model_id;
END
$$;

CREATE FUNCTION personalize.prune_models(model_name text DEFAULT 'default', keep integer DEFAULT 2)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    IF keep IS NULL OR keep < 0 THEN
        RAISE EXCEPTION 'keep must be >= 0, not %', COALESCE(keep::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'keep is how many inactive versions to keep.';
    END IF;
    DELETE FROM personalize.models m
     WHERE m.model_id IN (SELECT x.model_id FROM personalize.models x
                           WHERE x.name = prune_models.model_name AND x.status = 'inactive'
                           ORDER BY x.model_id DESC OFFSET keep);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

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

CREATE FUNCTION personalize.viewed_without_buying(user_id text, category text DEFAULT NULL,
                                                  within interval DEFAULT NULL, item_id text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT personalize.viewed(user_id, category, within, item_id)
       AND NOT personalize.bought(user_id, category, within, item_id)
$$;

CREATE FUNCTION personalize.event_count(user_id text, event_type text, within interval DEFAULT NULL)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) FROM personalize.events e
     WHERE e.user_id = event_count.user_id AND e.event_type = event_count.event_type
       AND (event_count.within IS NULL OR e.occurred_at > now() - event_count.within)
$$;

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

CREATE FUNCTION personalize.total_spend(user_id text, within interval DEFAULT NULL) RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE(sum(personalize._event_value(e.properties, i.price)), 0)
      FROM personalize.events e LEFT JOIN personalize.items i ON i.item_id = e.item_id
     WHERE e.user_id = total_spend.user_id
       AND e.event_type = ANY (ARRAY(SELECT t.event_type FROM personalize.event_types t WHERE t.is_purchase))
       AND (total_spend.within IS NULL OR e.occurred_at > now() - total_spend.within)
$$;

CREATE FUNCTION personalize.average_order_value(user_id text, within interval DEFAULT NULL) RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT sum(personalize._event_value(e.properties, i.price))
           / NULLIF(count(DISTINCT COALESCE(e.properties ->> 'order_id', CAST(e.event_id AS text))), 0)
      FROM personalize.events e LEFT JOIN personalize.items i ON i.item_id = e.item_id
     WHERE e.user_id = average_order_value.user_id
       AND e.event_type = ANY (ARRAY(SELECT t.event_type FROM personalize.event_types t WHERE t.is_purchase))
       AND (average_order_value.within IS NULL OR e.occurred_at > now() - average_order_value.within)
$$;

CREATE FUNCTION personalize.last_seen(user_id text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT max(e.occurred_at) FROM personalize.events e WHERE e.user_id = last_seen.user_id
$$;

CREATE FUNCTION personalize.days_since_last_purchase(user_id text) RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT date_part('epoch', now() - max(e.occurred_at)) / 86400
      FROM personalize.events e
     WHERE e.user_id = days_since_last_purchase.user_id
       AND e.event_type = ANY (ARRAY(SELECT t.event_type FROM personalize.event_types t WHERE t.is_purchase))
$$;

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

CREATE TRIGGER segments_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.segments
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._segments_changed();

CREATE FUNCTION personalize.segment_sql(definition jsonb, one_user boolean DEFAULT false)
RETURNS TABLE (sql text, params text[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize._segment_sql(CAST(definition AS pg_catalog.text), one_user) $$;

------------------------------------------------------------------------------------------
-- Campaigns and the outbox
------------------------------------------------------------------------------------------

-- When a message due at t may go out: t, or the end of the quiet hours t falls in. No SET
-- clause, so the planner inlines it into the outbox insert and the claims (as a function with
-- one it cost 34 µs per message); every name is qualified instead.
CREATE FUNCTION personalize._after_quiet_hours(t timestamptz, quiet_start time, quiet_end time, tz text)
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

-- Event-type checks shared by the campaigns and experiments triggers.
CREATE FUNCTION personalize._unknown_event_types(types text[]) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(COALESCE(x, 'NULL'), ', ' ORDER BY n)
      FROM unnest(types) WITH ORDINALITY AS u(x, n)
     WHERE x IS NULL OR NOT EXISTS (SELECT 1 FROM personalize.event_types t WHERE t.event_type = x)
$$;

CREATE FUNCTION personalize._known_event_types_hint() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'Known event types: ' || string_agg(t.event_type, ', ' ORDER BY t.event_type) FROM personalize.event_types t
$$;

CREATE FUNCTION personalize._campaigns_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
    missing text;
BEGIN
    IF personalize._unknown_event_types(ARRAY[NEW.trigger_event_type]) IS NOT NULL THEN
        RAISE EXCEPTION 'campaign "%": trigger_event_type "%" is not in the tracking plan', pg_catalog.left(NEW.name, 100), pg_catalog.left(NEW.trigger_event_type, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = personalize._known_event_types_hint();
    END IF;
    missing := personalize._unknown_event_types(NEW.cancel_on);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'campaign "%": cancel_on names event types that are not in the tracking plan: %', pg_catalog.left(NEW.name, 100), missing
            USING ERRCODE = 'invalid_parameter_value', HINT = personalize._known_event_types_hint();
    END IF;
    problem := personalize._template_problem(CAST(NEW.template AS text));
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'campaign "%": invalid template: %', pg_catalog.left(NEW.name, 100), problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A template is a JSON object whose strings may use {{user_id}}, {{item_id}}, {{item_title}}, '
                      || '{{category}}, {{event_type}}, {{occurred_at}}, {{campaign}}, {{channel}}, {{message_id}}, '
                      || '{{idempotency_key}}, {{properties.<name>}} and "{{recommendations}}" (a whole string).';
    END IF;
    IF NEW.model !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'campaign "%": "%" is not a model name', pg_catalog.left(NEW.name, 100), pg_catalog.left(NEW.model, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Model names are 1 to 63 letters, digits, _ . or -.';
    END IF;
    BEGIN
        PERFORM now() AT TIME ZONE NEW.quiet_timezone;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'campaign "%": unknown time zone "%"', pg_catalog.left(NEW.name, 100), pg_catalog.left(NEW.quiet_timezone, 100)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a name such as Europe/Berlin or UTC: SELECT name FROM pg_timezone_names;';
    END;
    -- Messages refer to their campaign by id (without a foreign key, see _campaigns_deleted).
    IF TG_OP = 'UPDATE' AND NEW.campaign_id IS DISTINCT FROM OLD.campaign_id THEN
        RAISE EXCEPTION 'campaign "%": campaign_id cannot change', OLD.name
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create a new campaign (and disable or delete the old one) instead.';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER campaigns_before_write
    BEFORE INSERT OR UPDATE ON personalize.campaigns
    FOR EACH ROW EXECUTE FUNCTION personalize._campaigns_before_write();

CREATE TRIGGER campaigns_durations
    BEFORE INSERT OR UPDATE ON personalize.campaigns
    FOR EACH ROW EXECUTE FUNCTION personalize._durations_before_write(
        'delay', '364 days', 'zero', 'cap_window', '366 days', '', 'max_event_age', '36600 days', '');

CREATE TRIGGER frequency_caps_durations
    BEFORE INSERT OR UPDATE ON personalize.frequency_caps
    FOR EACH ROW EXECUTE FUNCTION personalize._durations_before_write('window', '366 days', '');

-- The transactional outbox: personalize._events_fire_campaigns() (Rust, src/api/campaign_trigger.rs)
-- runs once per INSERT statement on events (a batch is one statement), in the events'
-- transaction, so a message exists exactly when its event does. It reads the campaigns and
-- frequency caps from a per-backend cache that the triggers below drop when they change.
-- Its statements run with generic plans and without sequential scans (see PLANNER_SETTINGS
-- there): a generic plan made while the outbox was empty once stayed in force as it grew and
-- made ingestion 17 to 38 times slower, while custom plans cost a planning per statement.
ALTER FUNCTION personalize._events_fire_campaigns() SET search_path = pg_catalog, pg_temp;

CREATE TRIGGER events_fire_campaigns
    AFTER INSERT ON personalize.events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._events_fire_campaigns();

CREATE FUNCTION personalize._campaigns_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Every backend re-reads the campaigns and caps when this statement commits.
    PERFORM personalize._invalidate_campaign_cache();
    RETURN NULL;
END
$$;

CREATE TRIGGER campaigns_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._campaigns_changed();

CREATE TRIGGER frequency_caps_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.frequency_caps
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._campaigns_changed();

-- A deleted campaign's messages keep their history with campaign_id NULL; claims cancel the
-- pending ones. (No foreign key: its per-message check took a FOR KEY SHARE lock on the
-- campaign's row in every ingesting transaction, which turns into multixacts under
-- concurrent ingestion, and cost a query per message. Claims also treat a campaign_id whose
-- campaign is gone as deleted.)
CREATE FUNCTION personalize._campaigns_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE personalize.outbox o SET campaign_id = NULL
     WHERE o.campaign_id = ANY (ARRAY(SELECT d.campaign_id FROM deleted_campaigns d));
    RETURN NULL;
END
$$;

CREATE TRIGGER campaigns_deleted
    AFTER DELETE ON personalize.campaigns
    REFERENCING OLD TABLE AS deleted_campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._campaigns_deleted();

CREATE FUNCTION personalize.ack(message_id bigint, lease_token uuid) RETURNS boolean
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
    WITH done AS (
        UPDATE personalize.outbox o SET state = 'sent', finished_at = now()
         WHERE o.message_id = ack.message_id AND o.lease_token = ack.lease_token AND o.state = 'claimed'
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM done)
$$;

CREATE FUNCTION personalize.ack_batch(lease_token uuid, message_ids bigint[]) RETURNS integer
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
    WITH done AS (
        UPDATE personalize.outbox o SET state = 'sent', finished_at = now()
         WHERE o.message_id = ANY (ack_batch.message_ids) AND o.lease_token = ack_batch.lease_token
           AND o.state = 'claimed'
        RETURNING 1)
    SELECT CAST(count(*) AS integer) FROM done
$$;

CREATE FUNCTION personalize.fail(message_id bigint, lease_token uuid, error text, retry_in interval DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_state text;
BEGIN
    PERFORM personalize._check_duration('retry_in', retry_in, interval '7 days', true,
        'Omit it for exponential backoff (10 s, 20 s, 40 s, ... up to 1 hour).');
    UPDATE personalize.outbox o
       SET state = CASE WHEN o.attempts >= COALESCE(
                             (SELECT c.max_attempts FROM personalize.campaigns c WHERE c.campaign_id = o.campaign_id), 5)
                        THEN 'dead' ELSE 'pending' END,
           visible_at = now() + COALESCE(fail.retry_in,
                                         least(interval '1 hour', interval '10 seconds' * power(2, greatest(o.attempts - 1, 0)))),
           last_error = left(COALESCE(fail.error, 'unknown error'), 2000)
     WHERE o.message_id = fail.message_id AND o.lease_token = fail.lease_token AND o.state = 'claimed'
    RETURNING o.state INTO new_state;
    IF new_state = 'dead' THEN
        UPDATE personalize.outbox o SET finished_at = now() WHERE o.message_id = fail.message_id;
    END IF;
    RETURN new_state;
END
$$;

CREATE FUNCTION personalize.archive_messages(older_than interval DEFAULT '7 days', purge boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF older_than IS NULL OR purge IS NULL THEN
        RAISE EXCEPTION 'older_than must be a non-negative interval and purge true or false'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Keep finished messages at least as long as your longest frequency-cap window.';
    END IF;
    PERFORM personalize._check_duration('older_than', older_than, interval '36600 days', true,
        'Keep finished messages at least as long as your longest frequency-cap window.');
    IF purge THEN
        DELETE FROM personalize.outbox o
         WHERE o.state IN ('sent', 'cancelled', 'dead') AND o.finished_at < now() - older_than;
    ELSE
        WITH moved AS (
            DELETE FROM personalize.outbox o
             WHERE o.state IN ('sent', 'cancelled', 'dead') AND o.finished_at < now() - older_than
            RETURNING o.*)
        INSERT INTO personalize.outbox_archive SELECT m.*, now() FROM moved m;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

------------------------------------------------------------------------------------------
-- Experiments
------------------------------------------------------------------------------------------

CREATE FUNCTION personalize._experiments_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
    missing text;
BEGIN
    problem := personalize._variants_problem(CAST(NEW.variants AS text));
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'experiment "%": invalid variants: %', pg_catalog.left(NEW.name, 100), problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'variants is a JSON array of 2 to 20 objects {"name": "grid", "weight": 50} with an '
                      || 'optional "model" (the model name serving uses for that variant); the first is the control.';
    END IF;
    IF cardinality(NEW.conversion_event_types) = 0 THEN
        RAISE EXCEPTION 'experiment "%": conversion_event_types is empty', pg_catalog.left(NEW.name, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name at least one event type, e.g. ''{purchase}''.';
    END IF;
    missing := personalize._unknown_event_types(NEW.click_event_types || NEW.conversion_event_types);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'experiment "%": click_event_types or conversion_event_types name event types that are not in the tracking plan: %', pg_catalog.left(NEW.name, 100), missing
            USING ERRCODE = 'invalid_parameter_value', HINT = personalize._known_event_types_hint();
    END IF;
    IF TG_OP = 'UPDATE'
       AND (NEW.variants IS DISTINCT FROM OLD.variants OR NEW.salt IS DISTINCT FROM OLD.salt
            OR NEW.name IS DISTINCT FROM OLD.name)
       AND EXISTS (SELECT 1 FROM personalize.exposures e WHERE e.experiment = OLD.name) THEN
        RAISE EXCEPTION 'experiment "%" has exposures: its name, variants and salt can no longer change', OLD.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Changing them would move users between variants and void the report. End this one '
                      || '(UPDATE ... SET ends_at = now()) and create a new experiment.';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER experiments_before_write
    BEFORE INSERT OR UPDATE ON personalize.experiments
    FOR EACH ROW EXECUTE FUNCTION personalize._experiments_before_write();

CREATE TRIGGER experiments_durations
    BEFORE INSERT OR UPDATE ON personalize.experiments
    FOR EACH ROW EXECUTE FUNCTION personalize._durations_before_write('attribution_window', '365 days', '');

-- In place of a foreign key from exposures (see bootstrap.sql).
CREATE FUNCTION personalize._experiments_before_delete() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM personalize.exposures e WHERE e.experiment = OLD.name) THEN
        RAISE EXCEPTION 'experiment "%" has exposures and cannot be deleted', OLD.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'End it instead (UPDATE ... SET ends_at = now()), or delete its history first: '
                      || 'DELETE FROM personalize.exposures WHERE experiment = ' || quote_literal(OLD.name) || ';';
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER experiments_before_delete
    BEFORE DELETE ON personalize.experiments
    FOR EACH ROW EXECUTE FUNCTION personalize._experiments_before_delete();

-- assign_variant() keeps the experiments per backend; any change makes every backend re-read.
CREATE FUNCTION personalize._experiments_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM personalize._invalidate_experiment_cache();
    RETURN NULL;
END
$$;

CREATE TRIGGER experiments_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.experiments
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._experiments_changed();

------------------------------------------------------------------------------------------
-- Model selection: what train() tried on its validation split, per model
------------------------------------------------------------------------------------------

CREATE VIEW personalize.model_selection AS
SELECT m.model_id, m.name AS model_name, m.status, m.created_at,
       c.ordinality AS rank_in_order,
       c.value OPERATOR(pg_catalog.->>) 'family' AS family,
       c.value OPERATOR(pg_catalog.->) 'params' AS params,
       CAST(c.value OPERATOR(pg_catalog.->>) 'ndcg_at_10' AS pg_catalog.float8) AS ndcg_at_10,
       CAST(c.value OPERATOR(pg_catalog.->>) 'recall_at_10' AS pg_catalog.float8) AS recall_at_10,
       CAST(c.value OPERATOR(pg_catalog.->>) 'fit_seconds' AS pg_catalog.float8) AS fit_seconds,
       CAST(c.value OPERATOR(pg_catalog.->>) 'chosen' AS boolean) AS chosen
  FROM personalize.models m,
       pg_catalog.jsonb_array_elements(
           CASE WHEN pg_catalog.jsonb_typeof(m.params OPERATOR(pg_catalog.->) 'selection') OPERATOR(pg_catalog.=) 'array'
                THEN m.params OPERATOR(pg_catalog.->) 'selection'
                ELSE CAST('[]' AS jsonb) END) WITH ORDINALITY AS c(value, ordinality);

------------------------------------------------------------------------------------------
-- Status
------------------------------------------------------------------------------------------

CREATE VIEW personalize.status AS
SELECT 'events'::text AS section, e.event_type AS name, pg_catalog.count(*) AS value
  FROM personalize.events e GROUP BY e.event_type
UNION ALL
SELECT 'rejections', r.reason, pg_catalog.count(*)
  FROM personalize.rejected_events j, pg_catalog.unnest(j.reasons) AS r(reason) GROUP BY r.reason
UNION ALL
SELECT 'totals', 'events', (SELECT pg_catalog.count(*) FROM personalize.events)
UNION ALL
SELECT 'totals', 'rejected events', (SELECT pg_catalog.count(*) FROM personalize.rejected_events)
UNION ALL
SELECT 'totals', 'items', (SELECT pg_catalog.count(*) FROM personalize.items)
UNION ALL
SELECT 'totals', 'available items',
       (SELECT pg_catalog.count(*) FROM personalize.items i WHERE i.available)
UNION ALL
SELECT 'totals', 'event types', (SELECT pg_catalog.count(*) FROM personalize.event_types)
UNION ALL
SELECT 'active models', m.name || ' #' || m.model_id || ': users', m.n_users
  FROM personalize.models m WHERE m.status = 'active'
UNION ALL
SELECT 'active models', m.name || ' #' || m.model_id || ': items', m.n_items
  FROM personalize.models m WHERE m.status = 'active'
UNION ALL
SELECT 'active models', m.name || ' #' || m.model_id || ': interactions', m.n_interactions
  FROM personalize.models m WHERE m.status = 'active'
UNION ALL
SELECT 'outbox', o.channel || ' ' || o.state, pg_catalog.count(*)
  FROM personalize.outbox o GROUP BY o.channel, o.state
UNION ALL
SELECT 'totals', 'segments', (SELECT pg_catalog.count(*) FROM personalize.segments)
UNION ALL
SELECT 'totals', 'enabled campaigns', (SELECT pg_catalog.count(*) FROM personalize.campaigns c WHERE c.enabled)
UNION ALL
SELECT 'totals', 'running experiments',
       (SELECT pg_catalog.count(*) FROM personalize.experiments x
         WHERE x.starts_at OPERATOR(pg_catalog.<=) pg_catalog.now()
           AND (x.ends_at IS NULL OR x.ends_at OPERATOR(pg_catalog.>) pg_catalog.now()));

------------------------------------------------------------------------------------------
-- pg_dump keeps the shop's data (extension tables are skipped unless registered).
------------------------------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('personalize.event_types', 'WHERE origin = ''shop''');
SELECT pg_catalog.pg_extension_config_dump('personalize.events', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.rejected_events', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.rejected_events_rejected_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.items', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.models', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.models_model_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.model_users', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.model_items', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.evaluations', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.evaluations_evaluation_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.segments', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.campaigns', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.campaigns_campaign_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.frequency_caps', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.frequency_caps_cap_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.outbox_message_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.outbox_archive', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.experiments', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.exposures', '');

------------------------------------------------------------------------------------------
-- Internal helpers are not for direct use.
------------------------------------------------------------------------------------------


------------------------------------------------------------------------------------------
-- Documentation: \d+ and \df+ show these.
------------------------------------------------------------------------------------------

COMMENT ON SCHEMA personalize IS 'pg_personalize: events, tracking plan, recommendations, segments, campaigns';
COMMENT ON TABLE personalize.event_types IS 'The tracking plan: one row per event type with its JSON Schema for properties, interaction weight and time-decay half-life. Change it with plain SQL; every backend recompiles on commit.';
COMMENT ON COLUMN personalize.event_types.properties_schema IS 'JSON Schema (draft 2020-12 unless $schema says otherwise) for the event''s properties object; checked on write';
COMMENT ON COLUMN personalize.event_types.weight IS 'Interaction strength one event adds for training (view < add_to_cart < purchase)';
COMMENT ON COLUMN personalize.event_types.half_life IS 'Time after which an event counts half as much in training';
COMMENT ON COLUMN personalize.event_types.origin IS 'default: installed by CREATE EXTENSION; shop: added or changed by the shop (kept by pg_dump)';
COMMENT ON TABLE personalize.events IS 'Accepted behaviour events (validated against personalize.event_types)';
COMMENT ON COLUMN personalize.events.client_event_id IS 'The sender''s id for this event, unique per user and event type: a retry (same id, item and properties) is not stored twice; other content under a used id is quarantined as client_event_id_conflict';
COMMENT ON TABLE personalize.rejected_events IS 'Events that failed the tracking plan, with every violation and the original payload: nothing is silently dropped';
COMMENT ON COLUMN personalize.rejected_events.reasons IS 'Violation codes (missing_field, wrong_type, unknown_event_type, ...), one per violation';
COMMENT ON COLUMN personalize.rejected_events.violations IS 'Array of {code, path, message}, one per violation';
COMMENT ON COLUMN personalize.rejected_events.batch_position IS '1-based position of the event in its batch (or row number of an import)';
COMMENT ON TABLE personalize.items IS 'The catalogue: recommendations can be filtered by category and availability';
COMMENT ON VIEW personalize.status IS 'Counts of events by type, rejections by reason, catalogue size and the active models';
COMMENT ON TABLE personalize.models IS 'Trained models, one row per training run; at most one active model per name';
COMMENT ON COLUMN personalize.models.as_of IS 'Time decay was measured back from this time (default: the newest event, but never later than the training''s transaction start)';
COMMENT ON COLUMN personalize.models.params IS 'model_type (als, ease, rp3beta, blend, popularity or trending) and its parameters; spec: what train() was asked for, which the next train() of the name without arguments reuses; selection: the validation leaderboard when the family was chosen (see personalize.model_selection)';
COMMENT ON TABLE personalize.model_users IS 'Per user of each model: ALS factors (empty for item-item and popularity models, which score from the user''s history) and purchases';
COMMENT ON COLUMN personalize.model_users.purchased IS 'model_items.item_index of the user''s purchases up to the model''s as_of, which recommend() leaves out; NULL when the model was trained with a window (serving then reads them from the events)';
COMMENT ON TABLE personalize.model_items IS 'Item factors of each model';
COMMENT ON COLUMN personalize.model_items.neighbors IS 'An item-item (EASE, RP3beta or blend) model''s neighbours of the item, as item_index values, whose weights are in factors; NULL for ALS and popularity models';
COMMENT ON VIEW personalize.model_selection IS 'What train() tried on its temporal validation split (each user''s latest fifth of their items held out): per model and candidate the family, parameters, NDCG@10, recall@10, fit seconds and whether it was chosen';
COMMENT ON TABLE personalize.evaluations IS 'Offline evaluations (evaluate()): temporal hold-out metrics of every model family, per method';
COMMENT ON FUNCTION personalize.train(text, integer, integer, real, real, interval, timestamptz, bigint, text, integer, text, double precision, integer, double precision, real) IS 'Trains a recommender on the event log (per user and item: event-type weights, each halved every half-life before as_of) and makes it the active model of its name in this transaction. model_type auto (the default) fits popularity, trending (recency-weighted popularity), RP3beta (item-item random walk), EASE (item-item regression, when its dense solve fits personalize.training_memory_mb) a small ALS grid and blends of the best EASE and RP3beta on a temporal validation split, cheapest first within personalize.training_time_budget, keeps the best by NDCG@10 (see personalize.model_selection) and refits it on all the data; als, ease, rp3beta, popularity or trending train that family (ALS: factors, iterations, regularization, alpha, solver, cg_steps, frequency_scaling; EASE: l2, neighbors; RP3beta: beta, neighbors; a parameter left out is chosen on the validation split, or for ALS takes its old default). Without arguments a name is trained as it was last time. NOTICE per step; honours cancel and statement_timeout.';
COMMENT ON FUNCTION personalize.evaluate(text, integer, double precision, integer, integer, real, real, interval, timestamptz, bigint, text, integer, boolean, integer) IS 'Temporal hold-out (each user''s latest test_fraction of items; purchases_only scores only held-out purchases, min_sessions only users seen in that many sessions): trains on the rest and returns precision, recall, NDCG, MAP @k and coverage for ALS (the parameters given), EASE (l2 at half the mean users per item, when it fits the memory budget), RP3beta (beta 0.5), popularity, trending and auto (what train() with no arguments would serve); stores them in personalize.evaluations';
COMMENT ON FUNCTION personalize.activate_model(bigint) IS 'Makes a model version the active model of its name (e.g. to roll back)';
COMMENT ON FUNCTION personalize.drop_model(bigint) IS 'Deletes an inactive model version and its factors';
COMMENT ON FUNCTION personalize.prune_models(text, integer) IS 'Deletes all but the newest keep inactive versions of a model name; returns how many were deleted';

COMMENT ON FUNCTION personalize.track(jsonb, boolean) IS 'Tracks one event: stores it in personalize.events and returns its event_id (the stored event''s id for a retry: same user, type, client_event_id, item and properties), or quarantines it in personalize.rejected_events and returns NULL. strict => true raises instead (SQLSTATE 23514).';
COMMENT ON FUNCTION personalize.track_batch(jsonb[], boolean) IS 'Tracks many events in one call: returns how many were accepted, duplicates of stored client_event_ids, rejected (quarantined), and the 1-based positions of the rejected ones. strict => true raises on the first invalid event and stores nothing.';
COMMENT ON FUNCTION personalize.validate_event(jsonb) IS 'Checks one event against the tracking plan without storing it: every violation as "path: message (code)", empty when valid';
COMMENT ON FUNCTION personalize.upsert_item(text, text, text, jsonb, boolean, numeric) IS 'Inserts or replaces one catalogue item (every field: omitted arguments take their defaults)';
COMMENT ON FUNCTION personalize.upsert_items(jsonb) IS 'Inserts or updates catalogue items from a JSON array of objects: keys an object leaves out keep their stored values; returns how many items were written';
COMMENT ON FUNCTION personalize._event_types_before_write() IS 'Trigger: validates a tracking-plan schema on write and tracks default vs shop rows';
COMMENT ON FUNCTION personalize._event_types_changed() IS 'Trigger: tells every backend to recompile the tracking plan';
COMMENT ON FUNCTION personalize.import_events(regclass, boolean) IS 'Imports a table (e.g. filled by COPY from CSV) whose columns are envelope fields: type, user_id, item_id, session_id, occurred_at, client_event_id, properties (jsonb). Every row is accepted, a duplicate, or quarantined with its violations.';
COMMENT ON FUNCTION personalize.import_online_retail(regclass) IS 'Imports UCI Online Retail rows from a table with columns invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country: purchases, cancellations as refund events, rows without a customer quarantined. Re-importing stores nothing twice.';
COMMENT ON FUNCTION personalize.import_retailrocket(regclass) IS 'Imports RetailRocket-style rows from a table with columns timestamp (Unix ms), visitorid, event (view/addtocart/transaction), itemid, transactionid.';
COMMENT ON FUNCTION personalize._track_one(text, boolean) IS 'Internal: track() on the event''s JSON text';
COMMENT ON FUNCTION personalize._track_many(anyarray, text[], boolean) IS 'Internal: track_batch() on the events'' JSON texts';
COMMENT ON FUNCTION personalize._validate_one(text) IS 'Internal: validate_event() on the event''s JSON text';
COMMENT ON FUNCTION personalize._import_events(oid, boolean) IS 'Internal: import_events() by relation OID';
COMMENT ON FUNCTION personalize._import_online_retail(oid) IS 'Internal: import_online_retail() by relation OID';
COMMENT ON FUNCTION personalize._import_retailrocket(oid) IS 'Internal: import_retailrocket() by relation OID';
COMMENT ON FUNCTION personalize._plan_schema_problem(text) IS 'Internal: why a properties schema cannot be compiled, NULL when it can';
COMMENT ON FUNCTION personalize._invalidate_plan_cache() IS 'Internal: makes every backend recompile the tracking plan at commit';
COMMENT ON FUNCTION personalize._invalidate_catalog_cache() IS 'Internal: makes every backend re-read catalogue categories and availability at commit';
COMMENT ON FUNCTION personalize._items_changed() IS 'Trigger: tells every backend that the catalogue changed';
COMMENT ON COLUMN personalize.event_types.is_purchase IS 'Events of this type are purchases: recommend(exclude => ''purchased'') leaves their items out';
COMMENT ON COLUMN personalize.model_items.popularity IS 'Users with a positive interaction with the item in the training data (the ranking for users without history)';
COMMENT ON FUNCTION personalize.recommend(text, integer, text, text, text[], text, boolean, boolean) IS 'Top k items for a user from the active model of a name, best first. exclude: purchased (default), interacted or none; exclude_items; category and available_only filter inside the top-k. Scores come from the model (source model: the stored ALS vector, or an item-item model''s weights times the user''s history up to as_of), from fold-in of events newer than the model or of a user the model does not know (fold_in), from fold-in that weighs in the user''s current session (source session: events within personalize.session_window of now, at personalize.session_weight, for a user with earlier history), or from popularity (no usable history, or a popularity or trending model). model_id says which model version answered.';
COMMENT ON FUNCTION personalize.recommend_for_session(text[], integer, text, boolean, text, boolean) IS 'Top k items for an anonymous session from the items it touched (fold-in: each occurrence counts one unit of strength); the session''s own items are left out unless exclude_seen is false';
COMMENT ON FUNCTION personalize.similar_items(text, integer, text, text, boolean) IS 'Items most similar to an item (cosine of item factors), excluding the item itself; an item the model does not know gets popular items (source popularity)';
COMMENT ON FUNCTION personalize.rank_items(text, text[], text, boolean) IS 'Re-ranks candidate items (a category page) by the user''s affinity, in-session events included: known items best first (ties keep the given order), then unknown items in the given order with a NULL score; duplicates keep their first place';
COMMENT ON FUNCTION personalize.explain_recommendation(text, text, integer, text) IS 'The n items of the user''s history that contribute most to an item''s fold-in score (the terms sum to score; share = contribution / score)';
COMMENT ON FUNCTION personalize.synthetic_items(integer, bigint) IS 'The deterministic synthetic catalogue (item_id, category, title, price) for a number of items and a seed';
COMMENT ON FUNCTION personalize.synthetic_events(bigint, integer, integer, bigint, timestamptz, integer) IS 'The deterministic synthetic shop''s events as track() JSON, in time order: events, users, items, seed, start, days';
COMMENT ON FUNCTION personalize.generate_shop(bigint, integer, integer, bigint, timestamptz, integer) IS 'Fills personalize.items with the synthetic catalogue and tracks the synthetic events through the tracking plan; idempotent for the same arguments (client_event_ids repeat)';

COMMENT ON FUNCTION personalize.bought(text, text, interval, text) IS 'Whether the user bought (an is_purchase event type) anything, in a category, an item, within an interval (NULL arguments: no restriction)';
COMMENT ON FUNCTION personalize.viewed(text, text, interval, text) IS 'Whether the user viewed (event type view) anything, in a category, an item, within an interval';
COMMENT ON FUNCTION personalize.viewed_without_buying(text, text, interval, text) IS 'Viewed in the scope (category, item, within) and bought nothing in the same scope';
COMMENT ON FUNCTION personalize.event_count(text, text, interval) IS 'How many events of a type the user has (within an interval)';
COMMENT ON FUNCTION personalize._event_value(jsonb, numeric) IS 'Internal: one purchase event''s value: price (event, else catalogue) times quantity (default 1)';
COMMENT ON FUNCTION personalize.total_spend(text, interval) IS 'Sum of the user''s purchase values (price times quantity) within an interval; 0 without purchases';
COMMENT ON FUNCTION personalize.average_order_value(text, interval) IS 'Total spend divided by the number of orders (order_id property, else one order per event); NULL without purchases';
COMMENT ON FUNCTION personalize.last_seen(text) IS 'Time of the user''s newest event (NULL: never seen)';
COMMENT ON FUNCTION personalize.days_since_last_purchase(text) IS 'Days (fractional) since the user''s newest purchase; NULL if they never bought';
COMMENT ON TABLE personalize.segments IS 'Named segments: definition is JSON with all / any / not over predicates (bought, viewed, viewed_without_buying, event_count, total_spend, average_order_value, last_seen, days_since_last_purchase); checked on write';
COMMENT ON FUNCTION personalize.in_segment(text, text) IS 'Whether a user is in a named segment now';
COMMENT ON FUNCTION personalize.segment_members(text) IS 'Every user with at least one event who is in a named segment, sorted';
COMMENT ON FUNCTION personalize.user_segments(text) IS 'Names of the segments a user is in, sorted';
COMMENT ON FUNCTION personalize.segment_sql(jsonb, boolean) IS 'The parameterised SQL a segment definition compiles to (one_user: the in_segment form, $1 = user), and its parameter values ($2)';
COMMENT ON FUNCTION personalize._segment_sql(text, boolean) IS 'Internal: segment_sql() on the definition''s JSON text';
COMMENT ON FUNCTION personalize._segment_members_among(text, text[]) IS 'Internal: the members of a named segment among the given users (one set query, as claim_messages() checks a campaign''s segment)';
COMMENT ON FUNCTION personalize._segment_problem(text) IS 'Internal: why a segment definition is refused, NULL when valid';
COMMENT ON FUNCTION personalize._segment_hint() IS 'Internal: the hint shown under a refused segment definition';
COMMENT ON FUNCTION personalize._segments_before_write() IS 'Trigger: checks a segment definition on write';
COMMENT ON TABLE personalize.campaigns IS 'Trigger-fired campaigns: an event (type, optional category and property filter) schedules a message after delay unless a cancel_on event comes first; with a segment, it goes out only if the user is in it when due; channel, payload template, recommendations, frequency cap and quiet hours';
COMMENT ON COLUMN personalize.campaigns.trigger_category IS 'Only events whose item is in this category (catalogue) or whose properties.category says so';
COMMENT ON COLUMN personalize.campaigns.trigger_properties IS 'Only events whose properties contain this object (jsonb @>)';
COMMENT ON COLUMN personalize.campaigns.cancel_on IS 'Event types that cancel the user''s pending message of this campaign when they occur after the trigger (checked on insert and again at claim)';
COMMENT ON COLUMN personalize.campaigns.template IS 'Payload template: a JSON object whose strings may use {{user_id}}, {{item_id}}, {{item_title}}, {{category}}, {{event_type}}, {{occurred_at}}, {{campaign}}, {{channel}}, {{message_id}}, {{idempotency_key}}, {{properties.<name>}}; "{{recommendations}}" as a whole string places the recommendations';
COMMENT ON COLUMN personalize.campaigns.recommendations IS 'How many recommendations (computed at claim time, active model named model) the payload carries';
COMMENT ON COLUMN personalize.campaigns.cap_messages IS 'At most this many messages of this campaign per user in any cap_window (checked on insert and at claim)';
COMMENT ON COLUMN personalize.campaigns.quiet_start IS 'Start of the daily quiet hours (local time in quiet_timezone); messages due then wait until quiet_end';
COMMENT ON COLUMN personalize.campaigns.max_event_age IS 'Events older than this when stored (history imports) trigger nothing';
COMMENT ON COLUMN personalize.campaigns.max_attempts IS 'Deliveries tried (claims) before a message is dead';
COMMENT ON TABLE personalize.frequency_caps IS 'Caps across campaigns: at most max_messages per user in any window, on one channel or (channel NULL) all';
COMMENT ON TABLE personalize.outbox IS 'Campaign messages, written in the triggering event''s transaction; workers poll with claim_messages() and finish with ack() / fail()';
COMMENT ON COLUMN personalize.outbox.idempotency_key IS 'Stable for the message''s life, across redeliveries: delivery is at least once, so consumers drop repeats by this key';
COMMENT ON COLUMN personalize.outbox.visible_at IS 'pending: not before this time; claimed: the lease ends then and the message can be claimed again';
COMMENT ON COLUMN personalize.outbox.redeliveries IS 'Claims after a lease expired without ack or fail (a worker crashed or was too slow)';
COMMENT ON COLUMN personalize.outbox.payload IS 'The rendered template with fresh recommendations, written at claim time';
COMMENT ON TABLE personalize.outbox_archive IS 'Finished messages moved here by archive_messages()';
COMMENT ON FUNCTION personalize.claim_messages(text, integer, interval) IS 'Claims up to batch due messages of a channel (FOR UPDATE SKIP LOCKED) for visibility: re-checks cancel-on events, checks the campaign''s segment, re-checks attempts, quiet hours and frequency caps, renders payloads with fresh recommendations; returns them with one lease token for ack()/fail()';
COMMENT ON FUNCTION personalize.ack(bigint, uuid) IS 'Marks a claimed message sent; false when the lease is no longer held (another worker claimed it after the lease expired, or it was already acked)';
COMMENT ON FUNCTION personalize.ack_batch(uuid, bigint[]) IS 'ack() for several messages of one lease; returns how many were marked sent';
COMMENT ON FUNCTION personalize.fail(bigint, uuid, text, interval) IS 'Reports a failed delivery: the message is retried after retry_in (default backoff 10 s doubling up to 1 hour) or is dead after the campaign''s max_attempts; returns the new state, NULL when the lease is no longer held';
COMMENT ON FUNCTION personalize.archive_messages(interval, boolean) IS 'Moves sent, cancelled and dead messages finished longer ago than older_than to outbox_archive (purge: deletes them); returns how many';
COMMENT ON FUNCTION personalize._after_quiet_hours(timestamptz, time, time, text) IS 'Internal: t, or the end of the quiet hours t falls in';
COMMENT ON FUNCTION personalize._unknown_event_types(text[]) IS 'Internal: the listed event types (NULL as "NULL") that are not in the tracking plan, in order; NULL when all are';
COMMENT ON FUNCTION personalize._known_event_types_hint() IS 'Internal: the hint listing the tracking plan''s event types';
COMMENT ON FUNCTION personalize._durations_before_write() IS 'Trigger: checks the interval columns named by its arguments (column, limit, ''zero'' when 0 is allowed) with _check_duration';
COMMENT ON FUNCTION personalize._check_duration(text, interval, interval, boolean, text) IS 'Internal: raises 22023 unless the interval is a duration from 0 to max with no negative part, counting a month as up to 31 days and a year as up to 366 (what it does to a timestamp, not how intervals compare)';
COMMENT ON FUNCTION personalize._campaigns_before_write() IS 'Trigger: checks a campaign''s event types, template, model name and time zone on write';
COMMENT ON FUNCTION personalize._events_fire_campaigns() IS 'Trigger: writes campaign messages for new events and cancels pending ones (cancel_on), in the events'' transaction; NOTIFY personalize_outbox when a message is due now';
COMMENT ON FUNCTION personalize._invalidate_campaign_cache() IS 'Internal: makes every backend re-read the campaigns and frequency caps at commit';
COMMENT ON FUNCTION personalize._campaigns_changed() IS 'Trigger: tells every backend that the campaigns or frequency caps changed';
COMMENT ON FUNCTION personalize._invalidate_segment_cache() IS 'Internal: makes every backend drop the segments it prepared for claim_messages() at commit';
COMMENT ON FUNCTION personalize._segments_changed() IS 'Trigger: tells every backend that the segments changed';
COMMENT ON FUNCTION personalize._campaigns_deleted() IS 'Trigger: a deleted campaign''s messages keep their history with campaign_id NULL';
COMMENT ON FUNCTION personalize._template_problem(text) IS 'Internal: why a campaign template is refused, NULL when valid';

COMMENT ON TABLE personalize.experiments IS 'A/B experiments: variants with integer weights (the first is the control, each may name the model serving uses), a salt for the assignment hash, start/end, the click and conversion event types and the attribution window. Variants and salt are fixed once anyone was exposed.';
COMMENT ON COLUMN personalize.experiments.variants IS 'JSON array of {"name", "weight"[, "model"]}; the first variant is the control';
COMMENT ON COLUMN personalize.experiments.salt IS 'Hashed with the user id: SHA-256(salt || '':'' || user_id), first 8 bytes, scaled into the weights. A new salt reshuffles users';
COMMENT ON COLUMN personalize.experiments.click_event_types IS 'Clicks: events of these types whose properties.experiment names this experiment, within the attribution window';
COMMENT ON COLUMN personalize.experiments.conversion_event_types IS 'Conversions: events of these types by an exposed user within the attribution window of their first exposure; purchases among them carry revenue';
COMMENT ON COLUMN personalize.experiments.attribution_window IS 'How long after a user''s first exposure their clicks and conversions count';
COMMENT ON COLUMN personalize.experiments.confidence_level IS 'Of the report''s confidence interval for the difference of conversion rates';
COMMENT ON TABLE personalize.exposures IS 'Exposure log: one row per log_exposure() call while the experiment runs';
COMMENT ON FUNCTION personalize.assign_variant(text, text) IS 'The user''s variant: deterministic (SHA-256 of salt and user id), proportional to the weights, the same in every session, server and standby; the control before starts_at and from ends_at on';
COMMENT ON FUNCTION personalize.variant_model(text, text) IS 'The model name the user''s variant serves with (its "model", else default): recommend(user, k, model => personalize.variant_model(experiment, user))';
COMMENT ON FUNCTION personalize.log_exposure(text, text, text) IS 'Records that the user saw the experiment''s placement and returns their variant; outside the experiment''s window returns the control and records nothing';
COMMENT ON FUNCTION personalize.experiment_report(text) IS 'Per variant: users, exposures, clicks, CTR, converting users, conversions, conversion rate, revenue per user; against the control: lift, confidence interval of the rate difference and two-sided p-value (two-proportion z-test), revenue p-value (Welch); sample-ratio-mismatch chi-square p-value (mismatch when < 0.001)';
COMMENT ON FUNCTION personalize._variants_problem(text) IS 'Internal: why an experiment''s variants are refused, NULL when valid';
COMMENT ON FUNCTION personalize._invalidate_experiment_cache() IS 'Internal: makes every backend re-read the experiments at commit';
COMMENT ON FUNCTION personalize._experiments_before_write() IS 'Trigger: checks an experiment''s variants and event types, and keeps name, variants and salt fixed once anyone was exposed';
COMMENT ON FUNCTION personalize._experiments_before_delete() IS 'Trigger: refuses to delete an experiment that has exposures';
COMMENT ON FUNCTION personalize._experiments_changed() IS 'Trigger: tells every backend that the experiments changed';

------------------------------------------------------------------------------------------
-- Privileges (last: every object above exists). See src/api/privileges.rs.
------------------------------------------------------------------------------------------
COMMENT ON FUNCTION personalize._apply_privileges() IS 'Internal: creates the roles personalize_recommender, personalize_reader, personalize_writer, personalize_worker, personalize_admin and personalize_definer when missing, revokes EXECUTE from PUBLIC, makes the recommender, reader, writer and worker functions SECURITY DEFINER, owned by personalize_definer (DML on the extension''s tables, nothing else), and grants them; run by the install and every upgrade script';
SELECT personalize._apply_privileges();
