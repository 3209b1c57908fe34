#!/usr/bin/env bash
# scripts/bench.sh -- `make bench`: the benchmark suite of docs/BENCHMARKS.md.
#
# Starts its own PostgreSQL and Redis (scripts/services.sh, the tests' private set-up, under
# var/bench; fsync and synchronous_commit on), loads the benchmark data set (the demo street
# scaled up: 100,000 workers, 1,000,000+ ledger transactions), starts build/bench/gridpointsd
# (-O2, no sanitizers; `make bench` builds it first) on a free loopback port, and runs the
# scenarios, each next to a baseline measured in the same run on the same machine with the same
# load generator. Prints one table; a full run also writes it, with the machine's description,
# into docs/BENCHMARKS.md. Everything it started is stopped at the end, also on failure.
#
#   make bench                   the full run (about 14 minutes)
#   BENCH_QUICK=1 make bench     every scenario briefly (about 5 minutes); results go to
#                                var/bench/results.md only, not into docs/
#
# Besides the scenarios (each HTTP write scenario next to its minimal logical shape,
# scripts/bench/shape_*.pgb, and next to pgbench of our own SQL function), a run prints three
# more tables: instructions per request (callgrind), the per-operation SQL cost
# (scripts/bench/shapecost.py, which uses scripts/bench/sqlcost.py) and the cost of the history
# probe (task list, statement, claim, award) -- on the full run measured on a data set with a
# tenth of the history first and then on the full one, side by side (BENCH_HISTORY_COMPARE).
#
# Knobs (environment): BENCH_QUICK=1; BENCH_PUBLISH=0|1 (write docs/BENCHMARKS.md; default 1 on
# full runs); BENCH_KEEP=1 (leave PostgreSQL and Redis running afterwards, for inspection);
# BENCH_SOURCE="text" (what was measured, when not a plain git checkout); BENCH_WORKERS,
# BENCH_HIST_TASKS (data set size, for development only); BENCH_HISTORY_COMPARE=0|1 (load a
# tenth of the history first and probe it; default 1 on full runs, 0 on quick ones);
# BENCH_CALLGRIND=0 and BENCH_SQLCOST=0 leave those tables out.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BIN=$REPO/build/bench/gridpointsd
CONF=$REPO/config/gridpoints.conf
W=$REPO/var/bench
SVC=$W/services
RESULTS=$W/results.tsv
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
# psql and pgbench call the API functions by their plain names, as the server does (they live
# in schema gp, sql/functions; the server and the CLI set the same search_path themselves).
export PGOPTIONS="${PGOPTIONS:-} -c search_path=gp,public"
[[ -x $PGBENCH ]] || PGBENCH=pgbench

QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DUR=3 REPS=1 WARM_S=2 PER_TASK=50 MIXED_S=15 SAMPLE_S=1 HOLD_S=3
    N3E=1000 PROBE_N=200 COST_N=100
    PUBLISH=${BENCH_PUBLISH:-0}
    HIST_COMPARE=${BENCH_HISTORY_COMPARE:-0}
else
    DUR=10 REPS=3 WARM_S=3 PER_TASK=400 MIXED_S=120 SAMPLE_S=5 HOLD_S=5
    N3E=4000 PROBE_N=400 COST_N=200
    PUBLISH=${BENCH_PUBLISH:-1}
    HIST_COMPARE=${BENCH_HISTORY_COMPARE:-1}
fi
WORKERS=${BENCH_WORKERS:-100000}
# The quick run keeps every worker (the storms need 10,000 distinct ones each) but a tenth of the
# ledger history, so that it loads, seals and exports in seconds.
HIST_TASKS=${BENCH_HIST_TASKS:-$([[ $QUICK == 1 ]] && echo 2000 || echo 20000)}
READ_CONNS=64     # balance reads and the mixed load (wrk -t2 -c64)
LIST_CONNS=16     # task list: wrk and pgbench alike
AWARD_CONNS=8     # report + award: gpload and pgbench alike
STORM_CONNS=500   # the claim storm "as fast as they can"
STORM_SAME=64     # the claim storm at the pgbench baseline's concurrency
REPORT_TASKS=40   # tasks of the report scenario, per side (server, pgbench)
IDLE_CONNS=10000
N4=$((REPORT_TASKS * PER_TASK))
CLAIM_TASKS=20    # tasks of the no-storm claim scenario, per side (N3E claims spread over them)
HISTORY=$W/history.tsv

T_BEGIN=$SECONDS
PIDS=()

