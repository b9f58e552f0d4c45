-- Model families and automatic selection: train() with no arguments picks the best of
-- popularity, trending, RP3beta, EASE and a small ALS grid on a temporal validation split; every serving path
-- works for an item-item model; a model name remembers how it was trained.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql

-- The small category shop: 300 users, 200 items in 10 categories of 20; each user bought 12
-- items of their category, one a day. A sane model fills a user's top 10 with the 8 items of
-- their category they have not bought.
INSERT INTO personalize.items (item_id, category, title)
SELECT 'i' || i, 'c' || (i / 20), 'item ' || i FROM generate_series(0, 199) i;
SELECT accepted FROM personalize.track_batch(ARRAY(
  SELECT jsonb_build_object('type', 'purchase', 'user_id', 'u' || u,
                            'item_id', 'i' || ((u % 10) * 20 + ((u / 10) * 7 + j * 3) % 20),
                            'occurred_at', timestamptz '2026-06-01' + (u * interval '1 minute') + j * interval '1 day')
    FROM generate_series(0, 299) u, generate_series(0, 11) j));

SELECT model_name, users, items, interactions FROM personalize.train();
SELECT params ->> 'model_type' AS chosen, params -> 'spec' AS spec FROM personalize.models WHERE status = 'active';
SELECT family, count(*) AS candidates, bool_or(chosen) AS chosen FROM personalize.model_selection
 WHERE status = 'active' GROUP BY family ORDER BY family;
-- The chosen one is the simplest family whose validation NDCG@10 is within one standard error
-- of the best: here RP3beta, within a hair of the best ALS.
SELECT (SELECT family FROM personalize.model_selection WHERE status = 'active' ORDER BY ndcg_at_10 DESC LIMIT 1) AS best,
       (SELECT ndcg_at_10 FROM personalize.model_selection WHERE chosen AND status = 'active')
     / (SELECT max(ndcg_at_10) FROM personalize.model_selection WHERE status = 'active') > 0.98 AS chosen_within_2pct;

-- Every user's top 10 holds at least 7 of the 8 items of their category they have not bought.
WITH per_user AS (
  SELECT u, (SELECT count(*) FROM personalize.recommend('u' || u, 10) r
               JOIN personalize.items i ON i.item_id = r.item_id
              WHERE i.category = 'c' || (u % 10)) AS in_category
    FROM generate_series(0, 299) u)
SELECT min(in_category) AS worst_user, round(avg(in_category), 2) AS mean FROM per_user;
SELECT DISTINCT source FROM personalize.recommend('u1', 10);

-- EASE on its own (l2 chosen on the validation split) also puts at least 7 of the 8 in every
-- user's top 10, and every serving path works for an item-item model.
SELECT users FROM personalize.train('ease', model_type => 'ease');
SELECT params ->> 'model_type' AS type, params ->> 'neighbors' AS neighbors,
       (SELECT count(*) FROM personalize.model_selection s WHERE s.model_id = m.model_id) AS tried
  FROM personalize.models m WHERE name = 'ease' AND status = 'active';
WITH per_user AS (
  SELECT u, (SELECT count(*) FROM personalize.recommend('u' || u, 10, model => 'ease') r
               JOIN personalize.items i ON i.item_id = r.item_id
              WHERE i.category = 'c' || (u % 10)) AS in_category
    FROM generate_series(0, 299) u)
SELECT min(in_category) AS worst_user, round(avg(in_category), 2) AS mean FROM per_user;
SELECT DISTINCT source FROM personalize.recommend('u1', 10, model => 'ease');

-- Fold-in is exact and immediate for an item-item model: a newcomer who views two items of
-- category c3 gets c3's other items; a user who buys an item no longer gets it.
SELECT personalize.track('{"type": "view", "user_id": "newcomer", "item_id": "i60"}') IS NOT NULL AS tracked;
SELECT personalize.track('{"type": "view", "user_id": "newcomer", "item_id": "i61"}') IS NOT NULL AS tracked;
SELECT count(*) FILTER (WHERE i.category = 'c3') AS in_c3, min(r.source) AS source
  FROM personalize.recommend('newcomer', 5, model => 'ease') r JOIN personalize.items i USING (item_id);
