"""Care visits from the red / yellow / blue lists (docs/CARE.md) through the API: residents
sealed at rest, scope and the audit of record openings, the schedule with short intervals in
the test policy (seconds), offline visits applied once, follow-ups, coverage, retention, and
exactly-once escalation across three instances with a kill -9."""

import concurrent.futures as cf
import datetime as dt
import secrets
import subprocess
import threading
import time

import pytest

from gp import error_code, unique_name
from loop import Tree, bulk_workers, iso, now

HOME = (30.6570, 104.0800)


def wait_for(pred, timeout=15.0, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def id_number():
    return "510104" + "".join(secrets.choice("0123456789") for _ in range(11)) + "X"


def phone():
    return "139" + "".join(secrets.choice("0123456789") for _ in range(8))


class Care(Tree):
    """A street, community, grid and micro-grid (Tree), two workers of the micro-grid, a grid
    staff member, a funded care budget and a policy whose intervals are seconds."""

    def __init__(self, api, admin, sql, red=(3, 2), yellow=(6, 2), blue=(9, 3)):
        super().__init__(api, admin, sql)
        self.w1, self.w2 = self.workers(2)
        self.policy(red=red, yellow=yellow, blue=blue)
        r = api.post(f"/api/v1/care/budgets/{self.grid}/fund", {"amount": 1000, "memo": "care"},
                     token=self.staff["token"])
        assert r.status_code == 201, r.text

    def policy(self, **colours):
        body = {"colours": {c: {"every_s": e, "grace_s": g, "points": 5}
                            for c, (e, g) in colours.items()}}
        r = self.api.put(f"/api/v1/care/policies/{self.street}", body, token=self.admin["token"])
        assert r.status_code == 200, r.text
        return r.json()

    def resident(self, colour="red", worker=None, backup=None, **over):
        body = {"unit_id": self.micro, "colour": colour, "categories": ["living_alone"],
                "worker_id": (worker or self.w1)["id"], "name": "张" + unique_name("x")[-6:],
                "phone": phone(), "address": "锦江区东风路12号3栋2单元501",
                "id_number": id_number(), "health_notes": "糖尿病，需按时服药",
                "lat": HOME[0], "lng": HOME[1]}
        if backup:
            body["backup_id"] = backup["id"]
        body.update(over)
        r = self.api.post("/api/v1/care/residents", body, token=self.staff["token"])
        assert r.status_code == 201, r.text
        out = r.json()
        out["_plain"] = body
        return out

    def visit(self, resident_id, worker=None, outcome="well", cvid=None, at=None, **over):
        body = {"resident_id": resident_id, "client_visit_id": cvid or secrets.token_hex(8),
                "made_at": iso(at or now()), "lat": HOME[0], "lng": HOME[1],
                "outcome": outcome, "notes": "精神不错"}
        if outcome == "needs_help":
            body["help_kind"] = "meals"
        body.update(over)
        return self.api.post("/api/v1/care/visits", body, token=(worker or self.w1)["token"])

    def dues(self, resident_id):
        return self.sql.query("SELECT id, state, reason, escalated_at IS NOT NULL, due_at "
                              "FROM care_dues WHERE resident_id = %s ORDER BY id", (resident_id,))


@pytest.fixture
def care(api, admin, sql):
    return Care(api, admin, sql)


def test_privacy_scope_and_audit(api, care, sql, services, make_admin):
    res = care.resident(backup=care.w2)
    plain = res["_plain"]
    # staff: masked, no ID number, no health notes
    assert res["name"] != plain["name"] and res["name"].startswith(plain["name"][0])
    assert res["phone"] == plain["phone"][:3] + "****" + plain["phone"][-4:]
    assert "id_number" not in res and "health_notes" not in res
    assert res["due"]["state"] == "open" and res["due"]["reason"] == "entry"
    # the worker: what a visit needs, never the ID number
    r = api.get(f"/api/v1/care/residents/{res['id']}", token=care.w1["token"])
    assert r.status_code == 200, r.text
    w = r.json()
    assert w["name"] == plain["name"] and w["phone"] == plain["phone"]
    assert w["address"] == plain["address"] and w["health_notes"] == plain["health_notes"]
    assert "id_number" not in w and w["view"] == "worker"
    r = api.get("/api/v1/care/residents", token=care.w1["token"])
    assert [x["id"] for x in r.json()["items"]] == [res["id"]]
    # a worker may not open a record; staff open it with a reason, audited
    r = api.post(f"/api/v1/care/residents/{res['id']}/open", {"reason": "x"},
                 token=care.w1["token"])
    assert r.status_code == 403, r.text
    r = api.post(f"/api/v1/care/residents/{res['id']}/open", {}, token=care.staff["token"])
    assert r.status_code == 400 and error_code(r) == "missing_field"
    r = api.post(f"/api/v1/care/residents/{res['id']}/open", {"reason": "家属来电核实"},
                 token=care.staff["token"])
    assert r.status_code == 200, r.text
    assert r.json()["id_number"] == plain["id_number"] and r.json()["name"] == plain["name"]
    row = sql.one("SELECT actor_id, reason, at FROM audit_log WHERE action = 'care.resident.open' "
                  "AND object_id = %s", (str(res["id"]),))
    assert row[0] == care.staff["id"] and row[1] == "家属来电核实" and row[2] is not None
    # lookup by phone and ID number (keyed hash), masked
    r = api.post("/api/v1/care/lookup", {"id_number": plain["id_number"]}, token=care.staff["token"])
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["items"]] == [res["id"]]
    r = api.post("/api/v1/care/lookup", {"phone": plain["phone"]}, token=care.w1["token"])
    assert r.status_code == 403
    # out of scope = 404, like missing: a worker of another micro-grid, staff of another grid
    other_micro = care._unit(care.admin["token"], care.grid)
    (stranger,) = bulk_workers(sql, other_micro, 1)
    other_grid = care._unit(care.admin["token"], care.community)
    other_staff = bulk_workers(sql, other_grid, 1, role="grid_staff")[0]
    missing = res["id"] + 10 ** 9
    for tok in (stranger["token"], other_staff["token"]):
        for rid in (res["id"], missing):
            r = api.get(f"/api/v1/care/residents/{rid}", token=tok)
            assert r.status_code == 404 and error_code(r) == "resident_not_found", r.text
        r = care.visit(res["id"], worker={"token": tok})
        assert r.status_code == 404, r.text
    r = api.post(f"/api/v1/care/residents/{res['id']}/open", {"reason": "x"},
                 token=other_staff["token"])
    assert r.status_code == 404
    r = api.post("/api/v1/care/lookup", {"id_number": plain["id_number"]},
                 token=other_staff["token"])
    assert r.json()["items"] == []
    # another street's admin cannot export this street; ours can, with a reason, audited
    other = make_admin()
    r = api.post(f"/api/v1/care/export?unit_id={care.street}", {"reason": "年度核查"},
                 token=other["token"])
    assert r.status_code == 404
    r = api.post(f"/api/v1/care/export?unit_id={care.grid}", {"reason": "年度核查"},
                 token=care.staff["token"])
    assert r.status_code == 403
    r = api.post(f"/api/v1/care/export?unit_id={care.street}", {}, token=care.admin["token"])
    assert r.status_code == 400
    r = api.post(f"/api/v1/care/export?unit_id={care.street}", {"reason": "年度核查"},
                 token=care.admin["token"])
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["id_number"] == plain["id_number"]
    assert sql.scalar("SELECT reason FROM audit_log WHERE action = 'care.export' AND actor_id = %s",
                      (care.admin["person_id"],)) == "年度核查"
    # at rest: a plain dump holds none of it in clear
    dump = subprocess.run(["pg_dump", "--no-owner", services.admin_url], capture_output=True,
                          check=True).stdout
    assert b"care_residents" in dump
    for field in ("name", "phone", "id_number", "address", "health_notes"):
        assert plain[field].encode() not in dump, field
    assert plain["phone"][-8:].encode() not in dump


