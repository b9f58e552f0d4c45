-- pg_personalize 0.8.0 → 0.9.0: model memory shared by every connection; one definition of
-- quiet hours.
--   * Serving maps each model version's image from one file per server
--     ($PGDATA/pg_personalize), built from the model tables by the first backend that serves
--     the version, instead of copying the model into every backend. The files are derived
--     data, outside the database.
--   * personalize._after_quiet_hours is the Rust function the events trigger already used
--     (src/pg/quiet_hours.rs) instead of a second definition in SQL; same signature, result
--     and comment.
--   * Catalogue deletes mean gone: once personalize.items lists any item, serving leaves out
--     the items it does not list (Rust; the comments of recommend and rank_items say so).
--   * replay_rejected() and the quarantine's resolved_at / replayed_at; the status view
--     counts open rejections.
--   * Integer order, cart and list ids in the default plan; integer item ids in upsert_items.
--   * Consent: personalize.consents and channel_policies, set_consent(), suppress(),
--     unsubscribe_token() and unsubscribe(); the campaign trigger and claim_messages() check
--     them (Rust; the backends cache the opt-in policies with the campaigns, and a new
--     partial index, outbox_cancelled_idx, keeps a refused user to one record a day);
--     cancel_message() for a message a worker cannot deliver; release_message() for one it
--     hands back unsent.
--   * sync_catalogue(), sync_events() and stop_sync(): triggers on the shop's own tables.
--   * identify() and personalize.identities (an anonymous visitor logs in).
--   * forget_user() and its log, personalize.erasures (the right to be forgotten).
--   * Every function taking a user or item id also takes it of any type (sql/any_ids.sql).
--   * EASE with input dropout (EDLAE): train() takes dropout (left out: 0 when l2 is given,
--     else chosen on the validation split).
--   * One catalogue write, personalize._write_items(), behind upsert_item(), upsert_items() and
--     the catalogue sync (their bodies call it; same results).
--   * The segment predicates' SQL functions (bought(), viewed(), …) are generated from the
--     fragments compiled segments are built of (sql/segment_predicates.sql); same signatures,
--     results and comments.
-- tests/upgrade.sh checks that an updated database has exactly the catalogue of a fresh 0.9.0
-- install and passes the regression suite.
\echo Use "ALTER EXTENSION pg_personalize UPDATE TO '0.9.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION personalize._after_quiet_hours(t timestamptz, quiet_start time, quiet_end time, tz text)
RETURNS timestamptz
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_after_quiet_hours_wrapper';

-- The quarantine: two columns, last, as in a fresh install, and replay_rejected().
ALTER TABLE personalize.rejected_events ADD COLUMN resolved_at timestamptz, ADD COLUMN replayed_at timestamptz;
COMMENT ON COLUMN personalize.rejected_events.resolved_at IS 'When replay_rejected() stored the event (or found it already stored); NULL while the event is open';
COMMENT ON COLUMN personalize.rejected_events.replayed_at IS 'When replay_rejected() last checked the event; reasons and violations are from that check';
CREATE FUNCTION personalize.replay_rejected(reason text DEFAULT NULL, event_type text DEFAULT NULL,
                                            since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL)
RETURNS TABLE (replayed bigint, stored bigint, duplicates bigint, still_rejected bigint)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'replay_rejected_wrapper';
COMMENT ON FUNCTION personalize.replay_rejected(text, text, timestamptz, timestamptz) IS 'Checks open quarantined events (all, or those with this reason, event type, received since / before) again against the current tracking plan, as of when each arrived: those that pass are stored once (campaigns fire as for track(); a client_event_id already stored makes a duplicate) and marked resolved; the rest keep their row with fresh reasons. Returns replayed, stored, duplicates, still_rejected. NULL events, text that was not JSON and oversize events are never replayed.';

CREATE OR REPLACE VIEW personalize.status AS
SELECT 'events'::text AS section, e.event_type AS name, pg_catalog.count(*) AS value
  FROM personalize.events e GROUP BY e.event_type
UNION ALL
SELECT 'rejections', r.reason, pg_catalog.count(*)
  FROM personalize.rejected_events j, pg_catalog.unnest(j.reasons) AS r(reason)
 WHERE j.resolved_at IS NULL GROUP BY r.reason
UNION ALL
SELECT 'totals', 'events', (SELECT pg_catalog.count(*) FROM personalize.events)
UNION ALL
SELECT 'totals', 'rejected events', (SELECT pg_catalog.count(*) FROM personalize.rejected_events j WHERE j.resolved_at IS NULL)
UNION ALL
SELECT 'totals', 'rejected events resolved', (SELECT pg_catalog.count(*) FROM personalize.rejected_events j WHERE j.resolved_at IS NOT NULL)
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
COMMENT ON VIEW personalize.status IS 'Counts of events by type, open rejections by reason (open and resolved totals), catalogue size, the active models, the outbox, segments, campaigns and experiments';

-- The default plan's order, cart and list ids may be integers. Rows the shop changed
-- (origin 'shop') are the shop's and stay; the trigger that would mark these as the shop's
-- is off for these updates.
ALTER TABLE personalize.event_types DISABLE TRIGGER event_types_before_write;
UPDATE personalize.event_types t
   SET properties_schema = jsonb_set(t.properties_schema, '{properties,order_id}', '{"type": ["string", "integer"], "maxLength": 200}')
 WHERE t.origin = 'default' AND t.properties_schema -> 'properties' ? 'order_id';
UPDATE personalize.event_types t
   SET properties_schema = jsonb_set(t.properties_schema, '{properties,cart_id}', '{"type": ["string", "integer"], "maxLength": 200}')
 WHERE t.origin = 'default' AND t.properties_schema -> 'properties' ? 'cart_id';
UPDATE personalize.event_types t
   SET properties_schema = jsonb_set(t.properties_schema, '{properties,list_id}', '{"type": ["string", "integer"], "maxLength": 200}')
 WHERE t.origin = 'default' AND t.properties_schema -> 'properties' ? 'list_id';
ALTER TABLE personalize.event_types ENABLE TRIGGER event_types_before_write;

