------------------------------------------------------------------------------------------
-- Consent: who may be contacted, on which channel
------------------------------------------------------------------------------------------

-- One consent record, replacing the previous one for the same user, channel and campaign
-- (unless that one is a suppression and keep_suppression is set).
CREATE FUNCTION personalize._record_consent(user_id text, channel text, campaign text, status text,
                                            source text, keep_suppression boolean)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO personalize.consents AS k (user_id, channel, campaign, status, source, updated_at)
    VALUES (_record_consent.user_id, _record_consent.channel, COALESCE(_record_consent.campaign, ''),
            _record_consent.status, left(_record_consent.source, 200), now())
    ON CONFLICT ON CONSTRAINT consents_pkey
    DO UPDATE SET status = EXCLUDED.status, source = EXCLUDED.source, updated_at = EXCLUDED.updated_at
     WHERE NOT (_record_consent.keep_suppression AND k.status = 'suppressed')
$$;
COMMENT ON FUNCTION personalize._record_consent(text, text, text, text, text, boolean) IS 'Internal: writes one consent record (set_consent, suppress, unsubscribe)';

-- The app records a sign-up or an opt-out; the campaign trigger and claim_messages() check
-- every message against it.
CREATE FUNCTION personalize.set_consent(user_id text, channel text, subscribed boolean,
                                        source text DEFAULT 'api', campaign text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF set_consent.user_id IS NULL OR set_consent.user_id = '' OR set_consent.channel IS NULL
       OR set_consent.subscribed IS NULL THEN
        RAISE EXCEPTION 'set_consent needs a user id, a channel and subscribed true or false'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: set_consent(''U0000042'', ''whatsapp'', true, source => ''checkout opt-in'').';
    END IF;
    IF set_consent.channel NOT IN ('email', 'push', 'sms', 'whatsapp', 'webhook') THEN
        RAISE EXCEPTION 'unknown channel %', quote_literal(left(set_consent.channel, 100))
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Channels: email, push, sms, whatsapp, webhook.';
    END IF;
    -- An explicit choice of the user replaces whatever was recorded, a suppression included
    -- (a new opt-in after a bounce is a new address).
    PERFORM personalize._record_consent(set_consent.user_id, set_consent.channel, set_consent.campaign,
        CASE WHEN set_consent.subscribed THEN 'subscribed' ELSE 'unsubscribed' END,
        COALESCE(set_consent.source, 'api'), false);
END
$$;
COMMENT ON FUNCTION personalize.set_consent(text, text, boolean, text, text) IS 'Records that a user subscribed to (true) or unsubscribed from (false) a channel, or one campaign of it, with its source (a form, a link); replaces the previous record, a suppression included';

-- Fed by the worker: a hard bounce, a spam complaint, an invalid number.
CREATE FUNCTION personalize.suppress(user_id text, channel text, reason text)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF suppress.user_id IS NULL OR suppress.user_id = '' OR suppress.channel IS NULL
       OR suppress.channel NOT IN ('email', 'push', 'sms', 'whatsapp', 'webhook') THEN
        RAISE EXCEPTION 'suppress needs a user id and one of the channels email, push, sms, whatsapp, webhook'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: suppress(''U0000042'', ''email'', ''hard bounce: 550 no such user'').';
    END IF;
    PERFORM personalize._record_consent(suppress.user_id, suppress.channel, NULL, 'suppressed',
        'suppressed: ' || COALESCE(suppress.reason, 'no reason given'), false);
END
$$;
COMMENT ON FUNCTION personalize.suppress(text, text, text) IS 'Suppresses a user on a channel (a hard bounce, a spam complaint): no message on it goes out until the user subscribes again';

-- The unsubscribe link: the shop's web endpoint (or the worker's) passes the token on.
CREATE FUNCTION personalize.unsubscribe(token text)
RETURNS TABLE (user_id text, channel text, campaign text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM personalize._unsubscribe_recipient(unsubscribe.token);
    -- A link does not lift a suppression: the address still bounces.
    PERFORM personalize._record_consent(r.user_id, r.channel, r.campaign, 'unsubscribed', 'unsubscribe link', true);
    RETURN QUERY SELECT r.user_id, r.channel, r.campaign;
END
$$;
COMMENT ON FUNCTION personalize.unsubscribe(text) IS 'Applies an unsubscribe link''s token (unsubscribe_token()): the user it names is unsubscribed from its channel, or its campaign only. A token that was altered, forged or signed with another key is refused (22023); using one twice changes nothing more';

-- Recipients: the shop's addresses stay in the shop's tables. A policy names the table or
-- view and its address column; this checks them when the policy is written.
CREATE FUNCTION personalize._channel_policies_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing text[];
BEGIN
    IF NEW.recipients IS NOT NULL THEN
        missing := personalize._missing_columns(NEW.recipients, ARRAY['user_id', NEW.address_column]);
        IF cardinality(missing) > 0 THEN
            RAISE EXCEPTION 'recipients % has no column %', NEW.recipients, array_to_string(missing, ', ')
                USING ERRCODE = 'undefined_column',
                      HINT = 'Name a table or view with a user_id column and the address column, e.g. '
                          || 'CREATE VIEW shop.whatsapp_recipients AS SELECT customer_id AS user_id, phone FROM shop.customers;';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION personalize._channel_policies_before_write() IS 'Trigger: checks that a channel''s recipients table has user_id and the address column';
CREATE TRIGGER channel_policies_before_write
    BEFORE INSERT OR UPDATE ON personalize.channel_policies
    FOR EACH ROW EXECUTE FUNCTION personalize._channel_policies_before_write();
-- The backends cache the opt-in policies with the campaigns.
CREATE TRIGGER channel_policies_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON personalize.channel_policies
    FOR EACH STATEMENT EXECUTE FUNCTION personalize._campaigns_changed();

-- Which of these users have an address on the channel (all of them when the channel names no
-- recipients). Read as the caller: claim_messages() and recipient_address() run as
-- personalize_definer, which the DBA grants SELECT on the recipients table or view.
CREATE FUNCTION personalize._users_with_address(channel text, users text[]) RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p personalize.channel_policies;
    found text[];
BEGIN
    SELECT * INTO p FROM personalize.channel_policies c WHERE c.channel = _users_with_address.channel;
    IF p.recipients IS NULL THEN
        RETURN users;
    END IF;
    EXECUTE format('SELECT COALESCE(pg_catalog.array_agg(DISTINCT CAST(r.user_id AS pg_catalog.text)), ''{}'') FROM %s r '
                   'WHERE CAST(r.user_id AS pg_catalog.text) OPERATOR(pg_catalog.=) ANY ($1) '
                   'AND r.%I IS NOT NULL AND CAST(r.%I AS pg_catalog.text) OPERATOR(pg_catalog.<>) ''''',
                   p.recipients, p.address_column, p.address_column)
        INTO found USING users;
    RETURN found;
END
$$;
COMMENT ON FUNCTION personalize._users_with_address(text, text[]) IS 'Internal: the users among these with an address in the channel''s recipients (all of them when it names none)';

-- The worker's lookup for a claimed batch: one read of the recipients for all its users
-- (recipient_address() below is this for one). A user with no row has no row here; several
-- rows of one user: any one of them.
CREATE FUNCTION personalize.recipient_addresses(channel text, user_ids text[])
RETURNS TABLE (user_id text, address text)
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p personalize.channel_policies;
BEGIN
    -- An empty claim reads nothing (and raises nothing), as a claim of no message did before.
    IF COALESCE(cardinality(recipient_addresses.user_ids), 0) = 0 THEN
        RETURN;
    END IF;
    SELECT * INTO p FROM personalize.channel_policies c WHERE c.channel = recipient_addresses.channel;
    IF p.recipients IS NULL THEN
        RAISE EXCEPTION 'channel % names no recipients', quote_literal(left(recipient_addresses.channel, 100))
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'UPDATE personalize.channel_policies SET recipients = ''shop.whatsapp_recipients'', address_column = ''phone'' WHERE channel = ''whatsapp''; '
                      || 'and GRANT SELECT ON shop.whatsapp_recipients TO personalize_definer.';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT DISTINCT ON (1) CAST(r.user_id AS pg_catalog.text), CAST(r.%I AS pg_catalog.text) FROM %s r '
        'WHERE CAST(r.user_id AS pg_catalog.text) OPERATOR(pg_catalog.=) ANY ($1)',
        p.address_column, p.recipients)
        USING recipient_addresses.user_ids;
END
$$;
COMMENT ON FUNCTION personalize.recipient_addresses(text, text[]) IS 'recipient_address() for many users at once, in one read of the channel''s recipients: each user found with their address (NULL when the row has none); users not found are left out';

-- The worker's lookup when it sends (the address is never stored in the outbox): the batch
-- lookup for one user.
CREATE FUNCTION personalize.recipient_address(user_id text, channel text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT a.address
              FROM personalize.recipient_addresses(recipient_address.channel, ARRAY[recipient_address.user_id]) a)
$$;
COMMENT ON FUNCTION personalize.recipient_address(text, text) IS 'The user''s address on a channel, read from the channel''s recipients table or view when the worker sends (never stored in the outbox); NULL when the user has none';

-- The Rust functions' comments (their code: see CONTRIBUTING.md's function table).
COMMENT ON FUNCTION personalize.unsubscribe_token(text, text, text) IS 'The token of an unsubscribe link for a user on a channel (campaign: that campaign only), signed with personalize.unsubscribe_secret (HMAC-SHA-256): unsubscribe() accepts it for this user and nobody else';
COMMENT ON FUNCTION personalize._unsubscribe_recipient(text) IS 'Internal: who an unsubscribe token names, after checking its signature (22023 when it does not match)';
