#!/usr/bin/env bash
# ALTER EXTENSION pg_personalize UPDATE from each earlier release to this one, with this
# release's library (tests/upgrade_old_library.sh has the previous release's own library write
# the database first):
#   1. an old database with data is updated, keeps its data and serves;
#   2. its catalogue (functions with volatility, security, settings, grants and comments;
#      tables, columns, constraints, indexes, triggers, views, grants, initial privileges,
#      extension members and dump configuration) equals a fresh install's, line for line;
#   3. the whole regression suite passes with every test installing the oldest release and
#      updating through every upgrade script.
# The releases are the install scripts kept in sql/releases/ (generated, kept as released);
# they are copied into PostgreSQL's extension directory for the test and removed afterwards if
# they were not there.
source "$(dirname "$0")/../scripts/lib.sh"
start_cluster

olds=$(release_versions)
[ -n "$olds" ] || { echo "FAIL: no release install scripts in sql/releases/"; exit 1; }
newest_old=$(echo "$olds" | tail -1)
oldest=$(echo "$olds" | head -1)
new=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
extdir=$("$PG_CONFIG" --sharedir)/extension
copied=()
trap 'for f in "${copied[@]}"; do as_root rm -f "$f"; done' EXIT
for old in $olds; do
    old_script=$extdir/pg_personalize--$old.sql
    if [ ! -f "$old_script" ]; then
        as_root cp "$ROOT/sql/releases/pg_personalize--$old.sql" "$old_script"
        copied+=("$old_script")
    fi
done
[ -f "$extdir/pg_personalize--$newest_old--$new.sql" ] \
    || { echo "FAIL: no upgrade script $newest_old -> $new installed"; exit 1; }

catalogue() {
    psql -X -At -d "$1" -v ON_ERROR_STOP=1 <<'SQL'
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'pg_personalize'),
acl(objoid, acl) AS (
    SELECT p.oid, (SELECT string_agg(coalesce(r.rolname, 'PUBLIC') || '=' || a.privilege_type, ' '
                                     ORDER BY 1)
                     FROM aclexplode(p.proacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee)
      FROM pg_proc p WHERE p.pronamespace = 'personalize'::regnamespace
    UNION ALL
    SELECT c.oid, (SELECT string_agg(coalesce(r.rolname, 'PUBLIC') || '=' || a.privilege_type, ' '
                                     ORDER BY 1)
                     FROM aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee)
      FROM pg_class c WHERE c.relnamespace = 'personalize'::regnamespace)
SELECT line FROM (
    SELECT 'function ' || p.oid::regprocedure || ' returns ' || pg_get_function_result(p.oid)
           || ' args(' || pg_get_function_arguments(p.oid) || ') ' || (SELECT lanname FROM pg_language WHERE oid = p.prolang)
           || ' vol=' || p.provolatile::text || ' par=' || p.proparallel::text || ' secdef=' || p.prosecdef
           || ' strict=' || p.proisstrict || ' config=' || coalesce(p.proconfig::text, '-')
           || ' src=' || md5(p.prosrc) || ' acl=' || coalesce(acl.acl, 'default')
           || ' comment=' || coalesce(md5(obj_description(p.oid, 'pg_proc')), '-')
      FROM pg_proc p LEFT JOIN acl ON acl.objoid = p.oid
     WHERE p.pronamespace = 'personalize'::regnamespace
    UNION ALL
    SELECT 'relation ' || c.relname || ' kind=' || c.relkind::text
           || ' acl=' || coalesce(acl.acl, 'default')
           || ' comment=' || coalesce(md5(obj_description(c.oid, 'pg_class')), '-')
           || CASE WHEN c.relkind = 'v' THEN ' view=' || md5(pg_get_viewdef(c.oid)) ELSE '' END
      FROM pg_class c LEFT JOIN acl ON acl.objoid = c.oid
     WHERE c.relnamespace = 'personalize'::regnamespace
    UNION ALL
    SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' notnull=' || a.attnotnull || ' identity=' || a.attidentity::text
           || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
           || ' comment=' || coalesce(md5(col_description(c.oid, a.attnum)), '-')
      FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
     WHERE c.relnamespace = 'personalize'::regnamespace AND c.relkind IN ('r', 'v', 'p')
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
     WHERE c.relnamespace = 'personalize'::regnamespace
    UNION ALL
    SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
      FROM pg_constraint WHERE connamespace = 'personalize'::regnamespace
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid)
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = 'personalize'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
      FROM pg_depend d, ext WHERE d.refclassid = 'pg_extension'::regclass
                              AND d.refobjid = ext.oid AND d.deptype = 'e'
    UNION ALL
    SELECT 'initprivs ' || pg_describe_object(i.classoid, i.objoid, i.objsubid) || ' '
           || (SELECT string_agg(coalesce(r.rolname, 'PUBLIC') || '=' || a.privilege_type, ' ' ORDER BY 1)
                 FROM aclexplode(i.initprivs) a LEFT JOIN pg_roles r ON r.oid = a.grantee)
      FROM pg_init_privs i
     WHERE (i.classoid = 'pg_proc'::regclass
            AND i.objoid IN (SELECT oid FROM pg_proc WHERE pronamespace = 'personalize'::regnamespace))
        OR (i.classoid = 'pg_class'::regclass
            AND i.objoid IN (SELECT oid FROM pg_class WHERE relnamespace = 'personalize'::regnamespace))
        OR (i.classoid = 'pg_namespace'::regclass AND i.objoid = 'personalize'::regnamespace)
    UNION ALL
    SELECT 'dump config ' || cfg::regclass || ' ' || coalesce(cond, '')
      FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(cfg, cond)
     WHERE e.extname = 'pg_personalize'
    UNION ALL
    SELECT 'role ' || rolname || ' login=' || rolcanlogin || ' member of '
           || coalesce((SELECT string_agg(g.rolname, ',' ORDER BY g.rolname)
                          FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                         WHERE m.member = r.oid), '-')
      FROM pg_roles r WHERE rolname LIKE 'personalize\_%'
) lines(line) ORDER BY line;
SQL
}
fresh_db pp_upgrade_new
psql -X -q -d pp_upgrade_new -v ON_ERROR_STOP=1 -c "CREATE EXTENSION pg_personalize"
catalogue pp_upgrade_new >"$PP_RUN/catalogue.fresh"
# Parts 1 and 2 for each old release (the loop body is not indented: it holds heredocs).
for old in $olds; do
say "1. a $old database with data, updated to $new"
fresh_db pp_upgrade_old
PGOPTIONS='-c client_min_messages=notice' psql -X -q -d pp_upgrade_old -v ON_ERROR_STOP=1 <<SQL
SET personalize.training_threads = 1;
SET client_min_messages = warning;
CREATE EXTENSION pg_personalize VERSION '$old';
SELECT * FROM personalize.generate_shop(3000, users => 100, items => 50, seed => 7) \g /dev/null
SELECT * FROM personalize.train(factors => 8, iterations => 3) \g /dev/null
INSERT INTO personalize.segments (name, definition) VALUES ('buyers', '{"bought": {}}');
CREATE TEMP TABLE before AS
  SELECT (SELECT count(*) FROM personalize.events) AS events,
         (SELECT string_agg(item_id, ',' ORDER BY score DESC, item_id)
            FROM personalize.recommend('U0000001', 5)) AS recs;
