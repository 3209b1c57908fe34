"""tests/api/test_harness.py -- tests of the black-box harness itself (conftest.py, gp/).

They need the throwaway PostgreSQL and Redis but not gridpointsd: the server lifecycle is
exercised with a stand-in written in Python, so that a broken harness (a readiness poll that
never gives up, a stop that misses a sanitizer report or a bad exit code) is caught even
before the real server exists.
"""

import configparser
import json
import socket
import textwrap
import threading
import time
from urllib.parse import urlparse

import pytest
import requests
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gp import (
    EXTERNAL_URL,
    SANITIZER_ENV,
    TEST_CONF,
    Api,
    Server,
    Sql,
    error_code,
    free_port,
    kv,
    sanitizer_reports,
    unique_name,
    unique_phone,
)

needs_own_services = pytest.mark.skipif(
    EXTERNAL_URL is not None, reason="checks the harness's own PostgreSQL and Redis"
)


# --- PostgreSQL and Redis --------------------------------------------------------------------


def test_postgres_reachable_as_superuser_through_admin_url(sql):
    user, db, superuser = sql.one(
        "select current_user, current_database(), rolsuper from pg_roles "
        "where rolname = current_user"
    )
    assert (user, db, superuser) == ("postgres", "gridpoints", True)
    assert int(sql.scalar("show server_version_num")) >= 150000


@needs_own_services
def test_postgres_is_private_durable_and_checksummed(sql, services):
    assert services.pg_port not in (None, 5432)
    assert int(sql.scalar("show port")) == services.pg_port
    assert sql.scalar("show listen_addresses") == "127.0.0.1"
    assert sql.scalar("show fsync") == "on"
    assert sql.scalar("show data_checksums") == "on"
    assert sql.scalar("show server_encoding") == "UTF8"


def test_app_url_names_gp_app_on_the_same_database(services):
    app, adm = urlparse(services.database_url), urlparse(services.admin_url)
    assert app.username == "gp_app"
    assert (app.hostname, app.port, app.path) == (adm.hostname, adm.port, "/gridpoints")


def test_sql_helper_round_trip(sql):
    sql.execute("create temporary table harness_t (k int primary key, v text)")
    assert sql.execute("insert into harness_t values (%s, %s), (%s, %s)", (1, "a", 2, "b")) == 2
    assert sql("select k, v from harness_t order by k") == [(1, "a"), (2, "b")]
    assert sql.query("select v from harness_t where k = %s", (2,), dicts=True) == [{"v": "b"}]
    assert sql.one("select v from harness_t where k = 3") is None


def test_redis_answers_ping_and_round_trips(redis):
    assert redis.ping() is True
    me = redis.client_id()
    key = unique_name("harness")
    assert redis.set(key, "点数 1") is True
    assert redis.get(key) == "点数 1"  # replies come back as str
    assert redis.incrby(key + ":n", 5) == 5
    assert redis.mget(key, key + ":missing") == ["点数 1", None]
    assert redis.delete(key, key + ":n") == 2
    with pytest.raises(ResponseError):
        redis.execute_command("NO-SUCH-COMMAND")
    # the connection survives an error reply: still the same one
    assert redis.ping() is True and redis.client_id() == me


def test_redis_client_is_one_connection_that_close_ends(redis, services):
    c = kv.connect(services.redis_url)
    cid = str(c.client_id())
    assert c.client_id() == int(cid)  # every command on the one connection
    assert cid in {cl["id"] for cl in redis.client_list()}
    c.close()
    deadline = time.monotonic() + 5
    while cid in {cl["id"] for cl in redis.client_list()}:
        assert time.monotonic() < deadline, "kv client's socket still open after close()"
        time.sleep(0.02)


@needs_own_services
def test_redis_is_private_and_not_persistent(redis, services):
    assert services.redis_port not in (None, 6379)
    assert redis.config_get("save") == {"save": ""}
    assert redis.config_get("appendonly") == {"appendonly": "no"}
    assert redis.config_get("port") == {"port": str(services.redis_port)}


@needs_own_services
def test_services_survive_a_postgres_crash_and_a_redis_restart(services, sql, redis):
    sql.execute("create table if not exists harness_durable (k text primary key)")
    key = unique_name("durable")
    sql.execute("insert into harness_durable values (%s)", (key,))
    redis.set(key, "1")
    sql.close()
    redis.close()

    services.stop_postgres("immediate")  # a crash: no shutdown checkpoint
    services.stop_redis()
    with pytest.raises(Exception):
        Sql(services.admin_url)
    with pytest.raises(RedisConnectionError):
        kv.connect(services.redis_url)

    services.start()  # same ports, so running servers' URLs stay valid
    db, r = Sql(services.admin_url), kv.connect(services.redis_url)
    try:
        assert db.scalar("select count(*) from harness_durable where k = %s", (key,)) == 1
        assert r.get(key) is None  # Redis keeps nothing across a restart
    finally:
        db.execute("drop table harness_durable")
        db.close()
        r.close()


