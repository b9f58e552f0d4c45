# Shared by the scenario tests (tests/faults.sh, tests/cancel_training.sh): a scratch
# directory, background jobs stopped and the cluster removed on exit, and PASS/FAIL per scenario.
# Source it after scripts/lib.sh, with DB set.
set -E
WORK=$(mktemp -d)
chmod 755 "$WORK"    # the postgres OS user writes into it when we are root
BG=()                # background jobs we started
passed=(); failed=()

cleanup() {
    local p
    for p in "${BG[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${BG[@]}"; do wait "$p" 2>/dev/null || true; done
    stop_cluster
    rm -rf "$PP_RUN" "$WORK"
}
trap cleanup EXIT
trap 'echo "FAIL: unexpected error at line $LINENO: $BASH_COMMAND"' ERR

export PGOPTIONS="-c client_min_messages=warning"
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
# wait_for SECONDS COMMAND...: polls COMMAND every 0.05 s until it succeeds; 1 on timeout.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -ge $deadline ] && return 1; sleep 0.05; done
}
# eq A B [C D …]: every pair equal.
eq() { while [ $# -ge 2 ]; do [ "$1" = "$2" ] || return 1; shift 2; done; }

scenario_ok=true
ok()  { echo "  ok: $*"; }
bad() { echo "  NOT OK: $*"; scenario_ok=false; }
# check DESCRIPTION TEST...: runs the test (e.g. [ "$a" = "$b" ]) and records the outcome.
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
result() {
    if $scenario_ok; then echo "PASS: $1"; passed+=("$1"); else echo "FAIL: $1"; failed+=("$1"); fi
    scenario_ok=true
}
# The last lines of a scenario test: every outcome, the count, non-zero exit on any failure.
summary() {
    say "Summary"
    local s
    for s in "${passed[@]}"; do echo "PASS: $s"; done
    for s in "${failed[@]}"; do echo "FAIL: $s"; done
    echo "${#passed[@]} passed, ${#failed[@]} failed (${SECONDS} s)"
    if [ ${#failed[@]} -gt 0 ]; then exit 1; fi
}
