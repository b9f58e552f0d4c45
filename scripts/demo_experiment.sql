-- Step 14 of the demo: an A/B test on the synthetic shop with a known true effect.
-- 10,000 visitors see the homepage placement; the carousel truly converts 13% of its users,
-- the grid (control) 10% (+30%); 28% of carousel users click it, 20% of grid users.
-- Outcomes are drawn from a hash of the user id, so the demo prints the same numbers each run.
\set ON_ERROR_STOP on
\pset footer off
\echo '14. A/B experiment: grid (control) vs carousel on the homepage, 50/50, assigned by hashing (salt, user).'
INSERT INTO personalize.experiments (name, variants, salt, description) VALUES
 ('homepage_layout', '[{"name": "grid", "weight": 50}, {"name": "carousel", "weight": 50}]', 'demo-2026',
  'Does a carousel sell more than a grid?');
\echo '    A page view: log the exposure and serve the recommendations in one statement:'
WITH v AS (SELECT personalize.log_exposure('homepage_layout', 'U0000042', 'homepage') AS variant)
SELECT v.variant, r.item_id, round(r.score::numeric, 4) AS score FROM v, personalize.recommend('U0000042', 3) r;
\echo '    10,000 visitors browse (1 to 3 homepage views each) ...'
CREATE TEMP TABLE visitors AS
SELECT u AS user_id,
       CAST(('x' || substr(md5(u || ':click'), 1, 8)) AS bit(32))::bigint / 4294967296.0 AS draw_click,
       CAST(('x' || substr(md5(u || ':buy'), 1, 8)) AS bit(32))::bigint / 4294967296.0 AS draw_buy,
       1 + g % 3 AS views
  FROM generate_series(1, 10000) g, LATERAL (SELECT 'V' || lpad(g::text, 7, '0') AS u) n;
SELECT count(personalize.log_exposure('homepage_layout', v.user_id, 'homepage')) AS exposures_logged
  FROM visitors v, generate_series(1, v.views) n;
\echo '    ... and click (a view tagged with the experiment) and buy at the true rates of their variant:'
SELECT accepted, rejected
  FROM personalize.track_batch(ARRAY(
    SELECT jsonb_build_object('type', e.t, 'user_id', v.user_id, 'item_id', e.item_id,
                              'occurred_at', now() + interval '1 minute', 'properties', e.props)
      FROM visitors v
      CROSS JOIN LATERAL (SELECT personalize.assign_variant('homepage_layout', v.user_id) AS variant) a
      CROSS JOIN LATERAL (VALUES
          ('view', (SELECT min(item_id) FROM personalize.items WHERE category = 'lenses'),
           jsonb_build_object('experiment', 'homepage_layout', 'variant', a.variant, 'placement', 'homepage'),
           v.draw_click < CASE a.variant WHEN 'carousel' THEN 0.28 ELSE 0.20 END),
          ('purchase', (SELECT max(item_id) FROM personalize.items WHERE category = 'lenses'),
           jsonb_build_object('experiment', 'homepage_layout', 'variant', a.variant),
           v.draw_buy < CASE a.variant WHEN 'carousel' THEN 0.13 ELSE 0.10 END)) e(t, item_id, props, happens)
     WHERE e.happens));
\echo '    The report (true effect: conversion 10% -> 13%, lift +30%; 20% -> 28% of users click, ~2 views each):'
\x on
SELECT variant, users, exposures, clicks, round(ctr::numeric, 4) AS ctr, converters,
       round(conversion_rate::numeric, 4) AS conversion_rate, round(revenue_per_user::numeric, 2) AS revenue_per_user,
       round(lift::numeric, 3) AS lift,
       '[' || round(diff_ci_low::numeric, 4) || ', ' || round(diff_ci_high::numeric, 4) || ']' AS "95% interval of the rate difference",
       to_char(p_value, '9.9EEEE') AS p_value, to_char(revenue_p_value, '9.9EEEE') AS revenue_p_value,
       round(srm_p_value::numeric, 3) AS srm_p_value, sample_ratio_mismatch
  FROM personalize.experiment_report('homepage_layout');
\x off
\echo '    Serving can follow the assignment: a variant may name a model, and'
\echo '    recommend(user, k, model => personalize.variant_model(experiment, user)) serves with it.'
