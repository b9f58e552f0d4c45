-- A/B experiments: assignment (uniform, proportional, stable, reproducible in plain SQL),
-- exposure logging, the report on a hand-computed fixture, sample-ratio mismatch, errors.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql
-- The assignment rule in plain SQL: the first 8 bytes of SHA-256(salt ':' user) as an unsigned
-- 64-bit number, scaled into [0, total weight), then the cumulative weights.
CREATE FUNCTION pg_temp.sql_bucket(salt text, user_id text, total bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT floor(((('x' || left(encode(sha256(convert_to(salt || ':' || user_id, 'UTF8')), 'hex'), 16))::bit(64)::bigint::numeric
                   + CASE WHEN ('x' || left(encode(sha256(convert_to(salt || ':' || user_id, 'UTF8')), 'hex'), 16))::bit(64)::bigint < 0
                          THEN 18446744073709551616 ELSE 0 END)
                  * total) / 18446744073709551616)::bigint
$$;

INSERT INTO personalize.experiments (name, variants, salt, starts_at) VALUES
 ('layout', '[{"name": "grid", "weight": 1}, {"name": "carousel", "weight": 1}, {"name": "list", "weight": 1}, {"name": "mosaic", "weight": 1}]', 'uniform-salt', '2026-01-01Z'),
 ('models', '[{"name": "als", "weight": 90}, {"name": "bpr", "weight": 10, "model": "bpr"}]', 'model-salt', '2026-01-01Z');

-- Uniformity: 100,000 synthetic users over 4 equal variants. Chi-square with 3 degrees of
-- freedom must stay under 16.27 (p = 0.001). The counts are deterministic (the hash is).
CREATE TEMP TABLE a AS
SELECT 'user' || g AS user_id, personalize.assign_variant('layout', 'user' || g) AS variant
  FROM generate_series(1, 100000) g;
SELECT variant, count(*) FROM a GROUP BY variant ORDER BY variant;
SELECT sum((n - 25000.0)^2 / 25000.0) < 16.27 AS uniform
  FROM (SELECT count(*) AS n FROM a GROUP BY variant) c;
-- Proportional: 90/10 over 100,000 users (chi-square, 1 degree of freedom, under 10.83).
SELECT (count(*) FILTER (WHERE v = 'als') - 90000.0)^2 / 90000 + (count(*) FILTER (WHERE v = 'bpr') - 10000.0)^2 / 10000 < 10.83 AS proportional
  FROM (SELECT personalize.assign_variant('models', 'user' || g) AS v FROM generate_series(1, 100000) g) s;
-- Reproducible anywhere: the same variant as the rule computed by Postgres's own sha256().
SELECT count(*) AS users,
       count(*) FILTER (WHERE variant = (ARRAY['grid', 'carousel', 'list', 'mosaic'])[pg_temp.sql_bucket('uniform-salt', user_id, 4) + 1]) AS same_as_sql
  FROM a WHERE user_id LIKE 'user1%';
-- Stable: a second pass, in another statement, gives every user the same variant.
SELECT count(*) AS changed FROM a WHERE personalize.assign_variant('layout', a.user_id) <> a.variant;

-- The model a variant serves with (default when the variant names none).
SELECT v.variant, count(*), min(m.model) AS model
  FROM (SELECT 'user' || g AS u, personalize.assign_variant('models', 'user' || g) AS variant FROM generate_series(1, 200) g) v
  CROSS JOIN LATERAL (SELECT personalize.variant_model('models', v.u) AS model) m
 GROUP BY v.variant ORDER BY v.variant;

-- Report on a hand-computed fixture: a 50/50 test started yesterday.
INSERT INTO personalize.experiments (name, variants, salt, starts_at, attribution_window) VALUES
 ('fixture', '[{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]', 'fixture-salt', now() - interval '1 day', '1 hour');
-- 8 users per variant (picked by their assignment), each exposed twice.
CREATE TEMP TABLE fx AS
SELECT user_id, variant, row_number() OVER (PARTITION BY variant ORDER BY user_id) AS n
  FROM (SELECT 'f' || g AS user_id, personalize.assign_variant('fixture', 'f' || g) AS variant
          FROM generate_series(1, 100) g) s;
DELETE FROM fx WHERE n > 8;
SELECT personalize.log_exposure('fixture', user_id, 'home') = variant AS logged_variant, count(*)
  FROM fx CROSS JOIN generate_series(1, 2) GROUP BY 1;
-- Outcomes 10 minutes after exposure (inside the 1-hour window):
--   a: users 1-2 buy (price 10 each, one of them twice), user 3 clicks the placement;
--   b: users 1-4 buy (price 20), users 1-3 click; user 5 buys 2 hours later (outside the window);
--   b user 6 views an item without the experiment property (not a click).
INSERT INTO personalize.items (item_id, category, price) VALUES ('sku', 'x', 10), ('from_default', 'x', 1), ('from_bpr', 'x', 1);
SELECT count(personalize.track(jsonb_build_object('type', ev.t, 'user_id', fx.user_id, 'item_id', 'sku',
         'occurred_at', now() + ev.after, 'properties', ev.props))) AS tracked
  FROM fx JOIN (VALUES
    ('a', 1, 'purchase', interval '10 minutes', '{}'::jsonb),
    ('a', 1, 'purchase', interval '20 minutes', '{}'),
    ('a', 2, 'purchase', interval '10 minutes', '{}'),
    ('a', 3, 'view', interval '10 minutes', '{"experiment": "fixture"}'),
    ('b', 1, 'purchase', interval '10 minutes', '{"price": 20}'),
    ('b', 2, 'purchase', interval '10 minutes', '{"price": 20}'),
    ('b', 3, 'purchase', interval '10 minutes', '{"price": 20}'),
    ('b', 4, 'purchase', interval '10 minutes', '{"price": 20}'),
    ('b', 1, 'view', interval '10 minutes', '{"experiment": "fixture"}'),
    ('b', 2, 'view', interval '10 minutes', '{"experiment": "fixture"}'),
    ('b', 3, 'view', interval '10 minutes', '{"experiment": "fixture"}'),
    ('b', 5, 'purchase', interval '2 hours', '{"price": 20}'),
    ('b', 6, 'view', interval '10 minutes', '{}')) ev(variant, n, t, after, props)
    ON ev.variant = fx.variant AND ev.n = fx.n;
-- Expected (see the comments above; p-values and intervals computed with scipy):
--   a: 8 users, 16 exposures, 1 click (CTR 0.0625), 2 converters, 3 conversions, rate 0.25,
--      revenue 30, 3.75 per user;
--   b: 8 users, 16 exposures, 3 clicks (0.1875), 4 converters, 4 conversions, rate 0.5,
--      revenue 80, 10 per user; lift +100%;
--      z-test: pooled se 0.242061, z 1.032796, p 0.301700; 95% interval of the difference
--      0.25 +- 1.959964 * 0.233854 = [-0.208345, 0.708345];
--      Welch on revenue (a: 20, 10, 0 x 6; b: 20 x 4, 0 x 4): t 1.357242, df 12.49, p 0.198720;
--   8 vs 8 on 50/50: SRM p 1, no mismatch.
SELECT variant, is_control, weight, users, exposures, clicks, round(ctr::numeric, 6) AS ctr,
       converters, conversions, round(conversion_rate::numeric, 6) AS conversion_rate,
       revenue, round(revenue_per_user::numeric, 6) AS revenue_per_user, round(lift::numeric, 6) AS lift,
       round(diff_ci_low::numeric, 6) AS ci_low, round(diff_ci_high::numeric, 6) AS ci_high,
       round(p_value::numeric, 6) AS p_value, round(revenue_p_value::numeric, 6) AS revenue_p_value,
       expected_share, round(srm_p_value::numeric, 6) AS srm_p_value, sample_ratio_mismatch
  FROM personalize.experiment_report('fixture');

-- Sample-ratio mismatch: a 50/50 test where a bug loses a fifth of b's exposures.
INSERT INTO personalize.experiments (name, variants, salt, starts_at) VALUES
 ('srm', '[{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]', 'srm-salt', now() - interval '1 hour');
SELECT count(personalize.log_exposure('srm', 's' || g)) AS logged FROM generate_series(1, 4000) g
 WHERE personalize.assign_variant('srm', 's' || g) = 'a' OR g % 5 <> 0;
SELECT variant, users, srm_p_value < 0.001 AS tiny_p, sample_ratio_mismatch FROM personalize.experiment_report('srm');
-- The same test with every exposure logged: no mismatch.
UPDATE personalize.experiments SET ends_at = now() + interval '1 day' WHERE name = 'srm';
SELECT count(personalize.log_exposure('srm', 's' || g)) FROM generate_series(1, 4000) g
 WHERE personalize.assign_variant('srm', 's' || g) = 'b' AND g % 5 = 0;
SELECT variant, users, srm_p_value > 0.001 AS plausible, sample_ratio_mismatch FROM personalize.experiment_report('srm');

-- Outside its window an experiment shows everyone the control and logs nothing.
INSERT INTO personalize.experiments (name, variants, salt, starts_at) VALUES
 ('later', '[{"name": "off", "weight": 1}, {"name": "on", "weight": 1000}]', 'later', now() + interval '1 day');
SELECT DISTINCT personalize.assign_variant('later', 'user' || g) FROM generate_series(1, 50) g;
SELECT DISTINCT personalize.log_exposure('later', 'user' || g) FROM generate_series(1, 50) g;
SELECT count(*) AS logged FROM personalize.exposures WHERE experiment = 'later';
UPDATE personalize.experiments SET starts_at = now() - interval '1 day' WHERE name = 'later';
SELECT count(*) FILTER (WHERE v = 'on') > 45 AS mostly_on
  FROM (SELECT personalize.assign_variant('later', 'user' || g) AS v FROM generate_series(1, 50) g) s;
UPDATE personalize.experiments SET ends_at = now() - interval '1 hour', starts_at = now() - interval '2 days' WHERE name = 'later';
SELECT DISTINCT personalize.assign_variant('later', 'user' || g) FROM generate_series(1, 50) g;

-- Once anyone was exposed, name, variants and salt are fixed, and it cannot be deleted; the end
-- date is not fixed.
SELECT pg_temp.err($$UPDATE personalize.experiments SET salt = 'new' WHERE name = 'fixture'$$);
SELECT pg_temp.err($$UPDATE personalize.experiments SET variants = '[{"name": "a", "weight": 1}, {"name": "b", "weight": 2}]' WHERE name = 'fixture'$$);
SELECT pg_temp.err($$UPDATE personalize.experiments SET ends_at = now() + interval '1 week' WHERE name = 'fixture'$$);
SELECT pg_temp.err($$DELETE FROM personalize.experiments WHERE name = 'fixture'$$);
SELECT pg_temp.err($$UPDATE personalize.experiments SET name = 'renamed' WHERE name = 'fixture'$$);
-- Deleting its history first lets it go (in a transaction rolled back here).
BEGIN;
DELETE FROM personalize.exposures WHERE experiment = 'fixture';
DELETE FROM personalize.experiments WHERE name = 'fixture';
ROLLBACK;
-- Before any exposure they may change.
SELECT pg_temp.err($$UPDATE personalize.experiments SET salt = 'other' WHERE name = 'models'$$);

-- Bad definitions and arguments: clear errors with SQLSTATEs.
SELECT pg_temp.err($$INSERT INTO personalize.experiments (name, variants) VALUES ('x', '[{"name": "a", "weight": 1}]')$$);
SELECT pg_temp.err($$INSERT INTO personalize.experiments (name, variants) VALUES ('x', '[{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]')$$);
SELECT pg_temp.err($$INSERT INTO personalize.experiments (name, variants) VALUES ('x', '[{"name": "a", "weight": 0}, {"name": "b", "weight": 1}]')$$);
SELECT pg_temp.err($$INSERT INTO personalize.experiments (name, variants) VALUES ('x', '[{"name": "a", "weight": 1}, {"name": "b", "weight": 1, "model": "x''; DROP TABLE t; --"}]')$$);
SELECT pg_temp.err($$INSERT INTO personalize.experiments (name, variants) VALUES ('x', '{"a": 1}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.experiments (name, variants, conversion_event_types) VALUES ('x', '[{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]', '{purchase, signup}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.experiments (name, variants, conversion_event_types) VALUES ('x', '[{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]', '{}')$$);
SELECT pg_temp.err($$INSERT INTO personalize.experiments (name, variants, attribution_window) VALUES ('x', '[{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]', '0')$$);
SELECT pg_temp.err($$INSERT INTO personalize.experiments (name, variants, starts_at, ends_at) VALUES ('x', '[{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]', now(), now() - interval '1 day')$$);
SELECT pg_temp.err($$SELECT personalize.assign_variant('nope', 'u1')$$);
SELECT pg_temp.err($$SELECT personalize.assign_variant('layout', NULL)$$);
SELECT pg_temp.err($$SELECT personalize.assign_variant(NULL, 'u1')$$);
SELECT pg_temp.err($$SELECT personalize.assign_variant('layout', '')$$);
SELECT pg_temp.err($$SELECT personalize.log_exposure('layout', 'u1', repeat('p', 300))$$);
SELECT pg_temp.err($$SELECT * FROM personalize.experiment_report('nope')$$);
-- A report with nobody exposed yet: zero counts, no rates, no test.
SELECT variant, users, exposures, ctr, conversion_rate, lift, p_value, srm_p_value, sample_ratio_mismatch
  FROM personalize.experiment_report('models');

-- Serving follows the assignment: each variant's users get their variant's model.
INSERT INTO personalize.models (name, status, params, as_of, n_users, n_items, n_interactions,
        loss_per_iteration, seconds_per_iteration, read_seconds, train_seconds)
VALUES ('default', 'active', '{"factors": 1, "alpha": 1, "regularization": 0.1}', '2026-01-01Z', 0, 2, 0, '{}', '{}', 0, 0),
       ('bpr', 'active', '{"factors": 1, "alpha": 1, "regularization": 0.1}', '2026-01-01Z', 0, 2, 0, '{}', '{}', 0, 0);
INSERT INTO personalize.model_items (model_id, item_index, item_id, factors, popularity) VALUES
 (1, 0, 'from_default', '{1}', 2), (2, 0, 'from_bpr', '{1}', 2);
SELECT v, count(*), min(r.item_id) AS first_item, max(r.item_id) AS last_item
  FROM (SELECT 'user' || g AS u, personalize.assign_variant('models', 'user' || g) AS v FROM generate_series(1, 200) g) s
  CROSS JOIN LATERAL personalize.recommend(s.u, 1, model => personalize.variant_model('models', s.u)) r
 GROUP BY v ORDER BY v;
-- Exposure and recommendations in one statement: the pattern a page view uses.
WITH v AS (SELECT personalize.log_exposure('layout', 'user7', 'homepage') AS variant)
SELECT v.variant, r.item_id FROM v, personalize.recommend('user7', 1) r;
SELECT experiment, user_id, variant, placement FROM personalize.exposures WHERE experiment = 'layout';
SELECT section, name, value FROM personalize.status WHERE name = 'running experiments';
