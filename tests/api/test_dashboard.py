"""The street dashboard (一屏统揽, issue 14): GET /api/v1/dashboard reads subtree counters that
the `dashboard` sweep folds from the events off their transactions (issue 12;
sql/migrations/0021_dashboard_rollups.sql, gp_dash_fold). After a scripted day of work -- tasks
in two communities, claims, reports, an approval into the objection window, a rejection, a
release, an adjustment, a counter charge and its partial refund -- and once the fold has caught
up (its staleness bound: console.dashboard_fold_interval), every figure equals what the ledger
and the work tables say, for the street and for each community; `dash_rebuild()` (which the
benchmark runs after its bulk load) gives the same counters; concurrent awards of one unit are
all counted and write no counter row in their own transactions; scope is enforced."""

import threading
import time

import jsonschema
import psycopg2
import pytest
import yaml

from gp import REPO, error_code, unique_name
from loop import Tree, bulk_workers, report_body
from mall import Street

FIGS = ["tasks_published", "slots_published", "claimed", "reported", "approved", "rejected",
        "flagged", "points_issued", "points_redeemed", "redemptions", "active_workers"]

# The truth, from the base tables, for the workers (or tasks) under a unit path, today.
TRUTH_SQL = """
WITH root AS (SELECT path FROM org_units WHERE id = %(unit)s),
today AS (SELECT (now() AT TIME ZONE 'Asia/Shanghai')::date AS d),
w AS (SELECT p.id FROM persons p JOIN org_units u ON u.id = p.unit_id, root WHERE u.path <@ root.path),
a AS (SELECT a.* FROM assignments a WHERE a.worker_id IN (SELECT id FROM w)),
day AS (SELECT (x AT TIME ZONE 'Asia/Shanghai')::date AS d FROM (SELECT now() AS x) y)
SELECT
 (SELECT count(*) FROM tasks t JOIN org_units u ON u.id = t.unit_id, root, today
   WHERE u.path <@ root.path AND (t.created_at AT TIME ZONE 'Asia/Shanghai')::date = today.d),
 (SELECT coalesce(sum(t.slots), 0) FROM tasks t JOIN org_units u ON u.id = t.unit_id, root, today
   WHERE u.path <@ root.path AND (t.created_at AT TIME ZONE 'Asia/Shanghai')::date = today.d),
 (SELECT count(*) FROM a, today WHERE (claimed_at AT TIME ZONE 'Asia/Shanghai')::date = today.d),
 (SELECT count(*) FROM a, today WHERE (submitted_at AT TIME ZONE 'Asia/Shanghai')::date = today.d),
 (SELECT count(*) FROM a, today WHERE state = 'approved'
     AND (decided_at AT TIME ZONE 'Asia/Shanghai')::date = today.d),
 (SELECT count(*) FROM a, today WHERE state = 'rejected'
     AND (decided_at AT TIME ZONE 'Asia/Shanghai')::date = today.d),
 (SELECT count(*) FROM reports r, today WHERE r.worker_id IN (SELECT id FROM w)
     AND cardinality(r.flags) > 0 AND (r.received_at AT TIME ZONE 'Asia/Shanghai')::date = today.d),
 (SELECT coalesce(sum(p.amount), 0) FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
     JOIN accounts ac ON ac.id = p.account_id, today
   WHERE t.kind IN ('award', 'adjust') AND ac.kind IN ('worker', 'worker_pending')
     AND ac.owner_id IN (SELECT id FROM w)
     AND (t.created_at AT TIME ZONE 'Asia/Shanghai')::date = today.d),
 (SELECT coalesce(sum(p.amount), 0) FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
     JOIN accounts ac ON ac.id = p.account_id, today
   WHERE t.kind IN ('capture', 'charge', 'refund') AND ac.kind = 'merchant'
     AND (t.refs ->> 'worker_id')::bigint IN (SELECT id FROM w)
     AND (t.created_at AT TIME ZONE 'Asia/Shanghai')::date = today.d),
 (SELECT count(*) FROM ledger_txns t, today WHERE t.kind IN ('capture', 'charge')
     AND (t.refs ->> 'worker_id')::bigint IN (SELECT id FROM w)
     AND (t.created_at AT TIME ZONE 'Asia/Shanghai')::date = today.d),
 (SELECT count(DISTINCT worker_id) FROM (
     SELECT worker_id FROM a, today WHERE (claimed_at AT TIME ZONE 'Asia/Shanghai')::date = today.d
     UNION SELECT worker_id FROM a, today
      WHERE (submitted_at AT TIME ZONE 'Asia/Shanghai')::date = today.d) x),
 (SELECT coalesce(sum(ac.balance), 0) FROM accounts ac
   WHERE ac.kind = 'worker_pending' AND ac.owner_id IN (SELECT id FROM w))
"""


