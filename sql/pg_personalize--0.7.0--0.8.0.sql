-- pg_personalize 0.7.0 → 0.8.0: more of the model families, and the current session.
--   * RP3beta, an item-item model from a random walk item → user → item that needs no dense
--     solve (so it trains catalogues beyond EASE's memory budget), joins train()'s candidates,
--     and so do blends of the best EASE and RP3beta; train() takes RP3beta's beta. Both store
--     neighbours like EASE's models.
--   * ALS with frequency-scaled regularization: train() takes frequency_scaling.
--   * train()'s choice runs within personalize.training_time_budget (a setting; nothing here).
--   * recommend() weighs in a returning user's current session (personalize.session_window,
--     personalize.session_weight; source 'session'): only comments change here.
-- tests/upgrade.sh checks that an updated database has exactly the catalogue of a fresh 0.8.0
-- install and passes the regression suite.
\echo Use "ALTER EXTENSION pg_personalize UPDATE TO '0.8.0'" to load this file. \quit

DROP FUNCTION personalize.train(text, integer, integer, real, real, interval, timestamptz, bigint, text, integer, text, double precision, integer);
CREATE FUNCTION personalize.train(
	"model_name" TEXT DEFAULT 'default',
	"factors" INT DEFAULT NULL,
	"iterations" INT DEFAULT NULL,
	"regularization" real DEFAULT NULL,
	"alpha" real DEFAULT NULL,
	"window" interval DEFAULT NULL,
	"as_of" timestamp with time zone DEFAULT NULL,
	"seed" bigint DEFAULT 42,
	"solver" TEXT DEFAULT NULL,
	"cg_steps" INT DEFAULT NULL,
	"model_type" TEXT DEFAULT NULL,
	"l2" double precision DEFAULT NULL,
	"neighbors" INT DEFAULT NULL,
	"beta" double precision DEFAULT NULL,
	"frequency_scaling" real DEFAULT NULL
) RETURNS TABLE (
	"model_id" bigint,
	"model_name" TEXT,
	"users" INT,
	"items" INT,
	"interactions" bigint,
	"final_loss" double precision,
	"read_seconds" double precision,
	"train_seconds" double precision,
	"write_seconds" double precision
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'train_models_wrapper';

COMMENT ON COLUMN personalize.models.params IS 'model_type (als, ease, rp3beta, blend, popularity or trending) and its parameters; spec: what train() was asked for, which the next train() of the name without arguments reuses; selection: the validation leaderboard when the family was chosen (see personalize.model_selection)';
COMMENT ON TABLE personalize.model_users IS 'Per user of each model: ALS factors (empty for item-item and popularity models, which score from the user''s history) and purchases';
COMMENT ON COLUMN personalize.model_items.neighbors IS 'An item-item (EASE, RP3beta or blend) model''s neighbours of the item, as item_index values, whose weights are in factors; NULL for ALS and popularity models';
COMMENT ON TABLE personalize.evaluations IS 'Offline evaluations (evaluate()): temporal hold-out metrics of every model family, per method';
COMMENT ON FUNCTION personalize.train(text, integer, integer, real, real, interval, timestamptz, bigint, text, integer, text, double precision, integer, double precision, real) IS 'Trains a recommender on the event log (per user and item: event-type weights, each halved every half-life before as_of) and makes it the active model of its name in this transaction. model_type auto (the default) fits popularity, trending (recency-weighted popularity), RP3beta (item-item random walk), EASE (item-item regression, when its dense solve fits personalize.training_memory_mb) a small ALS grid and blends of the best EASE and RP3beta on a temporal validation split, cheapest first within personalize.training_time_budget, keeps the best by NDCG@10 (see personalize.model_selection) and refits it on all the data; als, ease, rp3beta, popularity or trending train that family (ALS: factors, iterations, regularization, alpha, solver, cg_steps, frequency_scaling; EASE: l2, neighbors; RP3beta: beta, neighbors; a parameter left out is chosen on the validation split, or for ALS takes its old default). Without arguments a name is trained as it was last time. NOTICE per step; honours cancel and statement_timeout.';
COMMENT ON FUNCTION personalize.evaluate(text, integer, double precision, integer, integer, real, real, interval, timestamptz, bigint, text, integer, boolean, integer) IS 'Temporal hold-out (each user''s latest test_fraction of items; purchases_only scores only held-out purchases, min_sessions only users seen in that many sessions): trains on the rest and returns precision, recall, NDCG, MAP @k and coverage for ALS (the parameters given), EASE (l2 at half the mean users per item, when it fits the memory budget), RP3beta (beta 0.5), popularity, trending and auto (what train() with no arguments would serve); stores them in personalize.evaluations';
COMMENT ON FUNCTION personalize.recommend(text, integer, text, text, text[], text, boolean, boolean) IS 'Top k items for a user from the active model of a name, best first. exclude: purchased (default), interacted or none; exclude_items; category and available_only filter inside the top-k. Scores come from the model (source model: the stored ALS vector, or an item-item model''s weights times the user''s history up to as_of), from fold-in of events newer than the model or of a user the model does not know (fold_in), from fold-in that weighs in the user''s current session (source session: events within personalize.session_window of now, at personalize.session_weight, for a user with earlier history), or from popularity (no usable history, or a popularity or trending model). model_id says which model version answered.';

-- Privileges of the new train() (every upgrade script ends with this).
SELECT personalize._apply_privileges();