def test_visit_offline_sync_once_award_and_followup(api, care, sql):
    res = care.resident(colour="red")
    body = {"resident_id": res["id"], "client_visit_id": "offline-" + secrets.token_hex(4),
            "made_at": iso(now()), "lat": HOME[0], "lng": HOME[1], "outcome": "needs_help",
            "help_kind": "repairs", "notes": "水管漏水"}
    barrier = threading.Barrier(5)

    def send(_):
        barrier.wait()
        return api.post("/api/v1/care/visits", body, token=care.w1["token"])

    with cf.ThreadPoolExecutor(max_workers=5) as ex:
        results = list(ex.map(send, range(5)))
    assert [r.status_code for r in results] == [201] * 5, [r.text for r in results]
    first = [r.json() for r in results if not r.json().get("idempotent_replay")]
    assert len(first) == 1
    again = api.post("/api/v1/care/visits", body, token=care.w1["token"])
    assert again.status_code == 201 and again.json()["idempotent_replay"] is True
    assert again.json()["visit"]["id"] == first[0]["visit"]["id"]
    assert again.json()["visit"]["notes"] == "水管漏水"
    assert sql.scalar("SELECT count(*) FROM care_visits WHERE resident_id = %s", (res["id"],)) == 1
    assert sql.scalar("SELECT count(*) FROM ledger_txns WHERE kind = 'award' "
                      "AND refs ->> 'care_visit_id' = %s", (str(first[0]["visit"]["id"]),)) == 1
    assert care.balance(care.w1["id"]) == 5
    r = api.get(f"/api/v1/care/budgets/{care.grid}", token=care.staff["token"])
    assert r.json()["care_balance"] == 995 and r.json()["paid"] == 5
    # the same client id with another body
    r = api.post("/api/v1/care/visits", dict(body, notes="别的"), token=care.w1["token"])
    assert r.status_code == 422 and error_code(r) == "client_visit_id_reused"
    # needs help raised a follow-up for the grid staff, tracked to its close
    r = api.get("/api/v1/care/followups", token=care.staff["token"])
    (f,) = [x for x in r.json()["items"] if x["resident_id"] == res["id"]]
    assert f["kind"] == "needs_help" and f["help_kind"] == "repairs" and f["state"] == "open"
    assert sql.scalar("SELECT count(*) FROM outbox WHERE topic = 'care.needs_help' "
                      "AND person_id = %s AND (payload ->> 'followup_id')::bigint = %s",
                      (care.staff["id"], f["id"])) == 1
    r = api.get("/api/v1/care/followups", token=care.w1["token"])
    assert r.status_code == 403
    r = api.post(f"/api/v1/care/followups/{f['id']}/close", {"note": "物业已修"},
                 token=care.staff["token"])
    assert r.status_code == 200 and r.json()["state"] == "closed"
    r = api.post(f"/api/v1/care/followups/{f['id']}/close", {"note": "again"},
                 token=care.staff["token"])
    assert r.status_code == 409
    # photos only with consent, and only photos the worker uploaded
    sha = "ab" * 32
    r = care.visit(res["id"], photos=[sha])
    assert r.status_code == 400 and error_code(r) == "consent_required"
    r = care.visit(res["id"], photos=[sha], photo_consent=True)
    assert r.status_code == 400 and error_code(r) == "photo_not_uploaded"
    # a second visit in the same cycle is an extra: recorded, not paid
    r = care.visit(res["id"])
    assert r.status_code == 201 and "extra" in r.json()["visit"]["flags"]
    assert r.json()["award"] is None
    assert care.balance(care.w1["id"]) == 5
    # the notes are sealed at rest
    assert sql.scalar("SELECT count(*) FROM care_visits WHERE notes_sealed LIKE 'v1.%%' "
                      "AND resident_id = %s", (res["id"],)) == 2
    care.ledger_ok()


