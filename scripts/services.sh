#!/usr/bin/env bash
# scripts/services.sh -- a private PostgreSQL 15 cluster and a private Redis for development
# (`make run`, DIR = var/) and for the black-box tests (tests/api/conftest.py, DIR = a temp
# dir).  Both listen on free loopback ports, never on the system's 5432/6379, and never touch
# the system's own instances.
#
#   scripts/services.sh start      [DIR]         start both, or whichever is down (idempotent);
#                                                prints the env lines
#   scripts/services.sh stop       [DIR [MODE]]  stop both; MODE is pg_ctl's: fast (default) or
#                                                immediate (a crash: PostgreSQL recovers at start)
#   scripts/services.sh stop-pg    [DIR [MODE]]  stop PostgreSQL only (outage/restart tests)
#   scripts/services.sh stop-redis [DIR]         stop Redis only (its data is gone: no persistence)
#   scripts/services.sh status     [DIR]         exit 0 when both run, 3 otherwise
#   scripts/services.sh env        [DIR]         print the env lines (eval-able)
#   scripts/services.sh purge      [DIR]         stop, then delete all data (PG's may be outside DIR)
#
# DIR defaults to var/ in the repo.  What DIR holds:
#   env       export lines for the server, the CLI and the tests (see write_env)
#   ports     the ports chosen on first start, reused on later starts
#   pgroot    where the PostgreSQL files live: DIR/pg, or /tmp/gridpoints-<hash of DIR>
#             when DIR is not reachable by the postgres user or its path is too long
#   redis/    redis.pid, redis.log
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=${GP_PGBIN:-/usr/lib/postgresql/15/bin}
PG_OS_USER=gridpoints # PostgreSQL refuses to run as root: as root we run it as this user
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

die() {
    echo "services.sh: $*" >&2
    exit 1
}
say() { echo "services.sh: $*" >&2; }

usage() {
    echo "usage: $0 start|stop|stop-pg|stop-redis|status|env|purge [DIR]" \
        "(stop and stop-pg take a MODE after DIR: fast or immediate)" >&2
    exit 2
}

CMD=${1:-}
[[ $CMD =~ ^(start|stop|stop-pg|stop-redis|status|env|purge)$ ]] || usage
if [[ $CMD != start && ! -d ${2:-$REPO/var} ]]; then
    # Nothing was ever started there: do not create the dir just to say so.
    case $CMD in
    status) echo "postgresql: stopped" && echo "redis: stopped" && exit 3 ;;
    env) die "no ${2:-$REPO/var}/env: run '$0 start ${2:-$REPO/var}' first" ;;
    *) exit 0 ;;
    esac
fi
mkdir -p "${2:-$REPO/var}"
DIR=$(cd "${2:-$REPO/var}" && pwd)
REDIS_DIR=$DIR/redis
STOP_MODE=${3:-fast}
[[ $STOP_MODE =~ ^(fast|immediate|smart)$ ]] || usage

[[ -x $PGBIN/pg_ctl ]] || die "PostgreSQL 15 not found in $PGBIN (run scripts/deps.sh)"
command -v redis-server >/dev/null || die "redis-server not found (run scripts/deps.sh)"

is_root() { ((EUID == 0)); }

# Runs a PostgreSQL server-side program (initdb, pg_ctl) as the cluster's owner.  From / so
# that an unreadable cwd (e.g. /root/...) does not make it fail "could not identify current
# directory".  Fd 9 (our lock) is closed so that the postmaster does not inherit it and hold
# the lock forever.
as_pg() {
    if is_root; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@") 9>&-
    else
        (cd / && "$@") 9>&-
    fi
}

ensure_pg_user() {
    is_root || return 0
    id -u "$PG_OS_USER" >/dev/null 2>&1 && return 0
    say "creating system user $PG_OS_USER to own the PostgreSQL cluster"
    # A concurrent run may have created it between the check and here.
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER" ||
        id -u "$PG_OS_USER" >/dev/null 2>&1 || die "could not create user $PG_OS_USER"
}

