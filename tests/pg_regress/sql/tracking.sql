-- Tracking: validation, ingestion, dedup, quarantine, strict mode, hostile input.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql

-- A valid event has no violations; every violation carries its path and code.
SELECT personalize.validate_event('{"type":"view","user_id":"u1","item_id":"85123A","properties":{"price":2.55}}');
SELECT unnest(personalize.validate_event(
  '{"type":"view","user_id":"","extra":1,"occurred_at":"yesterday","properties":{"price":"cheap","colour":"red"}}'));
SELECT unnest(personalize.validate_event('{"type":"teleport"}'));
SELECT unnest(personalize.validate_event('{"type":"search","user_id":"u1"}'));
SELECT unnest(personalize.validate_event('{"type":"purchase","user_id":"u1","item_id":"i","properties":{"quantity":0}}'));
SELECT unnest(personalize.validate_event('{"type":"view","user_id":["u"],"item_id":1.5,"properties":[1]}'));
SELECT unnest(personalize.validate_event('[1,2,3]'));
SELECT unnest(personalize.validate_event('"just a string"'));
SELECT personalize.validate_event(NULL);
-- Numeric ids are accepted and stored as text.
SELECT personalize.validate_event('{"type":"view","user_id":17850,"item_id":85123}');

-- Hostile input: numbers serde_json refuses, deep nesting, oversize payloads, odd timestamps.
SELECT unnest(personalize.validate_event('{"type":"view","user_id":"u","item_id":"i","properties":{"price":1e400}}'));
SELECT unnest(personalize.validate_event(
  ('{"type":"search","user_id":"u","properties":{"query":"q","d":' || repeat('[', 200) || repeat(']', 200) || '}}')::jsonb));
SELECT unnest(personalize.validate_event(
  ('{"type":"search","user_id":"u","properties":{"query":"q","d":' || repeat('[', 20) || repeat(']', 20) || '}}')::jsonb));
SELECT unnest(personalize.validate_event(
  jsonb_build_object('type', 'search', 'user_id', 'u', 'properties', jsonb_build_object('query', repeat('x', 40000)))));
SELECT unnest(personalize.validate_event('{"type":"search","user_id":"u","occurred_at":"1970-01-01T00:00:00Z","properties":{"query":"q"}}'));
SELECT unnest(personalize.validate_event('{"type":"search","user_id":"u","occurred_at":"9999-12-31T23:59:59Z","properties":{"query":"q"}}'));
SELECT unnest(personalize.validate_event('{"type":"search","user_id":"u","occurred_at":"2026-02-30T10:00:00Z","properties":{"query":"q"}}'));
SELECT unnest(personalize.validate_event('{"type":"search","user_id":"u\ttab","properties":{"query":"q"}}'));
-- jsonb itself refuses \u0000 and NaN before our code runs; the errors are PostgreSQL's own.
SELECT pg_temp.err($q$SELECT personalize.track('{"type":"view","user_id":"u\u0000"}')$q$);
SELECT pg_temp.err($q$SELECT personalize.track('{"type":"view","price":NaN}')$q$);

-- track(): the event id; a retry with the same client_event_id returns the same id.
SELECT personalize.track('{"type":"view","user_id":"u1","item_id":"i1","client_event_id":"c-1","occurred_at":"2026-01-05T10:00:00+02:00"}');
SELECT personalize.track('{"type":"view","user_id":"u1","item_id":"i1","client_event_id":"c-1","occurred_at":"2026-01-05T10:00:00+02:00"}');
SELECT personalize.track('{"type":"teleport","user_id":"u1"}') IS NULL AS quarantined;
SELECT event_id, event_type, user_id, item_id, occurred_at AT TIME ZONE 'UTC' AS occurred_utc, client_event_id, properties
  FROM personalize.events ORDER BY event_id;
SELECT source, batch_position, event_type, user_id, reasons, violations, payload FROM personalize.rejected_events;

-- track_batch(): every element accounted for, including NULLs and non-objects.
SELECT * FROM personalize.track_batch(ARRAY[
  '{"type":"view","user_id":"u2","item_id":"i2","client_event_id":"c-2"}',
  NULL,
  '{"type":"search","user_id":"u2","properties":{"query":"lens"}}',
  '[1]',
  '{"type":"view","user_id":"u1","item_id":"i1","client_event_id":"c-1"}',
  '{"type":"view","user_id":"u3","item_id":"i3","client_event_id":"c-3"}',
  '{"type":"view","user_id":"u3","item_id":"i3","client_event_id":"c-3"}'
]::jsonb[]);
SELECT * FROM personalize.track_batch('{}');
SELECT * FROM personalize.track_batch(ARRAY[NULL, NULL]::jsonb[]);
SELECT batch_position, reasons FROM personalize.rejected_events WHERE source = 'track_batch' ORDER BY rejected_id;

-- strict: raises 23514 naming the event, and stores nothing from the call.
SELECT count(*) AS events_before FROM personalize.events;
SELECT pg_temp.err($q$SELECT * FROM personalize.track_batch(ARRAY[
  '{"type":"view","user_id":"u9","item_id":"i9"}', '{"type":"view","item_id":"i9"}']::jsonb[], strict => true)$q$);
SELECT pg_temp.err($q$SELECT personalize.track('{"type":"nope","user_id":"u"}', strict => true)$q$);
SELECT count(*) AS events_after FROM personalize.events;

-- Bad arguments get specific SQLSTATEs, never XX000.
SELECT pg_temp.err('SELECT * FROM personalize.track_batch(NULL)');
SELECT pg_temp.err($q$SELECT personalize.track('{"type":"view","user_id":"u","item_id":"i"}', NULL)$q$);
SET personalize.max_batch_events = 2;
SELECT pg_temp.err($q$SELECT * FROM personalize.track_batch(ARRAY['{}','{}','{}']::jsonb[])$q$);
RESET personalize.max_batch_events;

SELECT * FROM personalize.status ORDER BY section, name;