def test_worker_and_backup_race_colour_change(api, care, sql):
    """The worker and the backup visit at the same moment while staff change the colour: one
    visit completes the due visit and is paid, the other is an extra; one open due visit
    remains, the ledger balances."""
    res = care.resident(colour="red", backup=care.w2)
    rid = res["id"]
    barrier = threading.Barrier(3)

    def go(i):
        barrier.wait()
        if i == 2:
            return api.patch(f"/api/v1/care/residents/{rid}", {"colour": "yellow"},
                             token=care.staff["token"])
        return care.visit(rid, worker=(care.w1, care.w2)[i])

    with cf.ThreadPoolExecutor(max_workers=3) as ex:
        results = list(ex.map(go, range(3)))
    assert [r.status_code for r in results] == [201, 201, 200], [r.text for r in results]
    paid = [r.json() for r in results[:2] if r.json()["award"]]
    assert len(paid) == 1
    assert sql.scalar("SELECT count(*) FROM care_dues WHERE resident_id = %s AND state = 'done'",
                      (rid,)) == 1
    assert sql.scalar("SELECT count(*) FROM care_dues WHERE resident_id = %s AND state = 'open'",
                      (rid,)) == 1
    assert care.balance(care.w1["id"]) + care.balance(care.w2["id"]) == 5
    care.ledger_ok()


