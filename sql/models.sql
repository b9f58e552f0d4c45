------------------------------------------------------------------------------------------
-- Models
------------------------------------------------------------------------------------------

CREATE FUNCTION personalize.activate_model(model_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    model_name text;
BEGIN
    SELECT m.name INTO model_name FROM personalize.models m WHERE m.model_id = activate_model.model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', activate_model.model_id
            USING ERRCODE = 'undefined_object', HINT = 'SELECT model_id, name, status FROM personalize.models;';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('pg_personalize.model:' || model_name));
    UPDATE personalize.models m SET status = 'inactive' WHERE m.name = model_name AND m.status = 'active';
    UPDATE personalize.models m SET status = 'active' WHERE m.model_id = activate_model.model_id;
END
$$;
COMMENT ON FUNCTION personalize.activate_model(bigint) IS 'Makes a model version the active model of its name (e.g. to roll back)';

CREATE FUNCTION personalize.drop_model(model_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    model_status text;
BEGIN
    SELECT m.status INTO model_status FROM personalize.models m WHERE m.model_id = drop_model.model_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', drop_model.model_id
            USING ERRCODE = 'undefined_object', HINT = 'SELECT model_id, name, status FROM personalize.models;';
    END IF;
    IF model_status = 'active' THEN
        RAISE EXCEPTION 'model % is the active model of its name', drop_model.model_id
            USING ERRCODE = 'object_in_use',
                  HINT = 'Activate another version (personalize.activate_model) or train a new one first.';
    END IF;
    DELETE FROM personalize.models m WHERE m.model_id = drop_model.model_id;
END
$$;
COMMENT ON FUNCTION personalize.drop_model(bigint) IS 'Deletes an inactive model version and its factors';

CREATE FUNCTION personalize.prune_models(model_name text DEFAULT 'default', keep integer DEFAULT 2)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    IF keep IS NULL OR keep < 0 THEN
        RAISE EXCEPTION 'keep must be >= 0, not %', COALESCE(keep::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'keep is how many inactive versions to keep.';
    END IF;
    DELETE FROM personalize.models m
     WHERE m.model_id IN (SELECT x.model_id FROM personalize.models x
                           WHERE x.name = prune_models.model_name AND x.status = 'inactive'
                           ORDER BY x.model_id DESC OFFSET keep);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION personalize.prune_models(text, integer) IS 'Deletes all but the newest keep inactive versions of a model name; returns how many were deleted';

------------------------------------------------------------------------------------------
-- Model selection: what train() tried on its validation split, per model
------------------------------------------------------------------------------------------

CREATE VIEW personalize.model_selection AS
SELECT m.model_id, m.name AS model_name, m.status, m.created_at,
       c.ordinality AS rank_in_order,
       c.value OPERATOR(pg_catalog.->>) 'family' AS family,
       c.value OPERATOR(pg_catalog.->) 'params' AS params,
       CAST(c.value OPERATOR(pg_catalog.->>) 'ndcg_at_10' AS pg_catalog.float8) AS ndcg_at_10,
       CAST(c.value OPERATOR(pg_catalog.->>) 'recall_at_10' AS pg_catalog.float8) AS recall_at_10,
       CAST(c.value OPERATOR(pg_catalog.->>) 'fit_seconds' AS pg_catalog.float8) AS fit_seconds,
       CAST(c.value OPERATOR(pg_catalog.->>) 'chosen' AS boolean) AS chosen
  FROM personalize.models m,
       pg_catalog.jsonb_array_elements(
           CASE WHEN pg_catalog.jsonb_typeof(m.params OPERATOR(pg_catalog.->) 'selection') OPERATOR(pg_catalog.=) 'array'
                THEN m.params OPERATOR(pg_catalog.->) 'selection'
                ELSE CAST('[]' AS jsonb) END) WITH ORDINALITY AS c(value, ordinality);
COMMENT ON VIEW personalize.model_selection IS 'What train() tried on its temporal validation split (each user''s latest fifth of their items held out): per model and candidate the family, parameters, NDCG@10, recall@10, fit seconds and whether it was chosen';

-- The Rust functions' comments (their code: see CONTRIBUTING.md's function table).
COMMENT ON FUNCTION personalize.train(text, integer, integer, real, real, interval, timestamptz, bigint, text, integer, text, double precision, integer, double precision, real, double precision) IS 'Trains a recommender on the event log (per user and item: event-type weights, each halved every half-life before as_of) and makes it the active model of its name in this transaction. model_type auto (the default) fits popularity, trending (recency-weighted popularity), RP3beta (item-item random walk), EASE (item-item regression, when its dense solve fits personalize.training_memory_mb) a small ALS grid and blends of the best EASE and RP3beta on a temporal validation split, cheapest first within personalize.training_time_budget, keeps the best by NDCG@10 (see personalize.model_selection) and refits it on all the data; als, ease, rp3beta, popularity or trending train that family (ALS: factors, iterations, regularization, alpha, solver, cg_steps, frequency_scaling; EASE: l2, dropout, neighbors; RP3beta: beta, neighbors; a parameter left out is chosen on the validation split, or for ALS takes its old default). Without arguments a name is trained as it was last time. NOTICE per step; honours cancel and statement_timeout.';
COMMENT ON FUNCTION personalize.evaluate(text, integer, double precision, integer, integer, real, real, interval, timestamptz, bigint, text, integer, boolean, integer) IS 'Temporal hold-out (each user''s latest test_fraction of items; purchases_only scores only held-out purchases, min_sessions only users seen in that many sessions): trains on the rest and returns precision, recall, NDCG, MAP @k and coverage for ALS (the parameters given), EASE (l2 at half the mean users per item, when it fits the memory budget), RP3beta (beta 0.5), popularity, trending and auto (what train() with no arguments would serve); stores them in personalize.evaluations';
