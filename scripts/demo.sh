#!/usr/bin/env bash
# The main job, end to end on a private cluster with a synthetic shop:
# events → tracking-plan validation → (accepted | quarantined with reasons) → training →
# recommendations → segments → campaign outbox → the reference worker delivering messages →
# an A/B experiment with a known true effect and its report.
source "$(dirname "$0")/lib.sh"
EVENTS=${DEMO_EVENTS:-20000}

install_prereqs
install_extension
say "Starting our own PostgreSQL 15 cluster on port $PP_PORT ($PP_DATA)"
start_cluster
fresh_db personalize_demo
psql -X -d personalize_demo -v ON_ERROR_STOP=1 -v events="$EVENTS" -f "$ROOT/scripts/demo.sql"

# 13. The reference worker (scripts/outbox_worker.sh) delivers what is due: it claims with a
# lease, "sends" by appending JSON lines to a file, and acks.
delivered=$PP_RUN/delivered.jsonl
rm -f "$delivered"
say "13. The worker delivers what is due now (the big spender's push; shopper-C's is cancelled); the email waits for its 2 hours"
bash "$ROOT/scripts/outbox_worker.sh" --db personalize_demo --once --out "$delivered"
cat "$delivered"
say "    Two hours later (fast-forwarded): the email goes out, with recommendations computed at claim time"
psql -X -q -d personalize_demo -v ON_ERROR_STOP=1 \
    -c "UPDATE personalize.outbox SET visible_at = now() WHERE state = 'pending' AND campaign = 'camera_browse_abandonment'"
: > "$delivered"
bash "$ROOT/scripts/outbox_worker.sh" --db personalize_demo --once --out "$delivered"
python3 -m json.tool < "$delivered" 2>/dev/null || cat "$delivered"
psql -X -d personalize_demo -v ON_ERROR_STOP=1 -c "\pset footer off" \
    -c "SELECT message_id, campaign, channel, user_id, state, attempts, last_error FROM personalize.outbox ORDER BY message_id" \
    -c "SELECT * FROM personalize.status WHERE section IN ('outbox', 'totals') ORDER BY section, name"
psql -X -d personalize_demo -v ON_ERROR_STOP=1 -f "$ROOT/scripts/demo_experiment.sql"
say "Done. Connect with: psql -h $PP_SOCK -p $PP_PORT -U postgres personalize_demo"
echo "   Stop the cluster with: $PGBIN/pg_ctl -D $PP_DATA stop  (as $( [ "$(id -u)" = 0 ] && echo postgres || id -un))"
