-- Training: ALS on the event log, model versions, determinism, cancel, bad parameters.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql
-- plpgsql's WHEN OTHERS does not catch a query cancel; this one does.
CREATE FUNCTION pg_temp.cancelled(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN EXECUTE q; RETURN 'not cancelled';
EXCEPTION WHEN query_canceled THEN RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SET personalize.training_threads = 2;

-- Nothing to train on yet.
SELECT pg_temp.err('SELECT * FROM personalize.train()');

SELECT items, accepted FROM personalize.generate_shop(8000, users => 300, items => 120, seed => 3);
SELECT model_id, model_name, users, items, interactions
  FROM personalize.train(factors => 16, iterations => 6);
SELECT model_id, name, status, n_users, n_items, n_interactions, params,
       cardinality(loss_per_iteration) AS iterations,
       loss_per_iteration[6] < loss_per_iteration[1] AS loss_fell,
       as_of = (SELECT max(occurred_at) FROM personalize.events) AS as_of_is_newest_event
  FROM personalize.models;
SELECT count(*) AS user_rows, min(cardinality(factors)), max(cardinality(factors)) FROM personalize.model_users;
SELECT count(*) AS item_rows, count(DISTINCT item_id), min(item_index), max(item_index) FROM personalize.model_items;

-- Same seed, data and threads: the same factors. Another seed: different ones.
SELECT model_id FROM personalize.train(factors => 16, iterations => 6);
SELECT bool_and(a.factors = b.factors) AS identical
  FROM personalize.model_items a JOIN personalize.model_items b USING (item_id)
 WHERE a.model_id = 1 AND b.model_id = 2;
SELECT model_id FROM personalize.train(factors => 16, iterations => 6, seed => 7);
SELECT bool_and(a.factors = b.factors) AS identical
  FROM personalize.model_items a JOIN personalize.model_items b USING (item_id)
 WHERE a.model_id = 1 AND b.model_id = 3;
SELECT model_id, name, status FROM personalize.models ORDER BY model_id;

-- Another name is another model; the exact solver works too.
SELECT model_id, model_name FROM personalize.train('exact', factors => 8, iterations => 2, solver => 'cholesky');
SELECT name, status, params->>'solver' AS solver FROM personalize.models WHERE status = 'active' ORDER BY name;

-- A failed or cancelled training leaves the previous model active and no rows behind.
BEGIN;
SELECT model_id FROM personalize.train(factors => 4, iterations => 1);
ROLLBACK;
-- A timeout that lands inside the iterations (reading takes a few ms, 200 iterations take seconds).
SET statement_timeout = '300ms';
SELECT pg_temp.cancelled('SELECT * FROM personalize.train(factors => 128, iterations => 200)');
RESET statement_timeout;
SELECT model_id, name, status FROM personalize.models ORDER BY model_id;
SELECT count(*) FROM personalize.model_items WHERE model_id NOT IN (SELECT model_id FROM personalize.models);

-- Versions: roll back, drop, prune.
SELECT personalize.activate_model(1);
SELECT model_id, status FROM personalize.models WHERE name = 'default' ORDER BY model_id;
SELECT pg_temp.err('SELECT personalize.drop_model(1)');
SELECT pg_temp.err('SELECT personalize.drop_model(999)');
SELECT personalize.drop_model(2);
SELECT personalize.prune_models('default', keep => 0);
SELECT model_id, name, status FROM personalize.models ORDER BY model_id;
SELECT count(*) FROM personalize.model_users WHERE model_id IN (2, 3);

-- Impossible parameters get clear errors.
SELECT pg_temp.err('SELECT * FROM personalize.train(factors => 0)');
SELECT pg_temp.err('SELECT * FROM personalize.train(iterations => -1)');
SELECT pg_temp.err('SELECT * FROM personalize.train(regularization => -0.5)');
SELECT pg_temp.err($q$SELECT * FROM personalize.train(regularization => 'NaN')$q$);
SELECT pg_temp.err('SELECT * FROM personalize.train(alpha => 0)');
SELECT pg_temp.err($q$SELECT * FROM personalize.train(solver => 'sgd')$q$);
SELECT pg_temp.err('SELECT * FROM personalize.train(iterations => NULL)');
SELECT pg_temp.err($q$SELECT * FROM personalize.train('bad name!')$q$);
SELECT pg_temp.err($q$SELECT * FROM personalize.train(as_of => '2001-01-01')$q$);
SELECT pg_temp.err($q$SELECT * FROM personalize.train(as_of => 'infinity')$q$);
SET personalize.training_memory_mb = 1;
SELECT pg_temp.err('SELECT * FROM personalize.train(factors => 1024)');
RESET personalize.training_memory_mb;
-- The default budget is 6144 MB (room for EASE's solve on a stock server); 0 means
-- maintenance_work_mem.
SHOW personalize.training_memory_mb;
SET personalize.training_memory_mb = 0;
SET maintenance_work_mem = '1MB';
SELECT pg_temp.err('SELECT * FROM personalize.train(factors => 1024)');
RESET maintenance_work_mem;
RESET personalize.training_memory_mb;

-- Evaluation: temporal hold-out against popularity, stored.
SELECT method, k, users, ndcg > 0 AS ndcg_positive, coverage > 0 AS covers
  FROM personalize.evaluate(factors => 16, iterations => 8, alpha => 5, regularization => 1);
SELECT (results->'als'->>'ndcg')::float8 > (results->'popularity'->>'ndcg')::float8 AS als_beats_popularity,
       model_id, k, test_fraction
  FROM personalize.evaluations;
SELECT pg_temp.err('SELECT * FROM personalize.evaluate(k => 0)');
SELECT pg_temp.err('SELECT * FROM personalize.evaluate(test_fraction => 1)');
SELECT section, name, value FROM personalize.status WHERE section = 'active models' ORDER BY name;
