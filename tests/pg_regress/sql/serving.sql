-- Serving on hand-made factors where the right answers are known, then on a trained model
-- checked against the same top-k computed in plain SQL.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql

-- Six items in two dimensions. For the user (1, 0) the scores are
-- a 1, b 0.9, c 0, d 0.5, e 1 (ties with a; a sorts first), f -1.
INSERT INTO personalize.models (name, status, params, as_of, n_users, n_items, n_interactions,
        loss_per_iteration, seconds_per_iteration, read_seconds, train_seconds)
VALUES ('hand', 'active', '{"factors": 2, "alpha": 2, "regularization": 0.1}', '2026-01-01Z', 2, 6, 0,
        '{}', '{}', 0, 0);
INSERT INTO personalize.model_items (model_id, item_index, item_id, factors, popularity) VALUES
 (1, 0, 'a', '{1, 0}', 5), (1, 1, 'b', '{0.9, 0.1}', 4), (1, 2, 'c', '{0, 1}', 4),
 (1, 3, 'd', '{0.5, 0.5}', 2), (1, 4, 'e', '{1, 0}', 1), (1, 5, 'f', '{-1, 0}', 0);
INSERT INTO personalize.model_users (model_id, user_id, factors) VALUES
 (1, 'u1', '{1, 0}'), (1, 'u2', '{0, 1}');
-- The catalogue: d is sold out; e has no category; zz and yy are new products no model knows
-- yet. (Items a catalogue does not list are never served: tests/pg_regress/sql/shop_data.sql.)
SELECT personalize.upsert_items('[{"item_id": "a", "category": "x"}, {"item_id": "b", "category": "x"},
  {"item_id": "c", "category": "y"}, {"item_id": "d", "category": "y", "available": false},
  {"item_id": "e"}, {"item_id": "f", "category": "x"}, {"item_id": "zz"}, {"item_id": "yy"}]');
-- u1 bought a and viewed b, both before the model's as_of: the stored vector is used.
SELECT personalize.track(e) FROM (VALUES
 ('{"type": "purchase", "user_id": "u1", "item_id": "a", "occurred_at": "2025-12-01T10:00:00Z"}'::jsonb),
 ('{"type": "view", "user_id": "u1", "item_id": "b", "occurred_at": "2025-12-01T09:00:00Z"}')) v(e);

-- Order, ties, the purchase left out, the sold-out item left out.
SELECT * FROM personalize.recommend('u1', 10, model => 'hand');
-- k larger than the catalogue: every eligible item, no more.
SELECT count(*) FROM personalize.recommend('u1', 100, model => 'hand');
SELECT item_id FROM personalize.recommend('u1', 2, model => 'hand');
-- Filters act inside the top-k: still k rows when k items are eligible.
SELECT item_id, score FROM personalize.recommend('u1', 3, model => 'hand', available_only => false);
SELECT item_id FROM personalize.recommend('u1', 3, model => 'hand', exclude => 'none');
SELECT item_id FROM personalize.recommend('u1', 3, model => 'hand', exclude => 'interacted');
SELECT item_id FROM personalize.recommend('u1', 3, model => 'hand', exclude_items => ARRAY['e', NULL, 'nope']);
SELECT item_id FROM personalize.recommend('u1', 5, model => 'hand', category => 'x');
SELECT item_id FROM personalize.recommend('u1', 5, model => 'hand', category => 'y');
SELECT count(*) FROM personalize.recommend('u1', 5, model => 'hand', category => 'no such category');
-- The other user points the other way.
SELECT item_id, score, source FROM personalize.recommend('u2', 2, model => 'hand');

-- No history at all: popularity (ties by item id), filters still apply.
SELECT * FROM personalize.recommend('stranger', 10, model => 'hand');
SELECT item_id FROM personalize.recommend('stranger', 2, model => 'hand', category => 'y', available_only => false);

