-- In-session intent: a returning customer's current session (events within
-- personalize.session_window of now) moves their list without erasing long-term taste.
-- 200 customers each bought 12 of the 20 items of their category weeks ago. Customer "lens"
-- bought 12 lenses (c0); today they view four garden items (c3).
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql

INSERT INTO personalize.items (item_id, category, title)
SELECT 'i' || i, 'c' || (i / 20), 'item ' || i FROM generate_series(0, 199) i;
SELECT accepted FROM personalize.track_batch(ARRAY(
  SELECT jsonb_build_object('type', 'purchase', 'user_id', 'u' || u,
                            'item_id', 'i' || ((u % 10) * 20 + ((u / 10) * 7 + j * 3) % 20),
                            'occurred_at', now() - interval '60 days' + (u * interval '1 minute') + j * interval '1 day')
    FROM generate_series(0, 199) u, generate_series(0, 11) j));
SELECT accepted FROM personalize.track_batch(ARRAY(
  SELECT jsonb_build_object('type', 'purchase', 'user_id', 'lens', 'item_id', 'i' || j,
                            'occurred_at', now() - interval '40 days' + j * interval '1 day')
    FROM generate_series(0, 11) j));

CREATE FUNCTION pg_temp.share(who text, model text, cat text) RETURNS bigint LANGUAGE sql AS $$
  SELECT count(*) FROM personalize.recommend(who, 10, model => model) r
    JOIN personalize.items i USING (item_id) WHERE i.category = cat $$;

SELECT users FROM personalize.train('ease', model_type => 'ease', l2 => 20);
SELECT users FROM personalize.train('als', model_type => 'als', factors => 16, regularization => 1, alpha => 5);
SELECT users FROM personalize.train('rp3', model_type => 'rp3beta', beta => 0.5);

-- Before the session: all lenses, from the model.
SELECT m AS model, pg_temp.share('lens', m, 'c0') AS lenses, pg_temp.share('lens', m, 'c3') AS garden,
       (SELECT min(source) FROM personalize.recommend('lens', 10, model => m)) AS source
  FROM unnest(ARRAY['ease', 'als', 'rp3']) m;

-- Four garden views now.
SELECT count(personalize.track(jsonb_build_object('type', 'view', 'user_id', 'lens', 'item_id', 'i' || (60 + g))))
  FROM generate_series(0, 3) g;

-- After: garden items come in beside the lenses, with source session (the new category's share
-- of the top 10 goes from 0 to about half).
SELECT m AS model, pg_temp.share('lens', m, 'c3') >= 3 AS garden_moved_in,
       pg_temp.share('lens', m, 'c0') >= 3 AS lenses_stay,
       (SELECT min(source) FROM personalize.recommend('lens', 10, model => m)) AS source
  FROM unnest(ARRAY['ease', 'als', 'rp3']) m;

-- The explanation of the best garden item: the earlier items' terms plus the session's sum to
-- the score recommend() gave it, and the viewed garden items are among the reasons.
SELECT m AS model,
       abs((SELECT sum(contribution) FROM personalize.explain_recommendation('lens', r.item_id, 100, model => m)) - r.score) < 1e-3 * abs(r.score) AS explains_the_score,
       (SELECT bool_or(because_of IN ('i60', 'i61', 'i62', 'i63')) FROM personalize.explain_recommendation('lens', r.item_id, 100, model => m)) AS session_among_reasons
  FROM unnest(ARRAY['ease', 'als', 'rp3']) m,
       LATERAL (SELECT r.* FROM personalize.recommend('lens', 10, model => m) r
                  JOIN personalize.items i USING (item_id)
                 WHERE i.category = 'c3' AND r.item_id NOT IN ('i60', 'i61', 'i62', 'i63')
                 ORDER BY r.score DESC LIMIT 1) r
 ORDER BY 1;

-- Weight 0 (or window 0) turns it off: plain fold-in, lenses first again.
SET personalize.session_weight = 0;
SELECT m AS model, pg_temp.share('lens', m, 'c3') < pg_temp.share('lens', m, 'c0') AS lenses_lead,
       (SELECT min(source) FROM personalize.recommend('lens', 10, model => m)) AS source
  FROM unnest(ARRAY['ease', 'als', 'rp3']) m;
RESET personalize.session_weight;
-- Weight 1: the session alone speaks.
SET personalize.session_weight = 1;
SELECT pg_temp.share('lens', 'ease', 'c3') AS garden_only_session FROM (SELECT 1) x;
RESET personalize.session_weight;
-- A session that has passed is history: with a 1-second window the views are older.
SELECT pg_sleep(1.1);
SET personalize.session_window = '1s';
SELECT (SELECT min(source) FROM personalize.recommend('lens', 10, model => 'ease')) AS source_after_window;
RESET personalize.session_window;
SHOW personalize.session_window;

-- fold_in => false serves the model as trained: no session either.
SELECT count(*) FILTER (WHERE i.category = 'c0') AS lenses, min(r.source) AS source
  FROM personalize.recommend('lens', 10, model => 'ease', fold_in => false) r JOIN personalize.items i USING (item_id);

-- A newcomer's whole history is the session: plain fold-in.
SELECT count(personalize.track(jsonb_build_object('type', 'view', 'user_id', 'new', 'item_id', 'i' || (60 + g))))
  FROM generate_series(0, 1) g;
SELECT min(source) AS newcomer_source FROM personalize.recommend('new', 5, model => 'ease');

-- Bad settings are refused.
SET personalize.session_weight = 1.5;
-- (The message's range has units from PostgreSQL 18 on: the SQLSTATE is what is checked.)
DO $$ BEGIN SET personalize.session_window = '-1s'; RAISE WARNING 'session_window -1s accepted';
EXCEPTION WHEN invalid_parameter_value THEN RAISE WARNING 'session_window -1s refused: %', SQLSTATE;
END $$;
