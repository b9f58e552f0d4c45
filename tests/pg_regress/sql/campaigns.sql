-- Campaigns and the outbox: messages written in the event's transaction, delay, filters,
-- segment, cancel-on, frequency caps, quiet hours, leases, retries to dead, visibility
-- timeouts and NOTIFY. Times are checked relative to now(), ids and tokens only by equality.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql
-- Consent is not what this test is about: no channel needs an opt-in (tests/pg_regress/sql/consent.sql).
INSERT INTO personalize.channel_policies VALUES ('push', false), ('sms', false), ('whatsapp', false);
CREATE FUNCTION pg_temp.ev(t text, u text, i text, props jsonb DEFAULT '{}') RETURNS bigint
LANGUAGE sql AS $$
  SELECT personalize.track(jsonb_build_object('type', t, 'user_id', u, 'item_id', i, 'properties', props), true)
$$;
CREATE VIEW pg_temp.box AS
SELECT message_id AS id, campaign, user_id, item_id, state, attempts, redeliveries,
       round(date_part('epoch', visible_at - created_at)) AS due_in_s, last_error
  FROM personalize.outbox ORDER BY message_id;
-- Claims a channel and keeps what it handed out (to ack or fail it later).
CREATE TEMP TABLE claimed AS SELECT * FROM personalize.claim_messages('email', 1) WHERE false;
CREATE FUNCTION pg_temp.claim(ch text, n integer DEFAULT 10, vis interval DEFAULT '30 seconds')
RETURNS TABLE (id bigint, campaign text, user_id text, attempt integer, payload jsonb)
LANGUAGE sql AS $$
  WITH c AS (SELECT * FROM personalize.claim_messages(ch, n, vis)),
       kept AS (INSERT INTO claimed SELECT * FROM c RETURNING *)
  SELECT k.message_id, k.campaign, k.user_id, k.attempt, k.payload FROM kept k ORDER BY k.message_id
$$;

SELECT personalize.upsert_items('[{"item_id": "cam1", "category": "cameras", "title": "Camera One", "price": 500},
  {"item_id": "cam2", "category": "cameras", "title": "Camera Two", "price": 800},
  {"item_id": "lens1", "category": "lenses", "title": "Lens", "price": 200}]');

INSERT INTO personalize.campaigns (name, trigger_event_type, trigger_category, delay, cancel_on, channel, template)
VALUES ('camera_browse', 'view', 'cameras', '2 hours', '{purchase}', 'email',
        '{"subject": "Still thinking about {{item_title}}, {{user_id}}?", "price": "{{properties.price}}",
          "key": "{{idempotency_key}}"}');
INSERT INTO personalize.campaigns (name, trigger_event_type, trigger_properties, channel, template)
VALUES ('newsletter_cart', 'add_to_cart', '{"cart_id": "from-newsletter"}', 'push', '{"title": "Your cart"}');

-- A camera view schedules one email in 2 hours; a lens view and a view without the property
-- filter do not; a second camera view while one is pending is absorbed.
SELECT pg_temp.ev('view', 'u1', 'cam1', '{"price": 499.5}') > 0 AS ok;
SELECT pg_temp.ev('view', 'u1', 'cam2') > 0 AS ok;
SELECT pg_temp.ev('view', 'u2', 'lens1') > 0 AS ok;
SELECT pg_temp.ev('add_to_cart', 'u2', 'lens1', '{"cart_id": "other"}') > 0 AS ok;
SELECT pg_temp.ev('add_to_cart', 'u3', 'lens1', '{"cart_id": "from-newsletter"}') > 0 AS ok;
SELECT * FROM pg_temp.box;
-- The category may come from the event's properties when the catalogue has no row.
SELECT pg_temp.ev('view', 'u4', 'unknown-item', '{"category": "cameras"}') > 0 AS ok;
SELECT id, user_id, item_id FROM pg_temp.box WHERE user_id = 'u4';

-- Same transaction: a rolled-back event leaves no message.
BEGIN;
SELECT pg_temp.ev('view', 'u5', 'cam1') > 0 AS ok;
SELECT count(*) AS inside FROM personalize.outbox WHERE user_id = 'u5';
ROLLBACK;
SELECT count(*) AS after_rollback FROM personalize.outbox WHERE user_id = 'u5';

