-- A shop's own data: catalogue deletes mean gone, and the right to be forgotten.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql

SELECT accepted, rejected FROM personalize.generate_shop(3000, users => 100, items => 40, seed => 4,
                                                        start => now() - interval '20 days', days => 20);
SELECT count(*) AS catalogue FROM personalize.items;
SELECT users > 0 AS trained FROM personalize.train(factors => 8, iterations => 3);
CREATE TEMP TABLE top AS SELECT item_id FROM personalize.recommend('U0000001', 1);
CREATE TEMP TABLE other AS SELECT item_id FROM personalize.recommend('U0000001', 2) OFFSET 1;

-- 1. An item deleted from the catalogue is never served again, by any serving function and
-- also with available_only => false (which only lets listed, out-of-stock items through).
DELETE FROM personalize.items WHERE item_id = (SELECT item_id FROM top);
SELECT count(*) AS deleted_in_recommend
  FROM personalize.recommend('U0000001', 40) WHERE item_id = (SELECT item_id FROM top);
SELECT count(*) AS deleted_in_recommend_any_stock
  FROM personalize.recommend('U0000001', 40, available_only => false) WHERE item_id = (SELECT item_id FROM top);
SELECT count(*) AS deleted_in_similar
  FROM personalize.similar_items((SELECT item_id FROM other), 40) WHERE item_id = (SELECT item_id FROM top);
SELECT count(*) AS deleted_in_session
  FROM personalize.recommend_for_session(ARRAY[(SELECT item_id FROM other)], 40) WHERE item_id = (SELECT item_id FROM top);
SELECT count(*) AS served_by_recommend FROM personalize.recommend('U0000001', 40);
-- rank_items leaves out the deleted item and an id the catalogue never listed; a new product
-- the model does not know yet is kept, unscored, at the end.
INSERT INTO personalize.items (item_id, category) VALUES ('NEW-1', 'lenses');
SELECT r.rank, r.item_id = (SELECT item_id FROM other) AS is_other, r.item_id, r.score IS NULL AS unscored
  FROM personalize.rank_items('U0000001', ARRAY[(SELECT item_id FROM top), (SELECT item_id FROM other), 'NEVER-LISTED', 'NEW-1']) r
 ORDER BY r.rank;
-- Out of stock is not deleted: available_only => false serves it.
UPDATE personalize.items SET available = false WHERE item_id = (SELECT item_id FROM other);
SELECT count(*) AS out_of_stock_by_default
  FROM personalize.recommend('U0000001', 40) WHERE item_id = (SELECT item_id FROM other);
SELECT count(*) AS out_of_stock_any_stock
  FROM personalize.recommend('U0000001', 40, available_only => false) WHERE item_id = (SELECT item_id FROM other);
-- Put back, it is served again.
INSERT INTO personalize.items (item_id, category) SELECT item_id, 'back' FROM top;
SELECT count(*) AS back_in_recommend
  FROM personalize.recommend('U0000001', 40) WHERE item_id = (SELECT item_id FROM top);
-- A shop without any catalogue row: everything counts as available (today's behaviour).
DELETE FROM personalize.items;
SELECT count(*) AS served_without_catalogue FROM personalize.recommend('U0000001', 40);
SELECT count(*) AS ranked_without_catalogue
  FROM personalize.rank_items('U0000001', ARRAY[(SELECT item_id FROM top), 'NEVER-LISTED']);
INSERT INTO personalize.items (item_id, category, title, price) SELECT * FROM personalize.synthetic_items(40, 4);

-- 2. forget_user(): the whole loop leaves the user in every table that can hold them, then
-- one call removes them everywhere and the next recommend() treats them as a stranger.
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, recommendations)
VALUES ('browse', 'view', 'email', 2);
INSERT INTO personalize.experiments (name, variants, salt, starts_at) VALUES
 ('layout', '[{"name": "grid", "weight": 1}, {"name": "list", "weight": 1}]', 's', now() - interval '1 day');
