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
# With GRIDPOINTS_RUN_CITY=1 (`make run CITY=1`) a second deployment, the demo "city", runs
# beside it for the points exchange (docs/EXCHANGE.md): its own PostgreSQL + Redis under
# var/city, HTTP on 127.0.0.1:8090, HTTPS on 8453 (the street's HTTPS on 8443), a test
# certificate for 127.0.0.1 in var/exchange-tls, and the two registered as partners of each
# other at 10 street points : 1 city point (scripts/exchange-demo.py).
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
DEMO_LOGINS=$VAR/demo-logins.txt
"$BIN" -c "$CONF" demo-data --credentials "$DEMO_LOGINS"

if [[ ${GRIDPOINTS_RUN_CITY:-} == 1 ]]; then
    CITY_LISTEN=${GRIDPOINTS_CITY_LISTEN:-127.0.0.1:8090}
    STREET_TLS=${GRIDPOINTS_STREET_TLS_PORT:-8443} CITY_TLS=${GRIDPOINTS_CITY_TLS_PORT:-8453}
    mkdir -p $VAR/exchange-tls
    if [[ ! -f $VAR/exchange-tls/cert.pem ]]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout $VAR/exchange-tls/key.pem -out $VAR/exchange-tls/cert.pem -days 365 \
            -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null
    fi
    export GRIDPOINTS_EXCHANGE_ALLOW_PRIVATE=true GRIDPOINTS_EXCHANGE_CA_FILE=$VAR/exchange-tls/cert.pem
    export GRIDPOINTS_SERVER_TLS_CERT=$VAR/exchange-tls/cert.pem GRIDPOINTS_SERVER_TLS_KEY=$VAR/exchange-tls/key.pem
    scripts/services.sh start $VAR/city >/dev/null
    trap 'kill "${CITY_PID:-0}" 2>/dev/null || true; scripts/services.sh stop "$VAR/city"
          rm -f "$PIDFILE"; scripts/services.sh stop "$VAR"; rm -f "$RUNPIDFILE"' EXIT
    city() { (
        # shellcheck disable=SC1091 # written by services.sh start
        . $VAR/city/env
        GRIDPOINTS_AUDIT_KEY_FILE=$VAR/city/audit.key "$BIN" -c "$CONF" "$@"
    ); }
    city migrate
    city audit-keygen --if-missing >/dev/null
    if [[ ! -f $VAR/city/admin.txt ]]; then
        CITY_PW=city-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
        GRIDPOINTS_ADMIN_PASSWORD=$CITY_PW city create-admin --phone 13800000001 \
            --name "city admin" --street "蓉e报 city" >/dev/null
        (umask 077 && echo "13800000001 $CITY_PW" >$VAR/city/admin.txt)
    fi
    GRIDPOINTS_SERVER_LISTEN=$CITY_LISTEN GRIDPOINTS_SERVER_TLS_LISTEN=127.0.0.1:$CITY_TLS \
        city serve >$VAR/city/server.log 2>&1 &
    CITY_PID=$!
    export GRIDPOINTS_SERVER_TLS_LISTEN=127.0.0.1:$STREET_TLS
    # the pid file names the street's server for `make stop`, as below
    GRIDPOINTS_SERVER_LISTEN=$LISTEN bash -c 'echo $$ >"$1" && shift && exec "$@"' _ "$PIDFILE" \
        "$BIN" -c "$CONF" serve &
    STREET_PID=$!
    for _ in $(seq 150); do
        curl -sf "http://$LISTEN/readyz" >/dev/null && curl -sf "http://$CITY_LISTEN/readyz" >/dev/null && break
        sleep 0.2
    done
    read -r CITY_PHONE CITY_PASS <$VAR/city/admin.txt
    ADMIN_PASS=$(sed -n 's|^  street admin + auditor *13900000001 / ||p' $VAR/demo-logins.txt 2>/dev/null || true)
    if [[ -n $ADMIN_PASS ]]; then
        python3 scripts/exchange-demo.py --street "http://$LISTEN" 13900000001 "$ADMIN_PASS" \
            --city "http://$CITY_LISTEN" "$CITY_PHONE" "$CITY_PASS" \
            --street-tls "$STREET_TLS" --city-tls "$CITY_TLS" || true
    else
        echo "run.sh: $VAR/demo-logins.txt is missing (the demo was loaded before it was kept):" \
            "register the partners by hand (docs/EXCHANGE.md)" >&2
    fi
    cat <<EOF

== the demo city on http://$CITY_LISTEN (HTTPS $CITY_TLS; log $VAR/city/server.log); its street
admin: $CITY_PHONE / $CITY_PASS. Workers link accounts with a code from
POST /api/v1/exchange/link-codes on one side given to POST /api/v1/exchange/links on the other,
then move points with POST /api/v1/exchange/transfers (docs/EXCHANGE.md).
EOF
    wait "$STREET_PID"
    exit $?
fi

cat <<EOF

== gridpointsd on http://$LISTEN  (PostgreSQL 127.0.0.1:$GP_PG_PORT, Redis 127.0.0.1:$GP_REDIS_PORT)
The demo logins are kept in $DEMO_LOGINS (mode 0600): \`cat $DEMO_LOGINS\` if this terminal
is lost. (A demo street loaded before that file existed has none: stop, 'rm -rf var' -- it
deletes the development database -- and 'make run' loads it again with new logins.)
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
