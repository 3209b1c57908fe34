"""tests/api/test_route_guards.py -- issue 11 item 4: every route names its guard in routes.c
and the HTTP core runs it through the table. What a client can observe of that design is
pinned here: which guard answers which route, and where in the request path it runs (after the
body is parsed for session and merchant routes, before it for /metrics; before any check of
the handler's own)."""

import secrets

import pytest
import requests

MERCHANT_AUTH = ("GP1-HMAC-SHA256 key=mk_0123456789abcdef,ts=0,nonce=guardnonce0123456789,sig="
                 + "0" * 64)
METRICS_TOKEN = "guard-metrics-token-0123456789"


def code(r):
    try:
        return r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def person(api, admin, roles):
    """A new person of the admin's street with `roles`, logged in: its session token."""
    phone = "139" + "".join(secrets.choice("0123456789") for _ in range(8))
    r = api.post("/api/v1/people", {"phone": phone, "name": "guard", "unit_id": admin["unit_id"],
                                    "roles": [{"role": x} for x in roles]}, token=admin["token"])
    assert r.status_code == 201, r.text
    r = api.post("/api/v1/auth/login", {"phone": phone, "password": r.json()["initial_password"]},
                 token=None)
    assert r.status_code == 200, r.text
    return r.json()["token"]


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v1/me"),
    ("GET", "/audit/v1/status"),
    ("GET", "/audit/v1/transactions/1/proof"),
    ("POST", "/api/v1/auth/logout"),
])
def test_session_guards_answer_401_without_a_token(api, method, path):
    r = api.request(method, path, token=None)
    assert r.status_code == 401 and code(r) == "missing_token", r.text
    r = api.request(method, path, headers={"Authorization": MERCHANT_AUTH}, token=None)
    assert r.status_code == 401 and code(r) == "invalid_token", r.text


def test_merchant_guard_wants_a_signature_not_a_session(api, admin):
    r = api.get("/merchant/v1/me", token=admin["token"])
    assert r.status_code == 401 and code(r) == "missing_signature", r.text
    r = api.get("/merchant/v1/me", headers={"Authorization": MERCHANT_AUTH}, token=None)
    assert r.status_code == 401 and code(r) == "timestamp_out_of_window", r.text


def test_public_routes_take_no_guard(api):
    for path in ("/healthz", "/.well-known/gridpoints/checkpoint-keys"):
        r = api.get(path, headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 200, (path, r.text)


def test_auditor_guard_runs_before_the_handler(api, admin):
    """A worker is refused on /audit/v1 before its query is looked at; a street admin passes
    the guard and the handler then validates the query; the proof route is open to any person
    (the SQL decides whose transaction it is)."""
    worker = person(api, admin, ("worker",))
    r = api.get("/audit/v1/trial-balance", params={"unit_id": "abc"}, token=worker)
    assert r.status_code == 403 and code(r) == "forbidden", r.text
    r = api.get("/audit/v1/trial-balance", params={"unit_id": "abc"}, token=admin["token"])
    assert r.status_code == 400 and code(r) == "invalid_query", r.text
    r = api.get("/audit/v1/trial-balance", token=admin["token"])
    assert r.status_code == 200, r.text
    auditor = person(api, admin, ("auditor",))
    assert api.get("/audit/v1/status", token=auditor).status_code == 200
    r = api.get("/audit/v1/transactions/abc/proof", token=worker)
    assert r.status_code == 404, r.text


def test_session_and_signature_guards_run_after_the_body(api):
    """The body and the Idempotency-Key are checked before who is asking."""
    r = api.post("/api/v1/units", body="{not json", token=None)
    assert r.status_code == 400, r.text
    r = api.post("/api/v1/units", {}, token=None, idempotency_key="x" * 300)
    assert r.status_code == 400 and code(r) == "invalid_idempotency_key", r.text
    r = api.post("/merchant/v1/offers", body="[1,", token=None)
    assert r.status_code == 400, r.text
    r = api.post("/api/v1/units", {}, token=None)
    assert r.status_code == 401 and code(r) == "missing_token", r.text


def test_metrics_guard_runs_before_the_request_is_read(make_server):
    srv = make_server(env={"GRIDPOINTS_SERVER_METRICS_TOKEN": METRICS_TOKEN})
    from_api = requests.Session()
    headers = {"Idempotency-Key": "x" * 300}
    r = from_api.get(srv.url + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 401 and code(r) == "missing_token", r.text
    # Through the guard, the request itself is checked as on any route.
    r = from_api.get(srv.url + "/metrics",
                     headers=dict(headers, Authorization=f"Bearer {METRICS_TOKEN}"), timeout=10)
    assert r.status_code == 400 and code(r) == "invalid_idempotency_key", r.text
    from_api.close()