-- Fold-in: a new visitor's first click, after the model was trained, changes the next call.
SELECT personalize.track('{"type": "view", "user_id": "n1", "item_id": "c", "occurred_at": "2026-01-02T00:00:00Z"}');
SELECT item_id, source FROM personalize.recommend('n1', 2, model => 'hand');
-- u2 (model vector (0, 1)) now clicks a lot on a: the stored vector is replaced by fold-in.
SELECT item_id, source FROM personalize.recommend('u2', 1, model => 'hand');
SELECT personalize.track_batch(array_agg(('{"type": "add_to_cart", "user_id": "u2", "item_id": "a", "occurred_at": "2026-01-0'
       || g || 'T00:00:00Z"}')::jsonb)) FROM generate_series(2, 6) g;
SELECT item_id, source FROM personalize.recommend('u2', 1, model => 'hand', exclude => 'none');
SELECT item_id, source FROM personalize.recommend('u2', 1, model => 'hand', exclude => 'none', fold_in => false);
-- The fold-in is the ALS closed form: (YᵀY + reg·I + Σ(c-1)yyᵀ) x = Σ c y. For n1 (one view
-- of c, weight 1, no decay, alpha 2 → c = 3) it is solved here in SQL with Cramer's rule.
WITH g AS (
  SELECT sum(factors[1]::float8 * factors[1]) + 0.1 AS a11,
         sum(factors[1]::float8 * factors[2]) AS a12,
         sum(factors[2]::float8 * factors[2]) + 0.1 + (3 - 1) * 1 AS a22
    FROM personalize.model_items WHERE model_id = 1
), x AS (  -- right-hand side b = 3 · y_c = (0, 3)
  SELECT (a22 * 0 - a12 * 3) / (a11 * a22 - a12 * a12) AS x1,
         (a11 * 3 - a12 * 0) / (a11 * a22 - a12 * a12) AS x2 FROM g
)
SELECT r.item_id, abs(r.score - (mi.factors[1] * x.x1 + mi.factors[2] * x.x2)) < 1e-4 AS matches_closed_form
  FROM personalize.recommend('n1', 3, model => 'hand') r
  JOIN personalize.model_items mi ON mi.model_id = 1 AND mi.item_id = r.item_id, x;

-- Explanations: the terms sum to the fold-in score.
SELECT because_of, round(share::numeric, 3) AS share FROM personalize.explain_recommendation('u2', 'b', model => 'hand');
SELECT abs(sum(contribution) - max(score)) < 1e-5 AS terms_sum_to_score
  FROM personalize.explain_recommendation('u2', 'b', n => 10, model => 'hand');
SELECT abs(e.score - r.score) < 1e-4 AS same_score_as_recommend
  FROM personalize.explain_recommendation('u2', 'b', model => 'hand') e
  JOIN personalize.recommend('u2', 10, model => 'hand', exclude => 'none', available_only => false) r ON r.item_id = 'b'
 LIMIT 1;
SELECT count(*) FROM personalize.explain_recommendation('stranger', 'b', model => 'hand');
SELECT count(*) FROM personalize.explain_recommendation('u2', 'unknown item', model => 'hand');

-- Anonymous sessions.
SELECT item_id, source FROM personalize.recommend_for_session(ARRAY['c'], 2, model => 'hand');
SELECT item_id, source FROM personalize.recommend_for_session(ARRAY['c'], 1, model => 'hand', exclude_seen => false);
SELECT item_id, source FROM personalize.recommend_for_session(ARRAY['zz'], 2, model => 'hand');

-- Similar items: cosine; the item itself left out; unknown item → popular items.
SELECT item_id, round(score::numeric, 4) AS score, source FROM personalize.similar_items('a', 10, model => 'hand');
SELECT item_id, source FROM personalize.similar_items('new product', 2, model => 'hand');

-- Category-page re-ranking: known items by affinity, unknown ones after them in their order,
-- duplicates keep their first place.
SELECT * FROM personalize.rank_items('u1', ARRAY['zz', 'c', 'a', 'yy', 'b', 'a'], model => 'hand');
SELECT * FROM personalize.rank_items('stranger', ARRAY['f', 'a', 'b'], model => 'hand');
SELECT count(*) FROM personalize.rank_items('u1', '{}', model => 'hand');

