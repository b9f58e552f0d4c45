#!/usr/bin/env bash
# pg_dump keeps the shop's data: events, rejections, catalogue, the shop's own plan rows,
# segments and campaigns, experiments and their exposures (restored in foreign-key order).
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
