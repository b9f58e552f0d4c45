#!/usr/bin/env bash
# The delivery worker (crates/personalize-worker) against real local servers: aiosmtpd for
# email and HTTP stand-ins for WhatsApp, Twilio, FCM (with its OAuth token endpoint) and a
# webhook receiver (tests/delivery/standins.py), each checking requests against the
# provider's documented shape and failing on demand.
#  1. Every channel end to end: sent messages arrive once with the right shape; transient
#     failures (500, 429 + Retry-After, a timeout, SMTP 451) are retried and arrive; refused
#     credentials (401) hand the message back without counting an attempt and pause the
#     channel, then it arrives; bad addresses (SMTP 550 5.1.1, Twilio 21211, FCM
#     UNREGISTERED) are cancelled and suppressed; other refusals (WhatsApp 131026, a webhook
#     400) are cancelled, nothing suppressed; users who unsubscribed, are suppressed or have
#     no address get nothing; no address reaches last_error.
#  2. The email: headers (List-Unsubscribe, List-Unsubscribe-Post, Message-ID from the
#     idempotency key), text and HTML parts, the unsubscribe link; GET of the link changes
#     nothing, the one-click POST unsubscribes, a forged or altered token is refused; the
#     next message to that user is cancelled at claim. /metrics and /healthz answer.
#  3. kill -9 of the worker mid-batch: nothing lost, nothing acked without delivery,
#     redeliveries counted, duplicates detectable by idempotency key.
#  4. SIGTERM: the worker stops claiming, finishes or hands back what it holds, exits 0; no
#     message is left claimed; a rate limit is never exceeded.
#  5. TLS to the database (a second cluster that takes TCP only over TLS, with a certificate
#     from a CA of our own): connects with database.ca_file, refuses an unknown CA; plain TCP
#     is refused by the server.
source "$(dirname "$0")/../scripts/lib.sh"
start_cluster
DB=pp_delivery
fresh_db $DB
WORKER=$(PP_PROFILE=${PP_PROFILE:-dev} worker_bin)
PY=$(standins_python)
DIR=$PP_RUN/delivery
rm -rf "$DIR"; mkdir -p "$DIR"
HTTP_PORT=${PP_STANDIN_PORT:-18931}; SMTP_PORT=$((HTTP_PORT + 1)); WORKER_PORT=$((HTTP_PORT + 2))
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d $DB "$@"; }
fail() { echo "FAIL: $*"; tail -n 30 "$DIR"/worker*.log 2>/dev/null; exit 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The FCM service account: a real RSA key; the stand-in verifies the JWT's signature.
fcm_service_account "$DIR" "http://127.0.0.1:$HTTP_PORT/oauth/token"

start_standins() {  # start_standins SUBDIR [--delay-ms N]
    local sub=$DIR/$1; shift
    "$PY" "$ROOT/tests/delivery/standins.py" --dir "$sub" --http-port "$HTTP_PORT" --smtp-port "$SMTP_PORT" \
        --public-key "$DIR/fcm.pub" "$@" > "$sub.standins.log" 2>&1 &
    STANDINS=$!; pids+=($STANDINS)
    wait_for_line "$sub.standins.log" ready || fail "the stand-ins did not start: $(cat "$sub.standins.log")"
}
stop_standins() { kill "$STANDINS"; wait "$STANDINS" 2>/dev/null || true; }

config() {  # config FILE CONCURRENCY [extra TOML lines]
    cat > "$1" <<TOML
templates = "$DIR/templates"
[database]
url = "host=$PP_SOCK port=$PP_PORT dbname=$DB user=delivery_worker"
[worker]
batch = 50
visibility_seconds = 6
poll_seconds = 0.5
shutdown_grace_seconds = 5
pause_seconds = 2
[http]
listen = "127.0.0.1:$WORKER_PORT"
unsubscribe_url = "http://127.0.0.1:$WORKER_PORT/unsubscribe"
unsubscribe_mailto = "unsubscribe@shop.example"
[email]
host = "127.0.0.1"
port = $SMTP_PORT
tls = "none"
from = "Shop <news@shop.example>"
concurrency = $2
timeout_seconds = 2
[sms]
base_url = "http://127.0.0.1:$HTTP_PORT/twilio"
account_sid = "AC00000000000000000000000000000000"
from = "+15557654321"
concurrency = $2
timeout_seconds = 2
[whatsapp]
base_url = "http://127.0.0.1:$HTTP_PORT/whatsapp/v21.0"
phone_number_id = "1234567890"
concurrency = $2
timeout_seconds = 2
[whatsapp.default_template]
name = "cart_reminder"
language = "en_US"
parameters = ["{{ user_id }}", "{{ payload.title }}"]
[push]
base_url = "http://127.0.0.1:$HTTP_PORT/fcm"
project_id = "shop-app"
service_account_file = "$DIR/fcm.json"
concurrency = $2
timeout_seconds = 2
[webhook]
url = "http://127.0.0.1:$HTTP_PORT/webhook"
concurrency = $2
timeout_seconds = 2
${3:-}
TOML
}
export WEBHOOK_SECRET=webhook-secret WHATSAPP_TOKEN=whatsapp-token TWILIO_AUTH_TOKEN=twilio-token
mkdir -p "$DIR/templates/views_email"
printf 'Picked for you, {{ user_id }}' > "$DIR/templates/views_email/email.subject"

sql >/dev/null <<'SQL'
CREATE EXTENSION pg_personalize;
ALTER DATABASE pp_delivery SET personalize.unsubscribe_secret = '5f1d7c0a9e3b48d2a6c4e8f0b2d4f6a8c0e2a4b6d8f0a2c4e6b8d0f2a4c6e8b0';
DROP ROLE IF EXISTS delivery_worker;
CREATE ROLE delivery_worker LOGIN IN ROLE personalize_worker;
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id int PRIMARY KEY, email text, phone text, whatsapp text, device text);
-- Normal customers 1-20; the rest ask the stand-ins for a failure (see standins.py).
INSERT INTO shop.customers
SELECT i, 'c' || i || '@example.com', '+1555000' || lpad(i::text, 4, '0'), '+1555100' || lpad(i::text, 4, '0'), 'device-' || i
  FROM generate_series(1, 20) i;