-- The catalogue changes: the next call sees it.
SELECT personalize.upsert_items('[{"item_id": "b", "available": false}]');
SELECT item_id FROM personalize.recommend('u1', 2, model => 'hand');
UPDATE personalize.items SET available = true;
SELECT item_id FROM personalize.recommend('u1', 2, model => 'hand');

-- A new active model version is picked up by the next call; rolling back returns to the old.
INSERT INTO personalize.models (name, status, params, as_of, n_users, n_items, n_interactions,
        loss_per_iteration, seconds_per_iteration, read_seconds, train_seconds)
VALUES ('hand', 'inactive', '{"factors": 1}', '2026-01-01Z', 1, 2, 0, '{}', '{}', 0, 0);
INSERT INTO personalize.model_items (model_id, item_index, item_id, factors) VALUES
 (2, 0, 'a', '{1}'), (2, 1, 'f', '{2}');
INSERT INTO personalize.model_users VALUES (2, 'u1', '{1}');
SELECT personalize.activate_model(2);
SELECT item_id, score, model_id FROM personalize.recommend('u1', 5, model => 'hand', exclude => 'none');
BEGIN;
SELECT personalize.activate_model(1);
SELECT DISTINCT model_id FROM personalize.recommend('u1', 5, model => 'hand');
ROLLBACK;
SELECT DISTINCT model_id FROM personalize.recommend('u1', 5, model => 'hand');
SELECT personalize.activate_model(1);

-- Bad arguments: clear errors with real SQLSTATEs.
SELECT pg_temp.err($$SELECT * FROM personalize.recommend('u1', 0, model => 'hand')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.recommend('u1', -5, model => 'hand')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.recommend('u1', NULL, model => 'hand')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.recommend(NULL, 5, model => 'hand')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.recommend('u1', 5000000, model => 'hand')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.recommend('u1', 5, model => 'hand', exclude => 'bought')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.recommend('u1', 5, model => 'no-such-model')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.recommend('u1', 5, model => NULL)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.rank_items('u1', ARRAY['a', NULL], model => 'hand')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.rank_items('u1', NULL, model => 'hand')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.recommend_for_session(NULL, model => 'hand')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.similar_items(NULL, model => 'hand')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.explain_recommendation('u1', 'a', n => 0, model => 'hand')$$);
SET personalize.max_candidates = 2;
SELECT pg_temp.err($$SELECT * FROM personalize.rank_items('u1', ARRAY['a', 'b', 'c'], model => 'hand')$$);
RESET personalize.max_candidates;

-- Every serving function is STABLE and parallel safe (so it runs on a hot standby) and has a comment.
SELECT p.proname, p.provolatile, p.proparallel, obj_description(p.oid, 'pg_proc') IS NOT NULL AS commented
  FROM pg_proc p WHERE p.pronamespace = 'personalize'::regnamespace
   AND p.proname IN ('recommend', 'recommend_for_session', 'similar_items', 'rank_items', 'explain_recommendation')
 ORDER BY 1;
-- A read-only transaction can serve.
BEGIN TRANSACTION READ ONLY;
SELECT count(*) FROM personalize.recommend('u1', 3, model => 'hand');
COMMIT;

-- A trained model: for 100 users, recommend() returns k rows, best first, never an item the
-- user bought, and (for users answered from their stored vector) exactly the top-k that
-- plain SQL computes from the factor tables.
SELECT accepted > 0 AS shop FROM personalize.generate_shop(15000, users => 400, items => 150, seed => 5);
SET personalize.training_threads = 2;
SELECT users > 0 AS trained FROM personalize.train(factors => 8, iterations => 4);
CREATE TEMP TABLE sample_users AS
  SELECT DISTINCT user_id FROM personalize.events WHERE event_type = 'purchase' ORDER BY user_id LIMIT 100;
CREATE TEMP TABLE served AS
  SELECT u.user_id, r.*, row_number() OVER (PARTITION BY u.user_id) AS pos
    FROM sample_users u, personalize.recommend(u.user_id, 10) r;
SELECT count(DISTINCT user_id) AS users, min(n), max(n)
  FROM (SELECT user_id, count(*) AS n FROM served GROUP BY 1) s;
