-- pg_personalize 0.3.0 → 0.4.0: a model stores each user's purchased items with the user's
-- factors, so recommend() excludes them with one row instead of reading all of a wholesale
-- customer's events. Models trained before the update have NULL there and are served as
-- before (exclusions read from the events) until the next train(). tests/upgrade.sh checks
-- that an updated database has exactly the catalogue of a fresh 0.4.0 install and passes the
-- regression suite.
\echo Use "ALTER EXTENSION pg_personalize UPDATE TO '0.4.0'" to load this file. \quit

ALTER TABLE personalize.model_users ADD COLUMN purchased integer[];
COMMENT ON COLUMN personalize.model_users.purchased IS 'model_items.item_index of the user''s purchases up to the model''s as_of, which recommend() leaves out; NULL when the model was trained with a window (serving then reads them from the events)';