-- Old events (a history import) trigger nothing.
SELECT personalize.track('{"type": "view", "user_id": "u6", "item_id": "cam1", "occurred_at": "2020-01-01T00:00:00Z"}') > 0 AS ok;
SELECT count(*) AS from_old_event FROM personalize.outbox WHERE user_id = 'u6';

-- Cancel-on: u1 buys; the pending browse email is cancelled (also within one batch).
SELECT pg_temp.ev('purchase', 'u1', 'cam1') > 0 AS ok;
SELECT * FROM personalize.track_batch(ARRAY[
  '{"type": "view", "user_id": "u7", "item_id": "cam2"}',
  '{"type": "purchase", "user_id": "u7", "item_id": "cam2"}']::jsonb[]);
SELECT id, user_id, state, last_error ~ '^cancelled by event \d+ \(purchase\)$' AS cancelled_by_purchase
  FROM pg_temp.box WHERE campaign = 'camera_browse' ORDER BY id;

-- Not due yet: nothing to claim on email; the push is due now.
SELECT count(*) AS due_email FROM pg_temp.claim('email');
SELECT id, campaign, user_id, attempt, payload FROM pg_temp.claim('push');
-- ack takes the lease: a wrong token does nothing; the right one marks it sent, once.
SELECT personalize.ack(message_id, '00000000-0000-0000-0000-000000000000') AS wrong_token FROM claimed;
SELECT personalize.ack(message_id, lease_token) AS acked FROM claimed;
SELECT personalize.ack(message_id, lease_token) AS acked_twice FROM claimed;
TRUNCATE claimed;

-- Time passes (the email becomes due); the payload is rendered at claim time.
UPDATE personalize.outbox SET visible_at = now() WHERE state = 'pending' AND campaign = 'camera_browse';
SELECT id, user_id, attempt, payload - 'key' AS payload,
       payload ->> 'key' = (SELECT CAST(idempotency_key AS text) FROM personalize.outbox o WHERE o.message_id = id) AS key_is_stable
  FROM pg_temp.claim('email');
-- Claimed messages are not handed out twice while the lease runs.
SELECT count(*) AS claimable_again FROM personalize.claim_messages('email');

-- fail(): retried with backoff, then dead after max_attempts; a stale lease cannot fail it.
UPDATE personalize.campaigns SET max_attempts = 2 WHERE name = 'camera_browse';
SELECT personalize.fail(message_id, lease_token, 'smtp 451 try later') AS state FROM claimed;
SELECT personalize.fail(message_id, lease_token, 'again') AS stale_lease FROM claimed;
SELECT message_id AS id, state, attempts,
       date_part('epoch', visible_at - now()) BETWEEN 9 AND 10 AS backoff_10s, last_error
  FROM personalize.outbox WHERE user_id = 'u4';
TRUNCATE claimed;
UPDATE personalize.outbox SET visible_at = now() WHERE user_id = 'u4';
SELECT id, attempt FROM pg_temp.claim('email');
SELECT personalize.fail(message_id, lease_token, 'mailbox full', retry_in => '0') AS state FROM claimed;
SELECT id, state, attempts, last_error FROM pg_temp.box WHERE user_id = 'u4';
TRUNCATE claimed;

-- A lease that expires without ack: the message comes back (a redelivery), the old lease
-- can no longer ack it, and it is dead once max_attempts claims have expired.
SELECT pg_temp.ev('view', 'u8', 'cam1') > 0 AS ok;
UPDATE personalize.outbox SET visible_at = now() WHERE user_id = 'u8';
SELECT id, attempt FROM pg_temp.claim('email', 10, '1 millisecond');
SELECT pg_sleep(0.01);
SELECT id, attempt FROM pg_temp.claim('email', 10, '1 millisecond');
SELECT count(DISTINCT lease_token) AS leases, bool_or(personalize.ack(message_id, lease_token)) FILTER (WHERE attempt = 1) AS first_lease_acks
  FROM claimed;
SELECT pg_sleep(0.01);
SELECT count(*) AS claimed_after_max_attempts FROM pg_temp.claim('email', 10, '1 millisecond');
SELECT id, state, attempts, redeliveries, last_error FROM pg_temp.box WHERE user_id = 'u8';
TRUNCATE claimed;

