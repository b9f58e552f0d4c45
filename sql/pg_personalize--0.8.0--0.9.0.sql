-- pg_personalize 0.8.0 → 0.9.0: model memory shared by every connection.
--   * Serving maps each model version's image from one file per server
--     ($PGDATA/pg_personalize), built from the model tables by the first backend that serves
--     the version, instead of copying the model into every backend. Nothing in the catalogue
--     changes: the files are derived data, outside the database.
-- tests/upgrade.sh checks that an updated database has exactly the catalogue of a fresh 0.9.0
-- install and passes the regression suite.
\echo Use "ALTER EXTENSION pg_personalize UPDATE TO '0.9.0'" to load this file. \quit

-- Every upgrade script ends with this.
SELECT personalize._apply_privileges();