INSERT INTO shop.customers VALUES
 (101, 'bad101@example.com', '+15550000bad', '+15550001bad', 'device-bad'),      -- permanent
 (102, 'greylist102@example.com', '+15550000e429', '+15550001e500', 'device-e500'), -- transient once
 (103, 'c103@example.com', '+15550000e500', '+15550001slow', 'device-e429'),       -- transient once
 (104, NULL, NULL, NULL, NULL),                                                    -- no addresses
 (105, 'unsub105@example.com', '+15550000105', '+15550001105', 'device-105'),      -- unsubscribed
 (106, 'supp106@example.com', '+15550000106', '+15550001106', 'device-106');       -- suppressed
CREATE VIEW shop.email_recipients AS SELECT id AS user_id, email FROM shop.customers;
CREATE VIEW shop.phone_recipients AS SELECT id AS user_id, phone, whatsapp FROM shop.customers;
CREATE VIEW shop.push_recipients AS SELECT id AS user_id, device FROM shop.customers;
GRANT USAGE ON SCHEMA shop TO personalize_definer, delivery_worker;
GRANT SELECT ON ALL TABLES IN SCHEMA shop TO personalize_definer, delivery_worker;
INSERT INTO personalize.channel_policies (channel, requires_opt_in, recipients, address_column) VALUES
 ('email', false, 'shop.email_recipients', 'email'),
 ('sms', true, 'shop.phone_recipients', 'phone'),
 ('whatsapp', true, 'shop.phone_recipients', 'whatsapp'),
 ('push', true, 'shop.push_recipients', 'device')
ON CONFLICT (channel) DO UPDATE SET requires_opt_in = EXCLUDED.requires_opt_in,
    recipients = EXCLUDED.recipients, address_column = EXCLUDED.address_column;
SELECT count(personalize.set_consent(u, ch, true, 'signup'))
  FROM unnest(ARRAY[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,101,102,103,104,105,106]) u,
       unnest(ARRAY['sms', 'whatsapp', 'push']) ch;