def folded(sql, timeout=20.0):
    """Waits until the dashboard sweep has counted every queued event and every committed
    ledger transaction (it runs every console.dashboard_fold_interval, 1 s by default)."""
    deadline = time.monotonic() + timeout
    while True:
        if sql.scalar("""SELECT s.built AND NOT EXISTS (SELECT 1 FROM dash_queue)
                           AND NOT EXISTS (SELECT 1 FROM ledger_txns t
                                            WHERE (t.xid, t.id) > (coalesce(s.last_xid, '0'::xid8),
                                                                   coalesce(s.last_txn, 0)))
                           FROM dash_fold_state s"""):
            return
        assert time.monotonic() < deadline, "the dashboard fold did not catch up"
        time.sleep(0.05)


def truth(sql, unit):
    row = sql.one(TRUTH_SQL, {"unit": unit})
    out = dict(zip(FIGS, row[:len(FIGS)]))
    out["points_pending"] = row[len(FIGS)]
    return out


@pytest.fixture
def day(api, admin, sql, server):
    """A scripted day of work in a street with two communities."""
    tree = Tree(api, admin, sql)
    st = Street(api, admin, sql, server)
    tok = admin["token"]

    def unit(parent):
        r = api.post("/api/v1/units", {"parent_id": parent, "name": unique_name("u")}, token=tok)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    c2 = unit(tree.street)
    g2 = unit(c2)
    m2 = unit(g2)
    staff2 = bulk_workers(sql, g2, 1, role="grid_staff")[0]
    a = admin["person_id"]
    sql.scalar("SELECT gp_grant(%s, %s, %s, 5000, 'c2')", (a, tree.street, c2))
    sql.scalar("SELECT gp_grant(%s, %s, %s, 5000, 'g2')", (a, c2, g2))

    w1, w2, w3, w4 = tree.workers(4)
    (w5,) = bulk_workers(sql, m2, 1)

    # grid 1: three claims, two reports, one approved, one rejected, one released
    t1 = tree.publish(slots=3, reward=25)
    asg = {}
    for w in (w1, w2, w3):
        r = api.post(f"/api/v1/tasks/{t1['id']}/claim", token=w["token"])
        assert r.status_code == 201, r.text
        asg[w["id"]] = r.json()["id"]
    for w in (w1, w2):
        r = api.post("/api/v1/reports", report_body(asg[w["id"]]), token=w["token"])
        assert r.status_code == 201, r.text
    # a report far from the place is flagged (outside_geofence)
    r = api.post(f"/api/v1/assignments/{asg[w1['id']]}/approve", {}, token=tree.staff["token"])
    assert r.status_code == 200, r.text
    r = api.post(f"/api/v1/assignments/{asg[w2['id']]}/reject", {"reason": "blurry photo"},
                 token=tree.staff["token"])
    assert r.status_code == 200, r.text
    r = api.post(f"/api/v1/assignments/{asg[w3['id']]}/release", {}, token=w3["token"])
    assert r.status_code == 200, r.text

    # an objection window from now on: the next award is pending
    r = api.put(f"/api/v1/units/{tree.street}/points-policy", {"objection_period": "3 days"},
                token=tok)
    assert r.status_code == 200, r.text
    t2 = tree.publish(token=staff2["token"], unit_id=g2, slots=2, reward=10)
    r = api.post(f"/api/v1/tasks/{t2['id']}/claim", token=w5["token"])
    assert r.status_code == 201, r.text
    a5 = r.json()["id"]
    r = api.post("/api/v1/reports", report_body(a5, lat=30.70, lng=104.20), token=w5["token"])
    assert r.status_code == 201, r.text
    r = api.post(f"/api/v1/assignments/{a5}/approve", {}, token=staff2["token"])
    assert r.status_code == 200, r.text

    # an adjustment and a counter charge with a partial refund
    r = api.post("/api/v1/adjustments", {"worker_id": w4["id"], "amount": 7, "reason": "flood duty",
                                         "category": "bonus"}, token=tok)
    assert r.status_code == 201, r.text
    m, client = st.merchant()
    ch = st.charge(client, w1, 20)
    assert ch.status == 201, ch.text
    r = client.request("POST", f"/merchant/v1/charges/{ch.json()['id']}/refunds", {"amount": 5})
    assert r.status == 201, r.text
    return {"tree": tree, "c2": c2, "g2": g2, "staff2": staff2, "merchant": m,
            "workers": (w1, w2, w3, w4, w5)}


