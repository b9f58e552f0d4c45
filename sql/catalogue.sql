------------------------------------------------------------------------------------------
-- Catalogue
------------------------------------------------------------------------------------------

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
    SELECT personalize._write_items(
        ARRAY[CAST(ROW(upsert_item.item_id, upsert_item.category, upsert_item.title, upsert_item.attributes,
                       upsert_item.available, upsert_item.price, NULL) AS personalize.items)], false)
$$;
COMMENT ON FUNCTION personalize.upsert_item(text, text, text, jsonb, boolean, numeric) IS 'Inserts or replaces one catalogue item (every field: omitted arguments take their defaults)';

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
COMMENT ON FUNCTION personalize.upsert_items(jsonb) IS 'Inserts or updates catalogue items from a JSON array of objects: keys an object leaves out keep their stored values; returns how many items were written';

-- Serving caches each item's category and availability per backend; any change to the
-- catalogue makes every backend re-read them at its next transaction (relcache message).
CREATE FUNCTION personalize._items_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM personalize._invalidate_catalog_cache();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION personalize._items_changed() IS 'Trigger: tells every backend that the catalogue changed';

CREATE TRIGGER items_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.items
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._items_changed();

-- The Rust functions' comments (their code: see CONTRIBUTING.md's function table).
COMMENT ON FUNCTION personalize._invalidate_catalog_cache() IS 'Internal: makes every backend re-read catalogue categories and availability at commit';
