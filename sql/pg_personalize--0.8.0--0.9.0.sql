-- pg_personalize 0.8.0 → 0.9.0: model memory shared by every connection; one definition of
-- quiet hours.
--   * Serving maps each model version's image from one file per server
--     ($PGDATA/pg_personalize), built from the model tables by the first backend that serves
--     the version, instead of copying the model into every backend. The files are derived
--     data, outside the database.
--   * personalize._after_quiet_hours is the Rust function the events trigger already used
--     (src/pg/quiet_hours.rs) instead of a second definition in SQL; same signature, result
--     and comment.
--   * Catalogue deletes mean gone: once personalize.items lists any item, serving leaves out
--     the items it does not list (Rust; the comments of recommend and rank_items say so).
--   * replay_rejected() and the quarantine's resolved_at / replayed_at; the status view
--     counts open rejections.
--   * Integer order, cart and list ids in the default plan; integer item ids in upsert_items.
--   * identify() and personalize.identities (an anonymous visitor logs in).
--   * forget_user() and its log, personalize.erasures (the right to be forgotten).
-- tests/upgrade.sh checks that an updated database has exactly the catalogue of a fresh 0.9.0
-- install and passes the regression suite.
\echo Use "ALTER EXTENSION pg_personalize UPDATE TO '0.9.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION personalize._after_quiet_hours(t timestamptz, quiet_start time, quiet_end time, tz text)
RETURNS timestamptz
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_after_quiet_hours_wrapper';

-- The quarantine: two columns, last, as in a fresh install, and replay_rejected().
ALTER TABLE personalize.rejected_events ADD COLUMN resolved_at timestamptz, ADD COLUMN replayed_at timestamptz;
COMMENT ON COLUMN personalize.rejected_events.resolved_at IS 'When replay_rejected() stored the event (or found it already stored); NULL while the event is open';
COMMENT ON COLUMN personalize.rejected_events.replayed_at IS 'When replay_rejected() last checked the event; reasons and violations are from that check';
CREATE FUNCTION personalize.replay_rejected(reason text DEFAULT NULL, event_type text DEFAULT NULL,
                                            since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL)
RETURNS TABLE (replayed bigint, stored bigint, duplicates bigint, still_rejected bigint)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'replay_rejected_wrapper';
COMMENT ON FUNCTION personalize.replay_rejected(text, text, timestamptz, timestamptz) IS 'Checks open quarantined events (all, or those with this reason, event type, received since / before) again against the current tracking plan, as of when each arrived: those that pass are stored once (campaigns fire as for track(); a client_event_id already stored makes a duplicate) and marked resolved; the rest keep their row with fresh reasons. Returns replayed, stored, duplicates, still_rejected. NULL events, text that was not JSON and oversize events are never replayed.';

CREATE OR REPLACE VIEW personalize.status AS
SELECT 'events'::text AS section, e.event_type AS name, pg_catalog.count(*) AS value
  FROM personalize.events e GROUP BY e.event_type
UNION ALL
SELECT 'rejections', r.reason, pg_catalog.count(*)
  FROM personalize.rejected_events j, pg_catalog.unnest(j.reasons) AS r(reason)
 WHERE j.resolved_at IS NULL GROUP BY r.reason
UNION ALL
SELECT 'totals', 'events', (SELECT pg_catalog.count(*) FROM personalize.events)
UNION ALL
SELECT 'totals', 'rejected events', (SELECT pg_catalog.count(*) FROM personalize.rejected_events j WHERE j.resolved_at IS NULL)
UNION ALL
SELECT 'totals', 'rejected events resolved by replay', (SELECT pg_catalog.count(*) FROM personalize.rejected_events j WHERE j.resolved_at IS NOT NULL)
UNION ALL
SELECT 'totals', 'items', (SELECT pg_catalog.count(*) FROM personalize.items)
UNION ALL
SELECT 'totals', 'available items',
       (SELECT pg_catalog.count(*) FROM personalize.items i WHERE i.available)
UNION ALL
SELECT 'totals', 'event types', (SELECT pg_catalog.count(*) FROM personalize.event_types)
UNION ALL
SELECT 'active models', m.name || ' #' || m.model_id || ': users', m.n_users
  FROM personalize.models m WHERE m.status = 'active'
UNION ALL
SELECT 'active models', m.name || ' #' || m.model_id || ': items', m.n_items
  FROM personalize.models m WHERE m.status = 'active'
UNION ALL
SELECT 'active models', m.name || ' #' || m.model_id || ': interactions', m.n_interactions
  FROM personalize.models m WHERE m.status = 'active'
UNION ALL
SELECT 'outbox', o.channel || ' ' || o.state, pg_catalog.count(*)
  FROM personalize.outbox o GROUP BY o.channel, o.state
