#!/usr/bin/env bash
# Training cost curve: train() on synthetic shops of growing size, printing interactions, read and
# train seconds, seconds per iteration, and the training backend's peak memory next to the size
# of the CSR + factors it holds (a benchmark, not a test). Two peaks: VmHWM (resident, which
# counts the shared_buffers pages the backend touched: the cluster's cache, not the training's)
# and the peak of RssAnon (the backend's private memory: Rust's allocations and Postgres's
# memory contexts), sampled every 50 ms while train() runs.
# Sizes are events to generate (interactions come out at roughly 0.6 per event).
source "$(dirname "$0")/lib.sh"
SIZES=${BENCH_SIZES:-"1700000 17000000"}
FACTORS=${BENCH_FACTORS:-64}
ITERATIONS=${BENCH_ITERATIONS:-5}

install_prereqs
[ "${BENCH_SKIP_INSTALL:-0}" = 1 ] || install_extension
start_cluster
printf '%-12s %-13s %-9s %-9s %-10s %-8s %-12s %-13s %-8s\n' events interactions read_s train_s s_per_iter users peak_rss_MB peak_anon_MB data_MB
for events in $SIZES; do
    users=$((events / 17)); items=$((events / 170 + 1000))
    fresh_db pp_scale
    psql -X -q -d pp_scale -v ON_ERROR_STOP=1 -c "CREATE EXTENSION pg_personalize" \
        -c "SELECT * FROM personalize.generate_shop($events, users => $users, items => $items, seed => 2)" >/dev/null
    # A fresh backend per run, so its peak memory is this training's.
    EVENTS=$events PP_RUN=$PP_RUN psql -X -q -At -d pp_scale -v ON_ERROR_STOP=1 -v factors="$FACTORS" \
        -v iterations="$ITERATIONS" <<'SQL'
SET client_min_messages = warning;
SET personalize.training_threads = 2;
SELECT pg_backend_pid() AS pid \gset
\setenv PID :pid
\! rm -f "$PP_RUN/scale.stop" "$PP_RUN/scale.anon"; (while [ ! -f "$PP_RUN/scale.stop" ]; do awk '/RssAnon/ {print $2}' /proc/$PID/status >> "$PP_RUN/scale.anon"; sleep 0.05; done) &
SELECT format('%s,%s,%s,%s', interactions, round(read_seconds::numeric, 2),
              round(train_seconds::numeric, 2), users) AS run
  FROM personalize.train(factors => :factors, iterations => :iterations) \gset
SELECT round((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) FROM personalize.models m,
              unnest(m.seconds_per_iteration) s WHERE m.status = 'active')::numeric, 3) AS spi,
       round(((n_interactions * 8 * 2 + (n_users + n_items) * :factors * 4))::numeric / 1048576) AS data_mb
  FROM personalize.models WHERE status = 'active' \gset
\! touch "$PP_RUN/scale.stop"; sleep 0.2
\setenv RUN :run
\setenv SPI :spi
\setenv DATA_MB :data_mb
\! set -- $(echo "$RUN" | tr , " "); printf '%-12s %-13s %-9s %-9s %-10s %-8s %-12s %-13s %-8s\n' "$EVENTS" "$1" "$2" "$3" "$SPI" "$4" "$(( $(awk '/VmHWM/ {print $2}' /proc/$PID/status) / 1024 ))" "$(( $(sort -n "$PP_RUN/scale.anon" | tail -1) / 1024 ))" "$DATA_MB"
SQL
done
echo "peak_rss_MB: the backend's VmHWM after train() (with the shared_buffers pages it touched);"
echo "peak_anon_MB: the peak of its private memory (RssAnon) during train(); data_MB: CSR (both"
echo "orientations) + user and item factors."
