#!/usr/bin/env bash
# pg_dump keeps the shop's data: events, rejections, catalogue, the shop's own plan rows,
# segments and campaigns, experiments and their exposures (restored in foreign-key order).
# Part 2: a live shop (same-day events, messages pending, claimed, sent and dead) restored from
# -Fc, plain and --single-transaction dumps writes no message and keeps every message's state
# and idempotency key; a COPY of historical events fires no campaign either.
source "$(dirname "$0")/../scripts/lib.sh"
start_cluster
fresh_db pp_dump_src
fresh_db pp_dump_dst
psql -X -q -d pp_dump_src -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION pg_personalize;
SELECT * FROM personalize.generate_shop(3000, users => 100, items => 50, seed => 11) \g /dev/null
SELECT personalize.track('{"type":"nope","user_id":"u"}') \g /dev/null
UPDATE personalize.event_types SET weight = 2 WHERE event_type = 'view';
INSERT INTO personalize.event_types (event_type, requires_item, weight) VALUES ('wishlist', true, 3);
INSERT INTO personalize.segments (name, definition) VALUES ('buyers', '{"bought": {}}');
INSERT INTO personalize.campaigns (name, trigger_event_type, segment, channel) VALUES ('c', 'view', 'buyers', 'email');
INSERT INTO personalize.experiments (name, variants, salt)
VALUES ('layout', '[{"name": "grid", "weight": 1}, {"name": "carousel", "weight": 1}]', 'dump');
SELECT personalize.log_exposure('layout', 'u' || g) FROM generate_series(1, 50) g \g /dev/null
SQL
fingerprint() {
    psql -X -At -d "$1" -v ON_ERROR_STOP=1 -c "
      SELECT (SELECT md5(string_agg(e::text, '|' ORDER BY event_id)) FROM personalize.events e)
          || ' ' || (SELECT count(*) FROM personalize.rejected_events)
          || ' ' || (SELECT md5(string_agg(i::text, '|' ORDER BY item_id)) FROM (SELECT item_id, category, title, price, available FROM personalize.items) i)
          || ' ' || (SELECT string_agg(event_type || ':' || weight || ':' || origin, ',' ORDER BY event_type) FROM personalize.event_types)
          || ' ' || (SELECT string_agg(name || ':' || segment, ',') FROM personalize.campaigns)
          || ' ' || (SELECT string_agg(variant || ':' || users, ',' ORDER BY variant) FROM personalize.experiment_report('layout'))"
}
before=$(fingerprint pp_dump_src)
pg_dump -Fc -d pp_dump_src -f "$PP_RUN/dump.pgc"
pg_restore --exit-on-error -d pp_dump_dst "$PP_RUN/dump.pgc"
after=$(fingerprint pp_dump_dst)
echo "source:   $before"
echo "restored: $after"
[ "$before" = "$after" ] || { echo "FAIL: the restored database differs"; exit 1; }
# New events after a restore get fresh ids (the identity sequences came along).
new_id=$(psql -X -At -d pp_dump_dst -c "SELECT personalize.track('{\"type\":\"wishlist\",\"user_id\":\"u\",\"item_id\":\"i\"}') > (SELECT max(event_id) - 1 FROM personalize.events)")
[ "$new_id" = t ] || { echo "FAIL: tracking after restore"; exit 1; }
echo "OK: dump/restore round trip is identical and tracking continues"

# Part 2: a live shop. Events of today fire a campaign; some messages are claimed, sent, failed.
fresh_db pp_live_src
psql -X -q -d pp_live_src -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION pg_personalize;
-- Consent is not what this test is about: no channel needs an opt-in (tests/pg_regress/sql/consent.sql).
INSERT INTO personalize.channel_policies VALUES ('push', false), ('sms', false), ('whatsapp', false);
INSERT INTO personalize.campaigns (name, trigger_event_type, channel, max_event_age)
VALUES ('viewed', 'view', 'push', '7 days'), ('carted', 'add_to_cart', 'email', '7 days');
SELECT * FROM personalize.track_batch(ARRAY(
    SELECT jsonb_build_object('type', CASE WHEN g % 3 = 0 THEN 'add_to_cart' ELSE 'view' END,
                              'user_id', 'u' || g, 'item_id', 'i' || (g % 7),
                              'occurred_at', now() - g * interval '1 minute')
      FROM generate_series(1, 60) g)) \g /dev/null
