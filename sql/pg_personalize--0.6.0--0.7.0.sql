-- pg_personalize 0.6.0 → 0.7.0: defects of a hostile review.
--   * client_event_id is the sender's id per user and event type (a retry with other content
--     is quarantined as client_event_id_conflict); the unique index gets those columns.
--   * interval columns and arguments are checked by what they do (_check_duration: no negative
--     part, at most the limit with 31-day months and 366-day years).
--   * the reader, writer and worker functions run as personalize_definer, a NOLOGIN role with
--     DML on the extension's tables only, instead of the installing superuser; the serving
--     functions move to personalize_recommender, of which personalize_reader is a member.
--   * model families: train() chooses between popularity, EASE and ALS on a validation split
--     by default (model_type, l2, neighbors are new arguments; NULL ALS arguments mean the
--     defaults); EASE models store item neighbours (model_items.neighbors); a view
--     personalize.model_selection shows what each training tried.
--   The library's changes (campaigns fire only for tracked events, as_of never ahead of the
--   transaction, claims isolate a failing message, bounded quarantine of oversize events)
--   need nothing here.
-- tests/upgrade.sh checks that an updated database has exactly the catalogue of a fresh 0.7.0
-- install and passes the regression suite.
\echo Use "ALTER EXTENSION pg_personalize UPDATE TO '0.7.0'" to load this file. \quit

-- Existing ids were unique across all users, so they are unique per user and type too.
DROP INDEX personalize.events_client_event_id_key;
CREATE UNIQUE INDEX events_client_event_id_key
    ON personalize.events (client_event_id, user_id, event_type) WHERE client_event_id IS NOT NULL;

CREATE FUNCTION personalize._check_duration(
	"what" TEXT,
	"value" interval,
	"max" interval,
	"allow_zero" bool,
	"hint" TEXT DEFAULT ''
) RETURNS void
IMMUTABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', '_check_duration_wrapper';

CREATE FUNCTION personalize._durations_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    row_json jsonb := pg_catalog.to_jsonb(NEW);
    i integer := 0;
BEGIN
    WHILE i < TG_NARGS LOOP
        PERFORM personalize._check_duration(
            TG_TABLE_NAME || '.' || TG_ARGV[i],
            CAST(row_json OPERATOR(pg_catalog.->>) TG_ARGV[i] AS pg_catalog.interval),
            CAST(TG_ARGV[i + 1] AS pg_catalog.interval),
            TG_ARGV[i + 2] OPERATOR(pg_catalog.=) 'zero');
        i := i + 3;
    END LOOP;
    RETURN NEW;
END
$$;

CREATE TRIGGER event_types_durations
    BEFORE INSERT OR UPDATE ON personalize.event_types
    FOR EACH ROW EXECUTE FUNCTION personalize._durations_before_write('half_life', '36600 days', '');

CREATE TRIGGER campaigns_durations
    BEFORE INSERT OR UPDATE ON personalize.campaigns
    FOR EACH ROW EXECUTE FUNCTION personalize._durations_before_write(
        'delay', '364 days', 'zero', 'cap_window', '366 days', '', 'max_event_age', '36600 days', '');

CREATE TRIGGER frequency_caps_durations
    BEFORE INSERT OR UPDATE ON personalize.frequency_caps
    FOR EACH ROW EXECUTE FUNCTION personalize._durations_before_write('window', '366 days', '');

CREATE TRIGGER experiments_durations
    BEFORE INSERT OR UPDATE ON personalize.experiments
    FOR EACH ROW EXECUTE FUNCTION personalize._durations_before_write('attribution_window', '365 days', '');