-- The one catalogue write: rows in, inserted or updated by item_id (each id once). A NULL
-- attributes, available or updated_at takes its default. only_changed leaves an item whose
-- values are the same untouched, its updated_at and the serving caches too (the syncs, which
-- see every row of the shop's table again); the upsert functions replace every item given.
-- Returns how many items were written.
CREATE FUNCTION personalize._write_items(items personalize.items[], only_changed boolean) RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
    WITH written AS (
        INSERT INTO personalize.items AS i (item_id, category, title, attributes, available, price, updated_at)
        SELECT r.item_id, r.category, r.title, COALESCE(r.attributes, '{}'), COALESCE(r.available, true),
               r.price, COALESCE(r.updated_at, now())
          FROM unnest(_write_items.items) AS r
        ON CONFLICT ON CONSTRAINT items_pkey DO UPDATE
           SET category = EXCLUDED.category, title = EXCLUDED.title, attributes = EXCLUDED.attributes,
               available = EXCLUDED.available, price = EXCLUDED.price, updated_at = EXCLUDED.updated_at
         WHERE NOT _write_items.only_changed
            OR (i.category, i.title, i.attributes, i.available, i.price)
               IS DISTINCT FROM (EXCLUDED.category, EXCLUDED.title, EXCLUDED.attributes, EXCLUDED.available,
                                 EXCLUDED.price)
        RETURNING 1)
    SELECT count(*) FROM written
$$;
COMMENT ON FUNCTION personalize._write_items(personalize.items[], boolean) IS 'Internal: the one catalogue write (insert or update by item_id) behind upsert_item(), upsert_items() and the catalogue sync; only_changed leaves unchanged items untouched; returns how many were written';

CREATE OR REPLACE FUNCTION personalize.upsert_item(
    item_id text,
    category text DEFAULT NULL,
    title text DEFAULT NULL,
    attributes jsonb DEFAULT '{}',
    available boolean DEFAULT true,
    price numeric DEFAULT NULL
) RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT personalize._write_items(
        ARRAY[CAST(ROW(upsert_item.item_id, upsert_item.category, upsert_item.title, upsert_item.attributes,
                       upsert_item.available, upsert_item.price, NULL) AS personalize.items)], false)
$$;

-- upsert_items() takes integer item ids.
CREATE OR REPLACE FUNCTION personalize.upsert_items(items jsonb) RETURNS integer
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
     WHERE jsonb_typeof(e) <> 'object'
        -- A string or an integer (a shop's product ids are often integers): 7 is stored as '7'.
        OR NOT (jsonb_typeof(e -> 'item_id') = 'string'
                OR (jsonb_typeof(e -> 'item_id') = 'number' AND (e ->> 'item_id') ~ '^-?[0-9]{1,19}$'))
        OR EXISTS (SELECT 1 FROM jsonb_object_keys(e) k
                    WHERE k NOT IN ('item_id', 'category', 'title', 'attributes', 'available', 'price'))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invalid item %', left(bad::text, 200)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Each item is an object with a string or integer item_id and optionally category, '
                      || 'title, attributes (object), available (boolean), price (number >= 0).';
    END IF;
    -- Keys an object leaves out keep their stored values; the last object for an id wins.
    -- updated_at is left out, so that every item written gets now().
    n := personalize._write_items(ARRAY(
        SELECT r
          FROM (SELECT DISTINCT ON (x.e ->> 'item_id') x.e
                  FROM jsonb_array_elements(items) WITH ORDINALITY AS x(e, n)
                 ORDER BY x.e ->> 'item_id', x.n DESC) AS latest
          LEFT JOIN personalize.items AS cur ON cur.item_id = latest.e ->> 'item_id',
               jsonb_populate_record(NULL::personalize.items,
                   (COALESCE(to_jsonb(cur), '{}') || latest.e) - 'updated_at') AS r), false);
    RETURN n;
END
$$;

-- Serving leaves out items a non-empty catalogue does not list.
COMMENT ON FUNCTION personalize.recommend(text, integer, text, text, text[], text, boolean, boolean) IS 'Top k items for a user from the active model of a name, best first. exclude: purchased (default), interacted or none; exclude_items; category and available_only filter inside the top-k; once personalize.items lists any item, items it does not list are never served. Scores come from the model (source model: the stored ALS vector, or an item-item model''s weights times the user''s history up to as_of), from fold-in of events newer than the model or of a user the model does not know (fold_in), from fold-in that weighs in the user''s current session (source session: events within personalize.session_window of now, at personalize.session_weight, for a user with earlier history), or from popularity (no usable history, or a popularity or trending model). model_id says which model version answered.';
COMMENT ON FUNCTION personalize.rank_items(text, text[], text, boolean) IS 'Re-ranks candidate items (a category page) by the user''s affinity, in-session events included: known items best first (ties keep the given order), then unknown items in the given order with a NULL score; duplicates keep their first place; items a non-empty catalogue does not list are left out';

-- Consent: whether a user may be contacted on a channel (or by one campaign), checked by the
-- campaign trigger when it writes a message and by claim_messages() when it hands one out. campaign '' is the whole channel.
CREATE TABLE personalize.consents (
    user_id    text NOT NULL,
    channel    text NOT NULL CHECK (channel IN ('email', 'push', 'sms', 'whatsapp', 'webhook')),
    campaign   text NOT NULL DEFAULT '',
    status     text NOT NULL CHECK (status IN ('subscribed', 'unsubscribed', 'suppressed')),
    source     text NOT NULL DEFAULT 'api' CHECK (pg_catalog.length(source) OPERATOR(pg_catalog.<=) 200),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (user_id, channel, campaign)
);
COMMENT ON TABLE personalize.consents IS 'Per user and channel (campaign '''': the whole channel; else one campaign): subscribed, unsubscribed or suppressed (hard bounce, complaint), with its source and time. the campaign trigger writes, and claim_messages() cancels, messages to users who unsubscribed or are suppressed, and on channels that need an opt-in, to users who did not subscribe, with the reason';
SELECT pg_catalog.pg_extension_config_dump('personalize.consents', '');

-- Which channels need an explicit opt-in. A channel without a row: push, sms and whatsapp do
-- (WhatsApp Business policy, ePrivacy), email and webhook do not. Only the shop's own rows
-- are kept here, so a restore never collides with defaults.
CREATE TABLE personalize.channel_policies (
    channel         text PRIMARY KEY CHECK (channel IN ('email', 'push', 'sms', 'whatsapp', 'webhook')),
    -- NULL: the channel's default.
    requires_opt_in boolean,
    -- Where the channel's addresses are: a table or view of the shop's with a user_id column
    -- and this address column. Looked up when a message is claimed, never copied.
    recipients      regclass,
    address_column  text,
    CONSTRAINT recipients_and_address_column CHECK ((recipients IS NULL) = (address_column IS NULL))
);
COMMENT ON TABLE personalize.channel_policies IS 'Per channel: whether messages need the user''s opt-in (a subscribed consent row; NULL or no row: push, sms and whatsapp do, email and webhook do not), and where its addresses are (recipients, a table or view with user_id and address_column, read when a message is claimed: a user without an address gets nothing)';
SELECT pg_catalog.pg_extension_config_dump('personalize.channel_policies', '');

CREATE FUNCTION personalize.unsubscribe_token(user_id text, channel text, campaign text DEFAULT NULL)
RETURNS text
STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'unsubscribe_token_wrapper';
CREATE FUNCTION personalize._unsubscribe_recipient(token text)
RETURNS TABLE (user_id text, channel text, campaign text)
STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', '_unsubscribe_recipient_wrapper';

------------------------------------------------------------------------------------------
-- Sync from the shop's own tables
------------------------------------------------------------------------------------------

-- A shop keeps its schema: sync_catalogue() keeps personalize.items equal to its product
-- table, sync_events() turns inserts into its order lines or page views into events, both
-- with triggers on the shop's tables that run inside the shop's own transactions. A mapping
-- names the shop's columns; a row that cannot be mapped is quarantined with its key
-- (personalize.rejected_events) and never aborts the shop's write, unless strict.

-- The catalogue mapping with its defaults (a column per field, named like the field).
CREATE FUNCTION personalize._catalogue_mapping(mapping jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '{"item_id": "item_id", "category": "category", "title": "title", "price": "price",
             "available": "available"}'::jsonb || COALESCE(mapping, '{}')
$$;
COMMENT ON FUNCTION personalize._catalogue_mapping(jsonb) IS 'Internal: sync_catalogue()''s mapping with the default column names filled in';

-- One catalogue row from a row of the shop's table (as jsonb). Raises on a value that does not
-- fit (the callers quarantine the row).
CREATE FUNCTION personalize._item_from_row(r jsonb, mapping jsonb) RETURNS personalize.items
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    item personalize.items;
    attrs jsonb := mapping -> 'attributes';
BEGIN
    item.item_id := r ->> (mapping ->> 'item_id');
    IF item.item_id IS NULL OR item.item_id = '' THEN
        RAISE EXCEPTION 'the row has no item id (column %)', mapping ->> 'item_id'
            USING ERRCODE = 'not_null_violation';
    END IF;
    item.category := r ->> (mapping ->> 'category');
    item.title := r ->> (mapping ->> 'title');
    item.price := CAST(r ->> (mapping ->> 'price') AS numeric);
    item.available := COALESCE(CAST(r ->> (mapping ->> 'available') AS boolean), true);
    -- attributes: one jsonb column, or a list of columns gathered into an object.
    item.attributes := CASE jsonb_typeof(attrs)
        WHEN 'string' THEN COALESCE(r -> (attrs #>> '{}'), '{}')
        WHEN 'array' THEN COALESCE((SELECT jsonb_object_agg(c, r -> c)
                                      FROM jsonb_array_elements_text(attrs) c WHERE r ? c), '{}')
        ELSE '{}' END;
    item.updated_at := now();
    RETURN item;
END
$$;
COMMENT ON FUNCTION personalize._item_from_row(jsonb, jsonb) IS 'Internal: the catalogue row a row of the shop''s product table maps to; raises when a value does not fit';

-- Writes one mapped row (insert or update); on a bad row quarantines it with its key instead
-- of raising, unless strict. Returns whether it was written.
CREATE FUNCTION personalize._sync_item(r jsonb, mapping jsonb, source text, strict boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    item personalize.items;
BEGIN
    item := personalize._item_from_row(r, mapping);
    PERFORM personalize._write_items(ARRAY[item], true);
    RETURN true;
EXCEPTION WHEN OTHERS THEN
    IF strict THEN
        RAISE;
    END IF;
    -- The catalogue must not keep serving what the shop's row no longer says: an item whose
    -- new values do not fit is taken out of stock until they do.
    UPDATE personalize.items i SET available = false, updated_at = now()
     WHERE i.item_id = r ->> (mapping ->> 'item_id') AND i.available;
    -- Once per bad row: a second sync of the same row adds no second rejection.
    INSERT INTO personalize.rejected_events (source, event_type, user_id, reasons, violations, payload)
    SELECT source, NULL, NULL, '{invalid_catalogue_row}',
           jsonb_build_array(jsonb_build_object('code', 'invalid_catalogue_row', 'path', '$', 'message', SQLERRM)),
           jsonb_build_object('key', r -> (mapping ->> 'item_id'), 'row', r)
     WHERE NOT EXISTS (SELECT FROM personalize.rejected_events j
                        WHERE j.resolved_at IS NULL AND j.source = _sync_item.source
                          AND j.payload = jsonb_build_object('key', r -> (mapping ->> 'item_id'), 'row', r));
    RETURN false;
END
$$;
COMMENT ON FUNCTION personalize._sync_item(jsonb, jsonb, text, boolean) IS 'Internal: writes one mapped product row to personalize.items, or quarantines it with its key (strict: raises)';

CREATE FUNCTION personalize._sync_items_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mapping CONSTANT jsonb := CAST(TG_ARGV[0] AS jsonb);
    is_strict CONSTANT boolean := CAST(TG_ARGV[1] AS boolean);
    source CONSTANT text := 'sync_catalogue:' || quote_ident(TG_TABLE_SCHEMA) || '.' || quote_ident(TG_TABLE_NAME);
    -- Checked on every row: a mapped column's type may have been altered since the sync.
    row_sql CONSTANT text := 'SELECT ' || personalize._mapped_row_sql(TG_RELID, '($1)', personalize._catalogue_columns(mapping));
    old_row jsonb;
    new_row jsonb;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        EXECUTE row_sql INTO old_row USING OLD;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        EXECUTE row_sql INTO new_row USING NEW;
    END IF;
    -- An update of columns the catalogue does not map changes nothing (and flushes no cache).
    IF TG_OP = 'UPDATE' AND old_row = new_row THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND old_row ->> (mapping ->> 'item_id') IS DISTINCT FROM new_row ->> (mapping ->> 'item_id')) THEN
        DELETE FROM personalize.items i WHERE i.item_id = old_row ->> (mapping ->> 'item_id');
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM personalize._sync_item(new_row, mapping, source, is_strict);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION personalize._sync_items_trigger() IS 'Trigger (installed by sync_catalogue()): mirrors each insert, update and delete of the shop''s product table into personalize.items';

-- The columns of a table a mapping names that it does not have.
CREATE FUNCTION personalize._missing_columns(source regclass, columns text[]) RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(array_agg(c ORDER BY c), '{}')
      FROM unnest(columns) c
     WHERE c IS NOT NULL
       AND NOT EXISTS (SELECT FROM pg_attribute a
                        WHERE a.attrelid = source AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped)
$$;
COMMENT ON FUNCTION personalize._missing_columns(regclass, text[]) IS 'Internal: the mapped columns a table does not have';

CREATE FUNCTION personalize._check_mapping(source regclass, columns text[]) RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    missing text[] := personalize._missing_columns(source, columns);
BEGIN
    IF source IS NULL THEN
        RAISE EXCEPTION 'the source table is NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(missing) > 0 THEN
        RAISE EXCEPTION 'table % has no column %', source, array_to_string(missing, ', ')
            USING ERRCODE = 'undefined_column',
                  HINT = 'Map the fields to its columns: ' || COALESCE((SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                      FROM pg_attribute a WHERE a.attrelid = source AND a.attnum > 0 AND NOT a.attisdropped), '(none)') || '.';
    END IF;
END
$$;
COMMENT ON FUNCTION personalize._check_mapping(regclass, text[]) IS 'Internal: raises 42703, naming the table''s columns, when a mapping names a column it does not have';

-- The SQL expression that reads a row's mapped columns (alias.col) into a jsonb object, after
-- checking that each is of a built-in type (or a domain over one). Only the mapped columns are
-- read, and only built-in types: the sync triggers run as personalize_definer, and to_jsonb of a
-- type a table owner created would run that owner's cast to json with the definer's rights.
CREATE FUNCTION personalize._mapped_row_sql(source regclass, alias text, columns text[]) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad text;
BEGIN
    PERFORM personalize._check_mapping(source, columns);
    SELECT string_agg(format('%I (%s)', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
      INTO bad
      FROM pg_attribute a
      JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_type b ON b.oid = t.typbasetype
     WHERE a.attrelid = source AND a.attname = ANY (columns) AND a.attnum > 0 AND NOT a.attisdropped
       AND NOT (t.typnamespace = CAST('pg_catalog' AS regnamespace)
                OR (t.typtype = 'd' AND b.typnamespace = CAST('pg_catalog' AS regnamespace)));
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'mapped column % of % is not of a built-in type', bad, source
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'Map columns of built-in types (text, integers, numeric, boolean, timestamptz, uuid, jsonb, ...); '
                      || 'for another type add a generated column that casts it.';
    END IF;
    RETURN 'pg_catalog.jsonb_build_object(' || COALESCE(
        (SELECT string_agg(format('%L, %s.%I', c, alias, c), ', ' ORDER BY c)
           FROM (SELECT DISTINCT c FROM unnest(columns) c WHERE c IS NOT NULL) x), '') || ')';
END
$$;
COMMENT ON FUNCTION personalize._mapped_row_sql(regclass, text, text[]) IS 'Internal: the expression reading a row''s mapped columns into jsonb; raises 42804 for a mapped column that is not of a built-in type';

-- The columns a catalogue mapping reads.
CREATE FUNCTION personalize._catalogue_columns(mapping jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(SELECT e.value #>> '{}' FROM jsonb_each(mapping) e WHERE jsonb_typeof(e.value) = 'string')
        || ARRAY(SELECT jsonb_array_elements_text(CASE jsonb_typeof(mapping -> 'attributes')
                                                  WHEN 'array' THEN mapping -> 'attributes' ELSE '[]' END))
$$;
COMMENT ON FUNCTION personalize._catalogue_columns(jsonb) IS 'Internal: the columns a sync_catalogue() mapping reads';

CREATE FUNCTION personalize.sync_catalogue(source regclass, mapping jsonb DEFAULT '{}', strict boolean DEFAULT false,
                                           remove_missing boolean DEFAULT true)
RETURNS TABLE (items_written bigint, items_removed bigint, rows_quarantined bigint)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m jsonb := personalize._catalogue_mapping(sync_catalogue.mapping);
    label text;
    row_sql text;
    failed text[] := '{}';
    r jsonb;
    item personalize.items;
    chunk personalize.items[] := '{}';
    written bigint := 0;
    quarantined bigint := 0;
    removed bigint := 0;
BEGIN
    IF jsonb_typeof(COALESCE(sync_catalogue.mapping, '{}')) <> 'object'
       OR EXISTS (SELECT FROM jsonb_object_keys(m) k
                   WHERE k NOT IN ('item_id', 'category', 'title', 'price', 'available', 'attributes')) THEN
        RAISE EXCEPTION 'invalid catalogue mapping %', left(CAST(sync_catalogue.mapping AS text), 200)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Map fields to the table''s columns: {"item_id": "product_id", "category": "category_name", '
                      || '"title": "name", "price": "price_eur", "available": "in_stock", "attributes": ["brand", "colour"]}.';
    END IF;
    -- Fields whose default column the table lacks are left out; an explicit one must exist.
    m := (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(m) e
           WHERE e.key = 'attributes' OR COALESCE(sync_catalogue.mapping, '{}') ? e.key
              OR cardinality(personalize._missing_columns(source, ARRAY[e.value #>> '{}'])) = 0);
    row_sql := personalize._mapped_row_sql(source, 's', personalize._catalogue_columns(m));
    IF NOT m ? 'item_id' THEN
        RAISE EXCEPTION 'the catalogue mapping needs an item_id column' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The trigger's label for the same table (schema-qualified, also for a temporary table).
    SELECT 'sync_catalogue:' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) INTO label
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source;
    -- The trigger first. CREATE TRIGGER locks the table against writes until this transaction
    -- ends, so the load sees every row and no write is missed; the shop's writes wait meanwhile.
    EXECUTE format('CREATE OR REPLACE TRIGGER personalize_sync_catalogue AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION personalize._sync_items_trigger(%L, %L)',
                   source, CAST(m AS text), CAST(strict AS text));
    -- The whole table in one subtransaction first, streamed in chunks of 10,000 items (memory
    -- stays bounded); only when a row does not fit (or a key repeats within a chunk) row by
    -- row, so that each bad row is quarantined alone. A load of 100,000 products that fit must
    -- not open 100,000 subtransactions.
    BEGIN
        FOR item IN EXECUTE format('SELECT it.* FROM %s s, LATERAL personalize._item_from_row(%s, $1) AS it',
                                   source, row_sql) USING m LOOP
            chunk := chunk || item;
            IF cardinality(chunk) >= 10000 THEN
                PERFORM personalize._write_items(chunk, true);
                chunk := '{}';
            END IF;
        END LOOP;
        PERFORM personalize._write_items(chunk, true);
        EXECUTE format('SELECT pg_catalog.count(*) FROM %s s', source) INTO written;
    EXCEPTION WHEN OTHERS THEN
        IF strict THEN
            RAISE;
        END IF;
        FOR r IN EXECUTE format('SELECT %s FROM %s s', row_sql, source) LOOP
            IF personalize._sync_item(r, m, label, strict) THEN
                written := written + 1;
            ELSE
                quarantined := quarantined + 1;
                failed := failed || (r ->> (m ->> 'item_id'));
            END IF;
        END LOOP;
    END;
    -- Rejections of rows that fit now (the shop corrected them) are resolved.
    UPDATE personalize.rejected_events j SET resolved_at = now()
     WHERE j.resolved_at IS NULL AND j.source = label AND 'invalid_catalogue_row' = ANY (j.reasons)
       AND NOT (j.payload ->> 'key' = ANY (failed))
       AND EXISTS (SELECT FROM personalize.items i WHERE i.item_id = j.payload ->> 'key');
    IF remove_missing THEN
        -- The key read exactly as the load read it.
        EXECUTE format('DELETE FROM personalize.items i WHERE NOT EXISTS '
                       '(SELECT FROM %s s WHERE (%s) OPERATOR(pg_catalog.->>) %L OPERATOR(pg_catalog.=) i.item_id)',
                       source, row_sql, m ->> 'item_id');
        GET DIAGNOSTICS removed = ROW_COUNT;
    END IF;
    RETURN QUERY SELECT written, removed, quarantined;
END
$$;
COMMENT ON FUNCTION personalize.sync_catalogue(regclass, jsonb, boolean, boolean) IS 'Keeps personalize.items equal to a shop''s product table: installs a trigger on it (inserts, updates and deletes are mirrored in the shop''s transaction) and loads it now; remove_missing deletes catalogue items the table does not have. mapping names its columns ({"item_id": "product_id", "category": ..., "title": ..., "price": ..., "available": ..., "attributes": ["col", ...] or "jsonb_col"}); unmapped fields default to columns of their own name when present. A row that does not fit is quarantined with its key (reason invalid_catalogue_row) and never aborts the shop''s write, unless strict. Idempotent. The trigger runs as personalize_definer: the roles that write the table need no rights on the extension.';

-- Page views or order lines to events: one statement trigger per source and event type.

-- The columns an event mapping reads.
CREATE FUNCTION personalize._event_columns(mapping jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(SELECT e.value #>> '{}' FROM jsonb_each(mapping) e WHERE e.key <> 'properties')
        || ARRAY(SELECT p.value FROM jsonb_each_text(COALESCE(mapping -> 'properties', '{}')) p)
$$;
COMMENT ON FUNCTION personalize._event_columns(jsonb) IS 'Internal: the columns a sync_events() mapping reads';

-- The query that turns the rows of `from_clause` (alias t) into batches of event envelopes
-- ($1: the event type, $2: the mapping), 5,000 per batch, well under max_batch_events.
-- skip_quarantined leaves out rows whose event is still quarantined (a second backfill).
CREATE FUNCTION personalize._event_batches_sql(row_expr text, from_clause text, skip_quarantined boolean) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'SELECT pg_catalog.array_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('
        || '''type'', $1, '
        || '''user_id'', x.r -> ($2 ->> ''user_id''), ''item_id'', x.r -> ($2 ->> ''item_id''), '
        || '''session_id'', x.r -> ($2 ->> ''session_id''), ''occurred_at'', x.r -> ($2 ->> ''occurred_at''), '
        || '''client_event_id'', x.r -> ($2 ->> ''client_event_id''), '
        || '''properties'', (SELECT pg_catalog.jsonb_object_agg(p.key, x.r -> p.value) '
        || 'FROM pg_catalog.jsonb_each_text($2 -> ''properties'') p '
        || 'WHERE pg_catalog.jsonb_typeof(x.r -> p.value) <> ''null''))) ORDER BY x.n) '
        || 'FROM (SELECT ' || row_expr || ' AS r, pg_catalog.row_number() OVER () - 1 AS n FROM ' || from_clause || ') x '
        || CASE WHEN skip_quarantined THEN
               'WHERE NOT EXISTS (SELECT FROM personalize.rejected_events j WHERE j.resolved_at IS NULL '
            || 'AND j.event_type = $1 AND j.client_event_id = x.r ->> ($2 ->> ''client_event_id'') '
            || 'AND j.user_id = x.r ->> ($2 ->> ''user_id'')) '
           ELSE '' END
        || 'GROUP BY x.n / 5000'
$$;
COMMENT ON FUNCTION personalize._event_batches_sql(text, text, boolean) IS 'Internal: the query that maps a table''s rows to batches of event envelopes';

CREATE FUNCTION personalize._sync_events_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    etype CONSTANT text := TG_ARGV[0];
    m CONSTANT jsonb := CAST(TG_ARGV[1] AS jsonb);
    is_strict CONSTANT boolean := CAST(TG_ARGV[2] AS boolean);
    batch jsonb[];
BEGIN
    -- Only the mapped columns, of built-in types (checked again on every statement: a column's
    -- type may have been altered since the sync).
    FOR batch IN EXECUTE personalize._event_batches_sql(
            personalize._mapped_row_sql(TG_RELID, 't', personalize._event_columns(m)),
            'personalize_new_rows t', false)
        USING etype, m
    LOOP
        PERFORM personalize.track_batch(batch, is_strict);
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION personalize._sync_events_trigger() IS 'Trigger (installed by sync_events()): tracks the rows a statement inserted into a shop''s table as events, through track_batch';

CREATE FUNCTION personalize.sync_events(source regclass, event_type text, mapping jsonb, strict boolean DEFAULT false,
                                        backfill boolean DEFAULT false)
RETURNS TABLE (accepted bigint, duplicates bigint, rejected bigint)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m jsonb := sync_events.mapping;
    trigger_name text;
    row_sql text;
    done record;
    a bigint := 0;
    d bigint := 0;
    j bigint := 0;
BEGIN
    IF m IS NULL OR jsonb_typeof(m) <> 'object' OR NOT m ? 'user_id'
       OR EXISTS (SELECT FROM jsonb_each(m) e
                   WHERE e.key NOT IN ('user_id', 'item_id', 'session_id', 'occurred_at', 'client_event_id', 'properties')
                      OR (e.key = 'properties') <> (jsonb_typeof(e.value) = 'object')
                      OR (e.key <> 'properties' AND jsonb_typeof(e.value) <> 'string'))
       OR EXISTS (SELECT FROM jsonb_each(COALESCE(m -> 'properties', '{}')) p WHERE jsonb_typeof(p.value) <> 'string') THEN
        RAISE EXCEPTION 'invalid event mapping %', left(CAST(m AS text), 200)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Map envelope fields and properties to the table''s columns, e.g. {"user_id": "customer_id", '
                      || '"item_id": "product_id", "occurred_at": "created_at", "client_event_id": "line_id", '
                      || '"properties": {"order_id": "order_id", "price": "unit_price", "quantity": "qty"}}.';
    END IF;
    IF NOT EXISTS (SELECT FROM personalize.event_types t WHERE t.event_type = sync_events.event_type) THEN
        RAISE EXCEPTION 'event type % is not in the tracking plan', quote_literal(left(sync_events.event_type, 100))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Add it to personalize.event_types first, or map to one of: '
                      || (SELECT string_agg(t.event_type, ', ' ORDER BY t.event_type) FROM personalize.event_types t) || '.';
    END IF;
    IF backfill AND NOT m ? 'client_event_id' THEN
        RAISE EXCEPTION 'backfill needs a client_event_id column in the mapping'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Map client_event_id to the row''s key (an order line id): it makes a second backfill store nothing twice.';
    END IF;
    row_sql := personalize._mapped_row_sql(source, 't', personalize._event_columns(m));
    IF m ? 'occurred_at' AND (SELECT a.atttypid FROM pg_attribute a
                               WHERE a.attrelid = source AND a.attname = m ->> 'occurred_at')
                             IS DISTINCT FROM CAST('timestamptz' AS regtype) THEN
        RAISE EXCEPTION 'column % of % is not a timestamptz', m ->> 'occurred_at', source
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'An event''s time needs its time zone: map a timestamptz column, or add a generated one '
                      || '(placed_at AT TIME ZONE ''Europe/Berlin'').';
    END IF;
    -- One trigger per table and event type; the name cannot collide with another type's or the
    -- catalogue's.
    trigger_name := 'personalize_sync_events_' || left(md5(sync_events.event_type), 16);
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS personalize_new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION personalize._sync_events_trigger(%L, %L, %L)',
                   trigger_name, source, sync_events.event_type, CAST(m AS text), CAST(strict AS text));
    IF backfill THEN
        FOR done IN EXECUTE 'SELECT b.* FROM (' || personalize._event_batches_sql(row_sql, format('%s t', source), true)
                            || ') AS c(events), personalize.track_batch(c.events, $3) b'
            USING sync_events.event_type, m, strict
        LOOP
            a := a + done.accepted;
            d := d + done.duplicates;
            j := j + done.rejected;
        END LOOP;
    END IF;
    RETURN QUERY SELECT a, d, j;
END
$$;
COMMENT ON FUNCTION personalize.sync_events(regclass, text, jsonb, boolean, boolean) IS 'Turns rows inserted into a shop''s table (order lines, page views) into events of one type, inside the shop''s transaction: installs a statement trigger on it; backfill also tracks the rows already there (needs a client_event_id column, so a second run stores nothing twice; rows still quarantined from an earlier run are not sent again: replay_rejected() retries them). mapping names its columns: {"user_id": ..., "item_id": ..., "session_id": ..., "occurred_at": ..., "client_event_id": ..., "properties": {"order_id": ..., "price": ...}}. Rows that fail the tracking plan are quarantined and never abort the shop''s write, unless strict. Idempotent. The trigger runs as personalize_definer: the roles that write the table need no rights on the extension.';

CREATE FUNCTION personalize.stop_sync(source regclass) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text;
    n integer := 0;
BEGIN
    FOR t IN SELECT g.tgname FROM pg_trigger g
              WHERE g.tgrelid = source AND NOT g.tgisinternal
                AND g.tgfoid IN (CAST('personalize._sync_items_trigger()' AS regprocedure),
                                 CAST('personalize._sync_events_trigger()' AS regprocedure)) LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t, source);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION personalize.stop_sync(regclass) IS 'Removes the triggers sync_catalogue() and sync_events() installed on a table; returns how many. The catalogue and events stay.';

------------------------------------------------------------------------------------------
-- Consent: who may be contacted, on which channel
------------------------------------------------------------------------------------------

-- One consent record, replacing the previous one for the same user, channel and campaign
-- (unless that one is a suppression and keep_suppression is set).
CREATE FUNCTION personalize._record_consent(user_id text, channel text, campaign text, status text,
                                            source text, keep_suppression boolean)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO personalize.consents AS k (user_id, channel, campaign, status, source, updated_at)
    VALUES (_record_consent.user_id, _record_consent.channel, COALESCE(_record_consent.campaign, ''),
            _record_consent.status, left(_record_consent.source, 200), now())
    ON CONFLICT ON CONSTRAINT consents_pkey
    DO UPDATE SET status = EXCLUDED.status, source = EXCLUDED.source, updated_at = EXCLUDED.updated_at
     WHERE NOT (_record_consent.keep_suppression AND k.status = 'suppressed')
$$;
COMMENT ON FUNCTION personalize._record_consent(text, text, text, text, text, boolean) IS 'Internal: writes one consent record (set_consent, suppress, unsubscribe)';

-- The app records a sign-up or an opt-out; the campaign trigger and claim_messages() check
-- every message against it.
CREATE FUNCTION personalize.set_consent(user_id text, channel text, subscribed boolean,
                                        source text DEFAULT 'api', campaign text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF set_consent.user_id IS NULL OR set_consent.user_id = '' OR set_consent.channel IS NULL
       OR set_consent.subscribed IS NULL THEN
        RAISE EXCEPTION 'set_consent needs a user id, a channel and subscribed true or false'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: set_consent(''U0000042'', ''whatsapp'', true, source => ''checkout opt-in'').';
    END IF;
    IF set_consent.channel NOT IN ('email', 'push', 'sms', 'whatsapp', 'webhook') THEN
        RAISE EXCEPTION 'unknown channel %', quote_literal(left(set_consent.channel, 100))
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Channels: email, push, sms, whatsapp, webhook.';
    END IF;
    -- An explicit choice of the user replaces whatever was recorded, a suppression included
    -- (a new opt-in after a bounce is a new address).
    PERFORM personalize._record_consent(set_consent.user_id, set_consent.channel, set_consent.campaign,
        CASE WHEN set_consent.subscribed THEN 'subscribed' ELSE 'unsubscribed' END,
        COALESCE(set_consent.source, 'api'), false);
END
$$;
COMMENT ON FUNCTION personalize.set_consent(text, text, boolean, text, text) IS 'Records that a user subscribed to (true) or unsubscribed from (false) a channel, or one campaign of it, with its source (a form, a link); replaces the previous record, a suppression included';

-- Fed by the worker: a hard bounce, a spam complaint, an invalid number.
CREATE FUNCTION personalize.suppress(user_id text, channel text, reason text)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF suppress.user_id IS NULL OR suppress.user_id = '' OR suppress.channel IS NULL
       OR suppress.channel NOT IN ('email', 'push', 'sms', 'whatsapp', 'webhook') THEN
        RAISE EXCEPTION 'suppress needs a user id and one of the channels email, push, sms, whatsapp, webhook'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: suppress(''U0000042'', ''email'', ''hard bounce: 550 no such user'').';
    END IF;
    PERFORM personalize._record_consent(suppress.user_id, suppress.channel, NULL, 'suppressed',
        'suppressed: ' || COALESCE(suppress.reason, 'no reason given'), false);
END
$$;
COMMENT ON FUNCTION personalize.suppress(text, text, text) IS 'Suppresses a user on a channel (a hard bounce, a spam complaint): no message on it goes out until the user subscribes again';

-- The unsubscribe link: the shop's web endpoint (or the worker's) passes the token on.
CREATE FUNCTION personalize.unsubscribe(token text)
RETURNS TABLE (user_id text, channel text, campaign text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM personalize._unsubscribe_recipient(unsubscribe.token);
    -- A link does not lift a suppression: the address still bounces.
    PERFORM personalize._record_consent(r.user_id, r.channel, r.campaign, 'unsubscribed', 'unsubscribe link', true);
    RETURN QUERY SELECT r.user_id, r.channel, r.campaign;
END
$$;
COMMENT ON FUNCTION personalize.unsubscribe(text) IS 'Applies an unsubscribe link''s token (unsubscribe_token()): the user it names is unsubscribed from its channel, or its campaign only. A token that was altered, forged or signed with another key is refused (22023); using one twice changes nothing more';

-- Recipients: the shop's addresses stay in the shop's tables. A policy names the table or
-- view and its address column; this checks them when the policy is written.
CREATE FUNCTION personalize._channel_policies_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing text[];
BEGIN
    IF NEW.recipients IS NOT NULL THEN
        missing := personalize._missing_columns(NEW.recipients, ARRAY['user_id', NEW.address_column]);
        IF cardinality(missing) > 0 THEN
            RAISE EXCEPTION 'recipients % has no column %', NEW.recipients, array_to_string(missing, ', ')
                USING ERRCODE = 'undefined_column',
                      HINT = 'Name a table or view with a user_id column and the address column, e.g. '
                          || 'CREATE VIEW shop.whatsapp_recipients AS SELECT customer_id AS user_id, phone FROM shop.customers;';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION personalize._channel_policies_before_write() IS 'Trigger: checks that a channel''s recipients table has user_id and the address column';
CREATE TRIGGER channel_policies_before_write
    BEFORE INSERT OR UPDATE ON personalize.channel_policies
    FOR EACH ROW EXECUTE FUNCTION personalize._channel_policies_before_write();
-- The backends cache the opt-in policies with the campaigns.
CREATE TRIGGER channel_policies_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.channel_policies
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._campaigns_changed();
COMMENT ON FUNCTION personalize._campaigns_changed() IS 'Trigger: tells every backend that the campaigns, frequency caps or channel policies changed';
COMMENT ON FUNCTION personalize._invalidate_campaign_cache() IS 'Internal: makes every backend re-read the campaigns, frequency caps and channel policies at commit';
-- A pair's messages cancelled before any claim: the campaign trigger writes a message the
-- user's consent refuses cancelled, with the reason, unless the pair has one from the last
-- day here (one record a day, not one per page view).
CREATE INDEX outbox_cancelled_idx ON personalize.outbox (campaign_id, user_id, created_at)
    WHERE state = 'cancelled' AND claimed_at IS NULL;

-- Which of these users have an address on the channel (all of them when the channel names no
-- recipients). Read as the caller: claim_messages() and recipient_address() run as
-- personalize_definer, which the DBA grants SELECT on the recipients table or view.
CREATE FUNCTION personalize._users_with_address(channel text, users text[]) RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p personalize.channel_policies;
    found text[];
BEGIN
    SELECT * INTO p FROM personalize.channel_policies c WHERE c.channel = _users_with_address.channel;
    IF p.recipients IS NULL THEN
        RETURN users;
    END IF;
    EXECUTE format('SELECT COALESCE(pg_catalog.array_agg(DISTINCT CAST(r.user_id AS pg_catalog.text)), ''{}'') FROM %s r '
                   'WHERE CAST(r.user_id AS pg_catalog.text) OPERATOR(pg_catalog.=) ANY ($1) '
                   'AND r.%I IS NOT NULL AND CAST(r.%I AS pg_catalog.text) OPERATOR(pg_catalog.<>) ''''',
                   p.recipients, p.address_column, p.address_column)
        INTO found USING users;
    RETURN found;
END
$$;
COMMENT ON FUNCTION personalize._users_with_address(text, text[]) IS 'Internal: the users among these with an address in the channel''s recipients (all of them when it names none)';

-- The worker's lookup for a claimed batch: one read of the recipients for all its users
-- (recipient_address() below is this for one). A user with no row has no row here; several
-- rows of one user: any one of them.
CREATE FUNCTION personalize.recipient_addresses(channel text, user_ids text[])
RETURNS TABLE (user_id text, address text)
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p personalize.channel_policies;
BEGIN
    -- An empty claim reads nothing (and raises nothing), as a claim of no message did before.
    IF COALESCE(cardinality(recipient_addresses.user_ids), 0) = 0 THEN
        RETURN;
    END IF;
    SELECT * INTO p FROM personalize.channel_policies c WHERE c.channel = recipient_addresses.channel;
    IF p.recipients IS NULL THEN
        RAISE EXCEPTION 'channel % names no recipients', quote_literal(left(recipient_addresses.channel, 100))
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'UPDATE personalize.channel_policies SET recipients = ''shop.whatsapp_recipients'', address_column = ''phone'' WHERE channel = ''whatsapp''; '
                      || 'and GRANT SELECT ON shop.whatsapp_recipients TO personalize_definer.';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT DISTINCT ON (1) CAST(r.user_id AS pg_catalog.text), CAST(r.%I AS pg_catalog.text) FROM %s r '
        'WHERE CAST(r.user_id AS pg_catalog.text) OPERATOR(pg_catalog.=) ANY ($1)',
        p.address_column, p.recipients)
        USING recipient_addresses.user_ids;
END
$$;
COMMENT ON FUNCTION personalize.recipient_addresses(text, text[]) IS 'recipient_address() for many users at once, in one read of the channel''s recipients: each user found with their address (NULL when the row has none); users not found are left out';

-- The worker's lookup when it sends (the address is never stored in the outbox): the batch
-- lookup for one user.
CREATE FUNCTION personalize.recipient_address(user_id text, channel text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT a.address
              FROM personalize.recipient_addresses(recipient_address.channel, ARRAY[recipient_address.user_id]) a)
$$;
COMMENT ON FUNCTION personalize.recipient_address(text, text) IS 'The user''s address on a channel, read from the channel''s recipients table or view when the worker sends (never stored in the outbox); NULL when the user has none';

-- The Rust functions' comments (their code: see CONTRIBUTING.md's function table).
COMMENT ON FUNCTION personalize.unsubscribe_token(text, text, text) IS 'The token of an unsubscribe link for a user on a channel (campaign: that campaign only), signed with personalize.unsubscribe_secret (HMAC-SHA-256): unsubscribe() accepts it for this user and nobody else';
COMMENT ON FUNCTION personalize._unsubscribe_recipient(text) IS 'Internal: who an unsubscribe token names, after checking its signature (22023 when it does not match)';

-- A worker that cannot deliver a message at all (no address on file for its channel, an
-- address the provider refuses for good) ends it as cancelled with the reason, instead of
-- failing it into `dead` after max_attempts retries that cannot succeed.
CREATE FUNCTION personalize.cancel_message(message_id bigint, lease_token uuid, reason text)
RETURNS boolean
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
    WITH done AS (
        UPDATE personalize.outbox o
           SET state = 'cancelled', finished_at = now(),
               last_error = left(COALESCE(cancel_message.reason, 'cancelled by the worker'), 2000)
         WHERE o.message_id = cancel_message.message_id AND o.lease_token = cancel_message.lease_token
           AND o.state = 'claimed'
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM done)
$$;
COMMENT ON FUNCTION personalize.cancel_message(bigint, uuid, text) IS 'Ends a claimed message as cancelled with the reason (no address on its channel, a permanent refusal): never retried; false when the lease is no longer held';

-- A worker that holds a message it has not sent (it is stopping, or its channel's
-- credentials are being refused) hands it back: pending again, due after retry_in, and the
-- claim does not count as an attempt, so a restart or a bad key never makes a message dead.
CREATE FUNCTION personalize.release_message(message_id bigint, lease_token uuid, retry_in interval DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM personalize._check_duration('retry_in', retry_in, interval '7 days', true,
        'Omit it to make the message due again at once.');
    UPDATE personalize.outbox o
       SET state = 'pending', lease_token = NULL, claimed_at = NULL,
           attempts = greatest(o.attempts - 1, 0),
           visible_at = now() + COALESCE(release_message.retry_in, interval '0')
     WHERE o.message_id = release_message.message_id AND o.lease_token = release_message.lease_token
       AND o.state = 'claimed';
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION personalize.release_message(bigint, uuid, interval) IS 'Hands a claimed, unsent message back: pending again after retry_in (default at once), its claim not counted as an attempt; false when the lease is no longer held';

-- Anonymous visitors identified as customers by identify(): the last customer each anonymous
-- id was linked to.
CREATE TABLE personalize.identities (
    anonymous_id  text PRIMARY KEY,
    user_id       text NOT NULL,
    identified_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE personalize.identities IS 'identify(): each anonymous id and the customer its events were moved to';
SELECT pg_catalog.pg_extension_config_dump('personalize.identities', '');
CREATE INDEX identities_user_idx ON personalize.identities (user_id);

------------------------------------------------------------------------------------------
-- Identity: an anonymous visitor logs in
------------------------------------------------------------------------------------------

-- Segment's identify / alias, done once at login: the visitor's events become the customer's
-- (so their session counts for the customer's recommendations, segments and campaigns from
-- the next call), and a pending campaign message follows them.
CREATE FUNCTION personalize.identify(anonymous_id text, user_id text)
RETURNS TABLE (events_moved bigint, messages_moved bigint, messages_cancelled bigint)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a CONSTANT text := identify.anonymous_id;
    u CONSTANT text := identify.user_id;
    moved bigint;
    followed bigint;
    cancelled bigint;
BEGIN
    IF a IS NULL OR a = '' OR u IS NULL OR u = '' THEN
        RAISE EXCEPTION 'identify needs an anonymous id and a user id, got % and %',
                COALESCE(quote_literal(left(a, 100)), 'NULL'), COALESCE(quote_literal(left(u, 100)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Call it at login: identify(''anon-7f3a'', ''U0000042'').';
    END IF;
    IF a = u THEN
        RAISE EXCEPTION 'identify: the anonymous id and the user id are the same (%)', quote_literal(left(a, 100))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the id the visitor''s events were tracked with and the customer''s id.';
    END IF;
    -- A client_event_id is unique per user and event type. An anonymous event the customer
    -- already has under the same id, item and properties is the same event sent again (an
    -- app's retry after login): it is dropped, not counted twice. One with other content under
    -- a used id is a different event: it moves without the id, so nothing is lost. A track()
    -- of the user committing between these statements can still take an id first: then the
    -- merge is tried again (the statements only ever see committed events).
    FOR attempt IN 1..3 LOOP
        BEGIN
            DELETE FROM personalize.events e
             WHERE e.user_id = a AND e.client_event_id IS NOT NULL
               AND EXISTS (SELECT FROM personalize.events c
                            WHERE c.client_event_id = e.client_event_id AND c.user_id = u
                              AND c.event_type = e.event_type
                              AND c.item_id IS NOT DISTINCT FROM e.item_id AND c.properties = e.properties);
            UPDATE personalize.events e SET client_event_id = NULL
             WHERE e.user_id = a AND e.client_event_id IS NOT NULL
               AND EXISTS (SELECT FROM personalize.events c
                            WHERE c.client_event_id = e.client_event_id AND c.user_id = u
                              AND c.event_type = e.event_type);
            UPDATE personalize.events e SET user_id = u WHERE e.user_id = a;
            GET DIAGNOSTICS moved = ROW_COUNT;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            IF attempt = 3 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    -- One pending message per campaign and user: the visitor's is cancelled where the
    -- customer already has one, and follows the customer otherwise. The customer's own
    -- message can be written meanwhile: then both steps are tried again.
    FOR attempt IN 1..3 LOOP
        BEGIN
            UPDATE personalize.outbox o
               SET state = 'cancelled', finished_at = now(),
                   last_error = 'identified as a customer with this campaign''s message already pending'
             WHERE o.user_id = a AND o.state = 'pending'
               AND EXISTS (SELECT FROM personalize.outbox p
                            WHERE p.campaign_id = o.campaign_id AND p.user_id = u AND p.state = 'pending');
            GET DIAGNOSTICS cancelled = ROW_COUNT;
            UPDATE personalize.outbox o SET user_id = u WHERE o.user_id = a AND o.state = 'pending';
            GET DIAGNOSTICS followed = ROW_COUNT;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            IF attempt = 3 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    INSERT INTO personalize.identities AS i (anonymous_id, user_id) VALUES (a, u)
    ON CONFLICT ON CONSTRAINT identities_pkey
    DO UPDATE SET user_id = EXCLUDED.user_id, identified_at = now();
    RETURN QUERY SELECT moved, followed, cancelled;
END
$$;
COMMENT ON FUNCTION personalize.identify(text, text) IS 'An anonymous visitor logged in: moves the anonymous id''s events to the user id (an event the user already has under the same client_event_id, item and properties is dropped as a repeat; one with other content under a used id moves without the id), moves its pending campaign messages (cancelling those whose campaign already has one pending for the user) and records the link in personalize.identities. Idempotent; events tracked under the anonymous id later need another call. Returns events_moved, messages_moved, messages_cancelled.';

-- Erasures done by forget_user(): when, by whom, how many rows of each table. No user id and
-- nothing else about the person: the log proves the erasure without keeping what was erased.
CREATE TABLE personalize.erasures (
    erasure_id   bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    erased_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    erased_by    name NOT NULL DEFAULT CURRENT_USER,
    rows_deleted jsonb NOT NULL
);
COMMENT ON TABLE personalize.erasures IS 'Erasure log of forget_user(): time, role and rows deleted per table; holds no user id';
SELECT pg_catalog.pg_extension_config_dump('personalize.erasures', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.erasures_erasure_id_seq', '');

------------------------------------------------------------------------------------------
-- Privacy: the right to be forgotten
------------------------------------------------------------------------------------------

-- Every table that holds a user id, in one place: tests/pg_regress/sql/privacy.sql checks
-- that no table of the extension with a user column, or whose rows mention an erased user
-- after a whole personalization loop ran, is missing from this function.
CREATE FUNCTION personalize.forget_user(user_id text)
RETURNS TABLE (table_name text, rows_deleted bigint)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u CONSTANT text := forget_user.user_id;
    -- The user and every anonymous id identify() linked to them.
    ids text[];
    counts jsonb := '{}';
    n bigint;
BEGIN
    IF u IS NULL OR u = '' THEN
        RAISE EXCEPTION 'forget_user needs a user id, got %', COALESCE(quote_literal(u), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the id the user''s events were tracked with, e.g. forget_user(''U0000042'').';
    END IF;
    -- Events committed for the user after this runs are new data: callers stop tracking the
    -- user first (the README's erasure section says so).
    ids := ARRAY[u] || ARRAY(SELECT i.anonymous_id FROM personalize.identities i WHERE i.user_id = u);
    DELETE FROM personalize.events e WHERE e.user_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('events', n);

    -- The quarantine: by the envelope's user id, also when it was sent as a number or the
    -- rejection could not read it (then only the payload has it).
    DELETE FROM personalize.rejected_events r
     WHERE r.user_id = ANY (ids)
        OR r.payload ->> 'user_id' = ANY (ids)
        OR r.payload ->> 'anonymous_id' = ANY (ids)
        -- Text that was not JSON (kept as a JSON string) and an oversize event's first
        -- kilobyte: those whose user_id or anonymous_id field is the id.
        OR EXISTS (SELECT FROM unnest(ids) i
                    WHERE (CASE WHEN jsonb_typeof(r.payload) = 'string' THEN r.payload #>> '{}'
                                ELSE r.payload ->> 'prefix' END)
                          ~ ('"(user_id|anonymous_id)"\s*:\s*"?'
                             || regexp_replace(i, '([.^$*+?()\[\]{}|\\])', '\\\1', 'g')
                             || '"?\s*[,}]'));
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('rejected_events', n);

    -- Every model version's row of the user (factors and purchases): the next recommend()
    -- treats them as a stranger. Item rows are aggregates over all users and stay.
    DELETE FROM personalize.model_users m
     WHERE m.model_id IN (SELECT model_id FROM personalize.models) AND m.user_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('model_users', n);

    DELETE FROM personalize.outbox o WHERE o.user_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('outbox', n);

    DELETE FROM personalize.outbox_archive a WHERE a.user_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('outbox_archive', n);

    DELETE FROM personalize.exposures x WHERE x.user_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('exposures', n);

    DELETE FROM personalize.consents k WHERE k.user_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('consents', n);

    DELETE FROM personalize.identities i WHERE i.user_id = u OR i.anonymous_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('identities', n);

    INSERT INTO personalize.erasures (rows_deleted) VALUES (counts);
    RETURN QUERY SELECT c.key, c.value::bigint FROM jsonb_each_text(counts) c ORDER BY c.key;
END
$$;
COMMENT ON FUNCTION personalize.forget_user(text) IS 'Right to be forgotten: deletes the events, quarantined events, model rows of every model version, outbox and archived messages, experiment exposures, consent records and identity links of the user and of the anonymous ids identify() linked to them, in this transaction, and logs the erasure (time, role, rows per table; no user id) in personalize.erasures. The next recommend() treats the user as a stranger. Stop tracking the user first: events stored after it are new data.';

------------------------------------------------------------------------------------------
-- Ids of any type
------------------------------------------------------------------------------------------

-- A shop's user and item ids are integers (or UUIDs) more often than not. Every function that
-- takes a user or item id has, beside its text form, a form whose id argument is polymorphic
-- (anyelement; anycompatible for a second id of another type) and that calls the text form
-- with the id's text: 7 and '7' are the same id, as they are when an event sends them. A
-- quoted literal still resolves to the text form (a string literal prefers the string
-- category), so existing calls are unchanged. Lists of ids (item_ids, exclude_items) stay
-- text[]: a polymorphic array beside text[] makes an untyped '{...}' literal ambiguous, so a
-- shop passes ARRAY[...]::text[]. Optional ids with a default (a predicate's item_id) stay
-- text: a polymorphic argument cannot default to NULL. tests/pg_regress/sql/shop_data.sql
-- checks that every function with a user or item id argument has this form.

CREATE FUNCTION personalize.recommend(user_id anyelement, k integer DEFAULT 10, model text DEFAULT 'default', exclude text DEFAULT 'purchased', exclude_items text[] DEFAULT NULL, category text DEFAULT NULL, available_only boolean DEFAULT true, fold_in boolean DEFAULT true)
RETURNS TABLE (item_id text, score real, source text, model_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.recommend(CAST(recommend.user_id AS pg_catalog.text), recommend.k, recommend.model, recommend.exclude, recommend.exclude_items, recommend.category, recommend.available_only, recommend.fold_in) $$;
COMMENT ON FUNCTION personalize.recommend(anyelement, integer, text, text, text[], text, boolean, boolean) IS 'recommend() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.similar_items(item_id anyelement, k integer DEFAULT 10, model text DEFAULT 'default', category text DEFAULT NULL, available_only boolean DEFAULT true)
RETURNS TABLE (item_id text, score real, source text, model_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.similar_items(CAST(similar_items.item_id AS pg_catalog.text), similar_items.k, similar_items.model, similar_items.category, similar_items.available_only) $$;
COMMENT ON FUNCTION personalize.similar_items(anyelement, integer, text, text, boolean) IS 'similar_items() with item_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.rank_items(user_id anyelement, item_ids text[], model text DEFAULT 'default', fold_in boolean DEFAULT true)
RETURNS TABLE (item_id text, rank integer, score real)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.rank_items(CAST(rank_items.user_id AS pg_catalog.text), rank_items.item_ids, rank_items.model, rank_items.fold_in) $$;
COMMENT ON FUNCTION personalize.rank_items(anyelement, text[], text, boolean) IS 'rank_items() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.explain_recommendation(user_id anyelement, item_id anycompatible, n integer DEFAULT 5, model text DEFAULT 'default')
RETURNS TABLE (because_of text, contribution real, share real, score real)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.explain_recommendation(CAST(explain_recommendation.user_id AS pg_catalog.text), CAST(explain_recommendation.item_id AS pg_catalog.text), explain_recommendation.n, explain_recommendation.model) $$;
COMMENT ON FUNCTION personalize.explain_recommendation(anyelement, anycompatible, integer, text) IS 'explain_recommendation() with user_id and item_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.assign_variant(experiment text, user_id anyelement)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.assign_variant(assign_variant.experiment, CAST(assign_variant.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.assign_variant(text, anyelement) IS 'assign_variant() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.variant_model(experiment text, user_id anyelement)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.variant_model(variant_model.experiment, CAST(variant_model.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.variant_model(text, anyelement) IS 'variant_model() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.log_exposure(experiment text, user_id anyelement, placement text DEFAULT NULL)
RETURNS text
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.log_exposure(log_exposure.experiment, CAST(log_exposure.user_id AS pg_catalog.text), log_exposure.placement) $$;
COMMENT ON FUNCTION personalize.log_exposure(text, anyelement, text) IS 'log_exposure() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.in_segment(user_id anyelement, segment text)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.in_segment(CAST(in_segment.user_id AS pg_catalog.text), in_segment.segment) $$;
COMMENT ON FUNCTION personalize.in_segment(anyelement, text) IS 'in_segment() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.user_segments(user_id anyelement)
RETURNS SETOF text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.user_segments(CAST(user_segments.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.user_segments(anyelement) IS 'user_segments() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.bought(user_id anyelement, category text DEFAULT NULL, within interval DEFAULT NULL, item_id text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.bought(CAST(bought.user_id AS pg_catalog.text), bought.category, bought.within, bought.item_id) $$;
COMMENT ON FUNCTION personalize.bought(anyelement, text, interval, text) IS 'bought() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.viewed(user_id anyelement, category text DEFAULT NULL, within interval DEFAULT NULL, item_id text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.viewed(CAST(viewed.user_id AS pg_catalog.text), viewed.category, viewed.within, viewed.item_id) $$;
COMMENT ON FUNCTION personalize.viewed(anyelement, text, interval, text) IS 'viewed() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.viewed_without_buying(user_id anyelement, category text DEFAULT NULL, within interval DEFAULT NULL, item_id text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.viewed_without_buying(CAST(viewed_without_buying.user_id AS pg_catalog.text), viewed_without_buying.category, viewed_without_buying.within, viewed_without_buying.item_id) $$;
COMMENT ON FUNCTION personalize.viewed_without_buying(anyelement, text, interval, text) IS 'viewed_without_buying() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.event_count(user_id anyelement, event_type text, within interval DEFAULT NULL)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.event_count(CAST(event_count.user_id AS pg_catalog.text), event_count.event_type, event_count.within) $$;
COMMENT ON FUNCTION personalize.event_count(anyelement, text, interval) IS 'event_count() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.total_spend(user_id anyelement, within interval DEFAULT NULL)
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.total_spend(CAST(total_spend.user_id AS pg_catalog.text), total_spend.within) $$;
COMMENT ON FUNCTION personalize.total_spend(anyelement, interval) IS 'total_spend() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.average_order_value(user_id anyelement, within interval DEFAULT NULL)
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.average_order_value(CAST(average_order_value.user_id AS pg_catalog.text), average_order_value.within) $$;
COMMENT ON FUNCTION personalize.average_order_value(anyelement, interval) IS 'average_order_value() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.last_seen(user_id anyelement)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.last_seen(CAST(last_seen.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.last_seen(anyelement) IS 'last_seen() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.days_since_last_purchase(user_id anyelement)
RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.days_since_last_purchase(CAST(days_since_last_purchase.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.days_since_last_purchase(anyelement) IS 'days_since_last_purchase() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.upsert_item(item_id anyelement, category text DEFAULT NULL, title text DEFAULT NULL, attributes jsonb DEFAULT '{}', available boolean DEFAULT true, price numeric DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.upsert_item(CAST(upsert_item.item_id AS pg_catalog.text), upsert_item.category, upsert_item.title, upsert_item.attributes, upsert_item.available, upsert_item.price) $$;
COMMENT ON FUNCTION personalize.upsert_item(anyelement, text, text, jsonb, boolean, numeric) IS 'upsert_item() with item_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.set_consent(user_id anyelement, channel text, subscribed boolean, source text DEFAULT 'api', campaign text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.set_consent(CAST(set_consent.user_id AS pg_catalog.text), set_consent.channel, set_consent.subscribed, set_consent.source, set_consent.campaign) $$;
COMMENT ON FUNCTION personalize.set_consent(anyelement, text, boolean, text, text) IS 'set_consent() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.suppress(user_id anyelement, channel text, reason text)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.suppress(CAST(suppress.user_id AS pg_catalog.text), suppress.channel, suppress.reason) $$;
COMMENT ON FUNCTION personalize.suppress(anyelement, text, text) IS 'suppress() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.unsubscribe_token(user_id anyelement, channel text, campaign text DEFAULT NULL)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.unsubscribe_token(CAST(unsubscribe_token.user_id AS pg_catalog.text), unsubscribe_token.channel, unsubscribe_token.campaign) $$;
COMMENT ON FUNCTION personalize.unsubscribe_token(anyelement, text, text) IS 'unsubscribe_token() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.recipient_address(user_id anyelement, channel text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT personalize.recipient_address(CAST(recipient_address.user_id AS pg_catalog.text), recipient_address.channel) $$;
COMMENT ON FUNCTION personalize.recipient_address(anyelement, text) IS 'recipient_address() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.identify(anonymous_id anycompatible, user_id anyelement)
RETURNS TABLE (events_moved bigint, messages_moved bigint, messages_cancelled bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.identify(CAST(identify.anonymous_id AS pg_catalog.text), CAST(identify.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.identify(anycompatible, anyelement) IS 'identify() with anonymous_id and user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

CREATE FUNCTION personalize.forget_user(user_id anyelement)
RETURNS TABLE (table_name text, rows_deleted bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize.forget_user(CAST(forget_user.user_id AS pg_catalog.text)) $$;
COMMENT ON FUNCTION personalize.forget_user(anyelement) IS 'forget_user() with user_id of any type (integer, bigint, uuid, …), compared as text: 7 and ''7'' are the same id';

-- train() takes EASE's dropout: a new signature (the old one is served by the library's
-- train_models until this runs).
DROP FUNCTION personalize.train(text, integer, integer, real, real, interval, timestamptz, bigint, text, integer, text, double precision, integer, double precision, real);
CREATE FUNCTION personalize.train(
	"model_name" TEXT DEFAULT 'default',
	"factors" INT DEFAULT NULL,
	"iterations" INT DEFAULT NULL,
	"regularization" real DEFAULT NULL,
	"alpha" real DEFAULT NULL,
	"window" interval DEFAULT NULL,
	"as_of" timestamp with time zone DEFAULT NULL,
	"seed" bigint DEFAULT 42,
	"solver" TEXT DEFAULT NULL,
	"cg_steps" INT DEFAULT NULL,
	"model_type" TEXT DEFAULT NULL,
	"l2" double precision DEFAULT NULL,
	"neighbors" INT DEFAULT NULL,
	"beta" double precision DEFAULT NULL,
	"frequency_scaling" real DEFAULT NULL,
	"dropout" double precision DEFAULT NULL
) RETURNS TABLE (
	"model_id" bigint,
	"model_name" TEXT,
	"users" INT,
	"items" INT,
	"interactions" bigint,
	"final_loss" double precision,
	"read_seconds" double precision,
	"train_seconds" double precision,
	"write_seconds" double precision
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'train_recommender_wrapper';
COMMENT ON FUNCTION personalize.train(text, integer, integer, real, real, interval, timestamptz, bigint, text, integer, text, double precision, integer, double precision, real, double precision) IS 'Trains a recommender on the event log (per user and item: event-type weights, each halved every half-life before as_of) and makes it the active model of its name in this transaction. model_type auto (the default) fits popularity, trending (recency-weighted popularity), RP3beta (item-item random walk), EASE (item-item regression, when its dense solve fits personalize.training_memory_mb) a small ALS grid and blends of the best EASE and RP3beta on a temporal validation split, cheapest first within personalize.training_time_budget, keeps the best by NDCG@10 (see personalize.model_selection) and refits it on all the data; als, ease, rp3beta, popularity or trending train that family (ALS: factors, iterations, regularization, alpha, solver, cg_steps, frequency_scaling; EASE: l2, dropout, neighbors; RP3beta: beta, neighbors; a parameter left out is chosen on the validation split, or for ALS takes its old default). Without arguments a name is trained as it was last time. NOTICE per step; honours cancel and statement_timeout.';

-- The segment predicates as sql/segment_predicates.sql generates them (core::segments).
CREATE OR REPLACE FUNCTION personalize.bought(user_id text, category text DEFAULT NULL, within interval DEFAULT NULL, item_id text DEFAULT NULL) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM personalize.events e LEFT JOIN personalize.items i ON i.item_id OPERATOR(pg_catalog.=) e.item_id
         WHERE e.user_id OPERATOR(pg_catalog.=) bought.user_id
           AND e.event_type OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT t.event_type FROM personalize.event_types t WHERE t.is_purchase))
           AND (bought.within IS NULL OR e.occurred_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) bought.within))
           AND (bought.item_id IS NULL OR e.item_id OPERATOR(pg_catalog.=) bought.item_id)
           AND (bought.category IS NULL OR (e.properties OPERATOR(pg_catalog.->>) 'category' OPERATOR(pg_catalog.=) bought.category OR i.category OPERATOR(pg_catalog.=) bought.category)))
$$;
COMMENT ON FUNCTION personalize.bought(text, text, interval, text) IS 'Whether the user bought (an is_purchase event type) anything, in a category, an item, within an interval (NULL arguments: no restriction)';

CREATE OR REPLACE FUNCTION personalize.viewed(user_id text, category text DEFAULT NULL, within interval DEFAULT NULL, item_id text DEFAULT NULL) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM personalize.events e LEFT JOIN personalize.items i ON i.item_id OPERATOR(pg_catalog.=) e.item_id
         WHERE e.user_id OPERATOR(pg_catalog.=) viewed.user_id
           AND e.event_type OPERATOR(pg_catalog.=) 'view'
           AND (viewed.within IS NULL OR e.occurred_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) viewed.within))
           AND (viewed.item_id IS NULL OR e.item_id OPERATOR(pg_catalog.=) viewed.item_id)
           AND (viewed.category IS NULL OR (e.properties OPERATOR(pg_catalog.->>) 'category' OPERATOR(pg_catalog.=) viewed.category OR i.category OPERATOR(pg_catalog.=) viewed.category)))
$$;
COMMENT ON FUNCTION personalize.viewed(text, text, interval, text) IS 'Whether the user viewed (event type view) anything, in a category, an item, within an interval';

CREATE OR REPLACE FUNCTION personalize.viewed_without_buying(user_id text, category text DEFAULT NULL, within interval DEFAULT NULL, item_id text DEFAULT NULL) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT personalize.viewed(viewed_without_buying.user_id, viewed_without_buying.category, viewed_without_buying.within, viewed_without_buying.item_id)
       AND NOT personalize.bought(viewed_without_buying.user_id, viewed_without_buying.category, viewed_without_buying.within, viewed_without_buying.item_id)
$$;
COMMENT ON FUNCTION personalize.viewed_without_buying(text, text, interval, text) IS 'Viewed in the scope (category, item, within) and bought nothing in the same scope';

CREATE OR REPLACE FUNCTION personalize.event_count(user_id text, event_type text, within interval DEFAULT NULL) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.count(*)
      FROM personalize.events e
     WHERE e.user_id OPERATOR(pg_catalog.=) event_count.user_id
       AND e.event_type OPERATOR(pg_catalog.=) event_count.event_type
       AND (event_count.within IS NULL OR e.occurred_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) event_count.within))
$$;
COMMENT ON FUNCTION personalize.event_count(text, text, interval) IS 'How many events of a type the user has (within an interval)';

CREATE OR REPLACE FUNCTION personalize.total_spend(user_id text, within interval DEFAULT NULL) RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE(pg_catalog.sum(personalize._event_value(e.properties, i.price)), 0)
      FROM personalize.events e LEFT JOIN personalize.items i ON i.item_id OPERATOR(pg_catalog.=) e.item_id
     WHERE e.user_id OPERATOR(pg_catalog.=) total_spend.user_id
       AND e.event_type OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT t.event_type FROM personalize.event_types t WHERE t.is_purchase))
       AND (total_spend.within IS NULL OR e.occurred_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) total_spend.within))
$$;
COMMENT ON FUNCTION personalize.total_spend(text, interval) IS 'Sum of the user''s purchase values (price times quantity) within an interval; 0 without purchases';

CREATE OR REPLACE FUNCTION personalize.average_order_value(user_id text, within interval DEFAULT NULL) RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (pg_catalog.sum(personalize._event_value(e.properties, i.price)) OPERATOR(pg_catalog./) pg_catalog.count(DISTINCT COALESCE(e.properties OPERATOR(pg_catalog.->>) 'order_id', CAST(e.event_id AS pg_catalog.text))))
      FROM personalize.events e LEFT JOIN personalize.items i ON i.item_id OPERATOR(pg_catalog.=) e.item_id
     WHERE e.user_id OPERATOR(pg_catalog.=) average_order_value.user_id
       AND e.event_type OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT t.event_type FROM personalize.event_types t WHERE t.is_purchase))
       AND (average_order_value.within IS NULL OR e.occurred_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) average_order_value.within))
$$;
COMMENT ON FUNCTION personalize.average_order_value(text, interval) IS 'Total spend divided by the number of orders (order_id property, else one order per event); NULL without purchases';

CREATE OR REPLACE FUNCTION personalize.last_seen(user_id text) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.max(e.occurred_at)
      FROM personalize.events e
     WHERE e.user_id OPERATOR(pg_catalog.=) last_seen.user_id
$$;
COMMENT ON FUNCTION personalize.last_seen(text) IS 'Time of the user''s newest event (NULL: never seen)';

CREATE OR REPLACE FUNCTION personalize.days_since_last_purchase(user_id text) RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.max(e.occurred_at)) OPERATOR(pg_catalog./) 86400
      FROM personalize.events e
     WHERE e.user_id OPERATOR(pg_catalog.=) days_since_last_purchase.user_id
       AND e.event_type OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT t.event_type FROM personalize.event_types t WHERE t.is_purchase))
$$;
COMMENT ON FUNCTION personalize.days_since_last_purchase(text) IS 'Days (fractional) since the user''s newest purchase; NULL if they never bought';

-- Every upgrade script ends with this.
SELECT personalize._apply_privileges();
