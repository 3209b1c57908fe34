#!/usr/bin/env bash
# scripts/run.sh -- `make run`: private PostgreSQL + Redis under var/, migrations, the demo
# street (once), then gridpointsd in the foreground on 127.0.0.1:8080 until Ctrl-C.  The
# services are stopped when the server exits, however it exits.
#
#   scripts/run.sh         as above (`make run`)
#   scripts/run.sh stop    `make stop`: stops the server of `make run` (SIGTERM: it drains)
#                          and its PostgreSQL and Redis -- from another terminal, or after the
#                          terminal of `make run` went away without its Ctrl-C
#
# GRIDPOINTS_RUN_DIR (default var/) holds the services' data, the secrets made once and the
# server's pid file.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${GRIDPOINTS_BIN:-build/gridpointsd}
CONF=config/gridpoints.conf
LISTEN=${GRIDPOINTS_SERVER_LISTEN:-127.0.0.1:8080}
VAR=${GRIDPOINTS_RUN_DIR:-var}
PIDFILE=$VAR/gridpointsd.pid
RUNPIDFILE=$VAR/run.pid # this script's, whose EXIT trap stops the services

# The pid of the server of `make run` when it still runs (the pid file alone may be stale).
server_pid() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'gridpointsd.* serve' || return 1
    echo "$pid"
}

if [[ ${1:-} == stop ]]; then
    if pid=$(server_pid); then
        echo "run.sh: stopping gridpointsd (pid $pid)"
        kill -TERM "$pid"
        for ((i = 0; i < 300; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && { echo "run.sh: gridpointsd $pid still runs after 30 s" >&2; exit 1; }
    fi
    # Let `make run` finish its own EXIT trap (it stops the services too) before stopping
    # whatever is left, so that two stops do not race.
    runpid=$(cat "$RUNPIDFILE" 2>/dev/null || true)
    if [[ $runpid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$runpid/cmdline" 2>/dev/null | grep -q 'run.sh'; then
        for ((i = 0; i < 300; i++)); do
            kill -0 "$runpid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$PIDFILE" "$RUNPIDFILE"
    scripts/services.sh stop "$VAR"
    echo "run.sh: stopped (data kept in $VAR; 'scripts/services.sh purge $VAR' deletes it)"
    exit 0
fi
[[ -z ${1:-} ]] || { echo "usage: $0 [stop]" >&2; exit 2; }
if pid=$(server_pid); then
    echo "run.sh: gridpointsd already runs (pid $pid): 'make stop' first" >&2
    exit 1
fi

[[ -x $BIN ]] || { echo "run.sh: $BIN not found: run 'make run' (it builds it first)" >&2; exit 1; }
[[ -f $CONF ]] || { echo "run.sh: $CONF not found" >&2; exit 1; }

scripts/services.sh start "$VAR" >/dev/null
echo $$ >"$RUNPIDFILE"
# run.pid goes last: `make stop` waits for this script while it names it.
trap 'rm -f "$PIDFILE"; scripts/services.sh stop "$VAR"; rm -f "$RUNPIDFILE"' EXIT
# shellcheck disable=SC1091 # written by services.sh start
. "$VAR/env"
# The merchant module's two secrets (docs/MERCHANTS.md), made once for this development setup
# and kept with its data: the server refuses to start without them.
if [[ ! -f $VAR/merchant.env ]]; then
    (
        umask 077
        printf 'export GRIDPOINTS_MERCHANT_KEY_ENCRYPTION_KEY=%s\nexport GRIDPOINTS_MERCHANT_PAYCODE_SECRET=%s\n' \
            "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" \
            >"$VAR/merchant.env"
    )
fi
# shellcheck disable=SC1091 # written just above
. "$VAR/merchant.env"

"$BIN" -c "$CONF" migrate
# The checkpoint signing key of this development setup (docs/AUDIT.md), made once, kept with
# its data; `audit-keygen --if-missing` also registers it in a fresh database.
export GRIDPOINTS_AUDIT_KEY_FILE=${GRIDPOINTS_AUDIT_KEY_FILE:-$VAR/audit.key}
"$BIN" -c "$CONF" audit-keygen --if-missing >/dev/null
echo "== demo data (logins are generated once, on the first load)"
"$BIN" -c "$CONF" demo-data

cat <<EOF

== gridpointsd on http://$LISTEN  (PostgreSQL 127.0.0.1:$GP_PG_PORT, Redis 127.0.0.1:$GP_REDIS_PORT)
The worker app: open http://$LISTEN/app/ (a phone-sized window) and log in as one of the
workers above; the demo tasks are in Chengdu, so let the browser use a location near
30.652, 104.084 (Chromium: DevTools > Sensors) or see them listed without distance.

Or log in with one of the logins above and call the API with the token:

  TOKEN=\$(curl -s http://$LISTEN/api/v1/auth/login \\
      -H 'Content-Type: application/json' \\
      -d '{"phone":"PHONE","password":"PASSWORD"}' \\
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  curl -s http://$LISTEN/api/v1/me -H "Authorization: Bearer \$TOKEN"

Care visits (docs/CARE.md): worker 13930000001 has due visits of their care list:
  curl -s http://$LISTEN/api/v1/care/due -H "Authorization: Bearer \$TOKEN"

psql: psql "\$GRIDPOINTS_DATABASE_ADMIN_URL" after '. $VAR/env' (the API functions are in schema
gp: SET search_path = gp, public, or PGOPTIONS='-c search_path=gp,public').  Ctrl-C (or
'make stop' from another terminal) stops the server and the services.

EOF

# In the foreground, not exec: the EXIT trap must still run to stop the services.  Ctrl-C
# reaches the server directly (same process group) and it shuts down gracefully.  The shell
# in between writes its own pid and execs the server, so the pid file names the server for
# `make stop`.
GRIDPOINTS_SERVER_LISTEN=$LISTEN bash -c 'echo $$ >"$1" && shift && exec "$@"' _ "$PIDFILE" \
    "$BIN" -c "$CONF" serve
