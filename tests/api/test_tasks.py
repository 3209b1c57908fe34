"""The work loop through the API: publish, discover, claim (races), report (offline sync,
idempotency), review, timers (auto-approval, expiry, close), several instances, kill -9."""

import concurrent.futures as cf
import datetime as dt
import secrets
import threading
import time

import pytest

from gp import error_code
from loop import Tree, iso, now, report_body


@pytest.fixture
def tree(api, admin, sql):
    return Tree(api, admin, sql)


def wait_for(pred, timeout=15.0, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def test_whole_loop(api, tree, sql):
    task = tree.publish(slots=2, reward=25)
    assert task["status"] == "open" and task["free_slots"] == 2
    assert task["receipt"]["txn_id"]
    (w,) = tree.workers(1)
    # discovery: near the place, filtered, paginated
    r = api.get("/api/v1/tasks", params={"lat": 30.6571, "lng": 104.0801, "radius_m": 2000},
                token=w["token"])
    assert r.status_code == 200, r.text
    assert task["id"] in [t["id"] for t in r.json()["items"]]
    r = api.get(f"/api/v1/tasks/{task['id']}", token=w["token"])
    assert r.status_code == 200 and r.json()["can_claim"] is True
    # claim, check in, report
    r = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"])
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["state"] == "claimed" and a["gate"]["free_slots"] == 1
    r = api.post(f"/api/v1/assignments/{a['id']}/checkins",
                 {"lat": 30.6571, "lng": 104.0801, "at": iso(now())}, token=w["token"])
    assert r.status_code == 201, r.text
    r = api.post("/api/v1/reports", report_body(a["id"]), token=w["token"])
    assert r.status_code == 201, r.text
    assert r.json()["assignment"]["state"] == "submitted"
    # review queue and approval by the grid staff
    r = api.get("/api/v1/reviews", token=tree.staff["token"])
    assert a["id"] in [x["id"] for x in r.json()["items"]]
    r = api.post(f"/api/v1/assignments/{a['id']}/approve", {}, token=tree.staff["token"])
    assert r.status_code == 200, r.text
    assert r.json()["receipt"]["txn_id"]
    assert tree.balance(w["id"]) == 25
    # mine + history
    r = api.get("/api/v1/assignments", token=w["token"])
    assert r.json()["items"][0]["state"] == "approved"
    r = api.get(f"/api/v1/tasks/{task['id']}/history", token=tree.staff["token"])
    events = [e["event"] for e in r.json()["items"]]
    assert len(events) >= 4
    tree.ledger_ok()


def gate_refusals(api):
    for line in api.get("/metrics").text.splitlines():
        if line.startswith('gridpoints_claim_gate_refused_total '):
            return int(line.split()[-1])
    return 0


def test_claim_race_200_on_10_slots(api, tree, sql):
    task = tree.publish(slots=10)
    workers = tree.workers(200)
    refused_before = gate_refusals(api)

    def claim(w):
        return api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"])

    with cf.ThreadPoolExecutor(max_workers=32) as ex:
        results = list(ex.map(claim, workers))
    codes = [r.status_code for r in results]
    assert codes.count(201) == 10, codes
    assert codes.count(409) == 190
    assert all(error_code(r) == "task_full" for r in results if r.status_code == 409)
    live = sql.scalar("SELECT count(*) FROM assignments WHERE task_id = %s", (task["id"],))
    assert live == 10
    # the gate, seeded at publication, turned every loser away before PostgreSQL
    assert gate_refusals(api) - refused_before == 190
    # the gate converged on PostgreSQL's count: a release reopens exactly one slot
    winner = next(r.json() for r in results if r.status_code == 201)
    w = next(x for x in workers if x["id"] == winner["worker_id"])
    r = api.post(f"/api/v1/assignments/{winner['id']}/release", token=w["token"])
    assert r.status_code == 200, r.text
    losers = [x for x, r in zip(workers, results) if r.status_code == 409][:5]
    with cf.ThreadPoolExecutor(max_workers=5) as ex:
        again = [r.status_code for r in ex.map(claim, losers)]
    assert again.count(201) == 1, again


def test_same_worker_claims_twice_concurrently(api, tree, sql):
    task = tree.publish(slots=5)
    (w,) = tree.workers(1)
    barrier = threading.Barrier(8)

    def claim(_):
        barrier.wait()
        return api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"]).status_code

    with cf.ThreadPoolExecutor(max_workers=8) as ex:
        codes = list(ex.map(claim, range(8)))
    assert codes.count(201) == 1, codes
    assert all(c == 409 for c in codes if c != 201)
    assert sql.scalar("SELECT count(*) FROM assignments WHERE task_id = %s", (task["id"],)) == 1


def test_report_sent_five_times_concurrently(api, tree, sql):
    task = tree.publish(slots=1, reward=7, review_window_s=1)
    (w,) = tree.workers(1)
    a = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"]).json()
    body = report_body(a["id"])
    barrier = threading.Barrier(5)

    def send(_):
        barrier.wait()
        return api.post("/api/v1/reports", body, token=w["token"])

    with cf.ThreadPoolExecutor(max_workers=5) as ex:
        rs = list(ex.map(send, range(5)))
    assert all(r.status_code in (200, 201) for r in rs), [r.text for r in rs]
    assert len({r.json()["report"]["id"] for r in rs}) == 1
    assert sql.scalar("SELECT count(*) FROM reports WHERE worker_id = %s", (w["id"],)) == 1
    # auto-approval by the timer pays once
    assert wait_for(lambda: tree.balance(w["id"]) == 7), tree.balance(w["id"])
    time.sleep(1)
    assert tree.balance(w["id"]) == 7
    assert sql.scalar("SELECT count(*) FROM ledger_txns WHERE kind = 'award' "
                      "AND (refs ->> 'assignment_id')::bigint = %s", (a["id"],)) == 1
    # the same report id once more: same answer, no effect
    r = api.post("/api/v1/reports", body, token=w["token"])
    assert r.status_code in (200, 201) and r.json()["report"]["id"] == rs[0].json()["report"]["id"]
    # the same id with another body is refused
    other = dict(body, notes="changed")
    r = api.post("/api/v1/reports", other, token=w["token"])
    assert r.status_code == 422
    tree.ledger_ok()


def test_offline_report_synced_after_expiry_and_close(api, tree, sql):
    task = tree.publish(slots=1, reward=9, claim_ttl_s=2,
                        ends_at=iso(now() + dt.timedelta(seconds=4)))
    (w,) = tree.workers(1)
    a = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"]).json()
    made = now()  # done on the phone while the claim was valid, synced much later
    assert wait_for(lambda: sql.scalar("SELECT state FROM assignments WHERE id = %s",
                                       (a["id"],)) == "expired")
    assert wait_for(lambda: sql.scalar("SELECT status FROM tasks WHERE id = %s",
                                       (task["id"],)) == "closed", timeout=20)
    r = api.post("/api/v1/reports", report_body(a["id"], made_at=made), token=w["token"])
    assert r.status_code == 201, r.text
    assert r.json()["assignment"]["state"] == "submitted"
    assert "late_sync" in r.json()["report"]["flags"] or r.json()["report"]["flags"] is not None


def test_future_report_refused(api, tree, sql):
    task = tree.publish()
    (w,) = tree.workers(1)
    a = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"]).json()
    r = api.post("/api/v1/reports", report_body(a["id"], made_at=now() + dt.timedelta(hours=1)),
                 token=w["token"])
    assert r.status_code == 400 and error_code(r) == "report_in_future"
    assert sql.scalar("SELECT count(*) FROM reports WHERE assignment_id = %s", (a["id"],)) == 0


def test_geofence_flag_and_refuse(api, tree):
    soft = tree.publish(geofence_enforced=False)
    hard = tree.publish(geofence_enforced=True)
    w1, w2 = tree.workers(2)
    a1 = api.post(f"/api/v1/tasks/{soft['id']}/claim", token=w1["token"]).json()
    a2 = api.post(f"/api/v1/tasks/{hard['id']}/claim", token=w2["token"]).json()
    far = {"lat": 31.2, "lng": 121.5}  # Shanghai, far from Chengdu
    r = api.post("/api/v1/reports", report_body(a1["id"], **far), token=w1["token"])
    assert r.status_code == 201 and "outside_geofence" in r.json()["report"]["flags"]
    r = api.post("/api/v1/reports", report_body(a2["id"], **far), token=w2["token"])
    assert r.status_code == 409 and error_code(r) == "outside_geofence"


def test_bad_input_and_scope(api, tree, make_admin, sql):
    (w,) = tree.workers(1)
    # a worker cannot publish
    r = api.post("/api/v1/tasks", {"unit_id": tree.grid, "title": "x", "category": "c",
                                   "reward": 1, "slots": 1, "ends_at": iso(now() + dt.timedelta(hours=1)),
                                   "claim_ttl_s": 60, "review_window_s": 60}, token=w["token"])
    assert r.status_code in (403, 404)
    # invalid fields
    base = {"unit_id": tree.grid, "title": "t", "category": "c", "reward": 1, "slots": 1,
            "ends_at": iso(now() + dt.timedelta(hours=1)), "claim_ttl_s": 60, "review_window_s": 60}
    for patch, code in [({"reward": 0}, 400), ({"slots": -1}, 400), ({"reward": "10"}, 400),
                        ({"ends_at": "yesterday"}, 400), ({"lat": 95}, 400),
                        ({"surprise": 1}, 400), ({"reward": 2 ** 62, "slots": 4}, 400)]:
        r = api.post("/api/v1/tasks", dict(base, **patch), token=tree.staff["token"])
        assert r.status_code == code, (patch, r.text)
    before = sql.scalar("SELECT count(*) FROM tasks WHERE unit_id = %s", (tree.grid,))
    # budget too small
    r = api.post("/api/v1/tasks", dict(base, reward=10 ** 9, slots=1000), token=tree.staff["token"])
    assert r.status_code == 409 and error_code(r) == "insufficient_budget"
    assert sql.scalar("SELECT count(*) FROM tasks WHERE unit_id = %s", (tree.grid,)) == before
    # another street sees nothing
    task = tree.publish()
    other = make_admin()
    for method, path in [("GET", f"/api/v1/tasks/{task['id']}"),
                         ("POST", f"/api/v1/tasks/{task['id']}/claim"),
                         ("POST", f"/api/v1/tasks/{task['id']}/cancel"),
                         ("GET", f"/api/v1/tasks/{task['id']}/history")]:
        body = {"reason": "x"} if path.endswith("cancel") else None
        r = api.request(method, path, body, token=other["token"]) if body else \
            api.request(method, path, token=other["token"])
        assert r.status_code in (403, 404), (method, path, r.text)
    assert api.get(f"/api/v1/tasks/{task['id']}", token=tree.staff["token"]).json()["status"] == "open"
    # reject needs a reason; self-approval is refused
    a = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"]).json()
    api.post("/api/v1/reports", report_body(a["id"]), token=w["token"])
    r = api.post(f"/api/v1/assignments/{a['id']}/reject", {}, token=tree.staff["token"])
    assert r.status_code == 400
    r = api.post(f"/api/v1/assignments/{a['id']}/approve", {}, token=w["token"])
    assert r.status_code in (403, 404)


def test_cancel_releases_reservation(api, tree, sql):
    task = tree.publish(slots=4, reward=10)
    budget_before = sql.scalar("SELECT balance FROM accounts WHERE kind = 'budget' AND owner_id = %s",
                               (tree.grid,))
    (w,) = tree.workers(1)
    a = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"]).json()
    r = api.post(f"/api/v1/tasks/{task['id']}/cancel", {"reason": "rain"}, token=tree.staff["token"])
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert sql.scalar("SELECT state FROM assignments WHERE id = %s", (a["id"],)) in ("expired", "released")
    tree.ledger_ok()
    assert budget_before is not None


def test_three_instances_timers_fire_once(api, tree, sql, make_server):
    """Auto-approvals and expiries come due while three instances sweep: each effect once."""
    servers = [make_server() for _ in range(3)]
    clients = [api(s) for s in servers]
    n_tasks, per_task = 6, 5
    tasks = [tree.publish(slots=per_task, reward=3, review_window_s=2, claim_ttl_s=3)
             for _ in range(n_tasks)]
    workers = tree.workers(n_tasks * per_task)
    submitted = expired_expected = 0
    jobs = []
    for i, t in enumerate(tasks):
        for j in range(per_task):
            jobs.append((clients[(i + j) % 3], t, workers[i * per_task + j], j % 2 == 0))

    def run(job):
        c, t, w, report = job
        r = c.post(f"/api/v1/tasks/{t['id']}/claim", token=w["token"])
        assert r.status_code == 201, r.text
        if report:
            r = c.post("/api/v1/reports", report_body(r.json()["id"]), token=w["token"])
            assert r.status_code == 201, r.text
        return report

    with cf.ThreadPoolExecutor(max_workers=12) as ex:
        outcomes = list(ex.map(run, jobs))
    submitted = sum(outcomes)
    expired_expected = len(outcomes) - submitted
    ids = [t["id"] for t in tasks]
    assert wait_for(lambda: sql.scalar(
        "SELECT count(*) FROM assignments WHERE task_id = ANY(%s) AND state IN ('claimed','submitted')",
        (ids,)) == 0, timeout=30)
    assert sql.scalar("SELECT count(*) FROM assignments WHERE task_id = ANY(%s) AND state = 'approved'",
                      (ids,)) == submitted
    assert sql.scalar("SELECT count(*) FROM assignments WHERE task_id = ANY(%s) AND state = 'expired'",
                      (ids,)) == expired_expected
    awards = sql.scalar("SELECT count(*) FROM ledger_txns WHERE kind = 'award' "
                        "AND (refs ->> 'task_id')::bigint = ANY(%s)", (ids,))
    assert awards == submitted
    assert sum(tree.balance(w["id"]) for w in workers) == 3 * submitted
    tree.ledger_ok()


def test_kill9_during_claims_and_reports(api, tree, sql, make_server):
    srv = make_server()
    c = api(srv)
    task = tree.publish(slots=60, reward=2)
    workers = tree.workers(60)
    acked_claims, acked_reports = [], []
    lock = threading.Lock()
    stop = threading.Event()

    def run(w):
        if stop.is_set():
            return
        try:
            r = c.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"], timeout=5)
            if r.status_code == 201:
                with lock:
                    acked_claims.append(r.json()["id"])
                body = report_body(r.json()["id"])
                r = c.post("/api/v1/reports", body, token=w["token"], timeout=5)
                if r.status_code == 201:
                    with lock:
                        acked_reports.append(body["client_report_id"])
        except Exception:
            pass

    with cf.ThreadPoolExecutor(max_workers=8) as ex:
        futs = [ex.submit(run, w) for w in workers]
        time.sleep(0.3)
        srv.kill9()
        stop.set()
        cf.wait(futs)
    srv.start()
    for aid in acked_claims:
        assert sql.scalar("SELECT count(*) FROM assignments WHERE id = %s", (aid,)) == 1
    for rid in acked_reports:
        assert sql.scalar("SELECT count(*) FROM reports WHERE client_report_id = %s", (rid,)) == 1
    # no half state: counters on the task row match the assignments
    # (since 0025 the row keeps occupied = claimed + submitted + approved; the JSON's counts)
    row = sql.one("SELECT occupied, approved, (gp_task_counts(t) ->> 'claimed')::int, "
                  "(gp_task_counts(t) ->> 'submitted')::int FROM tasks t WHERE id = %s",
                  (task["id"],))
    live = sql.scalar("SELECT count(*) FROM assignments WHERE task_id = %s AND state = 'claimed'", (task["id"],))
    subm = sql.scalar("SELECT count(*) FROM assignments WHERE task_id = %s AND state = 'submitted'", (task["id"],))
    assert (row[0] - row[1], row[2], row[3]) == (live + subm, live, subm)
    tree.ledger_ok()
