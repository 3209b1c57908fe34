"""The server side of the staff console (issue 14, part 4 and the console's own routes):
rankings served from the Redis boards (and no rank for a worker who earned nothing), manual
adjustments on the public points board with their reason category, the public org pickers,
closing an empty settlement period, grid staff reviewing community-wide tasks done in their
grid, the roster import (dry run, all-or-nothing, idempotent) and XLSX exports read back with
openpyxl."""

import datetime as dt
import time

import pytest

from gp import error_code, unique_name
from loop import Tree, bulk_workers, report_body
from mall import Street


@pytest.fixture
def tree(api, admin, sql):
    return Tree(api, admin, sql)


def month_now():
    return dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m")


def do_task(api, tree, w, reward=10, staff=None):
    t = tree.publish(slots=1, reward=reward)
    a = api.post(f"/api/v1/tasks/{t['id']}/claim", token=w["token"])
    assert a.status_code == 201, a.text
    a = a.json()
    r = api.post("/api/v1/reports", report_body(a["id"]), token=w["token"])
    assert r.status_code == 201, r.text
    r = api.post(f"/api/v1/assignments/{a['id']}/approve", {}, token=(staff or tree.staff)["token"])
    assert r.status_code == 200, r.text
    return a


def rank(api, w, scope="grid", period="all"):
    r = api.get("/api/v1/workers/me/rank", params={"scope": scope, "period": period},
                token=w["token"])
    assert r.status_code == 200, r.text
    return r.json()


def test_rank_comes_from_the_redis_board_and_an_unranked_worker_has_none(api, tree, redis):
    w1, w2, w3 = tree.workers(3)
    # nobody earned anything: no rank, from either path
    r = rank(api, w1)
    assert r["rank"] is None and r["points"] == 0 and r["total"] == 0
    do_task(api, tree, w1, reward=30)
    do_task(api, tree, w2, reward=10)
    # the first read may build the board; then it is served from Redis
    rank(api, w1)
    r = rank(api, w1)
    assert r["source"] == "cache", r
    assert (r["rank"], r["points"], r["total"]) == (1, 30, 2)
    r = rank(api, w2)
    assert (r["rank"], r["points"], r["total"], r["source"]) == (2, 10, 2, "cache")
    # an unranked worker on a complete board: null, not total + 1
    r = rank(api, w3)
    assert r["source"] == "cache" and r["rank"] is None and r["points"] == 0
    # the award's effect keeps the board fresh: no rebuild needed to see a new leader
    do_task(api, tree, w2, reward=50)
    r = rank(api, w2)
    assert (r["rank"], r["points"], r["source"]) == (1, 60, "cache")
    assert rank(api, w1)["rank"] == 2
    # the month board and the street board agree
    r = rank(api, w2, scope="street", period=month_now())
    assert (r["rank"], r["points"]) == (1, 60)
    # a board lost in Redis: answered from the ledger, then rebuilt
    for k in redis.keys(f"rank:{{{tree.grid}}}:*"):
        redis.delete(k)
    r = rank(api, w1)
    assert (r["rank"], r["points"], r["source"]) == (2, 30, "ledger")
    deadline = time.time() + 5
    while rank(api, w1)["source"] != "cache":
        assert time.time() < deadline
        time.sleep(0.05)
    assert rank(api, w3)["rank"] is None