-- Frequency caps: per campaign, and across campaigns (checked when writing and when claiming).
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, cap_messages, cap_window, template)
VALUES ('every_cart', 'add_to_cart', 'sms', 1, '1 day', '{"text": "cart"}');
SELECT pg_temp.ev('add_to_cart', 'u9', 'cam1') > 0 AS ok;
SELECT id, attempt FROM pg_temp.claim('sms');
SELECT count(*) AS acked FROM claimed WHERE personalize.ack(message_id, lease_token);
TRUNCATE claimed;
SELECT pg_temp.ev('add_to_cart', 'u9', 'cam2') > 0 AS ok;
SELECT count(*) AS written_over_cap FROM personalize.outbox WHERE user_id = 'u9';
-- A cap added after messages were written is applied at claim time.
UPDATE personalize.campaigns SET cap_messages = NULL, cap_window = NULL WHERE name = 'every_cart';
SELECT pg_temp.ev('add_to_cart', 'u9', 'lens1') > 0 AS ok;
INSERT INTO personalize.frequency_caps (channel, max_messages, "window") VALUES ('sms', 1, '7 days');
SELECT count(*) AS claimed_over_global_cap FROM pg_temp.claim('sms');
SELECT id, state, last_error FROM pg_temp.box WHERE user_id = 'u9';
-- ... and when writing: u9 had an sms sent within the cap's 7 days, so a new trigger writes nothing.
SELECT pg_temp.ev('add_to_cart', 'u9', 'cam1') > 0 AS ok;
SELECT count(*) AS pending_over_global_cap FROM personalize.outbox WHERE user_id = 'u9' AND state = 'pending';
DELETE FROM personalize.frequency_caps;

-- Quiet hours: a message due inside them waits until they end (local time of the campaign).
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, quiet_start, quiet_end, quiet_timezone, template)
SELECT 'quiet_push', 'checkout', 'push',
       CAST((now() AT TIME ZONE 'Asia/Tokyo') - interval '1 hour' AS time),
       CAST((now() AT TIME ZONE 'Asia/Tokyo') + interval '2 hours' AS time), 'Asia/Tokyo', '{}';
SELECT personalize.track('{"type": "checkout", "user_id": "u10"}') > 0 AS ok;
SELECT state, round(date_part('epoch', visible_at - now()) / 60) AS waits_minutes
  FROM personalize.outbox WHERE user_id = 'u10';
-- A message that became due before the quiet hours began is held back at claim time.
UPDATE personalize.outbox SET visible_at = now() - interval '1 minute' WHERE user_id = 'u10';
SELECT count(*) AS claimed_in_quiet_hours FROM pg_temp.claim('push');
SELECT state, round(date_part('epoch', visible_at - now()) / 60) AS waits_minutes FROM personalize.outbox WHERE user_id = 'u10';
SELECT personalize._after_quiet_hours('2026-03-01 23:30+00', '22:00', '07:00', 'UTC') AS wraps_midnight,
       personalize._after_quiet_hours('2026-03-01 06:00+00', '22:00', '07:00', 'UTC') AS early_morning,
       personalize._after_quiet_hours('2026-03-01 12:00+00', '22:00', '07:00', 'UTC') AS daytime;

-- A campaign in a segment writes its message whoever fires it; the message goes out only if
-- the user is in the segment when it is due: the claim cancels the others', saying why.
INSERT INTO personalize.segments VALUES ('buyers', '{"bought": {}}');
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, segment, template)
VALUES ('buyer_search', 'search', 'webhook', 'buyers', '{"q": "{{properties.query}}"}');
SELECT personalize.track('{"type": "search", "user_id": "u1", "properties": {"query": "lens"}}') > 0 AS buyer,
       personalize.track('{"type": "search", "user_id": "u2", "properties": {"query": "lens"}}') > 0 AS not_buyer;
