#!/usr/bin/env bash
# scripts/run.sh -- `make run`: private PostgreSQL + Redis under var/, migrations, the demo
# street (once), then gridpointsd in the foreground on 127.0.0.1:8080 until Ctrl-C.  The
# services are stopped when the server exits, however it exits.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${GRIDPOINTS_BIN:-build/gridpointsd}
CONF=config/gridpoints.conf
LISTEN=${GRIDPOINTS_SERVER_LISTEN:-127.0.0.1:8080}

[[ -x $BIN ]] || { echo "run.sh: $BIN not found: run 'make run' (it builds it first)" >&2; exit 1; }
[[ -f $CONF ]] || { echo "run.sh: $CONF not found" >&2; exit 1; }

scripts/services.sh start var >/dev/null
trap 'scripts/services.sh stop var' EXIT
# shellcheck disable=SC1091 # written by services.sh start
. var/env
# The merchant module's two secrets (docs/MERCHANTS.md), made once for this development setup
# and kept with its data: the server refuses to start without them.
if [[ ! -f var/merchant.env ]]; then
    (
        umask 077
        printf 'export GRIDPOINTS_MERCHANT_KEY_ENCRYPTION_KEY=%s\nexport GRIDPOINTS_MERCHANT_PAYCODE_SECRET=%s\n' \
            "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" \
            >var/merchant.env
    )
fi
# shellcheck disable=SC1091 # written just above
. var/merchant.env

"$BIN" -c "$CONF" migrate
# The checkpoint signing key of this development setup (docs/AUDIT.md), made once, kept with
# its data; `audit-keygen --if-missing` also registers it in a fresh database.
export GRIDPOINTS_AUDIT_KEY_FILE=${GRIDPOINTS_AUDIT_KEY_FILE:-var/audit.key}
"$BIN" -c "$CONF" audit-keygen --if-missing >/dev/null
echo "== demo data (logins are generated once, on the first load)"
DEMO_LOGINS=var/demo-logins.txt
"$BIN" -c "$CONF" demo-data --credentials "$DEMO_LOGINS"

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

psql: psql "\$GRIDPOINTS_DATABASE_ADMIN_URL" after '. var/env' (the API functions are in schema
gp: SET search_path = gp, public, or PGOPTIONS='-c search_path=gp,public').  Ctrl-C stops the
server and the services.

EOF

# In the foreground, not exec: the EXIT trap must still run to stop the services.  Ctrl-C
# reaches the server directly (same process group) and it shuts down gracefully.
GRIDPOINTS_SERVER_LISTEN=$LISTEN "$BIN" -c "$CONF" serve