SELECT personalize.log_exposure('layout', 'U0000002') IS NOT NULL AS exposed;
SELECT personalize.log_exposure('layout', 'U0000003') IS NOT NULL AS other_exposed;
SELECT personalize.track('{"type": "view", "user_id": "U0000002", "item_id": "P0000003"}') > 0 AS viewed;
SELECT personalize.track('{"type": "view", "user_id": "U0000003", "item_id": "P0000003"}') > 0 AS other_viewed;
SELECT personalize.track('{"type": "teleport", "user_id": "U0000002"}') IS NULL AS quarantined;
-- Oversize: only its first kilobyte is kept, where the user id is.
SELECT personalize.track(jsonb_build_object('type', 'view', 'user_id', 'U0000002', 'item_id', 'P0000001',
                                            'properties', jsonb_build_object('pad', repeat('x', 40000)))) IS NULL AS oversize;
UPDATE personalize.outbox SET visible_at = now() - interval '1 second';
SELECT personalize.ack(message_id, lease_token) AS acked
  FROM personalize.claim_messages('email', 10) WHERE user_id = 'U0000002';
SELECT personalize.archive_messages('0 seconds') > 0 AS archived;
SELECT personalize.track('{"type": "view", "user_id": "U0000002", "item_id": "P0000004"}') > 0 AS viewed_again;
SELECT users > 0 AS retrained FROM personalize.train('second', factors => 8, iterations => 3);
SELECT count(*) AS model_rows_before FROM personalize.model_users WHERE user_id = 'U0000002';

SELECT * FROM personalize.forget_user('U0000002');
-- No row of any table of the extension mentions the user any more.
DO $$
DECLARE t regclass; n bigint; scanned int := 0;
BEGIN
  FOR t IN SELECT c.oid::regclass FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
            WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e' AND c.relkind = 'r'
              AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_personalize')
            ORDER BY 1::text LOOP
    EXECUTE format('SELECT count(*) FROM %s x WHERE x::text LIKE %L', t, '%U0000002%') INTO n;
    IF n > 0 THEN RAISE WARNING '% still holds % rows of the erased user', t, n; END IF;
    scanned := scanned + 1;
  END LOOP;
  RAISE WARNING 'the extension''s % tables scanned', scanned;
END $$;
-- Every table of the extension with a user column is one forget_user() clears: a table added
-- later cannot be forgotten.
SELECT c.relname AS user_table_not_erased
  FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace AND s.nspname = 'personalize'
 WHERE c.relkind = 'r'
   AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND a.attname ~ 'user_id$')
   AND c.relname NOT IN (SELECT jsonb_object_keys(rows_deleted) FROM personalize.erasures);
SELECT source, count(*) AS served_as_stranger FROM personalize.recommend('U0000002', 3, model => 'second') GROUP BY 1;
-- The other users keep everything; the log holds counts, not the user.
SELECT count(*) AS other_events FROM personalize.events WHERE user_id = 'U0000003';
SELECT count(*) AS other_exposures FROM personalize.exposures WHERE user_id = 'U0000003';
SELECT count(*) AS erasures, bool_and(e::text NOT LIKE '%U0000002%') AS log_holds_no_id,
       bool_and(erased_by = current_user) AS by_whom FROM personalize.erasures e;
-- Again: nothing left, logged again.
SELECT sum(rows_deleted) AS second_time FROM personalize.forget_user('U0000002');
SELECT pg_temp.err($$SELECT * FROM personalize.forget_user(NULL)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.forget_user('')$$);

