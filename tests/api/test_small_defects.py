"""tests/api/test_small_defects.py -- issue 10 item 7: Redis AUTH, access to /metrics, strict
numbers in the configuration, strict migration file names.

Real processes throughout: a second redis-server started here with --requirepass and an ACL
user, gridpointsd servers on their own ports, the CLI against the session's PostgreSQL."""

import shutil
import socket
import subprocess
import time
import urllib.parse

import pytest
import requests

from gp import REPO, Api, error_code, free_port, kv

PASSWORD = "Auth-Pw 1@/:%"  # characters that must be %-encoded in a URL
ACL_USER, ACL_PASSWORD = "gp_app", "Acl-Pw-2"
WRONG_PASSWORD = "Wrong-Pw-3"
TOKEN = "metrics-token-0123456789abcdef"


# --------------------------------------------------------------------------------------------
# A Redis that wants a password


class AuthRedis:
    def __init__(self, directory):
        self.port = free_port()
        self.dir = directory
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory), "--requirepass", PASSWORD,
             "--user", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all"],
            stdin=subprocess.DEVNULL, stdout=open(directory / "redis.log", "wb"),
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server with requirepass did not start: "
                                       f"{(directory / 'redis.log').read_text()}")
                time.sleep(0.05)

    def url(self, userinfo="", db=0):
        return f"redis://{userinfo}127.0.0.1:{self.port}/{db}"

    def client(self):
        return kv.connect(self.url(), password=PASSWORD)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory):
    r = AuthRedis(tmp_path_factory.mktemp("auth-redis"))
    yield r
    r.stop()


def quoted(s):
    return urllib.parse.quote(s, safe="")


def ready(srv):
    """/readyz once the start-up checks have passed (before, it answers "starting")."""
    deadline = time.monotonic() + 15
    while True:
        r = requests.get(srv.url + "/readyz", timeout=5)
        if r.json() != {"status": "starting"} or time.monotonic() > deadline:
            return r.status_code, r.json()
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# Redis AUTH


def test_redis_auth_password_in_url(make_server, auth_redis):
    # Without AUTH this Redis refuses every command: a 200 from /readyz proves AUTH went first.
    srv = make_server(env={"GRIDPOINTS_REDIS_URL": auth_redis.url(f":{quoted(PASSWORD)}@", 2)})
    code, body = ready(srv)
    assert code == 200 and body["checks"]["redis"] == "ok"
    # ... and SELECT 2 after it: the server's connection sits in db 2 as the default user.
    with auth_redis.client() as c:
        me = str(c.client_id())
        clients = [cl for cl in c.client_list() if cl["id"] != me]
    assert any(cl["db"] == "2" and cl["user"] == "default" for cl in clients), clients
    srv.stop()
    assert PASSWORD not in srv.log_text()
    assert quoted(PASSWORD) not in srv.log_text()


def test_redis_auth_password_from_environment(make_server, auth_redis):
    srv = make_server(env={"GRIDPOINTS_REDIS_URL": auth_redis.url(),
                           "GRIDPOINTS_REDIS_PASSWORD": PASSWORD})
    code, body = ready(srv)
    assert code == 200 and body["checks"]["redis"] == "ok"
    srv.stop()
    assert PASSWORD not in srv.log_text()


def test_redis_auth_acl_user(make_server, auth_redis):
    srv = make_server(env={"GRIDPOINTS_REDIS_URL":
                           auth_redis.url(f"{ACL_USER}:{ACL_PASSWORD}@")})
    assert ready(srv)[0] == 200
    with auth_redis.client() as c:
        users = [cl["user"] for cl in c.client_list()]
    assert ACL_USER in users, users  # logged in as the ACL user, not as default
    srv.stop()


def test_redis_auth_wrong_password_is_down_and_logged(make_server, auth_redis):
    srv = make_server(start=False, env={"GRIDPOINTS_REDIS_URL": auth_redis.url(),
                                        "GRIDPOINTS_REDIS_PASSWORD": WRONG_PASSWORD})
    srv.start(wait=False)
    deadline = time.monotonic() + 15
    while "AUTH refused" not in srv.log_text():
        assert srv.running, srv.log_tail()
        assert time.monotonic() < deadline, srv.log_tail()
        time.sleep(0.1)
    code, body = ready(srv)
    assert code == 503
    assert body["checks"] == {"postgres": "ok", "redis": "down"}
    line = next(ln for ln in srv.log_text().splitlines() if "AUTH refused" in ln)
    assert " level=warn " in line and "GRIDPOINTS_REDIS_PASSWORD" in line
    srv.stop()  # also asserts: exit 0, no level=error line
    assert WRONG_PASSWORD not in srv.log_text()


def test_redis_auth_missing_password_is_down(make_server, auth_redis):
    srv = make_server(start=False, env={"GRIDPOINTS_REDIS_URL": auth_redis.url()})
    srv.start(wait=False)
    deadline = time.monotonic() + 15
    while True:
        try:
            code, body = ready(srv)
            if code == 503 and body["checks"]["postgres"] == "ok":
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, srv.log_tail()
        time.sleep(0.1)
    assert body["checks"]["redis"] == "down"
    assert "NOAUTH" in srv.log_text() or "handshake refused" in srv.log_text()
    srv.stop()