def test_schedule_colour_change_pause_resume(api, care, sql):
    # red: every 3 s, grace 2 s (the test policy)
    res = care.resident(colour="red")
    rid = res["id"]
    # visited on time, three cycles: each creates exactly the next due visit (a visit within
    # half an interval of the last one would be an extra, so wait that long)
    for cycle in range(3):
        if cycle:
            time.sleep(1.6)
        (open_due,) = [d for d in care.dues(rid) if d[1] == "open"]
        r = care.visit(rid)
        assert r.status_code == 201, r.text
        j = r.json()
        assert j["due"]["id"] == open_due[0] and j["due"]["state"] == "done"
        assert j["due"]["on_time"] is True
        assert j["next_due"]["reason"] == "visit"
        dues = care.dues(rid)
        assert len(dues) == cycle + 2 and [d[1] for d in dues].count("open") == 1
    # a colour change mid-period reschedules once; the same colour again changes nothing
    r = api.patch(f"/api/v1/care/residents/{rid}", {"colour": "blue"}, token=care.staff["token"])
    assert r.status_code == 200 and r.json()["rescheduled"] is True
    r = api.patch(f"/api/v1/care/residents/{rid}", {"colour": "blue"}, token=care.staff["token"])
    assert r.status_code == 200 and r.json()["rescheduled"] is False
    dues = care.dues(rid)
    assert [d[1] for d in dues].count("cancelled") == 1 and dues[-1][2] == "colour"
    assert [d[1] for d in dues].count("open") == 1
    # the worker sees it among their due visits
    r = api.get("/api/v1/care/due", token=care.w1["token"])
    assert rid in [x["resident_id"] for x in r.json()["items"]]
    # pause: nothing due; resume: due again
    r = api.post(f"/api/v1/care/residents/{rid}/pause", {"reason": "住院"},
                 token=care.staff["token"])
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = api.get("/api/v1/care/due", token=care.w1["token"])
    assert rid not in [x["resident_id"] for x in r.json()["items"]]
    r = api.post(f"/api/v1/care/residents/{rid}/pause", {"reason": "again"},
                 token=care.staff["token"])
    assert r.status_code == 409
    r = api.post(f"/api/v1/care/residents/{rid}/resume", {}, token=care.staff["token"])
    assert r.status_code == 200 and r.json()["due"]["reason"] == "resume"
    assert [d[1] for d in care.dues(rid)].count("open") == 1
    # reassign to the second worker: the first no longer sees it (404), the second does
    r = api.patch(f"/api/v1/care/residents/{rid}", {"worker_id": care.w2["id"]},
                  token=care.staff["token"])
    assert r.status_code == 200, r.text
    r = api.get(f"/api/v1/care/residents/{rid}", token=care.w1["token"])
    assert r.status_code == 404
    r = api.get("/api/v1/care/due", token=care.w2["token"])
    assert rid in [x["resident_id"] for x in r.json()["items"]]


