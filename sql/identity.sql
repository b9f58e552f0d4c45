------------------------------------------------------------------------------------------
-- Identity: an anonymous visitor logs in
------------------------------------------------------------------------------------------

-- Segment's identify / alias, done once at login: the visitor's events become the customer's
-- (so their session counts for the customer's recommendations, segments and campaigns from
-- the next call), and a pending campaign message follows them.
CREATE FUNCTION personalize.identify(anonymous_id text, user_id text)
RETURNS TABLE (events_moved bigint, messages_moved bigint, messages_cancelled bigint)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a CONSTANT text := identify.anonymous_id;
    u CONSTANT text := identify.user_id;
    moved bigint;
    followed bigint;
    cancelled bigint;
BEGIN
    IF a IS NULL OR a = '' OR u IS NULL OR u = '' THEN
        RAISE EXCEPTION 'identify needs an anonymous id and a user id, got % and %',
                COALESCE(quote_literal(left(a, 100)), 'NULL'), COALESCE(quote_literal(left(u, 100)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Call it at login: identify(''anon-7f3a'', ''U0000042'').';
    END IF;
    IF a = u THEN
        RAISE EXCEPTION 'identify: the anonymous id and the user id are the same (%)', quote_literal(left(a, 100))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the id the visitor''s events were tracked with and the customer''s id.';
    END IF;
    -- A client_event_id is unique per user and event type. An anonymous event the customer
    -- already has under the same id, item and properties is the same event sent again (an
    -- app's retry after login): it is dropped, not counted twice. One with other content under
    -- a used id is a different event: it moves without the id, so nothing is lost. A track()
    -- of the user committing between these statements can still take an id first: then the
    -- merge is tried again (the statements only ever see committed events).
    FOR attempt IN 1..3 LOOP
        BEGIN
            DELETE FROM personalize.events e
             WHERE e.user_id = a AND e.client_event_id IS NOT NULL
               AND EXISTS (SELECT FROM personalize.events c
                            WHERE c.client_event_id = e.client_event_id AND c.user_id = u
                              AND c.event_type = e.event_type
                              AND c.item_id IS NOT DISTINCT FROM e.item_id AND c.properties = e.properties);
            UPDATE personalize.events e SET client_event_id = NULL
             WHERE e.user_id = a AND e.client_event_id IS NOT NULL
               AND EXISTS (SELECT FROM personalize.events c
                            WHERE c.client_event_id = e.client_event_id AND c.user_id = u
                              AND c.event_type = e.event_type);
            UPDATE personalize.events e SET user_id = u WHERE e.user_id = a;
            GET DIAGNOSTICS moved = ROW_COUNT;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            IF attempt = 3 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    -- One pending message per campaign and user: the visitor's is cancelled where the
    -- customer already has one, and follows the customer otherwise. The customer's own
    -- message can be written meanwhile: then both steps are tried again.
    FOR attempt IN 1..3 LOOP
        BEGIN
            UPDATE personalize.outbox o
               SET state = 'cancelled', finished_at = now(),
                   last_error = 'identified as a customer with this campaign''s message already pending'
             WHERE o.user_id = a AND o.state = 'pending'
               AND EXISTS (SELECT FROM personalize.outbox p
                            WHERE p.campaign_id = o.campaign_id AND p.user_id = u AND p.state = 'pending');
            GET DIAGNOSTICS cancelled = ROW_COUNT;
            UPDATE personalize.outbox o SET user_id = u WHERE o.user_id = a AND o.state = 'pending';
            GET DIAGNOSTICS followed = ROW_COUNT;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            IF attempt = 3 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
    INSERT INTO personalize.identities AS i (anonymous_id, user_id) VALUES (a, u)
    ON CONFLICT ON CONSTRAINT identities_pkey
    DO UPDATE SET user_id = EXCLUDED.user_id, identified_at = now();
    RETURN QUERY SELECT moved, followed, cancelled;
END
$$;
COMMENT ON FUNCTION personalize.identify(text, text) IS 'An anonymous visitor logged in: moves the anonymous id''s events to the user id (an event the user already has under the same client_event_id, item and properties is dropped as a repeat; one with other content under a used id moves without the id), moves its pending campaign messages (cancelling those whose campaign already has one pending for the user) and records the link in personalize.identities. Idempotent; events tracked under the anonymous id later need another call. Returns events_moved, messages_moved, messages_cancelled.';
