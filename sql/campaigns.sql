------------------------------------------------------------------------------------------
-- Campaigns and the outbox
------------------------------------------------------------------------------------------

-- Event-type checks shared by the campaigns and experiments triggers.
CREATE FUNCTION personalize._unknown_event_types(types text[]) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(COALESCE(x, 'NULL'), ', ' ORDER BY n)
      FROM unnest(types) WITH ORDINALITY AS u(x, n)
     WHERE x IS NULL OR NOT EXISTS (SELECT 1 FROM personalize.event_types t WHERE t.event_type = x)
$$;
COMMENT ON FUNCTION personalize._unknown_event_types(text[]) IS 'Internal: the listed event types (NULL as "NULL") that are not in the tracking plan, in order; NULL when all are';

CREATE FUNCTION personalize._known_event_types_hint() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'Known event types: ' || string_agg(t.event_type, ', ' ORDER BY t.event_type) FROM personalize.event_types t
$$;
COMMENT ON FUNCTION personalize._known_event_types_hint() IS 'Internal: the hint listing the tracking plan''s event types';

CREATE FUNCTION personalize._campaigns_before_write() RETURNS trigger
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
COMMENT ON FUNCTION personalize._campaigns_before_write() IS 'Trigger: checks a campaign''s event types, template, model name and time zone on write';

CREATE TRIGGER campaigns_before_write
    BEFORE INSERT OR UPDATE ON personalize.campaigns
    FOR EACH ROW EXECUTE FUNCTION personalize._campaigns_before_write();

CREATE TRIGGER campaigns_durations
    BEFORE INSERT OR UPDATE ON personalize.campaigns
    FOR EACH ROW EXECUTE FUNCTION personalize._durations_before_write(
        'delay', '364 days', 'zero', 'cap_window', '366 days', '', 'max_event_age', '36600 days', '');

CREATE TRIGGER frequency_caps_durations
    BEFORE INSERT OR UPDATE ON personalize.frequency_caps
    FOR EACH ROW EXECUTE FUNCTION personalize._durations_before_write('window', '366 days', '');

-- The transactional outbox: personalize._events_fire_campaigns() (Rust, src/api/campaign_trigger.rs)
-- runs once per INSERT statement on events (a batch is one statement), in the events'
-- transaction, so a message exists exactly when its event does. It reads the campaigns and
-- frequency caps from a per-backend cache that the triggers below drop when they change.
-- Its statements run with generic plans and without sequential scans (see PLANNER_SETTINGS
-- there): a generic plan made while the outbox was empty once stayed in force as it grew and
-- made ingestion 17 to 38 times slower, while custom plans cost a planning per statement.
ALTER FUNCTION personalize._events_fire_campaigns() SET search_path = pg_catalog, pg_temp;

CREATE TRIGGER events_fire_campaigns
    AFTER INSERT ON personalize.events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._events_fire_campaigns();

CREATE FUNCTION personalize._campaigns_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Every backend re-reads the campaigns and caps when this statement commits.
    PERFORM personalize._invalidate_campaign_cache();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION personalize._campaigns_changed() IS 'Trigger: tells every backend that the campaigns, frequency caps or channel policies changed';

CREATE TRIGGER campaigns_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._campaigns_changed();

CREATE TRIGGER frequency_caps_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.frequency_caps
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._campaigns_changed();

-- A deleted campaign's messages keep their history with campaign_id NULL; claims cancel the
-- pending ones. (No foreign key: its per-message check took a FOR KEY SHARE lock on the
-- campaign's row in every ingesting transaction, which turns into multixacts under
-- concurrent ingestion, and cost a query per message. Claims also treat a campaign_id whose
-- campaign is gone as deleted.)
CREATE FUNCTION personalize._campaigns_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE personalize.outbox o SET campaign_id = NULL
     WHERE o.campaign_id = ANY (ARRAY(SELECT d.campaign_id FROM deleted_campaigns d));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION personalize._campaigns_deleted() IS 'Trigger: a deleted campaign''s messages keep their history with campaign_id NULL';

CREATE TRIGGER campaigns_deleted
    AFTER DELETE ON personalize.campaigns
    REFERENCING OLD TABLE AS deleted_campaigns
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._campaigns_deleted();

CREATE FUNCTION personalize.ack(message_id bigint, lease_token uuid) RETURNS boolean
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
    WITH done AS (
        UPDATE personalize.outbox o SET state = 'sent', finished_at = now()
         WHERE o.message_id = ack.message_id AND o.lease_token = ack.lease_token AND o.state = 'claimed'
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM done)
$$;
COMMENT ON FUNCTION personalize.ack(bigint, uuid) IS 'Marks a claimed message sent; false when the lease is no longer held (another worker claimed it after the lease expired, or it was already acked)';