SELECT count(personalize.set_consent(105, ch, false, 'preferences page')) FROM unnest(ARRAY['email', 'sms', 'whatsapp', 'push', 'webhook']) ch;
SELECT count(personalize.suppress(106, ch, 'spam complaint')) FROM unnest(ARRAY['email', 'sms', 'whatsapp', 'push', 'webhook']) ch;
INSERT INTO personalize.campaigns (name, trigger_event_type, trigger_properties, channel, template)
SELECT 'views_' || ch, 'view', jsonb_build_object('source', ch), ch,
       '{"subject": "Still looking at {{item_id}}?", "title": "{{item_id}} is waiting", "body": "We kept {{item_id}} for you", "text": "{{item_id}} is back in stock"}'
  FROM unnest(ARRAY['email', 'sms', 'whatsapp', 'push', 'webhook']) ch;
SQL
# A webhook user that fails for good, and three that fail once.
for u in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 101 102 103 104 105 106; do
    for ch in email sms whatsapp push webhook; do echo "{\"type\": \"view\", \"user_id\": \"$u\", \"item_id\": \"P$u\", \"properties\": {\"source\": \"$ch\"}}"; done
done > "$DIR/events.jsonl"
for u in bad-w e500-w e429-w e401-w e301-w slow-w; do echo "{\"type\": \"view\", \"user_id\": \"$u\", \"item_id\": \"P9\", \"properties\": {\"source\": \"webhook\"}}"; done >> "$DIR/events.jsonl"
sql -c "SELECT sum(personalize.track(e::jsonb)) > 0 FROM (SELECT pg_catalog.unnest(string_to_array(trim(trailing E'\n' from \$\$$(cat "$DIR/events.jsonl")\$\$), E'\n')) e) s" >/dev/null
total=$(sql -c "SELECT count(*) FROM personalize.outbox")
[ "$total" = 136 ] || fail "expected 136 messages written, got $total"

wait_until_done() {  # wait_until_done SECONDS: until no message is pending-and-due or claimed
    for _ in $(seq $(($1 * 5))); do
        [ "$(sql -c "SELECT count(*) FROM personalize.outbox WHERE state = 'claimed' OR state = 'pending'")" = 0 ] && return 0
        sleep 0.2
    done
    sql -c "SELECT message_id, campaign, user_id, state, attempts, last_error FROM personalize.outbox WHERE state IN ('claimed', 'pending')"
    return 1
}

say "1. Every channel end to end"
start_standins run1
config "$DIR/worker.toml" 4
"$WORKER" --config "$DIR/worker.toml" --check || fail "--check refused a good configuration"
"$WORKER" --config "$DIR/worker.toml" > "$DIR/worker1.log" 2>&1 &
W=$!; pids+=($W)
wait_until_done 60 || fail "messages still pending or claimed after 60 s"
states=$(sql -F' ' -c "SELECT campaign, user_id, state FROM personalize.outbox ORDER BY 1, 2" | tr '\n' ';')
expect() {  # expect CAMPAIGN USER STATE
    grep -q "views_$1 $2 $3;" <<< "$states" || fail "views_$1 for $2: expected $3, got: $(grep -o "views_$1 $2 [a-z]*" <<< "$states")"
}
for ch in email sms whatsapp push webhook; do
    for u in $(seq 1 20) 102 103; do expect $ch $u sent; done
    expect $ch 105 cancelled; expect $ch 106 cancelled
done
for ch in email sms whatsapp push; do expect $ch 101 cancelled; expect $ch 104 cancelled; done
expect webhook 101 sent; expect webhook 104 sent
expect webhook bad-w cancelled; for u in e500-w e429-w e401-w e301-w slow-w; do expect webhook $u sent; done
[ "$(sql -c "SELECT attempts FROM personalize.outbox WHERE user_id = 'e401-w'")" = 1 ] || fail "a 401 counted an attempt"
# A redirect is not followed (as a GET it would get a 200 elsewhere and ack an undelivered
# message): handed back as our configuration's, then sent on the next claim.
[ "$(sql -c "SELECT attempts FROM personalize.outbox WHERE user_id = 'e301-w'")" = 1 ] || fail "the redirect was followed or counted an attempt"
sql -c "SELECT user_id, channel FROM personalize.consents WHERE status = 'suppressed' AND user_id = '101' ORDER BY 2" | tr '\n' ' ' \
    | grep -qx "101|email 101|push 101|sms " || fail "hard bounces not suppressed: $(sql -c "SELECT * FROM personalize.consents WHERE user_id = '101'")"
