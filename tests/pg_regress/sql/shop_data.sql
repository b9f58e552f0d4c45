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
