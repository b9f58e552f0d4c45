-- Security: pinned search_path everywhere, SECURITY DEFINER only where a role needs it,
-- nothing for PUBLIC, least-privilege roles checked by acting as each of them, hostile values.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/setup.psql
GRANT EXECUTE ON FUNCTION pg_temp.err(text) TO PUBLIC;

-- Every function pins search_path, except _event_value and _after_quiet_hours: inlinable SQL
-- functions whose bodies qualify every function, type and operator (OPERATOR(pg_catalog.=) …).
SELECT p.oid::regprocedure AS unpinned
  FROM pg_proc p
 WHERE p.pronamespace = 'personalize'::regnamespace
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
 ORDER BY p.proname;
SELECT prosrc ~ 'OPERATOR\(pg_catalog\.' AND prosrc !~ '[^.]jsonb_typeof' AS event_value_qualified
  FROM pg_proc WHERE oid = 'personalize._event_value(jsonb, numeric)'::regprocedure;
SELECT prosrc !~ '[^.](timezone|time|date)\M'
       AND regexp_replace(prosrc, 'OPERATOR\(pg_catalog\.[<>=+]+\)', '', 'g') !~ '[<>=+]' AS quiet_hours_qualified
  FROM pg_proc WHERE oid = 'personalize._after_quiet_hours(timestamptz, time, time, text)'::regprocedure;

-- SECURITY DEFINER: exactly the reader, writer and worker functions.
SELECT p.proname, string_agg(DISTINCT r.rolname, ',') AS granted_to
  FROM pg_proc p
  LEFT JOIN LATERAL aclexplode(p.proacl) a ON a.privilege_type = 'EXECUTE'
  LEFT JOIN pg_roles r ON r.oid = a.grantee AND r.rolname <> 'personalize_admin'
                                                AND NOT r.rolsuper AND r.oid <> p.proowner
 WHERE p.pronamespace = 'personalize'::regnamespace AND p.prosecdef
 GROUP BY p.proname ORDER BY 2, 1;

-- They run as personalize_definer, never as the superuser who installed the extension: a
-- role that cannot log in, create anything or bypass row security, with DML on the
-- extension's tables only.
SELECT r.rolname AS owner, count(*) AS functions, r.rolsuper, r.rolcanlogin, r.rolcreaterole,
       r.rolcreatedb, r.rolbypassrls, r.rolinherit
  FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
 WHERE p.pronamespace = 'personalize'::regnamespace AND p.prosecdef
 GROUP BY 1, 3, 4, 5, 6, 7, 8;
SELECT count(*) AS definer_tables_outside_the_extension
  FROM pg_class c
 WHERE c.relnamespace <> 'personalize'::regnamespace AND c.relkind IN ('r', 'v', 'p')
   AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
   AND has_table_privilege('personalize_definer', c.oid, 'INSERT, UPDATE, DELETE');
SELECT has_table_privilege('personalize_definer', 'personalize.events', 'TRUNCATE') AS definer_truncates;

-- PUBLIC may execute nothing; the three app roles may touch no table; the admin may use every
-- function and table.
SELECT count(*) AS public_executable FROM pg_proc
 WHERE pronamespace = 'personalize'::regnamespace AND has_function_privilege('public', oid, 'EXECUTE');
SELECT r.rolname, count(c.oid) FILTER (WHERE has_table_privilege(r.rolname, c.oid,
                      'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')) AS tables_usable,
       count(c.oid) AS tables
  FROM pg_roles r CROSS JOIN pg_class c
 WHERE r.rolname LIKE 'personalize\_%' AND c.relnamespace = 'personalize'::regnamespace
   AND c.relkind IN ('r', 'v', 'p')
 GROUP BY r.rolname ORDER BY 1;
SELECT count(*) FILTER (WHERE NOT has_function_privilege('personalize_admin', oid, 'EXECUTE'))
       AS admin_cannot_execute
  FROM pg_proc WHERE pronamespace = 'personalize'::regnamespace;

-- A small shop, a model, a segment, a campaign and an experiment, set up by the superuser.
SELECT items, accepted FROM personalize.generate_shop(3000, users => 200, items => 60);
SELECT users > 0 AS trained FROM personalize.train(factors => 4, iterations => 2);
INSERT INTO personalize.segments (name, definition)
VALUES ('viewers', '{"viewed": {"within": "100 years"}}');
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, delay, template,
                                   max_event_age)
VALUES ('any_view', 'view', 'email', '0', '{"to": "{{user_id}}"}', '100 years');
INSERT INTO personalize.experiments (name, variants, starts_at)
VALUES ('grid', '[{"name": "control", "weight": 1}, {"name": "als", "weight": 1}]',
        now() - interval '1 day');

-- One login role per kind of caller, and one with no grant at all.
DROP ROLE IF EXISTS regress_pp_recommender, regress_pp_reader, regress_pp_writer, regress_pp_worker,
                    regress_pp_admin, regress_pp_nobody;