def test_board_lists_adjustments_with_their_category(api, admin, tree, sql):
    tree.fund(tree.street, 1000)
    w1, w2 = tree.workers(2)
    do_task(api, tree, w1, reward=20)
    r = api.post("/api/v1/adjustments", {"worker_id": w2["id"], "amount": 15,
                                         "reason": "helped in the flood (private note)",
                                         "category": "bonus"}, token=admin["token"])
    assert r.status_code == 201, r.text
    assert r.json()["category"] == "bonus"
    r = api.post("/api/v1/adjustments", {"worker_id": w1["id"], "amount": -5,
                                         "reason": "duplicate report"}, token=admin["token"])
    assert r.status_code == 201, r.text
    for bad in ("Bonus", "", "x" * 17, 3, ["bonus"]):
        r = api.post("/api/v1/adjustments", {"worker_id": w1["id"], "amount": 1, "reason": "r",
                                             "category": bad}, token=admin["token"])
        assert r.status_code == 400 and r.json()["error"]["field"] == "category", (bad, r.text)
    r = api.get(f"/api/v1/public/grids/{tree.grid}/points-board", params={"month": month_now()},
                token=None)
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["grid"]["community"]["id"] == tree.community
    adj = b["adjustments"]
    assert [(x["amount"], x["category"]) for x in adj] == [(15, "bonus"), (-5, "other")]
    names = {sql.scalar("SELECT name FROM persons WHERE id = %s", (w["id"],)) for w in (w1, w2)}
    assert all(x["name"] not in names and x["name"].endswith("*") for x in adj)
    assert "flood" not in r.text and "duplicate" not in r.text
    (item,) = b["items"]
    assert item["adjusted"] is True
    # another month: none
    r = api.get(f"/api/v1/public/grids/{tree.grid}/points-board", params={"month": "2001-01"},
                token=None)
    assert r.json()["adjustments"] == [] and r.json()["items"] == []


def test_public_units_for_the_board_pickers(api, tree):
    r = api.get("/api/v1/public/units", token=None)
    assert r.status_code == 200, r.text
    assert tree.street in [u["id"] for u in r.json()["items"]]
    r = api.get("/api/v1/public/units", params={"parent_id": tree.street}, token=None)
    assert r.json()["items"] == [{"id": tree.community, "name": r.json()["items"][0]["name"],
                                  "level": "community"}]
    r = api.get("/api/v1/public/units", params={"parent_id": tree.community}, token=None)
    assert [u["id"] for u in r.json()["items"]] == [tree.grid]
    assert set(r.json()["items"][0]) == {"id", "name", "level"}
    # micro-grids and people are not listed; bad input is a 400
    r = api.get("/api/v1/public/units", params={"parent_id": tree.grid}, token=None)
    assert r.status_code == 404
    for bad in ("0", "-3", "abc", "99999999999999999999"):
        r = api.get("/api/v1/public/units", params={"parent_id": bad}, token=None)
        assert r.status_code == 400, (bad, r.text)


def test_closing_an_empty_settlement_period_says_so(api, admin, sql, server):
    st = Street(api, admin, sql, server)
    m, client = st.merchant()
    url = f"/api/v1/merchants/{m['id']}/settlements"
    r = api.post(url, {}, token=st.token)
    assert r.status_code == 409 and error_code(r) == "nothing_to_settle", r.text
    assert sql.scalar("SELECT count(*) FROM settlements WHERE merchant_id = %s", (m["id"],)) == 0
    (w,) = st.workers(1, points=100)
    assert st.charge(client, w, 30).status == 201
    r = api.post(url, {}, token=st.token)
    assert r.status_code == 201, r.text
    assert r.json()["totals"]["net"] == 30
    # nothing since: the next close is refused again, and the open period keeps its start
    r = api.post(url, {}, token=st.token)
    assert r.status_code == 409 and error_code(r) == "nothing_to_settle", r.text
    assert sql.scalar("SELECT count(*) FROM settlements WHERE merchant_id = %s", (m["id"],)) == 1


