-- Segments: the predicate functions on a small log with known answers, named segments over
-- them, their two compiled forms agreeing, precise errors, and hostile values staying data.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql
-- An event at now() minus some days.
CREATE FUNCTION pg_temp.ev(t text, u text, i text, days float8, props jsonb DEFAULT '{}') RETURNS bigint
LANGUAGE sql AS $$
  SELECT personalize.track(jsonb_build_object('type', t, 'user_id', u, 'item_id', i, 'properties', props,
                                              'occurred_at', now() - make_interval(secs => days * 86400)), true)
$$;

SELECT personalize.upsert_items('[{"item_id": "cam1", "category": "cameras", "price": 500},
  {"item_id": "cam2", "category": "cameras", "price": 800},
  {"item_id": "lens1", "category": "lenses", "price": 200},
  {"item_id": "other", "price": 10}]');
-- a: viewed a camera 2 days ago, bought nothing.
SELECT pg_temp.ev('view', 'a', 'cam1', 2) > 0 AS ok;
-- b: viewed a camera, then bought it (price from the catalogue).
SELECT pg_temp.ev('view', 'b', 'cam2', 2) > 0 AS ok;
SELECT pg_temp.ev('purchase', 'b', 'cam2', 1, '{"order_id": "b1"}') > 0 AS ok;
-- c: viewed a camera 10 days ago only.
SELECT pg_temp.ev('view', 'c', 'cam1', 10) > 0 AS ok;
-- d: two orders 40 and 35 days ago: 2 x 100 + 1 x 100 (order d1, two lines), then 300.
SELECT pg_temp.ev('purchase', 'd', 'lens1', 40, '{"order_id": "d1", "price": 100, "quantity": 2}') > 0 AS ok;
SELECT pg_temp.ev('purchase', 'd', 'other', 40, '{"order_id": "d1", "price": 100}') > 0 AS ok;
SELECT pg_temp.ev('purchase', 'd', 'lens1', 35, '{"order_id": "d2", "price": 300}') > 0 AS ok;
-- e: three views of an uncategorised item, last 60 days ago; the category comes from the event.
SELECT pg_temp.ev('view', 'e', 'other', 62) > 0 AS ok;
SELECT pg_temp.ev('view', 'e', 'other', 61) > 0 AS ok;
SELECT pg_temp.ev('view', 'e', 'other', 60, '{"category": "cameras"}') > 0 AS ok;

-- The predicates, one row per user.
SELECT u,
       personalize.viewed(u, 'cameras', '7 days') AS viewed_cam_7d,
       personalize.viewed(u, 'cameras') AS viewed_cam,
       personalize.bought(u, 'cameras') AS bought_cam,
       personalize.bought(u, within => '36 days') AS bought_36d,
       personalize.viewed_without_buying(u, 'cameras', '30 days') AS vwb_cam_30d,
       personalize.event_count(u, 'view') AS views,
       personalize.total_spend(u) AS spend,
       round(personalize.average_order_value(u), 2) AS aov,
       round(personalize.days_since_last_purchase(u)) AS days_since_purchase,
       round(date_part('epoch', now() - personalize.last_seen(u)) / 86400) AS days_since_seen
  FROM unnest(ARRAY['a', 'b', 'c', 'd', 'e', 'nobody']) u ORDER BY u;

-- Named segments.
INSERT INTO personalize.segments (name, definition, description) VALUES
 ('camera_browsers', '{"all": [{"viewed": {"category": "cameras", "within": "7 days"}},
                               {"not": {"bought": {"category": "cameras", "within": "30 days"}}}]}',
  'viewed cameras this week, did not buy one'),
 ('big_spenders', '{"total_spend": {"min": 500}}', ''),
 ('loyal', '{"all": [{"average_order_value": {"min": 150, "max": 400}}, {"days_since_last_purchase": {"min": 30}}]}', ''),
 ('lapsed', '{"last_seen": {"not_within": "30 days"}}', ''),
 ('active', '{"last_seen": {"within": "30 days"}}', ''),
 ('few_views', '{"event_count": {"event_type": "view", "max": 1}}', ''),
 ('many_views', '{"event_count": {"event_type": "view", "min": 3, "within": "90 days"}}', ''),
 ('cam_or_lens', '{"any": [{"bought": {"category": "cameras"}}, {"bought": {"item_id": "lens1", "min_count": 2}}]}', ''),
 ('not_buyers', '{"not": {"bought": {}}}', '');
SELECT s.name, array_agg(m ORDER BY m) AS members
  FROM personalize.segments s, personalize.segment_members(s.name) m GROUP BY s.name ORDER BY s.name;
-- in_segment (the one-user form) agrees with segment_members for every user and segment.
SELECT s.name, count(*) FILTER (WHERE personalize.in_segment(u.user_id, s.name)
                                 IS DISTINCT FROM (u.user_id IN (SELECT personalize.segment_members(s.name)))) AS disagreements
  FROM personalize.segments s, (SELECT DISTINCT user_id FROM personalize.events) u
 GROUP BY s.name ORDER BY s.name;
-- The campaign trigger's form (members among given users) agrees with segment_members too.
SELECT s.name, (SELECT array_agg(m ORDER BY m)
                  FROM personalize._segment_members_among(s.name, ARRAY(SELECT DISTINCT user_id FROM personalize.events)) m)
               IS NOT DISTINCT FROM (SELECT array_agg(m ORDER BY m) FROM personalize.segment_members(s.name) m) AS among_agrees
  FROM personalize.segments s ORDER BY s.name;
