"""The lean write path of the work loop (issue 12): a report submission and a decision write
each row once and take no task row lock before their guarded UPDATEs; these tests race them
against each other and against the timers and check that the task's counters still equal its
assignments, that money moves once, and that no request fails with a 5xx."""

import concurrent.futures as cf
import secrets
import threading
import time

import psycopg2
import pytest

from gp import error_code
from loop import Tree, bulk_workers, now, report_body

STATES = ("claimed", "submitted", "approved", "rejected", "released", "expired")


@pytest.fixture
def tree(api, admin, sql):
    return Tree(api, admin, sql)


def counters_match(sql, task_id):
    """The task's counters (occupied = claimed + submitted + approved, and the final ones; since
    0025 a report does not write the task row) and the per-state counts its JSON shows,
    against a count of its assignments."""
    row = sql.one("SELECT occupied, approved, rejected, released, expired, gp_task_counts(t) "
                  "FROM tasks t WHERE id = %s", (task_id,))
    counted = {s: sql.scalar("SELECT count(*) FROM assignments WHERE task_id = %s AND state = %s",
                             (task_id, s)) for s in STATES}
    stored = (counted["claimed"] + counted["submitted"] + counted["approved"], counted["approved"],
              counted["rejected"], counted["released"], counted["expired"])
    assert tuple(row[:5]) == stored, (row, counted)
    assert row[5] == counted, (row, counted)
    return counted


def test_different_reports_race_on_one_assignment(api, tree, sql):
    """Six different reports (six client_report_ids) on one claim at once: one is accepted,
    the others are told it already was; one report row, one history row, counters exact."""
    task = tree.publish(slots=2)
    (w,) = tree.workers(1)
    a = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"]).json()
    barrier = threading.Barrier(6)

    def send(_):
        body = report_body(a["id"], report_id=secrets.token_hex(6))
        barrier.wait()
        return api.post("/api/v1/reports", body, token=w["token"])

    with cf.ThreadPoolExecutor(max_workers=6) as ex:
        rs = list(ex.map(send, range(6)))
    codes = [r.status_code for r in rs]
    assert codes.count(201) == 1, [r.text for r in rs]
    assert all(error_code(r) == "already_submitted" for r in rs if r.status_code != 201), \
        [r.text for r in rs]
    assert sql.scalar("SELECT count(*) FROM reports WHERE assignment_id = %s", (a["id"],)) == 1
    assert sql.scalar("SELECT count(*) FROM assignment_events WHERE assignment_id = %s "
                      "AND to_state = 'submitted'", (a["id"],)) == 1
    got = counters_match(sql, task["id"])
    assert got["submitted"] == 1 and got["claimed"] == 0
    # the report's assignment carries the report, written by the same UPDATE as the state
    ok = next(r.json() for r in rs if r.status_code == 201)
    assert sql.scalar("SELECT report_id FROM assignments WHERE id = %s", (a["id"],)) \
        == ok["report"]["id"] == ok["assignment"]["report_id"]
    assert ok["assignment"]["version"] == a["version"] + 1
    # the worker's own moves have their history row and no outbox row beside it
    assert sql.scalar("SELECT count(*) FROM outbox WHERE topic IN ('assignment.claimed', "
                      "'assignment.submitted') AND (payload ->> 'assignment_id')::bigint = %s",
                      (a["id"],)) == 0
    # every row of the path names the task's street, passed by the functions themselves
    street = sql.scalar("SELECT street_id FROM tasks WHERE id = %s", (task["id"],))
    assert street == tree.street
    for table, col in (("assignments", "id"), ("reports", "assignment_id"),
                       ("assignment_events", "assignment_id")):
        assert sql.scalar(f"SELECT array_agg(DISTINCT street_id) FROM {table} WHERE {col} = %s",
                          (a["id"],)) == [street], table


