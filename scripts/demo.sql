-- The main job on a synthetic shop. Run by scripts/demo.sh; :events is the shop's size.
\pset footer off
\set QUIET on
SET client_min_messages = warning;
CREATE EXTENSION pg_personalize;

\echo
\echo '1. The tracking plan installed by CREATE EXTENSION (edit it with plain SQL):'
SELECT event_type, requires_item, weight, half_life, description FROM personalize.event_types ORDER BY weight, event_type;

\echo '2. A synthetic shop: catalogue + behaviour events, every event validated against the plan.'
\timing on
SELECT * FROM personalize.generate_shop(:events, users => 2000, items => 800, seed => 42);
\timing off

\echo '3. An app sends a batch with some bad events: they are quarantined with reasons, never lost.'
SELECT * FROM personalize.track_batch(ARRAY[
  '{"type":"view","user_id":"U0000001","item_id":"P0000003","session_id":"web-1","properties":{"price":19.99}}',
  '{"type":"add_to_cart","user_id":"U0000001","item_id":"P0000003","properties":{"quantity":1,"price":19.99}}',
  '{"type":"purchase","user_id":"U0000001","item_id":"P0000003","client_event_id":"order-77:1","properties":{"order_id":"77","quantity":1,"price":19.99,"currency":"EUR"}}',
  '{"type":"purchase","user_id":"U0000001","item_id":"P0000003","client_event_id":"order-77:1","properties":{"order_id":"77","quantity":1,"price":19.99,"currency":"EUR"}}',
  '{"type":"view","user_id":"U0000002"}',
  '{"type":"purchase","user_id":"U0000002","item_id":"P0000004","properties":{"quantity":0,"price":"free","coupon":"X"}}',
  '{"type":"wishlist_add","user_id":"U0000003","item_id":"P0000005"}',
  '{"type":"search","user_id":"U0000004","occurred_at":"1970-01-01T00:00:00Z","properties":{"query":"lens"}}',
  '{"type":"view","user_id":"U0000005","item_id":"P0000006","properties":{"price":1e400}}',
  NULL
]::jsonb[]);

\echo 'What was quarantined, and why (personalize.rejected_events):'
SELECT batch_position AS pos, event_type, user_id, v->>'path' AS path, v->>'message' AS problem
  FROM personalize.rejected_events, jsonb_array_elements(violations) v
 WHERE source = 'track_batch' ORDER BY batch_position, path;

\echo '4. validate_event() checks without storing (e.g. in a CI test of the app):'
SELECT personalize.validate_event('{"type":"add_to_cart","user_id":"U1","item_id":"P1","properties":{"quantity":"two"}}') AS violations;

\echo '5. personalize.status:'
SELECT * FROM personalize.status ORDER BY section, name;

\echo '6. Train the recommender with its defaults: it holds out each user''s latest fifth of their items,'
\echo '   fits popularity, trending, RP3beta and EASE (item-item), a small ALS grid and blends on the rest,'
\echo '   keeps the simplest within one standard error of the best NDCG@10 and refits it on all the events'
\echo '   (a NOTICE per candidate):'
SET client_min_messages = notice;
SELECT model_id, model_name, users, items, interactions,
       round(read_seconds::numeric, 3) AS read_s, round(train_seconds::numeric, 3) AS train_s,
       round(write_seconds::numeric, 3) AS write_s
  FROM personalize.train();
SET client_min_messages = warning;
SELECT family, params, round(ndcg_at_10::numeric, 4) AS ndcg_at_10, round(recall_at_10::numeric, 4) AS recall_at_10,
       round(fit_seconds::numeric, 2) AS fit_s, chosen
  FROM personalize.model_selection WHERE status = 'active' ORDER BY rank_in_order;
SELECT model_id, name, status, n_users, n_items, n_interactions, params ->> 'model_type' AS model_type
  FROM personalize.models;

