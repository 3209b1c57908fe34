"""tests/api/conftest.py -- the fixtures and hooks of the black-box harness for gridpointsd
(STYLE.md item 41). Everything else (processes, clients, helpers) is the gp package beside
this file; test modules import helpers from it: `from gp import Api, error_code, ...`.

What the harness does for a test session:

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
    redis         function redis-py client of the test Redis (replies as str)  -> redis.Redis
"""

import atexit
import json
import secrets
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import pytest

import gp
from gp import kv
from gp.api import Api
from gp.server import SERVERS, Cli, ExternalServer, ServerFactory, kill_leftovers
from gp.services import Services
from gp.settings import EXTERNAL_URL, GRIDPOINTS_BIN, KEEP_ALWAYS, LOG_TAIL_LINES, TEST_CONF
from gp.sql import Sql
from gp.util import unique_name, unique_phone

# Set when a failure is known before pytest counts it (a server stop failing in the teardown
# of the last test runs before that test's report): the temp dir is then kept.
_failed = False
_kept_dirs = []
_test_started_at = 0.0
_session_services = None


def __getattr__(name):
    # The helpers lived in this file before the gp package: a test module still doing
    # `from conftest import error_code` (one written in parallel with the move) keeps working,
    # with a warning that names the new home.
    if name.startswith("__") or not hasattr(gp, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"import {name} from gp, not from conftest", DeprecationWarning, stacklevel=2)
    return getattr(gp, name)


# --------------------------------------------------------------------------------------------
# Fixtures


def _mark_failed():
    global _failed
    _failed = True


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
        kill_leftovers()
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
    """redis-py client (gp.kv.connect) of the test Redis (redis.url): redis.get(k),
    redis.hset(k, f, v), redis.flushall(), ...; replies are str."""
    if not services.redis_url:
        pytest.skip("no Redis URL (set GRIDPOINTS_REDIS_URL)")
    client = kv.connect(services.redis_url)
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
    for srv in SERVERS:
        if srv.log_path is None:
            continue
        if srv.proc is not None or (srv.stopped_at or 0) >= _test_started_at:
            rep.sections.append((f"gridpointsd {srv.name} log, last {LOG_TAIL_LINES} lines "
                                 f"({srv.log_path})", srv.log_tail()))


def pytest_terminal_summary(terminalreporter):
    for d in _kept_dirs:
        terminalreporter.write_line(f"gridpoints: kept the test dir {d} (services stopped; "
                                    f"scripts/services.sh start {d}/services restarts them)")