UNION ALL
SELECT 'totals', 'segments', (SELECT pg_catalog.count(*) FROM personalize.segments)
UNION ALL
SELECT 'totals', 'enabled campaigns', (SELECT pg_catalog.count(*) FROM personalize.campaigns c WHERE c.enabled)
UNION ALL
SELECT 'totals', 'running experiments',
       (SELECT pg_catalog.count(*) FROM personalize.experiments x
         WHERE x.starts_at OPERATOR(pg_catalog.<=) pg_catalog.now()
           AND (x.ends_at IS NULL OR x.ends_at OPERATOR(pg_catalog.>) pg_catalog.now()));
COMMENT ON VIEW personalize.status IS 'Counts of events by type, open rejections by reason (open and resolved totals), catalogue size, the active models, the outbox, segments, campaigns and experiments';

-- The default plan's order, cart and list ids may be integers. Rows the shop changed
-- (origin 'shop') are the shop's and stay; the trigger that would mark these as the shop's
-- is off for these updates.
ALTER TABLE personalize.event_types DISABLE TRIGGER event_types_before_write;
UPDATE personalize.event_types t
   SET properties_schema = jsonb_set(t.properties_schema, '{properties,order_id}', '{"type": ["string", "integer"], "maxLength": 200}')
 WHERE t.origin = 'default' AND t.properties_schema -> 'properties' ? 'order_id';
UPDATE personalize.event_types t
   SET properties_schema = jsonb_set(t.properties_schema, '{properties,cart_id}', '{"type": ["string", "integer"], "maxLength": 200}')
 WHERE t.origin = 'default' AND t.properties_schema -> 'properties' ? 'cart_id';
UPDATE personalize.event_types t
   SET properties_schema = jsonb_set(t.properties_schema, '{properties,list_id}', '{"type": ["string", "integer"], "maxLength": 200}')
 WHERE t.origin = 'default' AND t.properties_schema -> 'properties' ? 'list_id';
ALTER TABLE personalize.event_types ENABLE TRIGGER event_types_before_write;

