-- pg_personalize 0.8.0 → 0.9.0: model memory shared by every connection; one definition of
-- quiet hours.
--   * Serving maps each model version's image from one file per server
--     ($PGDATA/pg_personalize), built from the model tables by the first backend that serves
--     the version, instead of copying the model into every backend. The files are derived
--     data, outside the database.
--   * personalize._after_quiet_hours is the Rust function the events trigger already used
--     (src/pg/quiet_hours.rs) instead of a second definition in SQL; same signature, result
--     and comment.
-- tests/upgrade.sh checks that an updated database has exactly the catalogue of a fresh 0.9.0
-- install and passes the regression suite.
\echo Use "ALTER EXTENSION pg_personalize UPDATE TO '0.9.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION personalize._after_quiet_hours(t timestamptz, quiet_start time, quiet_end time, tz text)
RETURNS timestamptz
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_after_quiet_hours_wrapper';

-- Every upgrade script ends with this.
SELECT personalize._apply_privileges();
