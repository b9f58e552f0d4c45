-- pg_personalize 0.2.0 → 0.3.0: the campaign trigger moves to Rust (src/api/campaign_trigger.rs)
-- with a per-backend cache of the campaigns and caps; the outbox loses its foreign key to the
-- campaigns (a trigger clears campaign_id on delete) and indexes a user's messages only once
-- handed out. tests/upgrade.sh checks that an updated database has exactly the catalogue of a
-- fresh 0.3.0 install and passes the regression suite.
\echo Use "ALTER EXTENSION pg_personalize UPDATE TO '0.3.0'" to load this file. \quit

ALTER TABLE personalize.outbox DROP CONSTRAINT outbox_campaign_id_fkey;
DROP INDEX personalize.outbox_user_idx;
CREATE INDEX outbox_user_idx ON personalize.outbox (user_id, claimed_at)
    WHERE claimed_at IS NOT NULL;
-- Messages of campaigns deleted while the foreign key held already have campaign_id NULL.

DROP TRIGGER events_fire_campaigns ON personalize.events;
DROP FUNCTION personalize._events_fire_campaigns();
CREATE FUNCTION personalize._events_fire_campaigns()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', '_events_fire_campaigns_wrapper';
ALTER FUNCTION personalize._events_fire_campaigns() SET search_path = pg_catalog, pg_temp;
CREATE TRIGGER events_fire_campaigns
    AFTER INSERT ON personalize.events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._events_fire_campaigns();

CREATE FUNCTION personalize._invalidate_campaign_cache() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', '_invalidate_campaign_cache_wrapper';

CREATE FUNCTION personalize._campaigns_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Every backend re-reads the campaigns and caps when this statement commits.
    PERFORM personalize._invalidate_campaign_cache();
    RETURN NULL;
END
$$;

CREATE TRIGGER campaigns_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._campaigns_changed();

CREATE TRIGGER frequency_caps_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.frequency_caps
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._campaigns_changed();

CREATE FUNCTION personalize._campaigns_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE personalize.outbox o SET campaign_id = NULL
     WHERE o.campaign_id = ANY (ARRAY(SELECT d.campaign_id FROM deleted_campaigns d));
    RETURN NULL;
END
$$;

CREATE TRIGGER campaigns_deleted
    AFTER DELETE ON personalize.campaigns
    REFERENCING OLD TABLE AS deleted_campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._campaigns_deleted();

CREATE OR REPLACE FUNCTION personalize._campaigns_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
    missing text;
BEGIN
    IF personalize._unknown_event_types(ARRAY[NEW.trigger_event_type]) IS NOT NULL THEN
        RAISE EXCEPTION 'campaign "%": trigger_event_type "%" is not in the tracking plan', NEW.name, NEW.trigger_event_type
            USING ERRCODE = 'invalid_parameter_value', HINT = personalize._known_event_types_hint();
    END IF;
    missing := personalize._unknown_event_types(NEW.cancel_on);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'campaign "%": cancel_on names event types that are not in the tracking plan: %', NEW.name, missing
            USING ERRCODE = 'invalid_parameter_value', HINT = personalize._known_event_types_hint();
    END IF;
    problem := personalize._template_problem(CAST(NEW.template AS text));
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'campaign "%": invalid template: %', NEW.name, problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A template is a JSON object whose strings may use {{user_id}}, {{item_id}}, {{item_title}}, '
                      || '{{category}}, {{event_type}}, {{occurred_at}}, {{campaign}}, {{channel}}, {{message_id}}, '
                      || '{{idempotency_key}}, {{properties.<name>}} and "{{recommendations}}" (a whole string).';
    END IF;
    IF NEW.model !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'campaign "%": "%" is not a model name', NEW.name, NEW.model
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Model names are 1 to 63 letters, digits, _ . or -.';
    END IF;
    BEGIN
        PERFORM now() AT TIME ZONE NEW.quiet_timezone;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'campaign "%": unknown time zone "%"', NEW.name, NEW.quiet_timezone
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

COMMENT ON FUNCTION personalize._events_fire_campaigns() IS 'Trigger: writes campaign messages for new events and cancels pending ones (cancel_on), in the events'' transaction; NOTIFY personalize_outbox when a message is due now';
COMMENT ON FUNCTION personalize._invalidate_campaign_cache() IS 'Internal: makes every backend re-read the campaigns and frequency caps at commit';
COMMENT ON FUNCTION personalize._campaigns_changed() IS 'Trigger: tells every backend that the campaigns or frequency caps changed';
COMMENT ON FUNCTION personalize._campaigns_deleted() IS 'Trigger: a deleted campaign''s messages keep their history with campaign_id NULL';
COMMENT ON FUNCTION personalize._campaigns_before_write() IS 'Trigger: checks a campaign''s event types, template, model name and time zone on write';

-- Roles and grants for the new functions (the same function the install script ends with).
SELECT personalize._apply_privileges();
