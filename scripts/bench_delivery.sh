#!/usr/bin/env bash
# The delivery worker's throughput, measured in one run (a benchmark, not a test): 4 worker
# processes (crates/personalize-worker, release build) drain the outbox to local receivers,
# with the database, the workers and the receivers all on this machine's 2 cores. The
# receivers are the worker crate's example delivery_sink (Rust: a webhook endpoint that checks
# every HMAC signature, an SMTP server that checks every message has the one-click unsubscribe
# header), so the figure is the worker's and the database's; BENCH_RECEIVER=python uses the
# tests' shape-checking stand-ins instead (tests/delivery/standins.py: Python and aiosmtpd,
# which then take about half a core themselves).
#  1. Webhook: WEBHOOK_MESSAGES messages; messages per second, claim to ack (budget >= 2,000/s).
#  2. Email over SMTP: EMAIL_MESSAGES messages, multipart with the unsubscribe headers,
#     recipients read from the shop's table (budget >= 500/s).
#  3. The addresses of a claimed batch (50 of 100,000 customers with integer ids): one
#     recipient_addresses() query, as the claim reads them, against recipient_address() once
#     per message.
source "$(dirname "$0")/lib.sh"
WEBHOOK_MESSAGES=${BENCH_WEBHOOK_MESSAGES:-20000}
EMAIL_MESSAGES=${BENCH_EMAIL_MESSAGES:-5000}
WORKERS=${BENCH_WORKERS:-4}
DB=pp_bench_delivery

install_prereqs
[ "${BENCH_SKIP_INSTALL:-0}" = 1 ] || install_extension
start_cluster
fresh_db $DB
WORKER=$(PP_PROFILE=release worker_bin)
RECEIVER=${BENCH_RECEIVER:-rust}
DIR=$PP_RUN/bench_delivery
rm -rf "$DIR"; mkdir -p "$DIR"
HTTP_PORT=${PP_STANDIN_PORT:-18941}; SMTP_PORT=$((HTTP_PORT + 1))
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d $DB "$@"; }
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
export WEBHOOK_SECRET=bench-secret

PGOPTIONS='-c client_min_messages=warning' sql >/dev/null <<'SQL'
CREATE EXTENSION pg_personalize;
ALTER DATABASE pp_bench_delivery SET personalize.unsubscribe_secret = '0d3f6a9c2e5b8d1f4a7c0e3b6d9f2a5c8e1b4d7f0a3c6e9b2d5f8a1c4e7b0d3f';
DROP ROLE IF EXISTS bench_worker;
CREATE ROLE bench_worker LOGIN IN ROLE personalize_worker;
CREATE TABLE public.customers (id text PRIMARY KEY, email text);
CREATE VIEW public.email_recipients AS SELECT id AS user_id, email FROM public.customers;
GRANT SELECT ON public.email_recipients TO personalize_definer, bench_worker;
INSERT INTO personalize.channel_policies (channel, requires_opt_in, recipients, address_column)
VALUES ('email', false, 'public.email_recipients', 'email');
INSERT INTO personalize.campaigns (name, trigger_event_type, trigger_properties, channel, template) VALUES
 ('bench_webhook', 'view', '{"source": "webhook"}', 'webhook', '{"title": "{{item_id}} is waiting", "user": "{{user_id}}"}'),
 ('bench_email', 'view', '{"source": "email"}', 'email', '{"subject": "Still looking at {{item_id}}?", "body": "We kept {{item_id}} for you."}');
SQL

write_messages() {  # write_messages CHANNEL N
    sql -c "INSERT INTO public.customers SELECT '$1-' || i, 'c' || i || '@example.com' FROM generate_series(1, $2) i ON CONFLICT DO NOTHING" >/dev/null
    sql -c "SELECT count(*) FROM (SELECT personalize.track_batch(array_agg(e)) FROM (
              SELECT jsonb_build_object('type', 'view', 'user_id', '$1-' || i, 'item_id', 'P' || (i % 500),
                                        'properties', jsonb_build_object('source', '$1')) AS e, i / 2000 AS chunk
                FROM generate_series(1, $2) i) s GROUP BY chunk) b" >/dev/null
    [ "$(sql -c "SELECT count(*) FROM personalize.outbox WHERE campaign = 'bench_$1' AND state = 'pending'")" = "$2" ] ||
        { echo "expected $2 pending $1 messages"; exit 1; }
}

measure() {  # measure CHANNEL N CONFIG: WORKERS workers drain N messages; prints messages/s
    local ch=$1 n=$2 config=$3 start end w
    local wpids=()
    start=$(date +%s.%N)
    for w in $(seq "$WORKERS"); do
        "$WORKER" --config "$config" > "$DIR/worker-$ch-$w.log" 2>&1 &
        wpids+=($!); pids+=($!)
    done
    while [ "$(sql -c "SELECT count(*) FROM personalize.outbox WHERE campaign = 'bench_$ch' AND state = 'sent'")" -lt "$n" ]; do
        sleep 0.2
        if ! kill -0 "${wpids[0]}" 2>/dev/null; then tail "$DIR/worker-$ch-1.log"; exit 1; fi
    done
    end=$(date +%s.%N)
    for w in "${wpids[@]}"; do kill -TERM "$w"; wait "$w" || true; done
    python3 -c "print(round($n / ($end - $start)))"
}

if [ "$RECEIVER" = python ]; then
    "$(standins_python)" "$ROOT/tests/delivery/standins.py" --dir "$DIR/standins" --http-port "$HTTP_PORT" \
        --smtp-port "$SMTP_PORT" --secret "$WEBHOOK_SECRET" > "$DIR/receiver.log" 2>&1 &
