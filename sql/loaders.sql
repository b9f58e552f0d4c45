------------------------------------------------------------------------------------------
-- Loaders (regclass resolves the table name in the caller's search_path)
------------------------------------------------------------------------------------------

CREATE FUNCTION personalize.import_events(source regclass, strict boolean DEFAULT false)
RETURNS TABLE (accepted bigint, duplicates bigint, rejected bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize._import_events(CAST(source AS pg_catalog.oid), strict) $$;
COMMENT ON FUNCTION personalize.import_events(regclass, boolean) IS 'Imports a table (e.g. filled by COPY from CSV) whose columns are envelope fields: type, user_id, item_id, session_id, occurred_at, client_event_id, properties (jsonb). Every row is accepted, a duplicate, or quarantined with its violations.';

CREATE FUNCTION personalize.import_online_retail(source regclass)
RETURNS TABLE (accepted bigint, duplicates bigint, rejected bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize._import_online_retail(CAST(source AS pg_catalog.oid)) $$;
COMMENT ON FUNCTION personalize.import_online_retail(regclass) IS 'Imports UCI Online Retail rows from a table with columns invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country: purchases, cancellations as refund events, rows without a customer quarantined. Re-importing stores nothing twice.';

CREATE FUNCTION personalize.import_retailrocket(source regclass)
RETURNS TABLE (accepted bigint, duplicates bigint, rejected bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM personalize._import_retailrocket(CAST(source AS pg_catalog.oid)) $$;
COMMENT ON FUNCTION personalize.import_retailrocket(regclass) IS 'Imports RetailRocket-style rows from a table with columns timestamp (Unix ms), visitorid, event (view/addtocart/transaction), itemid, transactionid.';

-- The Rust functions' comments (their code: see CONTRIBUTING.md's function table).
COMMENT ON FUNCTION personalize._import_events(oid, boolean) IS 'Internal: import_events() by relation OID';
COMMENT ON FUNCTION personalize._import_online_retail(oid) IS 'Internal: import_online_retail() by relation OID';
COMMENT ON FUNCTION personalize._import_retailrocket(oid) IS 'Internal: import_retailrocket() by relation OID';
