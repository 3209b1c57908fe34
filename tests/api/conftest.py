"""tests/api/conftest.py -- the black-box harness for gridpointsd (STYLE.md item 41).

What it does for a test session:

* starts a throwaway PostgreSQL 15 cluster and Redis on free loopback ports in a temp dir
  (through scripts/services.sh), runs `gridpointsd migrate` once, and tears both down at the
  end, even when tests fail;
* starts `$GRIDPOINTS_BIN -c tests/api/test.conf serve` (default build/gridpointsd; `make
  test` points it at the ASan+UBSan build) on a free port with the env overrides, polls
  GET /readyz instead of sleeping, and when a server stops asserts a clean exit (0) and no
  sanitizer or leak report in its stderr;
* keeps the temp dir when anything failed, and prints the tail of each server's log under the
  failing test's report.

GRIDPOINTS_TEST_URL=http://host:port points the suite at a server that is already running:
nothing is started, and tests that need to stop, restart or start servers are skipped. Export
the GRIDPOINTS_DATABASE_ADMIN_URL / GRIDPOINTS_DATABASE_URL / GRIDPOINTS_REDIS_URL of that
deployment too (`. var/env`) for the fixtures that look into PostgreSQL or Redis, or that run
the CLI (`admin`).

Other knobs (environment): GRIDPOINTS_TEST_KEEP=1 keeps the temp dir even on success;
GRIDPOINTS_TEST_LOG_LEVEL=debug sets log.level of the servers started here.

Fixtures (see each one's docstring):
    services      session  the throwaway PostgreSQL + Redis                       -> Services
                           (.stop_postgres(mode), .stop_redis(), .start() for outage tests)
    migrated      session  `gridpointsd migrate` has run once
    cli           session  cli("migrate"), cli("create-admin", ...)               -> Cli
    server_factory session server_factory.new(name=None, env=None, ...)           -> Server
    make_server   function make_server(**kw): like .new, stopped (asserted) at test end
    server        module   the default, migrated, running server                  -> Server
    api           function client of `server`; api(other_server) for another one  -> Api
    make_admin    function make_admin(server=None, phone=None, ...)               -> dict
    admin         function a fresh street admin, logged in                        -> dict
    sql           function SQL on the test database as the superuser              -> Sql
    redis         function RESP client of the test Redis                          -> RedisClient
Helpers importable by tests (`from conftest import ...`): Server, Api, Sql, RedisClient,
RedisError, free_port, unique_phone, unique_name, error_code, sanitizer_reports.
"""

import atexit
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg2
import psycopg2.extras
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SERVICES_SH = REPO / "scripts" / "services.sh"
TEST_CONF = REPO / "tests" / "api" / "test.conf"
LSAN_SUPPRESSIONS = REPO / "tests" / "api" / "lsan.supp"
GRIDPOINTS_BIN = Path(os.environ.get("GRIDPOINTS_BIN") or REPO / "build" / "gridpointsd")
EXTERNAL_URL = os.environ.get("GRIDPOINTS_TEST_URL", "").rstrip("/") or None
KEEP_ALWAYS = os.environ.get("GRIDPOINTS_TEST_KEEP") == "1"
LOG_LEVEL = os.environ.get("GRIDPOINTS_TEST_LOG_LEVEL")

READY_TIMEOUT = 20.0  # seconds a server may take to answer 200 on /readyz
STOP_TIMEOUT = 20.0  # seconds a server may take to exit after SIGTERM
CLI_TIMEOUT = 120.0
LOG_TAIL_LINES = 60

# Any of these in a server's or the CLI's stderr fails the test (Redis's
# check_sanitizer_errors, nginx-tests' "no sanitizer errors").
SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "LeakSanitizer has encountered a fatal error",
    "runtime error:",
    "SUMMARY: AddressSanitizer",
    "SUMMARY: UndefinedBehaviorSanitizer",
    "WARNING: ThreadSanitizer",
)
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}

# Set when a failure is known before pytest counts it (a server stop failing in the teardown
# of the last test runs before that test's report): the temp dir is then kept.
_failed = False
_kept_dirs = []
_servers = []  # every Server ever created, for log tails and the final cleanup
_test_started_at = 0.0
_session_services = None


# --------------------------------------------------------------------------------------------
# Small helpers


