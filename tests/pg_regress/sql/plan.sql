-- The tracking plan: defaults, changes applied immediately, schemas checked on write.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql

SELECT event_type, requires_item, weight, half_life, origin FROM personalize.event_types ORDER BY weight, event_type;

-- A change is plain SQL and applies to the next statement in this session...
SELECT personalize.validate_event('{"type":"view","user_id":"u","item_id":"i","properties":{"colour":"red"}}');
UPDATE personalize.event_types
   SET properties_schema = jsonb_set(properties_schema, '{properties,colour}', '{"type":"string"}')
 WHERE event_type = 'view';
SELECT personalize.validate_event('{"type":"view","user_id":"u","item_id":"i","properties":{"colour":"red"}}');
SELECT personalize.validate_event('{"type":"view","user_id":"u","item_id":"i","properties":{"colour":7}}');
-- ...and a rolled-back change is forgotten.
BEGIN;
DELETE FROM personalize.event_types WHERE event_type = 'view';
SELECT personalize.validate_event('{"type":"view","user_id":"u","item_id":"i"}');
ROLLBACK;
SELECT personalize.validate_event('{"type":"view","user_id":"u","item_id":"i"}');

-- New types; a changed default becomes the shop's own row.
INSERT INTO personalize.event_types (event_type, description, requires_item, weight, properties_schema)
VALUES ('wishlist', 'Saved for later', true, 3, '{"type":"object","required":["list"],"properties":{"list":{"type":"string"}}}');
SELECT personalize.validate_event('{"type":"wishlist","user_id":"u","item_id":"i"}');
SELECT personalize.validate_event('{"type":"wishlist","user_id":"u","item_id":"i","properties":{"list":"xmas"}}');
SELECT event_type, origin FROM personalize.event_types WHERE origin = 'shop' ORDER BY 1;

-- Broken schemas and bad rows are refused on write.
SELECT pg_temp.err($q$UPDATE personalize.event_types SET properties_schema = '{"type":"nonsense"}' WHERE event_type = 'search'$q$);
SELECT pg_temp.err($q$UPDATE personalize.event_types SET properties_schema = '42' WHERE event_type = 'search'$q$);
SELECT pg_temp.err($q$INSERT INTO personalize.event_types (event_type) VALUES ('Bad Name')$q$);
SELECT pg_temp.err($q$UPDATE personalize.event_types SET half_life = '0 days' WHERE event_type = 'search'$q$);
SELECT pg_temp.err($q$UPDATE personalize.event_types SET weight = 1000 WHERE event_type = 'search'$q$);

-- The catalogue.
SELECT personalize.upsert_item('85123A', 'decor', 'White hanging heart', '{"colour":"white"}', true, 2.55);
SELECT personalize.upsert_items('[{"item_id":"22423","category":"kitchen","price":12.75},{"item_id":"85123A","category":"decor","available":false}]');
SELECT item_id, category, title, attributes, available, price FROM personalize.items ORDER BY item_id;
-- The last object for an id wins; a JSON null clears a field.
SELECT personalize.upsert_items('[{"item_id":"22423","price":1},{"item_id":"22423","price":13.5,"title":null}]');
SELECT item_id, title, price FROM personalize.items WHERE item_id = '22423';
SELECT pg_temp.err($q$SELECT personalize.upsert_items('{"item_id":"x"}')$q$);
SELECT pg_temp.err($q$SELECT personalize.upsert_items('[{"item_id":"x","colour":"red"}]')$q$);
SELECT pg_temp.err($q$SELECT personalize.upsert_items('[{"item_id":"x","price":-1}]')$q$);
SELECT pg_temp.err($q$SELECT personalize.upsert_items('[{"item_id":"x","price":"cheap"}]')$q$);
SELECT pg_temp.err($q$SELECT personalize.upsert_item(NULL)$q$);
