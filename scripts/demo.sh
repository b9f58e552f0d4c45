#!/usr/bin/env bash
# The main job, end to end on a private cluster with a synthetic shop:
# events → tracking-plan validation → (accepted | quarantined with reasons) → training →
# recommendations → segments → campaign outbox → the delivery worker sending them to local
# SMTP and push stand-ins, and an unsubscribe link followed →
# an A/B experiment with a known true effect and its report.
source "$(dirname "$0")/lib.sh"
EVENTS=${DEMO_EVENTS:-20000}

install_prereqs
install_extension
say "Starting our own PostgreSQL 15 cluster on port $PP_PORT ($PP_DATA)"
start_cluster
fresh_db personalize_demo
psql -X -d personalize_demo -v ON_ERROR_STOP=1 -v events="$EVENTS" -f "$ROOT/scripts/demo.sql"

# 13. The delivery worker (crates/personalize-worker) delivers what is due to local stand-ins
# for the providers (tests/delivery/standins.py: aiosmtpd for email, an FCM HTTP v1 endpoint
# with its OAuth token server for push), reading addresses from the shop's own table.
DIR=$PP_RUN/demo_delivery
rm -rf "$DIR"; mkdir -p "$DIR"
WORKER=$(worker_bin)
PY=$(standins_python)
HTTP_PORT=18951; SMTP_PORT=18952; WORKER_PORT=18953
fcm_service_account "$DIR" "http://127.0.0.1:$HTTP_PORT/oauth/token"
"$PY" "$ROOT/tests/delivery/standins.py" --dir "$DIR/received" --http-port $HTTP_PORT --smtp-port $SMTP_PORT > "$DIR/standins.log" 2>&1 &
standins=$!
trap 'kill $standins 2>/dev/null || true' EXIT
wait_for_line "$DIR/standins.log" ready || { cat "$DIR/standins.log"; exit 1; }
say "13. Delivery: the shop's addresses stay in its own table; the worker reads them when it sends"
PGOPTIONS="-c client_min_messages=warning" psql -X -q -d personalize_demo -v ON_ERROR_STOP=1 -v secret="$(openssl rand -hex 32)" <<'SQL'
ALTER DATABASE personalize_demo SET personalize.unsubscribe_secret TO :'secret';
DROP ROLE IF EXISTS demo_worker;
CREATE ROLE demo_worker LOGIN IN ROLE personalize_worker;
CREATE SCHEMA shop;
CREATE TABLE shop.customers AS
SELECT DISTINCT user_id, lower(user_id) || '@example.com' AS email, 'fcm-token-' || user_id AS device_token
  FROM personalize.events;
CREATE VIEW shop.email_recipients AS SELECT user_id, email FROM shop.customers;
CREATE VIEW shop.push_recipients AS SELECT user_id, device_token FROM shop.customers;
GRANT USAGE ON SCHEMA shop TO personalize_definer, demo_worker;
GRANT SELECT ON shop.email_recipients, shop.push_recipients TO personalize_definer, demo_worker;
INSERT INTO personalize.channel_policies (channel, requires_opt_in, recipients, address_column) VALUES
 ('email', false, 'shop.email_recipients', 'email'), ('push', true, 'shop.push_recipients', 'device_token')
ON CONFLICT (channel) DO UPDATE SET recipients = EXCLUDED.recipients, address_column = EXCLUDED.address_column;
SQL
cat > "$DIR/worker.toml" <<TOML
[database]
url = "host=$PP_SOCK port=$PP_PORT dbname=personalize_demo user=demo_worker"
[worker]
poll_seconds = 0.5
[http]
listen = "127.0.0.1:$WORKER_PORT"
unsubscribe_url = "http://127.0.0.1:$WORKER_PORT/unsubscribe"
[email]
host = "127.0.0.1"
port = $SMTP_PORT
tls = "none"
from = "Demo Shop <news@shop.example>"
[push]
base_url = "http://127.0.0.1:$HTTP_PORT/fcm"
project_id = "demo-shop"
service_account_file = "$DIR/fcm.json"
TOML
cat "$DIR/worker.toml"
PERSONALIZE_WORKER_LOG=warn "$WORKER" --config "$DIR/worker.toml" 2> "$DIR/worker.log" &
worker=$!
trap 'kill $standins $worker 2>/dev/null || true' EXIT
settled() {  # until nothing due is pending and nothing is claimed
    for _ in $(seq 100); do
        [ "$(psql -X -At -d personalize_demo -c "SELECT count(*) FROM personalize.outbox WHERE state = 'claimed' OR (state = 'pending' AND visible_at <= now())")" = 0 ] && return
        sleep 0.2
    done
}
settled
say "    The worker delivered what is due now: the big spender's push (FCM, as the stand-in received it); the email waits for its 2 hours"
python3 -c "
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r['provider'] == 'push': print('  push to %s: %s' % (r['to'], r['title']))
" "$DIR/received/requests.jsonl"
say "    Two hours later (fast-forwarded): the email goes out over SMTP, with recommendations computed when it was claimed"
psql -X -q -d personalize_demo -v ON_ERROR_STOP=1 \
    -c "UPDATE personalize.outbox SET visible_at = now() WHERE state = 'pending' AND campaign = 'camera_browse_abandonment'"
psql -X -q -d personalize_demo -c "NOTIFY personalize_outbox, 'email'"
settled
link=$(python3 - "$DIR/received/mail" <<'PY'
import email, email.policy, glob, re, sys
for f in sorted(glob.glob(sys.argv[1] + "/*.eml")):
    m = email.message_from_binary_file(open(f, "rb"), policy=email.policy.default)
    print("  --- received by the SMTP server (%s) ---" % f.split("/")[-1], file=sys.stderr)
    for h in ("From", "To", "Subject", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post", "Content-Type"):
        print("  %s: %s" % (h, m[h]), file=sys.stderr)
    print("  [text part]", file=sys.stderr)
    for line in m.get_body(("plain",)).get_content().splitlines():
        print("  | " + line, file=sys.stderr)
    print(re.search(r"<(http[^>]+)>", m["List-Unsubscribe"]).group(1))
PY
)
say "    The reader clicks \"unsubscribe\" (the one-click POST of RFC 8058, as a mail client sends it)"
curl -sS -X POST -d 'List-Unsubscribe=One-Click' "$link" | grep -o '<p>[^<]*</p>' | sed -e 's/<[^>]*>//g' -e 's/^/  the page: /'
psql -X -d personalize_demo -v ON_ERROR_STOP=1 -c "\pset footer off" \
    -c "SELECT user_id, channel, status, source FROM personalize.consents WHERE source = 'unsubscribe link'"
kill -TERM $worker; wait $worker || true
psql -X -d personalize_demo -v ON_ERROR_STOP=1 -c "\pset footer off" \
    -c "SELECT message_id, campaign, channel, user_id, state, attempts, last_error FROM personalize.outbox ORDER BY message_id" \
    -c "SELECT * FROM personalize.status WHERE section IN ('outbox', 'totals') ORDER BY section, name"
psql -X -d personalize_demo -v ON_ERROR_STOP=1 -f "$ROOT/scripts/demo_experiment.sql"
say "Done. Connect with: psql -h $PP_SOCK -p $PP_PORT -U postgres personalize_demo"
echo "   Stop the cluster with: $PGBIN/pg_ctl -D $PP_DATA stop  (as $( [ "$(id -u)" = 0 ] && echo postgres || id -un))"