# --- helpers ---------------------------------------------------------------------------------


def test_unique_phones_are_11_digits_from_1_and_unique():
    phones = [unique_phone() for _ in range(2000)]
    assert len(set(phones)) == len(phones)
    for p in phones:
        assert len(p) == 11 and p.isdigit() and p[0] == "1" and p[1] in "3456789", p


def test_free_ports_are_bindable_and_distinct():
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    for p in ports:
        assert p not in (5432, 6379, 8080)
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


@pytest.mark.parametrize("line", [
    "==12==ERROR: AddressSanitizer: heap-use-after-free on address 0x6020",
    "==12==ERROR: LeakSanitizer: detected memory leaks",
    "server/ledger.c:42:7: runtime error: signed integer overflow",
    "SUMMARY: AddressSanitizer: 10 byte(s) leaked in 1 allocation(s).",
    "SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior server/x.c:1:1",
])
def test_sanitizer_scan_finds_reports(line):
    assert sanitizer_reports(f"level=info msg=started\n{line}\nlevel=info msg=bye\n") == [line]


def test_sanitizer_scan_passes_a_clean_log():
    assert sanitizer_reports("level=info msg=\"listening on 127.0.0.1:1\"\nlevel=info msg=bye\n") == []


def test_error_code_reads_the_error_envelope():
    class R:
        def __init__(self, body):
            self.body = body

        def json(self):
            return json.loads(self.body)

    assert error_code(R('{"error":{"code":"not_found","message":"no such task"}}')) == "not_found"
    assert error_code(R('{"ok":true}')) is None
    assert error_code(R("not json")) is None


def test_helpers_come_from_gp_and_old_conftest_imports_still_resolve():
    import conftest
    import gp

    with pytest.warns(DeprecationWarning, match="from gp"):
        from conftest import error_code as old
    assert old is gp.error_code is error_code
    # pytest asks conftest for optional names; those must stay missing, not come from gp
    assert not hasattr(conftest, "pytest_plugins") and not hasattr(conftest, "no_such_helper")


def test_test_conf_has_the_keys_and_points_nowhere():
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(TEST_CONF)
    assert cp["server"]["listen"].startswith("127.0.0.1:")
    for section, key in (("database", "url"), ("database", "admin_url"), ("redis", "url")):
        port = urlparse(cp[section][key]).port
        assert port not in (5432, 6379), f"{section}.{key} must not point at a system service"
    assert cp["log"]["level"] == "info"


# --- server lifecycle, with a stand-in for gridpointsd ---------------------------------------

FAKE_SERVER = textwrap.dedent('''\
    #!/usr/bin/python3
    # Stand-in for gridpointsd: `-c CONF serve`, /readyz, graceful exit on SIGTERM.
    import os, signal, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    assert sys.argv[1] == "-c" and sys.argv[3] == "serve", sys.argv
    if os.environ.get("FAKE_DIE_AT_START"):
        print("level=error msg=\\"cannot start\\"", file=sys.stderr)
        sys.exit(1)
    born = time.monotonic()
    delay = float(os.environ.get("FAKE_READY_DELAY", "0"))

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/healthz" or (self.path == "/readyz" and time.monotonic() - born >= delay)
            body = b'{"status":"ok"}' if ok else b'{"error":{"code":"unavailable"}}'
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if self.path == "/healthz":
                print("env " + " ".join(sorted(k for k in os.environ if k.startswith(("GRIDPOINTS_", "ASAN", "UBSAN")))), file=sys.stderr, flush=True)

        def log_message(self, fmt, *args):
            pass

    host, port = os.environ["GRIDPOINTS_SERVER_LISTEN"].rsplit(":", 1)
    srv = ThreadingHTTPServer((host, int(port)), H)
    if os.environ.get("FAKE_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=srv.shutdown).start())
    print("level=info msg=\\"listening\\"", file=sys.stderr, flush=True)
    srv.serve_forever()
    if os.environ.get("FAKE_SANITIZER"):
        print("==7==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010", file=sys.stderr)
    sys.exit(int(os.environ.get("FAKE_EXIT_CODE", "0")))
''')


@pytest.fixture
def fake_server(tmp_path, services):
    """fake_server(**env) -> an unstarted Server running the stand-in binary."""
    binary = tmp_path / "fake-gridpointsd"
    binary.write_text(FAKE_SERVER)
    binary.chmod(0o755)
    made = []

    def make(**env):
        srv = Server(f"fake{len(made)}", tmp_path, services, binary=binary, env=env)
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.kill9(check=False)