SELECT item_id AS top_for_u0 FROM personalize.recommend('u0', 1, model => 'ease') \gset
SELECT personalize.track(jsonb_build_object('type', 'purchase', 'user_id', 'u0', 'item_id', :'top_for_u0')) IS NOT NULL AS bought;
SELECT count(*) AS bought_item_still_recommended FROM personalize.recommend('u0', 10, model => 'ease') WHERE item_id = :'top_for_u0';

-- The other serving paths.
SELECT count(*) FILTER (WHERE i.category = 'c0') AS similar_in_category
  FROM personalize.similar_items('i0', 5, model => 'ease') s JOIN personalize.items i USING (item_id);
SELECT count(*) FILTER (WHERE i.category = 'c5') AS session_in_category
  FROM personalize.recommend_for_session(ARRAY['i100', 'i101'], 5, model => 'ease') r JOIN personalize.items i USING (item_id);
SELECT item_id, rank FROM personalize.rank_items('u2', ARRAY['i199', 'i40', 'i41', 'nope'], model => 'ease') ORDER BY rank;
SELECT count(*) > 0 AS explained, bool_or(contribution > 0) AS some_positive,
       abs(sum(contribution) - min(score)) < 1e-3 AS terms_sum_to_score
  FROM personalize.explain_recommendation('u2', (SELECT item_id FROM personalize.recommend('u2', 1, model => 'ease')), 100, model => 'ease');
SELECT count(*) AS category_filtered FROM personalize.recommend('u2', 10, model => 'ease', category => 'c9');

-- A family and its parameters can be named; a name remembers what it was trained with.
SELECT users FROM personalize.train('als-small', model_type => 'als', factors => 16, regularization => 1, alpha => 5, iterations => 5);
SELECT users FROM personalize.train('als-small');
SELECT params ->> 'model_type' AS type, params ->> 'factors' AS factors, params -> 'spec' AS spec
  FROM personalize.models WHERE name = 'als-small' AND status = 'active';
SELECT count(*) AS als_small_models FROM personalize.models WHERE name = 'als-small';
-- ALS with frequency-scaled regularization: each user's and item's λ scales with its number of
-- interactions; fold-in and explanations use the λ a trained user with as many items got.
SELECT users FROM personalize.train('als-fs', factors => 16, regularization => 1, alpha => 5, frequency_scaling => 1);
SELECT params ->> 'model_type' AS type, params ->> 'frequency_scaling' AS frequency_scaling,
       (params ->> 'mean_user_items')::float8 BETWEEN 10 AND 13 AS mean_user_items_stored
  FROM personalize.models WHERE name = 'als-fs' AND status = 'active';
SELECT personalize.track('{"type": "view", "user_id": "fs-newcomer", "item_id": "i140"}') IS NOT NULL AS tracked;
SELECT personalize.track('{"type": "view", "user_id": "fs-newcomer", "item_id": "i141"}') IS NOT NULL AS tracked;
SELECT count(*) FILTER (WHERE i.category = 'c7') AS in_c7, min(r.source) AS source
  FROM personalize.recommend('fs-newcomer', 5, model => 'als-fs') r JOIN personalize.items i USING (item_id);
SELECT abs(sum(e.contribution) - min(r.score)) < 1e-3 * abs(min(r.score)) AS explains_the_score
  FROM personalize.recommend('fs-newcomer', 1, model => 'als-fs') r,
       personalize.explain_recommendation('fs-newcomer', r.item_id, 100, model => 'als-fs') e;
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', frequency_scaling => 3)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', model_type => 'ease', frequency_scaling => 1)$$);
SELECT users FROM personalize.train('pop', model_type => 'popularity');
SELECT min(source) AS source, count(*) AS n FROM personalize.recommend('u3', 5, model => 'pop');
SELECT users FROM personalize.train('ease5', model_type => 'ease', l2 => 5, neighbors => 30);
SELECT params ->> 'model_type' AS type, params ->> 'l2' AS l2, params ->> 'neighbors' AS neighbors
  FROM personalize.models WHERE name = 'ease5' AND status = 'active';