def test_grid_staff_see_reports_of_community_wide_tasks_done_in_their_grid(api, admin, sql):
    tree = Tree(api, admin, sql)
    # a second grid of the same community, with its staff and a worker
    r = api.post("/api/v1/units", {"parent_id": tree.community, "name": unique_name("g")},
                 token=admin["token"])
    g2 = r.json()["id"]
    staff2 = bulk_workers(sql, g2, 1, role="grid_staff")[0]
    cadmin = bulk_workers(sql, tree.community, 1, role="community_admin")[0]
    a = admin["person_id"]
    sql.scalar("SELECT gp_issue(%s, %s, 1000, 'x')", (a, tree.street))
    sql.scalar("SELECT gp_grant(%s, %s, %s, 1000, 'x')", (a, tree.street, tree.community))
    (w,) = tree.workers(1)
    t = tree.publish(token=cadmin["token"], unit_id=tree.community, slots=2, reward=10)
    asg = api.post(f"/api/v1/tasks/{t['id']}/claim", token=w["token"]).json()
    body = report_body(asg["id"])
    assert api.post("/api/v1/reports", body, token=w["token"]).status_code == 201
    # the worker's grid staff see it in their queue and in detail, but do not decide
    q = api.get("/api/v1/reviews", token=tree.staff["token"]).json()["items"]
    (item,) = [i for i in q if i["id"] == asg["id"]]
    assert item["can_decide"] is False
    r = api.get(f"/api/v1/assignments/{asg['id']}", token=tree.staff["token"])
    assert r.status_code == 200 and r.json()["report"]
    r = api.get("/api/v1/reviews", params={"unit_id": tree.grid}, token=tree.staff["token"])
    assert asg["id"] in [i["id"] for i in r.json()["items"]]
    r = api.post(f"/api/v1/assignments/{asg['id']}/approve", {}, token=tree.staff["token"])
    assert r.status_code in (403, 404)
    # the other grid's staff see nothing of it
    q = api.get("/api/v1/reviews", token=staff2["token"]).json()["items"]
    assert asg["id"] not in [i["id"] for i in q]
    assert api.get(f"/api/v1/assignments/{asg['id']}", token=staff2["token"]).status_code == 404
    # the community admin decides
    q = api.get("/api/v1/reviews", token=cadmin["token"]).json()["items"]
    (item,) = [i for i in q if i["id"] == asg["id"]]
    assert item["can_decide"] is True
    r = api.post(f"/api/v1/assignments/{asg['id']}/approve", {}, token=cadmin["token"])
    assert r.status_code == 200, r.text


def test_demo_logins_are_kept_in_a_private_file(cli, api, tmp_path):
    path = tmp_path / "demo-logins.txt"
    path.write_text("stale")
    path.chmod(0o644)
    p = cli("demo-data", "--credentials", str(path))
    if "already loaded" in p.stdout:
        pytest.skip("the demo street was loaded earlier in this database")
    assert (path.stat().st_mode & 0o777) == 0o600
    text = path.read_text()
    assert "stale" not in text and text in p.stdout
    assert f"written to {path}" in p.stdout
    logins = {}
    for line in text.splitlines():
        if "/" in line and line.strip()[0].isalpha():
            who, _, pw = line.rpartition("/")
            logins[who.split()[0]] = (who.split()[-1].split("..")[0], pw.strip())
    # the merchant staff login works and reaches the demo merchant's console
    phone, pw = logins["merchant"]
    assert phone == "13940000001"
    r = api.post("/api/v1/auth/login", {"phone": phone, "password": pw}, token=None)
    assert r.status_code == 200, r.text
    r = api.get("/api/v1/console/merchants", token=r.json()["token"])
    assert r.status_code == 200 and len(r.json()["items"]) == 1, r.text
    # a second run tells where the logins are and prints them again
    p = cli("demo-data", "--credentials", str(path))
    assert "already loaded" in p.stdout and "13940000001" in p.stdout