-- 3. Quarantine replay: after the plan is fixed, quarantined events are stored exactly once.
SELECT personalize.track('{"type": "wishlist", "user_id": "R1", "item_id": "P0000001", "client_event_id": "w-1", "occurred_at": "2026-11-30T10:00:00Z"}') IS NULL AS w1_quarantined;
SELECT personalize.track('{"type": "wishlist", "user_id": "R1", "item_id": "P0000002"}') IS NULL AS w2_quarantined_no_time;
SELECT personalize.track('{"type": "wishlist", "user_id": "R2", "item_id": "P0000003", "client_event_id": "w-3"}') IS NULL AS w3_quarantined;
SELECT personalize.track('{"type": "view", "user_id": "R1", "item_id": "P0000001", "properties": {"colour": "red"}}') IS NULL AS colour_quarantined;
SELECT name, value FROM personalize.status WHERE section = 'rejections' OR name LIKE 'rejected events%' ORDER BY 1;
-- Nothing passes before the plan changes: reasons stay, nothing is stored.
SELECT * FROM personalize.replay_rejected();
SELECT count(*) FILTER (WHERE replayed_at IS NOT NULL) AS checked, count(*) FILTER (WHERE resolved_at IS NOT NULL) AS resolved
  FROM personalize.rejected_events WHERE user_id LIKE 'R%';
-- The shop adds the event type; R2's event was meanwhile sent again and stored.
INSERT INTO personalize.event_types (event_type, requires_item, weight) VALUES ('wishlist', true, 3);
SELECT personalize.track('{"type": "wishlist", "user_id": "R2", "item_id": "P0000003", "client_event_id": "w-3"}') > 0 AS w3_resent;
SELECT * FROM personalize.replay_rejected(reason => 'unknown_event_type');
SELECT * FROM personalize.replay_rejected(reason => 'unknown_event_type');
SELECT user_id, item_id, occurred_at = '2026-11-30T10:00:00Z' AS sent_time,
       occurred_at = (SELECT received_at FROM personalize.rejected_events r WHERE r.payload ->> 'item_id' = 'P0000002' AND r.user_id = 'R1') AS arrival_time
  FROM personalize.events WHERE event_type = 'wishlist' ORDER BY user_id, item_id;
-- The colour property is still unknown: checked again, reason refreshed, still open.
SELECT * FROM personalize.replay_rejected(event_type => 'view', since => now() - interval '1 hour');
UPDATE personalize.event_types
   SET properties_schema = jsonb_set(properties_schema, '{properties,colour}', '{"type": "string"}')
 WHERE event_type = 'view';
SELECT * FROM personalize.replay_rejected(until => now() - interval '1 hour');
SELECT * FROM personalize.replay_rejected();
SELECT count(*) AS colour_views FROM personalize.events WHERE properties ? 'colour';
SELECT name, value FROM personalize.status WHERE section = 'rejections' OR name LIKE 'rejected events%' ORDER BY 1;

-- 4. Integer ids from a shop's own tables: order, cart and list ids in the default plan, and
-- item ids in upsert_items (stored as text: 7 and '7' are the same item).
SELECT personalize.track('{"type": "purchase", "user_id": 42, "item_id": 1056, "properties": {"order_id": 90017, "price": 3.5}}') > 0 AS integer_order_id;
SELECT personalize.track('{"type": "add_to_cart", "user_id": 42, "item_id": 1056, "properties": {"cart_id": 5}}') > 0 AS integer_cart_id;
SELECT user_id, item_id, properties ->> 'order_id' AS order_id FROM personalize.events WHERE user_id = '42' ORDER BY event_id;
SELECT personalize.upsert_items('[{"item_id": 1056, "category": "mugs"}, {"item_id": "1057"}]') AS written;
SELECT personalize.upsert_items('[{"item_id": 1056, "price": 4}]') AS updated;
SELECT item_id, category, price FROM personalize.items WHERE item_id IN ('1056', '1057') ORDER BY 1;
SELECT pg_temp.err($$SELECT personalize.upsert_items('[{"item_id": 10.5}]')$$);
-- Every function that takes a user or item id also takes it as an integer, bigint or uuid.
SELECT (SELECT array_agg(item_id) FROM personalize.recommend(42, 5, model => 'second'))
     = (SELECT array_agg(item_id) FROM personalize.recommend('42', 5, model => 'second')) AS recommend_42;
