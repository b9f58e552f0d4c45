#!/usr/bin/env bash
# The previous release's own library writes a database; this release's library updates it (as
# pg_search's upgrade job does). tests/upgrade.sh updates databases of every release, but this
# release's library writes their data; this test catches what only the old code wrote.
#   1. Builds the previous release from its commit (sql/releases/README.md) and installs it into
#      a copy of this PostgreSQL installation. The install script it generates must be the one
#      kept in sql/releases/, but for pgrx's "-- src/file.rs:line" comments.
#   2. A cluster run by that copy: a shop's events, two models, segments, campaigns with
#      pending, cancelled and sent messages, an experiment with exposures and a rejected event,
#      all written by the old library; then a digest of every table's rows.
#   3. The same data directory, started by this installation (this release's library), is
#      updated with ALTER EXTENSION UPDATE. Every row the old library wrote must still be there,
#      value for value. The default tracking plan's rows are the update's to change, and must
#      then equal a fresh install's. The recommendations must be the same. New events must fire
#      campaigns, and claims and training must work.
source "$(dirname "$0")/../scripts/lib.sh"

if ! git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    echo "SKIP: not a git checkout, so the previous release cannot be built from its commit"
    exit 0
fi
prev=$(release_versions | tail -1)
commit=$(release_commit "$prev")
new=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
[ -n "$commit" ] || { echo "FAIL: sql/releases/README.md names no commit for $prev"; exit 1; }
git -C "$ROOT" cat-file -e "$commit^{commit}" 2>/dev/null || {
    echo "FAIL: commit $commit of release $prev is not in this clone (shallow? git fetch --unshallow)"
    exit 1
}
if tagged=$(git -C "$ROOT" rev-parse -q --verify "refs/tags/v$prev^{commit}"); then
    [ "$tagged" = "$commit" ] || { echo "FAIL: tag v$prev is $tagged, sql/releases/README.md says $commit"; exit 1; }
fi
major=$(pg_major)
if ! git -C "$ROOT" show "$commit:Cargo.toml" | grep -q "^pg$major = "; then
    echo "SKIP: release $prev does not build for PostgreSQL $major"
    exit 0
fi

