# Shared by the project's scripts: prerequisites, build/install, and a private PostgreSQL
# cluster of our own (never the system's). Source it; do not run it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$PGBIN/pg_config
PGRX_VERSION=0.18.1
# Our cluster: its own port and directory, owned by the postgres OS user when we are root
# (PostgreSQL refuses to run as root) and by the current user otherwise.
PP_PORT=${PP_PORT:-54329}
PP_RUN=${PP_RUN:-${TMPDIR:-/tmp}/pg_personalize.$(id -u).$PP_PORT}
PP_DATA=$PP_RUN/data
PP_SOCK=$PP_RUN/sock
export PGHOST=$PP_SOCK PGPORT=$PP_PORT PGUSER=postgres

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Runs a command as the cluster's owner.
as_pg_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

install_prereqs() {
    local pkgs=(postgresql-15 postgresql-client-15 postgresql-server-dev-15 libclang-dev clang
                sudo pkg-config gcc make gzip)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "Installing Debian packages: ${missing[*]}"
        if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
            echo "need root or sudo to install: ${missing[*]}" >&2; exit 1
        fi
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # Debian's postgresql package starts the system cluster; we leave it alone and use our own.
    if ! command -v cargo >/dev/null; then
        echo "cargo (Rust 1.95 or newer) is required: https://rustup.rs" >&2; exit 1
    fi
    if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
        say "Installing cargo-pgrx $PGRX_VERSION (takes several minutes, once)"
        cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
    fi
    if ! grep -qs "^pg15 *= *\"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
        cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
    fi
}

# Builds the extension and installs it into the system's PostgreSQL 15 directories.
# PP_PROFILE=dev (the test command) reuses the dependencies `cargo pgrx test` just built;
# the demo and the benchmarks use release.
install_extension() {
    local profile=()
    [ "${PP_PROFILE:-release}" = release ] && profile=(--release)
    say "Building and installing pg_personalize (${PP_PROFILE:-release} build)"
    cd "$ROOT"
    # Unlink the old library first: the copy then gets a new inode, and backends of running
    # clusters that have the old one mapped keep a valid file instead of a truncated one.
    as_root rm -f "$("$PG_CONFIG" --pkglibdir)/pg_personalize.so"
    if [ "$(id -u)" = 0 ]; then
        cargo pgrx install "${profile[@]}" --pg-config "$PG_CONFIG"
    else
        cargo pgrx install "${profile[@]}" --sudo --pg-config "$PG_CONFIG"
    fi
}

# PP_PG_OPTS adds server options (a later -c wins: fault tests turn synchronous_commit back on).
start_cluster() {
    mkdir -p "$PP_RUN"
    if [ "$(id -u)" = 0 ]; then chown postgres "$PP_RUN"; fi
    chmod 755 "$PP_RUN"
    if [ ! -f "$PP_DATA/PG_VERSION" ]; then
        as_pg_owner mkdir -p "$PP_SOCK"
        as_pg_owner "$PGBIN/initdb" -D "$PP_DATA" -U postgres --auth=trust -E UTF8 \
            --locale=C.UTF-8 >/dev/null
    fi
    if ! as_pg_owner "$PGBIN/pg_ctl" -D "$PP_DATA" status >/dev/null 2>&1; then
        # Without RUST_BACKTRACE: with it, pgrx captures a backtrace for every error raised
        # (0.3-0.5 s each), which no production server pays.
        as_pg_owner env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE \
            "$PGBIN/pg_ctl" -D "$PP_DATA" -l "$PP_RUN/postgres.log" -w start \
            -o "-p $PP_PORT -k $PP_SOCK -c listen_addresses='' -c max_connections=50 \
                -c shared_buffers=512MB -c maintenance_work_mem=2GB -c fsync=off \
                -c synchronous_commit=off -c full_page_writes=off ${PP_PG_OPTS:-}" >/dev/null
    fi
}

stop_cluster() {
    as_pg_owner "$PGBIN/pg_ctl" -D "$PP_DATA" -m fast stop >/dev/null 2>&1 || true
}

# Drops and recreates a database on our cluster.
fresh_db() {
    PGOPTIONS="-c client_min_messages=warning" psql -q -d postgres -v ON_ERROR_STOP=1 \
        -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
}
