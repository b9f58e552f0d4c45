-- Defects a hostile review of 0.6.0 found, one section each, checked with its reproductions.
-- (Restores of a live shop and COPY of history: tests/dump_restore.sh; client_event_id per
-- sender: also the #[pg_test]s of src/api/tracking.rs.)
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql
-- Consent is not what this test is about: no channel needs an opt-in (tests/pg_regress/sql/consent.sql).
INSERT INTO personalize.channel_policies VALUES ('push', false), ('sms', false), ('whatsapp', false);

-- 1. client_event_id is the sender's: one user's id never hides another user's purchase, and
-- a reuse with other content is quarantined with its reason (strict: raised), not dropped.
SELECT personalize.track('{"type": "view", "user_id": "a", "item_id": "i1", "client_event_id": "o-77:1"}') IS NOT NULL AS view_stored;
SELECT personalize.track('{"type": "purchase", "user_id": "b", "item_id": "i2", "client_event_id": "o-77:1"}', strict => true) IS NOT NULL AS purchase_stored;
SELECT personalize.track('{"type": "view", "user_id": "a", "item_id": "i1", "client_event_id": "o-77:1"}')
     = (SELECT event_id FROM personalize.events WHERE user_id = 'a') AS retry_answers_its_own_event;
SELECT personalize.track('{"type": "view", "user_id": "a", "item_id": "i3", "client_event_id": "o-77:1"}') AS conflict;
SELECT left(pg_temp.err($$SELECT personalize.track('{"type": "view", "user_id": "a", "item_id": "i3", "client_event_id": "o-77:1"}', strict => true)$$), 45) AS strict_conflict;
SELECT user_id, event_type, item_id FROM personalize.events ORDER BY event_id;
SELECT reasons, violations -> 0 ->> 'path' AS path FROM personalize.rejected_events;

-- 2. An event dated ahead (accepted clock skew) counts in training but does not move the
-- model's clock: a purchase after training is still left out at once.
SELECT accepted, rejected FROM personalize.generate_shop(3000, users => 100, items => 40, seed => 4,
                                                        start => now() - interval '20 days', days => 20);
SELECT personalize.track(jsonb_build_object('type', 'purchase', 'user_id', 'U0000001', 'item_id', 'P0000002',
                                            'occurred_at', now() + interval '12 hours')) IS NOT NULL AS future_tracked;
SELECT users > 0 AS trained FROM personalize.train(factors => 8, iterations => 3);
SELECT as_of <= now() AS as_of_not_ahead, as_of > now() - interval '1 hour' AS as_of_recent
  FROM personalize.models WHERE status = 'active';
SELECT personalize.track(jsonb_build_object('type', 'purchase', 'user_id', 'U0000001',
       'item_id', (SELECT item_id FROM personalize.recommend('U0000001', 1)))) IS NOT NULL AS bought_the_top_one;
SELECT count(*) AS bought_items_recommended
  FROM personalize.recommend('U0000001', 40) r
  JOIN personalize.events e ON e.user_id = 'U0000001' AND e.item_id = r.item_id AND e.event_type = 'purchase';

-- 3. Intervals are checked by what they do, not by how intervals compare (a month counts as
-- 30 days there): mixed signs and calendar months cannot stretch a limit.
SELECT pg_temp.err($$SELECT * FROM personalize.claim_messages('push', 1, '1000 mon -30000 days 1 second')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.claim_messages('push', 1, '-1 mon 30 days 1 second')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.claim_messages('push', 1, '13 hours')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.claim_messages('push', 1, '12 hours')$$);
SELECT pg_temp.err($$SELECT personalize.fail(1, gen_random_uuid(), 'x', '1000 mon -29999 days')$$);
SELECT pg_temp.err($$SELECT personalize.archive_messages('1 mon -40 days')$$);
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel, delay) VALUES ('x', 'view', 'push', '1 year')$$);
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel, delay) VALUES ('x', 'view', 'push', '1 mon -29 days')$$);
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel, cap_messages, cap_window) VALUES ('x', 'view', 'push', 1, '7000 years')$$);
SELECT pg_temp.err($$INSERT INTO personalize.frequency_caps (max_messages, "window") VALUES (1, '2 years')$$);
SELECT pg_temp.err($$UPDATE personalize.event_types SET half_life = '1 mon -30 days 1 second' WHERE event_type = 'view'$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train('w', "window" => '-1 day')$$);
SELECT pg_temp.err($$INSERT INTO personalize.segments (name, definition) VALUES ('ancient', '{"bought": {"within": "7000 years"}}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel, delay) VALUES ('year', 'view', 'push', '52 weeks')$$);
DELETE FROM personalize.campaigns;

-- 4. A message whose checks fail at claim time fails alone: a segment stored before its check
-- existed (written here behind the check's back) no longer blocks its channel. Its message is
-- retried with backoff, then dead; the other campaign's messages go out.
ALTER TABLE personalize.segments DISABLE TRIGGER segments_before_write;
INSERT INTO personalize.segments (name, definition) VALUES ('ancient', '{"bought": {"within": "7000 years"}}');
ALTER TABLE personalize.segments ENABLE TRIGGER segments_before_write;
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, segment, max_attempts)
VALUES ('poisoned', 'add_to_cart', 'push', 'ancient', 2);
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, recommendations)
VALUES ('healthy', 'view', 'push', 2);
SELECT personalize.track(jsonb_build_object('type', 'add_to_cart', 'user_id', 'U0000003', 'item_id', 'P0000001',
                                            'occurred_at', now() - interval '1 second')) IS NOT NULL AS carted;
SELECT personalize.track('{"type": "view", "user_id": "U0000004", "item_id": "P0000001"}') IS NOT NULL AS viewed;
SELECT campaign, user_id, jsonb_array_length(payload -> 'recommendations') AS recommendations
  FROM personalize.claim_messages('push', 10);
SELECT campaign, state, attempts, visible_at > now() AS backs_off, last_error
  FROM personalize.outbox ORDER BY message_id;
UPDATE personalize.outbox SET visible_at = now() WHERE campaign = 'poisoned';
SELECT count(*) AS handed_out FROM personalize.claim_messages('push', 10);
SELECT campaign, state, attempts, last_error FROM personalize.outbox ORDER BY message_id;
DELETE FROM personalize.campaigns;
DELETE FROM personalize.segments;

-- 5. An oversize event is quarantined as evidence (size, SHA-256, the first kilobyte), not
-- whole; exclude_items is bounded like every other list.
SELECT personalize.track(jsonb_build_object('type', 'view', 'user_id', 'big', 'item_id', 'i',
                                            'properties', jsonb_build_object('blob', repeat('x', 100000)))) AS oversize;
SELECT reasons, payload ->> 'oversize' AS oversize, (payload ->> 'bytes')::int > 100000 AS bytes,
       length(payload ->> 'sha256') AS sha256_hex, length(payload ->> 'prefix') AS prefix,
       pg_column_size(payload) < 3000 AS bounded
  FROM personalize.rejected_events WHERE 'oversize' = ANY (reasons);
SET personalize.max_candidates = 5;
SELECT pg_temp.err($$SELECT * FROM personalize.recommend('U0000001', 3, exclude_items => ARRAY['a', 'b', 'c', 'd', 'e', 'f'])$$);
RESET personalize.max_candidates;

-- 6. Small ones: generate_shop spreads its events over `days` (above: nothing quarantined as
-- out of range for a shop ending now), and an integer id beyond 64 bits is an id.
SELECT max(occurred_at) <= now() AS ends_by_now, max(occurred_at) > now() - interval '2 days' AS fills_the_days
  FROM personalize.events WHERE client_event_id LIKE 'syn:%';
SELECT personalize.track('{"type": "view", "user_id": 123456789012345678901234567890, "item_id": -98765432109876543210}') IS NOT NULL AS big_ids;
SELECT user_id, item_id FROM personalize.events WHERE user_id = '123456789012345678901234567890';
