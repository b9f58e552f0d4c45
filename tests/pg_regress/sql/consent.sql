-- Consent: opt-in policies per channel, unsubscribes (channel or campaign), suppressions, and
-- signed unsubscribe tokens. claim_messages() cancels what may not go out, with the reason.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql

INSERT INTO personalize.campaigns (name, trigger_event_type, channel) VALUES
 ('wa_views', 'view', 'whatsapp'), ('wa_carts', 'add_to_cart', 'whatsapp'), ('mail_views', 'view', 'email');
SELECT personalize.set_consent('w1', 'whatsapp', true, 'checkout opt-in');
SELECT personalize.set_consent('w3', 'whatsapp', true, 'checkout opt-in');
SELECT personalize.set_consent('w3', 'whatsapp', false, 'reply STOP');
SELECT personalize.set_consent('w4', 'whatsapp', true, 'checkout opt-in');
SELECT personalize.set_consent('w4', 'whatsapp', false, 'preferences page', campaign => 'wa_views');
SELECT personalize.set_consent('w5', 'whatsapp', true, 'checkout opt-in');
SELECT personalize.suppress('w5', 'whatsapp', 'invalid number (131026)');
SELECT personalize.set_consent('e2', 'email', false, 'unsubscribe page');
SELECT user_id, channel, campaign, status, source FROM personalize.consents ORDER BY 1, 2, 3;
SELECT count(personalize.track(jsonb_build_object('type', t, 'user_id', u, 'item_id', 'i1'))) AS tracked
  FROM unnest(ARRAY['w1', 'w2', 'w3', 'w4', 'w5', 'e1', 'e2']) u, unnest(ARRAY['view', 'add_to_cart']) t;
-- The trigger knows already: what the consents refuse is written cancelled, with the reason,
-- never queued.
SELECT user_id, campaign, state, last_error FROM personalize.outbox
 WHERE state <> 'pending' ORDER BY 1, 2;
-- More views of a refused user add no record for a day (one row, not one per page view).
SELECT count(personalize.track(jsonb_build_object('type', 'view', 'user_id', 'w2', 'item_id', i)))
  FROM unnest(ARRAY['i2', 'i3', 'i4']) i;
SELECT campaign, count(*) FROM personalize.outbox WHERE user_id = 'w2' GROUP BY 1 ORDER BY 1;
-- A day later, one more.
UPDATE personalize.outbox SET created_at = created_at - interval '25 hours' WHERE user_id = 'w2' AND campaign = 'wa_views';
SELECT personalize.track('{"type": "view", "user_id": "w2", "item_id": "i5"}') > 0 AS tracked;
SELECT campaign, count(*) FROM personalize.outbox WHERE user_id = 'w2' GROUP BY 1 ORDER BY 1;
UPDATE personalize.outbox SET visible_at = now() - interval '1 second';
-- WhatsApp needs an opt-in: only w1 gets both, w4 only the campaign it did not leave.
SELECT user_id, campaign FROM personalize.claim_messages('whatsapp', 100) ORDER BY 1, 2;
SELECT user_id, campaign, state, last_error FROM personalize.outbox
 WHERE channel = 'whatsapp' AND state = 'cancelled' ORDER BY 1, 2;
-- Email needs none by default: everyone but e2, who unsubscribed.
SELECT user_id FROM personalize.claim_messages('email', 100) ORDER BY 1;
SELECT user_id, last_error FROM personalize.outbox WHERE channel = 'email' AND state = 'cancelled';
-- A shop whose email needs an opt-in says so; a user who opts in again after a suppression
-- is contacted again.
SELECT max(message_id) AS last_id FROM personalize.outbox \gset
INSERT INTO personalize.channel_policies VALUES ('email', true);
SELECT personalize.set_consent('w5', 'whatsapp', true, 'new number');
SELECT count(personalize.track(jsonb_build_object('type', 'view', 'user_id', u, 'item_id', 'i2'))) AS tracked
  FROM unnest(ARRAY['w5', 'e1']) u;