def test_overdue_escalates_once_then_late_visit_closes_it(api, care, sql):
    res = care.resident(colour="red", backup=care.w2)  # due after 3 s, overdue 2 s later
    rid = res["id"]
    assert wait_for(lambda: sql.scalar(
        "SELECT count(*) FROM care_followups WHERE resident_id = %s AND kind = 'overdue'",
        (rid,)) == 1, timeout=20)
    time.sleep(1.0)  # more sweeps run: still one
    assert sql.scalar("SELECT count(*) FROM care_followups WHERE resident_id = %s "
                      "AND kind = 'overdue'", (rid,)) == 1
    # the grid's staff were told once, with ids only
    notices = sql.query("SELECT payload FROM outbox WHERE topic = 'care.overdue' "
                        "AND person_id = %s AND (payload ->> 'resident_id')::bigint = %s",
                        (care.staff["id"], rid))
    assert len(notices) == 1 and set(notices[0][0]) == {"followup_id", "resident_id", "due_id",
                                                        "unit_id"}
    # the backup sees the overdue visit, staff see it in their follow-ups
    r = api.get("/api/v1/care/due", token=care.w2["token"])
    (d,) = [x for x in r.json()["items"] if x["resident_id"] == rid]
    assert d["overdue"] is True and d["as_backup"] is True
    r = api.get(f"/api/v1/care/due?unit_id={care.grid}&overdue=true", token=care.staff["token"])
    assert rid in [x["resident_id"] for x in r.json()["items"]]
    # the backup's late visit completes it (late), and closes the escalation
    r = care.visit(rid, worker=care.w2)
    assert r.status_code == 201, r.text
    assert r.json()["due"]["on_time"] is False and "by_backup" in r.json()["visit"]["flags"]
    assert sql.scalar("SELECT state FROM care_followups WHERE resident_id = %s "
                      "AND kind = 'overdue'", (rid,)) == "closed"
    # coverage of the micro-grid, grid and community
    window = {"from": iso(now() - dt.timedelta(hours=1)), "to": iso(now() + dt.timedelta(hours=1))}
    for unit in (care.micro, care.grid, care.community):
        r = api.get("/api/v1/care/coverage", params=dict(window, unit_id=unit),
                    token=care.staff["token"] if unit != care.community else care.admin["token"])
        assert r.status_code == 200, r.text
        c = r.json()
        assert c["residents"] == {"total": 1, "red": 1, "yellow": 0, "blue": 0, "paused": 0}
        assert c["visits"]["done_late"] == 1 and c["visits"]["done_on_time"] == 0
        assert c["visits"]["due"] == 2  # the completed one and the next (due in 3 s)
        assert [x["resident_id"] for x in c["not_seen_longest"]] == [rid]
        assert c["not_seen_longest"][0]["name"].endswith("*")
    assert len(c["children"]) == 1 and c["children"][0]["unit_id"] == care.grid
    r = api.get(f"/api/v1/care/coverage?unit_id={care.community}", token=care.staff["token"])
    assert r.status_code == 404


def test_removal_and_retention_purge(api, care, sql):
    res = care.resident(colour="blue")
    rid = res["id"]
    r = api.post(f"/api/v1/care/residents/{rid}/remove", {"reason": "迁出本街道"},
                 token=care.staff["token"])
    assert r.status_code == 200 and r.json()["status"] == "removed"
    r = api.post(f"/api/v1/care/residents/{rid}/resume", {}, token=care.staff["token"])
    assert r.status_code == 409
    # not yet purged: retention (care.retention, 365d) runs from the removal
    time.sleep(0.5)
    assert sql.scalar("SELECT name_sealed IS NOT NULL FROM care_residents WHERE id = %s", (rid,))
    # move the removal back past the retention period (the database clock of this row)
    sql.execute("UPDATE care_residents SET removed_at = removed_at - interval '400 days' "
                "WHERE id = %s", (rid,))
    assert wait_for(lambda: sql.scalar(
        "SELECT purged_at IS NOT NULL FROM care_residents WHERE id = %s", (rid,)))
    row = sql.one("SELECT name_sealed, phone_sealed, id_number_sealed, phone_hash, id_hash "
                  "FROM care_residents WHERE id = %s", (rid,))
    assert row == (None, None, None, None, None)
    r = api.post(f"/api/v1/care/residents/{rid}/open", {"reason": "x"}, token=care.staff["token"])
    assert r.status_code == 200 and "name" not in r.json()


