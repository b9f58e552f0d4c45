-- pg_personalize 0.5.0 → 0.6.0: a campaign's segment is checked when its message is due
-- (claim_messages), not when the event fires it; the events trigger probes and writes the
-- outbox without statements (the library's change). Only comments change in the catalogue.
-- tests/upgrade.sh checks that an updated database has exactly the catalogue of a fresh 0.6.0
-- install and passes the regression suite.
\echo Use "ALTER EXTENSION pg_personalize UPDATE TO '0.6.0'" to load this file. \quit

COMMENT ON FUNCTION personalize._segment_members_among(text, text[]) IS 'Internal: the members of a named segment among the given users (one set query, as claim_messages() checks a campaign''s segment)';
COMMENT ON TABLE personalize.campaigns IS 'Trigger-fired campaigns: an event (type, optional category and property filter) schedules a message after delay unless a cancel_on event comes first; with a segment, it goes out only if the user is in it when due; channel, payload template, recommendations, frequency cap and quiet hours';
COMMENT ON FUNCTION personalize.claim_messages(text, integer, interval) IS 'Claims up to batch due messages of a channel (FOR UPDATE SKIP LOCKED) for visibility: re-checks cancel-on events, checks the campaign''s segment, re-checks attempts, quiet hours and frequency caps, renders payloads with fresh recommendations; returns them with one lease token for ack()/fail()';
COMMENT ON FUNCTION personalize._invalidate_segment_cache() IS 'Internal: makes every backend drop the segments it prepared for claim_messages() at commit';

SELECT personalize._apply_privileges();