ALTER EXTENSION pg_personalize UPDATE;
SET client_min_messages = notice;
DO \$\$
DECLARE b record;
BEGIN
    IF (SELECT extversion FROM pg_extension WHERE extname = 'pg_personalize') <> '$new' THEN
        RAISE EXCEPTION 'not updated to $new';
    END IF;
    SELECT * INTO b FROM before;
    IF b.events <> (SELECT count(*) FROM personalize.events)
       OR b.recs IS DISTINCT FROM (SELECT string_agg(item_id, ',' ORDER BY score DESC, item_id)
                                    FROM personalize.recommend('U0000001', 5)) THEN
        RAISE EXCEPTION 'data or recommendations changed by the update';
    END IF;
    RAISE NOTICE 'updated to $new: % events and the recommendations unchanged', b.events;
END \$\$;
SQL

say "2. the updated catalogue equals a fresh $new install's"
catalogue pp_upgrade_old >"$PP_RUN/catalogue.updated"
lines=$(wc -l <"$PP_RUN/catalogue.fresh")
if ! diff -u "$PP_RUN/catalogue.fresh" "$PP_RUN/catalogue.updated"; then
    echo "FAIL: the updated catalogue differs from a fresh install's (- fresh, + updated)"; exit 1
fi
[ "$lines" -gt 300 ] || { echo "FAIL: the catalogue snapshot has only $lines lines"; exit 1; }
echo "identical: $lines catalogue lines"

done

old=$oldest
say "3. the regression suite, every test installing $old and updating to $new"
suite=$PP_RUN/upgrade-suite
rm -rf "$suite"; mkdir -p "$suite/sql" "$suite/expected" "$suite/out"
# Every test installs the extension in the shared setup file (tests/pg_regress/setup.psql).
sed "s/^CREATE EXTENSION pg_personalize;\$/CREATE EXTENSION pg_personalize VERSION '$old'; ALTER EXTENSION pg_personalize UPDATE;/" \
    "$ROOT/tests/pg_regress/setup.psql" >"$suite/setup.psql"
grep -q "ALTER EXTENSION pg_personalize UPDATE" "$suite/setup.psql" \
    || { echo "FAIL: setup.psql does not install the extension as expected"; exit 1; }
for f in "$ROOT"/tests/pg_regress/sql/*.sql; do
    grep -q '^\\i :abs_srcdir/setup.psql$' "$f" \
        || { echo "FAIL: $(basename "$f") does not start with the shared setup"; exit 1; }
    cp "$f" "$suite/sql/"
done
for f in "$ROOT"/tests/pg_regress/expected/*.out; do
    sed "s/^CREATE EXTENSION pg_personalize;\$/CREATE EXTENSION pg_personalize VERSION '$old'; ALTER EXTENSION pg_personalize UPDATE;/" \
        "$f" >"$suite/expected/$(basename "$f")"
done
fresh_db pp_upgrade_regress
tests=$(cd "$suite/sql" && ls *.sql | sed 's/\.sql$//' | sort)
"$(pg_regress_bin)" --bindir="$PGBIN" \
    --use-existing --host="$PP_SOCK" --port="$PP_PORT" --user=postgres \
    --inputdir="$suite" --outputdir="$suite/out" --dbname=pp_upgrade_regress $tests \
  || { [ -f "$suite/out/regression.diffs" ] && head -100 "$suite/out/regression.diffs"; exit 1; }
echo "PASS: $old -> $new"
