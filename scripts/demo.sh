#!/usr/bin/env bash
# The main job, end to end on a private cluster with a synthetic shop:
# events → tracking-plan validation → (accepted | quarantined with reasons) → status.
source "$(dirname "$0")/lib.sh"
EVENTS=${DEMO_EVENTS:-20000}

install_prereqs
install_extension
say "Starting our own PostgreSQL 15 cluster on port $PP_PORT ($PP_DATA)"
start_cluster
fresh_db personalize_demo
psql -X -d personalize_demo -v ON_ERROR_STOP=1 -v events="$EVENTS" -f "$ROOT/scripts/demo.sql"
say "Done. Connect with: psql -h $PP_SOCK -p $PP_PORT -U postgres personalize_demo"
echo "   Stop the cluster with: $PGBIN/pg_ctl -D $PP_DATA stop  (as $( [ "$(id -u)" = 0 ] && echo postgres || id -un))"