def sanitizer_reports(text):
    """The lines of `text` that belong to a sanitizer or leak report (empty list if none)."""
    return [line for line in text.splitlines() if any(p in line for p in SANITIZER_PATTERNS)]


def assert_no_sanitizer_report(text, what, log_path=None):
    found = sanitizer_reports(text)
    if found:
        where = f" (full log: {log_path})" if log_path else ""
        pytest.fail(
            f"{what}: sanitizer report in stderr{where}:\n" + "\n".join(found[:20])
            + "\n--- tail ---\n" + tail(text),
            pytrace=False,
        )


def tail(text, n=LOG_TAIL_LINES):
    return "\n".join(text.splitlines()[-n:])


_handed_out_ports = set()


def free_port():
    """A loopback TCP port that is free now and not handed out before in this session.

    Chosen below the kernel's ephemeral range, so that an outgoing connection cannot take it
    between a server's stop and its restart on the same port."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except OSError:
        low = 32768
    high = low - 1 if low > 12000 else 65535
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randint(10000, high)
        if port in _handed_out_ports or port in (5432, 6379, 8080):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out_ports.add(port)
        return port
    raise RuntimeError("no free loopback port found")


# Phones: 11 digits, "1" then 3-9 like a mainland mobile number, then a random per-session
# tag and a counter, so that two sessions against one external server rarely collide.
_SESSION_TAG = random.SystemRandom().randrange(1000)
_PHONE_HEAD = f"1{random.SystemRandom().choice('3456789')}{_SESSION_TAG:03d}"
_counter = itertools.count(1)


def unique_phone():
    """An 11-digit phone number starting with 1, unique in this test session."""
    return f"{_PHONE_HEAD}{next(_counter):06d}"


def unique_name(prefix="t"):
    """A short name unique in this test session, e.g. for a street or a person."""
    return f"{prefix}-{_SESSION_TAG:03d}-{next(_counter)}"


def error_code(resp):
    """The machine code of an error reply ({"error":{"code":...}}), or None.

    Tests assert on codes, never on message text (STYLE.md item 41)."""
    try:
        return resp.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def require_binary():
    if not GRIDPOINTS_BIN.is_file() or not os.access(GRIDPOINTS_BIN, os.X_OK):
        pytest.fail(
            f"gridpointsd binary not found at {GRIDPOINTS_BIN}: build it with `make` (or run "
            "`make test`, which builds build/asan/gridpointsd and sets GRIDPOINTS_BIN), or set "
            "GRIDPOINTS_BIN to the binary to test",
            pytrace=False,
        )


def _base_env(services, extra=None):
    """Environment of a gridpointsd process: ours minus every GRIDPOINTS_* variable (so that
    GRIDPOINTS_BIN, GRIDPOINTS_TEST_URL or a developer's sourced var/env cannot leak into the
    config), plus the services' URLs, the sanitizer options and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDPOINTS_")}
    env.update(SANITIZER_ENV)
    if LSAN_SUPPRESSIONS.is_file():
        env["LSAN_OPTIONS"] = f"suppressions={LSAN_SUPPRESSIONS}:print_suppressions=0"
    if services is not None:
        env.update(services.env())
    if LOG_LEVEL:
        env["GRIDPOINTS_LOG_LEVEL"] = LOG_LEVEL
    env.update(extra or {})
    return env


def _http_session():
    s = requests.Session()
    s.trust_env = False  # never send loopback traffic through an http_proxy from the env
    return s


# --------------------------------------------------------------------------------------------
# PostgreSQL + Redis