SELECT count(*) AS bought_items_recommended FROM served s
 WHERE EXISTS (SELECT 1 FROM personalize.events e WHERE e.user_id = s.user_id
                  AND e.item_id = s.item_id AND e.event_type = 'purchase');
SELECT count(*) AS out_of_order FROM served a JOIN served b
    ON a.user_id = b.user_id AND b.pos = a.pos + 1 WHERE b.score > a.score;
WITH m AS (SELECT model_id FROM personalize.models WHERE name = 'default' AND status = 'active'),
sql_top AS (
  SELECT u.user_id, t.item_id, t.score,
         row_number() OVER (PARTITION BY u.user_id ORDER BY t.score DESC, t.item_id) AS pos
    FROM (SELECT DISTINCT user_id FROM served WHERE source = 'model') u
    CROSS JOIN LATERAL (
      SELECT mi.item_id, (SELECT sum(a * b) FROM unnest(mi.factors, mu.factors) AS v(a, b)) AS score
        FROM personalize.model_items mi
        JOIN personalize.model_users mu ON mu.model_id = mi.model_id AND mu.user_id = u.user_id
       WHERE mi.model_id = (SELECT model_id FROM m)
         AND NOT EXISTS (SELECT 1 FROM personalize.events e WHERE e.user_id = u.user_id
                            AND e.item_id = mi.item_id AND e.event_type = 'purchase')
         AND EXISTS (SELECT 1 FROM personalize.items i WHERE i.item_id = mi.item_id AND i.available)
       ORDER BY score DESC, mi.item_id LIMIT 10) t
)
SELECT count(*) AS compared, count(*) FILTER (WHERE s.item_id IS DISTINCT FROM q.item_id) AS different_item,
       count(*) FILTER (WHERE abs(s.score - q.score) > 1e-4) AS different_score
  FROM sql_top q JOIN served s ON s.user_id = q.user_id AND s.pos = q.pos;
-- Users with more events than the serving history cap still never get what they bought.
SET personalize.serving_history_events = 3;
SELECT count(*) AS bought_items_recommended_with_a_tiny_cap
  FROM sample_users u, personalize.recommend(u.user_id, 10) r
 WHERE EXISTS (SELECT 1 FROM personalize.events e WHERE e.user_id = u.user_id
                  AND e.item_id = r.item_id AND e.event_type = 'purchase');
SELECT count(*) AS interacted_items_recommended_with_a_tiny_cap
  FROM sample_users u, personalize.recommend(u.user_id, 10, exclude => 'interacted') r
 WHERE EXISTS (SELECT 1 FROM personalize.events e WHERE e.user_id = u.user_id AND e.item_id = r.item_id);
RESET personalize.serving_history_events;

-- A trained model stores each user's purchases with their factors (model item indexes up to
-- its as_of), so recommend() leaves them out without reading the user's events. The lists
-- equal the purchase events', also for a purchase refunded with a negative weight (no positive
-- interest left, still bought).
UPDATE personalize.event_types SET weight = -100 WHERE event_type = 'refund';
CREATE TEMP TABLE refunded AS
  SELECT e.user_id, e.item_id
    FROM personalize.events e JOIN personalize.event_types t USING (event_type)
   WHERE e.user_id IN (SELECT user_id FROM sample_users)
   GROUP BY 1, 2 HAVING bool_or(t.is_purchase)
   ORDER BY sum(t.weight), 1, 2 LIMIT 1;
SELECT personalize.track(jsonb_build_object('type', 'refund', 'user_id', user_id, 'item_id', item_id,
         'occurred_at', (SELECT max(occurred_at) FROM personalize.events))) IS NOT NULL AS refunded
  FROM refunded;
SELECT users > 0 AS trained FROM personalize.train(model_name => 'stored', factors => 8, iterations => 2);
CREATE TEMP TABLE stored AS
  SELECT model_id, as_of FROM personalize.models WHERE name = 'stored' AND status = 'active';