[ "$(sql -c "SELECT count(*) FROM personalize.consents WHERE user_id = 'bad-w'")" = 0 ] || fail "a webhook 400 must not suppress"
sql -c "SELECT campaign, user_id, last_error FROM personalize.outbox WHERE state = 'cancelled' ORDER BY 1, 2" > "$DIR/cancelled.txt"
grep -q "views_email|101|smtp: permanent error (550): 5.1.1 <<address>>: no such user" "$DIR/cancelled.txt" || fail "the 550's reason: $(grep 'email|101' "$DIR/cancelled.txt")"
grep -q "views_whatsapp|101|whatsapp answered HTTP 400.*131026" "$DIR/cancelled.txt" || fail "WhatsApp 131026's reason"
! grep -q "@example.com\|+1555" "$DIR/cancelled.txt" || fail "an address reached last_error: $(grep "@example.com\|+1555" "$DIR/cancelled.txt")"
grep -q "views_sms|101|twilio answered HTTP 400.*21211" "$DIR/cancelled.txt" || fail "Twilio 21211's reason"
grep -q "views_sms|105|the user unsubscribed from sms" "$DIR/cancelled.txt" || fail "unsubscribed: $(grep 'sms|105' "$DIR/cancelled.txt")"
grep -q "views_push|104|no push address" "$DIR/cancelled.txt" || fail "no address: $(grep 'push|104' "$DIR/cancelled.txt")"
[ "$(sql -c "SELECT count(*) FROM personalize.outbox WHERE state = 'sent' AND attempts > 1")" -ge 9 ] || fail "retried messages should show more than one attempt"
python3 - "$DIR/run1" <<'PY' || fail "requests at the stand-ins"
import json, sys, collections
reqs = [json.loads(l) for l in open(sys.argv[1] + "/requests.jsonl")]
bad = [r for r in reqs if "shape_error" in r]
assert not bad, "requests not in the provider's shape: %s" % bad
ok = collections.Counter(r["provider"] for r in reqs if r["status"] == "ok" and r["provider"] != "oauth")
assert ok == {"email": 22, "sms": 22, "whatsapp": 22, "push": 22, "webhook": 29}, ok
for r in reqs:
    who = json.dumps([r.get("to"), r.get("user")])
    assert "105" not in who and "106" not in who, "a message reached an unsubscribed or suppressed user: " + who
wa = [r for r in reqs if r["provider"] == "whatsapp" and r["status"] == "ok"]
assert all(r["template"]["name"] == "cart_reminder" and r["template"]["components"][0]["parameters"][1]["text"].endswith("is waiting") for r in wa), wa[0]
keys = [r["key"] for r in reqs if r["status"] == "ok" and r.get("key")]
assert len(keys) == len(set(keys)), "a message arrived twice"
print("stand-ins: %s; faults answered: %d" % (dict(ok), sum(1 for r in reqs if r["status"].startswith("fault"))))
PY