CREATE FUNCTION personalize.ack_batch(lease_token uuid, message_ids bigint[]) RETURNS integer
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
    WITH done AS (
        UPDATE personalize.outbox o SET state = 'sent', finished_at = now()
         WHERE o.message_id = ANY (ack_batch.message_ids) AND o.lease_token = ack_batch.lease_token
           AND o.state = 'claimed'
        RETURNING 1)
    SELECT CAST(count(*) AS integer) FROM done
$$;
COMMENT ON FUNCTION personalize.ack_batch(uuid, bigint[]) IS 'ack() for several messages of one lease; returns how many were marked sent';

CREATE FUNCTION personalize.fail(message_id bigint, lease_token uuid, error text, retry_in interval DEFAULT NULL)
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
COMMENT ON FUNCTION personalize.fail(bigint, uuid, text, interval) IS 'Reports a failed delivery: the message is retried after retry_in (default backoff 10 s doubling up to 1 hour) or is dead after the campaign''s max_attempts; returns the new state, NULL when the lease is no longer held';

-- A worker that cannot deliver a message at all (no address on file for its channel, an
-- address the provider refuses for good) ends it as cancelled with the reason, instead of
-- failing it into `dead` after max_attempts retries that cannot succeed.
CREATE FUNCTION personalize.cancel_message(message_id bigint, lease_token uuid, reason text)
RETURNS boolean
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
    WITH done AS (
        UPDATE personalize.outbox o
           SET state = 'cancelled', finished_at = now(),
               last_error = left(COALESCE(cancel_message.reason, 'cancelled by the worker'), 2000)
         WHERE o.message_id = cancel_message.message_id AND o.lease_token = cancel_message.lease_token
           AND o.state = 'claimed'
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM done)
$$;
COMMENT ON FUNCTION personalize.cancel_message(bigint, uuid, text) IS 'Ends a claimed message as cancelled with the reason (no address on its channel, a permanent refusal): never retried; false when the lease is no longer held';

-- A worker that holds a message it has not sent (it is stopping, or its channel's
-- credentials are being refused) hands it back: pending again, due after retry_in, and the
-- claim does not count as an attempt, so a restart or a bad key never makes a message dead.
CREATE FUNCTION personalize.release_message(message_id bigint, lease_token uuid, retry_in interval DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM personalize._check_duration('retry_in', retry_in, interval '7 days', true,
        'Omit it to make the message due again at once.');
    UPDATE personalize.outbox o
       SET state = 'pending', lease_token = NULL, claimed_at = NULL,
           attempts = greatest(o.attempts - 1, 0),
           visible_at = now() + COALESCE(release_message.retry_in, interval '0')
     WHERE o.message_id = release_message.message_id AND o.lease_token = release_message.lease_token
       AND o.state = 'claimed';
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION personalize.release_message(bigint, uuid, interval) IS 'Hands a claimed, unsent message back: pending again after retry_in (default at once), its claim not counted as an attempt; false when the lease is no longer held';

CREATE FUNCTION personalize.archive_messages(older_than interval DEFAULT '7 days', purge boolean DEFAULT false)
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
COMMENT ON FUNCTION personalize.archive_messages(interval, boolean) IS 'Moves sent, cancelled and dead messages finished longer ago than older_than to outbox_archive (purge: deletes them); returns how many';

-- The Rust functions' comments (their code: see CONTRIBUTING.md's function table).
COMMENT ON FUNCTION personalize.claim_messages(text, integer, interval) IS 'Claims up to batch due messages of a channel (FOR UPDATE SKIP LOCKED) for visibility: re-checks cancel-on events, checks the campaign''s segment, re-checks attempts, quiet hours and frequency caps, renders payloads with fresh recommendations; returns them with one lease token for ack()/fail()';
COMMENT ON FUNCTION personalize._after_quiet_hours(timestamptz, time, time, text) IS 'Internal: t, or the end of the quiet hours t falls in';
COMMENT ON FUNCTION personalize._events_fire_campaigns() IS 'Trigger: writes campaign messages for new events and cancels pending ones (cancel_on), in the events'' transaction; NOTIFY personalize_outbox when a message is due now';
COMMENT ON FUNCTION personalize._invalidate_campaign_cache() IS 'Internal: makes every backend re-read the campaigns, frequency caps and channel policies at commit';
COMMENT ON FUNCTION personalize._template_problem(text) IS 'Internal: why a campaign template is refused, NULL when valid';
