-- pg_personalize: what runs after everything else: the status view over every table, and the
-- privileges (last: every object exists). Each capability's own SQL is in its file beside
-- this one (see the extension_sql_file! list in src/lib.rs).

------------------------------------------------------------------------------------------
-- Status
------------------------------------------------------------------------------------------

CREATE VIEW personalize.status AS
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
SELECT 'totals', 'rejected events resolved', (SELECT pg_catalog.count(*) FROM personalize.rejected_events j WHERE j.resolved_at IS NOT NULL)
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

------------------------------------------------------------------------------------------
-- Privileges (last: every object above exists). See src/api/privileges.rs.
------------------------------------------------------------------------------------------
COMMENT ON FUNCTION personalize._apply_privileges() IS 'Internal: creates the roles personalize_recommender, personalize_reader, personalize_writer, personalize_worker, personalize_admin and personalize_definer when missing, revokes EXECUTE from PUBLIC, makes the recommender, reader, writer and worker functions SECURITY DEFINER, owned by personalize_definer (DML on the extension''s tables, nothing else), and grants them; run by the install and every upgrade script';
SELECT personalize._apply_privileges();