def check_schema(instance, name):
    """The answer matches its schema in docs/openapi.yaml."""
    from test_openapi import json_schema
    doc = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    jsonschema.validate(instance, {"$ref": f"#/components/schemas/{name}",
                                   "components": json_schema(doc["components"])})


def dashboard(api, token, **params):
    r = api.get("/api/v1/dashboard", params=params, token=token)
    assert r.status_code == 200, r.text
    return r.json()


def test_figures_equal_the_ledger_after_a_day_of_work(api, admin, sql, day):
    tree = day["tree"]
    folded(sql)
    d = dashboard(api, admin["token"])
    check_schema(d, "Dashboard")
    assert d["unit"]["id"] == tree.street and d["unit"]["level"] == "street"
    assert d["refresh_s"] == 30 and len(d["trend"]) == 30
    today = d["today"]
    t = truth(sql, tree.street)
    for k in FIGS:
        assert today[k] == t[k], (k, today[k], t[k])
    assert d["points_pending"] == t["points_pending"]
    # ... and what the script did, so that a "0 == 0" cannot pass
    assert today["tasks_published"] == 2 and today["slots_published"] == 5
    assert today["claimed"] == 4 and today["reported"] == 3
    assert today["approved"] == 2 and today["rejected"] == 1
    assert today["flagged"] >= 1
    assert today["points_issued"] == 25 + 10 + 7
    assert today["points_redeemed"] == 15 and today["redemptions"] == 1
    assert today["active_workers"] == 4
    assert d["points_pending"] == 10
    assert d["workers"] == 5
    assert d["trend"][-1]["date"] == d["date"]
    assert all(x[k] == 0 for x in d["trend"][:-1] for k in FIGS)
    # by community: the two children sum to the street, each equals its own truth
    kids = {c["unit_id"]: c for c in d["children"]}
    assert set(kids) == {tree.community, day["c2"]}
    for cid in kids:
        tc = truth(sql, cid)
        for k in FIGS:
            assert kids[cid][k] == tc[k], (cid, k)
    c1 = kids[tree.community]
    assert c1["completion_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert c1["workers"] == 4 and c1["points_per_worker"] == pytest.approx(32 / 4)
    assert kids[day["c2"]]["completion_rate"] == 1
    # anomalies and merchants
    assert d["anomalies"]["today"] == today["flagged"]
    assert any(i["task_id"] for i in d["anomalies"]["items"])
    assert d["redemptions"]["merchants"] == [
        {"merchant_id": day["merchant"]["id"], "name": day["merchant"]["name"], "points": 15,
         "count": 1}]
    # a community's own dashboard equals the street's child row
    d2 = dashboard(api, admin["token"], unit_id=day["c2"], days=7)
    assert len(d2["trend"]) == 7
    for k in FIGS:
        assert d2["today"][k] == kids[day["c2"]][k]
    # the rebuild from the base tables gives the same counters
    before = sql.query("SELECT * FROM dash_daily WHERE street_id = %s ORDER BY unit_id, day",
                      (tree.street,))
    sql.execute("SELECT dash_rebuild()")
    after = sql.query("SELECT * FROM dash_daily WHERE street_id = %s ORDER BY unit_id, day",
                     (tree.street,))
    assert before == after


def test_scope_and_bad_input(api, admin, sql, day):
    tree = day["tree"]
    folded(sql)
    # grid staff of the second grid see their grid, not the first community nor the street
    s2 = day["staff2"]["token"]
    d = dashboard(api, s2)
    assert d["unit"]["id"] == day["g2"]
    assert d["today"]["approved"] == 1
    for unit in (tree.community, tree.street, 999999999):
        r = api.get("/api/v1/dashboard", params={"unit_id": unit}, token=s2)
        assert r.status_code == 404 and error_code(r) == "unit_not_found", r.text
    # a worker has no dashboard
    w = day["workers"][0]
    r = api.get("/api/v1/dashboard", token=w["token"])
    assert r.status_code == 404
    r = api.get("/api/v1/dashboard")
    assert r.status_code == 401
    for bad in ({"days": 0}, {"days": 91}, {"days": "x"}, {"unit_id": "-1"}, {"unit_id": "1e3"}):
        r = api.get("/api/v1/dashboard", params=bad, token=admin["token"])
        assert r.status_code == 400, (bad, r.text)


def test_concurrent_awards_are_all_counted_off_their_transactions(api, admin, sql, server):
    """Twelve workers of one micro-grid report and are approved at the same time: before the
    fold, their transactions wrote no counter row (the queue holds their events, the counters
    are unchanged); after it, every claim, report, approval and point is counted once, on the
    micro-grid, its grid, community and street alike."""
    tree = Tree(api, admin, sql)
    folded(sql)
    workers = tree.workers(12)
    task = tree.publish(slots=12, reward=5)
    asg = {}

    def claim_and_report(w):
        r = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"])
        assert r.status_code == 201, r.text
        asg[w["id"]] = r.json()["id"]
        r = api.post("/api/v1/reports", report_body(asg[w["id"]]), token=w["token"])
        assert r.status_code == 201, r.text

    def approve(w):
        r = api.post(f"/api/v1/assignments/{asg[w['id']]}/approve", {}, token=tree.staff["token"])
        assert r.status_code == 200, r.text

    for step in (claim_and_report, approve):
        errors = []

        def run(w, step=step):
            try:
                step(w)
            except AssertionError as e:  # reported below, in the test's thread
                errors.append(e)
        threads = [threading.Thread(target=run, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
    folded(sql)
    unit = sql.scalar("SELECT unit_id FROM persons WHERE id = %s", (workers[0]["id"],))
    path = sql.scalar("SELECT ltree2text(path) FROM org_units WHERE id = %s", (unit,))
    for u in [int(x) for x in path.split(".")]:
        t = truth(sql, u)
        row = sql.one("""SELECT claimed, reported, approved, points_issued, active_workers
                           FROM dash_daily WHERE unit_id = %s
                            AND day = (now() AT TIME ZONE 'Asia/Shanghai')::date""", (u,))
        assert row == (t["claimed"], t["reported"], t["approved"], t["points_issued"],
                       t["active_workers"]), (u, row, t)
        assert row[2] >= 12 and row[3] >= 60
    # the hot transactions only appended: a claim, report and approval leave queue rows and
    # no counter change until the fold (the sweep is paused by holding its state row)
    w = tree.workers(1)[0]
    t2 = tree.publish(slots=1, reward=3)
    before = sql.one("""SELECT claimed, reported, approved, points_issued FROM dash_daily
                         WHERE unit_id = %s AND day = (now() AT TIME ZONE 'Asia/Shanghai')::date""",
                     (tree.street,))
    hold = psycopg2.connect(sql.conn.dsn)  # a transaction of its own (not autocommit)
    with hold.cursor() as cur:
        cur.execute("SELECT 1 FROM dash_fold_state FOR UPDATE")
        r = api.post(f"/api/v1/tasks/{t2['id']}/claim", token=w["token"])
        assert r.status_code == 201, r.text
        a = r.json()["id"]
        r = api.post("/api/v1/reports", report_body(a), token=w["token"])
        assert r.status_code == 201, r.text
        r = api.post(f"/api/v1/assignments/{a}/approve", {}, token=tree.staff["token"])
        assert r.status_code == 200, r.text
        time.sleep(1.5)  # longer than the fold interval: the sweep finds its state row busy
        mid = sql.one("""SELECT claimed, reported, approved, points_issued FROM dash_daily
                          WHERE unit_id = %s AND day = (now() AT TIME ZONE 'Asia/Shanghai')::date""",
                      (tree.street,))
        assert mid == before
        assert sql.scalar("SELECT count(*) FROM dash_queue WHERE ref = %s", (w["id"],)) == 3
    hold.rollback()
    hold.close()
    folded(sql)
    after = sql.one("""SELECT claimed, reported, approved, points_issued FROM dash_daily
                        WHERE unit_id = %s AND day = (now() AT TIME ZONE 'Asia/Shanghai')::date""",
                    (tree.street,))
    assert after == (before[0] + 1, before[1] + 1, before[2] + 1, before[3] + 3)
