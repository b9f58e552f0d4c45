#!/usr/bin/env bash
# Builds what a DBA installs on a machine without Rust, into dist/, for one PostgreSQL major
# (15, Debian's, by default; --major=16 or --major=18 builds against that major's installation
# from its PyPI wheel, fetched once by scripts/lib.sh; --all-majors builds all three):
#   postgresql-<major>-pg-personalize_<version>_<arch>.deb  (dpkg -i; depends on
#       postgresql-<major>, files in Debian's and PGDG's paths /usr/lib/postgresql/<major>/lib
#       and /usr/share/postgresql/<major>/extension)
#   pg_personalize-<version>-pg<major>-<arch>.tar.gz        (tar xzf, then sudo ./install.sh,
#       which installs into the PostgreSQL that pg_config names and refuses another major)
# Both hold the release library, the control file, the install script of this version and every
# upgrade script (ALTER EXTENSION pg_personalize UPDATE). And, with major 15, the delivery
# worker, a package of its own (it does not depend on the major; it runs wherever the network
# to the providers is, not only on the database host):
#   pg-personalize-worker_<version>_<arch>.deb   /usr/bin/pg-personalize-worker, a systemd
#       unit (pg-personalize-worker.service, run as a system user of that name), an example
#       /etc/pg-personalize-worker/worker.toml and secrets.env (conffiles)
#
#   bash scripts/package.sh            build both
#   bash scripts/package.sh --verify   also install the .debs (dpkg -i) over this machine's copy,
#                                      CREATE EXTENSION and run the loop in a fresh cluster,
#                                      check the worker against it (--check) and its unit
#                                      (systemd-analyze verify), then leave the packages
#                                      installed (dpkg -r removes them). For 16 and 18, which
#                                      this machine has only as wheels (no postgresql-16 for
#                                      dpkg): check the .deb's paths, install the tarball into
#                                      the wheel's installation and run the loop in a cluster
#                                      of that version.
#   bash scripts/package.sh --all-majors [--verify]
set -euo pipefail
major_wanted=15; verify=0; all=0
for arg in "$@"; do
    case $arg in
        --verify) verify=1 ;;
        --major=*) major_wanted=${arg#--major=} ;;
        --all-majors) all=1 ;;
        *) echo "usage: package.sh [--major=15|16|18 | --all-majors] [--verify]" >&2; exit 2 ;;
    esac
done
if [ $all = 1 ]; then
    for m in 15 16 18; do
        # Each major finds its own installation: an exported PP_PGBIN would name one for all.
        if [ $verify = 1 ]; then env -u PP_PGBIN bash "$0" --major=$m --verify
        else env -u PP_PGBIN bash "$0" --major=$m; fi
    done
    exit 0
fi
if [ "$major_wanted" != 15 ] && [ -z "${PP_PGBIN:-}" ]; then
    # fetch_postgres registers the wheel with cargo pgrx, which install_prereqs provides.
    PP_PGBIN=$(bash -c "source '$(dirname "$0")/lib.sh' && install_prereqs >&2 && fetch_postgres $major_wanted")
    export PP_PGBIN