SELECT max(cardinality(neighbors)) AS most_neighbors, min(cardinality(factors)) = min(cardinality(neighbors)) AS aligned
  FROM personalize.model_items mi
  JOIN personalize.models m USING (model_id) WHERE m.name = 'ease5' AND m.status = 'active';
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', model_type => 'ease', factors => 8)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', factors => 8, l2 => 3)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', model_type => 'knn')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', model_type => 'ease', l2 => -1)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', model_type => 'ease', neighbors => 0)$$);
-- EASE with input dropout: each item's λ grows with its number of users (EDLAE); the 'ease'
-- search above tried it (two trials with dropout > 0: half of the best λ moved into it, at that
-- total and at half of it).
SELECT count(*) FILTER (WHERE (s.params ->> 'dropout')::float8 > 0) AS dropout_trials
  FROM personalize.model_selection s JOIN personalize.models m USING (model_id)
 WHERE m.name = 'ease' AND m.status = 'active';
SELECT users FROM personalize.train('edlae', l2 => 5, dropout => 0.5, neighbors => 30);
SELECT params ->> 'model_type' AS type, params ->> 'l2' AS l2, params ->> 'dropout' AS dropout,
       params -> 'spec' AS spec
  FROM personalize.models WHERE name = 'edlae' AND status = 'active';
WITH per_user AS (
  SELECT u, (SELECT count(*) FROM personalize.recommend('u' || u, 10, model => 'edlae') r
               JOIN personalize.items i ON i.item_id = r.item_id
              WHERE i.category = 'c' || (u % 10)) AS in_category
    FROM generate_series(0, 299) u)
SELECT min(in_category) AS worst_user FROM per_user;
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', model_type => 'ease', dropout => 1)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', dropout => 0.5, beta => 0.5)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', model_type => 'rp3beta', dropout => 0.5)$$);

-- RP3beta on its own (beta chosen on the validation split) also puts at least 7 of the 8 in
-- every user's top 10, and serves every path an item-item model serves.
SELECT users FROM personalize.train('rp3', model_type => 'rp3beta');
SELECT params ->> 'model_type' AS type, (params ->> 'beta')::float8 BETWEEN 0 AND 1 AS beta_in_grid,
       (SELECT count(*) FROM personalize.model_selection s WHERE s.model_id = m.model_id) AS tried
  FROM personalize.models m WHERE name = 'rp3' AND status = 'active';
WITH per_user AS (
  SELECT u, (SELECT count(*) FROM personalize.recommend('u' || u, 10, model => 'rp3') r
               JOIN personalize.items i ON i.item_id = r.item_id
              WHERE i.category = 'c' || (u % 10)) AS in_category
    FROM generate_series(0, 299) u)
SELECT min(in_category) >= 7 AS worst_user_at_least_7 FROM per_user;
SELECT DISTINCT source FROM personalize.recommend('u1', 10, model => 'rp3');
SELECT count(*) FILTER (WHERE i.category = 'c0') AS similar_in_category
  FROM personalize.similar_items('i0', 5, model => 'rp3') s JOIN personalize.items i USING (item_id);
SELECT count(*) FILTER (WHERE i.category = 'c5') AS session_in_category
  FROM personalize.recommend_for_session(ARRAY['i100', 'i101'], 5, model => 'rp3') r JOIN personalize.items i USING (item_id);
SELECT count(*) > 0 AS explained, abs(sum(contribution) - min(score)) < 1e-3 AS terms_sum_to_score
  FROM personalize.explain_recommendation('u2', (SELECT item_id FROM personalize.recommend('u2', 1, model => 'rp3')), 100, model => 'rp3');