def test_server_start_polls_readyz_until_ready(fake_server):
    srv = fake_server(FAKE_READY_DELAY="1.0")
    t0 = time.monotonic()
    srv.start()
    assert time.monotonic() - t0 >= 1.0  # it waited for 200, not just for the port
    assert requests.get(srv.url + "/readyz", timeout=2).status_code == 200
    assert srv.stop() == 0


def test_server_lifecycle_restart_and_kill9(fake_server):
    srv = fake_server().start()
    api = Api(srv)
    assert api.get("/healthz").json() == {"status": "ok"}
    pid, port = srv.pid, srv.port
    srv.restart()
    assert srv.pid != pid and srv.port == port
    assert api.get("/healthz").status_code == 200
    srv.kill9()
    assert not srv.running
    with pytest.raises(requests.ConnectionError):
        requests.get(srv.url + "/healthz", timeout=2)
    srv.restart(kill=True)
    assert api.get("/readyz").status_code == 200
    srv.stop()
    assert srv.log_text().count("=== start #") == 3


def test_several_servers_at_once(fake_server):
    a, b = fake_server().start(), fake_server().start()
    assert a.port != b.port
    assert Api(a).get("/readyz").status_code == 200
    assert Api(b).get("/readyz").status_code == 200
    a.stop()
    b.stop()


def test_server_env_has_overrides_sanitizer_options_and_no_foreign_vars(fake_server, services,
                                                                       monkeypatch):
    monkeypatch.setenv("GRIDPOINTS_BIN", "/nonexistent")
    monkeypatch.setenv("GRIDPOINTS_SOMETHING_ELSE", "1")
    srv = fake_server(GRIDPOINTS_AUTH_SESSION_TTL="1h")
    env = srv.environ()
    assert env["GRIDPOINTS_SERVER_LISTEN"] == f"127.0.0.1:{srv.port}"
    assert env["GRIDPOINTS_AUTH_SESSION_TTL"] == "1h"
    for k, v in services.env().items():
        assert env[k] == v
    for k, v in SANITIZER_ENV.items():
        assert env[k] == v
    assert "GRIDPOINTS_BIN" not in env and "GRIDPOINTS_SOMETHING_ELSE" not in env
    srv.start()
    Api(srv).get("/healthz")
    srv.stop()
    seen = [ln for ln in srv.log_text().splitlines() if ln.startswith("env ")][-1].split()
    assert "GRIDPOINTS_SERVER_LISTEN" in seen and "ASAN_OPTIONS" in seen
    assert "GRIDPOINTS_BIN" not in seen


def test_stop_fails_on_a_sanitizer_report(fake_server):
    srv = fake_server(FAKE_SANITIZER="1").start()
    with pytest.raises(pytest.fail.Exception, match="AddressSanitizer"):
        srv.stop()
    assert not srv.running


def test_stop_fails_on_a_nonzero_exit(fake_server):
    srv = fake_server(FAKE_EXIT_CODE="3").start()
    with pytest.raises(pytest.fail.Exception, match="exited with 3"):
        srv.stop()


def test_stop_gives_up_on_a_server_that_ignores_sigterm(fake_server):
    srv = fake_server(FAKE_IGNORE_TERM="1").start()
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="did not exit"):
        srv.stop(timeout=1)
    assert time.monotonic() - t0 < 10 and not srv.running


def test_start_fails_fast_when_the_server_dies(fake_server):
    srv = fake_server(FAKE_DIE_AT_START="1")
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="exited with 1 before it was ready"):
        srv.start()
    assert time.monotonic() - t0 < 5


def test_start_fails_clearly_without_a_binary(tmp_path, services):
    srv = Server("missing", tmp_path, services, binary=tmp_path / "no-such-gridpointsd")
    with pytest.raises(pytest.fail.Exception, match="not found"):
        srv.start()


def test_api_client_sends_token_idempotency_key_and_raw_body():
    # What matters is what the client puts on the wire, which a raw socket shows.
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        port = ls.getsockname()[1]
        api = Api(f"http://127.0.0.1:{port}", token="tok-1")
        got = {}

        def serve():
            conn, _ = ls.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data or not data.endswith(b"{raw"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                got["req"] = data.decode()
                conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n"
                             b"Connection: close\r\n\r\n{}")

        t = threading.Thread(target=serve)
        t.start()
        r = api.post("/api/v1/x", idempotency_key="k-9", body="{raw")
        t.join(5)
    assert r.status_code == 201
    req = got["req"]
    assert req.startswith("POST /api/v1/x HTTP/1.1\r\n")
    assert "Authorization: Bearer tok-1\r\n" in req
    assert "Idempotency-Key: k-9\r\n" in req
    assert "Content-Type: application/json\r\n" in req
    assert req.endswith("\r\n\r\n{raw")