fi
source "$(dirname "$0")/lib.sh"
install_prereqs
cd "$ROOT"
major=$(pg_major)
[ "$major" = "$major_wanted" ] || { echo "PP_PGBIN is PostgreSQL $major, not $major_wanted" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
stage=$ROOT/target/package-stage
dist=$ROOT/dist
rm -rf "$stage"; mkdir -p "$stage" "$dist"

say "Building the release library and scripts for PostgreSQL $major (cargo pgrx package)"
features=()
[ "$major" = 15 ] || features=(--no-default-features --features "pg$major")
cargo pgrx package "${features[@]}" --pg-config "$PG_CONFIG" --out-dir "$stage/root"
root=$stage/root
libdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension
so=$root$libdir/pg_personalize.so
[ -f "$so" ] || { echo "no library at $so" >&2; exit 1; }
strip --strip-debug "$so"
# What the library needs at run time: only the C library and PostgreSQL itself.
echo "shared libraries needed:"; objdump -p "$so" | awk '/NEEDED/ {print "  " $2}'
ls "$root$extdir"

say "Debian package"
deb_name=postgresql-$major-pg-personalize
deb_root=$stage/deb
# Debian's (and PGDG's) paths for this major, whatever prefix the pg_config built against has.
deb_lib=/usr/lib/postgresql/$major/lib
deb_ext=/usr/share/postgresql/$major/extension
mkdir -p "$deb_root/DEBIAN" "$deb_root$deb_lib" "$deb_root$deb_ext"
install -m 755 "$so" "$deb_root$deb_lib/"
install -m 644 "$root$extdir"/pg_personalize* "$deb_root$deb_ext/"
mkdir -p "$deb_root/usr/share/doc/$deb_name"
cp README.md "$deb_root/usr/share/doc/$deb_name/"
[ -f LICENSE ] && cp LICENSE "$deb_root/usr/share/doc/$deb_name/copyright"
libc=$(dpkg-query -W -f='${Version}' libc6 | cut -d- -f1)
cat >"$deb_root/DEBIAN/control" <<EOF
Package: $deb_name
Version: $version
Architecture: $arch
Maintainer: pg_personalize developers <pg_personalize@localhost>
Depends: postgresql-$major, libc6 (>= $libc), libgcc-s1
Section: database
Priority: optional
Installed-Size: $(du -sk "$deb_root" | cut -f1)
Description: personalization inside PostgreSQL $major
 Validated behaviour events, matrix-factorization recommendations, segments,
 trigger-fired campaigns with an outbox for workers, and A/B experiments.
 After installing: CREATE EXTENSION pg_personalize; in each database.
EOF
deb=$dist/${deb_name}_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zgzip --build "$deb_root" "$deb" >/dev/null
dpkg-deb --info "$deb" | sed -n '/Package/,/Depends/p'
dpkg-deb --contents "$deb" | awk '{print "  " $6}' | grep -v '/$'

if [ "$major" = 15 ]; then
say "The delivery worker's Debian package"
cargo build -q --release -p personalize-worker
w_name=pg-personalize-worker
w_root=$stage/worker-deb
mkdir -p "$w_root/DEBIAN" "$w_root/usr/bin" "$w_root/lib/systemd/system" "$w_root/etc/$w_name" \
    "$w_root/usr/share/doc/$w_name"
install -m 755 target/release/pg-personalize-worker "$w_root/usr/bin/"
strip --strip-debug "$w_root/usr/bin/pg-personalize-worker"
install -m 644 packaging/pg-personalize-worker.service "$w_root/lib/systemd/system/"
install -m 644 packaging/worker.example.toml "$w_root/etc/$w_name/worker.toml"
printf '# SMTP_PASSWORD=\n# WHATSAPP_TOKEN=\n# TWILIO_AUTH_TOKEN=\n# WEBHOOK_SECRET=\n' > "$w_root/etc/$w_name/secrets.env"
chmod 640 "$w_root/etc/$w_name/secrets.env"
cp README.md packaging/worker.example.toml "$w_root/usr/share/doc/$w_name/"
printf '/etc/%s/worker.toml\n/etc/%s/secrets.env\n' "$w_name" "$w_name" > "$w_root/DEBIAN/conffiles"
install -m 755 packaging/worker.postinst "$w_root/DEBIAN/postinst"
install -m 755 packaging/worker.prerm "$w_root/DEBIAN/prerm"
cat >"$w_root/DEBIAN/control" <<EOF
Package: $w_name
Version: $version
Architecture: $arch
Maintainer: pg_personalize developers <pg_personalize@localhost>
Depends: libc6 (>= $libc), libgcc-s1, adduser
Recommends: ca-certificates
Section: mail
Priority: optional
Installed-Size: $(du -sk "$w_root" | cut -f1)
Description: delivery worker for pg_personalize's campaign outbox
 Claims due campaign messages from a database with the pg_personalize
 extension and delivers them: email over SMTP (with one-click unsubscribe),
 WhatsApp Business Cloud API, SMS through Twilio, push through Firebase Cloud
 Messaging, and signed webhooks. Prometheus metrics and a health endpoint.
EOF
w_deb=$dist/${w_name}_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zgzip --build "$w_root" "$w_deb" >/dev/null
echo "shared libraries the worker needs:"; objdump -p "$w_root/usr/bin/pg-personalize-worker" | awk '/NEEDED/ {print "  " $2}'
dpkg-deb --contents "$w_deb" | awk '{print "  " $6}' | grep -v '/$'
fi

say "Tarball with an install script"
tar_name=pg_personalize-$version-pg$major-$arch
tar_root=$stage/$tar_name
mkdir -p "$tar_root/lib" "$tar_root/extension"
cp "$so" "$tar_root/lib/"
cp "$root$extdir"/pg_personalize* "$tar_root/extension/"
cp README.md "$tar_root/"
cat >"$tar_root/install.sh" <<'EOF'
#!/bin/sh
# Installs pg_personalize into the PostgreSQL @MAJOR@ that pg_config (or $PG_CONFIG) names.
# Run as root (or with sudo). Then, in each database: CREATE EXTENSION pg_personalize;
set -eu
here=$(cd "$(dirname "$0")" && pwd)
PG_CONFIG=${PG_CONFIG:-$(command -v pg_config || echo /usr/lib/postgresql/@MAJOR@/bin/pg_config)}
major=$("$PG_CONFIG" --version | sed 's/^PostgreSQL \([0-9]*\).*/\1/')
[ "$major" = @MAJOR@ ] || { echo "this build is for PostgreSQL @MAJOR@, $PG_CONFIG is $major" >&2; exit 1; }
libdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension
# Unlink first: running backends keep the old file's pages instead of reading a half-copied one.
rm -f "$libdir/pg_personalize.so"
install -m 755 "$here/lib/pg_personalize.so" "$libdir/"
install -m 644 "$here"/extension/* "$extdir/"
echo "installed into $libdir and $extdir"
EOF
sed -i "s/@MAJOR@/$major/g" "$tar_root/install.sh"
chmod +x "$tar_root/install.sh"
tarball=$dist/$tar_name.tar.gz
tar -C "$stage" -czf "$tarball" "$tar_name"
ls -l "$dist"/*"$version"*

# The loop a fresh cluster must run with the installed package.
verify_loop() {
    fresh_db pp_package
    psql -X -q -d pp_package -v ON_ERROR_STOP=1 <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_personalize;
SELECT extversion, current_setting('server_version_num')::int / 10000 AS major
  FROM pg_extension WHERE extname = 'pg_personalize';
SELECT accepted FROM personalize.generate_shop(5000, users => 200, items => 80);
SELECT users, items FROM personalize.train(factors => 8, iterations => 3);
SELECT count(*) AS recommendations FROM personalize.recommend('U0000001', 10);
SQL
}

if [ $verify = 1 ] && [ "$major" != 15 ]; then
    say "Verifying PostgreSQL $major: the .deb's paths, then the tarball's install.sh into $PGBIN/.. and the loop"
    dpkg-deb --contents "$deb" | awk '{print $6}' | grep -qx "./usr/lib/postgresql/$major/lib/pg_personalize.so"
    dpkg-deb --contents "$deb" | awk '{print $6}' | grep -qx "./usr/share/postgresql/$major/extension/pg_personalize.control"
    dpkg-deb --info "$deb" | grep -q "Depends: postgresql-$major,"
    check=$(mktemp -d)
    tar -C "$check" -xzf "$tarball"
    as_root env PG_CONFIG="$PG_CONFIG" "$check/$tar_name/install.sh"
    refusal=$(PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config "$check/$tar_name/install.sh" 2>&1) && {
        echo "install.sh installed a PostgreSQL $major build into 15" >&2; exit 1
    }
    grep -q "this build is for PostgreSQL $major" <<<"$refusal" ||
        { echo "install.sh failed for another reason than the major: $refusal" >&2; exit 1; }
    rm -rf "$check"
    unset PP_RUN; export PP_PORT=$((54350 + major))
    source "$ROOT/scripts/lib.sh"
    as_root rm -rf "$PP_RUN"
    start_cluster
    # A failed check must not leave the cluster running.
    trap stop_cluster EXIT
    verify_loop
    stop_cluster
    trap - EXIT
    as_root rm -rf "$PP_RUN"
    echo "PASS: PostgreSQL $major: the .deb's paths and dependency, the tarball installs and refuses 15, the extension serves"
elif [ $verify = 1 ]; then
    say "Verifying: dpkg -i, then CREATE EXTENSION and the loop in a fresh cluster"
    as_root dpkg -i "$deb" >/dev/null
    dpkg -s "$deb_name" | grep -E '^(Status|Version)'
    unset PP_RUN; export PP_PORT=54349
    source "$ROOT/scripts/lib.sh"
    as_root rm -rf "$PP_RUN"
    start_cluster
    # A failed check must not leave the cluster running.
    trap stop_cluster EXIT
    verify_loop
    say "Verifying the worker's package: dpkg -i, its unit, --check against the fresh cluster"
    as_root dpkg -i "$w_deb" >/dev/null
    /usr/bin/pg-personalize-worker --version
    if command -v systemd-analyze >/dev/null; then
        systemd-analyze verify /lib/systemd/system/pg-personalize-worker.service
    else
        echo "systemd-analyze not installed: the unit file is not verified"
    fi
    psql -X -q -d pp_package -c "CREATE ROLE pp_package_worker LOGIN IN ROLE personalize_worker"
    printf '[database]\nurl = "host=%s port=%s dbname=pp_package user=pp_package_worker"\n[webhook]\nurl = "http://127.0.0.1:9/hook"\n' \
        "$PP_SOCK" "$PP_PORT" > "$stage/verify-worker.toml"
    WEBHOOK_SECRET=verify /usr/bin/pg-personalize-worker --config "$stage/verify-worker.toml" --check
    psql -X -q -d pp_package -c "DROP ROLE pp_package_worker"
    stop_cluster
    trap - EXIT
    as_root rm -rf "$PP_RUN"
    echo "PASS: the packages install, the extension serves, the worker connects"
fi
