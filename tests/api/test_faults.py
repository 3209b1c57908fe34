"""Infrastructure faults under a running server: PostgreSQL restarted, then Redis. The server
answers 503 meanwhile (never hangs, never crashes) and recovers by itself within seconds."""

import time

import requests

from gp import error_code


def poll(api, path, token, until, timeout=20.0):
    end = time.time() + timeout
    seen = []
    while time.time() < end:
        t0 = time.time()
        try:
            r = api.get(path, token=token, timeout=8)
            seen.append((r.status_code, round(time.time() - t0, 2)))
            if until(r):
                return r, seen
        except requests.RequestException as e:  # a hang or a dropped connection is a failure
            seen.append((type(e).__name__, round(time.time() - t0, 2)))
        time.sleep(0.2)
    return None, seen


def test_postgres_restart_then_redis_restart(make_server, make_admin, services, api):
    srv = make_server()
    adm = make_admin(srv)
    c = api(srv)
    assert c.get("/api/v1/units", token=adm["token"]).status_code == 200

    services.stop_postgres("fast")
    try:
        r, seen = poll(c, "/api/v1/units", adm["token"], lambda r: r.status_code == 503, 10)
        assert r is not None, seen
        assert error_code(r) in ("unavailable", "not_found") or r.status_code == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert c.get("/readyz").status_code == 503
        assert all(isinstance(s[0], int) and s[1] < 6 for s in seen), seen
    finally:
        services.start()
    r, seen = poll(c, "/api/v1/units", adm["token"], lambda r: r.status_code == 200, 20)
    assert r is not None, seen

    services.stop_redis()
    try:
        # sessions and reads fall back to PostgreSQL: still 200 without Redis
        r, seen = poll(c, "/api/v1/units", adm["token"], lambda r: r.status_code == 200, 10)
        assert r is not None, seen
        assert c.get("/readyz").status_code == 503
    finally:
        services.start()
    r, seen = poll(c, "/readyz", None, lambda r: r.status_code == 200, 20)
    assert r is not None, seen
    srv.stop()  # exit 0, no sanitizer report