SELECT user_id, campaign, state FROM pg_temp.box WHERE campaign = 'buyer_search';
-- A batch, and u3 buying after its search but before the claim: membership is read when the
-- claim takes the messages (one set query for the batch's users), so exactly the members
-- then get theirs, u3 included; a user without any other event is not one.
SELECT accepted FROM personalize.track_batch(ARRAY(
  SELECT jsonb_build_object('type', 'search', 'user_id', u, 'properties', jsonb_build_object('query', 'x'))
    FROM unnest(ARRAY['u3', 'u4', 'u5', 'u6', 'u7', 'u8', 'u9', 'newcomer']) u));
SELECT pg_temp.ev('purchase', 'u3', 'lens1') > 0 AS u3_buys;
SELECT user_id FROM pg_temp.claim('webhook') ORDER BY 1;
SELECT u AS user_id, personalize.in_segment(u, 'buyers') AS member, o.state, o.last_error
  FROM unnest(ARRAY['u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7', 'u8', 'u9', 'newcomer']) u
  LEFT JOIN personalize.outbox o ON o.campaign = 'buyer_search' AND o.user_id = u
 ORDER BY 1;
SELECT count(*) AS acked FROM claimed WHERE personalize.ack(message_id, lease_token);
TRUNCATE claimed;
DELETE FROM personalize.outbox WHERE campaign = 'buyer_search';
-- The claim prepares each segment once per backend; a changed definition applies to the next
-- claim all the same (the segments' trigger drops the prepared one): u1 leaves the segment
-- between the trigger and the claim, u2 joins it.
SELECT personalize.track('{"type": "search", "user_id": "u1", "properties": {"query": "bag"}}') > 0 AS u1_searches,
       personalize.track('{"type": "search", "user_id": "u2", "properties": {"query": "bag"}}') > 0 AS u2_searches;
UPDATE personalize.segments SET definition = '{"not": {"bought": {}}}' WHERE name = 'buyers';
SELECT user_id FROM pg_temp.claim('webhook');
SELECT user_id, state, last_error FROM pg_temp.box WHERE campaign = 'buyer_search';
SELECT count(*) AS acked FROM claimed WHERE personalize.ack(message_id, lease_token);
TRUNCATE claimed;
UPDATE personalize.segments SET definition = '{"bought": {}}' WHERE name = 'buyers';
DELETE FROM personalize.outbox WHERE campaign = 'buyer_search';
-- Item categories come from a per-backend copy of the catalogue, re-read when it changes: a
-- bag viewed before and after it is moved into cameras.
SELECT personalize.upsert_items('[{"item_id": "bag1", "category": "bags", "title": "Bag"}]');
SELECT pg_temp.ev('view', 'recat', 'bag1') > 0 AS ok;
SELECT count(*) AS as_a_bag FROM personalize.outbox WHERE user_id = 'recat';
SELECT personalize.upsert_items('[{"item_id": "bag1", "category": "cameras", "title": "Bag"}]');
SELECT pg_temp.ev('view', 'recat', 'bag1') > 0 AS ok;
SELECT campaign, item_id FROM personalize.outbox WHERE user_id = 'recat';
DELETE FROM personalize.outbox WHERE user_id = 'recat';
DELETE FROM personalize.items WHERE item_id = 'bag1';

-- Recommendations in the payload, computed at claim time from the active model.
INSERT INTO personalize.models (name, status, params, as_of, n_users, n_items, n_interactions,
        loss_per_iteration, seconds_per_iteration, read_seconds, train_seconds)
SELECT 'default', 'active', '{"factors": 2, "alpha": 2, "regularization": 0.1}', now() - interval '1 day', 1, 3, 0, '{}', '{}', 0, 0;
INSERT INTO personalize.model_items (model_id, item_index, item_id, factors, popularity)
SELECT m.model_id, v.* FROM personalize.models m,
 (VALUES (0, 'cam1', '{1, 0}'::real[], 3::real), (1, 'cam2', '{0.9, 0.1}', 2), (2, 'lens1', '{0, 1}', 1)) v;
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, recommendations, template)
VALUES ('grid', 'remove_from_cart', 'whatsapp', 2, '{"items": "{{recommendations}}"}');
SELECT personalize.track('{"type": "remove_from_cart", "user_id": "u1", "item_id": "lens1"}') > 0 AS ok;
SELECT id, jsonb_pretty(payload) FROM pg_temp.claim('whatsapp');
-- ack_batch: only with the claim's lease, and once.
SELECT personalize.ack_batch('00000000-0000-0000-0000-000000000000', ARRAY(SELECT message_id FROM claimed)) AS wrong_lease;
SELECT personalize.ack_batch((SELECT lease_token FROM claimed), ARRAY(SELECT message_id FROM claimed)) AS acked;
SELECT personalize.ack_batch((SELECT lease_token FROM claimed), ARRAY(SELECT message_id FROM claimed)) AS acked_twice;
TRUNCATE claimed;

-- (NOTIFY on due messages is tested in tests/outbox_concurrency.sh: psql prints the
-- notifying backend's PID, which differs between runs.)
SELECT pg_temp.ev('add_to_cart', 'u11', 'cam1', '{"cart_id": "from-newsletter"}') > 0 AS ok;

-- Paused campaigns' messages wait; a deleted campaign's messages are cancelled at claim time.
SELECT pg_temp.ev('add_to_cart', 'u12', 'cam1', '{"cart_id": "from-newsletter"}') > 0 AS ok;
UPDATE personalize.campaigns SET enabled = false WHERE name = 'newsletter_cart';
SELECT count(*) AS claimed_while_paused FROM pg_temp.claim('push');
DELETE FROM personalize.campaigns WHERE name = 'newsletter_cart';
SELECT count(*) AS claimed_after_delete FROM pg_temp.claim('push');
SELECT user_id, state, last_error FROM pg_temp.box WHERE user_id IN ('u11', 'u12');
-- The messages keep their history, with campaign_id NULL (there is no foreign key: the
-- campaigns trigger clears it).
SELECT count(*) AS orphaned_ids FROM personalize.outbox o
 WHERE o.campaign = 'newsletter_cart' AND o.campaign_id IS NOT NULL;

-- A campaign's id never changes (messages refer to it); a message whose campaign row is gone
-- without a DELETE (here: written for an id that never existed) is cancelled at claim time.
SELECT pg_temp.err($$UPDATE personalize.campaigns SET campaign_id = campaign_id + 1000$$);
INSERT INTO personalize.outbox (campaign_id, campaign, channel, user_id, trigger_event_id, triggered_at, visible_at)
VALUES (987654, 'vanished', 'push', 'u13', 0, now(), now());
SELECT count(*) AS claimed_for_a_vanished_campaign FROM pg_temp.claim('push');
SELECT user_id, state, last_error FROM pg_temp.box WHERE user_id = 'u13';

-- Campaigns changed in this session are seen by its next event (the per-backend cache is
-- dropped by the change).
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, trigger_properties)
VALUES ('refund_by_currency', 'refund', 'webhook', '{"currency": "EUR"}');
SELECT pg_temp.ev('refund', 'u14', 'cam1', '{"currency": "EUR"}') > 0 AS ok;
SELECT pg_temp.ev('refund', 'u15', 'cam1', '{"currency": "USD"}') > 0 AS ok;
UPDATE personalize.campaigns SET trigger_properties = '{"currency": "USD"}' WHERE name = 'refund_by_currency';
SELECT pg_temp.ev('refund', 'u16', 'cam1', '{"currency": "USD"}') > 0 AS ok;
SELECT user_id, campaign, state FROM pg_temp.box WHERE campaign = 'refund_by_currency' ORDER BY user_id;
DELETE FROM personalize.campaigns WHERE name = 'refund_by_currency';
DELETE FROM personalize.outbox WHERE campaign IN ('refund_by_currency', 'vanished');

-- Bad campaigns and bad calls: clear errors, nothing written.
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel) VALUES ('x', 'wishlist', 'email')$$);
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel, cancel_on) VALUES ('x', 'view', 'email', '{purchase, refnd}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel) VALUES ('x', 'view', 'fax')$$);
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel, template) VALUES ('x', 'view', 'email', '{"s": "{{first_name}}"}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel, template) VALUES ('x', 'view', 'email', '{"s": "see {{recommendations}}"}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel, quiet_start, quiet_end, quiet_timezone) VALUES ('x', 'view', 'email', '22:00', '07:00', 'Mars/Olympus')$$);
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel, delay) VALUES ('x', 'view', 'email', '-1 hour')$$);
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel, cap_messages) VALUES ('x', 'view', 'email', 3)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.claim_messages('fax')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.claim_messages('email', 0)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.claim_messages('email', 10, '0 seconds')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.claim_messages(NULL)$$);
SELECT pg_temp.err($$SELECT personalize.fail(1, gen_random_uuid(), 'x', '-1 second')$$);
SELECT count(*) AS campaigns FROM personalize.campaigns;