def test_decisions_race(api, tree, sql):
    """Two staff members approve and reject the same report at once, three times each: one
    decision wins, the award is paid at most once, the counters stay exact."""
    task = tree.publish(slots=3, reward=11)
    staff2 = bulk_workers(sql, tree.grid, 1, role="grid_staff")[0]
    ws = tree.workers(3)
    asg = []
    for w in ws:
        a = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"]).json()
        r = api.post("/api/v1/reports", report_body(a["id"]), token=w["token"])
        assert r.status_code == 201, r.text
        asg.append(a)
    for a in asg:
        barrier = threading.Barrier(6)

        def decide(i, a=a, barrier=barrier):
            tok = (tree.staff, staff2)[i % 2]["token"]
            barrier.wait()
            if i < 3:
                return api.post(f"/api/v1/assignments/{a['id']}/approve", {}, token=tok)
            return api.post(f"/api/v1/assignments/{a['id']}/reject", {"reason": "blurred photo"},
                            token=tok)

        with cf.ThreadPoolExecutor(max_workers=6) as ex:
            rs = list(ex.map(decide, range(6)))
        assert [r.status_code for r in rs].count(200) == 1, [r.text for r in rs]
        assert all(r.status_code == 409 and error_code(r) in ("already_approved",
                                                               "already_rejected")
                   for r in rs if r.status_code != 200), [r.text for r in rs]
    got = counters_match(sql, task["id"])
    assert got["submitted"] == 0 and got["approved"] + got["rejected"] == 3
    for w, a in zip(ws, asg):
        state = sql.scalar("SELECT state FROM assignments WHERE id = %s", (a["id"],))
        assert tree.balance(w["id"]) == (11 if state == "approved" else 0)
        assert sql.scalar("SELECT count(*) FROM ledger_txns WHERE kind = 'award' "
                          "AND (refs ->> 'assignment_id')::bigint = %s", (a["id"],)) \
            == (state == "approved")
    if got["approved"] == 3:
        assert sql.scalar("SELECT status FROM tasks WHERE id = %s", (task["id"],)) == "closed"
    tree.ledger_ok()


def test_reports_race_the_timers(api, tree, sql):
    """Claims that expire while their reports arrive, reports auto-approved while staff decide
    them, releases: every answer is a documented one, never a 5xx, and afterwards the counters
    equal the assignments, each approval is paid once and the ledger checks out."""
    task = tree.publish(slots=30, reward=5, claim_ttl_s=2, review_window_s=1,
                        geofence_enforced=False)
    ws = tree.workers(30)
    claims = {}
    for w in ws:
        r = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"])
        assert r.status_code == 201, r.text
        claims[w["id"]] = r.json()
    made = now()
    # reach the claims' due time: the expiry timer and the reports meet
    time.sleep(max(0.0, 1.6 - (now() - made).total_seconds()))

    def work(i):
        w = ws[i]
        a = claims[w["id"]]
        out = []
        if i % 7 == 3:
            out.append(api.post(f"/api/v1/assignments/{a['id']}/release", token=w["token"]))
        out.append(api.post("/api/v1/reports", report_body(a["id"], made_at=made),
                            token=w["token"]))
        if i % 3 == 0:
            out.append(api.post(f"/api/v1/assignments/{a['id']}/approve", {},
                                token=tree.staff["token"]))
        return out

    with cf.ThreadPoolExecutor(max_workers=8) as ex:
        results = [r for rs in ex.map(work, range(len(ws))) for r in rs]
    assert all(r.status_code < 500 for r in results), [r.text for r in results
                                                       if r.status_code >= 500]
    allowed = {"already_submitted", "already_approved", "assignment_released", "not_submitted",
               "assignment_not_live", "claim_expired", "slot_reassigned"}
    assert all(r.status_code in (200, 201) or error_code(r) in allowed for r in results), \
        [r.text for r in results if r.status_code not in (200, 201)]
    # let the timers finish: every submitted report is auto-approved
    deadline = time.time() + 20
    while time.time() < deadline and sql.scalar(
            "SELECT count(*) FROM assignments WHERE task_id = %s AND state IN "
            "('claimed', 'submitted')", (task["id"],)):
        time.sleep(0.3)
    got = counters_match(sql, task["id"])
    assert got["claimed"] == 0 and got["submitted"] == 0, got
    assert sql.scalar("SELECT count(*) FROM ledger_txns WHERE kind = 'award' "
                      "AND (refs ->> 'task_id')::bigint = %s", (task["id"],)) == got["approved"]
    assert sql.scalar("SELECT count(*) FROM (SELECT refs ->> 'assignment_id' FROM ledger_txns "
                      "WHERE kind = 'award' AND (refs ->> 'task_id')::bigint = %s "
                      "GROUP BY 1 HAVING count(*) > 1) x", (task["id"],)) == 0
    assert got["approved"] > 0
    tree.ledger_ok()