class Services:
    """The PostgreSQL + Redis that servers of this session use.

    .database_url (gp_app), .admin_url (superuser), .redis_url, .pg_port, .redis_port, .dir
    (None for an external deployment), .env() the GRIDPOINTS_* overrides for them.

    For outage and durability tests: .stop_postgres(mode="fast"|"immediate"),
    .stop_redis(), .start() (brings back whatever is down, on the same ports). Whatever a
    test leaves stopped is started again after it."""

    def __init__(self, database_url, admin_url, redis_url, directory=None):
        self.database_url = database_url
        self.admin_url = admin_url
        self.redis_url = redis_url
        self.dir = directory
        self.pg_port = urlparse(admin_url).port if admin_url else None
        self.redis_port = urlparse(redis_url).port if redis_url else None
        self.running = directory is not None
        self.degraded = False  # a test stopped one of them

    def env(self):
        pairs = {
            "GRIDPOINTS_DATABASE_URL": self.database_url,
            "GRIDPOINTS_DATABASE_ADMIN_URL": self.admin_url,
            "GRIDPOINTS_REDIS_URL": self.redis_url,
        }
        return {k: v for k, v in pairs.items() if v}

    @classmethod
    def from_environment(cls):
        return cls(
            os.environ.get("GRIDPOINTS_DATABASE_URL"),
            os.environ.get("GRIDPOINTS_DATABASE_ADMIN_URL"),
            os.environ.get("GRIDPOINTS_REDIS_URL"),
        )

    @classmethod
    def launch(cls, directory):
        _services_sh("start", directory)
        return cls(*_read_env_file(directory), directory)

    def _own(self):
        if self.dir is None:
            pytest.skip("needs the harness's own PostgreSQL and Redis (GRIDPOINTS_TEST_URL is set)")

    def stop_postgres(self, mode="fast"):
        """Stops PostgreSQL; mode "immediate" is a crash (recovery at the next start)."""
        self._own()
        self.degraded = True
        _services_sh("stop-pg", self.dir, mode)

    def stop_redis(self):
        """Stops Redis (no persistence: it comes back empty)."""
        self._own()
        self.degraded = True
        _services_sh("stop-redis", self.dir)

    def start(self):
        """Starts whatever is down, on the same ports (fails if a port had to change)."""
        self._own()
        _services_sh("start", self.dir)
        self.degraded = False
        urls = _read_env_file(self.dir)
        if urls != (self.database_url, self.admin_url, self.redis_url):
            pytest.fail(f"services came back on other ports: {urls}", pytrace=False)

    def stop(self, purge=False):
        if self.running:
            self.running = False
            _services_sh("purge" if purge else "stop", self.dir)


def _read_env_file(directory):
    values = {}
    for line in (directory / "env").read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            values[key] = value
    keys = ("GRIDPOINTS_DATABASE_URL", "GRIDPOINTS_DATABASE_ADMIN_URL", "GRIDPOINTS_REDIS_URL")
    missing = [k for k in keys if k not in values]
    if missing:
        raise RuntimeError(f"scripts/services.sh wrote no {missing} in {directory}/env")
    return tuple(values[k] for k in keys)


def _services_sh(cmd, directory, *args):
    p = subprocess.run(
        ["bash", str(SERVICES_SH), cmd, str(directory), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )
    if p.returncode != 0:
        raise RuntimeError(
            f"scripts/services.sh {cmd} {directory} failed ({p.returncode}):\n{p.stderr}{p.stdout}"
        )
    return p


class Sql:
    """SQL on the test database as the superuser, autocommit (psql-like).

    sql("select ...", params) / sql.query(...) -> list of tuples (dicts with dicts=True);
    sql.one(...) -> first row or None; sql.scalar(...) -> first column of the first row;
    sql.execute(...) -> rowcount. Parameters use psycopg2's %s placeholders."""

    def __init__(self, url):
        self.conn = psycopg2.connect(url, connect_timeout=10, application_name="gridpoints-tests")
        self.conn.autocommit = True

    def query(self, q, params=None, dicts=False):
        factory = psycopg2.extras.RealDictCursor if dicts else None
        with self.conn.cursor(cursor_factory=factory) as cur:
            cur.execute(q, params)
            return cur.fetchall() if cur.description else []

    __call__ = query

    def one(self, q, params=None, dicts=False):
        rows = self.query(q, params, dicts)
        return rows[0] if rows else None

    def scalar(self, q, params=None):
        row = self.one(q, params)
        return row[0] if row else None

    def execute(self, q, params=None):
        with self.conn.cursor() as cur:
            cur.execute(q, params)
            return cur.rowcount

    def close(self):
        self.conn.close()


class RedisError(Exception):
    """An error reply (-ERR ...) from Redis."""


class RedisClient:
    """A tiny RESP2 client (redis-cli-like): r("SET", "k", "v"), r("GET", "k") -> "v".

    Bulk strings come back as str (bytes if not UTF-8), integers as int, arrays as lists,
    nil as None; an error reply raises RedisError."""

    def __init__(self, url, timeout=5.0):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout)
        self.file = self.sock.makefile("rb")
        db = (u.path or "/0").lstrip("/") or "0"
        if db != "0":
            self.command("SELECT", db)

    def command(self, *args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._read()

    __call__ = command

    def _read(self):
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)[:-2]
            try:
                return data.decode()
            except UnicodeDecodeError:
                return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ConnectionError(f"unexpected RESP reply {line!r}")

    def close(self):
        self.file.close()
        self.sock.close()