SELECT personalize.user_segments('a');
SELECT personalize.user_segments('nobody');
-- Usable in any WHERE clause.
SELECT DISTINCT user_id FROM personalize.events
 WHERE personalize.in_segment(user_id, 'camera_browsers') OR personalize.total_spend(user_id) > 700 ORDER BY 1;

-- The predicate functions mean what the same predicates in a definition mean: both are built
-- from one set of fragments (core::segments). Each function, for every user, against
-- in_segment() of a one-predicate segment (NULL, for a user with no events, is not a member).
INSERT INTO personalize.segments (name, definition) VALUES
 ('f_viewed', '{"viewed": {}}'),
 ('f_viewed_cam_7d', '{"viewed": {"category": "cameras", "within": "7 days"}}'),
 ('f_bought_cam', '{"bought": {"category": "cameras"}}'),
 ('f_bought_lens1_36d', '{"bought": {"item_id": "lens1", "within": "36 days"}}'),
 ('f_vwb_cam_30d', '{"viewed_without_buying": {"category": "cameras", "within": "30 days"}}'),
 ('f_views_2', '{"event_count": {"event_type": "view", "min": 2}}'),
 ('f_spend_500', '{"total_spend": {"min": 500}}'),
 ('f_aov_150_400', '{"average_order_value": {"min": 150, "max": 400}}'),
 ('f_seen_30d', '{"last_seen": {"within": "30 days"}}'),
 ('f_purchase_30d', '{"days_since_last_purchase": {"min": 30}}');
SELECT f.name, count(*) FILTER (WHERE f.holds) AS members,
       count(*) FILTER (WHERE f.holds IS DISTINCT FROM personalize.in_segment(u, f.name)) AS disagreements
  FROM unnest(ARRAY['a', 'b', 'c', 'd', 'e', 'nobody']) u,
       LATERAL (VALUES
         ('f_viewed', personalize.viewed(u)),
         ('f_viewed_cam_7d', personalize.viewed(u, 'cameras', '7 days')),
         ('f_bought_cam', personalize.bought(u, 'cameras')),
         ('f_bought_lens1_36d', personalize.bought(u, item_id => 'lens1', within => '36 days')),
         ('f_vwb_cam_30d', personalize.viewed_without_buying(u, 'cameras', '30 days')),
         ('f_views_2', personalize.event_count(u, 'view') >= 2),
         ('f_spend_500', personalize.total_spend(u) >= 500),
         ('f_aov_150_400', coalesce(personalize.average_order_value(u) BETWEEN 150 AND 400, false)),
         ('f_seen_30d', coalesce(personalize.last_seen(u) > now() - interval '30 days', false)),
         ('f_purchase_30d', coalesce(personalize.days_since_last_purchase(u) >= 30, false))) f(name, holds)
 GROUP BY f.name ORDER BY f.name;
DELETE FROM personalize.segments WHERE name LIKE 'f\_%';

-- Precise errors, with the JSON path of the mistake (SQLSTATE 22023).
SELECT pg_temp.err($$INSERT INTO personalize.segments VALUES ('x', '{"all": [{"viewed": {}}, {"bought": {"within": "7 dayz"}}]}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.segments VALUES ('x', '{"any": [{"bougth": {}}]}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.segments VALUES ('x', '{"viewed": {"colour": "red"}}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.segments VALUES ('x', '{"total_spend": {"min": 10, "max": 5}}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.segments VALUES ('x', '{"all": [], "any": []}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.segments VALUES ('x', '{"event_count": {"min": "3"}}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.segments VALUES ('x', '[]')$$);
SELECT pg_temp.err($$UPDATE personalize.segments SET definition = '{"last_seen": {}}' WHERE name = 'lapsed'$$);
SELECT pg_temp.err($$INSERT INTO personalize.segments VALUES ('bad name!', '{"viewed": {}}')$$);
SELECT pg_temp.err($$SELECT personalize.in_segment('a', 'no_such_segment')$$);
SELECT pg_temp.err($$SELECT personalize.segment_members(NULL)$$);
SELECT count(*) AS unchanged FROM personalize.segments;

-- Hostile values are data: they travel as parameters, never as SQL text.
INSERT INTO personalize.segments VALUES ('hostile', jsonb_build_object('any', jsonb_build_array(
  jsonb_build_object('viewed', jsonb_build_object('category', 'x''); DROP TABLE personalize.events; --')),
  jsonb_build_object('bought', jsonb_build_object('item_id', 'x'' OR ''1''=''1')),
  jsonb_build_object('event_count', jsonb_build_object('event_type', 'view" OR true --', 'min', 1)))));
SELECT count(*) AS members FROM personalize.segment_members('hostile');
SELECT personalize.in_segment('a', 'hostile');
SELECT count(*) > 0 AS events_still_there FROM personalize.events;
SELECT sql !~ 'DROP|OR ''1''|--' AS no_user_text, params FROM personalize.segment_sql(
  (SELECT definition FROM personalize.segments WHERE name = 'hostile'), one_user => true);

-- A segment in use by a campaign cannot be dropped; renaming it follows through.
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, segment) VALUES ('c1', 'view', 'email', 'lapsed');
-- PostgreSQL 18 reports a RESTRICT foreign key as 23001 (restrict_violation), 15 and 16 as 23503.
SELECT regexp_replace(pg_temp.err($$DELETE FROM personalize.segments WHERE name = 'lapsed'$$),
                      '^(23503|23001): .*(campaigns_segment_fkey).*$', 'refused by \2') AS err;
UPDATE personalize.segments SET name = 'lapsed_users' WHERE name = 'lapsed';
SELECT segment FROM personalize.campaigns;