def test_cli_rebuild_cache_uses_the_password(cli, migrated, auth_redis):
    p = cli("rebuild-cache", env={"GRIDPOINTS_REDIS_URL": auth_redis.url(),
                                  "GRIDPOINTS_REDIS_PASSWORD": PASSWORD})
    assert "rebuild-cache: done" in p.stdout
    p = cli("rebuild-cache", "--dry-run",
            env={"GRIDPOINTS_REDIS_URL": auth_redis.url(f"{ACL_USER}:{ACL_PASSWORD}@")})
    assert "rebuild-cache: dry run" in p.stdout
    p = cli("rebuild-cache", env={"GRIDPOINTS_REDIS_URL": auth_redis.url(),
                                  "GRIDPOINTS_REDIS_PASSWORD": WRONG_PASSWORD}, check=False)
    assert p.returncode == 1
    assert "AUTH refused" in p.stdout + p.stderr
    assert WRONG_PASSWORD not in p.stdout + p.stderr


def test_print_config_masks_the_redis_password(cli, auth_redis):
    p = cli("print-config", env={"GRIDPOINTS_REDIS_URL": auth_redis.url(f":{quoted(PASSWORD)}@"),
                                 "GRIDPOINTS_REDIS_PASSWORD": PASSWORD,
                                 "GRIDPOINTS_SERVER_METRICS_TOKEN": TOKEN})
    assert PASSWORD not in p.stdout and quoted(PASSWORD) not in p.stdout
    assert TOKEN not in p.stdout
    assert "password = (set)" in p.stdout and "metrics_token = (set)" in p.stdout


# --------------------------------------------------------------------------------------------
# /metrics


def test_metrics_open_on_loopback_by_default(api):
    r = api.get("/metrics")
    assert r.status_code == 200 and "gridpoints_http_requests_total" in r.text


def test_metrics_token(make_server):
    srv = make_server(env={"GRIDPOINTS_SERVER_METRICS_TOKEN": TOKEN})
    api = Api(srv)
    r = api.get("/metrics")
    assert r.status_code == 401 and error_code(r) == "missing_token"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.headers["Content-Type"].startswith("application/json")
    for wrong in (TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "", "x" * 5000):
        r = api.get("/metrics", token=wrong or None,
                    headers={"Authorization": f"Bearer {wrong}"})
        assert r.status_code == 401 and error_code(r) in ("invalid_token", "missing_token"), wrong
    r = api.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
    assert r.status_code == 401 and error_code(r) == "missing_token"
    r = api.get("/metrics", token=TOKEN)
    assert r.status_code == 200 and "gridpoints_http_requests_total" in r.text
    # the token guards /metrics only
    assert api.get("/healthz", token=None).status_code == 200


def test_metrics_listen(make_server):
    mport = free_port()
    srv = make_server(env={"GRIDPOINTS_SERVER_METRICS_LISTEN": f"127.0.0.1:{mport}"})
    api = Api(srv)
    r = api.get("/metrics")
    assert r.status_code == 404 and error_code(r) == "route_not_found"
    assert api.get("/healthz").status_code == 200
    m = Api(f"http://127.0.0.1:{mport}")
    r = m.get("/metrics")
    assert r.status_code == 200 and "gridpoints_http_requests_total" in r.text
    for path in ("/healthz", "/readyz", "/api/v1/me", "/metrics/", "/"):
        r = m.get(path)
        assert r.status_code == 404 and error_code(r) == "route_not_found", path
    r = m.post("/api/v1/auth/login", {"phone": "13900000001", "password": "x"})
    assert r.status_code == 404


def test_metrics_listen_with_token(make_server):
    mport = free_port()
    srv = make_server(env={"GRIDPOINTS_SERVER_METRICS_LISTEN": f"127.0.0.1:{mport}",
                           "GRIDPOINTS_SERVER_METRICS_TOKEN": TOKEN})
    m = Api(f"http://127.0.0.1:{mport}")
    assert m.get("/metrics").status_code == 401
    assert m.get("/metrics", token=TOKEN).status_code == 200
    assert Api(srv).get("/metrics", token=TOKEN).status_code == 404


def test_metrics_closed_on_a_non_loopback_listener(make_server):
    port = free_port()
    srv = make_server(port=port, env={"GRIDPOINTS_SERVER_LISTEN": f"0.0.0.0:{port}"})
    api = Api(srv)
    r = api.get("/metrics")
    assert r.status_code == 403 and error_code(r) == "metrics_forbidden"
    assert api.get("/healthz").status_code == 200
    srv.stop()
    # with a token it is served there
    port2 = free_port()
    srv2 = make_server(port=port2, env={"GRIDPOINTS_SERVER_LISTEN": f"0.0.0.0:{port2}",
                                        "GRIDPOINTS_SERVER_METRICS_TOKEN": TOKEN})
    assert Api(srv2).get("/metrics", token=TOKEN).status_code == 200
    assert Api(srv2).get("/metrics").status_code == 401


