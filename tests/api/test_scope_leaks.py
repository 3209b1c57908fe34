"""Scope before any fast path (issue 10, item 8): no cache, gate, rate limit or idempotency
replay may answer a caller differently about an object outside their scope than about one that
does not exist. For each kind of object, from outside its scope (a worker or a merchant of
another street, a worker or grid staff of a sibling grid, another merchant of the same street),
in every state of the object, the reply is compared with the reply to the same request for an
id that does not exist: same status, same headers (but Date, X-Request-Id, Content-Length and
the value of GP-Signature), same JSON body but the request id."""

import datetime as dt
import time
import uuid

import pytest

from gp import error_code, unique_name
from loop import Tree, bulk_workers, iso, now, report_body
from mall import Street

MISSING_ID = 9_000_000_000_000_000
MISSING_CODE = "ZZZZ-ZZZZ-ZZZZ"
VOLATILE_HEADERS = {"date", "x-request-id", "content-length"}


def normalized(r):
    """(status, headers, body) of a requests.Response or a merchant-client Reply."""
    headers = {k.lower(): v for k, v in r.headers.items() if k.lower() not in VOLATILE_HEADERS}
    if "gp-signature" in headers:
        headers["gp-signature"] = "<signed>"
    body = r.json()
    if isinstance(body.get("error"), dict):
        body["error"].pop("request_id", None)
    return r.status_code, headers, body


def assert_same(outside, missing, what):
    got, want = normalized(outside), normalized(missing)
    assert got == want, f"{what}: out of scope answered {got}, a missing id {want}"