log() { printf '%s bench: %s\n' "$(date +%T)" "$*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}

# stop_pid PID: stops one process this script started (SIGTERM, then SIGKILL after 15 s) and
# forgets it, so that the final cleanup can never signal a recycled pid.
stop_pid() {
    local p=$1 i keep=()
    kill "$p" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    for i in "${PIDS[@]}"; do
        [[ $i == "$p" ]] || keep+=("$i")
    done
    PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$? p i
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for ((i = 0; i < 150; i++)); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$p" 2>/dev/null || true
    done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "services left running (BENCH_KEEP=1): . $SVC/env; scripts/services.sh stop $SVC"
    else
        scripts/services.sh stop "$SVC" >/dev/null 2>&1 || true
    fi
    ((rc == 0)) || log "stopped everything after a failure (logs in $W)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port outside the ephemeral range (as scripts/services.sh chooses them).
free_port() {
    "$PY" - <<'EOF'
import random, socket
try:
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    lo = 32768
for _ in range(500):
    p = random.randint(10000, lo - 1)
    if p in (5432, 6379, 8080):
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
EOF
}

# field NAME LINE: the value of NAME=value in a line of key=value pairs.
field() {
    awk -v k="$1" '{for (i = 1; i <= NF; i++) { n = index($i, "="); if (substr($i, 1, n - 1) == k) { print substr($i, n + 1); exit } } }' <<<"$2"
}

# calc EXPR: floating-point arithmetic and comparisons (awk); comparisons print 1 or 0.
calc() { awk "BEGIN { x = $1; if (x == int(x) && x < 1e15 && x > -1e15) printf \"%d\", x; else printf \"%.3f\", x }"; }

sql() { psql -X -q -v ON_ERROR_STOP=1 "$GRIDPOINTS_DATABASE_ADMIN_URL" "$@"; }
sqlv() { psql -X -At -v ON_ERROR_STOP=1 "$GRIDPOINTS_DATABASE_ADMIN_URL" -c "$1"; }
# reqfile FILE QUERY: a request file (METHOD, PATH, TOKEN[, BODY] tab-separated) from SQL.
reqfile() { psql -X -At -F $'\t' -v ON_ERROR_STOP=1 "$GRIDPOINTS_DATABASE_ADMIN_URL" -c "$2" >"$1"; }

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
metric() { curl -sf "$URL/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

# row ID SCENARIO METRIC SERVER BASELINE_NAME BASELINE P50 P99 P999 ERRORS GOAL VERDICT
row() {
    local IFS=$'\t'
    echo "$*" >>"$RESULTS"
    log "result: $*"
}

# run_wrk URL FILE CONNS SECONDS: the WRK line of scripts/bench/replay.lua.
run_wrk() {
    wrk -t2 -c"$3" -d"$4"s --timeout 10s -s scripts/bench/replay.lua "$1" -- "$2" | grep '^WRK ' ||
        die "wrk failed against $1"
}

# run_pgbench SCRIPT LOGPREFIX ARGS...: prints "tps=... failed=..." plus the latency percentiles.
run_pgbench() {
    local script=$1 prefix=$2 out pct
    shift 2
    rm -f "$prefix".*
    out=$("$PGBENCH" -n -M prepared -j 2 -f "$script" -l --log-prefix="$prefix" "$@" \
        -h 127.0.0.1 -p "$GP_PG_PORT" -U gp_app gridpoints 2>&1) || {
        echo "$out" >&2
        die "pgbench $script failed"
    }
    pct=$("$PY" scripts/bench/results.py pgbench-pct "$prefix".*)
    echo "tps=$(sed -n 's/^tps = \([0-9.]*\) (without.*/\1/p' <<<"$out") failed=$(
        sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out") $pct"
}

# pick_median FILE: of lines holding rps=, the one with the median rps.
pick_median() {
    local n
    n=$(wc -l <"$1")
    awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^(rps|tps)=/) { split($i, a, "="); print a[2] "\t" $0 } }' "$1" |
        sort -g | awk -v m=$(((n + 1) / 2)) 'NR == m' | cut -f2-
}

verdict() { if [[ $(calc "$1") == 1 ]]; then echo yes; else echo NO; fi; }

# ---------------------------------------------------------------------------------------------
log "mode: $([[ $QUICK == 1 ]] && echo "quick (BENCH_QUICK=1)" || echo full)"
for tool in wrk psql curl cc pkg-config; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/deps.sh installs it)"
done
[[ -x $BIN ]] || die "$BIN not found: run 'make bench' (it builds it first)"
mkdir -p "$W"
rm -f "$W"/*.req "$W"/pgb_* "$RESULTS" "$HISTORY" "$W"/cg.* "$W"/costs.json
: >"$RESULTS"
: >"$HISTORY"

log "building the load generator and the bare evhttp baseline"
LIBEVENT=$(pkg-config --cflags --libs libevent)
# shellcheck disable=SC2086 # word splitting of the pkg-config flags is intended
cc -std=c11 -O2 -Wall -Wextra -Werror -o build/bench/gpload scripts/bench/gpload.c $LIBEVENT
# shellcheck disable=SC2086
cc -std=c11 -O2 -Wall -Wextra -Werror -o build/bench/bare_evhttp scripts/bench/bare_evhttp.c $LIBEVENT

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "private PostgreSQL + Redis in $SVC (fresh)"
scripts/services.sh purge "$SVC" >/dev/null 2>&1 || true
scripts/services.sh start "$SVC" >/dev/null
# shellcheck disable=SC1091 # written by services.sh start
. "$SVC/env"

# ---------------------------------------------------------------------------------------------
# load_dataset HIST_TASKS: migrations, the demo street, then the data set; sets LOAD_S.
load_dataset() {
    log "migrations, the demo street, then the data set ($WORKERS workers, $1 past tasks)"
    "$BIN" -c "$CONF" migrate >"$W/migrate.log" 2>&1 || {
        cat "$W/migrate.log" >&2
        die "migrate"
    }
    "$BIN" -c "$CONF" demo-data >"$W/demo-data.log" 2>&1 || {
        cat "$W/demo-data.log" >&2
        die "demo-data"
    }
    T0=$SECONDS
    sql -v workers="$WORKERS" -v hist_tasks="$1" -v open_per_grid=15 \
        -v seed="$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')" -f scripts/bench/dataset.sql >/dev/null
    sql -c 'VACUUM ANALYZE' -c 'GRANT SELECT ON ALL TABLES IN SCHEMA bench TO gp_app'
    LOAD_S=$((SECONDS - T0))
}

# history_probe: the cost per call of the paths that must not grow with history (issue 12,
# part 6) on the data set as it was loaded, before any scenario ran: the task list near a point,
# a worker's statement (first page), a claim and a report + approval (the award), each PROBE_N
# calls through pgbench -c1 as gp_app, with no server running; milliseconds per call and shared
# buffers touched per call (pg_stat_database; includes pgbench's connection start). One line per
# path into $HISTORY. Both data sets of a comparison are probed in the same state: loaded,
# the probe's own set-up done, then VACUUM (ANALYZE), then the probes in the same order.
# The statement is read for the last STMT_WORKERS workers, each given STMT_POSTINGS adjustments
# (gp_adjust) first, so that their first page (50 rows) is full in either data set and the ratio
# measures the history around it, not how full the page is. The plans of the task list and the
# statement (auto_explain: ANALYZE, BUFFERS; the first calls use custom plans, later ones the
# generic plan if plpgsql switches) go to $W/explain_<transactions>.txt.
STMT_WORKERS=20
STMT_POSTINGS=55
history_probe() {
    local hist admin street tid b0 b1 out name per
    hist=$(sqlv "SELECT count(*) FROM ledger_txns")
    admin=$(sqlv "SELECT person_id FROM bench.staff WHERE role = 'street_admin' LIMIT 1")
    street=$(sqlv "SELECT unit_id FROM bench.staff WHERE role = 'street_admin' LIMIT 1")
    tid=$(sqlv "SELECT (gp_task_publish($admin, jsonb_build_object('unit_id', $street,
                  'title', 'history probe', 'category', 'patrol', 'reward', 10, 'slots', $PROBE_N,
                  'ends_at', to_char((now() + interval '1 day') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                  'claim_ttl_s', 86400, 'review_window_s', 86400))).body ->> 'id'")
    per=$((PROBE_N / 10))
    sql -v name=probe -v grid0=80 -v tasks=10 -v per_task="$per" -v review_s=86400 \
        -f scripts/bench/reports_setup.sql >/dev/null
    sql -c 'SET client_min_messages = warning' \
        -c 'DROP SEQUENCE IF EXISTS bench.probe_claim_seq, bench.probe_award_seq' \
        -c 'CREATE SEQUENCE bench.probe_claim_seq START 60001' -c 'CREATE SEQUENCE bench.probe_award_seq' \
        -c 'GRANT USAGE, SELECT ON SEQUENCE bench.probe_claim_seq, bench.probe_award_seq TO gp_app' \
        -c 'GRANT SELECT ON bench.reports TO gp_app' >/dev/null
    [[ $(sqlv "SELECT count(gp_adjust($admin, w.person_id, 1, 'history probe'))
                 FROM bench.workers w CROSS JOIN generate_series(1, $STMT_POSTINGS)
                WHERE w.n > $WORKERS - $STMT_WORKERS") == $((STMT_WORKERS * STMT_POSTINGS)) ]] ||
        die "history probe: the statement workers' adjustments"
    sql -c 'VACUUM (ANALYZE)' >/dev/null
    cat >"$W/probe_list.pgb" <<'PGB'
\set n random(10001, 20000)
SELECT gp_task_list(w.person_id, jsonb_build_object('limit', 50, 'lat', w.lat, 'lng', w.lng, 'radius_m', 1000.0)) FROM bench.workers w WHERE w.n = :n;
PGB
    cat >"$W/probe_statement.pgb" <<PGB
\set n random($((WORKERS - STMT_WORKERS + 1)), $WORKERS)
SELECT gp_statement(w.person_id, w.person_id, NULL, NULL, NULL, NULL, 50) FROM bench.workers w WHERE w.n = :n;
PGB
    cat >"$W/probe_claim.pgb" <<PGB
SELECT gp_task_claim(w.person_id, $tid) FROM bench.workers w WHERE w.n = (SELECT nextval('bench.probe_claim_seq'));
PGB
    cat >"$W/probe_award.pgb" <<'PGB'
BEGIN;
SELECT worker_id AS w, assignment_id AS a, staff_id AS st, body AS b FROM bench.reports WHERE name = 'probe' AND n = (SELECT nextval('bench.probe_award_seq')) \gset
SELECT gp_report_submit(:w, :b::jsonb, interval '120 seconds');
SELECT gp_report_decide(:st, :a, true, NULL);
END;
PGB
    # The plans first (read-only calls: the task list of 8 workers, the statement of 2), so that
    # they see the same state as the probes; the claims and awards below update task rows.
    psql -X -q "$GRIDPOINTS_DATABASE_ADMIN_URL" >/dev/null 2>"$W/explain_$hist.txt" <<SQL || true
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_analyze = on;
SET auto_explain.log_buffers = on;
SET auto_explain.log_timing = off;
SET auto_explain.log_level = notice;
SELECT gp_task_list(w.person_id, jsonb_build_object('limit', 50, 'lat', w.lat, 'lng', w.lng, 'radius_m', 1000.0)) FROM bench.workers w WHERE w.n BETWEEN 10001 AND 10008;
SELECT gp_statement(w.person_id, w.person_id, NULL, NULL, NULL, NULL, 50) FROM bench.workers w WHERE w.n > $WORKERS - 2;
SQL
    for name in list statement claim award; do
        b0=$(sqlv "SELECT blks_hit + blks_read FROM pg_stat_database WHERE datname = current_database()")
        out=$(run_pgbench "$W/probe_$name.pgb" "$W/pgb_probe_$name" -c 1 -t $((per * 10)))
        sleep 0.5 # the backends' statistics are flushed when they exit
        b1=$(sqlv "SELECT blks_hit + blks_read FROM pg_stat_database WHERE datname = current_database()")
        [[ $(field failed "$out") == 0 ]] || die "history probe $name: $out"
        printf '%s\t%s\t%s\t%s\n' "$name" "$hist" "$(calc "1000 / $(field tps "$out")")" \
            "$(calc "($b1 - $b0) / ($per * 10)")" >>"$HISTORY"
        log "   history probe at $hist transactions: $name $(tail -n 1 "$HISTORY" | cut -f3) ms," \
            "$(tail -n 1 "$HISTORY" | cut -f4) buffers per call"
    done
}

if [[ $HIST_COMPARE == 1 ]]; then
    log "history: a data set with a tenth of the history first ($((HIST_TASKS / 10)) past tasks), probed, then dropped"
    load_dataset $((HIST_TASKS / 10))
    history_probe
    scripts/services.sh purge "$SVC" >/dev/null 2>&1 || true
    scripts/services.sh start "$SVC" >/dev/null
    # shellcheck disable=SC1091 # written by services.sh start
    . "$SVC/env"
fi
load_dataset "$HIST_TASKS"
log "history probe: task list, statement, claim, award at pgbench -c1 ($PROBE_N calls each), before the scenarios"
history_probe
# The minimal logical shapes (issue 12): their own tables in schema shape.
sql -v workers=100000 -v assignments="$N4" -f scripts/bench/shapes.sql >/dev/null
N_TXNS=$(sqlv "SELECT count(*) FROM ledger_txns")
N_POSTINGS=$(sqlv "SELECT count(*) FROM postings")
N_WORKERS=$(sqlv "SELECT count(*) FROM bench.workers")
N_TASKS=$(sqlv "SELECT count(*) FROM tasks")
N_ASG=$(sqlv "SELECT count(*) FROM assignments")
DB_SIZE=$(sqlv "SELECT pg_size_pretty(pg_database_size(current_database()))")
T0=$SECONDS
CHECK_BEFORE=$(sqlv "SELECT gp_ledger_check()")
CHECK_S=$((SECONDS - T0))
log "data set: $N_WORKERS workers, $N_TXNS ledger transactions, $N_POSTINGS postings, $N_TASKS tasks," \
    "$N_ASG assignments, $DB_SIZE; loaded and analyzed in ${LOAD_S}s"
log "gp_ledger_check() = $CHECK_BEFORE (${CHECK_S}s)"
[[ $CHECK_BEFORE == "[]" ]] || die "the generated ledger is not sound: $CHECK_BEFORE"
((N_WORKERS >= 100000 && N_TXNS >= 1000000)) || [[ $QUICK == 1 || -n ${BENCH_WORKERS:-}${BENCH_HIST_TASKS:-} ]] ||
    die "the data set is smaller than 100,000 workers / 1,000,000 transactions"

# The audit log (when this tree has it): seal the generated history now, in big rounds, as an
# operator loading a ledger would; otherwise the server's sealer (1,000 per round) would still be
# sealing it in the background during the measurements.
AUDIT=0
SEAL_S=-
if [[ $(sqlv "SELECT to_regproc('gp_audit_seal') IS NOT NULL") == t ]]; then
    AUDIT=1
    T0=$SECONDS
    while sqlv "SELECT gp_audit_seal(100000, 0, 86400, 1000000000)" | grep -q '"more": true'; do
        ((SECONDS - T0 < 600)) || die "sealing the audit log did not finish in 600 s"
    done
    SEAL_S=$((SECONDS - T0))
    SEALED_N=$(sqlv "SELECT size FROM audit_head")
    log "sealed $SEALED_N ledger transactions into the audit log in ${SEAL_S}s"
fi

# The dashboard's counters (sql/migrations/0018_dashboard.sql, when this tree has them): the
# data set is written with triggers off, so they are rebuilt from the base tables once, as an
# operator does after a bulk load (docs/DASHBOARD.md).
DASH=0
if [[ $(sqlv "SELECT to_regproc('dash_rebuild') IS NOT NULL") == t ]]; then
    DASH=1
    T0=$SECONDS
    sqlv "SELECT dash_rebuild()" >/dev/null
    sql -c 'ANALYZE dash_daily' -c 'ANALYZE dash_units' -c 'ANALYZE dash_merchant_daily'
    log "dashboard counters rebuilt in $((SECONDS - T0))s ($(sqlv "SELECT count(*) FROM dash_daily") unit-days)"
fi

# start_server [ENV=VALUE...]: gridpointsd on $PORT in the background, ready; sets SERVER_PID.
# SERVER_WRAP: a command to run it under (valgrind); READY_TRIES: tenths of a second to wait.
SERVER_WRAP=()
READY_TRIES=200
# The reconciler pages through every balance at start-up and then every reconcile_interval; we
# wait for the first pass and keep a second one out of the measurements (docs/BENCHMARKS.md).
# The merchant secrets are throwaway values for this run (the server refuses to start without).
MERCHANT_KEK=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
MERCHANT_PAYCODE=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
start_server() {
    local i
    env GRIDPOINTS_SERVER_LISTEN="127.0.0.1:$PORT" GRIDPOINTS_LOG_LEVEL=warn \
        GRIDPOINTS_SERVER_MAX_CONNECTIONS_PER_ADDRESS=0 \
        GRIDPOINTS_TIMERS_RECONCILE_INTERVAL=1h \
        GRIDPOINTS_MERCHANT_KEY_ENCRYPTION_KEY="$MERCHANT_KEK" \
        GRIDPOINTS_MERCHANT_PAYCODE_SECRET="$MERCHANT_PAYCODE" "$@" \
        "${SERVER_WRAP[@]}" "$BIN" -c "$CONF" serve >>"$W/server.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for ((i = 0; i < READY_TRIES; i++)); do
        curl -sf "$URL/readyz" >/dev/null 2>&1 && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || {
            tail -n 20 "$W/server.log" >&2
            die "gridpointsd exited at start"
        }
        sleep 0.1
    done
    die "gridpointsd not ready after $((READY_TRIES / 10)) s"
}

PORT=$(free_port)
URL=http://127.0.0.1:$PORT
log "gridpointsd on $URL"
: >"$W/server.log"
start_server
N_BAL=$(sqlv "SELECT count(DISTINCT owner_id) FROM accounts WHERE kind IN ('worker', 'worker_pending')")
T0=$SECONDS
for ((;;)); do
    DONE=$(metric gridpoints_reconcile_balances_checked_total || true)
    ((${DONE:-0} >= N_BAL)) && break
    ((SECONDS - T0 < 180)) || die "the start-up reconciliation did not finish in 180 s"
    sleep 1
done
log "start-up reconciliation put $N_BAL balances into Redis in $((SECONDS - T0))s"

STREET=$(sqlv "SELECT unit_id FROM bench.staff WHERE role = 'street_admin' LIMIT 1")
ADMIN_TOKEN=$(sqlv "SELECT token FROM bench.staff WHERE role = 'street_admin' LIMIT 1")

# publish_storm_task TITLE: a 100-slot street-level task published over HTTP (so the claim gate
# starts primed, as in production); prints its id.
publish_storm_task() {
    local ends body
    ends=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
    body="{\"unit_id\":$STREET,\"title\":\"$1\",\"category\":\"patrol\",\"reward\":10,\"slots\":100,"
    body+="\"ends_at\":\"$ends\",\"claim_ttl_s\":86400,\"review_window_s\":86400}"
    curl -sf -X POST "$URL/api/v1/tasks" -H "Authorization: Bearer $ADMIN_TOKEN" \
        -H 'Content-Type: application/json' -d "$body" |
        "$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

# =============================================================================================
# 1. Balance read by a worker (Redis hit) vs a bare evhttp server answering the same JSON size
# =============================================================================================
log "1. balance read: wrk -t2 -c$READ_CONNS, ${REPS} x ${DUR}s each, interleaved with the baseline"
reqfile "$W/balance.req" "SELECT 'GET', '/api/v1/workers/me/balance', token FROM bench.workers
                          WHERE n <= 10000 ORDER BY n"
BODY=$(curl -sf "$URL/api/v1/workers/me/balance" -H "Authorization: Bearer $(head -n 1 "$W/balance.req" | cut -f3)")
[[ $BODY == *'"source":"cache"'* ]] || die "the balance did not come from Redis: $BODY"
BPORT=$(free_port)
build/bench/bare_evhttp "$BPORT" "${#BODY}" &
BARE_PID=$!
PIDS+=("$BARE_PID")
sleep 0.3
# Every worker of the file once: sessions into Redis (and the balances of the workers without
# any account yet, which the reconciler does not put), so that the runs measure hits.
build/bench/gpload once -p "$PORT" -c "$READ_CONNS" -f "$W/balance.req" >/dev/null
run_wrk "$URL" "$W/balance.req" "$READ_CONNS" "$WARM_S" >/dev/null
HITS0=$(redis-cli -p "$GP_REDIS_PORT" info stats | awk -F: '/^keyspace_hits/ { print $2+0 }')
MISS0=$(redis-cli -p "$GP_REDIS_PORT" info stats | awk -F: '/^keyspace_misses/ { print $2+0 }')
: >"$W/s1.server" && : >"$W/s1.bare"
for ((r = 1; r <= REPS; r++)); do
    run_wrk "http://127.0.0.1:$BPORT" "$W/balance.req" "$READ_CONNS" "$DUR" >>"$W/s1.bare"
    run_wrk "$URL" "$W/balance.req" "$READ_CONNS" "$DUR" >>"$W/s1.server"
done
stop_pid "$BARE_PID"
HITS=$(($(redis-cli -p "$GP_REDIS_PORT" info stats | awk -F: '/^keyspace_hits/ { print $2+0 }') - HITS0))
MISS=$(($(redis-cli -p "$GP_REDIS_PORT" info stats | awk -F: '/^keyspace_misses/ { print $2+0 }') - MISS0))
S=$(pick_median "$W/s1.server")
B=$(pick_median "$W/s1.bare")
S_RPS=$(field rps "$S")
B_RPS=$(field rps "$B")
S_P99=$(calc "$(field p99_us "$S")/1000")
S_ERR=$(calc "$(field errors_status "$S")+$(field errors_read "$S")+$(field errors_timeout "$S")+$(field errors_connect "$S")")
log "   Redis hit ratio during the runs: $HITS hits, $MISS misses"
row 1 "balance read, Redis hit (wrk -c$READ_CONNS)" "req/s" "$S_RPS" "bare evhttp, same body size" \
    "$B_RPS" "$(calc "$(field p50_us "$S")/1000")" "$S_P99" "$(calc "$(field p999_us "$S")/1000")" \
    "$S_ERR" ">= 0.8 of bare; p99 < 5 ms" \
    "$(verdict "$S_RPS >= 0.8 * $B_RPS && $S_P99 < 5 && $S_ERR == 0")"
row 1b "bare evhttp baseline (same wrk)" "req/s" "$B_RPS" "-" "-" "$(calc "$(field p50_us "$B")/1000")" \
    "$(calc "$(field p99_us "$B")/1000")" "$(calc "$(field p999_us "$B")/1000")" \
    "$(calc "$(field errors_status "$B")+$(field errors_read "$B")")" "-" "-"

# =============================================================================================
# 2. Task list near a point, as a worker, vs the same query through pgbench
# =============================================================================================
log "2. task list near a point: wrk and pgbench at $LIST_CONNS connections, ${REPS} x ${DUR}s each"
reqfile "$W/list.req" "SELECT 'GET', format('/api/v1/tasks?lat=%s&lng=%s&radius_m=1000', lat, lng),
                              token FROM bench.workers WHERE n BETWEEN 10001 AND 20000 ORDER BY n"
cat >"$W/list.pgb" <<'EOF'
\set n random(10001, 20000)
SELECT gp_task_list(w.person_id, jsonb_build_object('limit', 50, 'lat', w.lat, 'lng', w.lng, 'radius_m', 1000.0)) FROM bench.workers w WHERE w.n = :n;
EOF
ITEMS=$(sqlv "SELECT round(avg(jsonb_array_length(gp_task_list(w.person_id, jsonb_build_object(
                 'limit', 50, 'lat', w.lat, 'lng', w.lng, 'radius_m', 1000.0)) -> 'items')), 1)
              FROM bench.workers w WHERE w.n BETWEEN 10001 AND 10100")
log "   $ITEMS tasks per answer on average"
reqfile "$W/list_warm.req" "SELECT 'GET', '/api/v1/workers/me/balance', token FROM bench.workers
                           WHERE n BETWEEN 10001 AND 20000"
build/bench/gpload once -p "$PORT" -c "$READ_CONNS" -f "$W/list_warm.req" >/dev/null # sessions
run_wrk "$URL" "$W/list.req" "$LIST_CONNS" "$WARM_S" >/dev/null
: >"$W/s2.server" && : >"$W/s2.pgbench"
for ((r = 1; r <= REPS; r++)); do
    run_pgbench "$W/list.pgb" "$W/pgb_list$r" -c "$LIST_CONNS" -T "$DUR" >>"$W/s2.pgbench"
    run_wrk "$URL" "$W/list.req" "$LIST_CONNS" "$DUR" >>"$W/s2.server"
done
S=$(pick_median "$W/s2.server")
B=$(pick_median "$W/s2.pgbench")
row 2 "task list near a point, ${ITEMS} tasks/answer (-c$LIST_CONNS)" "req/s" "$(field rps "$S")" \
    "pgbench, same query" "$(field tps "$B")" "$(calc "$(field p50_us "$S")/1000")" \
    "$(calc "$(field p99_us "$S")/1000")" "$(calc "$(field p999_us "$S")/1000")" \
    "$(calc "$(field errors_status "$S")+$(field errors_read "$S")+$(field errors_timeout "$S")")" "-" "-"
row 2b "pgbench baseline of 2" "tps" "$(field tps "$B")" "-" "-" "$(field p50_ms "$B")" \
    "$(field p99_ms "$B")" "$(field p999_ms "$B")" "$(field failed "$B")" "-" "-"

# =============================================================================================
# 3. Claim storm: 10,000 claims from distinct workers on a 100-slot task
# =============================================================================================
# storm NAME FIRST_WORKER CONNS WARM: prints gpload's line plus winners= and db_queries=.
storm() {
    local name=$1 first=$2 conns=$3 warm=$4 tid q0 q1 e0 e1 out winners
    tid=$(publish_storm_task "storm $name")
    reqfile "$W/storm_$name.req" "SELECT 'POST', '/api/v1/tasks/$tid/claim', token FROM bench.workers
                                  WHERE n BETWEEN $first AND $first + 9999 ORDER BY random()"
    if [[ $warm == warm ]]; then
        # The workers have the app open: their last request (the balance on the home screen)
        # put their session into Redis, as the minutes before an announced task would.
        reqfile "$W/storm_${name}_warm.req" "SELECT 'GET', '/api/v1/workers/me/balance', token
                                             FROM bench.workers WHERE n BETWEEN $first AND $first + 9999"
        build/bench/gpload once -p "$PORT" -c 64 -f "$W/storm_${name}_warm.req" >/dev/null
    fi
    q0=$(metric gridpoints_db_queries_total)
    e0=$(metric gridpoints_db_errors_total)
    out=$(build/bench/gpload once -p "$PORT" -c "$conns" -f "$W/storm_$name.req")
    q1=$(metric gridpoints_db_queries_total)
    e1=$(metric gridpoints_db_errors_total)
    winners=$(sqlv "SELECT count(*) FROM assignments WHERE task_id = $tid")
    echo "$out winners=$winners db_queries=$((q1 - q0)) db_refusals=$((e1 - e0)) task=$tid"
}
log "3. claim storm: 10,000 distinct workers, 100 slots"
ST_WARM=$(storm warm500 20001 "$STORM_CONNS" warm)
log "   $ST_WARM"
ST_SAME=$(storm warm64 30001 "$STORM_SAME" warm)
log "   $ST_SAME"
ST_COLD=$(storm cold500 40001 "$STORM_CONNS" cold)
log "   $ST_COLD"
# Baseline: the same gp_task_claim calls through pgbench (64 clients x 157 = 10,048 claims; a
# refusal is caught in the wrapper so that pgbench goes on, as the server answers 409 and goes on).
TID=$(publish_storm_task "storm pgbench")
sql -c "CREATE SEQUENCE bench.storm_seq START 50001" -c "GRANT USAGE, SELECT ON SEQUENCE bench.storm_seq TO gp_app" \
    -c "CREATE FUNCTION bench.try_claim(p_actor bigint, p_task bigint) RETURNS text LANGUAGE plpgsql AS \$\$
        BEGIN PERFORM gp_task_claim(p_actor, p_task); RETURN 'ok';
        EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END \$\$" \
    -c "GRANT EXECUTE ON FUNCTION bench.try_claim(bigint, bigint) TO gp_app"
cat >"$W/storm.pgb" <<EOF
SELECT bench.try_claim(w.person_id, $TID) FROM bench.workers w WHERE w.n = (SELECT nextval('bench.storm_seq'));
EOF
T0=$(date +%s.%N)
ST_PGB=$(run_pgbench "$W/storm.pgb" "$W/pgb_storm" -c "$STORM_SAME" -t 157)
ST_PGB_S=$(calc "$(date +%s.%N) - $T0")
PGB_WINNERS=$(sqlv "SELECT count(*) FROM assignments WHERE task_id = $TID")
log "   pgbench: $ST_PGB winners=$PGB_WINNERS"
for v in ST_WARM ST_SAME ST_COLD; do
    line=${!v}
    [[ $(field winners "$line") == 100 && $(field st_201 "$line") == 100 ]] ||
        die "claim storm $v: not exactly 100 winners: $line"
done
[[ $PGB_WINNERS == 100 ]] || die "pgbench claim storm: $PGB_WINNERS winners"
# The logical shape of the storm: the minimal claim (scripts/bench/shape_claim.pgb) on one
# 100-slot task, 10,048 attempts at 64 connections; a loser's guarded decrement finds no slot.
SHAPE_STORM=$(sqlv "WITH i AS (INSERT INTO shape.tasks (id, unit_id, reward, slots, ends_at)
                              SELECT coalesce(max(id), 0) + 1, 0, 10, 100, now() + interval '1 day'
                                FROM shape.tasks RETURNING id) SELECT id FROM i")
T0=$(date +%s.%N)
SH3=$(run_pgbench scripts/bench/shape_claim.pgb "$W/pgb_shape_storm" -c "$STORM_SAME" -t 157 -D task="$SHAPE_STORM")
SH3_S=$(calc "$(date +%s.%N) - $T0")
SH3_WINNERS=$(sqlv "SELECT count(*) FROM shape.assignments WHERE task_id = $SHAPE_STORM")
log "   shape: $SH3 winners=$SH3_WINNERS"
[[ $SH3_WINNERS == 100 ]] || die "claim storm shape: $SH3_WINNERS winners"
storm_row() { # ID LABEL LINE GOAL VERDICT
    row "$1" "$2" "claims/s; drain $(field duration_s "$3") s; 201 x $(field st_201 "$3"); $(field db_queries "$3") db queries" \
        "$(field rps "$3")" "minimal claim, one 100-slot task, -c$STORM_SAME" "$(field tps "$SH3")" \
        "$(field p50_ms "$3")" "$(field p99_ms "$3")" "$(field p999_ms "$3")" \
        "5xx=$(field s5xx "$3") err=$(field errors "$3")" "$4" "$5" \
        "gp_task_claim -c$STORM_SAME" "$(field tps "$ST_PGB")"
}
storm_row 3 "claim storm, warm sessions, $STORM_CONNS conns" "$ST_WARM" \
    "drain < 2 s, 100 winners, no 5xx" \
    "$(verdict "$(field duration_s "$ST_WARM") < 2 && $(field winners "$ST_WARM") == 100 && $(field s5xx "$ST_WARM") == 0 && $(field errors "$ST_WARM") == 0")"
storm_row 3b "claim storm, warm sessions, $STORM_SAME conns" "$ST_SAME" "same" \
    "$(verdict "$(field duration_s "$ST_SAME") < 2 && $(field winners "$ST_SAME") == 100 && $(field s5xx "$ST_SAME") == 0 && $(field errors "$ST_SAME") == 0")"
storm_row 3c "claim storm, cold sessions, $STORM_CONNS conns" "$ST_COLD" "same" \
    "$(verdict "$(field duration_s "$ST_COLD") < 2 && $(field winners "$ST_COLD") == 100 && $(field s5xx "$ST_COLD") == 0 && $(field errors "$ST_COLD") == 0")"
row 3d "pgbench baseline of 3 (10,048 claims)" "claims/s; drain ${ST_PGB_S} s; 100 winners" \
    "$(field tps "$ST_PGB")" "-" "-" "$(field p50_ms "$ST_PGB")" "$(field p99_ms "$ST_PGB")" \
    "$(field p999_ms "$ST_PGB")" "$(field failed "$ST_PGB")" "-" "-"
row 3f "minimal claim shape of 3 (10,048 attempts on one task)" "claims/s; drain ${SH3_S} s; 100 winners" \
    "$(field tps "$SH3")" "-" "-" "$(field p50_ms "$SH3")" "$(field p99_ms "$SH3")" \
    "$(field p999_ms "$SH3")" "$(field failed "$SH3")" "-" "-"

# =============================================================================================
# 3e. Claims without a storm: N3E claims by distinct workers spread over CLAIM_TASKS tasks at
#     AWARD_CONNS connections, vs the minimal claim shape and gp_task_claim through pgbench
# =============================================================================================
log "3e. claims, no storm: $N3E claims over $CLAIM_TASKS tasks at $AWARD_CONNS connections, then the shape and pgbench"
# publish_task TITLE SLOTS: a street-level task over HTTP; prints its id.
publish_task() {
    local ends body
    ends=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
    body="{\"unit_id\":$STREET,\"title\":\"$1\",\"category\":\"patrol\",\"reward\":10,\"slots\":$2,"
    body+="\"ends_at\":\"$ends\",\"claim_ttl_s\":86400,\"review_window_s\":86400}"
    curl -sf -X POST "$URL/api/v1/tasks" -H "Authorization: Bearer $ADMIN_TOKEN" \
        -H 'Content-Type: application/json' -d "$body" |
        "$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}
# Exactly as many slots as claims (the tasks are full afterwards and leave the later lists alone).
T3E_HTTP=() T3E_PGB=()
for ((i = 0; i < CLAIM_TASKS; i++)); do
    T3E_HTTP+=("$(publish_task "claims $i" $((N3E / CLAIM_TASKS)))")
    T3E_PGB+=("$(publish_task "claims pgbench $i" $((N3E / CLAIM_TASKS)))")
done
# Workers 1 .. N3E over HTTP (their sessions warmed by a balance read first), 10001 .. through pgbench.
reqfile "$W/claims.req" "SELECT 'POST', '/api/v1/tasks/' || (ARRAY[$(IFS=,; echo "${T3E_HTTP[*]}")]::bigint[])[1 + n % $CLAIM_TASKS] || '/claim', token
                         FROM bench.workers WHERE n <= $N3E ORDER BY random()"
reqfile "$W/claims_warm.req" "SELECT 'GET', '/api/v1/workers/me/balance', token FROM bench.workers WHERE n <= $N3E"
build/bench/gpload once -p "$PORT" -c 64 -f "$W/claims_warm.req" >/dev/null
S3E=$(build/bench/gpload once -p "$PORT" -c "$AWARD_CONNS" -f "$W/claims.req")
log "   $S3E"
[[ $(field st_201 "$S3E") == "$N3E" ]] || die "not every claim of 3e succeeded: $S3E"
sql -c "CREATE SEQUENCE bench.claims_seq START 10001" -c "GRANT USAGE, SELECT ON SEQUENCE bench.claims_seq TO gp_app"
cat >"$W/claims.pgb" <<EOF
SELECT gp_task_claim(w.person_id, (ARRAY[$(IFS=,; echo "${T3E_PGB[*]}")]::bigint[])[1 + w.n % $CLAIM_TASKS]) FROM bench.workers w WHERE w.n = (SELECT nextval('bench.claims_seq'));
EOF
P3E=$(run_pgbench "$W/claims.pgb" "$W/pgb_claims" -c "$AWARD_CONNS" -t $((N3E / AWARD_CONNS)))
log "   pgbench: $P3E"
SH3E=$(run_pgbench scripts/bench/shape_claim.pgb "$W/pgb_shape_claims" -c "$AWARD_CONNS" -t $((N3E / AWARD_CONNS)) -D task=0)
log "   shape: $SH3E"
row 3e "claims, no storm: $N3E workers over $CLAIM_TASKS tasks (-c$AWARD_CONNS)" "claims/s" "$(field rps "$S3E")" \
    "minimal claim, spread" "$(field tps "$SH3E")" "$(field p50_ms "$S3E")" "$(field p99_ms "$S3E")" \
    "$(field p999_ms "$S3E")" "5xx=$(field s5xx "$S3E") err=$(field errors "$S3E")" ">= 0.5 of the shape" \
    "$(verdict "$(field rps "$S3E") >= 0.5 * $(field tps "$SH3E")")" "gp_task_claim" "$(field tps "$P3E")"

# =============================================================================================
# 4. Report submission followed by auto-approval vs pgbench submit + award in one transaction
# =============================================================================================
log "4. reports + auto-approval: $N4 reports at $AWARD_CONNS connections, then the same through pgbench"
sql -v name=http -v grid0=0 -v tasks="$REPORT_TASKS" -v per_task="$PER_TASK" \
    -f scripts/bench/reports_setup.sql >/dev/null
sql -v name=pgbench -v grid0="$REPORT_TASKS" -v tasks="$REPORT_TASKS" -v per_task="$PER_TASK" \
    -f scripts/bench/reports_setup.sql >/dev/null
# Fresh statistics after 2 x N4 new claims (docs/BENCHMARKS.md, "stale statistics").
sql -c 'ANALYZE assignments' -c 'ANALYZE tasks' -c 'GRANT SELECT ON bench.reports TO gp_app' \
    -c 'CREATE SEQUENCE bench.reports_seq' -c 'GRANT USAGE, SELECT ON SEQUENCE bench.reports_seq TO gp_app'
reqfile "$W/reports.req" "SELECT 'POST', '/api/v1/reports', token, body FROM bench.reports
                          WHERE name = 'http' ORDER BY n"
TASKS4=$(sqlv "SELECT string_agg(DISTINCT task_id::text, ',') FROM bench.reports WHERE name = 'http'")
(
    while :; do
        psql -X -At -F ' ' "$GRIDPOINTS_DATABASE_ADMIN_URL" -c "SELECT extract(epoch FROM clock_timestamp()),
            count(*) FILTER (WHERE state = 'submitted'), count(*) FILTER (WHERE state = 'approved')
            FROM assignments WHERE task_id IN ($TASKS4)"
        sleep 0.25
    done >"$W/s4.poll" 2>/dev/null
) &
POLL_PID=$!
PIDS+=("$POLL_PID")
T0=$(date +%s.%N)
S4=$(build/bench/gpload once -p "$PORT" -c "$AWARD_CONNS" -f "$W/reports.req")
log "   submissions: $S4"
for ((i = 0; i < 240; i++)); do
    [[ $(tail -n 1 "$W/s4.poll" | cut -d' ' -f3) == "$N4" ]] && break
    sleep 0.5
done
stop_pid "$POLL_PID"
AW=$("$PY" scripts/bench/results.py award-rate "$W/s4.poll" "$N4" "$T0")
log "   awards: $AW"
[[ $(sqlv "SELECT count(*) FROM assignments WHERE task_id IN ($TASKS4) AND state = 'approved'") == "$N4" ]] ||
    die "not every report of scenario 4 was auto-approved within 2 minutes"
cat >"$W/award.pgb" <<'EOF'
BEGIN;
SELECT worker_id AS w, assignment_id AS a, staff_id AS st, body AS b FROM bench.reports WHERE name = 'pgbench' AND n = (SELECT nextval('bench.reports_seq')) \gset
SELECT gp_report_submit(:w, :b::jsonb, interval '120 seconds');
SELECT gp_report_decide(:st, :a, true, NULL);
END;
EOF
P4=$(run_pgbench "$W/award.pgb" "$W/pgb_award" -c "$AWARD_CONNS" -t $((N4 / AWARD_CONNS)))
log "   pgbench: $P4"
SH4A=$(run_pgbench scripts/bench/shape_award.pgb "$W/pgb_shape_award" -c "$AWARD_CONNS" -t $((N4 / AWARD_CONNS)))
log "   award shape: $SH4A"
SH4S=$(run_pgbench scripts/bench/shape_submit.pgb "$W/pgb_shape_submit" -c "$AWARD_CONNS" -t $((N4 / AWARD_CONNS)))
log "   submission shape: $SH4S"
[[ $(sqlv "SELECT count(*) FROM shape.events") == "$N4" ]] || die "the submission shape did not submit $N4 reports"
row 4 "report, then auto-approval (-c$AWARD_CONNS)" "awards/s sustained (all $N4 paid $(field all_s "$AW") s after the first report)" \
    "$(field sustained "$AW")" "minimal award" "$(field tps "$SH4A")" "-" "-" "-" \
    "$(field errors "$S4")" ">= 0.5 of the shape; report p99 < 20 ms" \
    "$(verdict "$(field sustained "$AW") >= 0.5 * $(field tps "$SH4A") && $(field p99_ms "$S4") < 20")" \
    "submit+approve, 1 txn" "$(field tps "$P4")"
row 4b "report submission (POST /api/v1/reports)" "req/s" "$(field rps "$S4")" "minimal submission" \
    "$(field tps "$SH4S")" "$(field p50_ms "$S4")" "$(field p99_ms "$S4")" "$(field p999_ms "$S4")" \
    "5xx=$(field s5xx "$S4") err=$(field errors "$S4")" ">= 0.5 of the shape" \
    "$(verdict "$(field rps "$S4") >= 0.5 * $(field tps "$SH4S")")" "submit+approve, 1 txn" "$(field tps "$P4")"
row 4d "minimal award shape of 4" "tps" "$(field tps "$SH4A")" "-" "-" "$(field p50_ms "$SH4A")" \
    "$(field p99_ms "$SH4A")" "$(field p999_ms "$SH4A")" "$(field failed "$SH4A")" "-" "-"
row 4e "minimal submission shape of 4" "tps" "$(field tps "$SH4S")" "-" "-" "$(field p50_ms "$SH4S")" \
    "$(field p99_ms "$SH4S")" "$(field p999_ms "$SH4S")" "$(field failed "$SH4S")" "-" "-"
row 4c "pgbench baseline of 4" "tps" "$(field tps "$P4")" "-" "-" "$(field p50_ms "$P4")" \
    "$(field p99_ms "$P4")" "$(field p999_ms "$P4")" "$(field failed "$P4")" "-" "-"

# =============================================================================================
# 5. Merchant counter charge, signed (the merchant issue)
# =============================================================================================
if grep -q '"/merchant/v1/charges"' server/routes.c &&
    [[ $(sqlv "SELECT to_regproc('gp_mrc_charge') IS NOT NULL AND to_regproc('gp_paycode_issue') IS NOT NULL") == t ]]; then
    N5=$(((QUICK == 1 ? 1000 : 6000) / AWARD_CONNS * AWARD_CONNS))
    M5=20
    log "5. merchant counter charge: $N5 signed charges over $M5 merchants at $AWARD_CONNS connections, then pgbench"
    # Merchants and their keys, onboarded over the API as a street admin does (the secret is
    # sealed by the server and shown once).
    : >"$W/merchant_keys.tsv"
    for ((m = 0; m < M5; m++)); do
        MID=$(curl -sf -X POST "$URL/api/v1/merchants" -H "Authorization: Bearer $ADMIN_TOKEN" \
            -H 'Content-Type: application/json' \
            -d "{\"name\":\"bench 便利店 $m\",\"address\":\"锦江区 $m 号\",\"unit_id\":$STREET,\"contact_name\":\"bench\",\"contact_phone\":\"028-6666-$((1000 + m))\"}" |
            "$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])') || die "creating a merchant"
        curl -sf -X POST "$URL/api/v1/merchants/$MID/keys" -H "Authorization: Bearer $ADMIN_TOKEN" \
            -H 'Content-Type: application/json' -d '{}' |
            "$PY" -c 'import json, sys; k = json.load(sys.stdin); print(k["merchant_id"], k["key_id"], k["secret"])' \
                >>"$W/merchant_keys.tsv" || die "issuing a merchant key"
    done
    VALUES=$(awk '{ printf "%s(%d, %s, \x27%s\x27)", (NR > 1 ? ", " : ""), NR - 1, $1, $2 }' "$W/merchant_keys.tsv")
    # Pay codes of 2 x N5 funded workers (issued as POST /api/v1/paycodes does, valid 15 min):
    # the first N5 for the server, the others for pgbench.
    sql -c "CREATE TABLE bench.merchant_keys (idx int PRIMARY KEY, merchant_id bigint, key_id text)" \
        -c "INSERT INTO bench.merchant_keys VALUES $VALUES" \
        -c "CREATE TABLE bench.paycodes AS
            SELECT y.n, y.worker_id, y.n % $M5 AS midx, y.r ->> 'nonce' AS nonce, (y.r ->> 'exp')::bigint AS exp
              FROM (SELECT x.n, x.worker_id, gp_paycode_issue(x.worker_id, md5(x.n || '/' || random()), 900) AS r
                      FROM (SELECT row_number() OVER (ORDER BY w.n) AS n, w.person_id AS worker_id
                              FROM bench.workers w
                              JOIN accounts a ON a.kind = 'worker' AND a.owner_id = w.person_id AND a.balance >= 10
                             WHERE w.n > 80000 ORDER BY w.n LIMIT 2 * $N5) x) y" \
        -c "CREATE SEQUENCE bench.paycodes_seq START $((N5 + 1))" \
        -c "GRANT SELECT ON bench.merchant_keys, bench.paycodes TO gp_app" \
        -c "GRANT USAGE, SELECT ON SEQUENCE bench.paycodes_seq TO gp_app"
    [[ $(sqlv "SELECT count(*) FROM bench.paycodes") == $((2 * N5)) ]] || die "not enough funded workers for scenario 5"
    psql -X -At -F ' ' "$GRIDPOINTS_DATABASE_ADMIN_URL" \
        -c "SELECT nonce, worker_id, exp, midx FROM bench.paycodes WHERE n <= $N5 ORDER BY n" >"$W/paycodes.txt"
    "$PY" scripts/bench/results.py sign-charges "$W/merchant_keys.tsv" "$W/paycodes.txt" \
        "$MERCHANT_PAYCODE" 5 "$W/charges.req" >/dev/null
    S5=$(build/bench/gpload once -p "$PORT" -c "$AWARD_CONNS" -f "$W/charges.req")
    log "   $S5"
    [[ $(field st_201 "$S5") == "$N5" ]] || die "not every signed charge succeeded: $S5"
    cat >"$W/charge.pgb" <<'EOF'
SELECT p.nonce AS c, p.worker_id AS w, k.key_id AS k, 'merchant:' || k.merchant_id AS m FROM bench.paycodes p JOIN bench.merchant_keys k ON k.idx = p.midx WHERE p.n = (SELECT nextval('bench.paycodes_seq')) \gset
SELECT gp_mrc_charge(:k, :c, :w, 5, 'bench', :m, :c, 'bench');
EOF
    P5=$(run_pgbench "$W/charge.pgb" "$W/pgb_charge" -c "$AWARD_CONNS" -t $((N5 / AWARD_CONNS)))
    log "   pgbench: $P5"
    SH5=$(run_pgbench scripts/bench/shape_charge.pgb "$W/pgb_shape_charge" -c "$AWARD_CONNS" -t $((N5 / AWARD_CONNS)))
    log "   shape: $SH5"
    row 5 "merchant counter charge, signed, $M5 merchants (-c$AWARD_CONNS)" "charges/s" "$(field rps "$S5")" \
        "minimal charge" "$(field tps "$SH5")" "$(field p50_ms "$S5")" "$(field p99_ms "$S5")" \
        "$(field p999_ms "$S5")" "5xx=$(field s5xx "$S5") err=$(field errors "$S5")" ">= 0.5 of the shape" \
        "$(verdict "$(field rps "$S5") >= 0.5 * $(field tps "$SH5")")" "gp_mrc_charge" "$(field tps "$P5")"
    row 5c "minimal charge shape of 5" "tps" "$(field tps "$SH5")" "-" "-" "$(field p50_ms "$SH5")" \
        "$(field p99_ms "$SH5")" "$(field p999_ms "$SH5")" "$(field failed "$SH5")" "-" "-"
    row 5b "pgbench baseline of 5" "tps" "$(field tps "$P5")" "-" "-" "$(field p50_ms "$P5")" \
        "$(field p99_ms "$P5")" "$(field p999_ms "$P5")" "$(field failed "$P5")" "-" "-"
else
    log "5. merchant counter charge: not yet available (no /merchant/v1 routes in server/routes.c): skipped"
    row 5 "merchant counter charge, signed" "-" "-" "-" "-" "-" "-" "-" "-" "-" "not yet available"
fi

# =============================================================================================
# 8. The street dashboard (一屏统揽): GET /api/v1/dashboard of the whole street (30 days) and of
#    a grid, vs the same function through pgbench (the console issue)
# =============================================================================================
if [[ $DASH == 1 ]]; then
    DASH_CONNS=8
    log "8. dashboard: wrk and pgbench at $DASH_CONNS connections, ${DUR}s each"
    # Half the requests are the street admin's (the whole street), half a grid staff member's.
    reqfile "$W/dash.req" "SELECT 'GET', '/api/v1/dashboard?days=30', token FROM
                           (SELECT token FROM bench.staff WHERE role = 'street_admin' LIMIT 1) s
                           UNION ALL
                           SELECT 'GET', '/api/v1/dashboard?days=30', token FROM
                           (SELECT token FROM bench.staff WHERE role = 'grid_staff'
                             ORDER BY person_id LIMIT 1) g"
    DASH_ADMIN=$(sqlv "SELECT person_id FROM bench.staff WHERE role = 'street_admin' LIMIT 1")
    echo "SELECT gp_dashboard($DASH_ADMIN, NULL, 30, 30);" >"$W/dash.pgb"
    run_wrk "$URL" "$W/dash.req" "$DASH_CONNS" "$WARM_S" >/dev/null
    S=$(run_wrk "$URL" "$W/dash.req" "$DASH_CONNS" "$DUR")
    B=$(run_pgbench "$W/dash.pgb" "$W/pgb_dash" -c "$DASH_CONNS" -T "$DUR")
    row 8 "dashboard: street and a grid, 30 days ($(sqlv "SELECT count(*) FROM dash_daily") unit-days; -c$DASH_CONNS)" \
        "req/s" "$(field rps "$S")" "pgbench, gp_dashboard of the street" "$(field tps "$B")" \
        "$(calc "$(field p50_us "$S")/1000")" "$(calc "$(field p99_us "$S")/1000")" \
        "$(calc "$(field p999_us "$S")/1000")" \
        "$(calc "$(field errors_status "$S")+$(field errors_read "$S")+$(field errors_timeout "$S")")" \
        "p99 < 50 ms on the 1M set (issue 14)" \
        "$(verdict "$(field p99_us "$S") < 50000")$([[ $QUICK == 1 ]] && echo " (quick: a tenth of the set)")"
fi

# =============================================================================================
# 7. Server memory: 10,000 idle keep-alive connections; RSS over a mixed load
# =============================================================================================
log "7. memory: $IDLE_CONNS idle keep-alive connections, then ${MIXED_S}s of mixed load"
IDLE=$(build/bench/gpload idle -p "$PORT" -c "$IDLE_CONNS" -t "$HOLD_S" --pid "$SERVER_PID")
log "   $IDLE"
RSS_IDLE_MB=$(calc "$(field rss_max_kb "$IDLE")/1024")
row 7 "RSS with $(field connected "$IDLE") idle keep-alive connections" \
    "MB (before: $(calc "$(field rss_before_kb "$IDLE")/1024") MB; connect ${IDLE_CONNS} in $(field connect_s "$IDLE") s)" \
    "$RSS_IDLE_MB" "-" "-" "-" "-" "-" "connect_errors=$(field connect_errors "$IDLE")" "< 100 MB" \
    "$(verdict "$RSS_IDLE_MB < 100 && $(field connected "$IDLE") == $IDLE_CONNS")"
# The mixed load: what the mini-program does when a worker opens it.
reqfile "$W/mixed.req" "
  WITH t AS (SELECT array_agg(id ORDER BY id) AS ids FROM tasks WHERE unit_id = $STREET AND status = 'open')
  SELECT 'GET', CASE w.n % 10
             WHEN 0 THEN '/api/v1/me'
             WHEN 1 THEN format('/api/v1/tasks?lat=%s&lng=%s&radius_m=1000', w.lat, w.lng)
             WHEN 2 THEN '/api/v1/tasks/' || t.ids[1 + w.n % cardinality(t.ids)]
             WHEN 3 THEN '/api/v1/workers/me/statement?limit=20'
             WHEN 4 THEN '/api/v1/workers/me/rank?scope=grid'
             WHEN 5 THEN '/api/v1/assignments'
             ELSE '/api/v1/workers/me/balance' END, w.token
    FROM bench.workers w, t WHERE w.n BETWEEN 60001 AND 80000 ORDER BY w.n"
(
    while :; do
        echo "$(date +%s) $(rss_kb "$SERVER_PID")"
        sleep "$SAMPLE_S"
    done >"$W/s7.rss" 2>/dev/null
) &
RSS_PID=$!
PIDS+=("$RSS_PID")
# A short pass first: sessions, rank boards and the allocator's arenas settle, and the 10,000
# connections of the idle test are gone.
run_wrk "$URL" "$W/mixed.req" "$READ_CONNS" "$WARM_S" >/dev/null
RSS0=$(rss_kb "$SERVER_PID")
MIX=$(run_wrk "$URL" "$W/mixed.req" "$READ_CONNS" "$MIXED_S")
RSS1=$(rss_kb "$SERVER_PID")
stop_pid "$RSS_PID"
RSS_MAX=$(awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }' "$W/s7.rss")
log "   $MIX"
log "   RSS $RSS0 kB -> $RSS1 kB (max $RSS_MAX kB)"
row 7b "RSS growth over ${MIXED_S}s of mixed load (wrk -c$READ_CONNS)" \
    "MB growth ($(calc "$RSS0/1024") -> $(calc "$RSS1/1024") MB, max $(calc "$RSS_MAX/1024"); $(field rps "$MIX") req/s)" \
    "$(calc "($RSS1 - $RSS0)/1024")" "-" "-" "$(calc "$(field p50_us "$MIX")/1000")" \
    "$(calc "$(field p99_us "$MIX")/1000")" "$(calc "$(field p999_us "$MIX")/1000")" \
    "$(calc "$(field errors_status "$MIX")+$(field errors_read "$MIX")+$(field errors_timeout "$MIX")")" "-" "-"

# =============================================================================================
# 6. Ledger export and offline verification (the audit issue); last, as it restarts the server
# =============================================================================================
HELP=$("$BIN" --help 2>&1 || true)
if [[ $AUDIT == 1 ]] && grep -q '^  export' <<<"$HELP" && grep -q '^  verify' <<<"$HELP"; then
    N6=$(sqlv "SELECT count(*) FROM ledger_txns")
    log "6. export + offline verify of $N6 transactions: restart with a signing key, wait for the checkpoint"
    stop_pid "$SERVER_PID"
    KEY=$W/audit.key
    rm -f "$KEY" "$KEY".*
    GRIDPOINTS_AUDIT_KEY_FILE=$KEY "$BIN" -c "$CONF" audit-keygen >>"$W/server.log" 2>&1 ||
        die "audit-keygen"
    T0=$(date +%s.%N)
    start_server GRIDPOINTS_AUDIT_KEY_FILE="$KEY"
    # The first checkpoint re-derives every leaf from the ledger rows before it is signed.
    for ((;;)); do
        CP=$(sqlv "SELECT coalesce(max(size), 0) FROM audit_checkpoints")
        ((CP >= N6)) && break
        [[ $(sqlv "SELECT alarm IS NOT NULL FROM audit_head") == t ]] &&
            die "audit alarm: $(sqlv "SELECT alarm FROM audit_head")"
        [[ $(calc "$(date +%s.%N) - $T0 < 600") == 1 ]] || die "no checkpoint of size $N6 after 600 s"
        sleep 0.5
    done
    CP_S=$(calc "$(date +%s.%N) - $T0")
    log "   checkpoint of size $CP signed ${CP_S}s after the start (verification pass of the whole log)"
    OUT=$( { /usr/bin/time -f 'time_s=%e maxrss_kb=%M' "$BIN" -c "$CONF" export --out "$W/ledger.jsonl"; } 2>&1) ||
        die "export: $OUT"
    EXP_S=$(field time_s "$(tail -n 1 <<<"$OUT")")
    EXP_MB=$(calc "$(stat -c %s "$W/ledger.jsonl")/1048576")
    log "   export: ${EXP_S}s, ${EXP_MB} MB"
    GRIDPOINTS_AUDIT_KEY_FILE=$KEY "$BIN" -c "$CONF" audit-pubkey >"$W/keys.json"
    OUT=$( { /usr/bin/time -f 'time_s=%e maxrss_kb=%M' "$BIN" verify --export "$W/ledger.jsonl" --pubkey "$W/keys.json"; } 2>&1) ||
        die "verify: $OUT"
    log "   verify: $(head -n 1 <<<"$OUT")"
    grep -q "^OK .*complete export, $N6 transactions" <<<"$OUT" || die "verify did not check $N6 transactions: $OUT"
    VER_S=$(field time_s "$(tail -n 1 <<<"$OUT")")
    VER_RSS=$(calc "$(field maxrss_kb "$(tail -n 1 <<<"$OUT")")/1024")
    # Baselines: the same rows out of PostgreSQL with COPY, and SHA-256 over the same export.
    T0=$(date +%s.%N)
    psql -X -q "$GRIDPOINTS_DATABASE_ADMIN_URL" -c "\\copy (SELECT t.id, t.kind, t.actor_id, t.refs, t.memo, t.created_at, t.xid, p.account_id, p.amount, p.account_version, p.balance_after FROM ledger_txns t JOIN postings p ON p.txn_id = t.id ORDER BY t.id, p.id) TO '$W/ledger_copy.csv' CSV"
    COPY_S=$(calc "$(date +%s.%N) - $T0")
    T0=$(date +%s.%N)
    sha256sum "$W/ledger.jsonl" >/dev/null
    SHA_S=$(calc "$(date +%s.%N) - $T0")
    rm -f "$W/ledger_copy.csv"
    row 6 "ledger export, $N6 transactions (gridpointsd export, $EXP_MB MB)" "transactions/s ($EXP_S s)" \
        "$(calc "$N6 / $EXP_S")" "psql \\copy of the same rows" "$(calc "$N6 / $COPY_S")" "-" "-" "-" "0" \
        ">= 0.5 of \\copy" "$(verdict "$COPY_S / $EXP_S >= 0.5")"
    row 6b "offline verification (gridpointsd verify --export, $VER_RSS MB resident)" "transactions/s ($VER_S s)" \
        "$(calc "$N6 / $VER_S")" "sha256sum of the export" "$(calc "$N6 / $SHA_S")" "-" "-" "-" "0" \
        ">= 0.5 of sha256sum; 10^7 in < 5 min" "$(verdict "$SHA_S / $VER_S >= 0.5 && $N6 / $VER_S >= 10000000 / 300")"
    row 6c "first checkpoint: verification pass + signature" "transactions/s ($CP_S s after start)" \
        "$(calc "$N6 / $CP_S")" "-" "-" "-" "-" "-" "-" \
        "- (the first pass is a full one; the incremental pass is 6e)" "-"
    # 6e. The incremental verification pass (0022): N6E new ledger transactions after the first
    # checkpoint (gp_adjust through pgbench, each its own transaction), sealed, then the pass
    # that the next checkpoint needs, timed as the janitor runs it: gp_audit_seal rounds with the
    # default audit.verify_batch (20,000 leaves a round) until the candidate is the new head. The
    # server is stopped meanwhile, so that its janitor neither seals nor verifies in between;
    # restarted afterwards, it must sign that candidate: the next checkpoint.
    N6E=10000
    stop_pid "$SERVER_PID"
    log "6e. incremental verification pass: $N6E new transactions (gp_adjust, pgbench -c4), sealed, then the pass timed"
    ADMIN_ID=$(sqlv "SELECT person_id FROM bench.staff WHERE role = 'street_admin' LIMIT 1")
    sql -c "CREATE SEQUENCE bench.incr_seq" -c "GRANT USAGE, SELECT ON SEQUENCE bench.incr_seq TO gp_app" >/dev/null
    echo "SELECT gp_adjust($ADMIN_ID, w.person_id, 1, 'incremental pass') FROM bench.workers w WHERE w.n = 1 + (SELECT nextval('bench.incr_seq')) % $N_WORKERS;" >"$W/incr.pgb"
    P6E=$(run_pgbench "$W/incr.pgb" "$W/pgb_incr" -c 4 -t $((N6E / 4)))
    [[ $(field failed "$P6E") == 0 ]] || die "6e: the new transactions: $P6E"
    T0=$SECONDS
    while sqlv "SELECT gp_audit_seal(100000, 0, 86400, 1000000000)" | grep -q '"more": true'; do
        ((SECONDS - T0 < 300)) || die "6e: sealing did not finish in 300 s"
    done
    SIZE0=$(sqlv "SELECT verified_size FROM audit_head")
    SIZE1=$(sqlv "SELECT size FROM audit_head")
    ((SIZE1 - SIZE0 >= N6E)) || die "6e: only $((SIZE1 - SIZE0)) transactions sealed since the last verified checkpoint"
    PASS_S=0 PASS_N=0
    for ((i = 0; i < 100; i++)); do
        # one psql session: the database's clock around one round
        OUT=$(psql -X -At -v ON_ERROR_STOP=1 "$GRIDPOINTS_DATABASE_ADMIN_URL" \
            -c "SELECT extract(epoch FROM clock_timestamp())" \
            -c "SELECT gp_audit_seal(1000, 20000, 0, 1, 86400)" \
            -c "SELECT extract(epoch FROM clock_timestamp())") || die "6e: gp_audit_seal"
        PASS_S=$(calc "$PASS_S + $(sed -n 3p <<<"$OUT") - $(sed -n 1p <<<"$OUT")")
        PASS_N=$((PASS_N + $(sed -n 2p <<<"$OUT" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["verified"])')))
        grep -q '"more": true' <<<"$(sed -n 2p <<<"$OUT")" || break
    done
    PASS=$(sqlv "SELECT verified_from || ' ' || verified_size || ' ' || verified_full || ' ' || coalesce(cand_size, 0) FROM audit_head")
    log "   pass: $PASS_N leaves in ${PASS_S}s; verified_from verified_size full candidate = $PASS"
    [[ $PASS == "$SIZE0 $SIZE1 false $SIZE1" ]] || die "6e: not an incremental pass from $SIZE0 to $SIZE1: $PASS"
    # The next checkpoint: the server, restarted with the key, signs the candidate.
    T0=$(date +%s.%N)
    start_server GRIDPOINTS_AUDIT_KEY_FILE="$KEY"
    for ((;;)); do
        (($(sqlv "SELECT coalesce(max(size), 0) FROM audit_checkpoints") >= SIZE1)) && break
        [[ $(calc "$(date +%s.%N) - $T0 < 120") == 1 ]] || die "6e: no checkpoint of size $SIZE1 after 120 s"
        sleep 0.2
    done
    log "   checkpoint of size $SIZE1 signed $(calc "$(date +%s.%N) - $T0") s after the restart"
    row 6e "incremental verification pass: $PASS_N new transactions since the checkpoint of size $SIZE0 (gp_audit_seal, 20,000 leaves a round)" \
        "s per 10k new transactions (pass ${PASS_S} s; then signed as checkpoint $SIZE1)" \
        "$(calc "$PASS_S * 10000 / $PASS_N")" "-" "-" "-" "-" "-" "-" \
        "incremental pass < 1 s / 10k new transactions" "$(verdict "$PASS_S * 10000 / $PASS_N < 1")"
    row 6d "sealing the generated history ($SEALED_N, gp_audit_seal 100,000 per round)" \
        "transactions/s ($SEAL_S s)" "$(calc "$SEALED_N / ($SEAL_S > 0 ? $SEAL_S : 1)")" "-" "-" "-" "-" "-" "-" "-" "-"
else
    log "6. ledger export + verify: not yet available (no audit log / 'gridpointsd export' and 'verify' in this tree): skipped"
    row 6 "export + offline verify of the ledger" "-" "-" "-" "-" "-" "-" "-" "-" "-" "not yet available"
fi

# The history probe (issue 12, part 6) ran right after the data set was loaded, before the
# scenarios (history_probe above).
stop_pid "$SERVER_PID"

# =============================================================================================
# Instructions per request (callgrind): bare evhttp, the balance read and a report submission,
# each as the difference of two dumps of one process (N1, then N2 requests after a warm-up), so
# that start-up, connections and the warm-up fall out. They do not drift with the machine's load.
# =============================================================================================
if [[ ${BENCH_CALLGRIND:-1} == 1 ]]; then
    command -v valgrind >/dev/null || die "valgrind not found (scripts/deps.sh installs it)"
    CG_N1=200 CG_N2=1000 CG_R0=20 CG_R1=50 CG_R2=250
    log "instructions per request (callgrind): bare evhttp and balance read ($CG_N1 / $CG_N2), report ($CG_R1 / $CG_R2)"
    head -n "$CG_N1" "$W/balance.req" >"$W/cg_bal1.req"
    sed -n "$((CG_N1 + 1)),$((CG_N1 + CG_N2))p" "$W/balance.req" >"$W/cg_bal2.req"
    # cg_measure PID PORT WARM1 FILE1 N1 WARM2 FILE2 N2 OUTBASE D: for each of the two runs a
    # warm-up (the sessions of its workers into Redis: the session cache keeps them 30 s, and
    # under callgrind a run takes seconds), then zero the counters, run, dump (numbers D and
    # D + 1 of the process). Prints results.py callgrind's line and the database queries of the
    # second run per request (session or balance misses; 0 for a balance read from Redis).
    cg_measure() {
        local pid=$1 port=$2 d=${10} q0 q1
        build/bench/gpload once -p "$port" -c 4 -f "$3" >/dev/null
        callgrind_control -z "$pid" >/dev/null 2>&1
        build/bench/gpload once -p "$port" -c 4 -f "$4" >"$9.run$d"
        callgrind_control -d "$pid" >/dev/null 2>&1
        build/bench/gpload once -p "$port" -c 4 -f "$6" >/dev/null
        q0=$(curl -sf "http://127.0.0.1:$port/metrics" | awk '$1 == "gridpoints_db_queries_total" { print $2 }')
        callgrind_control -z "$pid" >/dev/null 2>&1
        build/bench/gpload once -p "$port" -c 4 -f "$7" >"$9.run$((d + 1))"
        callgrind_control -d "$pid" >/dev/null 2>&1
        q1=$(curl -sf "http://127.0.0.1:$port/metrics" | awk '$1 == "gridpoints_db_queries_total" { print $2 }')
        for f in "$9.run$d" "$9.run$((d + 1))"; do
            [[ $(field errors "$(cat "$f")") == 0 && $(field s2xx "$(cat "$f")") == $(field requests "$(cat "$f")") ]] ||
                die "callgrind run $f: not every request succeeded: $(cat "$f")"
        done
        echo "$("$PY" scripts/bench/results.py callgrind "$9.$d" "$9.$((d + 1))" "$5" "$8")" \
            "db_queries_per_req=$( [[ -n $q0 && -n $q1 ]] && calc "($q1 - $q0) / $8" || echo -)"
    }
    CGB_PORT=$(free_port)
    valgrind --tool=callgrind --callgrind-out-file="$W/cg.bare.out" \
        build/bench/bare_evhttp "$CGB_PORT" "${#BODY}" >"$W/cg.bare.log" 2>&1 &
    CGB_PID=$!
    PIDS+=("$CGB_PID")
    for ((i = 0; i < 300; i++)); do
        curl -sf "http://127.0.0.1:$CGB_PORT/" >/dev/null 2>&1 && break
        sleep 0.1
    done
    IR_BARE=$(cg_measure "$CGB_PID" "$CGB_PORT" "$W/cg_bal1.req" "$W/cg_bal1.req" "$CG_N1" \
        "$W/cg_bal2.req" "$W/cg_bal2.req" "$CG_N2" "$W/cg.bare.out" 1) || IR_BARE="ir_per_req=-"
    stop_pid "$CGB_PID"
    log "   bare evhttp: $IR_BARE"
    # gridpointsd under callgrind on its own port, the same database and Redis. The reports of
    # grids 90..99, with a review window of a day so that no sweep pays them meanwhile.
    sql -v name=cg -v grid0=90 -v tasks=10 -v per_task=$(((CG_R0 + CG_R1 + CG_R2) / 10)) -v review_s=86400 \
        -f scripts/bench/reports_setup.sql >/dev/null
    # Warm-ups: CG_R0 reports first (the report path once), then the sessions of each run's workers.
    reqfile "$W/cg_rep_w1.req" "SELECT 'POST', '/api/v1/reports', token, body FROM bench.reports WHERE name = 'cg' AND n <= $CG_R0
                                UNION ALL SELECT 'GET', '/api/v1/workers/me/balance', token, '' FROM bench.reports
                                 WHERE name = 'cg' AND n > $CG_R0 AND n <= $((CG_R0 + CG_R1))"
    reqfile "$W/cg_rep_w2.req" "SELECT 'GET', '/api/v1/workers/me/balance', token FROM bench.reports
                                 WHERE name = 'cg' AND n > $((CG_R0 + CG_R1))"
    reqfile "$W/cg_rep1.req" "SELECT 'POST', '/api/v1/reports', token, body FROM bench.reports WHERE name = 'cg'
                              AND n > $CG_R0 AND n <= $((CG_R0 + CG_R1)) ORDER BY n"
    reqfile "$W/cg_rep2.req" "SELECT 'POST', '/api/v1/reports', token, body FROM bench.reports WHERE name = 'cg'
                              AND n > $((CG_R0 + CG_R1)) ORDER BY n"
    PORT0=$PORT URL0=$URL
    PORT=$(free_port)
    URL=http://127.0.0.1:$PORT
    T0=$SECONDS
    # Without instrumentation until the start-up reconciliation pass (every balance into Redis)
    # is done (valgrind alone is a few times slower, callgrind's instrumentation ~50x), and with
    # timeouts for a process that slow.
    SERVER_WRAP=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$W/cg.gp.out")
    READY_TRIES=1800
    start_server GRIDPOINTS_DATABASE_CONNECT_TIMEOUT=60s GRIDPOINTS_DATABASE_QUEUE_TIMEOUT=60s \
        GRIDPOINTS_DATABASE_STATEMENT_TIMEOUT=60s GRIDPOINTS_REDIS_COMMAND_TIMEOUT=30s \
        GRIDPOINTS_REDIS_CONNECT_TIMEOUT=30s
    SERVER_WRAP=()
    READY_TRIES=200
    CG_OK=1
    for ((;;)); do
        DONE=$(metric gridpoints_reconcile_balances_checked_total || true)
        ((${DONE:-0} >= N_BAL)) && break
        ((SECONDS - T0 < 600)) || {
            log "   gridpointsd under valgrind: the reconciliation did not finish in 600 s; not measured"
            CG_OK=0
            break
        }
        sleep 2
    done
    IR_BAL="ir_per_req=-" IR_REP="ir_per_req=-"
    if ((CG_OK)); then
        log "   gridpointsd under valgrind ready and reconciled in $((SECONDS - T0)) s"
        callgrind_control -i on "$SERVER_PID" >/dev/null 2>&1
        IR_BAL=$(cg_measure "$SERVER_PID" "$PORT" "$W/cg_bal1.req" "$W/cg_bal1.req" "$CG_N1" \
            "$W/cg_bal2.req" "$W/cg_bal2.req" "$CG_N2" "$W/cg.gp.out" 1) || IR_BAL="ir_per_req=-"
        log "   balance read: $IR_BAL"
        IR_REP=$(cg_measure "$SERVER_PID" "$PORT" "$W/cg_rep_w1.req" "$W/cg_rep1.req" "$CG_R1" \
            "$W/cg_rep_w2.req" "$W/cg_rep2.req" "$CG_R2" "$W/cg.gp.out" 3) || IR_REP="ir_per_req=-"
        log "   report submission: $IR_REP"
    fi
    stop_pid "$SERVER_PID"
    PORT=$PORT0 URL=$URL0
    row 1c "instructions per request, balance read (callgrind, the $CG_N1..$CG_N2 difference)" \
        "instructions/request ($(field db_queries_per_req "$IR_BAL") db queries/request)" \
        "$(field ir_per_req "$IR_BAL")" "bare evhttp, same body" "$(field ir_per_req "$IR_BARE")" "-" "-" "-" "0" \
        "<= 2x bare" "$([[ $(field ir_per_req "$IR_BAL") == - || $(field ir_per_req "$IR_BARE") == - ]] && echo "not measured" ||
            verdict "$(field ir_per_req "$IR_BAL") <= 2 * $(field ir_per_req "$IR_BARE")")"
    row 4f "instructions per request, report submission (callgrind, the $CG_R1..$CG_R2 difference)" \
        "instructions/request (before: ~400,000; $(field db_queries_per_req "$IR_REP") db queries/request)" \
        "$(field ir_per_req "$IR_REP")" "-" "-" "-" "-" "-" "0" "-" "-"
fi

# ---------------------------------------------------------------------------------------------
CHECK_AFTER=$(sqlv "SELECT gp_ledger_check()")
log "gp_ledger_check() after the scenarios = $CHECK_AFTER"
[[ $CHECK_AFTER == "[]" ]] || die "the ledger is not sound after the scenarios: $CHECK_AFTER"
grep -E 'AddressSanitizer|runtime error|level=error' "$W/server.log" >&2 && die "errors in $W/server.log"

# =============================================================================================
# The SQL cost per operation (issue 12's table): scripts/bench/shapecost.py runs
# scripts/bench/sqlcost.py on a private PostgreSQL of its own, then counts the shapes there too.
# =============================================================================================
if [[ ${BENCH_SQLCOST:-1} == 1 ]]; then
    log "SQL cost per operation: scripts/bench/shapecost.py, $COST_N calls each (its own PostgreSQL)"
    "$PY" scripts/bench/shapecost.py --bin "$BIN" --n "$COST_N" --dir "$W/sqlcost" --json "$W/costs.json" \
        >"$W/sqlcost.log" 2>&1 || {
        tail -n 20 "$W/sqlcost.log" >&2
        die "shapecost.py failed (log in $W/sqlcost.log)"
    }
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
TOTAL_S=$((SECONDS - T_BEGIN))

# ---------------------------------------------------------------------------------------------
# The machine and the versions, for docs/BENCHMARKS.md.
CMD="make bench"
[[ $QUICK == 1 ]] && CMD="BENCH_QUICK=1 make bench"
# What was measured: the commit, and whether the sources differed from it.
if [[ -n ${BENCH_SOURCE:-} ]]; then
    COMMIT=$BENCH_SOURCE
elif [[ $(git rev-parse --show-toplevel 2>/dev/null) == "$REPO" ]]; then
    COMMIT=$(git rev-parse --short HEAD)
    git diff --quiet HEAD -- server include sql config 2>/dev/null || COMMIT="$COMMIT + uncommitted changes"
else
    COMMIT="unknown (not a git checkout)"
fi
PG_SETTINGS=$(sqlv "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name)
                    FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers',
                                                    'max_connections', 'wal_level')")
# shellcheck disable=SC1091 # /etc/os-release is the system's
cat >"$W/machine.md" <<EOF
Measured $(date -u '+%Y-%m-%d %H:%M UTC') with \`$CMD\` (commit $COMMIT); the run took ${TOTAL_S} s.

| | |
|---|---|
| CPU | $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) vCPUs ($(lscpu | sed -n 's/^Hypervisor vendor: *//p' | sed 's/^$/bare metal/') guest) |
| memory | $(free -h | awk '/^Mem:/ { print $2 }') |
| OS | $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r) |
| PostgreSQL | $("$PGBENCH" --version | awk '{ print $3 }') ($PG_SETTINGS) |
| Redis | $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') (no persistence) |
| libraries | libevent $(pkg-config --modversion libevent), hiredis $(pkg-config --modversion hiredis), libpq $(pkg-config --modversion libpq), OpenSSL $(pkg-config --modversion openssl), jansson $(pkg-config --modversion jansson) |
| compiler | $(gcc --version | head -n 1), gridpointsd built with -O2 -g, no sanitizers |
| load generators | wrk $(dpkg-query -W -f '${Version}' wrk 2>/dev/null), pgbench $("$PGBENCH" --version | awk '{ print $3 }'), scripts/bench/gpload.c (libevent) |
| data set | $N_WORKERS workers with sessions, $N_TXNS ledger transactions ($N_POSTINGS postings), $N_TASKS tasks, $N_ASG assignments, $DB_SIZE; generated in ${LOAD_S} s; \`gp_ledger_check()\` = \`$CHECK_BEFORE\` before and \`$CHECK_AFTER\` after the scenarios |
| run | $([[ $QUICK == 1 ]] && echo "quick: each measurement ${DUR} s, once" || echo "each measurement ${DUR} s; scenarios 1 and 2 are medians of ${REPS} runs interleaved with their baseline") |
| load average | $LOAD_START at the start, $LOAD_END at the end (the two vCPUs are shared by the load generator, gridpointsd, PostgreSQL and Redis) |
EOF

echo
cat "$W/machine.md"
echo
{
    "$PY" scripts/bench/results.py table "$RESULTS"
    if [[ -s $W/costs.json ]]; then
        echo
        echo "SQL cost per operation (\`scripts/bench/shapecost.py\`, on a private PostgreSQL with a small"
        echo "data set; counts are exact, CPU is the backend's; \"CPU × shape\" is the operation's CPU over its"
        echo "minimal shape's; the last column is issue 12's table, measured before the lean write path):"
        echo
        "$PY" scripts/bench/results.py costs "$W/costs.json"
    fi
    echo
    if [[ $HIST_COMPARE == 1 ]]; then
        echo "Cost independent of history (pgbench -c1, $PROBE_N calls each, no server running; a data set with a"
        echo "tenth of the history and this run's, each probed fresh: loaded, VACUUM (ANALYZE), before any"
        echo "scenario; the statement of workers with a full first page in both; buffers = shared buffers"
        echo "touched per call):"
    else
        echo "Cost on this run's history (pgbench -c1, $PROBE_N calls each, no server running, before the"
        echo "scenarios; buffers = shared buffers touched per call; BENCH_HISTORY_COMPARE=1 adds a data set"
        echo "with a tenth of the history):"
    fi
    echo
    "$PY" scripts/bench/results.py history "$HISTORY"
} | tee "$W/results.md"
echo
if [[ $PUBLISH == 1 ]]; then
    "$PY" scripts/bench/results.py publish "$W/results.md" "$W/machine.md" docs/BENCHMARKS.md
    log "results written to docs/BENCHMARKS.md"
else
    log "results in $W/results.md (not published: quick run or BENCH_PUBLISH=0)"
fi
log "done in ${TOTAL_S}s"