say "2. The email, its unsubscribe link, metrics and health"
python3 - "$DIR/run1/mail" "$WORKER_PORT" > "$DIR/link.txt" <<'PY' || fail "the email"
import email, email.policy, glob, re, sys, urllib.request
msgs = [email.message_from_binary_file(open(f, "rb"), policy=email.policy.default) for f in sorted(glob.glob(sys.argv[1] + "/*.eml"))]
m = next(m for m in msgs if m["To"] == "c7@example.com")
assert m["From"] == "Shop <news@shop.example>", m["From"]
assert m["Subject"] == "Picked for you, 7", "the campaign's own subject template: %s" % m["Subject"]
assert re.fullmatch(r"<[0-9a-f-]{36}@shop\.example>", m["Message-ID"]), m["Message-ID"]
assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click", m["List-Unsubscribe-Post"]
lu = m["List-Unsubscribe"]
link = re.search(r"<(http://127\.0\.0\.1:%s/unsubscribe\?token=[^>]+)>" % sys.argv[2], lu).group(1)
assert "<mailto:unsubscribe@shop.example?subject=unsubscribe>" in lu, lu
assert m.get_content_type() == "multipart/alternative", m.get_content_type()
text = m.get_body(("plain",)).get_content()
html = m.get_body(("html",)).get_content()
assert "We kept P7 for you" in text and link in text, text
assert "We kept P7 for you" in html and "Unsubscribe</a>" in html, html
print(link)
PY
link=$(cat "$DIR/link.txt")
curl -fsS "$link" | grep -q '<form method="post"' || fail "GET of the link shows no form"
[ "$(sql -c "SELECT status FROM personalize.consents WHERE user_id = '7' AND channel = 'email' AND campaign = ''")" = "" ] || fail "a GET must not unsubscribe (link scanners fetch every URL)"
# The link with its token's last character changed, and a token for user 7 with its first changed.
alter() { python3 -c "import sys; s, i = sys.argv[1], int(sys.argv[2]); print(s[:i] + ('A' if s[i] != 'A' else 'B') + s[i + 1:] if i >= 0 else s[:i] + ('A' if s[i] != 'A' else 'B'))" "$1" "$2"; }
forged=$(alter "$link" -1)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d 'List-Unsubscribe=One-Click' "$forged")
[ "$code" = 400 ] || fail "an altered token answered $code, not 400"
other=$(alter "$(sql -c "SELECT personalize.unsubscribe_token('7', 'email')")" 0)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d 'List-Unsubscribe=One-Click' "http://127.0.0.1:$WORKER_PORT/unsubscribe?token=$other")
[ "$code" = 400 ] || fail "a forged token answered $code"
curl -fsS -X POST -d 'List-Unsubscribe=One-Click' "$link" | grep -q "You are unsubscribed" || fail "the one-click POST did not unsubscribe"
[ "$(sql -c "SELECT status || '/' || source FROM personalize.consents WHERE user_id = '7' AND channel = 'email'")" = "unsubscribed/unsubscribe link" ] \
    || fail "consents after the link: $(sql -c "SELECT * FROM personalize.consents WHERE user_id = '7'")"
[ "$(sql -c "SELECT count(*) FROM personalize.consents WHERE status = 'unsubscribed' AND source = 'unsubscribe link'")" = 1 ] || fail "the altered tokens unsubscribed someone"
before=$(ls "$DIR/run1/mail" | wc -l)
sql -c "SELECT personalize.track('{\"type\": \"view\", \"user_id\": \"7\", \"item_id\": \"P70\", \"properties\": {\"source\": \"email\"}}')" >/dev/null
wait_until_done 20 || fail "the message after unsubscribing was not settled"
[ "$(sql -c "SELECT state FROM personalize.outbox WHERE user_id = '7' AND campaign = 'views_email' ORDER BY message_id DESC LIMIT 1")" = cancelled ] || fail "the next email to an unsubscribed user was not cancelled"
[ "$(ls "$DIR/run1/mail" | wc -l)" = "$before" ] || fail "an email reached the user who unsubscribed"
metrics=$(curl -fsS "http://127.0.0.1:$WORKER_PORT/metrics")
grep -q 'personalize_worker_messages_sent_total{channel="email"} 22' <<< "$metrics" || fail "metrics: $(grep sent_total <<< "$metrics")"
grep -q 'personalize_worker_messages_failed_total{channel="sms",outcome="cancelled",reason="invalid_address"} 1' <<< "$metrics" || fail "failure metrics: $(grep failed_total <<< "$metrics")"
grep -q 'personalize_worker_send_seconds_count{channel="webhook"}' <<< "$metrics" || fail "latency histogram missing"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$WORKER_PORT/healthz")" = 200 ] || fail "/healthz"
grep -q '"message":"send failed"' "$DIR/worker1.log" || fail "structured (JSON) logs"
kill -TERM $W; wait $W || fail "the worker's exit after SIGTERM"
stop_standins
echo "ok: every channel, the email and its link, metrics, health"

say "3. kill -9 of the worker mid-batch"
sql -c "INSERT INTO personalize.campaigns (name, trigger_event_type, trigger_properties, channel, template)
        VALUES ('bulk', 'view', '{\"source\": \"bulk\"}', 'webhook', '{\"n\": \"{{user_id}}\"}')"