else
    (cd "$ROOT" && cargo build -q --release -p personalize-worker --example delivery_sink)
    "$ROOT/target/release/examples/delivery_sink" "$HTTP_PORT" "$SMTP_PORT" "$WEBHOOK_SECRET" > "$DIR/receiver.log" 2>&1 &
fi
pids+=($!)
wait_for_line "$DIR/receiver.log" ready || { cat "$DIR/receiver.log"; exit 1; }
# received KIND: how many webhooks (distinct idempotency keys) or emails the receiver has.
received() {
    if [ "$RECEIVER" = python ]; then
        if [ "$1" = webhook ]; then grep '"provider": "webhook", "user"' "$DIR/standins/requests.jsonl" | python3 -c "import sys, json; print(len({json.loads(l)['key'] for l in sys.stdin}))"
        else ls "$DIR/standins/mail" | wc -l; fi
    else
        curl -fsS "http://127.0.0.1:$HTTP_PORT/stats" | python3 -c "import sys, json; s = json.load(sys.stdin); assert s['bad_signatures'] == 0 and s['emails_without_unsubscribe'] == 0, s; print(s['distinct_keys'] if sys.argv[1] == 'webhook' else s['emails'])" "$1"
    fi
}

common="[database]
url = \"host=$PP_SOCK port=$PP_PORT dbname=$DB user=bench_worker\"
[worker]
batch = 200
visibility_seconds = 60
poll_seconds = 0.2"

say "1. Webhook: $WEBHOOK_MESSAGES messages, $WORKERS workers"
write_messages webhook "$WEBHOOK_MESSAGES"
cat > "$DIR/webhook.toml" <<TOML
$common
[webhook]
url = "http://127.0.0.1:$HTTP_PORT/webhook"
concurrency = 32
TOML
webhook_rate=$(measure webhook "$WEBHOOK_MESSAGES" "$DIR/webhook.toml")
echo "webhook: $webhook_rate messages/s ($(received webhook) distinct received for $WEBHOOK_MESSAGES sent)"

say "2. Email over SMTP: $EMAIL_MESSAGES messages, $WORKERS workers"
write_messages email "$EMAIL_MESSAGES"
cat > "$DIR/email.toml" <<TOML
$common
[http]
unsubscribe_url = "https://shop.example/unsubscribe"
[email]
host = "127.0.0.1"
port = $SMTP_PORT
tls = "none"
from = "Shop <news@shop.example>"
concurrency = ${BENCH_EMAIL_CONCURRENCY:-16}
TOML
email_rate=$(measure email "$EMAIL_MESSAGES" "$DIR/email.toml")
echo "email: $email_rate messages/s ($(received email) received for $EMAIL_MESSAGES sent)"

say "3. Addresses of a claimed batch of 50 among 100,000 customers with integer ids"
# The claim reads the batch's addresses with recipient_addresses(), one query; this times it
# against recipient_address() once per message (the CAST of an integer id to text leaves no
# index to use, so each call scans the view). Best of 3 each, in one session.
sql >/dev/null <<'SQL'
CREATE TABLE public.customers_int (id bigint PRIMARY KEY, email text);
INSERT INTO public.customers_int SELECT i, 'c' || i || '@example.com' FROM generate_series(1, 100000) i;
ANALYZE public.customers_int;
CREATE VIEW public.int_recipients AS SELECT id AS user_id, email FROM public.customers_int;
GRANT SELECT ON public.int_recipients TO personalize_definer;
UPDATE personalize.channel_policies SET recipients = 'public.int_recipients', address_column = 'email'
 WHERE channel = 'email';
SQL
lookups=$(sql <<'SQL'
CREATE TEMP TABLE t (way text, ms float8);
DO $$
DECLARE s timestamptz; n bigint;
BEGIN
    FOR i IN 1..3 LOOP
        s := clock_timestamp();
        SELECT count(personalize.recipient_address(u::text, 'email')) INTO n FROM generate_series(1000, 50999, 1000) u;
        INSERT INTO t VALUES ('each', 1000 * extract(epoch FROM clock_timestamp() - s));
        s := clock_timestamp();
        SELECT count(*) INTO n FROM personalize.recipient_addresses('email', ARRAY(SELECT u::text FROM generate_series(1000, 50999, 1000) u));
        INSERT INTO t VALUES ('batch', 1000 * extract(epoch FROM clock_timestamp() - s));
    END LOOP;
END $$;
SELECT round(min(ms) FILTER (WHERE way = 'each')::numeric, 1) || ' ' || round(min(ms) FILTER (WHERE way = 'batch')::numeric, 1) FROM t;
SQL
)
read -r each_ms batch_ms <<<"$lookups"
echo "recipient_address() x 50: $each_ms ms; recipient_addresses() once: $batch_ms ms"

say "Summary (messages per second, claim to ack, $WORKERS workers, $RECEIVER receivers, one run)"
python3 - "$webhook_rate" "$email_rate" <<'PY'
import sys
w, e = int(sys.argv[1]), int(sys.argv[2])
print("webhook  %6d/s  budget >= 2000/s  ratio %.2f  %s" % (w, w / 2000, "ok" if w >= 2000 else "BELOW BUDGET"))
print("email    %6d/s  budget >=  500/s  ratio %.2f  %s" % (e, e / 500, "ok" if e >= 500 else "BELOW BUDGET"))
PY
python3 -c "import sys; print('addresses of 50 (integer ids, 100,000 customers): one query %s ms, one per message %s ms, ratio %.1f' % (sys.argv[2], sys.argv[1], float(sys.argv[1]) / float(sys.argv[2])))" "$each_ms" "$batch_ms"
