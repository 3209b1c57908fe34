"""Quick recovery of the database pool (issue 12, part 5b): PostgreSQL stops under load and
comes back; from the moment it accepts connections again the server must answer 2xx within
3 s, and steadily so, with every request answered (no hang) and nothing but 200 or 503 seen."""

import threading
import time

import psycopg2
import requests

RECOVERY_S = 3.0
CLIENTS = 16


def pg_accepting(url):
    try:
        psycopg2.connect(url, connect_timeout=1).close()
        return True
    except psycopg2.Error:
        return False


def run_load(srv, token, stop, log):
    """One client: GET /api/v1/units in a loop; log gets (sent_at, answered_at, status)."""
    s = requests.Session()
    h = {"Authorization": "Bearer " + token}
    while not stop.is_set():
        t0 = time.time()
        try:
            r = s.get(srv.url + "/api/v1/units", headers=h, timeout=10)
            log.append((t0, time.time(), r.status_code))
        except requests.RequestException as e:
            log.append((t0, time.time(), type(e).__name__))
        time.sleep(0.02)
    s.close()


def _recovery(services, srv, token, mode):
    stop = threading.Event()
    logs = [[] for _ in range(CLIENTS)]
    threads = [threading.Thread(target=run_load, args=(srv, token, stop, logs[i]), daemon=True)
               for i in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        services.stop_postgres(mode)
        time.sleep(5)  # the pool sees every connection fail and backs off meanwhile
        starter = threading.Thread(target=services.start, daemon=True)
        starter.start()
        ready = None
        deadline = time.time() + 60
        while ready is None and time.time() < deadline:
            if pg_accepting(services.admin_url):
                ready = time.time()
            else:
                time.sleep(0.05)
        assert ready is not None, "PostgreSQL did not come back"
        starter.join(120)
        time.sleep(RECOVERY_S + 3)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    events = sorted(e for log in logs for e in log)
    bad = [e for e in events if e[2] not in (200, 503)]
    assert not bad, f"answers other than 200/503 (or no answer): {bad[:10]}"
    slow = [e for e in events if e[1] - e[0] > 8]
    assert not slow, f"requests that hung: {slow[:10]}"
    after = [e for e in events if e[0] >= ready]
    first_ok = next((e[1] for e in after if e[2] == 200), None)
    assert first_ok is not None, f"no 2xx after PostgreSQL came back: {after[-10:]}"
    last_fail = max((e[1] for e in after if e[2] != 200), default=first_ok)
    steady = [e for e in after if e[0] > last_fail]
    print(f"{mode}: first 2xx {first_ok - ready:.2f}s, steady 2xx {last_fail - ready:.2f}s "
          f"after PostgreSQL accepted connections; {len(after)} requests since, "
          f"{len(steady)} in the steady tail")
    assert first_ok - ready < RECOVERY_S, (first_ok - ready, after[:20])
    assert last_fail - ready < RECOVERY_S, (last_fail - ready,
                                             [e for e in after if e[2] != 200][-10:])
    assert len(steady) >= CLIENTS, steady


def test_pool_recovers_within_3s_after_fast_stop(make_server, make_admin, services, api):
    srv = make_server()
    adm = make_admin(srv)
    assert api(srv).get("/api/v1/units", token=adm["token"]).status_code == 200
    _recovery(services, srv, adm["token"], "fast")
    srv.stop()


def test_pool_recovers_within_3s_after_crash(make_server, make_admin, services, api):
    srv = make_server()
    adm = make_admin(srv)
    assert api(srv).get("/api/v1/units", token=adm["token"]).status_code == 200
    _recovery(services, srv, adm["token"], "immediate")
    srv.stop()