start_cluster  # makes $PP_RUN, owned by the cluster's owner
work=$PP_RUN/old-release
port=$((PP_PORT + 7))
data=$work/data
bindir=$("$PG_CONFIG" --bindir)
pkglibdir=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)
old_bin=$work/pg$bindir
stop_old_cluster() {  # never fails: a stale postmaster.pid from a killed run is removed below
    if [ -f "$data/postmaster.pid" ]; then
        as_pg_owner "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}
# The copy of the installation is large; the data directory and the log stay for a look.
trap 'stop_old_cluster; as_root rm -rf "$work/pg" "$work/src"' EXIT
stop_old_cluster
as_root rm -rf "$work"
mkdir -p "$work/src"
[ "$(id -u)" = 0 ] && chown postgres "$work"

say "1. release $prev (commit ${commit:0:12}) built and installed into a copy of PostgreSQL $major"
git -C "$ROOT" archive "$commit" | tar -x -C "$work/src"
features=()
[ "$major" = 15 ] || features=(--no-default-features --features "pg$major")
# Outside this workspace and into a target directory of its own: both releases build a
# library and a pgrx_embed binary of the same names, and cargo does not link a fresh one into
# place again, so a shared target directory can hand one release's schema generator to the
# other. The directory is kept between runs (a first build takes a few minutes).
(cd "$work/src" && CARGO_TARGET_DIR="$ROOT/target/old-release" cargo pgrx package --debug \
    "${features[@]}" --pg-config "$PG_CONFIG" --out-dir "$work/pkg") >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log"; echo "FAIL: release $prev did not build"; exit 1; }
generated=$work/pkg$sharedir/extension/pg_personalize--$prev.sql
source_lines='^-- src/[^ ]*:[0-9]+$'
if ! diff <(grep -Ev "$source_lines" "$generated") \
          <(grep -Ev "$source_lines" "$ROOT/sql/releases/pg_personalize--$prev.sql") >"$work/script.diff"; then
    head -40 "$work/script.diff"
    echo "FAIL: release $prev's commit generates another install script than sql/releases/ keeps"
    exit 1
fi
echo "its install script is the one sql/releases/ keeps"
# PostgreSQL finds its library and share directories relative to its binaries, so the three
# copied side by side make an installation of their own.
mkdir -p "$work/pg"
as_root tar -C / --exclude="${pkglibdir#/}/bitcode" -cf - "${bindir#/}" "${pkglibdir#/}" "${sharedir#/}" \
    | tar -C "$work/pg" -xf -
[ "$("$old_bin/pg_config" --pkglibdir)" = "$work/pg$pkglibdir" ] \
    || { echo "FAIL: the copy of PostgreSQL does not find its own library directory"; exit 1; }
rm -f "$work/pg$pkglibdir/pg_personalize.so" "$work/pg$sharedir/extension/pg_personalize"*
cp "$work/pkg$pkglibdir/pg_personalize.so" "$work/pg$pkglibdir/"
cp "$work/pkg$sharedir/extension/pg_personalize"* "$work/pg$sharedir/extension/"

start_old() {  # start_old BINDIR: the cluster on $data, run by the installation of BINDIR
    as_pg_owner env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$1/pg_ctl" -D "$data" \
        -l "$work/postgres.log" -w start \
        -o "-p $port -k $PP_SOCK -c listen_addresses='' -c fsync=off -c max_connections=20" >/dev/null
}
P() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$PP_SOCK" -p "$port" -d postgres "$@"; }
as_pg_owner "$old_bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
start_old "$old_bin"

say "2. release $prev's library writes the database"
P <<SQL
SET client_min_messages = warning;
SET personalize.training_threads = 1;
CREATE EXTENSION pg_personalize;
DO \$\$ BEGIN
    IF (SELECT extversion FROM pg_extension WHERE extname = 'pg_personalize') <> '$prev' THEN
        RAISE EXCEPTION 'the copy installed another version than $prev';
    END IF;
END \$\$;
SELECT * FROM personalize.generate_shop(6000, users => 200, items => 80, seed => 11) \g /dev/null
SELECT * FROM personalize.train() \g /dev/null
SELECT * FROM personalize.train(model_name => 'als_small', model_type => 'als', factors => 8, iterations => 3) \g /dev/null
INSERT INTO personalize.segments (name, definition) VALUES
  ('buyers', '{"bought": {}}'),
  ('big_spenders', '{"total_spend": {"min": 300}}');
INSERT INTO personalize.campaigns (name, trigger_event_type, delay, cancel_on, channel, recommendations, template)
VALUES ('browse_abandonment', 'view', '2 hours', '{purchase}', 'email', 3,
        '{"to": "{{user_id}}", "subject": "Still thinking about {{item_title}}?"}'),
       ('cart_now', 'add_to_cart', '0 seconds', '{}', 'push', 0, '{"title": "{{item_title}} is in your cart"}');
-- Pending (views), cancelled (a purchase after the view) and due-now (carts) messages.
SELECT count(personalize.track(jsonb_build_object('type', t, 'user_id', u, 'item_id', i)))
  FROM (VALUES ('view', 'old-1', 'P0000001'), ('view', 'old-2', 'P0000002'),
               ('purchase', 'old-2', 'P0000002'), ('add_to_cart', 'old-3', 'P0000003'),
               ('add_to_cart', 'old-4', 'P0000004')) v(t, u, i) \g /dev/null
-- One due message claimed and sent by a worker.
SELECT personalize.ack(message_id, lease_token) FROM personalize.claim_messages('push', 1, '1 minute') \g /dev/null
-- A rejected event in the quarantine.
SELECT personalize.track('{"type": "no_such_type", "user_id": "old-5"}') \g /dev/null
INSERT INTO personalize.experiments (name, variants)
VALUES ('home_grid', '[{"name": "control", "weight": 50}, {"name": "als", "weight": 50, "model": "als_small"}]');
SELECT count(personalize.log_exposure('home_grid', u, 'home'))
  FROM (SELECT DISTINCT user_id FROM personalize.events ORDER BY 1 LIMIT 40) e(u) \g /dev/null

-- What the old library wrote: each table's rows (its columns of $prev), counted and digested.
CREATE TABLE public.old_columns AS
SELECT c.relname AS tbl, string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) AS cols
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relnamespace = 'personalize'::regnamespace AND c.relkind = 'r'
 GROUP BY c.relname;
CREATE FUNCTION public.digests() RETURNS TABLE (tbl text, n bigint, digest text) LANGUAGE plpgsql AS \$\$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM public.old_columns ORDER BY 1 LOOP
        tbl := r.tbl;
        EXECUTE format('SELECT count(*), md5(coalesce(string_agg(CAST(x AS text), E''\n'' ORDER BY CAST(x AS text)), ''''))
                          FROM (SELECT %s FROM personalize.%I %s) x',
                       r.cols, r.tbl,
                       -- The default plan is the extension's to update; the shop's rows are not.
                       CASE WHEN r.tbl = 'event_types' THEN 'WHERE origin <> ''default''' ELSE '' END)
           INTO n, digest;
        RETURN NEXT;
    END LOOP;
END \$\$;
CREATE TABLE public.before AS SELECT * FROM public.digests();
CREATE TABLE public.before_segments AS
SELECT s.name, ARRAY(SELECT personalize.segment_members(s.name)) AS members
  FROM personalize.segments s;
CREATE TABLE public.before_recs AS
SELECT u AS user_id, m AS model_name,
       (SELECT string_agg(item_id, ',' ORDER BY score DESC, item_id)
          FROM personalize.recommend(u, 10, model => m)) AS recs
  FROM unnest(ARRAY['U0000001', 'U0000002', 'U0000050', 'old-1', 'nobody']) u,
       unnest(ARRAY['default', 'als_small']) m;