SELECT count(*) AS recommended_bigint FROM personalize.recommend(42::bigint, 3, model => 'second', exclude_items => ARRAY['P0000001']);
SELECT item_id, rank FROM personalize.rank_items(42, ARRAY[1056, 1057]::text[], model => 'second') ORDER BY rank;
SELECT count(*) AS similar FROM personalize.similar_items(1056, 3, model => 'second');
SELECT count(*) AS session FROM personalize.recommend_for_session(ARRAY[1056]::text[], 3, model => 'second');
SELECT personalize.bought(42) AS bought, personalize.bought(42, item_id => '1056') AS bought_1056,
       personalize.event_count(42, 'add_to_cart') AS carts, personalize.total_spend(42::bigint) AS spend,
       personalize.last_seen(42) = personalize.last_seen('42') AS last_seen;
SELECT personalize.assign_variant('layout', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid)
     = personalize.assign_variant('layout', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11') AS uuid_variant;
SELECT personalize.upsert_item(2001, 'mugs');
SELECT item_id, category FROM personalize.items WHERE item_id = '2001';
-- The any-type forms run as the caller: a cast the caller defined for its own type must not
-- run with the definer's rights.
SELECT p.oid::regprocedure AS polymorphic_security_definer
  FROM pg_proc p WHERE p.pronamespace = 'personalize'::regnamespace AND p.prosecdef
   AND p.proargtypes::oid[] && ARRAY['anyelement', 'anycompatible']::regtype[]::oid[];
SELECT p.oid::regprocedure AS id_function_without_an_any_type_form
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'personalize'
 WHERE p.proname !~ '^_'
   AND EXISTS (SELECT FROM unnest(p.proargnames, p.proargtypes::oid[]) a(name, type)
                WHERE a.name IN ('user_id', 'item_id', 'anonymous_id') AND a.type = 'text'::regtype)
   AND NOT EXISTS (SELECT FROM pg_proc q WHERE q.pronamespace = p.pronamespace AND q.proname = p.proname
                      AND q.proargtypes::oid[] && ARRAY['anyelement', 'anycompatible']::regtype[]::oid[]);

-- 5. identify(): an anonymous visitor logs in. Their events become the customer's, an event
-- whose client_event_id the customer already used for its type moves without it, and their
-- pending messages follow them unless the customer already has that campaign's pending.
INSERT INTO personalize.campaigns (name, trigger_event_type, channel) VALUES ('cart_push', 'add_to_cart', 'push');
SELECT count(personalize.set_consent(u, 'push', true, 'app install')) AS push_opt_ins FROM unnest(ARRAY['anon-7f3a', 'C1']) u;
SELECT personalize.track('{"type": "view", "user_id": "anon-7f3a", "item_id": "P0000005", "client_event_id": "c1"}') > 0 AS anon_view;
SELECT personalize.track('{"type": "add_to_cart", "user_id": "anon-7f3a", "item_id": "P0000005"}') > 0 AS anon_cart;
SELECT personalize.track('{"type": "view", "user_id": "C1", "item_id": "P0000006", "client_event_id": "c1"}') > 0 AS customer_view;
-- The app's retry after login: the same cart event under both ids.
SELECT personalize.track('{"type": "add_to_cart", "user_id": "anon-7f3a", "item_id": "P0000007", "client_event_id": "dup1"}') > 0 AS anon_retry;
SELECT personalize.track('{"type": "add_to_cart", "user_id": "C1", "item_id": "P0000007", "client_event_id": "dup1"}') > 0 AS customer_retry;
SELECT campaign, user_id, state FROM personalize.outbox WHERE user_id IN ('anon-7f3a', 'C1') ORDER BY 1, 2;
SELECT * FROM personalize.identify('anon-7f3a', 'C1');
SELECT campaign, user_id, state, last_error FROM personalize.outbox WHERE user_id IN ('anon-7f3a', 'C1') ORDER BY 1, 2, 3;
SELECT user_id, event_type, item_id, client_event_id FROM personalize.events WHERE user_id IN ('anon-7f3a', 'C1') ORDER BY event_id;
SELECT * FROM personalize.identify('anon-7f3a', 'C1');
SELECT anonymous_id, user_id FROM personalize.identities;
SELECT pg_temp.err($$SELECT * FROM personalize.identify(NULL, 'C1')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.identify('C1', 'C1')$$);
-- Erasing the customer also erases their anonymous id: its link and its cancelled message.
SELECT table_name, rows_deleted FROM personalize.forget_user('C1') WHERE table_name IN ('events', 'identities', 'outbox');
SELECT count(*) AS links_left FROM personalize.identities;
SELECT count(*) AS anonymous_rows_left FROM personalize.outbox WHERE user_id = 'anon-7f3a';

-- 6. Sync from a shop's own tables (the happy path is the README's guide, byos_guide.sql).
CREATE TABLE pg_temp.products (sku int PRIMARY KEY, label text, cat text, eur numeric, stock boolean DEFAULT true);
INSERT INTO pg_temp.products VALUES (1, 'one', 'a', 10, true), (2, 'two', 'a', -5, true), (3, 'three', 'b', 7, false);
SELECT pg_temp.err($$SELECT * FROM personalize.sync_catalogue('pg_temp.products', '{"item_id": "id"}')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.sync_catalogue('pg_temp.products', '{"item_id": "sku", "colour": "x"}')$$);
-- The negative price breaks the catalogue's check: quarantined with its key, the rest loaded,
-- everything else in the catalogue (not in the table) removed.
SELECT * FROM personalize.sync_catalogue('pg_temp.products', '{"item_id": "sku", "title": "label", "category": "cat", "price": "eur", "available": "stock"}');
SELECT item_id, title, category, price, available FROM personalize.items ORDER BY 1;
SELECT source LIKE 'sync_catalogue:%' AS from_sync, reasons, payload -> 'key' AS key FROM personalize.rejected_events WHERE 'invalid_catalogue_row' = ANY (reasons);
-- The shop's writes never fail for it; they are mirrored.
INSERT INTO pg_temp.products VALUES (4, 'four', 'b', -1, true);
UPDATE pg_temp.products SET eur = 5 WHERE sku = 2;
UPDATE pg_temp.products SET sku = 30 WHERE sku = 3;
DELETE FROM pg_temp.products WHERE sku = 1;
SELECT item_id, title, price FROM personalize.items ORDER BY 1;
-- An update the catalogue cannot take leaves the item out of stock, not serving old values.
UPDATE pg_temp.products SET eur = -3 WHERE sku = 2;
SELECT item_id, price, available FROM personalize.items WHERE item_id = '2';
UPDATE pg_temp.products SET eur = 6 WHERE sku = 2;
SELECT item_id, price, available FROM personalize.items WHERE item_id = '2';
-- Idempotent: again, nothing new is quarantined for rows that fit.
SELECT * FROM personalize.sync_catalogue('pg_temp.products', '{"item_id": "sku", "title": "label", "category": "cat", "price": "eur", "available": "stock"}');
SELECT count(*) AS catalogue_rejections FROM personalize.rejected_events WHERE 'invalid_catalogue_row' = ANY (reasons);
-- A sync leaves unchanged items untouched (their updated_at too); upsert_items() rewrites
-- every item it is given.
UPDATE personalize.items SET updated_at = '2020-01-01' WHERE item_id IN ('2', '30');
SELECT items_written FROM personalize.sync_catalogue('pg_temp.products', '{"item_id": "sku", "title": "label", "category": "cat", "price": "eur", "available": "stock"}');
SELECT personalize.upsert_items('[{"item_id": "30"}]') AS upserted;
SELECT item_id, updated_at > '2021-01-01' AS touched FROM personalize.items WHERE item_id IN ('2', '30') ORDER BY 1;
-- The shop corrects its row: the next sync resolves the rejection.
UPDATE pg_temp.products SET eur = 1 WHERE sku = 4;
SELECT * FROM personalize.sync_catalogue('pg_temp.products', '{"item_id": "sku", "title": "label", "category": "cat", "price": "eur", "available": "stock"}');
SELECT payload -> 'key' AS key, resolved_at IS NOT NULL AS resolved FROM personalize.rejected_events WHERE 'invalid_catalogue_row' = ANY (reasons) ORDER BY rejected_id;
-- strict: the shop's write fails instead.
SELECT * FROM personalize.sync_catalogue('pg_temp.products', '{"item_id": "sku", "title": "label", "category": "cat", "price": "eur", "available": "stock"}', strict => true);
SELECT pg_temp.err($$INSERT INTO pg_temp.products VALUES (5, 'five', 'b', -1, true)$$);
SELECT count(*) AS five_in_table FROM pg_temp.products WHERE sku = 5;

