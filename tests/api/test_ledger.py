"""The points ledger through the API: budgets, receipts, idempotency, concurrency against a
budget, a random concurrent mix checked against every invariant, and Redis as a disposable
cache (flush, stop, stale writes, rebuild)."""

import concurrent.futures as cf
import random
import threading
import time
import uuid

import pytest

from gp import error_code
from loop import Tree, iso, now, report_body
import datetime as dt

FAR = iso(now() + dt.timedelta(days=30))


@pytest.fixture
def tree(api, admin, sql):
    return Tree(api, admin, sql, budget=0)


def issue(api, admin, unit, amount, key=None, memo="seed"):
    return api.post("/api/v1/budgets/issue", {"unit_id": unit, "amount": amount, "memo": memo},
                    token=admin["token"], idempotency_key=key)


def grant(api, admin, src, dst, amount, key=None):
    return api.post("/api/v1/budgets/grants",
                    {"from_unit_id": src, "to_unit_id": dst, "amount": amount},
                    token=admin["token"], idempotency_key=key)


def test_budgets_receipts_and_idempotency(api, admin, tree, sql):
    key = str(uuid.uuid4())
    r1 = issue(api, admin, tree.street, 1000, key=key)
    assert r1.status_code == 201, r1.text
    txn = r1.json()["txn_id"]
    # the same key and body: the stored first response, no second effect
    r2 = issue(api, admin, tree.street, 1000, key=key)
    assert r2.status_code in (200, 201) and r2.json()["txn_id"] == txn
    assert r2.json().get("idempotent_replay") is True
    # the same key, another body: 422
    r3 = issue(api, admin, tree.street, 999, key=key)
    assert r3.status_code == 422 and error_code(r3) == "idempotency_key_reused"
    assert sql.scalar("SELECT count(*) FROM ledger_txns WHERE id = %s", (txn,)) == 1
    # grants down the tree, and what staff see
    assert grant(api, admin, tree.street, tree.community, 600).status_code == 201
    assert grant(api, admin, tree.community, tree.grid, 400).status_code == 201
    r = grant(api, admin, tree.community, tree.grid, 10 ** 6)
    assert r.status_code == 409 and error_code(r) == "insufficient_budget"
    r = api.get("/api/v1/budgets", params={"unit_id": tree.street}, token=admin["token"])
    assert r.status_code == 200, r.text
    # the grid staff can neither issue nor grant upwards
    r = issue(api, {"token": tree.staff["token"]}, tree.street, 5)
    assert r.status_code in (403, 404)
    tree.ledger_ok()


def test_publishes_against_a_budget_for_40(api, admin, tree, sql):
    """100 concurrent publishes, each reserving 10 points, against a budget of 400."""
    tree.fund(tree.grid, 400)
    barrier = threading.Barrier(20)

    def publish(i):
        if i < 20:
            barrier.wait()
        body = {"unit_id": tree.grid, "title": f"t{i}", "category": "c", "reward": 10, "slots": 1,
                "ends_at": FAR, "claim_ttl_s": 60, "review_window_s": 60}
        return api.post("/api/v1/tasks", body, token=tree.staff["token"])

    with cf.ThreadPoolExecutor(max_workers=20) as ex:
        rs = list(ex.map(publish, range(100)))
    codes = [r.status_code for r in rs]
    assert codes.count(201) == 40, codes
    assert codes.count(409) == 60
    assert all(error_code(r) == "insufficient_budget" for r in rs if r.status_code == 409)
    assert sql.scalar("SELECT balance FROM accounts WHERE kind = 'budget' AND owner_id = %s",
                      (tree.grid,)) == 0
    tree.ledger_ok()


def test_adjustments_need_street_admin_and_reason(api, admin, tree, sql):
    tree.fund(tree.street, 100)
    (w,) = tree.workers(1)
    r = api.post("/api/v1/adjustments", {"worker_id": w["id"], "amount": 30, "reason": ""},
                 token=admin["token"])
    assert r.status_code == 400
    r = api.post("/api/v1/adjustments", {"worker_id": w["id"], "amount": 30, "reason": "recount"},
                 token=tree.staff["token"])
    assert r.status_code in (403, 404)
    r = api.post("/api/v1/adjustments", {"worker_id": w["id"], "amount": 30, "reason": "recount"},
                 token=admin["token"])
    assert r.status_code == 201, r.text
    assert r.json()["txn_id"]
    r = api.post("/api/v1/adjustments", {"worker_id": w["id"], "amount": -31, "reason": "too much"},
                 token=admin["token"])
    assert r.status_code == 409 and error_code(r) == "insufficient_points"
    assert api.get("/api/v1/workers/me/balance", token=w["token"]).json()["available"] == 30
    assert sql.scalar("SELECT count(*) FROM audit_log WHERE action LIKE 'ledger.adjust%%' "
                      "OR action LIKE 'adjust%%'") >= 1
    # statement and points for the worker; another worker cannot read them
    st = api.get("/api/v1/workers/me/statement", token=w["token"]).json()
    assert st["items"][0]["amount"] == 30
    (other,) = tree.workers(1)
    assert api.get(f"/api/v1/workers/{w['id']}/statement", token=other["token"]).status_code == 404
    assert api.get(f"/api/v1/workers/{w['id']}/balance", token=other["token"]).status_code == 404
    r = api.get(f"/api/v1/workers/{w['id']}/points", token=tree.staff["token"])
    assert r.status_code == 200 and r.json()["available"] == 30
    r = api.get("/api/v1/workers/me/rank", params={"scope": "street", "period": "all"},
                token=w["token"])
    assert r.status_code == 200, r.text
    r = api.get("/api/v1/workers/me/rank", params={"scope": "planet"}, token=w["token"])
    assert r.status_code == 400