sql -c "SELECT count(personalize.track(jsonb_build_object('type', 'view', 'user_id', 'bulk-' || i, 'item_id', 'P1', 'properties', '{\"source\": \"bulk\"}'::jsonb)))
          FROM generate_series(1, 600) i" >/dev/null
[ "$(sql -c "SELECT count(*) FROM personalize.outbox WHERE campaign = 'bulk'")" = 600 ] || fail "600 bulk messages were not written"
start_standins run3 --delay-ms 30
config "$DIR/worker3.toml" 16
"$WORKER" --config "$DIR/worker3.toml" > "$DIR/worker3a.log" 2>&1 &
W=$!
for _ in $(seq 300); do [ "$(grep -c '"status": "ok"' "$DIR/run3/requests.jsonl" 2>/dev/null)" -ge 150 ] && break; sleep 0.05; done
kill -9 $W; wait $W 2>/dev/null || true
held=$(sql -c "SELECT count(*) FROM personalize.outbox WHERE campaign = 'bulk' AND state = 'claimed'")
[ "$held" -gt 0 ] || fail "the kill found no message claimed: nothing was tested"
"$WORKER" --config "$DIR/worker3.toml" > "$DIR/worker3b.log" 2>&1 &
W=$!; pids+=($W)
wait_until_done 60 || fail "the bulk messages after the restart"
kill -TERM $W; wait $W || fail "exit after SIGTERM"
stop_standins
sql -c "SELECT idempotency_key, state, redeliveries FROM personalize.outbox WHERE campaign = 'bulk'" > "$DIR/bulk.txt"
python3 - "$DIR/run3/requests.jsonl" "$DIR/bulk.txt" "$held" <<'PY' || fail "after kill -9"
import json, sys, collections
got = collections.Counter(json.loads(l).get("key") for l in open(sys.argv[1]) if '"status": "ok"' in l)
rows = [l.strip().split("|") for l in open(sys.argv[2]) if l.strip()]
assert len(rows) == 600
assert all(s == "sent" for _, s, _ in rows), collections.Counter(s for _, s, _ in rows)
missing = [k for k, _, _ in rows if got[k] == 0]
assert not missing, "acked without delivery, or lost: %d" % len(missing)
dups = sum(n - 1 for k, n in got.items() if n > 1)
redelivered = sum(int(r) for _, _, r in rows)
assert redelivered > 0, "no redelivery counted"
print("kill -9 with %s messages claimed: all 600 sent and received; %d redeliveries counted; "
      "%d duplicate deliveries, each recognisable by its idempotency key" % (sys.argv[3], redelivered, dups))
PY

say "4. SIGTERM: stop claiming, finish or hand back, exit 0; a rate limit holds"
sql -c "SELECT count(personalize.track(jsonb_build_object('type', 'view', 'user_id', 'term-' || i, 'item_id', 'P1', 'properties', '{\"source\": \"bulk\"}'::jsonb)))
          FROM generate_series(1, 300) i" >/dev/null
start_standins run4 --delay-ms 100
config "$DIR/worker4.toml" 8 "rate_per_second = 20"
"$WORKER" --config "$DIR/worker4.toml" > "$DIR/worker4.log" 2>&1 &
W=$!; started=$(date +%s.%N)
sleep 2
kill -TERM $W
wait $W || fail "the worker exited non-zero after SIGTERM"
elapsed=$(python3 -c "import time; print(round(time.time() - $started, 1))")
[ "$(sql -c "SELECT count(*) FROM personalize.outbox WHERE state = 'claimed'")" = 0 ] || fail "messages left claimed after SIGTERM"
[ "$(sql -c "SELECT count(*) FROM personalize.outbox WHERE user_id LIKE 'term-%' AND attempts > 1")" = 0 ] || fail "messages handed back at SIGTERM counted an attempt"
received=$(grep -c '"status": "ok"' "$DIR/run4/requests.jsonl" || true)
sent=$(sql -c "SELECT count(*) FROM personalize.outbox WHERE user_id LIKE 'term-%' AND state = 'sent'")
[ "$sent" -le "$received" ] || fail "$sent acked but only $received received"
# 20 a second after a burst of 20: never more than 20 + 20 × the seconds it ran.
python3 -c "import sys; sys.exit(0 if $received <= 20 + 20 * $elapsed + 1 else 1)" || fail "$received sends in $elapsed s exceed 20/s"
"$WORKER" --config "$DIR/worker4.toml" --drain > "$DIR/worker4b.log" 2>&1 || fail "--drain"
stop_standins
[ "$(sql -c "SELECT count(*) FROM personalize.outbox WHERE user_id LIKE 'term-%' AND state = 'sent'")" = 300 ] || fail "--drain did not deliver the rest"
echo "ok: SIGTERM after ${elapsed}s: $sent sent and acked ($received received), the rest handed back and delivered by --drain"