# Prints a free loopback TCP port, outside the kernel's ephemeral range (so an outgoing
# connection cannot take it before the next restart) and never 5432/6379/8080, nor $1.
pick_port() {
    "$PY" - "${1:-0}" <<'EOF'
import random, socket, sys
avoid = {5432, 6379, 8080, int(sys.argv[1])}
try:
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    lo = 32768
hi = lo - 1 if lo > 12000 else 65535
for _ in range(500):
    p = random.randint(10000, hi)
    if p in avoid:
        continue
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    sys.exit(0)
sys.exit("no free port found")
EOF
}

# True when $1 can be bound on loopback.  SO_REUSEADDR like PostgreSQL and Redis, so the
# TIME_WAIT leftovers of our own last run do not count as "taken".
port_free() {
    "$PY" - "$1" 2>/dev/null <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
EOF
}

load_ports() {
    PGPORT='' REDISPORT=''
    if [[ -f $DIR/ports ]]; then
        # shellcheck disable=SC1091 # written by save_ports below
        . "$DIR/ports"
    fi
}

save_ports() {
    printf 'PGPORT=%s\nREDISPORT=%s\n' "$PGPORT" "$REDISPORT" >"$DIR/ports.tmp"
    mv "$DIR/ports.tmp" "$DIR/ports"
}

