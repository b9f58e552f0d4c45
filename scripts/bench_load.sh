#!/usr/bin/env bash
# A mixed workload under load (a load test with pass/fail checks, not a unit test). pgbench
# (prepared protocol, Unix socket) runs four scripts at once against a trained synthetic shop
# whose campaigns write outbox messages from tracked events:
#   track       SELECT personalize.track(...)        a view, add_to_cart or purchase (weight 4)
#   recommend   SELECT ... FROM personalize.recommend(user, 10)                    (weight 4)
#   rank_items  SELECT ... FROM personalize.rank_items(user, 50 candidates)         (weight 1)
#   claim_ack   claim_messages('email', 10) and ack_batch() of the lease, one statement (weight 1)
# with 8 and then 16 clients for PP_LOAD_SECONDS each. Users are drawn from 25,000 ids, 20,000
# of them in the shop (the rest are new visitors: fold-in from what they tracked, else
# popularity). Reports per script: transactions, tx/s, p50/p99/max latency (from pgbench's
# per-transaction log), errors. Samples every pgbench backend's memory (/proc: VmRSS, RssAnon,
# RssShmem, Private_Dirty, Pss; and the memory contexts' grand total via
# pg_log_backend_memory_contexts) at half time and 4 s before the end of each run, and prints
# the growth per backend.
# Fails (exit 1) on any client error or when a backend's memory is not flat: growth above
# 1 MB that is also >= 10 % or >= 16 MB of Private_Dirty between the two samples.
#   PP_LOAD_SECONDS   seconds per run (default 60)
#   PP_LOAD_CLIENTS   client counts (default "8 16")
#   PP_LOAD_EVENTS    events of the synthetic shop (default 200000)
#   PP_LOAD_BACKLOG   due email messages added to the outbox before each run (default 200000)
#   PP_SKIP_INSTALL=1 (or BENCH_SKIP_INSTALL=1) use the installed extension as it is
# Needs root or sudo (reading other processes' /proc/<pid>/smaps_rollup and the server log).
source "$(dirname "$0")/lib.sh"
SECS=${PP_LOAD_SECONDS:-60}
CLIENT_COUNTS=${PP_LOAD_CLIENTS:-8 16}
EVENTS=${PP_LOAD_EVENTS:-200000}
BACKLOG=${PP_LOAD_BACKLOG:-200000}
USERS=20000
ITEMS=4000
DB=pp_bench_load
OUT=$ROOT/build/bench_load
PGBENCH=$PGBIN/pgbench
[ "$SECS" -ge 20 ] || { echo "PP_LOAD_SECONDS must be at least 20" >&2; exit 1; }

if [ "${PP_SKIP_INSTALL:-${BENCH_SKIP_INSTALL:-0}}" != 1 ]; then
    install_prereqs
    install_extension
fi
if [ "$(id -u)" != 0 ] && ! sudo -v; then   # asks for the password once, before the runs
    echo "root or sudo is needed to read the backends' /proc/<pid>/smaps_rollup" >&2
    exit 1