CREATE ROLE regress_pp_recommender IN ROLE personalize_recommender;
CREATE ROLE regress_pp_reader IN ROLE personalize_reader;
CREATE ROLE regress_pp_writer IN ROLE personalize_writer;
CREATE ROLE regress_pp_worker IN ROLE personalize_worker;
CREATE ROLE regress_pp_admin IN ROLE personalize_admin;
CREATE ROLE regress_pp_nobody;
CREATE TABLE pg_temp.secret (type text, user_id text, item_id text);
INSERT INTO pg_temp.secret VALUES ('view', 'secret_user', 'i1');

-- The reader serves, checks segments and logs exposures; it cannot track, claim, train or read
-- a table.
SET ROLE regress_pp_reader;
SELECT count(*) AS recommended FROM personalize.recommend('U0000001', 5);
SELECT count(*) AS similar FROM personalize.similar_items((SELECT item_id FROM personalize.recommend('U0000001', 1)));
SELECT personalize.in_segment('U0000001', 'viewers') AS in_segment,
       personalize.log_exposure('grid', 'U0000001') IN ('control', 'als') AS exposed;
SELECT pg_temp.err($$SELECT personalize.track('{"type": "view", "user_id": "u1"}')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.claim_messages('email')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train()$$);
SELECT pg_temp.err($$SELECT count(*) FROM personalize.events$$);
SELECT pg_temp.err($$SELECT count(*) FROM personalize.model_users$$);
SELECT pg_temp.err($$INSERT INTO personalize.exposures (experiment, user_id, variant) VALUES ('grid', 'x', 'als')$$);
-- Limits are superuser settings: a caller cannot lift them for its session.
SELECT pg_temp.err($$SET personalize.max_k = 100000000$$);
RESET ROLE;

-- The recommender serves recommendations and variants; it cannot read what one user did
-- (explanations, purchases, segments, last seen).
SET ROLE regress_pp_recommender;
SELECT count(*) AS recommended FROM personalize.recommend('U0000001', 5);
SELECT personalize.assign_variant('grid', 'U0000001') IN ('control', 'als') AS assigned;
SELECT pg_temp.err($$SELECT * FROM personalize.explain_recommendation('U0000001', 'P0000001')$$);
SELECT pg_temp.err($$SELECT personalize.bought('U0000001')$$);
SELECT pg_temp.err($$SELECT personalize.user_segments('U0000001')$$);
SELECT pg_temp.err($$SELECT personalize.last_seen('U0000001')$$);
RESET ROLE;

-- The writer tracks (the campaign trigger still writes its message); it cannot read or write a
-- table directly, serve or claim.
SET ROLE regress_pp_writer;
SELECT personalize.track('{"type": "view", "user_id": "writer_u", "item_id": "i1"}') > 0 AS tracked;
SELECT accepted, rejected FROM personalize.track_batch(ARRAY[
  '{"type": "view", "user_id": "writer_u", "item_id": "i2"}',
  '{"type": "nonsense", "user_id": "writer_u"}']::jsonb[]);
SELECT pg_temp.err($$INSERT INTO personalize.events (event_type, user_id, occurred_at) VALUES ('view', 'forged', now())$$);
SELECT pg_temp.err($$INSERT INTO personalize.outbox (campaign, channel, user_id) VALUES ('any_view', 'email', 'forged')$$);
SELECT pg_temp.err($$SELECT count(*) FROM personalize.rejected_events$$);
SELECT pg_temp.err($$SELECT * FROM personalize.recommend('U0000001')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.claim_messages('email')$$);
SELECT pg_temp.err($$UPDATE personalize.event_types SET weight = 100$$);
RESET ROLE;
SELECT count(*) AS writer_messages FROM personalize.outbox WHERE user_id = 'writer_u';

-- The worker claims and acknowledges; it cannot rewrite the outbox or read events.
SET ROLE regress_pp_worker;
WITH c AS (SELECT * FROM personalize.claim_messages('email', 10000))
SELECT count(*) > 0 AS claimed, bool_and(personalize.ack(message_id, lease_token)) AS acked FROM c;
SELECT pg_temp.err($$UPDATE personalize.outbox SET state = 'pending'$$);
SELECT pg_temp.err($$SELECT count(*) FROM personalize.outbox$$);
SELECT pg_temp.err($$SELECT count(*) FROM personalize.events$$);
SELECT pg_temp.err($$SELECT personalize.track('{"type": "view", "user_id": "u1"}')$$);
RESET ROLE;

-- The admin trains, edits definitions and imports, with its own rights: a table it may not
-- read cannot be imported through the extension.
SET ROLE regress_pp_admin;
SELECT users > 0 AS admin_trained FROM personalize.train(factors => 4, iterations => 1);
UPDATE personalize.segments SET description = 'admin edited' WHERE name = 'viewers';
SELECT pg_temp.err($$SELECT * FROM personalize.import_events('pg_temp.secret')$$);
SELECT count(*) AS admin_reads_events FROM personalize.events WHERE user_id = 'writer_u';
RESET ROLE;