def test_report_takes_no_task_row_lock(api, tree, sql):
    """A report on a live claim (claimed -> submitted) neither writes nor locks the task row:
    it is accepted while another transaction holds that row FOR UPDATE, and the row, its
    version and the gate stay as they were. A late sync (expired -> submitted) takes a slot
    and so does wait for the row."""
    task = tree.publish(slots=2)
    w1, w2 = tree.workers(2)
    a = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w1["token"]).json()
    before = sql.one("SELECT occupied, version, xmin::text FROM tasks WHERE id = %s",
                     (task["id"],))
    hold = psycopg2.connect(sql.conn.dsn)  # a transaction of its own (not autocommit)
    try:
        with hold.cursor() as cur:
            cur.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task["id"],))
            t0 = time.monotonic()
            r = api.post("/api/v1/reports", report_body(a["id"]), token=w1["token"])
            took = time.monotonic() - t0
            assert r.status_code == 201, r.text
            assert took < 3, took  # the statement timeout would be 5 s
            assert r.json()["gate"]["slots_version"] == before[1]
            assert r.json()["gate"]["free_slots"] == 1
        hold.rollback()
    finally:
        hold.close()
    assert sql.one("SELECT occupied, version, xmin::text FROM tasks WHERE id = %s",
                   (task["id"],)) == before
    got = counters_match(sql, task["id"])
    assert got["submitted"] == 1 and got["claimed"] == 0
    t = api.get(f"/api/v1/tasks/{task['id']}", token=tree.staff["token"]).json()
    assert t["counts"]["submitted"] == 1 and t["counts"]["claimed"] == 0
    assert t["remaining"] == 1 and t["free_slots"] == 1
    # the other worker's claim still takes the last slot and shows as claimed
    b = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w2["token"])
    assert b.status_code == 201, b.text
    t = api.get(f"/api/v1/tasks/{task['id']}", token=tree.staff["token"]).json()
    assert t["counts"]["claimed"] == 1 and t["counts"]["submitted"] == 1 and t["remaining"] == 0


def test_late_sync_races_claims_for_the_last_slot(api, tree, sql):
    """A claim expires; then its report, sent from three phones with three client report ids
    (a late sync, which needs a free slot), races three other workers claiming that slot: one
    request wins it, the others get a documented 409, never a 5xx; the counters stay exact."""
    task = tree.publish(slots=1, reward=7, claim_ttl_s=1, geofence_enforced=False)
    w0, *others = tree.workers(4)
    a = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w0["token"]).json()
    made = now()  # made on the phone while the claim was live
    deadline = time.time() + 20
    while time.time() < deadline and sql.scalar(
            "SELECT state FROM assignments WHERE id = %s", (a["id"],)) != "expired":
        time.sleep(0.2)
    assert sql.scalar("SELECT state FROM assignments WHERE id = %s", (a["id"],)) == "expired"
    barrier = threading.Barrier(6)

    def go(i):
        barrier.wait()
        if i < 3:
            return api.post("/api/v1/reports", report_body(a["id"], made_at=made),
                            token=w0["token"])
        return api.post(f"/api/v1/tasks/{task['id']}/claim", token=others[i - 3]["token"])

    with cf.ThreadPoolExecutor(max_workers=6) as ex:
        rs = list(ex.map(go, range(6)))
    codes = [r.status_code for r in rs]
    assert all(c < 500 for c in codes), [r.text for r in rs]
    assert codes.count(201) == 1, [r.text for r in rs]
    allowed = {"already_submitted", "slot_reassigned", "task_full"}
    assert all(error_code(r) in allowed for r in rs if r.status_code != 201), \
        [r.text for r in rs]
    got = counters_match(sql, task["id"])
    assert got["claimed"] + got["submitted"] == 1
    assert sql.scalar("SELECT occupied FROM tasks WHERE id = %s", (task["id"],)) == 1
    won = next(i for i, r in enumerate(rs) if r.status_code == 201)
    if won < 3:  # the late sync won: one report, the assignment is submitted
        assert got["submitted"] == 1 and got["expired"] == 0
        assert sql.scalar("SELECT count(*) FROM reports WHERE assignment_id = %s",
                          (a["id"],)) == 1
    else:
        assert got["claimed"] == 1 and got["expired"] == 1
        assert all(error_code(r) == "slot_reassigned" for r in rs[:3]), [r.text for r in rs]
    tree.ledger_ok()
