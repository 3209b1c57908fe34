"""Foundation: health, auth, sessions, org units, people, roles, limits, bad input.

Every route gets its happy path and each class of bad input; objects of another street are
404 with no side effect. Assertions check error codes, never message text."""

import json
import threading

import pytest
import requests

from gp import error_code, unique_phone, unique_name


def login(api, phone, password):
    return api.post("/api/v1/auth/login", {"phone": phone, "password": password}, token=None)


def make_person(api, admin, unit_id, roles=("worker",), tags=None):
    phone = unique_phone()
    body = {"phone": phone, "name": unique_name("p"), "unit_id": unit_id,
            "roles": [{"role": r} for r in roles]}
    if tags is not None:
        body["tags"] = tags
    r = api.post("/api/v1/people", body, token=admin["token"])
    assert r.status_code == 201, r.text
    p = r.json()
    t = login(api, phone, p["initial_password"])
    assert t.status_code == 200, t.text
    p["token"] = t.json()["token"]
    return p


def make_unit(api, token, parent, name=None):
    r = api.post("/api/v1/units", {"parent_id": parent, "name": name or unique_name("u")},
                 token=token)
    assert r.status_code == 201, r.text
    return r.json()


# ---- health ------------------------------------------------------------------------------

def test_health_ready_metrics(api):
    r = api.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers.get("X-Request-Id")
    r = api.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    r = api.get("/metrics")
    assert r.status_code == 200
    assert "gridpoints_http_requests_total" in r.text
    assert "gridpoints_db_pool_in_use" in r.text
    assert "gridpoints_http_request_duration_seconds_bucket" in r.text


def test_request_id_echoed_or_generated(api):
    r = api.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["X-Request-Id"] == "abc-123"
    r = api.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert r.headers["X-Request-Id"] != "bad id with spaces"
    assert len(r.headers["X-Request-Id"]) >= 8


# ---- routing and framing --------------------------------------------------------------------

def test_unknown_route_and_wrong_method(api, admin):
    r = api.get("/api/v1/nope")
    assert r.status_code == 404 and error_code(r) == "route_not_found"
    r = api.put("/api/v1/me", {}, token=admin["token"])
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    r = api.get("/api/v1/units/abc", token=admin["token"])
    assert r.status_code == 404


def test_body_limits_and_json_errors(api, admin):
    tok = admin["token"]
    cases = [
        ('{"parent_id": 1, "name": "x"', 400, "invalid_json"),
        ('{"parent_id": 1, "parent_id": 2, "name": "x"}', 400, "duplicate_key"),
        ('[1, 2]', 400, "invalid_json"),
        ('{"parent_id": "1", "name": "x"}', 400, "invalid_type"),
        ('{"parent_id": 1.5, "name": "x"}', 400, "invalid_type"),
        ('{"parent_id": 99999999999999999999999, "name": "x"}', 400, "number_out_of_range"),
        ('{"name": "x"}', 400, "missing_field"),
        ('{"parent_id": 1, "name": "x", "evil": true}', 400, "unknown_field"),
        ('{"parent_id": 1, "name": ""}', 400, "invalid_length"),
        ('{"a":' + "[" * 40 + "]" * 40 + "}", 400, "json_too_deep"),
    ]
    before = api.get("/api/v1/units", token=tok).json()
    for body, status, code in cases:
        r = api.post("/api/v1/units", body=body, token=tok)
        assert r.status_code == status, (body, r.text)
        assert error_code(r) == code, (body, r.text)
        assert r.json()["error"]["message"]
    # oversized body (route limit 4 KiB) -> JSON 413
    r = api.post("/api/v1/units", body='{"name":"' + "x" * 5000 + '","parent_id":1}', token=tok)
    assert r.status_code == 413 and error_code(r) == "body_too_large"
    # wrong content type
    r = api.post("/api/v1/units", body='{"parent_id":1,"name":"x"}', token=tok,
                 headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    # nothing was created by any of them
    assert api.get("/api/v1/units", token=tok).json() == before


def test_ambiguous_framing_refused(server):
    import socket
    host, port = server.url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
              b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
              b"2\r\n{}\r\n0\r\n\r\n")
    data = s.recv(4096).decode(errors="replace")
    s.close()
    assert data.startswith("HTTP/1.1 400")


# ---- auth ----------------------------------------------------------------------------------

def test_login_logout_me(api, admin):
    r = api.get("/api/v1/me", token=admin["token"])
    assert r.status_code == 200
    me = r.json()
    assert me["id"] == admin["person_id"]
    assert {"role": "street_admin", "unit_id": admin["unit_id"]} in me["roles"]
    assert me["unit_path"][0]["level"] == "street"
    assert r.json().get("password_hash") is None
    r = api.post("/api/v1/auth/logout", token=admin["token"])
    assert r.status_code == 200
    r = api.get("/api/v1/me", token=admin["token"])
    assert r.status_code == 401 and error_code(r) == "invalid_token"