SQL
P -c "SELECT tbl || ': ' || n FROM public.before WHERE n > 0 ORDER BY 1" | paste -sd' ' | fold -s -w 100
P -c "SELECT 'outbox: ' || string_agg(state || ' ' || n, ', ' ORDER BY state) FROM (SELECT state, count(*) AS n FROM personalize.outbox GROUP BY 1) s"
as_pg_owner "$old_bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null

say "3. this release's library ($new) updates it"
start_old "$PGBIN"
P <<SQL
SET client_min_messages = warning;
ALTER EXTENSION pg_personalize UPDATE;
SET client_min_messages = notice;
DO \$\$
DECLARE
    changed text;
    recs_changed text;
BEGIN
    IF (SELECT extversion FROM pg_extension WHERE extname = 'pg_personalize') <> '$new' THEN
        RAISE EXCEPTION 'not updated to $new';
    END IF;
    SELECT string_agg(b.tbl || ' (' || b.n || ' rows before, ' || a.n || ' after)', ', ') INTO changed
      FROM public.before b JOIN public.digests() a USING (tbl)
     WHERE a.digest IS DISTINCT FROM b.digest;
    IF changed IS NOT NULL THEN
        RAISE EXCEPTION 'rows the old library wrote changed in the update: %', changed;
    END IF;
    SELECT string_agg(b.user_id || '/' || b.model_name, ', ') INTO recs_changed
      FROM public.before_recs b
     WHERE b.recs IS DISTINCT FROM (SELECT string_agg(item_id, ',' ORDER BY score DESC, item_id)
                                      FROM personalize.recommend(b.user_id, 10, model => b.model_name));
    IF recs_changed IS NOT NULL THEN
        RAISE EXCEPTION 'recommendations changed in the update: %', recs_changed;
    END IF;
    IF EXISTS (SELECT 1 FROM public.before_segments b
                WHERE b.members IS DISTINCT FROM ARRAY(SELECT personalize.segment_members(b.name))
                   OR cardinality(b.members) = 0) THEN
        RAISE EXCEPTION 'the old segments have other members (or none)';
    END IF;
    RAISE NOTICE 'every row of % tables unchanged; % recommendation lists and % segments'' members the same',
        (SELECT count(*) FROM public.before), (SELECT count(*) FROM public.before_recs),
        (SELECT count(*) FROM public.before_segments);
END \$\$;
SQL
# The default plan, as updated, equals a fresh install's.
P -c "CREATE DATABASE pp_fresh"
psql -X -q -At -v ON_ERROR_STOP=1 -h "$PP_SOCK" -p "$port" -d pp_fresh -c "SET client_min_messages = warning" \
    -c "CREATE EXTENSION pg_personalize"
plan='SELECT string_agg(CAST(t AS text), E'"'"'\n'"'"' ORDER BY t.event_type)
        FROM (SELECT event_type, is_purchase, weight, properties_schema, origin
                FROM personalize.event_types WHERE origin = '"'"'default'"'"') t'
fresh_plan=$(psql -X -q -At -v ON_ERROR_STOP=1 -h "$PP_SOCK" -p "$port" -d pp_fresh -c "$plan")
updated_plan=$(P -c "$plan")
[ -n "$fresh_plan" ] && [ "$fresh_plan" = "$updated_plan" ] \
    || { diff <(echo "$fresh_plan") <(echo "$updated_plan"); echo "FAIL: the updated default plan differs from a fresh install's"; exit 1; }
echo "the default tracking plan equals a fresh install's"
# This release's library at work on the old library's data.
P <<'SQL'
SET personalize.training_threads = 1;
DO $$
DECLARE
    claimed bigint;
BEGIN
    -- Written pending, or cancelled at once when the push channel's consent policy refuses it.
    PERFORM personalize.track(jsonb_build_object('type', 'add_to_cart', 'user_id', 'new-1', 'item_id', 'P0000005'));
    IF (SELECT count(*) FROM personalize.outbox WHERE user_id = 'new-1' AND campaign = 'cart_now') <> 1 THEN
        RAISE EXCEPTION 'a new event did not fire the campaign the old library defined';
    END IF;
    SELECT count(*) INTO claimed FROM personalize.claim_messages('push', 10, '1 minute');
    IF (SELECT count(*) FROM personalize.outbox WHERE state = 'pending' AND channel = 'push') <> 0 THEN
        RAISE EXCEPTION 'a claim left due push messages pending';
    END IF;
    SET LOCAL client_min_messages = warning;
    PERFORM * FROM personalize.train();
    SET LOCAL client_min_messages = notice;
    IF (SELECT count(*) FROM personalize.recommend('U0000001', 10)) <> 10 THEN
        RAISE EXCEPTION 'the retrained model does not serve';
    END IF;
    RAISE NOTICE 'new events fire campaigns; a claim took % push messages and left none pending (consent cancels the others); training works', claimed;
END $$;
SQL
echo "PASS: $prev, written by its own library, updated to $new"