# --------------------------------------------------------------------------------------------
# gridpointsd


class Cli:
    """Runs gridpointsd's operator commands against the test services.

    cli("migrate"), cli("create-admin", "--phone", p, ..., env={...}) -> CompletedProcess
    (text stdout/stderr). Fails the test on a non-zero exit (unless check=False), on a
    timeout, and always on a sanitizer report. Output is appended to <tmp>/cli.log."""

    def __init__(self, services, workdir):
        self.services = services
        self.log_path = workdir / "cli.log" if workdir else None

    def __call__(self, *args, env=None, check=True, timeout=CLI_TIMEOUT, conf=TEST_CONF):
        require_binary()
        cmd = [str(GRIDPOINTS_BIN), "-c", str(conf), *map(str, args)]
        try:
            p = subprocess.run(
                cmd, cwd=REPO, env=_base_env(self.services, env), stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
            pytest.fail(f"{' '.join(cmd)} did not finish in {timeout:.0f} s\n{tail(err or '')}",
                        pytrace=False)
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(f"=== {' '.join(cmd[1:])} -> exit {p.returncode}\n{p.stdout}{p.stderr}")
        what = f"gridpointsd {args[0] if args else ''}"
        assert_no_sanitizer_report(p.stderr, what, self.log_path)
        if check and p.returncode != 0:
            pytest.fail(f"{what} exited with {p.returncode}\n--- stdout ---\n{tail(p.stdout)}"
                        f"\n--- stderr ---\n{tail(p.stderr)}", pytrace=False)
        return p


class Server:
    """One gridpointsd process on its own free port.

    .url, .port, .pid, .log_path; .start(wait=True), .wait_ready(), .stop() (SIGTERM, then
    asserts exit 0 within 20 s and no sanitizer report), .kill9(), .restart(kill=False),
    .wait_exit(timeout) -> exit code (for servers expected to exit by themselves), .log_text(),
    .log_tail(n). Extra config goes in `env` as GRIDPOINTS_<SECTION>_<KEY>; restarts keep the
    port. Usable as a context manager (stops on exit)."""

    def __init__(self, name, workdir, services, *, binary=None, conf=TEST_CONF, env=None,
                 port=None, args=("serve",), allow_errors=False):
        self.name = name
        self.allow_errors = allow_errors
        self.services = services
        self.binary = Path(binary) if binary else None
        self.conf = Path(conf)
        self.extra_env = dict(env or {})
        self.args = tuple(args)
        self.port = port or free_port()
        self.log_path = Path(workdir) / f"server-{name}.log"
        self.proc = None
        self.starts = 0
        self.stopped_at = None
        _servers.append(self)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def environ(self):
        env = _base_env(self.services)
        env["GRIDPOINTS_SERVER_LISTEN"] = f"127.0.0.1:{self.port}"
        env.update(self.extra_env)
        return env

    def start(self, wait=True):
        if self.proc is not None and self.proc.poll() is not None:
            self._reaped()  # it died by itself (a crash test); start again
        assert self.proc is None, f"server {self.name} is already running"
        binary = self.binary or GRIDPOINTS_BIN
        if self.binary is None:
            require_binary()
        elif not os.access(binary, os.X_OK):
            pytest.fail(f"server binary not found or not executable: {binary}", pytrace=False)
        self.starts += 1
        cmd = [str(binary), "-c", str(self.conf), *self.args]
        with open(self.log_path, "ab") as log:
            log.write(f"=== start #{self.starts}: {' '.join(cmd)} on port {self.port}\n".encode())
            log.flush()
            # Own session: a Ctrl-C of pytest must not reach the server; the harness stops it.
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=self.environ(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, start_new_session=True,
            )
        self.stopped_at = None
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Polls GET /readyz until 200; fails at once if the process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        with _http_session() as http:
            while True:
                rc = self.proc.poll()
                if rc is not None:
                    self._reaped()
                    pytest.fail(f"server {self.name} exited with {rc} before it was ready"
                                f"\n--- {self.log_path} ---\n{self.log_tail()}", pytrace=False)
                try:
                    r = http.get(self.url + "/readyz", timeout=1)
                    if r.status_code == 200:
                        return self
                    last = f"{r.status_code} {r.text[:200]}"
                except requests.RequestException as e:
                    last = type(e).__name__
                if time.monotonic() > deadline:
                    self.kill9(check=False)
                    pytest.fail(f"server {self.name} not ready within {timeout:.0f} s (last "
                                f"/readyz: {last})\n--- {self.log_path} ---\n{self.log_tail()}",
                                pytrace=False)
                time.sleep(0.05)

    def stop(self, timeout=STOP_TIMEOUT, check=True):
        """SIGTERM, wait, then assert a graceful exit 0 and a clean stderr. Returns the code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._reaped()
            if check:
                pytest.fail(f"server {self.name} did not exit within {timeout:.0f} s of SIGTERM"
                            f"\n--- {self.log_path} ---\n{self.log_tail()}", pytrace=False)
            return None
        self._reaped()
        if check:
            self.check_log()
            if rc != 0:
                how = f"killed by signal {-rc}" if rc < 0 else f"exited with {rc}"
                pytest.fail(f"server {self.name} {how} after SIGTERM, expected 0"
                            f"\n--- {self.log_path} ---\n{self.log_tail()}", pytrace=False)
        return rc

    def kill9(self, check=True):
        """SIGKILL (a crash, for durability tests). Still fails on a sanitizer report that was
        printed before the kill."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reaped()
        if check:
            self.check_log()

    def restart(self, kill=False):
        """Stop (asserted) or kill -9, then start again on the same port and wait for ready."""
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start()

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """For a server expected to exit by itself: its exit code (fails after `timeout`)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9(check=False)
            pytest.fail(f"server {self.name} still running after {timeout:.0f} s", pytrace=False)
        self._reaped()
        return rc

    def check_log(self):
        text = self.log_text()
        assert_no_sanitizer_report(text, f"server {self.name}", self.log_path)
        # level=error means a bug or a broken deployment (transient outages log at warn); a
        # test that provokes one on purpose passes allow_errors=True to its server.
        if not self.allow_errors:
            errors = [ln for ln in text.splitlines() if " level=error " in ln]
            if errors:
                pytest.fail(f"server {self.name} logged errors ({self.log_path}):\n"
                            + "\n".join(errors[:20]), pytrace=False)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=LOG_TAIL_LINES):
        return tail(self.log_text(), n)

    def _reaped(self):
        self.proc = None
        self.stopped_at = time.time()

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop(check=exc[0] is None)

    def __repr__(self):
        return f"<Server {self.name} {self.url} pid={self.pid}>"


class ExternalServer:
    """The server named by GRIDPOINTS_TEST_URL: it can be talked to, not controlled."""

    name = "external"
    log_path = None
    running = True
    pid = None
    stopped_at = None

    def __init__(self, url):
        self.url = url
        self.port = urlparse(url).port

    def _skip(self, *a, **kw):
        pytest.skip("needs a server started by the harness (GRIDPOINTS_TEST_URL is set)")

    start = stop = kill9 = restart = wait_exit = wait_ready = _skip

    def check_log(self):
        pass

    def log_tail(self, n=LOG_TAIL_LINES):
        return ""

    def __repr__(self):
        return f"<ExternalServer {self.url}>"


class ServerFactory:
    """server_factory.new(name=None, *, env=None, port=None, start=True, binary=None,
    conf=TEST_CONF, args=("serve",)) -> Server. Several may run at once (multi-instance
    tests); they share the session's PostgreSQL and Redis."""

    def __init__(self, services, workdir):
        self.services = services
        self.workdir = workdir
        self._names = itertools.count(1)

    def new(self, name=None, *, start=True, **kw):
        if EXTERNAL_URL:
            pytest.skip("needs a server started by the harness (GRIDPOINTS_TEST_URL is set)")
        srv = Server(name or f"s{next(self._names)}", self.workdir, self.services, **kw)
        if start:
            srv.start()
        return srv


_UNSET = object()


class Api:
    """A small client of one server over requests.

    api.get(path, params=None, token=...), api.post(path, json_body, token=...,
    idempotency_key=..., body=raw_bytes_or_str, headers={...}), same for put/patch/delete.
    Returns the requests.Response (never raises on 4xx/5xx). token=None sends no
    Authorization; the default is the client's own token (api.with_token(t) binds one).
    api(other_server_or_url) -> a client of another server (same token)."""

    def __init__(self, target, token=None, timeout=10.0):
        self.base_url = (target if isinstance(target, str) else target.url).rstrip("/")
        self.token = token
        self.timeout = timeout
        self.http = _http_session()

    def __call__(self, target=None, token=_UNSET):
        return Api(target or self.base_url, self.token if token is _UNSET else token,
                   self.timeout)

    def with_token(self, token):
        return Api(self.base_url, token, self.timeout)

    def request(self, method, path, json_body=_UNSET, *, token=_UNSET, idempotency_key=None,
                body=None, headers=None, params=None, timeout=None):
        h = {"Accept": "application/json"}
        token = self.token if token is _UNSET else token
        if token:
            h["Authorization"] = f"Bearer {token}"
        if idempotency_key is not None:
            h["Idempotency-Key"] = str(idempotency_key)
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else body
            h["Content-Type"] = "application/json"
        elif json_body is not _UNSET:
            data = json.dumps(json_body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        return self.http.request(method, self.base_url + path, data=data, headers=h,
                                 params=params, timeout=timeout or self.timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json_body=_UNSET, **kw):
        return self.request("POST", path, json_body, **kw)

    def put(self, path, json_body=_UNSET, **kw):
        return self.request("PUT", path, json_body, **kw)

    def patch(self, path, json_body=_UNSET, **kw):
        return self.request("PATCH", path, json_body, **kw)

    def delete(self, path, json_body=_UNSET, **kw):
        return self.request("DELETE", path, json_body, **kw)

    def close(self):
        self.http.close()


# --------------------------------------------------------------------------------------------
# Fixtures


def _mark_failed():
    global _failed
    _failed = True


def _cleanup_servers():
    # Last resort (a test that forgot one, an interrupted session): our own processes only.
    for srv in _servers:
        if isinstance(srv, Server) and srv.proc is not None:
            srv.kill9(check=False)


@pytest.fixture(scope="session")
def gp_tmp(request):
    """The session's temp dir (services, server logs, cli.log). Kept when anything failed."""
    d = Path(tempfile.mkdtemp(prefix="gridpoints-test-"))
    # mkdtemp makes it 0700; the PostgreSQL owner (a system user when we run as root) must
    # be able to traverse it.
    d.chmod(0o755)
    yield d
    if KEEP_ALWAYS or _failed or request.session.testsfailed:
        _kept_dirs.append(d)
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def services(request, gp_tmp):
    """The throwaway PostgreSQL + Redis of the session (from the env with GRIDPOINTS_TEST_URL)."""
    if EXTERNAL_URL:
        yield Services.from_environment()
        return
    global _session_services
    svc = _session_services = Services.launch(gp_tmp / "services")
    atexit.register(svc.stop)  # in case the session dies without running finalizers
    try:
        yield svc
    finally:
        _cleanup_servers()
        keep = KEEP_ALWAYS or _failed or request.session.testsfailed
        svc.stop(purge=not keep)


@pytest.fixture(autouse=True)
def _restore_services():
    """Starts again whatever PostgreSQL or Redis a test left stopped, so the next test finds
    them up (on the same ports)."""
    yield
    if _session_services is not None and _session_services.degraded:
        _session_services.start()


@pytest.fixture(scope="session")
def cli(services, gp_tmp):
    """Runs `gridpointsd -c tests/api/test.conf ARGS...` against the test services -> Cli."""
    return Cli(services, gp_tmp)


@pytest.fixture(scope="session")
def migrated(services, cli):
    """`gridpointsd migrate` has been run once on the session's database."""
    if EXTERNAL_URL:
        return None
    return cli("migrate")


@pytest.fixture(scope="session")
def server_factory(services, gp_tmp):
    """Makes Server objects (see ServerFactory.new); the session kills leftovers at its end."""
    return ServerFactory(services, gp_tmp)


@pytest.fixture
def make_server(server_factory, migrated):
    """make_server(name=None, env=None, port=None, start=True, ...) -> a started Server; each
    is stopped at the end of the test with the exit-code and sanitizer assertions."""
    made = []

    def make(*args, **kw):
        srv = server_factory.new(*args, **kw)
        made.append(srv)
        return srv

    yield make
    errors = []
    for srv in made:
        try:
            srv.stop()
        except BaseException as e:  # pytest.fail raises an Exception subclass of BaseException
            errors.append(e)
    if errors:
        _mark_failed()
        raise errors[0]


@pytest.fixture(scope="module")
def server(request, server_factory, migrated):
    """The default server of a test module (the external one with GRIDPOINTS_TEST_URL)."""
    if EXTERNAL_URL:
        yield ExternalServer(EXTERNAL_URL)
        return
    srv = server_factory.new("main-" + request.module.__name__.rpartition(".")[2])
    yield srv
    try:
        srv.stop()
    except BaseException:
        _mark_failed()
        raise


@pytest.fixture
def api(server):
    """Api client of `server`; api(other_server) is a client of another one."""
    client = Api(server)
    yield client
    client.close()


@pytest.fixture
def make_admin(server, cli, services):
    """make_admin(server=None, *, phone=None, name=None, street=None, password=None,
    login=True) -> {"token", "person_id", "unit_id", "phone", "password", "name", "street"}.

    Runs `gridpointsd create-admin` (a new street unit and its admin), then logs in through
    POST /api/v1/auth/login on `server` (default: the module's server)."""
    if EXTERNAL_URL and not services.admin_url:
        pytest.skip("create-admin needs GRIDPOINTS_DATABASE_ADMIN_URL with GRIDPOINTS_TEST_URL")

    def make(target=None, *, phone=None, name=None, street=None, password=None, login=True):
        phone = phone or unique_phone()
        name = name or unique_name("admin")
        street = street or unique_name("street")
        password = password or "Pw-" + secrets.token_urlsafe(12)
        p = cli("create-admin", "--phone", phone, "--name", name, "--street", street,
                env={"GRIDPOINTS_ADMIN_PASSWORD": password})
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        assert lines, f"create-admin printed no JSON line:\n{p.stdout}{p.stderr}"
        ids = json.loads(lines[-1])
        out = {"person_id": ids["person_id"], "unit_id": ids["unit_id"], "phone": phone,
               "password": password, "name": name, "street": street, "token": None}
        if login:
            client = Api(target or server)
            r = client.post("/api/v1/auth/login", {"phone": phone, "password": password})
            client.close()
            assert r.status_code == 200, f"login of new admin: {r.status_code} {r.text}"
            out["token"] = r.json()["token"]
        return out

    return make


@pytest.fixture
def admin(make_admin):
    """A fresh street admin of a fresh street, logged in on `server`:
    {"token", "person_id", "unit_id", "phone", "password", ...}."""
    return make_admin()


@pytest.fixture
def sql(services):
    """Sql on the test database as the superuser (database.admin_url)."""
    if not services.admin_url:
        pytest.skip("no database admin URL (set GRIDPOINTS_DATABASE_ADMIN_URL)")
    db = Sql(services.admin_url)
    yield db
    db.close()


@pytest.fixture
def redis(services):
    """RedisClient of the test Redis (redis.url)."""
    if not services.redis_url:
        pytest.skip("no Redis URL (set GRIDPOINTS_REDIS_URL)")
    client = RedisClient(services.redis_url)
    yield client
    client.close()


# --------------------------------------------------------------------------------------------
# Hooks


def pytest_report_header(config):
    if EXTERNAL_URL:
        return f"gridpoints: external server {EXTERNAL_URL}"
    return f"gridpoints: binary {GRIDPOINTS_BIN}, config {TEST_CONF}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    global _test_started_at
    _test_started_at = time.time()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    _mark_failed()
    # The logs of the servers that ran during this test, under its report.
    for srv in _servers:
        if srv.log_path is None:
            continue
        if srv.proc is not None or (srv.stopped_at or 0) >= _test_started_at:
            rep.sections.append((f"gridpointsd {srv.name} log, last {LOG_TAIL_LINES} lines "
                                 f"({srv.log_path})", srv.log_tail()))


def pytest_terminal_summary(terminalreporter):
    for d in _kept_dirs:
        terminalreporter.write_line(f"gridpoints: kept the test dir {d} (services stopped; "
                                    f"scripts/services.sh start {d}/services restarts them)")