def roster(tree, n=200, base=None):
    """n rows as the console posts them after parsing a file (row 1 is the header)."""
    base = base or 17000000000 + (time.time_ns() // 1000) % 900000000
    rows = []
    for i in range(n):
        rows.append({"row": i + 2, "phone": str(base + i), "name": f"居民{i:03d}",
                     "unit_id": tree.micro, "tags": ["volunteer_firefighter"] if i % 5 == 0 else [],
                     "role": "volunteer" if i % 7 == 0 else "worker", "external_id": f"R{base + i}"})
    return rows


def import_(api, token, rows, dry_run=False, **kw):
    return api.post("/api/v1/people/import", {"dry_run": dry_run, "rows": rows, **kw}, token=token)


def test_roster_import_dry_run_all_or_nothing_and_idempotent(api, tree, sql):
    tok = tree.staff["token"]
    rows = roster(tree)
    good = [dict(r) for r in rows]
    bad = [dict(r) for r in rows]
    bad[10]["phone"] = "12345"                       # row 12
    bad[57]["name"] = ""                             # row 59
    bad[150]["phone"] = bad[149]["phone"]            # row 152: the same phone as row 151
    before = sql.scalar("SELECT count(*) FROM persons")
    r = import_(api, tok, bad, dry_run=True)
    assert r.status_code == 200, r.text
    d = r.json()
    from test_dashboard import check_schema
    check_schema(d, "ImportResult")
    assert d["dry_run"] is True and d["rows"] == 200
    assert [(e["row"], e["field"], e["code"]) for e in d["errors"]] == [
        (12, "phone", "invalid_field"), (59, "name", "invalid_field"), (152, "phone", "duplicate_row")]
    assert "151" in d["errors"][2]["message"]
    assert d["created"] == 197 and d["updated"] == 0 and d["unchanged"] == 0
    # the real import of the bad file: 422, the same errors, nothing written
    r = import_(api, tok, bad)
    assert r.status_code == 422 and error_code(r) == "import_invalid", r.text
    assert [e["row"] for e in r.json()["error"]["errors"]] == [12, 59, 152]
    assert sql.scalar("SELECT count(*) FROM persons") == before
    # the corrected file creates 200 people, with their roles, tags and external ids
    r = import_(api, tok, good)
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["created"], d["updated"], d["unchanged"], d["errors"]) == (200, 0, 0, [])
    assert sql.scalar("SELECT count(*) FROM persons") == before + 200
    ids = [p["id"] for p in d["people"]]
    assert all(ids) and len(set(ids)) == 200
    assert sql.scalar("SELECT count(*) FROM role_grants WHERE person_id = ANY(%s) AND role = 'volunteer'",
                      (ids,)) == len([x for x in good if x["role"] == "volunteer"])
    assert sql.scalar("SELECT count(*) FROM person_external_ids WHERE person_id = ANY(%s)", (ids,)) == 200
    # nobody can log in with a password they never had
    r = api.post("/api/v1/auth/login", {"phone": good[0]["phone"], "password": "!"}, token=None)
    assert r.status_code == 401
    # re-uploading the same roster changes nothing
    snap = sql.query("SELECT id, name, tags, unit_id, updated_at FROM persons WHERE id = ANY(%s) "
                     "ORDER BY id", (ids,))
    audit = sql.scalar("SELECT count(*) FROM audit_log")
    r = import_(api, tok, good)
    assert r.status_code == 200, r.text
    assert (r.json()["created"], r.json()["updated"], r.json()["unchanged"]) == (0, 0, 200)
    assert sql.query("SELECT id, name, tags, unit_id, updated_at FROM persons WHERE id = ANY(%s) "
                     "ORDER BY id", (ids,)) == snap
    assert sql.scalar("SELECT count(*) FROM audit_log") == audit
    # a changed name is an update, the rest unchanged
    good[3]["name"] = "改名了"
    d = import_(api, tok, good, dry_run=True).json()
    assert (d["created"], d["updated"], d["unchanged"]) == (0, 1, 199)
    d = import_(api, tok, good).json()
    assert (d["created"], d["updated"], d["unchanged"]) == (0, 1, 199)
    assert sql.scalar("SELECT name FROM persons WHERE phone = %s", (good[3]["phone"],)) == "改名了"