\echo '7. Offline evaluation: each user''s latest 20% of items held out; what train() with no arguments would'
\echo '   serve (auto, chosen on the training part alone) and each family trained on the rest:'
SELECT method, k, users, round(precision::numeric, 4) AS precision, round(recall::numeric, 4) AS recall,
       round(ndcg::numeric, 4) AS ndcg, round(map::numeric, 4) AS map, round(coverage::numeric, 4) AS coverage
  FROM personalize.evaluate(factors => 16, iterations => 8, alpha => 5, regularization => 1);

\echo '8. Serving. A homepage grid for a known user (what they bought is left out; source says where the'
\echo '   user vector came from; model_id which model version answered):'
\timing on
SELECT * FROM personalize.recommend('U0000042', 5);
\timing off
\echo '   Only one category, only items in stock:'
SELECT item_id, i.category, round(score::numeric, 4) AS score
  FROM personalize.recommend('U0000042', 3, category => 'lenses') r JOIN personalize.items i USING (item_id);

\echo '9. A brand-new visitor: first popular items; after two clicks on tripods the next call is folded in'
\echo '   (no retraining: the clicks times the item-item weights, or the ALS closed form):'
SELECT r.item_id, i.category, r.source FROM personalize.recommend('visitor-1', 4) r JOIN personalize.items i USING (item_id);
SELECT personalize.track(jsonb_build_object('type', t, 'user_id', 'visitor-1', 'item_id', item_id)) IS NOT NULL AS tracked
  FROM (SELECT item_id, CASE WHEN n = 1 THEN 'view' ELSE 'add_to_cart' END AS t
          FROM (SELECT item_id, row_number() OVER (ORDER BY item_id) AS n
                  FROM personalize.items WHERE category = 'tripods' ORDER BY item_id LIMIT 2) x) c;
SELECT r.item_id, i.category, round(r.score::numeric, 4) AS score, r.source
  FROM personalize.recommend('visitor-1', 4) r JOIN personalize.items i USING (item_id);
\echo '   Why the first one? The visitor''s items and their share of its score:'
SELECT because_of, round(contribution::numeric, 4) AS contribution, round(share::numeric, 3) AS share
  FROM personalize.explain_recommendation('visitor-1', (SELECT item_id FROM personalize.recommend('visitor-1', 1)));

\echo '   A returning customer browses three tripods now. Their current session (the last 30 minutes,'
\echo '   personalize.session_window) is weighed in beside their long-term taste (source session):'
SELECT string_agg(i.category, ', ' ORDER BY r.score DESC, r.item_id) AS "U0000042 before"
  FROM personalize.recommend('U0000042', 6) r JOIN personalize.items i USING (item_id);
SELECT count(personalize.track(jsonb_build_object('type', 'view', 'user_id', 'U0000042', 'item_id', item_id))) AS views
  FROM (SELECT item_id FROM personalize.items WHERE category = 'tripods' ORDER BY item_id DESC LIMIT 3) t;
SELECT string_agg(i.category, ', ' ORDER BY r.score DESC, r.item_id) AS "U0000042 after", min(r.source) AS source
  FROM personalize.recommend('U0000042', 6) r JOIN personalize.items i USING (item_id);

\echo '10. A product page ("similar items") and a category page re-ranked for this user:'
SELECT s.item_id, i.category, round(s.score::numeric, 4) AS cosine
  FROM personalize.similar_items('P0000003', 4) s JOIN personalize.items i USING (item_id);
SELECT r.rank, r.item_id, round(r.score::numeric, 4) AS affinity
  FROM personalize.rank_items('U0000042',
         ARRAY(SELECT item_id FROM personalize.items WHERE category = 'cameras' ORDER BY item_id LIMIT 6)) r;