-- The policy is cached with the campaigns and re-read when it changes: e1's email is refused
-- at once; w5's WhatsApp, opted in again, is queued.
SELECT user_id, campaign, state, last_error FROM personalize.outbox
 WHERE message_id > :last_id ORDER BY 1, 2;
UPDATE personalize.outbox SET visible_at = now() - interval '1 second' WHERE state = 'pending';
SELECT user_id, campaign FROM personalize.claim_messages('whatsapp', 100) ORDER BY 1, 2;
SELECT count(*) AS emails_claimed FROM personalize.claim_messages('email', 100);
SELECT user_id, last_error FROM personalize.outbox WHERE channel = 'email' AND state = 'cancelled' ORDER BY 1;
DELETE FROM personalize.channel_policies;

-- Unsubscribe links: signed with personalize.unsubscribe_secret.
SELECT pg_temp.err($$SELECT personalize.unsubscribe_token('e1', 'email')$$);
SET personalize.unsubscribe_secret = 'too short';
SELECT pg_temp.err($$SELECT personalize.unsubscribe_token('e1', 'email')$$);
SET personalize.unsubscribe_secret = '9f4c1e7a2b8d3f6051c4e9a7b2d8f3c6e1a4b7d0c3f6a9e2';
CREATE TEMP TABLE tokens AS
SELECT personalize.unsubscribe_token('e1', 'email') AS e1,
       personalize.unsubscribe_token('e3', 'email', 'mail_views') AS e3_campaign;
SELECT * FROM personalize.unsubscribe((SELECT e1 FROM tokens));
SELECT * FROM personalize.unsubscribe((SELECT e1 FROM tokens));
SELECT * FROM personalize.unsubscribe((SELECT e3_campaign FROM tokens));
SELECT user_id, channel, campaign, status, source FROM personalize.consents WHERE user_id IN ('e1', 'e3') ORDER BY 1, 3;
-- A link does not lift a suppression.
SELECT personalize.suppress('e4', 'email', 'hard bounce');
SELECT * FROM personalize.unsubscribe(personalize.unsubscribe_token('e4', 'email'));
SELECT status, source FROM personalize.consents WHERE user_id = 'e4';
-- e3's recipient under e1's signature, a token cut short, one signed under another key: refused.
SELECT pg_temp.err(format('SELECT * FROM personalize.unsubscribe(%L)',
         split_part(e3_campaign, '.', 1) || '.' || split_part(e1, '.', 2))) FROM tokens;
SELECT pg_temp.err(format('SELECT * FROM personalize.unsubscribe(%L)', left(e1, -3))) FROM tokens;
SET personalize.unsubscribe_secret = '0000000000000000000000000000000000000000000000000000';
SELECT pg_temp.err(format('SELECT * FROM personalize.unsubscribe(%L)', e1)) FROM tokens;
RESET personalize.unsubscribe_secret;
SELECT count(*) AS unsubscribed FROM personalize.consents WHERE status = 'unsubscribed';
-- A message the worker cannot deliver (no number on file) ends cancelled with the reason,
-- once, and only under its lease.
SELECT personalize.track('{"type": "view", "user_id": "w1", "item_id": "i3"}') > 0 AS tracked;
UPDATE personalize.outbox SET visible_at = now() - interval '1 second' WHERE state = 'pending';
CREATE TEMP TABLE held AS SELECT message_id, lease_token FROM personalize.claim_messages('whatsapp', 1);
SELECT personalize.cancel_message(message_id, gen_random_uuid(), 'x') AS wrong_lease FROM held;
SELECT personalize.cancel_message(message_id, lease_token, 'no WhatsApp number on file') AS cancelled FROM held;
SELECT personalize.cancel_message(message_id, lease_token, 'again') AS again FROM held;
SELECT o.state, o.last_error, o.finished_at IS NOT NULL AS finished FROM personalize.outbox o JOIN held USING (message_id);
-- Addresses stay in the shop's tables: a policy names them, the claim reads them (as
-- personalize_definer, which the DBA lets read them), the worker looks one up when it sends.
CREATE TABLE public.consent_phones (user_id text, phone text);
INSERT INTO public.consent_phones VALUES ('w1', '+4915112345678'), ('w4', '');
SELECT pg_temp.err($$INSERT INTO personalize.channel_policies VALUES ('whatsapp', NULL, 'public.consent_phones', 'mobile')$$);
INSERT INTO personalize.channel_policies VALUES ('whatsapp', NULL, 'public.consent_phones', 'phone');
SELECT count(personalize.track(jsonb_build_object('type', 'add_to_cart', 'user_id', u, 'item_id', 'i4'))) AS tracked
  FROM unnest(ARRAY['w1', 'w4']) u;
