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