def test_login_errors(api, admin):
    r = login(api, admin["phone"], "wrong-password")
    assert r.status_code == 401 and error_code(r) == "invalid_credentials"
    r = login(api, unique_phone(), "whatever")
    assert r.status_code == 401 and error_code(r) == "invalid_credentials"
    r = api.post("/api/v1/auth/login", {"phone": admin["phone"]}, token=None)
    assert r.status_code == 400 and error_code(r) == "missing_field"
    r = api.post("/api/v1/auth/login", {"phone": 13800000000, "password": "x"}, token=None)
    assert r.status_code == 400 and error_code(r) == "invalid_type"


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer short", "Basic abc",
                                    "Bearer " + "A" * 43, "Bearer " + "!" * 43])
def test_bad_tokens(api, header):
    headers = {"Authorization": header} if header else {}
    r = api.get("/api/v1/me", token=None, headers=headers)
    assert r.status_code == 401
    assert error_code(r) in ("missing_token", "invalid_token")


def test_session_works_after_redis_flush(api, admin, redis):
    assert api.get("/api/v1/me", token=admin["token"]).status_code == 200
    redis.flushall()
    assert api.get("/api/v1/me", token=admin["token"]).status_code == 200


def test_login_rate_limited(make_server, make_admin):
    # Failures per (phone, client address); the whole matrix is in test_login_throttle.py.
    srv = make_server(env={"GRIDPOINTS_AUTH_LOGIN_LIMIT_PER_PAIR": "3",
                           "GRIDPOINTS_AUTH_LOGIN_WINDOW": "60s"})
    adm = make_admin(srv)
    from gp import Api
    api = Api(srv)
    # make_admin's own login succeeded, so it is not one of the 3 failures allowed
    codes = [login(api, adm["phone"], "wrong").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    r = login(api, adm["phone"], adm["password"])
    assert r.status_code == 429 and error_code(r) == "too_many_attempts"
    assert int(r.headers["Retry-After"]) >= 1
    api.close()


# ---- org units -----------------------------------------------------------------------------

def test_units_tree_and_scope(api, admin, make_admin):
    tok = admin["token"]
    street = admin["unit_id"]
    c = make_unit(api, tok, street)
    assert c["level"] == "community" and c["parent_id"] == street
    g = make_unit(api, tok, c["id"])
    assert g["level"] == "grid"
    m = make_unit(api, tok, g["id"])
    assert m["level"] == "micro_grid"
    r = api.post("/api/v1/units", {"parent_id": m["id"], "name": "x"}, token=tok)
    assert r.status_code == 400 and error_code(r) == "invalid_level"
    r = api.post("/api/v1/units", {"parent_id": street, "name": c["name"]}, token=tok)
    assert r.status_code == 409 and error_code(r) == "unit_exists"
    r = api.get(f"/api/v1/units/{g['id']}", token=tok)
    assert r.status_code == 200 and r.json()["children"] == 1
    # list with pagination
    page1 = api.get("/api/v1/units", params={"limit": 2}, token=tok).json()
    assert len(page1["items"]) == 2 and page1["next_cursor"]
    page2 = api.get("/api/v1/units", params={"limit": 2, "cursor": page1["next_cursor"]},
                    token=tok).json()
    ids = [u["id"] for u in page1["items"] + page2["items"]]
    assert ids == sorted(set(ids)) and len(ids) == 4
    # another street's admin sees none of it, and cannot write into it
    other = make_admin()
    for path in (f"/api/v1/units/{c['id']}", f"/api/v1/units/{street}"):
        r = api.get(path, token=other["token"])
        assert r.status_code == 404 and error_code(r) == "unit_not_found"
    r = api.post("/api/v1/units", {"parent_id": street, "name": "intruder"}, token=other["token"])
    assert r.status_code == 404
    assert all(u["name"] != "intruder" for u in api.get("/api/v1/units", token=tok).json()["items"])
    assert street not in [u["id"] for u in api.get("/api/v1/units", token=other["token"]).json()["items"]]


def test_pagination_limits(api, admin):
    r = api.get("/api/v1/units", params={"limit": 100000}, token=admin["token"])
    assert r.status_code == 400 and error_code(r) == "invalid_query"
    r = api.get("/api/v1/units", params={"cursor": "garbage"}, token=admin["token"])
    assert r.status_code == 400 and error_code(r) == "invalid_cursor"


# ---- people and roles ----------------------------------------------------------------------

def test_people_lifecycle(api, admin, sql):
    tok = admin["token"]
    c = make_unit(api, tok, admin["unit_id"])
    g = make_unit(api, tok, c["id"])
    staff = make_person(api, admin, g["id"], roles=("grid_staff",))
    worker = make_person(api, admin, g["id"], tags=["first_aid", "party_member"])
    assert worker["tags"] == ["first_aid", "party_member"]
    assert "password_hash" not in worker
    # grid staff see their grid's people, not the community
    r = api.get(f"/api/v1/people/{worker['id']}", token=staff["token"])
    assert r.status_code == 200
    r = api.get(f"/api/v1/units/{c['id']}", token=staff["token"])
    assert r.status_code == 404
    # a worker sees no one
    r = api.get(f"/api/v1/people/{staff['id']}", token=worker["token"])
    assert r.status_code == 404
    # list filters
    r = api.get("/api/v1/people", params={"unit_id": g["id"], "role": "worker"}, token=tok)
    assert [p["id"] for p in r.json()["items"]] == [worker["id"]]
    # update and suspend: the suspended person's session stops working
    r = api.patch(f"/api/v1/people/{worker['id']}", {"tags": ["mediator"]}, token=staff["token"])
    assert r.status_code == 200 and r.json()["tags"] == ["mediator"]
    # the worker's session is cached in Redis by now; suspension must end it at once
    assert api.get("/api/v1/me", token=worker["token"]).status_code == 200
    r = api.patch(f"/api/v1/people/{worker['id']}", {"status": "suspended"}, token=tok)
    assert r.status_code == 200
    assert "_revoked_sessions" not in r.json()
    r = api.get("/api/v1/me", token=worker["token"])
    assert r.status_code == 401 and error_code(r) == "invalid_token"
    before = sql.scalar("SELECT count(*) FROM audit_log WHERE object_id = %s", (str(worker["id"]),))
    assert before >= 3  # create, update, suspend
    # duplicate phone
    r = api.post("/api/v1/people", {"phone": staff["phone"], "name": "dup", "unit_id": g["id"]},
                 token=tok)
    assert r.status_code == 409 and error_code(r) == "phone_taken"
    r = api.post("/api/v1/people", {"phone": "12345", "name": "x", "unit_id": g["id"]}, token=tok)
    assert r.status_code == 400
    r = api.post("/api/v1/people", {"phone": unique_phone(), "name": "x", "unit_id": g["id"],
                                    "roles": [{"role": "emperor"}]}, token=tok)
    assert r.status_code == 400 and error_code(r) == "invalid_role"


def test_role_grants_follow_rank(api, admin):
    tok = admin["token"]
    c = make_unit(api, tok, admin["unit_id"])
    g = make_unit(api, tok, c["id"])
    staff = make_person(api, admin, g["id"], roles=("grid_staff",))
    worker = make_person(api, admin, g["id"])
    # grid staff cannot make anyone grid staff, nor a street admin
    for role in ("grid_staff", "street_admin", "auditor"):
        r = api.post(f"/api/v1/people/{worker['id']}/roles", {"role": role, "unit_id": g["id"]},
                     token=staff["token"])
        assert r.status_code == 403, (role, r.text)
    r = api.post(f"/api/v1/people/{worker['id']}/roles", {"role": "volunteer", "unit_id": g["id"]},
                 token=staff["token"])
    assert r.status_code == 200
    assert {"role": "volunteer", "unit_id": g["id"]} in r.json()["roles"]
    r = api.delete(f"/api/v1/people/{worker['id']}/roles/volunteer/{g['id']}", token=tok)
    assert r.status_code == 200
    assert {"role": "volunteer", "unit_id": g["id"]} not in r.json()["roles"]
    r = api.delete(f"/api/v1/people/{worker['id']}/roles/volunteer/{g['id']}", token=tok)
    assert r.status_code == 404


def test_cross_street_people_invisible(api, admin, make_admin):
    other = make_admin()
    c = make_unit(api, admin["token"], admin["unit_id"])
    p = make_person(api, admin, c["id"])
    for method, path, body in [("GET", f"/api/v1/people/{p['id']}", None),
                               ("PATCH", f"/api/v1/people/{p['id']}", {"name": "hacked"}),
                               ("POST", f"/api/v1/people/{p['id']}/roles",
                                {"role": "worker", "unit_id": other["unit_id"]})]:
        if body is None:
            r = api.request(method, path, token=other["token"])
        else:
            r = api.request(method, path, body, token=other["token"])
        assert r.status_code == 404, (method, path, r.text)
    assert api.get(f"/api/v1/people/{p['id']}", token=admin["token"]).json()["name"] == p["name"]


def test_concurrent_logins_and_requests(api, admin):
    """Many clients at once: every request gets exactly one well-formed answer."""
    errors = []

    def worker():
        try:
            for _ in range(20):
                r = api.get("/api/v1/me", token=admin["token"])
                if r.status_code != 200:
                    errors.append(r.status_code)
        except requests.RequestException as e:  # pragma: no cover
            errors.append(str(e))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_native_tls_listener(make_server, tmp_path):
    import subprocess
    from gp import free_port
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = free_port()
    srv = make_server(env={"GRIDPOINTS_SERVER_TLS_LISTEN": f"127.0.0.1:{port}",
                           "GRIDPOINTS_SERVER_TLS_CERT": str(cert),
                           "GRIDPOINTS_SERVER_TLS_KEY": str(key)})
    r = requests.get(f"https://127.0.0.1:{port}/healthz", verify=str(cert), timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    # plain HTTP on the TLS port is not served
    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=3).raise_for_status()
    srv.stop()