def test_hostile_input(api, care, sql):
    tok = care.staff["token"]
    before = sql.scalar("SELECT count(*) FROM care_residents")
    bad = [
        {"unit_id": care.micro, "colour": "green", "worker_id": care.w1["id"], "name": "x"},
        {"unit_id": care.micro, "colour": "red", "worker_id": care.w1["id"]},
        {"unit_id": care.micro, "colour": "red", "worker_id": care.w1["id"], "name": "x",
         "phone": "abc"},
        {"unit_id": care.micro, "colour": "red", "worker_id": care.w1["id"], "name": "x",
         "id_number": "12345"},
        {"unit_id": care.micro, "colour": "red", "worker_id": care.w1["id"], "name": "x",
         "bogus": 1},
        {"unit_id": care.grid, "colour": "red", "worker_id": care.w1["id"], "name": "x"},
        {"unit_id": care.micro, "colour": "red", "worker_id": care.staff["id"], "name": "x"},
        {"unit_id": care.micro, "colour": "red", "worker_id": care.w1["id"], "name": 7},
        {"unit_id": "1", "colour": "red", "worker_id": care.w1["id"], "name": "x"},
        {"unit_id": care.micro, "colour": "red", "worker_id": care.w1["id"], "name": "x" * 65},
        {"unit_id": care.micro, "colour": "red", "worker_id": care.w1["id"],
         "backup_id": care.w1["id"], "name": "x"},
    ]
    for b in bad:
        r = api.post("/api/v1/care/residents", b, token=tok)
        assert r.status_code == 400, (b, r.text)
        assert r.json()["error"]["code"]
    assert sql.scalar("SELECT count(*) FROM care_residents") == before
    res = care.resident()
    for over in ({"outcome": "fine"}, {"outcome": "needs_help", "help_kind": "x"},
                 {"outcome": "well", "help_kind": "meals"}, {"client_visit_id": "a b"},
                 {"made_at": "yesterday"}, {"made_at": iso(now().replace(year=2099))},
                 {"lat": 91}, {"photos": "x"}, {"extra": 1}, {"resident_id": -1},
                 {"notes": "x" * 2001}):
        body = {"resident_id": res["id"], "client_visit_id": secrets.token_hex(8),
                "made_at": iso(now()), "outcome": "well"}
        body.update(over)
        r = api.post("/api/v1/care/visits", body, token=care.w1["token"])
        assert r.status_code in (400, 404), (over, r.text)
    r = api.put(f"/api/v1/care/policies/{care.street}", {"colours": {"red": {"every_s": 0,
                "grace_s": 1, "points": 1}}}, token=care.admin["token"])
    assert r.status_code == 400
    r = api.put(f"/api/v1/care/policies/{care.street}", {"colours": {"red": {"every_s": 5,
                "grace_s": 1, "points": 1}}}, token=care.staff["token"])
    assert r.status_code == 404  # grid staff: the street is outside their scope
    r = api.get("/api/v1/care/residents?limit=0", token=tok)
    assert r.status_code == 400
    r = api.get("/api/v1/care/due?cursor=%%%", token=care.w1["token"])
    assert r.status_code == 400
    r = api.post(f"/api/v1/care/budgets/{care.micro}/fund", {"amount": 1}, token=tok)
    assert r.status_code == 400
    r = api.post(f"/api/v1/care/budgets/{care.grid}/fund", {"amount": 10 ** 9}, token=tok)
    assert r.status_code == 409 and error_code(r) == "insufficient_budget", r.text
    assert sql.scalar("SELECT count(*) FROM care_visits WHERE resident_id = %s", (res["id"],)) == 0


def test_three_instances_kill9_escalate_exactly_once(api, admin, sql, make_server):
    """Overdue visits come due while three instances sweep and one is killed with -9: each is
    escalated exactly once."""
    servers = [make_server() for _ in range(3)]
    care = Care(api(servers[0]), admin, sql, red=(2, 1))
    n = 40
    ids = [care.resident(colour="red")["id"] for _ in range(n)]
    time.sleep(2.2)  # the first ones reach their grace end while all three sweep
    servers[1].kill9()
    assert wait_for(lambda: sql.scalar(
        "SELECT count(*) FROM care_dues WHERE resident_id = ANY(%s) AND escalated_at IS NOT NULL",
        (ids,)) == n, timeout=30)
    servers[1].start()
    time.sleep(1.0)
    rows = sql.query("SELECT resident_id, count(*) FROM care_followups "
                     "WHERE resident_id = ANY(%s) AND kind = 'overdue' GROUP BY 1", (ids,))
    assert len(rows) == n and all(c == 1 for _, c in rows), rows
    assert sql.scalar("SELECT count(*) FROM care_dues WHERE resident_id = ANY(%s)", (ids,)) == n