-- A role with no grant can do nothing at all.
SET ROLE regress_pp_nobody;
SELECT pg_temp.err($$SELECT * FROM personalize.recommend('U0000001')$$);
SELECT pg_temp.err($$SELECT personalize.track('{"type": "view", "user_id": "u1"}')$$);
SELECT pg_temp.err($$SELECT personalize.assign_variant('grid', 'U0000001')$$);
RESET ROLE;

-- Hostile values are data, never SQL: in events, segment values, campaign templates and
-- experiment and segment names.
SELECT personalize.track(jsonb_build_object('type', 'view', 'user_id', $$u'); DROP TABLE personalize.events; --$$,
                                           'item_id', $$i1" OR 1=1 --$$,
                                           'properties', jsonb_build_object('category', $$'||pg_sleep(10)||'$$))) > 0 AS hostile_tracked;
SELECT count(*) AS hostile_user_stored FROM personalize.events WHERE user_id = $$u'); DROP TABLE personalize.events; --$$;
SELECT pg_temp.err($i$INSERT INTO personalize.segments (name, definition) VALUES ($$x'; DROP TABLE personalize.items; --$$, '{"viewed": {}}')$i$);
SELECT pg_temp.err($i$SELECT personalize.in_segment('U0000001', $$x'); DROP TABLE personalize.items; --$$)$i$);
INSERT INTO personalize.segments (name, definition) VALUES ('hostile_values',
  jsonb_build_object('viewed', jsonb_build_object('category', $$'||pg_sleep(10)||'$$)));
SELECT personalize.in_segment($$u'); DROP TABLE personalize.events; --$$, 'hostile_values') AS hostile_in_segment;
SELECT count(*) AS hostile_members FROM personalize.segment_members('hostile_values');
SELECT pg_temp.err($$INSERT INTO personalize.campaigns (name, trigger_event_type, channel, template) VALUES ('t', 'view', 'email', '{"x": "{{user_id}}''); DROP TABLE personalize.items; --"}')$$);
SELECT template->>'x' AS stored_literally FROM personalize.campaigns WHERE name = 't';
SELECT pg_temp.err($$INSERT INTO personalize.experiments (name, variants) VALUES ('e', '[{"name": "a''; DROP TABLE x; --", "weight": 1}, {"name": "b", "weight": 1}]')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.recommend('U0000001', k => 1000000000)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.recommend('U0000001', k => -1)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.rank_items('U0000001', array_fill('i1'::text, ARRAY[20000]))$$);
SELECT pg_temp.err($$SELECT * FROM personalize.claim_messages('email', 1000000)$$);
-- Found by sqlsmith and by hand: each was an internal error or a silently broken model.
SELECT pg_temp.err($$SELECT * FROM personalize.import_events(NULL)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.synthetic_events(2, start => '270000-01-01')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.generate_shop(20, start => '294276-12-31 23:59:59+00')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train('diverged', factors => 4, iterations => 2, alpha => 3e38)$$);
SELECT count(*) AS diverged_models FROM personalize.models WHERE name = 'diverged';
SELECT pg_temp.err($$SELECT * FROM personalize.train(factors => -1)$$);
SELECT count(*) AS tables_still_there FROM pg_tables
 WHERE schemaname = 'personalize' AND tablename IN ('events', 'items');

-- Writes in a read-only transaction (and so on a hot standby) fail with 25006, which a client
-- or pooler can route to the primary on, never with an internal error.
BEGIN READ ONLY;
SELECT pg_temp.err($$SELECT personalize.track('{"type": "view", "user_id": "ro", "item_id": "i1"}')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.track_batch(ARRAY['{"type": "view", "user_id": "ro", "item_id": "i1"}']::jsonb[])$$);
SELECT pg_temp.err($$SELECT personalize.log_exposure('grid', 'ro')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.train()$$);
SELECT pg_temp.err($$SELECT * FROM personalize.evaluate()$$);
SELECT pg_temp.err($$SELECT * FROM personalize.claim_messages('email')$$);
SELECT pg_temp.err($$SELECT * FROM personalize.generate_shop(10)$$);
SELECT pg_temp.err($$SELECT * FROM personalize.import_events('pg_temp.secret')$$);
SELECT count(*) AS reads_still_work FROM personalize.recommend('U0000001', 3);
ROLLBACK;

DROP ROLE regress_pp_recommender, regress_pp_reader, regress_pp_writer, regress_pp_worker, regress_pp_admin,
          regress_pp_nobody;

-- Error messages quote input cut to a readable length (a megabyte-long name is not echoed).
SELECT length(pg_temp.err(format($$SELECT personalize.assign_variant(%L, 'u1')$$, repeat('x', 1000000)))) < 400 AS echo_cut;
SELECT pg_temp.err(format($$SELECT personalize.assign_variant(%L, 'u1')$$, repeat('x', 1000000))) ~ '\.\.\. \(1000000 characters\)' AS says_how_long;