-- Explicit parameters; beta alone implies the family; a remembered spec.
SELECT users FROM personalize.train('rp3-fixed', beta => 0.3, neighbors => 20);
SELECT users FROM personalize.train('rp3-fixed');
SELECT params ->> 'model_type' AS type, params ->> 'beta' AS beta, params ->> 'neighbors' AS neighbors,
       params -> 'spec' AS spec
  FROM personalize.models WHERE name = 'rp3-fixed' AND status = 'active';
SELECT max(cardinality(neighbors)) AS most_neighbors FROM personalize.model_items mi
  JOIN personalize.models m USING (model_id) WHERE m.name = 'rp3-fixed' AND m.status = 'active';
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', model_type => 'rp3beta', beta => 2.5)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', model_type => 'rp3beta', l2 => 3)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', beta => 0.5, l2 => 3)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', model_type => 'ease', beta => 0.5)$$);

-- The time budget: candidates start only while it lasts, cheapest first; popularity and
-- trending are always tried, so a budget of 0 chooses between them alone.
SET personalize.training_time_budget = 0;
SELECT users FROM personalize.train('hurried', model_type => 'auto');
SELECT string_agg(DISTINCT family, ', ' ORDER BY family) AS tried
  FROM personalize.model_selection WHERE model_name = 'hurried' AND status = 'active';
RESET personalize.training_time_budget;
SHOW personalize.training_time_budget;

-- A budget too small for the item-item solve skips EASE with a NOTICE (auto) or refuses it.
SET personalize.training_memory_mb = 1;
SELECT pg_temp.err($$SELECT * FROM personalize.train('x', model_type => 'ease')$$);
RESET personalize.training_memory_mb;

-- evaluate() compares the families on a temporal hold-out.
SELECT method, users > 0 AS scored FROM personalize.evaluate(factors => 16, regularization => 1, alpha => 5) ORDER BY method;
-- Only held-out purchases, only users seen in two or more sessions (here: days, no session ids).
SELECT personalize.track(jsonb_build_object('type', 'view', 'user_id', 'u' || u, 'item_id', 'i' || (199 - u % 10),
                                           'occurred_at', timestamptz '2026-06-20' + u * interval '1 second')) IS NOT NULL AS viewed
  FROM generate_series(0, 9) u;
SELECT method, users FROM personalize.evaluate(factors => 16, regularization => 1, alpha => 5, purchases_only => true)
 WHERE method = 'popularity';
SELECT method, users FROM personalize.evaluate(factors => 16, regularization => 1, alpha => 5, min_sessions => 13)
 WHERE method = 'popularity';
SELECT params ->> 'purchases_only' AS purchases_only, params ->> 'min_sessions' AS min_sessions
  FROM personalize.evaluations ORDER BY evaluation_id DESC LIMIT 1;
SELECT pg_temp.err($$SELECT * FROM personalize.evaluate(min_sessions => 0)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.evaluate(min_sessions => 1000)$$);

-- Trending: items by the sum of their decayed strengths. A new item that 15 shoppers bought
-- today (against purchases half a year old, 180-day half-life) comes first; the count-based
-- popularity model still puts the items with the most users first.
INSERT INTO personalize.items (item_id, category) VALUES ('i-new', 'c0');
SELECT count(*) AS fresh_purchases FROM (
  SELECT personalize.track(jsonb_build_object('type', 'purchase', 'user_id', 'fan' || g, 'item_id', 'i-new'))
    FROM generate_series(1, 15) g) t;
SELECT users FROM personalize.train('trend', model_type => 'trending');
SELECT item_id, source FROM personalize.recommend('nobody-yet', 1, model => 'trend');
SELECT params ->> 'model_type' AS type FROM personalize.models WHERE name = 'trend' AND status = 'active';
SELECT users FROM personalize.train('pop', model_type => 'popularity');
SELECT item_id <> 'i-new' AS popularity_differs FROM personalize.recommend('nobody-yet', 1, model => 'pop');