fi
mkdir -p "$OUT"
rm -rf "${OUT:?}"/*
start_cluster
fresh_db $DB
sql() { psql -X -q -d $DB -v ON_ERROR_STOP=1 "$@"; }

say "Setting up: a synthetic shop ($EVENTS events, $USERS users, $ITEMS items), a trained model, 4 campaigns"
sql -v events="$EVENTS" -v users="$USERS" -v items="$ITEMS" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_personalize;
SELECT * FROM personalize.generate_shop(:events, users => :users, items => :items, seed => 7) \g /dev/null
SELECT * FROM personalize.train(factors => 64, iterations => 5) \g /dev/null
INSERT INTO personalize.segments (name, definition) VALUES ('big_spenders', '{"total_spend": {"min": 500}}');
-- Browse abandonment (due now, 3 recommendations rendered at claim; what claim_ack drains),
-- cart abandonment (due in an hour, capped), a segment's SMS, a thank-you email.
INSERT INTO personalize.campaigns (name, trigger_event_type, delay, cancel_on, channel, recommendations,
                                   cap_messages, cap_window, segment, template) VALUES
 ('load_browse', 'view', '0', '{purchase}', 'email', 3, NULL, NULL, NULL,
  '{"to": "{{user_id}}", "subject": "Still thinking about {{item_title}}?", "items": "{{recommendations}}"}'),
 ('load_cart', 'add_to_cart', '1 hour', '{purchase}', 'push', 0, 2, '1 day', NULL,
  '{"title": "{{item_title}} is in your cart"}'),
 ('load_vip_cart', 'add_to_cart', '30 minutes', '{purchase}', 'sms', 0, NULL, NULL, 'big_spenders',
  '{"text": "{{item_title}}: still yours, {{user_id}}"}'),
 ('load_thanks', 'purchase', '0', '{}', 'email', 2, NULL, NULL, NULL,
  '{"to": "{{user_id}}", "order": "{{properties.order_id}}", "items": "{{recommendations}}"}');
-- A shop whose customers opted in to push and SMS when they signed up (recorded elsewhere):
-- no message here is refused for consent.
INSERT INTO personalize.channel_policies (channel, requires_opt_in) VALUES ('push', false), ('sms', false);
VACUUM ANALYZE;
SQL
# A backlog of due emails before each run (one pending message per campaign and user, hence
# the suffixes), so claim_ack has work for the whole run.
add_backlog() {
    sql -v backlog="$BACKLOG" -v run="$1" <<'SQL'
INSERT INTO personalize.outbox (campaign_id, campaign, channel, user_id, trigger_event_id, triggered_at, visible_at)
SELECT c.campaign_id, c.name, 'email', 'U' || lpad((g % 20000)::text, 7, '0') || '-' || :run || '-' || g, g, now(),
       now() - interval '1 minute'
  FROM personalize.campaigns c, generate_series(1, :backlog) g WHERE c.name = 'load_browse';
VACUUM ANALYZE personalize.outbox;
SQL
}

# pgbench scripts. Users 0..24999: 20,000 in the shop and the model, the rest new visitors.
cat > "$OUT/track.sql" <<'SQL'
\set u random(0, 24999)
\set i random(0, 3999)
\set t random(1, 20)
\set o random(1, 1000000000)
SELECT personalize.track(jsonb_build_object(
         'type', CASE WHEN :t <= 14 THEN 'view' WHEN :t <= 18 THEN 'add_to_cart' ELSE 'purchase' END,
         'user_id', 'U' || lpad(CAST(:u AS text), 7, '0'),
         'item_id', 'P' || lpad(CAST(:i AS text), 7, '0'),
         'session_id', 'load-' || CAST(:u AS text),
         'properties', CASE WHEN :t <= 18 THEN '{}'::jsonb
                            ELSE jsonb_build_object('order_id', CAST(:o AS text), 'quantity', 1, 'price', 19.99) END));
SQL
cat > "$OUT/recommend.sql" <<'SQL'
\set u random(0, 24999)
SELECT count(*) FROM personalize.recommend('U' || lpad(CAST(:u AS text), 7, '0'), 10);
SQL
cat > "$OUT/rank_items.sql" <<'SQL'
\set u random(0, 24999)
\set s random(0, 3999)
SELECT count(*) FROM personalize.rank_items('U' || lpad(CAST(:u AS text), 7, '0'),
         ARRAY(SELECT 'P' || lpad(CAST((:s + g * 79) % 4000 AS text), 7, '0') FROM generate_series(1, 50) g));
SQL
# One statement: the claim's rows are materialized once (claim_messages is volatile), and
# ack_batch() (a later query in the same transaction) sees them claimed under the lease.
cat > "$OUT/claim_ack.sql" <<'SQL'
WITH c AS (SELECT message_id, lease_token FROM personalize.claim_messages('email', 10, '30 seconds'))
SELECT (SELECT count(*) FROM c) AS claimed,
       personalize.ack_batch((SELECT lease_token FROM c LIMIT 1),
                             ARRAY(SELECT message_id FROM c)) AS acked;
SQL
SCRIPTS=(track recommend rank_items claim_ack)
WEIGHTS=(4 4 1 1)

# sample_memory FILE: one line per pgbench backend: pid VmRSS RssAnon RssShmem Private_Dirty
# Pss contexts (all kB; contexts = the memory contexts' grand total, -1 when not logged).
# VmRSS = RssAnon + RssFile + RssShmem: it grows as a backend touches more of shared_buffers,
# which is not a leak; private memory (palloc and Rust's heap alike) is Private_Dirty/RssAnon.
sample_memory() {
    local file=$1 pids pid log_before
    pids=$(psql -X -At -d $DB -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' AND datname = '$DB' ORDER BY pid")
    log_before=$(as_root stat -c %s "$PP_RUN/postgres.log")
    psql -X -q -At -d $DB -c "SELECT count(pg_log_backend_memory_contexts(pid)) FROM pg_stat_activity
                               WHERE application_name = 'pgbench' AND datname = '$DB'" >/dev/null
    : > "$file.proc"
    for pid in $pids; do
        as_root sh -c "cat /proc/$pid/status /proc/$pid/smaps_rollup 2>/dev/null" |
            awk -v pid="$pid" '/^VmRSS:/ {rss = $2} /^RssAnon:/ {anon = $2} /^RssShmem:/ {shm = $2}
                               /^Private_Dirty:/ {pd = $2} /^Pss:/ {pss = $2}
                               END {if (rss != "") print pid, rss, anon, shm, pd, pss}' >> "$file.proc"
    done
    sleep 2   # the backends log their contexts at their next interrupt check
    as_root tail -c +"$((log_before + 1))" "$PP_RUN/postgres.log" |
        sed -n 's/.*\[\([0-9][0-9]*\)\].*Grand total: \([0-9][0-9]*\) bytes.*/\1 \2/p' > "$file.ctx"
    awk 'FILENAME == ARGV[1] {ctx[$1] = int($2 / 1024); next} {print $0, ($1 in ctx) ? ctx[$1] : -1}' \
        "$file.ctx" "$file.proc" > "$file"
}