-- The load streams the table in chunks of 10,000 items: a table of 10,001 loads whole.
CREATE TABLE pg_temp.many (sku int PRIMARY KEY, eur numeric);
INSERT INTO pg_temp.many SELECT i, i % 50 FROM generate_series(1, 10001) i;
SELECT * FROM personalize.sync_catalogue('pg_temp.many', '{"item_id": "sku", "price": "eur"}');
SELECT count(*) AS items, sum(price) AS total_price FROM personalize.items;
SELECT personalize.stop_sync('pg_temp.many') AS stopped;

-- Mapped columns must be of built-in types (the trigger runs as personalize_definer); keys are
-- read the same way by the load and the removal (char(n) keeps its padding in both).
CREATE TYPE pg_temp.colour AS ENUM ('red', 'blue');
CREATE TABLE pg_temp.skus (code char(6) PRIMARY KEY, colour pg_temp.colour, label text);
INSERT INTO pg_temp.skus VALUES ('ab', 'red', 'x'), ('cd', 'blue', 'y');
SELECT pg_temp.err($$SELECT * FROM personalize.sync_catalogue('pg_temp.skus', '{"item_id": "code", "category": "colour"}')$$);
SELECT * FROM personalize.sync_catalogue('pg_temp.skus', '{"item_id": "code", "title": "label"}');
SELECT item_id, length(item_id) AS chars, title FROM personalize.items ORDER BY 1;
SELECT personalize.stop_sync('pg_temp.skus') AS stopped;