say "5. TLS to the database: sslmode=require verifies the server's certificate against its CA"
# A second cluster of our own, on TCP with a certificate from a CA of our own (as a managed
# service's: not among the public roots).
TLS_PORT=$((PP_PORT + 10)); TLS_DATA=$DIR/tls-data
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Test CA" -keyout "$DIR/ca.key" -out "$DIR/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$DIR/server.key" -out "$DIR/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$DIR/san.ext"
openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial -days 2 \
    -extfile "$DIR/san.ext" -out "$DIR/server.crt" 2>/dev/null
chmod 755 "$DIR"
mkdir -p "$TLS_DATA"; chmod 700 "$TLS_DATA"; [ "$(id -u)" = 0 ] && chown postgres "$TLS_DATA"
as_pg_owner "$PGBIN/initdb" -D "$TLS_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
install -m 600 "$DIR/server.key" "$TLS_DATA/server.key"; install -m 644 "$DIR/server.crt" "$TLS_DATA/server.crt"
[ "$(id -u)" = 0 ] && chown postgres "$TLS_DATA/server.key" "$TLS_DATA/server.crt"
# TCP connections must use TLS (hostssl only); the socket stays for our own setup.
printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n' > "$DIR/hba"
install -m 644 "$DIR/hba" "$TLS_DATA/pg_hba.conf"; [ "$(id -u)" = 0 ] && chown postgres "$TLS_DATA/pg_hba.conf"
as_pg_owner "$PGBIN/pg_ctl" -D "$TLS_DATA" -l "$TLS_DATA/postgres.log" -w start \
    -o "-p $TLS_PORT -k $PP_SOCK -c listen_addresses=127.0.0.1 -c ssl=on" >/dev/null
trap 'cleanup; as_pg_owner "$PGBIN/pg_ctl" -D "$TLS_DATA" -m immediate stop >/dev/null 2>&1 || true' EXIT
psql -X -q -p $TLS_PORT -d postgres -c "CREATE EXTENSION pg_personalize" -c "CREATE ROLE tls_worker LOGIN IN ROLE personalize_worker"
tls_config() {  # tls_config FILE URL [ca_file line]
    printf '[database]\nurl = "%s"\n%s\n[webhook]\nurl = "http://127.0.0.1:9/hook"\n' "$2" "${3:-}" > "$1"
}
url="host=localhost port=$TLS_PORT dbname=postgres user=tls_worker sslmode=require"
tls_config "$DIR/tls-ok.toml" "$url" "ca_file = \"$DIR/ca.crt\""
"$WORKER" --config "$DIR/tls-ok.toml" --check > "$DIR/tls-ok.log" 2>&1 || { cat "$DIR/tls-ok.log"; fail "TLS with the server's CA"; }
tls_config "$DIR/tls-untrusted.toml" "$url"
if "$WORKER" --config "$DIR/tls-untrusted.toml" --check > "$DIR/tls-untrusted.log" 2>&1; then
    fail "a server certificate from an unknown CA was accepted"
fi
grep -qi "certificate" "$DIR/tls-untrusted.log" || fail "the refusal does not say why: $(cat "$DIR/tls-untrusted.log")"
tls_config "$DIR/tls-plain.toml" "host=localhost port=$TLS_PORT dbname=postgres user=tls_worker sslmode=disable"
if "$WORKER" --config "$DIR/tls-plain.toml" --check > "$DIR/tls-plain.log" 2>&1; then
    fail "the server refuses plain TCP, yet the worker connected"
fi
as_pg_owner "$PGBIN/pg_ctl" -D "$TLS_DATA" -m fast stop >/dev/null
echo "ok: sslmode=require with database.ca_file connects; an unknown CA and plain TCP are refused"