-- upsert_items() takes integer item ids.
CREATE OR REPLACE FUNCTION personalize.upsert_items(items jsonb) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    bad jsonb;
BEGIN
    IF items IS NULL OR jsonb_typeof(items) <> 'array' THEN
        RAISE EXCEPTION 'upsert_items expects a JSON array of item objects, got %',
                COALESCE(jsonb_typeof(items), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: [{"item_id": "85123A", "category": "decor", "price": 2.55}]';
    END IF;
    SELECT e INTO bad FROM jsonb_array_elements(items) e
     WHERE jsonb_typeof(e) <> 'object'
        -- A string or an integer (a shop's product ids are often integers): 7 is stored as '7'.
        OR NOT (jsonb_typeof(e -> 'item_id') = 'string'
                OR (jsonb_typeof(e -> 'item_id') = 'number' AND (e ->> 'item_id') ~ '^-?[0-9]{1,19}$'))
        OR EXISTS (SELECT 1 FROM jsonb_object_keys(e) k
                    WHERE k NOT IN ('item_id', 'category', 'title', 'attributes', 'available', 'price'))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'invalid item %', left(bad::text, 200)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Each item is an object with a string or integer item_id and optionally category, '
                      || 'title, attributes (object), available (boolean), price (number >= 0).';
    END IF;
    -- Keys an object leaves out keep their stored values; the last object for an id wins.
    INSERT INTO personalize.items AS i (item_id, category, title, attributes, available, price)
    SELECT r.item_id, r.category, r.title, COALESCE(r.attributes, '{}'), COALESCE(r.available, true), r.price
      FROM (SELECT DISTINCT ON (x.e ->> 'item_id') x.e
              FROM jsonb_array_elements(items) WITH ORDINALITY AS x(e, n)
             ORDER BY x.e ->> 'item_id', x.n DESC) AS latest
      LEFT JOIN personalize.items AS cur ON cur.item_id = latest.e ->> 'item_id',
           jsonb_populate_record(NULL::personalize.items,
               COALESCE(to_jsonb(cur), '{}') || latest.e) AS r
    ON CONFLICT ON CONSTRAINT items_pkey DO UPDATE
       SET category = EXCLUDED.category, title = EXCLUDED.title, attributes = EXCLUDED.attributes,
           available = EXCLUDED.available, price = EXCLUDED.price, updated_at = now();
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Serving leaves out items a non-empty catalogue does not list.
COMMENT ON FUNCTION personalize.recommend(text, integer, text, text, text[], text, boolean, boolean) IS 'Top k items for a user from the active model of a name, best first. exclude: purchased (default), interacted or none; exclude_items; category and available_only filter inside the top-k; once personalize.items lists any item, items it does not list are never served. Scores come from the model (source model: the stored ALS vector, or an item-item model''s weights times the user''s history up to as_of), from fold-in of events newer than the model or of a user the model does not know (fold_in), from fold-in that weighs in the user''s current session (source session: events within personalize.session_window of now, at personalize.session_weight, for a user with earlier history), or from popularity (no usable history, or a popularity or trending model). model_id says which model version answered.';
COMMENT ON FUNCTION personalize.rank_items(text, text[], text, boolean) IS 'Re-ranks candidate items (a category page) by the user''s affinity, in-session events included: known items best first (ties keep the given order), then unknown items in the given order with a NULL score; duplicates keep their first place; items a non-empty catalogue does not list are left out';

-- Anonymous visitors identified as customers by identify(): the last customer each anonymous
-- id was linked to.
CREATE TABLE personalize.identities (
    anonymous_id  text PRIMARY KEY,
    user_id       text NOT NULL,
    identified_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE personalize.identities IS 'identify(): each anonymous id and the customer its events were moved to';
SELECT pg_catalog.pg_extension_config_dump('personalize.identities', '');
CREATE INDEX identities_user_idx ON personalize.identities (user_id);

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
    -- Merges never lose events. A client_event_id is unique per user and event type: an
    -- anonymous event whose id the customer already used for that type moves without it.
    UPDATE personalize.events e SET client_event_id = NULL
     WHERE e.user_id = a AND e.client_event_id IS NOT NULL
       AND EXISTS (SELECT FROM personalize.events c
                    WHERE c.client_event_id = e.client_event_id AND c.user_id = u
                      AND c.event_type = e.event_type);
    UPDATE personalize.events e SET user_id = u WHERE e.user_id = a;
    GET DIAGNOSTICS moved = ROW_COUNT;
    -- One pending message per campaign and user: the visitor's is cancelled where the
    -- customer already has one, and follows the customer otherwise.
    UPDATE personalize.outbox o
       SET state = 'cancelled', finished_at = now(),
           last_error = 'identified as a customer with this campaign''s message already pending'
     WHERE o.user_id = a AND o.state = 'pending'
       AND EXISTS (SELECT FROM personalize.outbox p
                    WHERE p.campaign_id = o.campaign_id AND p.user_id = u AND p.state = 'pending');
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    UPDATE personalize.outbox o SET user_id = u WHERE o.user_id = a AND o.state = 'pending';
    GET DIAGNOSTICS followed = ROW_COUNT;
    INSERT INTO personalize.identities AS i (anonymous_id, user_id) VALUES (a, u)
    ON CONFLICT ON CONSTRAINT identities_pkey
    DO UPDATE SET user_id = EXCLUDED.user_id, identified_at = now();
    RETURN QUERY SELECT moved, followed, cancelled;
END
$$;
COMMENT ON FUNCTION personalize.identify(text, text) IS 'An anonymous visitor logged in: moves the anonymous id''s events to the user id (an event whose client_event_id the user already used for its type moves without it), moves its pending campaign messages (cancelling those whose campaign already has one pending for the user) and records the link in personalize.identities. Idempotent; events tracked under the anonymous id later need another call. Returns events_moved, messages_moved, messages_cancelled.';

-- Erasures done by forget_user(): when, by whom, how many rows of each table. No user id and
-- nothing else about the person: the log proves the erasure without keeping what was erased.
CREATE TABLE personalize.erasures (
    erasure_id   bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    erased_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    erased_by    name NOT NULL DEFAULT CURRENT_USER,
    rows_deleted jsonb NOT NULL
);
COMMENT ON TABLE personalize.erasures IS 'Erasure log of forget_user(): time, role and rows deleted per table; holds no user id';
SELECT pg_catalog.pg_extension_config_dump('personalize.erasures', '');
SELECT pg_catalog.pg_extension_config_dump('personalize.erasures_erasure_id_seq', '');

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
        OR r.payload ->> 'anonymous_id' = ANY (ids);
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

    DELETE FROM personalize.identities i WHERE i.user_id = u OR i.anonymous_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || jsonb_build_object('identities', n);

    INSERT INTO personalize.erasures (rows_deleted) VALUES (counts);
    RETURN QUERY SELECT c.key, c.value::bigint FROM jsonb_each_text(counts) c ORDER BY c.key;
END
$$;
COMMENT ON FUNCTION personalize.forget_user(text) IS 'Right to be forgotten: deletes the events, quarantined events, model rows of every model version, outbox and archived messages, experiment exposures and identity links of the user and of the anonymous ids identify() linked to them, in this transaction, and logs the erasure (time, role, rows per table; no user id) in personalize.erasures. The next recommend() treats the user as a stranger. Stop tracking the user first: events stored after it are new data.';

-- Every upgrade script ends with this.
SELECT personalize._apply_privileges();