-- Archiving finished messages.
SELECT personalize.archive_messages('0 seconds') AS archived;
SELECT state, count(*) FROM personalize.outbox GROUP BY state ORDER BY state;
SELECT state, count(*) FROM personalize.outbox_archive GROUP BY state ORDER BY state;
-- purge deletes instead of archiving; nothing younger than older_than is touched.
UPDATE personalize.outbox SET state = 'cancelled', finished_at = now() - interval '2 days' WHERE user_id = 'u10';
SELECT personalize.archive_messages('1 day', purge => true) AS purged;
SELECT (SELECT count(*) FROM personalize.outbox WHERE user_id = 'u10') AS u10_left,
       (SELECT count(*) FROM personalize.outbox_archive) AS archive_unchanged;
SELECT * FROM personalize.status WHERE section = 'outbox' ORDER BY name;

-- A message fired and cancelled by events of one statement (u7's view and purchase in one
-- batch, above) was written cancelled at once: finished, never queued, and holding no pending
-- slot, so u7's next camera view fires a new message; that view's own statement cancels
-- nothing. A batch that views, buys and views again fires once (its first view) and cancels it.
SELECT state, finished_at IS NOT NULL AS finished, last_error ~ '^cancelled by event \d+ \(purchase\)$' AS cancelled_by_purchase
  FROM (SELECT message_id, state, finished_at, last_error FROM personalize.outbox_archive
         WHERE user_id = 'u7' AND campaign = 'camera_browse'
        UNION ALL
        SELECT message_id, state, finished_at, last_error FROM personalize.outbox
         WHERE user_id = 'u7' AND campaign = 'camera_browse') m ORDER BY message_id;