CREATE OR REPLACE FUNCTION personalize.fail(message_id bigint, lease_token uuid, error text, retry_in interval DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_state text;
BEGIN
    PERFORM personalize._check_duration('retry_in', retry_in, interval '7 days', true,
        'Omit it for exponential backoff (10 s, 20 s, 40 s, ... up to 1 hour).');
    UPDATE personalize.outbox o
       SET state = CASE WHEN o.attempts >= COALESCE(
                             (SELECT c.max_attempts FROM personalize.campaigns c WHERE c.campaign_id = o.campaign_id), 5)
                        THEN 'dead' ELSE 'pending' END,
           visible_at = now() + COALESCE(fail.retry_in,
                                         least(interval '1 hour', interval '10 seconds' * power(2, greatest(o.attempts - 1, 0)))),
           last_error = left(COALESCE(fail.error, 'unknown error'), 2000)
     WHERE o.message_id = fail.message_id AND o.lease_token = fail.lease_token AND o.state = 'claimed'
    RETURNING o.state INTO new_state;
    IF new_state = 'dead' THEN
        UPDATE personalize.outbox o SET finished_at = now() WHERE o.message_id = fail.message_id;
    END IF;
    RETURN new_state;
END
$$;

CREATE OR REPLACE FUNCTION personalize.archive_messages(older_than interval DEFAULT '7 days', purge boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF older_than IS NULL OR purge IS NULL THEN
        RAISE EXCEPTION 'older_than must be a non-negative interval and purge true or false'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Keep finished messages at least as long as your longest frequency-cap window.';
    END IF;
    PERFORM personalize._check_duration('older_than', older_than, interval '36600 days', true,
        'Keep finished messages at least as long as your longest frequency-cap window.');
    IF purge THEN
        DELETE FROM personalize.outbox o
         WHERE o.state IN ('sent', 'cancelled', 'dead') AND o.finished_at < now() - older_than;
    ELSE
        WITH moved AS (
            DELETE FROM personalize.outbox o
             WHERE o.state IN ('sent', 'cancelled', 'dead') AND o.finished_at < now() - older_than
            RETURNING o.*)
        INSERT INTO personalize.outbox_archive SELECT m.*, now() FROM moved m;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Error messages quote names and values cut to 100 characters.
CREATE OR REPLACE FUNCTION personalize._event_types_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
BEGIN
    problem := personalize._plan_schema_problem(CAST(NEW.properties_schema AS pg_catalog.text));
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid properties_schema for event type "%": %', pg_catalog.left(NEW.event_type, 100), problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'properties_schema is a JSON Schema for the properties object, e.g. '
                      || '{"type": "object", "properties": {"price": {"type": "number"}}}';
    END IF;
    IF TG_OP = 'INSERT' THEN
        -- A shop's own row for a type replaces the default one (this is also what makes a
        -- pg_dump restore work: CREATE EXTENSION inserts the defaults, the dump the shop's rows).
        IF NEW.origin = 'shop' THEN
            DELETE FROM personalize.event_types t
             WHERE t.event_type OPERATOR(pg_catalog.=) NEW.event_type
               AND t.origin OPERATOR(pg_catalog.=) 'default';
        END IF;
    ELSE
        NEW.origin := 'shop';
    END IF;
    NEW.updated_at := pg_catalog.now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION personalize._segments_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
BEGIN
    problem := personalize._segment_problem(CAST(NEW.definition AS text));
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid definition for segment "%": %', pg_catalog.left(NEW.name, 100), problem
            USING ERRCODE = 'invalid_parameter_value', HINT = personalize._segment_hint();
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION personalize._campaigns_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
    missing text;
BEGIN
    IF personalize._unknown_event_types(ARRAY[NEW.trigger_event_type]) IS NOT NULL THEN
        RAISE EXCEPTION 'campaign "%": trigger_event_type "%" is not in the tracking plan', pg_catalog.left(NEW.name, 100), pg_catalog.left(NEW.trigger_event_type, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = personalize._known_event_types_hint();
    END IF;
    missing := personalize._unknown_event_types(NEW.cancel_on);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'campaign "%": cancel_on names event types that are not in the tracking plan: %', pg_catalog.left(NEW.name, 100), missing
            USING ERRCODE = 'invalid_parameter_value', HINT = personalize._known_event_types_hint();
    END IF;
    problem := personalize._template_problem(CAST(NEW.template AS text));
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'campaign "%": invalid template: %', pg_catalog.left(NEW.name, 100), problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A template is a JSON object whose strings may use {{user_id}}, {{item_id}}, {{item_title}}, '
                      || '{{category}}, {{event_type}}, {{occurred_at}}, {{campaign}}, {{channel}}, {{message_id}}, '
                      || '{{idempotency_key}}, {{properties.<name>}} and "{{recommendations}}" (a whole string).';
    END IF;
    IF NEW.model !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'campaign "%": "%" is not a model name', pg_catalog.left(NEW.name, 100), pg_catalog.left(NEW.model, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Model names are 1 to 63 letters, digits, _ . or -.';
    END IF;
    BEGIN
        PERFORM now() AT TIME ZONE NEW.quiet_timezone;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'campaign "%": unknown time zone "%"', pg_catalog.left(NEW.name, 100), pg_catalog.left(NEW.quiet_timezone, 100)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a name such as Europe/Berlin or UTC: SELECT name FROM pg_timezone_names;';
    END;
    -- Messages refer to their campaign by id (without a foreign key, see _campaigns_deleted).
    IF TG_OP = 'UPDATE' AND NEW.campaign_id IS DISTINCT FROM OLD.campaign_id THEN
        RAISE EXCEPTION 'campaign "%": campaign_id cannot change', OLD.name
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create a new campaign (and disable or delete the old one) instead.';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION personalize._experiments_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
    missing text;
BEGIN
    problem := personalize._variants_problem(CAST(NEW.variants AS text));
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'experiment "%": invalid variants: %', pg_catalog.left(NEW.name, 100), problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'variants is a JSON array of 2 to 20 objects {"name": "grid", "weight": 50} with an '
                      || 'optional "model" (the model name serving uses for that variant); the first is the control.';
    END IF;
    IF cardinality(NEW.conversion_event_types) = 0 THEN
        RAISE EXCEPTION 'experiment "%": conversion_event_types is empty', pg_catalog.left(NEW.name, 100)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name at least one event type, e.g. ''{purchase}''.';
    END IF;
    missing := personalize._unknown_event_types(NEW.click_event_types || NEW.conversion_event_types);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'experiment "%": click_event_types or conversion_event_types name event types that are not in the tracking plan: %', pg_catalog.left(NEW.name, 100), missing
            USING ERRCODE = 'invalid_parameter_value', HINT = personalize._known_event_types_hint();
    END IF;
    IF TG_OP = 'UPDATE'
       AND (NEW.variants IS DISTINCT FROM OLD.variants OR NEW.salt IS DISTINCT FROM OLD.salt
            OR NEW.name IS DISTINCT FROM OLD.name)
       AND EXISTS (SELECT 1 FROM personalize.exposures e WHERE e.experiment = OLD.name) THEN
        RAISE EXCEPTION 'experiment "%" has exposures: its name, variants and salt can no longer change', OLD.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Changing them would move users between variants and void the report. End this one '
                      || '(UPDATE ... SET ends_at = now()) and create a new experiment.';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- The serving functions are the recommender's now; the reader has them through membership.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::pg_catalog.regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'personalize'::pg_catalog.regnamespace
                AND p.proname IN ('recommend', 'recommend_for_session', 'similar_items', 'rank_items',
                                  'assign_variant', 'variant_model', 'log_exposure')
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM personalize_reader', f);
    END LOOP;
END $$;

COMMENT ON FUNCTION personalize._durations_before_write() IS 'Trigger: checks the interval columns named by its arguments (column, limit, ''zero'' when 0 is allowed) with _check_duration';
COMMENT ON FUNCTION personalize._check_duration(text, interval, interval, boolean, text) IS 'Internal: raises 22023 unless the interval is a duration from 0 to max with no negative part, counting a month as up to 31 days and a year as up to 366 (what it does to a timestamp, not how intervals compare)';
COMMENT ON COLUMN personalize.events.client_event_id IS 'The sender''s id for this event, unique per user and event type: a retry (same id, item and properties) is not stored twice; other content under a used id is quarantined as client_event_id_conflict';
COMMENT ON FUNCTION personalize.track(jsonb, boolean) IS 'Tracks one event: stores it in personalize.events and returns its event_id (the stored event''s id for a retry: same user, type, client_event_id, item and properties), or quarantines it in personalize.rejected_events and returns NULL. strict => true raises instead (SQLSTATE 23514).';
COMMENT ON FUNCTION personalize._apply_privileges() IS 'Internal: creates the roles personalize_recommender, personalize_reader, personalize_writer, personalize_worker, personalize_admin and personalize_definer when missing, revokes EXECUTE from PUBLIC, makes the recommender, reader, writer and worker functions SECURITY DEFINER, owned by personalize_definer (DML on the extension''s tables, nothing else), and grants them; run by the install and every upgrade script';

-- Model families: EASE (item-item) models keep each item's neighbours beside their weights;
-- train() chooses a family by default and takes model_type, l2 and neighbors.
ALTER TABLE personalize.model_items ADD COLUMN neighbors integer[];
DROP FUNCTION personalize.train(text, integer, integer, real, real, interval, timestamptz, bigint, text, integer);
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
	"neighbors" INT DEFAULT NULL
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
AS 'MODULE_PATHNAME', 'train_with_families_wrapper';

DROP FUNCTION personalize.evaluate(text, integer, double precision, integer, integer, real, real, interval, timestamptz, bigint, text, integer);
CREATE FUNCTION personalize.evaluate(
	"model_name" TEXT DEFAULT 'default',
	"k" INT DEFAULT 10,
	"test_fraction" double precision DEFAULT 0.2,
	"factors" INT DEFAULT 64,
	"iterations" INT DEFAULT 15,
	"regularization" real DEFAULT 0.01,
	"alpha" real DEFAULT 1.0,
	"window" interval DEFAULT NULL,
	"as_of" timestamp with time zone DEFAULT NULL,
	"seed" bigint DEFAULT 42,
	"solver" TEXT DEFAULT 'cg',
	"cg_steps" INT DEFAULT 3,
	"purchases_only" bool DEFAULT false,
	"min_sessions" INT DEFAULT 1
) RETURNS TABLE (
	"method" TEXT,
	"k" INT,
	"users" bigint,
	"precision" double precision,
	"recall" double precision,
	"ndcg" double precision,
	"map" double precision,
	"coverage" double precision
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'evaluate_families_wrapper';

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

COMMENT ON COLUMN personalize.model_items.neighbors IS 'An item-item (EASE) model''s neighbours of the item, as item_index values, whose weights are in factors; NULL for ALS and popularity models';
COMMENT ON VIEW personalize.model_selection IS 'What train() tried on its temporal validation split (each user''s latest fifth of their items held out): per model and candidate the family, parameters, NDCG@10, recall@10, fit seconds and whether it was chosen';
COMMENT ON FUNCTION personalize.train(text, integer, integer, real, real, interval, timestamptz, bigint, text, integer, text, double precision, integer) IS 'Trains a recommender on the event log (per user and item: event-type weights, each halved every half-life before as_of) and makes it the active model of its name in this transaction. model_type auto (the default) fits popularity, trending (recency-weighted popularity), EASE (item-item, when its dense solve fits personalize.training_memory_mb) and a small ALS grid on a temporal validation split, keeps the best by NDCG@10 (see personalize.model_selection) and refits it on all the data; als, ease, popularity or trending train that family (ALS: factors, iterations, regularization, alpha, solver, cg_steps; EASE: l2, neighbors). Without arguments a name is trained as it was last time. NOTICE per step; honours cancel and statement_timeout.';
COMMENT ON FUNCTION personalize.evaluate(text, integer, double precision, integer, integer, real, real, interval, timestamptz, bigint, text, integer, boolean, integer) IS 'Temporal hold-out (each user''s latest test_fraction of items; purchases_only scores only held-out purchases, min_sessions only users seen in that many sessions): trains on the rest and returns precision, recall, NDCG, MAP @k and coverage for ALS (the parameters given), EASE (l2 at half the mean users per item, when it fits the memory budget), popularity, trending and auto (what train() with no arguments would serve); stores them in personalize.evaluations';
COMMENT ON COLUMN personalize.models.as_of IS 'Time decay was measured back from this time (default: the newest event, but never later than the training''s transaction start)';
COMMENT ON COLUMN personalize.models.params IS 'model_type (als, ease, popularity or trending) and its parameters; spec: what train() was asked for, which the next train() of the name without arguments reuses; selection: the validation leaderboard when the family was chosen (see personalize.model_selection)';
COMMENT ON TABLE personalize.model_users IS 'Per user of each model: ALS factors (empty for EASE and popularity models, which score from the user''s history) and purchases';
COMMENT ON FUNCTION personalize.recommend(text, integer, text, text, text[], text, boolean, boolean) IS 'Top k items for a user from the active model of a name, best first. exclude: purchased (default), interacted or none; exclude_items; category and available_only filter inside the top-k. Scores come from the model (source model: the stored ALS vector, or an item-item model''s weights times the user''s history up to as_of), from fold-in of events newer than the model or of a user the model does not know (fold_in), or from popularity (no usable history, or a popularity or trending model). model_id says which model version answered.';

SELECT personalize._apply_privileges();