UPDATE personalize.outbox SET visible_at = now() - interval '1 second' WHERE state = 'pending';
-- Not readable yet: the messages fail alone and wait for a retry.
SELECT count(*) AS claimed FROM personalize.claim_messages('whatsapp', 100);
SELECT user_id, state, last_error FROM personalize.outbox
 WHERE channel = 'whatsapp' AND last_error LIKE 'the claim failed: reading%' ORDER BY 1;
GRANT SELECT ON public.consent_phones TO personalize_definer;
UPDATE personalize.outbox SET visible_at = now() - interval '1 second' WHERE state = 'pending';
SELECT user_id, campaign FROM personalize.claim_messages('whatsapp', 100) ORDER BY 1;
SELECT user_id, state, last_error FROM personalize.outbox
 WHERE channel = 'whatsapp' AND last_error LIKE 'no whatsapp address%' ORDER BY 1;
SELECT personalize.recipient_address('w1', 'whatsapp') AS w1, personalize.recipient_address('w9', 'whatsapp') AS w9;
SELECT pg_temp.err($$SELECT personalize.recipient_address('w1', 'email')$$);
-- The same for a batch, in one read: each user found once, the others left out.
SELECT * FROM personalize.recipient_addresses('whatsapp', ARRAY['w1', 'w4', 'w9', 'w1', 'nobody']) ORDER BY 1;
SELECT pg_temp.err($$SELECT * FROM personalize.recipient_addresses('email', ARRAY['w1'])$$);
DELETE FROM personalize.channel_policies;
-- Bad input.
SELECT pg_temp.err($$SELECT personalize.set_consent('x', 'fax', true)$$);
SELECT pg_temp.err($$SELECT personalize.set_consent('x', 'email', NULL)$$);
SELECT pg_temp.err($$SELECT personalize.suppress('', 'email', 'bounce')$$);
SELECT pg_temp.err($$SELECT personalize.unsubscribe(NULL)$$);
-- The secret is the superuser's: an app role cannot read it.
SELECT setting FROM pg_settings WHERE name = 'personalize.unsubscribe_secret';
-- A worker hands back a message it did not send (it is stopping, the provider refuses its
-- credentials): pending again after retry_in, the claim not counted as an attempt, only under
-- its lease.
SELECT personalize.set_consent('r1', 'whatsapp', true, 'checkout opt-in');
SELECT personalize.track('{"type": "view", "user_id": "r1", "item_id": "i5"}') > 0 AS tracked;
UPDATE personalize.outbox SET visible_at = now() - interval '1 second' WHERE user_id = 'r1';
CREATE TEMP TABLE released AS
SELECT message_id, lease_token, attempt FROM personalize.claim_messages('whatsapp', 100) WHERE user_id = 'r1';
SELECT attempt FROM released;
SELECT personalize.release_message(message_id, gen_random_uuid()) AS wrong_lease FROM released;
SELECT personalize.release_message(message_id, lease_token, '10 minutes') AS released FROM released;
SELECT personalize.release_message(message_id, lease_token) AS again FROM released;
SELECT o.state, o.attempts, o.lease_token IS NULL AS no_lease, o.claimed_at IS NULL AS unclaimed,
       o.visible_at > now() + interval '9 minutes' AS due_later
  FROM personalize.outbox o JOIN released USING (message_id);
SELECT pg_temp.err($$SELECT personalize.release_message(1, gen_random_uuid(), '-1 second')$$);