def test_random_concurrent_mix(api, admin, tree, sql):
    """10,000 operations from many clients -- grants, publishes, claims, reports, approvals,
    adjustments, balance reads -- then every invariant of the ledger holds."""
    tree.fund(tree.grid, 2_000_000)
    tree.fund(tree.street, 100_000)
    workers = tree.workers(120)
    rng = random.Random(4)
    tasks = [tree.publish(slots=30, reward=rng.randint(1, 9)) for _ in range(8)]
    lock = threading.Lock()
    claimed = []  # (assignment id, worker)
    counts = {"ok": 0, "4xx": 0, "5xx": 0}

    def op(i):
        r_ = random.Random(i)
        w = r_.choice(workers)
        kind = r_.random()
        if kind < 0.30:
            t = r_.choice(tasks)
            r = api.post(f"/api/v1/tasks/{t['id']}/claim", token=w["token"])
            if r.status_code == 201:
                with lock:
                    claimed.append((r.json()["id"], w))
        elif kind < 0.45 and claimed:
            with lock:
                aid, ww = claimed.pop(r_.randrange(len(claimed)))
            r = api.post("/api/v1/reports", report_body(aid), token=ww["token"])
            if r.status_code == 201 and r_.random() < 0.7:
                r = api.post(f"/api/v1/assignments/{aid}/approve", {}, token=tree.staff["token"])
        elif kind < 0.55:
            r = grant(api, admin, tree.community, tree.grid, r_.randint(1, 50),
                      key=str(r_.randint(0, 300)))  # some keys repeat: replays or 422s
        elif kind < 0.62:
            r = api.post("/api/v1/adjustments",
                         {"worker_id": w["id"], "amount": r_.randint(-20, 40), "reason": "mix"},
                         token=admin["token"])
        elif kind < 0.66:
            r = api.post("/api/v1/tasks", {"unit_id": tree.grid, "title": f"m{i}", "category": "c",
                                           "reward": r_.randint(1, 5), "slots": r_.randint(1, 3),
                                           "ends_at": FAR, "claim_ttl_s": 3600,
                                           "review_window_s": 3600}, token=tree.staff["token"])
        else:
            r = api.get("/api/v1/workers/me/balance", token=w["token"])
        with lock:
            counts["5xx" if r.status_code >= 500 else "4xx" if r.status_code >= 400 else "ok"] += 1

    with cf.ThreadPoolExecutor(max_workers=16) as ex:
        list(ex.map(op, range(10_000)))
    assert counts["5xx"] == 0, counts
    assert counts["ok"] > 3000, counts
    tree.ledger_ok()
    # every cached balance equals the ledger's
    for w in workers[:40]:
        cached = api.get("/api/v1/workers/me/balance", token=w["token"]).json()
        assert cached["available"] == tree.balance(w["id"]), (w, cached)


def bal_key(worker):
    return f"bal:{{{worker}}}"


def test_redis_flush_stop_and_rebuild(api, admin, tree, sql, redis, services, cli):
    tree.fund(tree.street, 1000)
    ws = tree.workers(5)
    for i, w in enumerate(ws):
        r = api.post("/api/v1/adjustments", {"worker_id": w["id"], "amount": 10 + i, "reason": "x"},
                     token=admin["token"])
        assert r.status_code == 201
    # FLUSHALL: reads are still right at once (the ledger answers on a miss)
    redis.flushall()
    for i, w in enumerate(ws):
        b = api.get("/api/v1/workers/me/balance", token=w["token"]).json()
        assert b["available"] == 10 + i
    # a stale write is refused by the guard: plant a value "from the future", then a real
    # commit at an older version must not overwrite it...
    redis.hset(bal_key(ws[0]["id"]), mapping={"a": "777", "p": "0", "v": "999999"})
    r = api.post("/api/v1/adjustments", {"worker_id": ws[0]["id"], "amount": 1, "reason": "x"},
                 token=admin["token"])
    assert r.status_code == 201
    assert redis.hget(bal_key(ws[0]["id"]), "a") == "777"
    # ...and rebuild-cache reports and fixes that difference (and refills what is missing)
    out = cli("rebuild-cache").stdout
    assert str(ws[0]["id"]) in out
    b = api.get("/api/v1/workers/me/balance", token=ws[0]["token"]).json()
    assert b["available"] == 11
    again = cli("rebuild-cache", "--dry-run").stdout
    assert str(ws[0]["id"]) not in again.replace("fixes=0", "")
    # Redis stopped: writes still succeed, reads come from PostgreSQL
    services.stop_redis()
    try:
        r = api.post("/api/v1/adjustments", {"worker_id": ws[1]["id"], "amount": 5, "reason": "x"},
                     token=admin["token"])
        assert r.status_code == 201, r.text
        b = api.get("/api/v1/workers/me/balance", token=ws[1]["token"]).json()
        assert b["available"] == 16 and b.get("source") != "cache"
    finally:
        services.start()
    tree.ledger_ok()