SELECT count(*) AS users, count(*) FILTER (WHERE mu.purchased IS DISTINCT FROM (
         SELECT coalesce(array_agg(DISTINCT mi.item_index ORDER BY mi.item_index), '{}')
           FROM personalize.events e
           JOIN personalize.event_types t ON t.event_type = e.event_type AND t.is_purchase
           JOIN personalize.model_items mi ON mi.model_id = s.model_id AND mi.item_id = e.item_id
          WHERE e.user_id = mu.user_id AND e.occurred_at <= s.as_of)) AS wrong_purchase_lists
  FROM personalize.model_users mu, stored s WHERE mu.model_id = s.model_id;
SELECT mi.item_index = ANY (mu.purchased) AS refunded_item_stored,
       (SELECT n.strength FROM (SELECT sum(t.weight) AS strength FROM personalize.events e
          JOIN personalize.event_types t USING (event_type)
         WHERE e.user_id = r.user_id AND e.item_id = r.item_id) n) < 0 AS net_negative
  FROM refunded r, stored s
  JOIN personalize.model_users mu ON mu.model_id = s.model_id
  JOIN personalize.model_items mi ON mi.model_id = s.model_id
 WHERE mu.user_id = r.user_id AND mi.item_id = r.item_id;
SELECT count(*) AS bought_items_recommended
  FROM sample_users u, personalize.recommend(u.user_id, 10, model => 'stored') r
 WHERE EXISTS (SELECT 1 FROM personalize.events e WHERE e.user_id = u.user_id
                  AND e.item_id = r.item_id AND e.event_type = 'purchase');
-- New purchases after the as_of: the newest events read (a tiny cap: 3) reach back to the
-- as_of, the model holds the older purchases. Then more new events than the cap: every
-- purchase is read from the events.
CREATE TEMP TABLE buyer AS
  SELECT u.user_id, array_agg(r.item_id ORDER BY r.score DESC) AS top
    FROM (SELECT user_id FROM sample_users ORDER BY user_id DESC LIMIT 1) u,
         personalize.recommend(u.user_id, 2, model => 'stored') r GROUP BY u.user_id;
SELECT personalize.track(jsonb_build_object('type', 'purchase', 'user_id', b.user_id, 'item_id', i,
         'occurred_at', s.as_of + interval '1 hour')) IS NOT NULL AS bought
  FROM buyer b, stored s, unnest(b.top) i;
SET personalize.serving_history_events = 3;
SELECT count(*) AS bought_items_recommended, count(*) FILTER (WHERE r.item_id = ANY (b.top)) AS new_ones
  FROM buyer b, personalize.recommend(b.user_id, 20, model => 'stored') r
 WHERE EXISTS (SELECT 1 FROM personalize.events e WHERE e.user_id = b.user_id
                  AND e.item_id = r.item_id AND e.event_type = 'purchase');
SELECT personalize.track_batch(array_agg(jsonb_build_object('type', 'view', 'user_id', b.user_id,
         'item_id', (SELECT min(item_id) FROM personalize.model_items WHERE model_id = s.model_id),
         'occurred_at', s.as_of + g * interval '1 day')))
  FROM buyer b, stored s, generate_series(1, 4) g;
SELECT count(*) AS bought_items_recommended, count(*) FILTER (WHERE r.item_id = ANY (b.top)) AS new_ones
  FROM buyer b, personalize.recommend(b.user_id, 20, model => 'stored') r
 WHERE EXISTS (SELECT 1 FROM personalize.events e WHERE e.user_id = b.user_id
                  AND e.item_id = r.item_id AND e.event_type = 'purchase');
RESET personalize.serving_history_events;
-- A model trained with a window stores no purchases (older ones are outside its data): they
-- are read from the events.
SELECT users > 0 AS trained
  FROM personalize.train(model_name => 'windowed', "window" => '3650 days', factors => 8, iterations => 2);
SELECT count(*) FILTER (WHERE mu.purchased IS NOT NULL) AS stored_lists
  FROM personalize.model_users mu JOIN personalize.models m USING (model_id)
 WHERE m.name = 'windowed' AND m.status = 'active';
SELECT count(*) AS bought_items_recommended
  FROM sample_users u, personalize.recommend(u.user_id, 10, model => 'windowed') r
 WHERE EXISTS (SELECT 1 FROM personalize.events e WHERE e.user_id = u.user_id
                  AND e.item_id = r.item_id AND e.event_type = 'purchase');
