"""Graceful shutdown: in-flight requests finish; past server.shutdown_timeout what is still
pending fails with 503; the process exits 0 with no leak either way."""

import signal
import threading
import time

import psycopg2

from gp import Api


def hold_lock(services, table):
    """A transaction holding an exclusive lock on `table` until released."""
    conn = psycopg2.connect(services.admin_url)
    cur = conn.cursor()
    cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return conn


def start_request(api, token, path, out):
    def run():
        try:
            out.append(api.get(path, token=token, timeout=20))
        except Exception as e:  # recorded for the assertion message
            out.append(e)
    t = threading.Thread(target=run)
    t.start()
    return t


def test_inflight_request_finishes_after_sigterm(make_server, make_admin, services):
    srv = make_server()
    adm = make_admin(srv)
    api = Api(srv)
    lock = hold_lock(services, "org_units")
    out = []
    t = start_request(api, adm["token"], "/api/v1/units", out)
    time.sleep(0.5)  # the request is now waiting on the lock inside PostgreSQL
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert srv.proc.poll() is None, "exited with a request in flight"
    lock.rollback()
    lock.close()
    t.join(10)
    assert out and getattr(out[0], "status_code", None) == 200, out
    assert srv.wait_exit(10) == 0
    srv.check_log()


def test_shutdown_deadline_fails_pending_with_503(make_server, make_admin, services):
    srv = make_server(env={"GRIDPOINTS_SERVER_SHUTDOWN_TIMEOUT": "1s",
                           "GRIDPOINTS_DATABASE_STATEMENT_TIMEOUT": "30s"})
    adm = make_admin(srv)
    api = Api(srv)
    lock = hold_lock(services, "org_units")
    try:
        out = []
        t = start_request(api, adm["token"], "/api/v1/units", out)
        time.sleep(0.5)
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        t.join(10)
        assert out and getattr(out[0], "status_code", None) == 503, out
        assert out[0].headers.get("Retry-After")
        assert srv.wait_exit(10) == 0
        assert time.time() - t0 < 5
        srv.check_log()
    finally:
        lock.rollback()
        lock.close()


def test_drain_delay_serves_while_readyz_says_draining(make_server, make_admin):
    """server.drain_delay: after SIGTERM /readyz answers 503 "draining" (a load balancer takes
    the instance out) while every other request is still served, with Connection: close; then
    the listeners close and the process exits 0 (docs/OPERATIONS.md, "Several instances behind
    a load balancer")."""
    srv = make_server(env={"GRIDPOINTS_SERVER_DRAIN_DELAY": "2s"})
    adm = make_admin(srv)
    api = Api(srv)
    assert api.get("/readyz", token=None).status_code == 200
    t0 = time.time()
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    r = api.get("/readyz", token=None)
    assert r.status_code == 503 and r.json()["status"] == "draining", r.text
    assert r.headers.get("Retry-After")
    r = api.get("/api/v1/units", token=adm["token"])
    assert r.status_code == 200, r.text
    assert r.headers.get("Connection", "").lower() == "close"
    assert srv.proc.poll() is None, "exited during the drain delay"
    assert srv.wait_exit(10) == 0
    assert time.time() - t0 >= 1.9
    srv.check_log()