def test_roster_import_scope_and_hostile_input(api, tree, admin, sql):
    tok = tree.staff["token"]
    (w,) = tree.workers(1)
    # a unit outside the staff's grid, a person of another street, an unknown column
    other = api.post("/api/v1/units", {"parent_id": tree.community, "name": unique_name("g")},
                     token=admin["token"]).json()["id"]
    rows = [{"row": 2, "phone": "17900000001", "name": "甲", "unit_id": other},
            {"row": 3, "phone": w["phone"], "name": "乙", "unit_id": tree.micro},
            {"row": 4, "phone": "17900000002", "name": "丙", "unit_id": tree.micro, "salary": 1},
            {"row": 5, "phone": "17900000003", "name": "丁", "unit_path": "nowhere/at/all"},
            {"row": 6, "phone": "17900000004", "name": "戊", "unit_id": tree.micro, "role": "street_admin"},
            {"row": 7, "phone": "17900000005", "name": "己", "unit_id": tree.micro, "tags": "x"},
            {"phone": "17900000006", "name": "庚", "unit_id": tree.micro},
            "not a row"]
    d = import_(api, tok, rows, dry_run=True).json()
    got = {(e["row"], e["field"], e["code"]) for e in d["errors"]}
    assert got == {(2, "unit_id", "unit_not_found"), (4, "salary", "unknown_field"),
                   (5, "unit_path", "unit_not_found"), (6, "role", "invalid_field"),
                   (7, "tags", "invalid_field"), (7, "row", "missing_field"),
                   (8, None, "invalid_field")}, d["errors"]
    # w is in the staff's own grid: a re-import of them with their data is "updated" (name)
    assert [p for p in d["people"] if p["row"] == 3][0]["outcome"] == "updated"
    # a unit path works; a worker cannot import
    d = import_(api, tok, [{"row": 2, "phone": "17900000007", "name": "辛",
                            "unit_path": "/".join(sql.scalar(
                                "SELECT string_agg(name, '/' ORDER BY nlevel(path)) FROM org_units "
                                "WHERE path @> (SELECT path FROM org_units WHERE id = %s)",
                                (tree.micro,)).split("/"))}], dry_run=True).json()
    assert d["errors"] == [] and d["created"] == 1
    r = import_(api, w["token"], [{"row": 2, "phone": "17900000008", "name": "壬", "unit_id": tree.micro}])
    assert r.status_code == 403
    for body in ({}, {"rows": []}, {"rows": {}}, {"rows": [], "extra": 1}, [1, 2]):
        r = api.post("/api/v1/people/import", body, token=tok)
        assert r.status_code == 400, (body, r.text)
    r = api.request("POST", "/api/v1/people/import", token=tok, body=b"phone,name\n1,2",
                    headers={"Content-Type": "text/csv"})
    assert r.status_code == 415
    r = api.request("POST", "/api/v1/people/import", token=tok, body=b'{"rows": [',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_xlsx_statement_read_back_equals_the_api(api, admin, tree, sql, make_server):
    import io

    import openpyxl

    tree.fund(tree.street, 1000)
    w1, w2 = tree.workers(2)
    do_task(api, tree, w1, reward=25)
    do_task(api, tree, w1, reward=5)
    r = api.post("/api/v1/adjustments", {"worker_id": w1["id"], "amount": -3,
                                         "reason": "逗号, \"引号\" and =1+1"}, token=admin["token"])
    assert r.status_code == 201, r.text
    items = []
    cursor = None
    while True:
        params = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.get(f"/api/v1/workers/{w1['id']}/statement", params=params,
                       token=tree.staff["token"]).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(items) == 3
    for path in (f"/api/v1/workers/{w1['id']}/statement", f"/audit/v1/workers/{w1['id']}/statement"):
        r = api.get(path, params={"format": "xlsx"}, token=admin["token"])
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        assert int(r.headers["Content-Length"]) == len(r.content) > 1000
        assert f"statement-{w1['id']}.xlsx" in r.headers["Content-Disposition"]
        wb = openpyxl.load_workbook(io.BytesIO(r.content), read_only=True)
        ws = wb["statement"]
        got = list(ws.iter_rows(values_only=True))
        assert got[0] == ("id", "created_at", "kind", "account", "amount", "balance_after",
                          "txn_id", "memo")
        want = [(i["id"], i["created_at"], i["kind"], i["account"], i["amount"],
                 i["balance_after"], i["txn_id"], i["memo"]) for i in items]
        assert got[1:] == want
    # the worker themself, a window, and what others may not read
    r = api.get("/api/v1/workers/me/statement", params={"format": "xlsx", "kind": "adjust"},
                token=w1["token"])
    rows = list(openpyxl.load_workbook(io.BytesIO(r.content)).active.iter_rows(values_only=True))
    assert len(rows) == 2 and rows[1][2] == "adjust" and rows[1][4] == -3
    r = api.get(f"/api/v1/workers/{w1['id']}/statement", params={"format": "xlsx"},
                token=w2["token"])
    assert r.status_code == 404
    for bad in ({"format": "xls"}, {"format": "xlsx", "kind": "DROP"}, {"format": "xlsx", "from": "x"}):
        r = api.get(f"/api/v1/workers/{w1['id']}/statement", params=bad, token=admin["token"])
        assert r.status_code == 400, (bad, r.text)
    # past console.export_max_rows: 413, with no workbook built
    small = make_server(env={"GRIDPOINTS_CONSOLE_EXPORT_MAX_ROWS": "2"})
    r = api(small).get(f"/api/v1/workers/{w1['id']}/statement", params={"format": "xlsx"},
                       token=admin["token"])
    assert r.status_code == 413 and error_code(r) == "export_too_large", r.text