SELECT pg_temp.ev('view', 'u7', 'cam2') > 0 AS ok;
SELECT state, finished_at IS NOT NULL AS finished FROM personalize.outbox
 WHERE user_id = 'u7' AND campaign = 'camera_browse' ORDER BY message_id;
SELECT accepted FROM personalize.track_batch(ARRAY(
  SELECT jsonb_build_object('type', t, 'user_id', 'u17', 'item_id', i, 'occurred_at', now() - m * interval '1 minute')
    FROM (VALUES ('view', 'cam1', 30), ('purchase', 'cam1', 20), ('view', 'cam2', 10)) v(t, i, m)));
SELECT o.state, e.item_id AS fired_by_view_of, o.last_error = 'cancelled by event ' || p.event_id || ' (purchase)' AS cancelled_by_the_purchase
  FROM personalize.outbox o
  JOIN personalize.events e ON e.event_id = o.trigger_event_id
  JOIN personalize.events p ON p.user_id = 'u17' AND p.event_type = 'purchase'
 WHERE o.user_id = 'u17' AND o.campaign = 'camera_browse';

-- A pending message cancelled by an event of a batch no longer absorbs a later firing of the
-- same batch: u20's earlier camera view is pending; a batch of a purchase and then another
-- camera view cancels it and starts a new message, as two statements would.
SELECT pg_temp.ev('view', 'u20', 'cam1') > 0 AS ok;
SELECT accepted FROM personalize.track_batch(ARRAY(
  SELECT jsonb_build_object('type', t, 'user_id', 'u20', 'item_id', i, 'occurred_at', now() + m * interval '1 second')
    FROM (VALUES ('purchase', 'cam1', 1), ('view', 'cam2', 2)) v(t, i, m)));
SELECT o.state, e.event_type AS fired_by, e.item_id, o.last_error ~ '^cancelled by event \d+ \(purchase\)$' AS cancelled_by_the_purchase
  FROM personalize.outbox o JOIN personalize.events e ON e.event_id = o.trigger_event_id
 WHERE o.user_id = 'u20' AND o.campaign = 'camera_browse' ORDER BY o.message_id;

-- A DBA's own trigger on the outbox (an audit copy of every message) is honoured: with
-- anything on the table that the extension did not create, the events trigger writes its
-- messages with INSERT statements, which fire it, instead of inserting them itself. The rows
-- are alike column by column either way: u18's batch repeats u17's (written directly, above).
-- track() runs as personalize_definer, so the trigger does too: it is granted its table.
CREATE TABLE public.outbox_audit (message_id bigint, state text);
GRANT INSERT ON public.outbox_audit TO personalize_definer;
CREATE FUNCTION public.outbox_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.outbox_audit VALUES (NEW.message_id, NEW.state); RETURN NULL; END $$;
CREATE TRIGGER outbox_audit AFTER INSERT ON personalize.outbox
    FOR EACH ROW EXECUTE FUNCTION public.outbox_audit_row();
SELECT accepted FROM personalize.track_batch(ARRAY(
  SELECT jsonb_build_object('type', t, 'user_id', 'u18', 'item_id', i, 'occurred_at', now() - m * interval '1 minute')
    FROM (VALUES ('view', 'cam1', 30), ('purchase', 'cam1', 20), ('view', 'cam2', 10)) v(t, i, m)));