def wait_for(pred, timeout=15.0, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def gate_refusals(api):
    for line in api.get("/metrics").text.splitlines():
        if line.startswith('gridpoints_claim_gate_refused_total '):
            return int(line.split()[-1])
    return 0


# ---- tasks: the claim gate, reads, history ------------------------------------------------

@pytest.fixture
def tree(api, admin, sql):
    return Tree(api, admin, sql)


def unit(api, token, parent):
    r = api.post("/api/v1/units", {"parent_id": parent, "name": unique_name("u")}, token=token)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def task_outsiders(api, tree, sql, make_admin):
    """Callers who may not see tree's tasks: a worker of another street, a worker and a grid
    staff member of a sibling grid of the same street."""
    other = make_admin()
    grid2 = unit(api, tree.admin["token"], tree.community)
    micro2 = unit(api, tree.admin["token"], grid2)
    return {
        "worker of another street": bulk_workers(sql, other["unit_id"], 1)[0],
        "worker of a sibling grid": bulk_workers(sql, micro2, 1)[0],
        "grid staff of a sibling grid": bulk_workers(sql, grid2, 1, role="grid_staff")[0],
    }


def task_states(api, tree, sql):
    """One task in each state, each with its claim gate in Redis: {state: task id}."""
    staff = tree.staff["token"]
    insiders = iter(tree.workers(4))
    out = {"open with a free slot": tree.publish(slots=1)["id"]}

    full = tree.publish(slots=1)["id"]
    r = api.post(f"/api/v1/tasks/{full}/claim", token=next(insiders)["token"])
    assert r.status_code == 201, r.text
    out["full"] = full

    out["not started"] = tree.publish(slots=1, starts_at=iso(now() + dt.timedelta(hours=1)))["id"]

    cancelled = tree.publish(slots=1)["id"]
    r = api.post(f"/api/v1/tasks/{cancelled}/cancel", {"reason": "rain"}, token=staff)
    assert r.status_code == 200, r.text
    out["cancelled"] = cancelled

    done = tree.publish(slots=1)["id"]
    w = next(insiders)
    r = api.post(f"/api/v1/tasks/{done}/claim", token=w["token"])
    assert r.status_code == 201, r.text
    a = r.json()["id"]
    r = api.post("/api/v1/reports", report_body(a), token=w["token"])
    assert r.status_code == 201, r.text
    r = api.post(f"/api/v1/assignments/{a}/approve", {}, token=staff)
    assert r.status_code == 200, r.text
    out["closed (every slot approved)"] = done

    ended = tree.publish(slots=1)["id"]
    sql.execute("UPDATE tasks SET starts_at = now() - interval '2 hours', "
                "ends_at = now() - interval '1 hour' WHERE id = %s", (ended,))
    out["closed (window expired)"] = ended

    for state, t in out.items():
        want = "closed" if state.startswith("closed") else (
            "cancelled" if state == "cancelled" else "open")
        assert wait_for(lambda: sql.scalar("SELECT status FROM tasks WHERE id = %s", (t,)) == want), state
    return out


def test_task_claims_and_reads_from_outside_equal_a_missing_task(api, tree, sql, make_admin):
    outsiders = task_outsiders(api, tree, sql, make_admin)
    states = task_states(api, tree, sql)
    for who, o in outsiders.items():
        tok = o["token"]
        for state, t in states.items():
            what = f"{who}, task {state}"
            assert_same(api.post(f"/api/v1/tasks/{t}/claim", token=tok),
                        api.post(f"/api/v1/tasks/{MISSING_ID}/claim", token=tok), "claim: " + what)
            assert_same(api.get(f"/api/v1/tasks/{t}", token=tok),
                        api.get(f"/api/v1/tasks/{MISSING_ID}", token=tok), "get: " + what)
            assert_same(api.get(f"/api/v1/tasks/{t}/history", token=tok),
                        api.get(f"/api/v1/tasks/{MISSING_ID}/history", token=tok),
                        "history: " + what)
        r = api.post(f"/api/v1/tasks/{states['full']}/claim", token=tok)
        assert r.status_code == 404 and error_code(r) == "task_not_found", (who, r.text)
    # nothing an outsider did took a slot, and the gate still turns the task's own storm
    # losers away without PostgreSQL
    (late,) = tree.workers(1)
    before = gate_refusals(api)
    r = api.post(f"/api/v1/tasks/{states['full']}/claim", token=late["token"])
    assert r.status_code == 409 and error_code(r) == "task_full", r.text
    assert gate_refusals(api) == before + 1
    r = api.post(f"/api/v1/tasks/{states['open with a free slot']}/claim", token=late["token"])
    assert r.status_code == 201, r.text


def test_claim_gate_answers_only_inside_the_area(api, tree, sql, make_admin, redis):
    """Even a gate that says "no free slot" for every task answers an outsider only through
    PostgreSQL; a worker of the area is refused by the gate itself."""
    outsiders = task_outsiders(api, tree, sql, make_admin)
    t = tree.publish(slots=2)["id"]
    assert wait_for(lambda: redis.hget(f"gate:{{{t}}}", "f") is not None)
    for who, o in outsiders.items():
        # (PostgreSQL's answer to the outsider writes the true count back: set it again)
        redis.hset(f"gate:{{{t}}}", "f", "0")
        assert_same(api.post(f"/api/v1/tasks/{t}/claim", token=o["token"]),
                    api.post(f"/api/v1/tasks/{MISSING_ID}/claim", token=o["token"]), who)
    (w,) = tree.workers(1)
    redis.hset(f"gate:{{{t}}}", "f", "0")
    before = gate_refusals(api)
    r = api.post(f"/api/v1/tasks/{t}/claim", token=w["token"])
    assert r.status_code == 409 and error_code(r) == "task_full", r.text
    assert gate_refusals(api) == before + 1


def test_claim_replay_is_not_refused_by_the_gate(api, tree, sql, make_admin):
    """The winner of the last slot retrying with the same Idempotency-Key gets their claim back
    (not task_full); another principal's use of that key replays nothing."""
    t = tree.publish(slots=1)["id"]
    w, peer = tree.workers(2)
    outsider = bulk_workers(sql, make_admin()["unit_id"], 1)[0]
    key = str(uuid.uuid4())
    r1 = api.post(f"/api/v1/tasks/{t}/claim", token=w["token"], idempotency_key=key)
    assert r1.status_code == 201, r1.text
    r2 = api.post(f"/api/v1/tasks/{t}/claim", token=w["token"], idempotency_key=key)
    assert r2.status_code == 201, r2.text
    assert r2.json().pop("idempotent_replay") is True and r2.json()["id"] == r1.json()["id"]
    r = api.post(f"/api/v1/tasks/{t}/claim", token=peer["token"], idempotency_key=key)
    assert r.status_code == 409 and error_code(r) == "task_full", r.text
    assert_same(api.post(f"/api/v1/tasks/{t}/claim", token=outsider["token"], idempotency_key=key),
                api.post(f"/api/v1/tasks/{MISSING_ID}/claim", token=outsider["token"],
                         idempotency_key=key), "another street's worker replaying the key")
    # the holder claiming again reaches PostgreSQL, which knows why
    r = api.post(f"/api/v1/tasks/{t}/claim", token=w["token"])
    assert r.status_code == 409 and error_code(r) == "already_claimed", r.text


# ---- merchants, offers, vouchers, pay codes --------------------------------------------------

@pytest.fixture
def mall(api, admin, sql, server, make_admin):
    """Street A with merchant M and a worker w; street B with its merchant and worker; another
    merchant of street A serving only a community of it."""
    a = Street(api, admin, sql, server)
    b = Street(api, make_admin(), sql, server)
    m, mc_a = a.merchant()
    community = unit(api, a.token, a.street)
    _, mc_narrow = a.merchant(unit=community)
    _, mc_b = b.merchant()
    (w,) = a.workers(1, points=100000)
    (wb,) = b.workers(1, points=100000)
    (peer,) = a.workers(1, points=100000)
    grid_staff = bulk_workers(sql, unit(api, a.token, community), 1, role="grid_staff")[0]
    return {"a": a, "b": b, "m": m, "mc": mc_a, "mc_b": mc_b, "mc_narrow": mc_narrow, "w": w,
            "wb": wb, "peer": peer, "grid_staff": grid_staff}


def voucher_states(mall, sql):
    """A voucher of merchant M ordered by w in each state: {state: voucher json}."""
    a, c, w = mall["a"], mall["mc"], mall["w"]
    offer = a.offer(c, price=100, stock=50)

    def order():
        r = a.order(w, offer["id"])
        assert r.status_code == 201, r.text
        return r.json()

    out = {"issued": order()}
    v = order()
    r = c.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture")
    assert r.status == 200, r.text
    out["captured"] = v
    v = order()
    r = c.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture")
    assert r.status == 200, r.text
    r = c.request("POST", f"/merchant/v1/vouchers/{v['code']}/refunds", {"reason": "broken"})
    assert r.status == 201, r.text
    out["refunded"] = v
    v = order()
    r = a.api.post(f"/api/v1/vouchers/{v['id']}/cancel", token=w["token"])
    assert r.status_code == 200, r.text
    out["cancelled"] = v
    v = order()
    sql.execute("UPDATE vouchers SET expires_at = now() - interval '1 second' WHERE id = %s",
                (v["id"],))
    assert wait_for(lambda: sql.scalar("SELECT state FROM vouchers WHERE id = %s",
                                       (v["id"],)) == "expired")
    out["expired"] = v
    return out


def test_vouchers_from_outside_equal_a_missing_voucher(api, mall, sql):
    states = voucher_states(mall, sql)
    workers = {"worker of another street": mall["wb"], "another worker of the street": mall["peer"]}
    merchants = {"merchant of another street": mall["mc_b"],
                 "another merchant of the street": mall["mc_narrow"]}
    for state, v in states.items():
        for who, o in workers.items():
            what = f"{who}, voucher {state}"
            assert_same(api.get(f"/api/v1/vouchers/{v['id']}", token=o["token"]),
                        api.get(f"/api/v1/vouchers/{MISSING_ID}", token=o["token"]), what)
            assert_same(api.post(f"/api/v1/vouchers/{v['id']}/cancel", token=o["token"]),
                        api.post(f"/api/v1/vouchers/{MISSING_ID}/cancel", token=o["token"]), what)
        for who, c in merchants.items():
            what = f"{who}, voucher {state}"
            for method, tail, body in (("GET", "", None), ("POST", "/capture", None),
                                       ("POST", "/refunds", {"amount": 1})):
                assert_same(c.request(method, f"/merchant/v1/vouchers/{v['code']}{tail}", body),
                            c.request(method, f"/merchant/v1/vouchers/{MISSING_CODE}{tail}", body),
                            f"{method} {tail or 'get'}: {what}")
    # nothing an outsider did changed a voucher
    for state, v in states.items():
        r = api.get(f"/api/v1/vouchers/{v['id']}", token=mall["w"]["token"])
        assert r.status_code == 200 and r.json()["state"] == (
            "captured" if state == "refunded" else state), (state, r.text)


def test_paycodes_from_outside_equal_a_missing_paycode(mall, sql):
    a, w = mall["a"], mall["w"]

    def paycode():
        return a.paycode(w)

    def nonce(pc):
        return pc.split(".")[1]

    fresh = paycode()
    used = paycode()
    r = mall["mc"].request("POST", "/merchant/v1/charges", {"paycode": used, "amount": 5})
    assert r.status == 201, r.text
    expired = paycode()
    sql.execute("UPDATE paycodes SET expires_at = now() - interval '1 second' WHERE nonce = %s",
                (nonce(expired),))
    missing = paycode()  # signed by the server, but its row is gone
    sql.execute("DELETE FROM paycodes WHERE nonce = %s", (nonce(missing),))
    for who in ("mc_b", "mc_narrow"):
        c = mall[who]
        want = c.request("POST", "/merchant/v1/charges", {"paycode": missing, "amount": 5})
        assert want.status == 404 and error_code(want) == "paycode_not_found", want.text
        for state, pc in (("unused", fresh), ("used", used), ("expired", expired)):
            assert_same(c.request("POST", "/merchant/v1/charges", {"paycode": pc, "amount": 5}),
                        c.request("POST", "/merchant/v1/charges", {"paycode": missing, "amount": 5}),
                        f"{who}: pay code {state}")
    # the pay code the outsiders tried is still good for the worker's own merchant
    r = mall["mc"].request("POST", "/merchant/v1/charges", {"paycode": fresh, "amount": 5})
    assert r.status == 201, r.text


def test_merchants_and_offers_from_outside_equal_missing_ones(api, mall, sql):
    a, b, m, c = mall["a"], mall["b"], mall["m"], mall["mc"]
    readers = {"admin of another street": b.token, "grid staff of the street": mall["grid_staff"]["token"]}
    offers = {"active": a.offer(c), "sold out": a.offer(c, stock=1)}
    r = a.order(mall["w"], offers["sold out"]["id"])
    assert r.status_code == 201, r.text
    paused = a.offer(c)
    r = c.request("PATCH", f"/merchant/v1/offers/{paused['id']}", {"status": "paused"})
    assert r.status == 200, r.text
    offers["paused"] = paused
    ended = a.offer(c)
    sql.execute("UPDATE offers SET starts_at = now() - interval '2 days', "
                "ends_at = now() - interval '1 day' WHERE id = %s", (ended["id"],))
    offers["ended"] = ended

    def check_all(merchant_state):
        for who, tok in readers.items():
            what = f"{who}, merchant {merchant_state}"
            for tail in ("", "/statement", "/settlements"):
                assert_same(api.get(f"/api/v1/merchants/{m['id']}{tail}", token=tok),
                            api.get(f"/api/v1/merchants/{MISSING_ID}{tail}", token=tok),
                            f"GET {tail or 'merchant'}: {what}")
            assert_same(api.patch(f"/api/v1/merchants/{m['id']}", {"address": "x"}, token=tok),
                        api.patch(f"/api/v1/merchants/{MISSING_ID}", {"address": "x"}, token=tok),
                        "PATCH: " + what)
            assert_same(api.post(f"/api/v1/merchants/{m['id']}/keys", {}, token=tok),
                        api.post(f"/api/v1/merchants/{MISSING_ID}/keys", {}, token=tok),
                        "new key: " + what)
        for state, o in offers.items():
            what = f"offer {state}, merchant {merchant_state}"
            for who, tok in (("worker of another street", mall["wb"]["token"]),):
                assert_same(api.get(f"/api/v1/mall/offers/{o['id']}", token=tok),
                            api.get(f"/api/v1/mall/offers/{MISSING_ID}", token=tok), f"{who}, {what}")
                key = str(uuid.uuid4())
                assert_same(a.order({"token": tok}, o["id"], idempotency_key=key),
                            a.order({"token": tok}, MISSING_ID, idempotency_key=key),
                            f"order: {who}, {what}")
            for who in ("mc_b", "mc_narrow"):
                oc = mall[who]
                assert_same(oc.request("GET", f"/merchant/v1/offers/{o['id']}"),
                            oc.request("GET", f"/merchant/v1/offers/{MISSING_ID}"), f"{who}, {what}")
                assert_same(oc.request("PATCH", f"/merchant/v1/offers/{o['id']}", {"stock": 1}),
                            oc.request("PATCH", f"/merchant/v1/offers/{MISSING_ID}", {"stock": 1}),
                            f"PATCH: {who}, {what}")

    check_all("active")
    r = api.post(f"/api/v1/merchants/{m['id']}/suspend", {"reason": "audit"}, token=a.token)
    assert r.status_code == 200, r.text
    check_all("suspended")


def test_idempotency_key_of_another_worker_replays_nothing(api, mall):
    """A key used by one worker, replayed by a worker of another street on the same offer,
    answers as for a missing offer; replayed by a worker of the same street, it is their own
    new order."""
    a, c = mall["a"], mall["mc"]
    offer = a.offer(c, price=10, stock=5)
    key = str(uuid.uuid4())
    r = a.order(mall["w"], offer["id"], idempotency_key=key)
    assert r.status_code == 201, r.text
    first = r.json()
    assert_same(a.order(mall["wb"], offer["id"], idempotency_key=key),
                a.order(mall["wb"], MISSING_ID, idempotency_key=key), "another street's worker")
    r = a.order(mall["peer"], offer["id"], idempotency_key=key)
    assert r.status_code == 201 and "idempotent_replay" not in r.json(), r.text
    assert r.json()["id"] != first["id"] and r.json()["code"] != first["code"]