printf 'clients\tscript\ttransactions\ttx/s\tp50_ms\tp99_ms\tmax_ms\terrors\n' > "$OUT/results.tsv"
printf 'clients\tbackends\tmetric\tmean_at_half_kB\tmean_at_end_kB\tmean_growth_kB\tmax_growth_kB\tmax_growth_pct\n' > "$OUT/memory.tsv"
failed=0
for clients in $CLIENT_COUNTS; do
    run=$OUT/c$clients
    mkdir -p "$run"
    say "pgbench: $clients clients, ${SECS} s (track 4, recommend 4, rank_items 1, claim_ack 1)"
    add_backlog "$clients"
    sent_before=$(psql -X -At -d $DB -c "SELECT count(*) FROM personalize.outbox WHERE state = 'sent'")
    args=()
    for k in "${!SCRIPTS[@]}"; do args+=(-f "$OUT/${SCRIPTS[$k]}.sql@${WEIGHTS[$k]}"); done
    "$PGBENCH" -n -M prepared -c "$clients" -j 2 -T "$SECS" -l --log-prefix="$run/log" "${args[@]}" $DB \
        > "$run/pgbench.out" 2> "$run/pgbench.err" &
    bench=$!
    # t0: every client connected.
    for _ in $(seq 100); do
        n=$(psql -X -At -d $DB -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' AND datname = '$DB'")
        [ "$n" -ge "$clients" ] && break
        sleep 0.1
    done
    t0=$SECONDS
    sleep $((SECS / 2)); sample_memory "$run/mem_half"
    left=$((t0 + SECS - 4 - SECONDS)); [ "$left" -le 0 ] || sleep "$left"
    sample_memory "$run/mem_end"
    rc=0; wait $bench || rc=$?
    sent_after=$(psql -X -At -d $DB -c "SELECT count(*) FROM personalize.outbox WHERE state = 'sent'")
    grep -E "^(number of|tps|latency average)" "$run/pgbench.out" || true
    claims=$(awk '$4 == 3' "$run"/log.* | wc -l)
    echo "messages claimed and acked: $((sent_after - sent_before)) in $claims claim_ack transactions"
    aborted=$(grep -c "aborted" "$run/pgbench.err" || true)
    if [ "$rc" != 0 ] || [ "$aborted" != 0 ]; then
        echo "FAIL: pgbench exited with $rc, $aborted client(s) aborted:"; grep -E "ERROR|aborted|error" "$run/pgbench.err" | head -20
        failed=1
    fi
    # Per-transaction log lines (PostgreSQL 15): client tx latency_us|failed script epoch us ...
    # Clients that aborted: their script is in pgbench's stderr ("client N script M aborted").
    overall_tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$run/pgbench.out")
    cat "$run"/log.* > "$run/all.log"
    for k in "${!SCRIPTS[@]}"; do
        awk -v s="$k" '$4 == s && $3 ~ /^[0-9]+$/ {print $3}' "$run/all.log" | sort -n > "$run/lat_$k"
        bad=$(awk -v s="$k" '$4 == s && $3 !~ /^[0-9]+$/' "$run/all.log" | wc -l)
        ab=$(grep -c "script $k aborted" "$run/pgbench.err" || true)
        awk -v c="$clients" -v name="${SCRIPTS[$k]}" -v total="$(wc -l < "$run/all.log")" -v tps="${overall_tps:-0}" \
            -v errors="$((bad + ab))" '
            {lat[NR] = $1}
            END {n = NR; if (n == 0) {printf "%s\t%s\t0\t0\t-\t-\t-\t%d\n", c, name, errors; exit}
                 printf "%s\t%s\t%d\t%.1f\t%.3f\t%.3f\t%.3f\t%d\n", c, name, n, tps * n / total,
                        lat[int(n * 0.50) + 1] / 1000, lat[int(n * 0.99) + 1] / 1000, lat[n] / 1000, errors}' \
            "$run/lat_$k" >> "$OUT/results.tsv"
        [ "$((bad + ab))" = 0 ] || failed=1
    done
    # Memory: backends present in both samples.
    join <(sort "$run/mem_half") <(sort "$run/mem_end") > "$run/mem_joined"
    # columns: pid, then at half: rss anon shmem pd pss ctx (2-7), at the end: the same (8-13)
    echo "per backend (kB): pid, then half -> end of: VmRSS, RssAnon, RssShmem, Private_Dirty, Pss, contexts" > "$run/mem_backends.txt"
    awk '{printf "%8d", $1; for (j = 2; j <= 7; j++) printf "  %7d -> %7d", $j, $(j + 6); printf "\n"}' \
        "$run/mem_joined" >> "$run/mem_backends.txt"
    awk -v c="$clients" 'BEGIN {split("VmRSS RssAnon RssShmem Private_Dirty Pss contexts", m, " ")}
        {for (j = 1; j <= 6; j++) {a = $(j + 1); b = $(j + 7); if (a < 0 || b < 0) continue
             cnt[j]++; sa[j] += a; sb[j] += b; g = b - a
             if (!(j in mx) || g > mx[j]) mx[j] = g
             p = a > 0 ? 100 * g / a : 0; if (!(j in mp) || p > mp[j]) mp[j] = p}}
        END {for (j = 1; j <= 6; j++) if (cnt[j] > 0)
             printf "%s\t%d\t%s\t%.0f\t%.0f\t%.0f\t%d\t%.1f\n", c, cnt[j], m[j], sa[j] / cnt[j], sb[j] / cnt[j],
                    (sb[j] - sa[j]) / cnt[j], mx[j], mp[j]}' "$run/mem_joined" >> "$OUT/memory.tsv"
    nb=$(wc -l < "$run/mem_joined")
    [ "$nb" -ge "$clients" ] || { echo "FAIL: memory sampled for $nb of $clients backends"; failed=1; }
    # Not flat: a backend's Private_Dirty grew by more than 1 MB and by >= 10 % or >= 16 MB.
    leaky=$(awk '{g = $11 - $5; if (g > 1024 && (g >= 16384 || ($5 > 0 && g >= 0.10 * $5))) print $1}' "$run/mem_joined" | wc -l)
    echo "$clients $leaky" >> "$OUT/verdicts"
    [ "$leaky" = 0 ] || failed=1
done

say "Results (per script; latency per transaction as pgbench sees it, Unix socket, prepared protocol)"
column -t -s $'\t' "$OUT/results.tsv"
say "Backend memory at $((SECS / 2)) s vs $((SECS - 4)) s (kB, means over the pgbench backends; growth = end - half)"
column -t -s $'\t' "$OUT/memory.tsv"
while read -r clients leaky; do
    if [ "$leaky" = 0 ]; then
        echo "$clients clients: memory flat (no backend's Private_Dirty grew by > 1 MB and >= 10 % or >= 16 MB)"
    else
        echo "$clients clients: memory NOT flat: $leaky backend(s) grew (see $OUT/c$clients/mem_backends.txt)"
    fi
done < "$OUT/verdicts"
psql -X -q -d $DB -c "SELECT state, count(*) AS outbox_messages FROM personalize.outbox GROUP BY 1 ORDER BY 1"
if [ "$failed" = 0 ]; then
    say "PASS: zero errors, memory flat"
else
    say "FAIL (details above; logs in $OUT)"
    exit 1
fi