# Chooses (once) where the PostgreSQL files live.  DIR/pg is the natural place, but as root
# the cluster runs as $PG_OS_USER, who must be able to traverse every parent of DIR: not the
# case for a repo under /root (mode 700) or a mkdtemp() dir.  A unix socket path is also
# limited to 107 bytes.  In both cases we use a private dir under /tmp named after DIR.
choose_pgroot() {
    if [[ -f $DIR/pgroot ]]; then
        PGROOT=$(<"$DIR/pgroot")
    else
        PGROOT=$DIR/pg
        if ((${#PGROOT} > 80)) || { is_root && ! as_pg test -x "$DIR"; }; then
            PGROOT=/tmp/gridpoints-$(printf '%s' "$DIR" | sha256sum | cut -c1-16)
            say "PostgreSQL files go to $PGROOT ($DIR/pg is too long a path or not reachable by $PG_OS_USER)"
            # $DIR has no pgroot file, so it is new: files there belong to an earlier $DIR at
            # the same path that was deleted (rm -rf var). Starting on them would bring back
            # its database (and refuse this one's new audit key): move them aside.
            if [[ -e $PGROOT ]]; then
                [[ -f $PGROOT/data/postmaster.pid ]] && alive "$(head -n 1 "$PGROOT/data/postmaster.pid")" postgres &&
                    die "$PGROOT holds a running PostgreSQL of an earlier $DIR: stop it first (scripts/services.sh stop needs its pgroot file; or kill $(head -n 1 "$PGROOT/data/postmaster.pid"))"
                local aside
                aside=$PGROOT.stale-$(date +%Y%m%d%H%M%S)
                mv "$PGROOT" "$aside"
                say "moved the PostgreSQL files of an earlier, deleted $DIR aside to $aside (remove it when you do not need it)"
            fi
        fi
        echo "$PGROOT" >"$DIR/pgroot"
    fi
    PGDATA=$PGROOT/data
    PGSOCK=$PGROOT/run
    PGLOG=$PGROOT/postgresql.log
}

# The pgroot file may be missing before the first start; stop/status/purge must not create it.
read_pgroot() {
    if [[ -f $DIR/pgroot ]]; then
        choose_pgroot
    else
        PGROOT='' PGDATA='' PGSOCK='' PGLOG=''
    fi
}

# True when process $1 exists, is not a zombie, and its command line contains $2.  Our
# daemons are reparented to PID 1, which may reap a killed one late (kill -0 succeeds on a
# zombie); and a pid file left by a crash may name a pid since reused by something else,
# which we must never signal.
alive() {
    local state
    [[ $1 =~ ^[0-9]+$ && -r /proc/$1/stat ]] || return 1
    state=$(sed -E 's/^.*\) //; s/ .*//' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]] || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# Waits (up to 10 s) while $1 is a zombie: a postmaster killed with -9 that PID 1 has not
# reaped yet still "exists" for the new postmaster's stale-lock check, which then refuses to
# start.
wait_reaped() {
    local i
    for ((i = 0; i < 100; i++)); do
        [[ $1 =~ ^[0-9]+$ && $(sed -E 's/^.*\) //; s/ .*//' "/proc/$1/stat" 2>/dev/null) == Z ]] ||
            return 0
        sleep 0.1
    done
}

# The port of the running postmaster (line 4 of postmaster.pid).
pg_running_port() {
    sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null
}

# True when the postmaster of PGDATA is alive (it may still be starting up).
pg_alive() {
    [[ -n $PGDATA && -f $PGDATA/postmaster.pid ]] || return 1
    alive "$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null)" "-D $PGDATA"
}

# True when it is alive and answers on its port (exit 1 of pg_isready = answering but not yet
# accepting, e.g. during crash recovery: pg_ctl -w waits for that).
pg_running() {
    pg_alive || return 1
    local rc=0
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$(pg_running_port)" -U postgres -d postgres -t 2 ||
        rc=$?
    ((rc == 0 || rc == 1))
}

psql_admin() {
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres "$@"
}

pg_init() {
    local owner
    if [[ ! -d $PGROOT ]]; then
        mkdir -p "$PGROOT"
        chmod 700 "$PGROOT"
    fi
    # Refuse a pre-existing /tmp dir that someone else planted.
    owner=$(stat -c %U "$PGROOT")
    if is_root; then
        case $owner in
        "$PG_OS_USER") ;;
        root) chown -R "$PG_OS_USER:" "$PGROOT" ;; # just created by us
        *) die "$PGROOT is owned by $owner, not $PG_OS_USER" ;;
        esac
    else
        [[ $owner == "$(id -un)" ]] || die "$PGROOT is owned by $owner"
    fi
    if [[ ! -d $PGSOCK ]]; then
        as_pg mkdir -p "$PGSOCK"
    fi
    if [[ -f $PGDATA/PG_VERSION ]]; then
        return 0
    fi
    say "initdb $PGDATA"
    # trust auth: loopback only, private cluster.  Checksums on so that corruption in
    # crash tests is detected, not silently read.
    as_pg "$PGBIN/initdb" -D "$PGDATA" --auth=trust -U postgres --data-checksums \
        --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 ||
        { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<EOF

# --- added by scripts/services.sh (the port is given by pg_ctl -o -p) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PGSOCK'
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = -1
EOF
}

pg_start() {
    ensure_pg_user
    choose_pgroot
    pg_init
    if pg_running; then
        PGPORT=$(pg_running_port)
        return 0
    fi
    if pg_alive; then
        say "PostgreSQL (pid $(head -n 1 "$PGDATA/postmaster.pid")) does not answer; stopping it"
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
        pg_alive && die "PostgreSQL of $PGDATA is alive but does not answer: stop it by hand"
    fi
    if [[ -z $PGPORT ]] || ! port_free "$PGPORT"; then
        [[ -n $PGPORT ]] && say "PostgreSQL port $PGPORT is taken, choosing another"
        PGPORT=$(pick_port "$REDISPORT")
    fi
    wait_reaped "$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null)"
    say "starting PostgreSQL on 127.0.0.1:$PGPORT"
    # After a kill -9 of the postmaster its children may take a moment to notice and release
    # the shared memory; the new postmaster refuses to start until they have.
    local try
    for try in 1 2 3; do
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 -o "-p $PGPORT" start \
            >/dev/null && return 0
        sleep "$try"
    done
    tail -n 30 "$PGLOG" >&2 || true
    die "PostgreSQL did not start (log: $PGLOG)"
}

pg_create_db() {
    local have
    have=$(psql_admin -d postgres -tAc "select 1 from pg_database where datname = 'gridpoints'")
    [[ $have == 1 ]] || psql_admin -d postgres -c 'create database gridpoints'
}

pg_stop() {
    pg_alive || return 0
    say "stopping PostgreSQL (${STOP_MODE})"
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m "$STOP_MODE" -w -t 60 stop >/dev/null
}

redis_pid() {
    local pid
    [[ -f $REDIS_DIR/redis.pid ]] || return 1
    pid=$(<"$REDIS_DIR/redis.pid")
    # Redis sets its process title to "redis-server 127.0.0.1:PORT".
    alive "$pid" "redis-server 127.0.0.1:$REDISPORT" || return 1
    echo "$pid"
}

redis_ping() {
    [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]
}

redis_running() {
    redis_pid >/dev/null && [[ -n $REDISPORT ]] && redis_ping "$REDISPORT"
}

redis_start() {
    local i
    mkdir -p "$REDIS_DIR"
    redis_running && return 0
    # A leftover daemon of ours that no longer answers on its port: stop it first.
    redis_stop
    if [[ -z $REDISPORT ]] || ! port_free "$REDISPORT"; then
        [[ -n $REDISPORT ]] && say "Redis port $REDISPORT is taken, choosing another"
        REDISPORT=$(pick_port "$PGPORT")
    fi
    say "starting Redis on 127.0.0.1:$REDISPORT"
    rm -f "$REDIS_DIR/redis.pid"
    # No persistence: the ledger in PostgreSQL is the truth and Redis is rebuilt from it.
    redis-server --port "$REDISPORT" --bind 127.0.0.1 --protected-mode yes \
        --save '' --appendonly no --dir "$REDIS_DIR" \
        --daemonize yes --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" 9>&-
    for ((i = 0; i < 100; i++)); do
        redis_ping "$REDISPORT" && return 0
        sleep 0.1
    done
    tail -n 30 "$REDIS_DIR/redis.log" >&2 || true
    die "Redis did not answer PING on port $REDISPORT (log: $REDIS_DIR/redis.log)"
}

redis_stop() {
    local pid i
    pid=$(redis_pid) || return 0
    say "stopping Redis"
    if [[ -n $REDISPORT ]]; then
        redis-cli -h 127.0.0.1 -p "$REDISPORT" shutdown nosave >/dev/null 2>&1 || true
    fi
    for ((i = 0; i < 100; i++)); do
        alive "$pid" "redis-server" || return 0
        sleep 0.1
    done
    # Not answering on its port: stop our own daemon by the pid it wrote.
    kill "$pid" 2>/dev/null || true
}

write_env() {
    cat >"$DIR/env.tmp" <<EOF
# written by scripts/services.sh start $DIR -- source it: . $DIR/env
export GRIDPOINTS_DATABASE_URL=postgresql://gp_app@127.0.0.1:$PGPORT/gridpoints
export GRIDPOINTS_DATABASE_ADMIN_URL=postgresql://postgres@127.0.0.1:$PGPORT/gridpoints
export GRIDPOINTS_REDIS_URL=redis://127.0.0.1:$REDISPORT/0
export GP_PG_PORT=$PGPORT
export GP_REDIS_PORT=$REDISPORT
export GP_PG_DATA=$PGDATA
export GP_PG_SOCKET_DIR=$PGSOCK
export GP_PG_LOG=$PGLOG
export GP_REDIS_LOG=$REDIS_DIR/redis.log
export GP_SERVICES_DIR=$DIR
EOF
    mv "$DIR/env.tmp" "$DIR/env"
}

# One services.sh at a time per DIR (e.g. two terminals running `make run`).
exec 9>"$DIR/.lock"
flock -w 180 9 || die "timed out waiting for the lock on $DIR"

load_ports
case $CMD in
start)
    pg_start
    redis_start
    save_ports
    pg_create_db
    write_env
    cat "$DIR/env"
    ;;
