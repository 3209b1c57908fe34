"""Hostile input: random JSON bodies and raw bytes against the write routes never produce a
5xx or a non-JSON error, and never change anything; oversized header blocks are refused."""

import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gp import error_code

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
    | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30)

ROUTES = ["/api/v1/units", "/api/v1/people", "/api/v1/tasks", "/api/v1/reports",
          "/api/v1/budgets/grants", "/api/v1/adjustments", "/api/v1/auth/login"]


@pytest.fixture(scope="module")
def hostile_admin(server, make_admin_module):
    return make_admin_module()


@pytest.fixture(scope="module")
def make_admin_module(server, cli):
    import secrets
    from gp import Api, unique_name, unique_phone

    def make():
        phone, pw = unique_phone(), "Pw-" + secrets.token_urlsafe(12)
        p = cli("create-admin", "--phone", phone, "--name", unique_name("a"), "--street",
                unique_name("s"), env={"GRIDPOINTS_ADMIN_PASSWORD": pw})
        ids = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])
        r = Api(server).post("/api/v1/auth/login", {"phone": phone, "password": pw})
        return dict(ids, token=r.json()["token"])
    return make


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(ROUTES), body=json_values)
def test_random_json_bodies(api, hostile_admin, route, body):
    r = api.post(route, body, token=hostile_admin["token"])
    assert r.status_code < 500, (route, body, r.text)
    if r.status_code >= 400:
        assert error_code(r), r.text


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(ROUTES), raw=st.binary(max_size=300))
def test_random_bytes(api, hostile_admin, route, raw):
    r = api.post(route, body=raw, token=hostile_admin["token"])
    assert r.status_code < 500, (route, raw, r.text)


def test_nothing_changed_by_garbage(api, hostile_admin, sql):
    # after all of the above, the fuzzing admin's street holds only itself
    n = sql.scalar("SELECT count(*) FROM org_units WHERE path <@ (SELECT path FROM org_units "
                   "WHERE id = %s)", (hostile_admin["unit_id"],))
    assert n == 1


def test_oversized_headers_refused(server):
    host, port = server.url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert not data.startswith(b"HTTP/1.1 200")