CREATE TEMP TABLE c AS SELECT * FROM personalize.claim_messages('push', 20, '1 hour');
SELECT personalize.ack(message_id, lease_token) FROM c WHERE message_id % 2 = 0 \g /dev/null
SELECT personalize.fail(message_id, lease_token, 'bounced') FROM c WHERE message_id % 4 = 1 \g /dev/null
UPDATE personalize.campaigns SET max_attempts = 1 WHERE name = 'carted';
CREATE TEMP TABLE d AS SELECT * FROM personalize.claim_messages('email', 5, '1 hour');
SELECT personalize.fail(message_id, lease_token, 'no address') FROM d \g /dev/null
SQL
outbox_print() {
    psql -X -At -d "$1" -v ON_ERROR_STOP=1 -c "
      SELECT (SELECT count(*) FROM personalize.events) || ' events; '
          || (SELECT string_agg(state || ' ' || n, ', ' ORDER BY state)
                FROM (SELECT state, count(*) n FROM personalize.outbox GROUP BY state) s) || '; '
          || (SELECT md5(string_agg(concat_ws(':', message_id, campaign_id, user_id, state, attempts,
                                              idempotency_key, lease_token, last_error, visible_at),
                                    '|' ORDER BY message_id)) FROM personalize.outbox)"
}
live=$(outbox_print pp_live_src)
echo "live shop:                $live"
case "$live" in *claimed*sent*) ;; *) echo "FAIL: the live shop should have claimed and sent messages"; exit 1;; esac
pg_dump -Fc -d pp_live_src -f "$PP_RUN/live.pgc"
pg_dump -Fp -d pp_live_src -f "$PP_RUN/live.sql"
check_restored() {  # check_restored DB HOW
    local got; got=$(outbox_print "$1")
    echo "restored ($2): $got"
    [ "$got" = "$live" ] || { echo "FAIL: $2 changed the outbox (messages written or states lost)"; exit 1; }
    [ "$(psql -X -At -d "$1" -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_personalize'")" = 1 ] \
        || { echo "FAIL: $2 left no extension"; exit 1; }
}
fresh_db pp_live_fc
pg_restore --exit-on-error -d pp_live_fc "$PP_RUN/live.pgc"
check_restored pp_live_fc "pg_restore -Fc          "
fresh_db pp_live_tx
pg_restore --exit-on-error --single-transaction -d pp_live_tx "$PP_RUN/live.pgc"
check_restored pp_live_tx "pg_restore -1           "
fresh_db pp_live_plain
psql -X -q -d pp_live_plain -v ON_ERROR_STOP=1 -f "$PP_RUN/live.sql" >/dev/null
check_restored pp_live_plain "psql < plain dump       "
# Tracking still fires campaigns after the restore, with fresh message ids.
fired=$(psql -X -At -d pp_live_fc -v ON_ERROR_STOP=1 \
    -c "SELECT personalize.track('{\"type\":\"view\",\"user_id\":\"after-restore\",\"item_id\":\"i1\"}') IS NOT NULL" \
    -c "SELECT count(*) = 1 FROM personalize.outbox WHERE user_id = 'after-restore' AND state = 'pending'" | tr '\n' ' ')
[ "$fired" = "t t " ] || { echo "FAIL: tracking after the restore fired no campaign ($fired)"; exit 1; }
# COPY of historical events (and a superuser's INSERT) stores them and writes no message.
copied=$(psql -X -At -q -d pp_live_plain -v ON_ERROR_STOP=1 <<'SQL'
CREATE TEMP TABLE history AS
    SELECT 'view' AS event_type, 'copied' || g AS user_id, 'i1' AS item_id, now() AS occurred_at
      FROM generate_series(1, 25) g;
COPY history TO '/tmp/pp_history.csv' CSV;
COPY personalize.events (event_type, user_id, item_id, occurred_at) FROM '/tmp/pp_history.csv' CSV;
INSERT INTO personalize.events (event_type, user_id, item_id, occurred_at) VALUES ('view', 'inserted', 'i1', now());
SELECT (SELECT count(*) FROM personalize.events WHERE user_id LIKE 'copied%' OR user_id = 'inserted')
       || ' ' || (SELECT count(*) FROM personalize.outbox WHERE user_id LIKE 'copied%' OR user_id = 'inserted');
SQL
)
[ "$copied" = "26 0" ] || { echo "FAIL: COPY/INSERT of history: '$copied' (events, messages) is not '26 0'"; exit 1; }
echo "OK: restores of a live shop keep every message as it was; history loads write no message"