-- Events: a bad line is quarantined, the shop's insert goes through; backfill stores once.
CREATE TABLE pg_temp.lines (line_id int PRIMARY KEY, cust int, sku int, at timestamptz DEFAULT now(), qty int,
                            local_at timestamp DEFAULT localtimestamp);
INSERT INTO pg_temp.lines VALUES (1, 900, 2, now() - interval '1 hour', 1), (2, 900, 30, now() - interval '1 hour', 0);
SELECT pg_temp.err($$SELECT * FROM personalize.sync_events('pg_temp.lines', 'purchase', '{"user_id": "customer"}')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.sync_events('pg_temp.lines', 'order_line', '{"user_id": "cust"}')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.sync_events('pg_temp.lines', 'purchase', '{"user_id": "cust"}', backfill => true)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.sync_events('pg_temp.lines', 'purchase', '{"user_id": "cust", "occurred_at": "local_at"}')$$);
SELECT * FROM personalize.sync_events('pg_temp.lines', 'purchase',
  '{"user_id": "cust", "item_id": "sku", "occurred_at": "at", "client_event_id": "line_id", "properties": {"quantity": "qty"}}', backfill => true);
SELECT * FROM personalize.sync_events('pg_temp.lines', 'purchase',
  '{"user_id": "cust", "item_id": "sku", "occurred_at": "at", "client_event_id": "line_id", "properties": {"quantity": "qty"}}', backfill => true);
INSERT INTO pg_temp.lines (line_id, cust, sku, qty) VALUES (3, 900, 4, 2), (4, 901, 2, 0);
SELECT user_id, item_id, properties ->> 'quantity' AS qty FROM personalize.events WHERE user_id IN ('900', '901') ORDER BY event_id;
SELECT reasons FROM personalize.rejected_events WHERE user_id IN ('900', '901') ORDER BY rejected_id;
SELECT personalize.stop_sync('pg_temp.lines') AS stopped, personalize.stop_sync('pg_temp.products') AS stopped_catalogue;
INSERT INTO pg_temp.lines (line_id, cust, sku, qty) VALUES (5, 900, 2, 1);
SELECT count(*) AS events_900 FROM personalize.events WHERE user_id = '900';
