------------------------------------------------------------------------------------------
-- Privacy: the right to be forgotten
------------------------------------------------------------------------------------------

-- Every table that holds a user id, in one place: tests/pg_regress/sql/privacy.sql checks
-- that no table of the extension with a user column, or whose rows mention an erased user
-- after a whole personalization loop ran, is missing from this function.
CREATE FUNCTION personalize.forget_user(user_id text)
RETURNS TABLE (table_name text, rows_deleted bigint)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    u CONSTANT text := forget_user.user_id;
    -- The user and every anonymous id identify() linked to them.
    ids text[];
    counts jsonb := '{}';
    n bigint;
BEGIN
    IF u IS NULL OR u = '' THEN
        RAISE EXCEPTION 'forget_user needs a user id, got %', COALESCE(quote_literal(u), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the id the user''s events were tracked with, e.g. forget_user(''U0000042'').';
    END IF;
    -- Events committed for the user after this runs are new data: callers stop tracking the
    -- user first (the README's erasure section says so).
    ids := ARRAY[u] || ARRAY(SELECT i.anonymous_id FROM personalize.identities i WHERE i.user_id = u);
    DELETE FROM personalize.events e WHERE e.user_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('events', n);

    -- The quarantine: by the envelope's user id, also when it was sent as a number or the
    -- rejection could not read it (then only the payload has it).
    DELETE FROM personalize.rejected_events r
     WHERE r.user_id = ANY (ids)
        OR r.payload ->> 'user_id' = ANY (ids)
        OR r.payload ->> 'anonymous_id' = ANY (ids)
        -- Text that was not JSON (kept as a JSON string) and an oversize event's first
        -- kilobyte: those whose user_id or anonymous_id field is the id.
        OR EXISTS (SELECT FROM unnest(ids) i
                    WHERE (CASE WHEN jsonb_typeof(r.payload) = 'string' THEN r.payload #>> '{}'
                                ELSE r.payload ->> 'prefix' END)
                          ~ ('"(user_id|anonymous_id)"\s*:\s*"?'
                             || regexp_replace(i, '([.^$*+?()\[\]{}|\\])', '\\\1', 'g')
                             || '"?\s*[,}]'));
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('rejected_events', n);

    -- Every model version's row of the user (factors and purchases): the next recommend()
    -- treats them as a stranger. Item rows are aggregates over all users and stay.
    DELETE FROM personalize.model_users m
     WHERE m.model_id IN (SELECT model_id FROM personalize.models) AND m.user_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('model_users', n);

    DELETE FROM personalize.outbox o WHERE o.user_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('outbox', n);

    DELETE FROM personalize.outbox_archive a WHERE a.user_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('outbox_archive', n);

    DELETE FROM personalize.exposures x WHERE x.user_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('exposures', n);

    DELETE FROM personalize.consents k WHERE k.user_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('consents', n);

    DELETE FROM personalize.identities i WHERE i.user_id = u OR i.anonymous_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('identities', n);

    INSERT INTO personalize.erasures (rows_deleted) VALUES (counts);
    RETURN QUERY SELECT c.key, c.value::bigint FROM jsonb_each_text(counts) c ORDER BY c.key;
END
$$;
COMMENT ON FUNCTION personalize.forget_user(text) IS 'Right to be forgotten: deletes the events, quarantined events, model rows of every model version, outbox and archived messages, experiment exposures, consent records and identity links of the user and of the anonymous ids identify() linked to them, in this transaction, and logs the erasure (time, role, rows per table; no user id) in personalize.erasures. The next recommend() treats the user as a stranger. Stop tracking the user first: events stored after it are new data.';