stop)
    read_pgroot
    redis_stop
    pg_stop
    ;;
stop-pg)
    read_pgroot
    pg_stop
    ;;
stop-redis)
    redis_stop
    ;;
status)
    read_pgroot
    rc=0
    if pg_running; then
        echo "postgresql: running on 127.0.0.1:$(pg_running_port) (data $PGDATA)"
    else
        echo "postgresql: stopped"
        rc=3
    fi
    if redis_running; then
        echo "redis: running on 127.0.0.1:$REDISPORT (pid $(redis_pid))"
    else
        echo "redis: stopped"
        rc=3
    fi
    exit "$rc"
    ;;
env)
    [[ -f $DIR/env ]] || die "no $DIR/env: run '$0 start $DIR' first"
    cat "$DIR/env"
    ;;
purge)
    read_pgroot
    redis_stop
    pg_stop
    # Only ever delete what start created: DIR/pg or our own /tmp/gridpoints-* dir.
    if [[ -n $PGROOT && ($PGROOT == "$DIR/pg" || $PGROOT == /tmp/gridpoints-*) ]]; then
        rm -rf "$PGROOT"
    fi
    rm -rf "$REDIS_DIR" "$DIR/env" "$DIR/ports" "$DIR/pgroot" "$DIR/initdb.log"
    say "purged $DIR"
    ;;
esac
