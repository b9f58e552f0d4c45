------------------------------------------------------------------------------------------
-- Experiments
------------------------------------------------------------------------------------------

CREATE FUNCTION personalize._experiments_before_write() RETURNS trigger
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
COMMENT ON FUNCTION personalize._experiments_before_write() IS 'Trigger: checks an experiment''s variants and event types, and keeps name, variants and salt fixed once anyone was exposed';

CREATE TRIGGER experiments_before_write
    BEFORE INSERT OR UPDATE ON personalize.experiments
    FOR EACH ROW EXECUTE FUNCTION personalize._experiments_before_write();

CREATE TRIGGER experiments_durations
    BEFORE INSERT OR UPDATE ON personalize.experiments
    FOR EACH ROW EXECUTE FUNCTION personalize._durations_before_write('attribution_window', '365 days', '');

-- In place of a foreign key from exposures (see bootstrap.sql).
CREATE FUNCTION personalize._experiments_before_delete() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM personalize.exposures e WHERE e.experiment = OLD.name) THEN
        RAISE EXCEPTION 'experiment "%" has exposures and cannot be deleted', OLD.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'End it instead (UPDATE ... SET ends_at = now()), or delete its history first: '
                      || 'DELETE FROM personalize.exposures WHERE experiment = ' || quote_literal(OLD.name) || ';';
    END IF;
    RETURN OLD;
END
$$;
COMMENT ON FUNCTION personalize._experiments_before_delete() IS 'Trigger: refuses to delete an experiment that has exposures';

CREATE TRIGGER experiments_before_delete
    BEFORE DELETE ON personalize.experiments
    FOR EACH ROW EXECUTE FUNCTION personalize._experiments_before_delete();

-- assign_variant() keeps the experiments per backend; any change makes every backend re-read.
CREATE FUNCTION personalize._experiments_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM personalize._invalidate_experiment_cache();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION personalize._experiments_changed() IS 'Trigger: tells every backend that the experiments changed';

CREATE TRIGGER experiments_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.experiments
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._experiments_changed();

-- The Rust functions' comments (their code: see CONTRIBUTING.md's function table).
COMMENT ON FUNCTION personalize.assign_variant(text, text) IS 'The user''s variant: deterministic (SHA-256 of salt and user id), proportional to the weights, the same in every session, server and standby; the control before starts_at and from ends_at on';
COMMENT ON FUNCTION personalize.variant_model(text, text) IS 'The model name the user''s variant serves with (its "model", else default): recommend(user, k, model => personalize.variant_model(experiment, user))';
COMMENT ON FUNCTION personalize.log_exposure(text, text, text) IS 'Records that the user saw the experiment''s placement and returns their variant; outside the experiment''s window returns the control and records nothing';
COMMENT ON FUNCTION personalize.experiment_report(text) IS 'Per variant: users, exposures, clicks, CTR, converting users, conversions, conversion rate, revenue per user; against the control: lift, confidence interval of the rate difference and two-sided p-value (two-proportion z-test), revenue p-value (Welch); sample-ratio-mismatch chi-square p-value (mismatch when < 0.001)';
COMMENT ON FUNCTION personalize._variants_problem(text) IS 'Internal: why an experiment''s variants are refused, NULL when valid';
COMMENT ON FUNCTION personalize._invalidate_experiment_cache() IS 'Internal: makes every backend re-read the experiments at commit';
