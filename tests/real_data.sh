#!/usr/bin/env bash
# Real data: every one of the 541,909 rows of UCI Online Retail is accounted for as accepted,
# duplicate or rejected with reasons. Skips (successfully) when the file is absent.
source "$(dirname "$0")/../scripts/lib.sh"
DATA=${PP_ONLINE_RETAIL:-$ROOT/../shared/data/online_retail.csv.gz}
if [ ! -f "$DATA" ]; then
    echo "SKIP: $DATA not found (the real-data test needs ../shared/data/online_retail.csv.gz)"
    exit 0
fi
start_cluster
fresh_db pp_real
psql -X -q -d pp_real -v ON_ERROR_STOP=1 -c "CREATE EXTENSION pg_personalize" -c "
CREATE TABLE retail (invoice_no text, stock_code text, description text, quantity text,
                     invoice_date text, unit_price text, customer_id text, country text)"
# \copy takes its line literally (no psql variables), so the path goes in here.
psql -X -q -d pp_real -v ON_ERROR_STOP=1 \
     -c "\\copy retail FROM PROGRAM 'gzip -dc \"$DATA\"' WITH (FORMAT csv, HEADER true)"
psql -X -d pp_real -v ON_ERROR_STOP=1 <<'SQL'
\pset footer off
\timing on
CREATE TEMP TABLE result AS SELECT * FROM personalize.import_online_retail('retail');
\timing off
SELECT (SELECT count(*) FROM retail) AS source_rows, * ,
       accepted + duplicates + rejected AS accounted FROM result;
SELECT event_type, count(*) FROM personalize.events GROUP BY 1 ORDER BY 1;
SELECT reason, count(*) FROM personalize.rejected_events, unnest(reasons) reason GROUP BY 1 ORDER BY 2 DESC;
DO $$
DECLARE r record;
BEGIN
  SELECT * INTO r FROM result;
  IF (SELECT count(*) FROM retail) <> 541909 THEN RAISE EXCEPTION 'expected 541909 source rows'; END IF;
  IF r.accepted + r.duplicates + r.rejected <> 541909 THEN RAISE EXCEPTION 'rows lost: %', r; END IF;
  IF (SELECT count(*) FROM personalize.events) <> r.accepted THEN RAISE EXCEPTION 'events table disagrees'; END IF;
  IF (SELECT count(*) FROM personalize.rejected_events) <> r.rejected THEN RAISE EXCEPTION 'quarantine disagrees'; END IF;
  IF (SELECT count(*) FROM personalize.rejected_events WHERE 'missing_field' = ANY(reasons) AND user_id IS NULL) < 135080 THEN
    RAISE EXCEPTION 'rows without CustomerID must be rejected for it';
  END IF;
  -- Re-importing stores nothing new.
  IF (SELECT accepted FROM personalize.import_online_retail('retail')) <> 0 THEN RAISE EXCEPTION 're-import stored rows'; END IF;
  RAISE NOTICE 'OK: all 541909 rows accounted for';
END $$;
SQL