SELECT pg_temp.ev('view', 'u19', 'cam1') > 0 AS ok;
SELECT o.user_id, o.state, a.state AS audited
  FROM personalize.outbox o LEFT JOIN public.outbox_audit a USING (message_id)
 WHERE o.user_id IN ('u17', 'u18', 'u19') ORDER BY o.message_id;
SELECT user_id, campaign, channel, item_id, state, context, payload, attempts, redeliveries,
       lease_token IS NULL AS no_lease, claimed_at IS NULL AS unclaimed, finished_at IS NOT NULL AS finished,
       round(date_part('epoch', visible_at - triggered_at)) AS due_after_s,
       created_at > now() - interval '1 minute' AS created_now, idempotency_key IS NOT NULL AS has_key,
       regexp_replace(last_error, '\d+', 'N') AS last_error
  FROM personalize.outbox WHERE user_id IN ('u17', 'u18') ORDER BY user_id;
DROP TRIGGER outbox_audit ON personalize.outbox;
DROP FUNCTION public.outbox_audit_row();
DROP TABLE public.outbox_audit;

-- personalize.outbox_direct_write = off makes the events trigger use its INSERT statements on
-- the outbox as the extension made it too; the DEBUG1 line says which path wrote (u21: the
-- statements, u22: the direct writer), and the rows agree with u17's column by column.
SET client_min_messages = debug1;
SET personalize.outbox_direct_write = off;
SELECT accepted FROM personalize.track_batch(ARRAY(
  SELECT jsonb_build_object('type', t, 'user_id', 'u21', 'item_id', i, 'occurred_at', now() - m * interval '1 minute')
    FROM (VALUES ('view', 'cam1', 30), ('purchase', 'cam1', 20), ('view', 'cam2', 10)) v(t, i, m)));
RESET personalize.outbox_direct_write;
SELECT accepted FROM personalize.track_batch(ARRAY(
  SELECT jsonb_build_object('type', t, 'user_id', 'u22', 'item_id', i, 'occurred_at', now() - m * interval '1 minute')
    FROM (VALUES ('view', 'cam1', 30), ('purchase', 'cam1', 20), ('view', 'cam2', 10)) v(t, i, m)));
SET client_min_messages = warning;
SELECT count(DISTINCT (campaign, channel, item_id, state, context, payload, attempts, redeliveries,
                       lease_token IS NULL, claimed_at IS NULL, finished_at IS NOT NULL,
                       round(date_part('epoch', visible_at - triggered_at)),
                       regexp_replace(last_error, '\d+', 'N'))) AS distinct_rows,
       count(*) AS messages
  FROM personalize.outbox WHERE user_id IN ('u17', 'u21', 'u22');

-- Quiet hours as the trigger computes them (without a statement) agree with
-- personalize._after_quiet_hours for deliveries all around the clock: a window that wraps
-- midnight and one within a day, in zones with daylight saving and a 5:45 offset.
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, delay, quiet_start, quiet_end, quiet_timezone, template)
VALUES ('quiet_wrap', 'search', 'sms', '1 day', '21:30', '07:15', 'America/New_York', '{}'),
       ('quiet_day', 'search', 'sms', '1 day', '12:00', '13:45', 'Asia/Kathmandu', '{}');
SELECT sum(accepted) AS accepted FROM personalize.track_batch(ARRAY(
  SELECT jsonb_build_object('type', 'search', 'user_id', 'qh' || n, 'occurred_at', now() - n * interval '17 minutes',
                            'properties', jsonb_build_object('query', 'q'))
    FROM generate_series(0, 80) n));
SELECT c.name, count(*) AS messages,
       count(*) FILTER (WHERE o.visible_at = personalize._after_quiet_hours(o.triggered_at + c.delay, c.quiet_start,
                                                                           c.quiet_end, c.quiet_timezone)) AS as_the_sql_function,
       bool_or(o.visible_at > o.triggered_at + c.delay) AS some_moved
  FROM personalize.outbox o JOIN personalize.campaigns c USING (campaign_id)
 WHERE c.name IN ('quiet_wrap', 'quiet_day') GROUP BY 1 ORDER BY 1;
DELETE FROM personalize.outbox WHERE user_id LIKE 'qh%';
DELETE FROM personalize.campaigns WHERE name IN ('quiet_wrap', 'quiet_day');
