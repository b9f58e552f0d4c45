-- pg_personalize: everything that refers to the Rust functions (triggers, SQL wrappers, the
-- default tracking plan, views, comments). Runs after pgrx has created those functions.
-- Function bodies are parsed with the caller's search_path at run time, so every name in them
-- is schema-qualified and casts name pg_catalog types.

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
        RAISE EXCEPTION 'invalid properties_schema for event type "%": %', NEW.event_type, problem
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
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $$ SELECT personalize._track_one(CAST(event AS pg_catalog.text), strict) $$;

CREATE FUNCTION personalize.track_batch(events jsonb[], strict boolean DEFAULT false)
RETURNS TABLE (accepted integer, duplicates integer, rejected integer, rejected_positions integer[])
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $$ SELECT * FROM personalize._track_many(events, CAST(events AS pg_catalog.text[]), strict) $$;

CREATE FUNCTION personalize.validate_event(event jsonb) RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT personalize._validate_one(CAST(event AS pg_catalog.text)) $$;

------------------------------------------------------------------------------------------
-- Loaders (regclass resolves the table name in the caller's search_path)
------------------------------------------------------------------------------------------

CREATE FUNCTION personalize.import_events(source regclass, strict boolean DEFAULT false)
RETURNS TABLE (accepted bigint, duplicates bigint, rejected bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $$ SELECT * FROM personalize._import_events(CAST(source AS pg_catalog.oid), strict) $$;

CREATE FUNCTION personalize.import_online_retail(source regclass)
RETURNS TABLE (accepted bigint, duplicates bigint, rejected bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $$ SELECT * FROM personalize._import_online_retail(CAST(source AS pg_catalog.oid)) $$;

CREATE FUNCTION personalize.import_retailrocket(source regclass)
RETURNS TABLE (accepted bigint, duplicates bigint, rejected bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
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
  FROM personalize.models m WHERE m.status = 'active';

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
COMMENT ON COLUMN personalize.events.client_event_id IS 'The sender''s id for this event; a retry with the same id is not stored twice';
COMMENT ON TABLE personalize.rejected_events IS 'Events that failed the tracking plan, with every violation and the original payload: nothing is silently dropped';
COMMENT ON COLUMN personalize.rejected_events.reasons IS 'Violation codes (missing_field, wrong_type, unknown_event_type, ...), one per violation';
COMMENT ON COLUMN personalize.rejected_events.violations IS 'Array of {code, path, message}, one per violation';
COMMENT ON COLUMN personalize.rejected_events.batch_position IS '1-based position of the event in its batch (or row number of an import)';
COMMENT ON TABLE personalize.items IS 'The catalogue: recommendations can be filtered by category and availability';
COMMENT ON VIEW personalize.status IS 'Counts of events by type, rejections by reason, catalogue size and the active models';
COMMENT ON TABLE personalize.models IS 'Trained models, one row per training run; at most one active model per name';
COMMENT ON COLUMN personalize.models.as_of IS 'Time decay was measured back from this time (default: the newest event)';
COMMENT ON TABLE personalize.model_users IS 'User factors of each model';
COMMENT ON TABLE personalize.model_items IS 'Item factors of each model';
COMMENT ON TABLE personalize.evaluations IS 'Offline evaluations: temporal hold-out metrics of ALS and a popularity baseline';
COMMENT ON FUNCTION personalize.train(text, integer, integer, real, real, interval, timestamptz, bigint, text, integer) IS 'Trains implicit-feedback ALS (conjugate gradient or Cholesky) on the event log: confidence = 1 + alpha * (sum of event-type weights, each halved every half-life before as_of). Writes the model and makes it the active model of its name in this transaction. NOTICE per iteration; honours cancel and statement_timeout.';
COMMENT ON FUNCTION personalize.evaluate(text, integer, double precision, integer, integer, real, real, interval, timestamptz, bigint, text, integer) IS 'Temporal hold-out (each user''s latest test_fraction of items): trains on the rest and returns precision, recall, NDCG, MAP @k and coverage for ALS and a popularity baseline; stores them in personalize.evaluations';
COMMENT ON FUNCTION personalize.activate_model(bigint) IS 'Makes a model version the active model of its name (e.g. to roll back)';
COMMENT ON FUNCTION personalize.drop_model(bigint) IS 'Deletes an inactive model version and its factors';
COMMENT ON FUNCTION personalize.prune_models(text, integer) IS 'Deletes all but the newest keep inactive versions of a model name; returns how many were deleted';

COMMENT ON FUNCTION personalize.track(jsonb, boolean) IS 'Tracks one event: stores it in personalize.events and returns its event_id (the earlier id for a repeated client_event_id), or quarantines it in personalize.rejected_events and returns NULL. strict => true raises instead (SQLSTATE 23514).';
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
COMMENT ON FUNCTION personalize.recommend(text, integer, text, text, text[], text, boolean, boolean) IS 'Top k items for a user from the active model of a name, best first. exclude: purchased (default), interacted or none; exclude_items; category and available_only filter inside the top-k. The user vector comes from training (source model), from fold-in of events newer than the model or of a user the model does not know (fold_in), or is missing (popularity). model_id says which model version answered.';
COMMENT ON FUNCTION personalize.recommend_for_session(text[], integer, text, boolean, text, boolean) IS 'Top k items for an anonymous session from the items it touched (fold-in: each occurrence counts one unit of strength); the session''s own items are left out unless exclude_seen is false';
COMMENT ON FUNCTION personalize.similar_items(text, integer, text, text, boolean) IS 'Items most similar to an item (cosine of item factors), excluding the item itself; an item the model does not know gets popular items (source popularity)';
COMMENT ON FUNCTION personalize.rank_items(text, text[], text, boolean) IS 'Re-ranks candidate items (a category page) by the user''s affinity, in-session events included: known items best first (ties keep the given order), then unknown items in the given order with a NULL score; duplicates keep their first place';
COMMENT ON FUNCTION personalize.explain_recommendation(text, text, integer, text) IS 'The n items of the user''s history that contribute most to an item''s fold-in score (the terms sum to score; share = contribution / score)';
COMMENT ON FUNCTION personalize.synthetic_items(integer, bigint) IS 'The deterministic synthetic catalogue (item_id, category, title, price) for a number of items and a seed';
COMMENT ON FUNCTION personalize.synthetic_events(bigint, integer, integer, bigint, timestamptz, integer) IS 'The deterministic synthetic shop''s events as track() JSON, in time order: events, users, items, seed, start, days';
COMMENT ON FUNCTION personalize.generate_shop(bigint, integer, integer, bigint, timestamptz, integer) IS 'Fills personalize.items with the synthetic catalogue and tracks the synthetic events through the tracking plan; idempotent for the same arguments (client_event_ids repeat)';