def test_metrics_closed_behind_a_proxy(make_server):
    srv = make_server(env={"GRIDPOINTS_SERVER_TRUST_PROXY": "true"})
    r = Api(srv).get("/metrics")
    assert r.status_code == 403 and error_code(r) == "metrics_forbidden"


# --------------------------------------------------------------------------------------------
# Strict numbers in the configuration


@pytest.mark.parametrize("key,value,says", [
    ("GRIDPOINTS_REDIS_URL", "redis://127.0.0.1:6379abc/0", "port"),
    ("GRIDPOINTS_REDIS_URL", "redis://127.0.0.1:6379/0abc", "database"),
    ("GRIDPOINTS_REDIS_URL", "rediss://127.0.0.1:6379/0", "TLS"),
    ("GRIDPOINTS_SERVER_LISTEN", "127.0.0.1:8080abc", "server.listen"),
    ("GRIDPOINTS_SERVER_METRICS_LISTEN", "127.0.0.1:+9100", "server.metrics_listen"),
    ("GRIDPOINTS_SERVER_METRICS_TOKEN", "short", "metrics_token"),
    ("GRIDPOINTS_DATABASE_POOL_SIZE", "6abc", "database.pool_size"),
    ("GRIDPOINTS_DATABASE_POOL_SIZE", "+6", "database.pool_size"),
    ("GRIDPOINTS_SERVER_READ_TIMEOUT", "15s5", "server.read_timeout"),
    ("GRIDPOINTS_SERVER_MAX_BODY_SIZE", "64kb", "server.max_body_size"),
    ("GRIDPOINTS_AUTH_SESSION_TTL", "3600500ms", "whole seconds"),
])
def test_server_refuses_junk_numbers(cli, key, value, says):
    for cmd in ("serve", "print-config", "migrate"):
        p = cli(cmd, env={key: value}, check=False, timeout=30)
        assert p.returncode == 2, (cmd, p.stdout, p.stderr)
        assert says in p.stderr, p.stderr


def test_bad_redis_url_error_does_not_show_the_password(cli):
    p = cli("serve", env={"GRIDPOINTS_REDIS_URL": f"redis://:{quoted(PASSWORD)}@127.0.0.1:1x/0"},
            check=False, timeout=30)
    assert p.returncode == 2 and "port" in p.stderr
    assert quoted(PASSWORD) not in p.stderr and PASSWORD not in p.stderr


# --------------------------------------------------------------------------------------------
# Migration file names


def sql_dir_with(tmp_path, extra):
    """A copy of sql/ with extra files in migrations/."""
    d = tmp_path / "sql"
    shutil.copytree(REPO / "sql", d)
    for name, text in extra.items():
        (d / "migrations" / name).write_text(text)
    return d


@pytest.mark.parametrize("name", ["+001_x.sql", " 001_x.sql", "0001_Upper.sql", "001_x.sql",
                                  "0000_zero.sql", "00012_x.sql", "0012-x.sql"])
def test_migrate_refuses_a_badly_named_file(cli, migrated, sql, tmp_path, name):
    before = sql.scalar("SELECT count(*) FROM schema_migrations")
    d = sql_dir_with(tmp_path, {name: "CREATE TABLE must_not_exist (x int);\n"})
    p = cli("migrate", env={"GRIDPOINTS_DATABASE_SQL_DIR": str(d)}, check=False)
    assert p.returncode == 1
    assert name in p.stderr and "NNNN_name.sql" in p.stderr
    assert sql.scalar("SELECT count(*) FROM schema_migrations") == before
    assert sql.scalar("SELECT to_regclass('must_not_exist')") is None


def test_migrate_refuses_a_duplicate_number(cli, migrated, sql, tmp_path):
    d = sql_dir_with(tmp_path, {"0003_again.sql": "CREATE TABLE must_not_exist (x int);\n"})
    p = cli("migrate", env={"GRIDPOINTS_DATABASE_SQL_DIR": str(d)}, check=False)
    assert p.returncode == 1 and "0003" in p.stderr and "0003_again.sql" in p.stderr
    assert sql.scalar("SELECT to_regclass('must_not_exist')") is None


def test_migrate_ignores_files_that_are_not_sql(cli, migrated, tmp_path):
    d = sql_dir_with(tmp_path, {"README.md": "notes\n", "0001_x.sql.orig": "junk\n"})
    p = cli("migrate", env={"GRIDPOINTS_DATABASE_SQL_DIR": str(d)})
    assert p.returncode == 0


def test_server_never_reads_the_sql_dir(make_server, tmp_path):
    """The server carries the migration version and function hash it needs (issue 11): what
    database.sql_dir holds, even a badly named migration or nothing at all, does not matter
    to it (only `migrate` reads sql/)."""
    d = sql_dir_with(tmp_path, {"+001_x.sql": "SELECT 1;\n"})
    for where in (d, tmp_path / "missing"):
        srv = make_server(env={"GRIDPOINTS_DATABASE_SQL_DIR": str(where)})
        assert requests.get(srv.url + "/readyz", timeout=5).status_code == 200
        srv.stop()