\echo '11. Segments: named predicates over the event log, stored as JSON (all / any / not), checked on'
\echo '    write and compiled to parameterised SQL. The predicates also work in any WHERE clause:'
INSERT INTO personalize.segments (name, definition, description) VALUES
 ('camera_browsers', '{"all": [{"viewed": {"category": "cameras", "within": "365 days"}},
                               {"not": {"bought": {"category": "cameras"}}}]}', 'viewed cameras, never bought one'),
 ('big_spenders', '{"total_spend": {"min": 1000}}', 'spent 1,000 or more'),
 ('loyal_lens_buyers', '{"all": [{"bought": {"category": "lenses", "min_count": 2}},
                                 {"average_order_value": {"min": 100}}]}', 'two or more lenses, orders of 100+ on average');
\timing on
SELECT name, (SELECT count(*) FROM personalize.segment_members(name)) AS members, description
  FROM personalize.segments ORDER BY name;
\timing off
SELECT ARRAY(SELECT personalize.user_segments('U0000042')) AS "segments of U0000042",
       round(personalize.total_spend('U0000042'), 2) AS total_spend,
       personalize.viewed_without_buying('U0000042', 'cameras') AS "viewed cameras, bought none";
\echo '    A mistake is refused with the JSON path of the problem:'
\set ON_ERROR_STOP off
\set SHOW_CONTEXT never
INSERT INTO personalize.segments VALUES ('typo', '{"all": [{"viewed": {"category": "cameras", "within": "7 dayz"}}]}');
\set ON_ERROR_STOP on

\echo '12. Campaigns: triggers on personalize.events write messages into the outbox in the same transaction.'
\echo '    Browse abandonment: a camera view schedules an email 2 hours later (with 3 fresh recommendations),'
\echo '    cancelled if they purchase first. Cart abandonment: a push now, for big spenders only (the segment'
\echo '    is checked when the message is due, so the claim decides).'
INSERT INTO personalize.campaigns (name, trigger_event_type, trigger_category, delay, cancel_on, channel,
                                   recommendations, template) VALUES
 ('camera_browse_abandonment', 'view', 'cameras', '2 hours', '{purchase}', 'email', 3,
  '{"to": "{{user_id}}", "subject": "Still thinking about {{item_title}}?", "picked_for_you": "{{recommendations}}"}');
INSERT INTO personalize.campaigns (name, trigger_event_type, segment, cancel_on, channel, cap_messages, cap_window, template)
VALUES ('cart_abandonment', 'add_to_cart', 'big_spenders', '{purchase, checkout}', 'push', 1, '1 day',
        '{"title": "{{item_title}} is waiting in your cart, {{user_id}}"}');
\echo '    Consent: push, SMS and WhatsApp need an opt-in (personalize.channel_policies); the app records the'
\echo '    ones it collected. A message to a user without one is cancelled when it is due, with the reason.'
SELECT count(personalize.set_consent(m, 'push', true, 'app install')) AS push_opt_ins
  FROM personalize.segment_members('big_spenders') m;
SELECT user_id, item_id, event_type
  FROM (SELECT personalize.track(jsonb_build_object('type', t, 'user_id', u, 'item_id', i)) AS id, u AS user_id, i AS item_id, t AS event_type
          FROM (VALUES ('view', 'shopper-A', (SELECT min(item_id) FROM personalize.items WHERE category = 'cameras')),
                       ('view', 'shopper-B', (SELECT max(item_id) FROM personalize.items WHERE category = 'cameras')),
                       ('purchase', 'shopper-B', (SELECT max(item_id) FROM personalize.items WHERE category = 'cameras')),
                       ('add_to_cart', (SELECT min(m) FROM personalize.segment_members('big_spenders') m), 'P0000003'),
                       ('add_to_cart', 'shopper-C', 'P0000003')) v(t, u, i)) tracked;
\echo '    The outbox (shopper-B bought the camera, so their email is cancelled; shopper-C, not a big spender,'
\echo '    has a push written too, which the claim will cancel: no push opt-in, and not in the segment):'
SELECT message_id, campaign, channel, user_id, state, date_trunc('minute', visible_at - now() + interval '30 seconds') AS due_in, last_error
  FROM personalize.outbox ORDER BY message_id;
