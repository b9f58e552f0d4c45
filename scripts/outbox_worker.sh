#!/usr/bin/env bash
# The reference outbox worker: claims due campaign messages, "delivers" each one by appending
# a JSON line to a file (or stdout), then acks the batch with its lease token. Delivery is at
# least once: a consumer drops repeats by idempotency_key.
#
#   outbox_worker.sh [--db NAME] [--channels "email push sms whatsapp webhook"] [--batch 100]
#                    [--visibility "30 seconds"] [--out FILE] [--once] [--poll SECONDS]
#
# --once drains what is due now and exits; otherwise it polls every --poll seconds. (A worker
# in a real language LISTENs on personalize_outbox to wake as soon as a message is due; psql
# cannot wait on a notification, so this one polls.) Connection settings: the usual PG*
# variables.
set -euo pipefail
db=${PGDATABASE:-postgres}; channels="email push sms whatsapp webhook"; batch=100
visibility="30 seconds"; out=/dev/stdout; once=false; poll=2
while [ $# -gt 0 ]; do
    case $1 in
        --db) db=$2; shift 2 ;;
        --channels) channels=$2; shift 2 ;;
        --batch) batch=$2; shift 2 ;;
        --visibility) visibility=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --once) once=true; shift ;;
        --poll) poll=$2; shift 2 ;;
        *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

delivered=0
while :; do
    got=0
    for channel in $channels; do
        # One line per message: id, lease, then the message as JSON (what a sender needs).
        rows=$(sql -F $'\t' -v ch="$channel" -v n="$batch" -v vis="$visibility" <<'SQL'
SELECT message_id, lease_token,
       json_build_object('idempotency_key', idempotency_key, 'channel', channel, 'campaign', campaign,
                         'user_id', user_id, 'attempt', attempt, 'payload', payload)
  FROM personalize.claim_messages(:'ch', :'n', :'vis')
SQL
)
        [ -z "$rows" ] && continue
        ids=(); lease=
        while IFS=$'\t' read -r id lease_token message; do
            # "Send" it. A real worker calls the email/push/SMS provider here, passing the
            # idempotency key, and calls personalize.fail(id, lease, error) when that fails.
            printf '%s\n' "$message" >> "$out"
            ids+=("$id"); lease=$lease_token
        done <<< "$rows"
        acked=$(sql -v lease="$lease" -v ids="{$(IFS=,; echo "${ids[*]}")}" \
                    <<< "SELECT personalize.ack_batch(:'lease', :'ids')")
        delivered=$((delivered + acked)); got=$((got + ${#ids[@]}))
        [ "$acked" -eq "${#ids[@]}" ] || echo "worker: ${#ids[@]} delivered, $acked acked (a lease expired; those will be redelivered)" >&2
    done
    if [ "$got" -eq 0 ]; then
        $once && break
        sleep "$poll"
    fi
done
echo "worker: $delivered message(s) delivered and acked" >&2
