"""Partner merchants through the API (issue 5; docs/MERCHANTS.md): onboarding and keys, the
signed merchant API (replay, time window, tampering, revocation, rotation, suspension, rate
limits, fail-closed nonce store, signed replies), offers and the mall (stock and per-person
limits under real concurrency), vouchers (capture once, only by its merchant, expiry gives the
points back), counter charges with pay codes (idempotent, single use), refunds (never beyond
the original, also concurrently), settlement (statements equal the ledger; a settled period
does not change), the console of merchant staff. Webhooks: test_merchant_webhooks.py."""

import concurrent.futures as cf
import threading
import time
import uuid

import pytest

from gp import error_code, unique_name
from loop import bulk_workers
from mall import Street, mc

KEY_MIN = "mk_0000000000000000"


@pytest.fixture
def st(api, admin, sql, server):
    return Street(api, admin, sql, server)


def test_end_to_end_onboard_offer_voucher_charge(api, st, sql):
    m, c = st.merchant()
    assert m["status"] == "active" and m["street_id"] == st.street
    (w,) = st.workers(1, points=1000)
    r = c.request("GET", "/merchant/v1/me")
    assert r.status == 200 and r.verified and r.json()["id"] == m["id"]
    offer = st.offer(c, price=300, stock=3, limit_per_day=1, description="5 kg")
    # the worker sees it in the mall with its stock and their own counters
    r = api.get("/api/v1/mall/offers", token=w["token"])
    assert r.status_code == 200, r.text
    item = next(o for o in r.json()["items"] if o["id"] == offer["id"])
    assert item["stock"] == 3 and item["mine"]["can_order_today"] == 1
    # order: points held, a readable one-time code
    r = st.order(w, offer["id"])
    assert r.status_code == 201, r.text
    v = r.json()
    assert v["state"] == "issued" and v["qr_payload"] == "GPV1:" + v["code"]
    assert len(v["code"]) == 14 and v["code"][4] == "-" and "balances" in v
    assert st.balance(w) == 700
    assert error_code(st.order(w, offer["id"])) == "limit_reached"
    # the merchant looks it up (lower case, without dashes) and captures it
    r = c.request("GET", "/merchant/v1/vouchers/" + v["code"].replace("-", "").lower())
    assert r.status == 200 and r.json()["capturable"] is True and "worker_id" not in r.json()
    r = c.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture", {})
    assert r.status == 200 and r.verified, r.text
    assert r.json()["state"] == "captured" and r.json()["receipt"]["txn_id"]
    # counter charge with a pay code; the worker sees it at once
    r = st.charge(c, w, 60)
    assert r.status == 201 and r.verified, r.text
    assert "balances" not in r.json() and r.json()["worker_name"].count("*") >= 1
    r = api.get("/api/v1/workers/me/balance", token=w["token"])
    assert r.json()["available"] == 640
    r = api.get("/api/v1/charges", token=w["token"])
    assert [x["amount"] for x in r.json()["items"]] == [60]
    r = api.get("/api/v1/vouchers", token=w["token"])
    assert r.json()["items"][0]["state"] == "captured"
    st.ledger_ok()


def test_onboarding_scope_and_roles(api, st, admin, make_admin, sql):
    m, _ = st.merchant()
    other = make_admin()
    # another street's admin sees nothing of it
    for path in (f"/api/v1/merchants/{m['id']}", f"/api/v1/merchants/{m['id']}/statement"):
        r = api.get(path, token=other["token"])
        assert r.status_code == 404, r.text
    r = api.post(f"/api/v1/merchants/{m['id']}/keys", {}, token=other["token"])
    assert r.status_code == 404
    # a worker cannot onboard
    (w,) = st.workers(1, points=0)
    r = api.post("/api/v1/merchants", {"name": "x", "address": "y", "unit_id": st.street,
                                       "contact_name": "z", "contact_phone": "12345"},
                 token=w["token"])
    assert r.status_code in (403, 404)
    # bad input changes nothing
    r = api.post("/api/v1/merchants", {"name": "x", "address": "y", "unit_id": st.street,
                                       "contact_name": "z", "contact_phone": "not a phone"},
                 token=admin["token"])
    assert r.status_code == 400
    r = api.post("/api/v1/merchants", {"name": "x", "bogus": 1}, token=admin["token"])
    assert error_code(r) == "unknown_field"
    # the admin's view: keys without secrets, list, edit
    r = api.get(f"/api/v1/merchants/{m['id']}", token=admin["token"])
    assert r.status_code == 200 and len(r.json()["keys"]) == 1
    assert "secret" not in r.json()["keys"][0] and "secret_ct" not in r.text
    r = api.get("/api/v1/merchants", token=admin["token"])
    assert m["id"] in [x["id"] for x in r.json()["items"]]
    r = api.patch(f"/api/v1/merchants/{m['id']}", {"address": "莲花路 8 号"}, token=admin["token"])
    assert r.status_code == 200 and r.json()["address"] == "莲花路 8 号"
    # the secret is stored sealed, never in the clear
    row = sql.one("SELECT secret_ct FROM merchant_keys WHERE merchant_id = %s", (m["id"],))
    assert row[0].startswith("v1.") and "sk_" not in row[0]


# ---- signatures -----------------------------------------------------------------------------

def test_replay_same_nonce_is_refused_without_second_effect(st, sql):
    _, c = st.merchant()
    (w,) = st.workers(1)
    pc = st.paycode(w)
    body = {"paycode": pc, "amount": 25}
    nonce, ts, key = mc.new_nonce(), int(time.time()), str(uuid.uuid4())
    r1 = c.request("POST", "/merchant/v1/charges", body, idempotency_key=key, ts=ts, nonce=nonce)
    assert r1.status == 201, r1.text
    # the exact same request again (same nonce, same idempotency key, same bytes)
    r2 = c.request("POST", "/merchant/v1/charges", body, idempotency_key=key, ts=ts, nonce=nonce)
    assert r2.status == 401 and error_code(r2) == "nonce_reused"
    # ... and with another idempotency key: still the nonce
    r3 = c.request("POST", "/merchant/v1/charges", body, idempotency_key=str(uuid.uuid4()),
                   ts=ts, nonce=nonce)
    assert error_code(r3) == "nonce_reused"
    assert r2.verified  # the server knows the caller holds the secret: the 401 is signed
    assert sql.scalar("SELECT count(*) FROM charges WHERE paycode = %s", (pc.split(".")[1],)) == 1
    assert st.balance(w) == 975
    # a replayed read is refused too
    n = mc.new_nonce()
    assert c.request("GET", "/merchant/v1/me", nonce=n).status == 200
    assert error_code(c.request("GET", "/merchant/v1/me", nonce=n)) == "nonce_reused"


@pytest.mark.parametrize("skew,ok", [(-301, False), (301, False), (-299, True), (299, True)])
def test_timestamp_window(st, skew, ok):
    _, c = st.merchant()
    r = c.request("GET", "/merchant/v1/me", ts=int(time.time()) + skew)
    if ok:
        assert r.status == 200 and r.verified, r.text
    else:
        assert r.status == 401 and error_code(r) == "timestamp_out_of_window"
        assert "gp-signature" not in r.headers


def test_tampered_body_path_query_method(st, sql):
    m, c = st.merchant()
    offer = st.offer(c, title="t0")

    def send(sign, actual):
        """Signs `sign` = (method, uri, body) and sends `actual` instead."""
        auth, _, nonce = mc.authorization(c.key_id, c.secret, sign[0], sign[1], sign[2])
        h = {"Authorization": auth, "Content-Type": "application/json",
             "Idempotency-Key": str(uuid.uuid4())}
        return c.send_raw(actual[0], actual[1], actual[2], h, request_nonce=nonce)

    body = b'{"title":"t1"}'
    path = f"/merchant/v1/offers/{offer['id']}"
    r = send(("PATCH", path, body), ("PATCH", path, body))
    assert r.status == 200 and r.verified, r.text
    tampered = [
        ("PATCH", path, b'{"title":"t2"}'),                 # one byte of the body
        ("PATCH", path, b'{"title": "t1"}'),                # whitespace only
        ("PATCH", path + "?x=1", body),                     # a query added
        ("PATCH", f"/merchant/v1/offers/{offer['id'] + 1}", body),  # the path
    ]
    for actual in tampered:
        r = send(("PATCH", path, body), actual)
        assert r.status == 401 and error_code(r) == "bad_signature", (actual, r.text)
    # query changed by one byte
    r = send(("GET", "/merchant/v1/offers?status=active", b""),
             ("GET", "/merchant/v1/offers?status=paused", b""))
    assert error_code(r) == "bad_signature"
    r = send(("GET", "/merchant/v1/offers?status=active", b""),
             ("GET", "/merchant/v1/offers?status=active", b""))
    assert r.status == 200
    # nothing of the tampered requests took effect
    assert sql.scalar("SELECT title FROM offers WHERE id = %s", (offer["id"],)) == "t1"


@pytest.mark.parametrize("header,code", [
    (None, "missing_signature"),
    ("Bearer abc", "missing_signature"),
    ("GP1-HMAC-SHA256 key=mk_0000000000000000", "malformed_signature"),
    ("GP1-HMAC-SHA256 key=mk_0000000000000000,ts=1,nonce=aaaaaaaaaaaaaaaa,sig=" + "0" * 63,
     "malformed_signature"),
])
def test_malformed_authorization(api, header, code):
    h = {"Authorization": header} if header else {}
    r = api.get("/merchant/v1/me", token=None, headers=h)
    assert r.status_code == 401 and error_code(r) == code


def test_unknown_key_and_wrong_secret(st, server):
    _, c = st.merchant()
    r = mc.Client(server.url, KEY_MIN, c.secret).request("GET", "/merchant/v1/me")
    assert error_code(r) == "unknown_key"
    r = mc.Client(server.url, c.key_id, c.secret + "x").request("GET", "/merchant/v1/me")
    assert error_code(r) == "bad_signature" and not r.verified


def test_writes_need_an_idempotency_key(st):
    _, c = st.merchant()
    auth, _, nonce = mc.authorization(c.key_id, c.secret, "POST", "/merchant/v1/offers", b"{}")
    r = c.send_raw("POST", "/merchant/v1/offers", b"{}",
                   {"Authorization": auth, "Content-Type": "application/json"}, nonce)
    assert r.status == 400 and error_code(r) == "missing_idempotency_key" and r.verified


def test_revoked_key_refused_at_once_whatever_the_cache_holds(st, api, redis):
    m, c = st.merchant()
    assert c.request("GET", "/merchant/v1/me").status == 200  # the key is now cached in Redis
    cached = redis.get(f"mkey:{{{c.key_id}}}")
    assert cached and "secret_ct" in cached and "sk_" not in cached
    r = api.post(f"/api/v1/merchants/{m['id']}/keys/{c.key_id}/revoke", token=st.token)
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    r = c.request("GET", "/merchant/v1/me")
    assert r.status == 401 and error_code(r) == "key_revoked"
    # even if a stale cache entry came back (a lost DEL), the statement itself refuses
    redis.set(f"mkey:{{{c.key_id}}}", cached, ex=60)
    for method, path, body in (("GET", "/merchant/v1/me", None),
                               ("POST", "/merchant/v1/offers", {"title": "x", "price": 1,
                                                                "stock": 1,
                                                                "ends_at": "2099-01-01T00:00:00Z"})):
        r = c.request(method, path, body)
        assert r.status == 401 and error_code(r) == "key_revoked", r.text
    r = api.post(f"/api/v1/merchants/{m['id']}/keys/{c.key_id}/revoke", token=st.token)
    assert error_code(r) == "key_revoked"


def test_a_keys_state_is_said_only_to_whoever_holds_its_secret(st, api, server):
    """A revoked key, an expired one and a suspended merchant's key answer a wrong signature
    exactly as a usable key does (bad_signature): knowing a key id tells nothing about the
    merchant behind it. The right signature learns why the key is refused."""
    m, c = st.merchant()
    new = st.key(m["id"], rotate=True, overlap_s=1)  # c expires in a second
    m2, c2 = st.merchant()
    m3, c3 = st.merchant()
    r = api.post(f"/api/v1/merchants/{m2['id']}/keys/{c2.key_id}/revoke", token=st.token)
    assert r.status_code == 200
    r = api.post(f"/api/v1/merchants/{m3['id']}/suspend", {"reason": "complaints"}, token=st.token)
    assert r.status_code == 200
    time.sleep(1.5)
    for client, right in ((c, ("key_expired", 401)), (c2, ("key_revoked", 401)),
                          (c3, ("merchant_suspended", 403))):
        wrong = mc.Client(server.url, client.key_id, client.secret + "x")
        r = wrong.request("GET", "/merchant/v1/me")
        assert (r.status, error_code(r)) == (401, "bad_signature"), (client.key_id, r.text)
        r = client.request("GET", "/merchant/v1/me")
        assert (error_code(r), r.status) == right, r.text
    assert new.request("GET", "/merchant/v1/me").status == 200


def test_key_rotation_with_overlap(st):
    m, old = st.merchant()
    new = st.key(m["id"], rotate=True, overlap_s=2)
    assert [k["key_id"] for k in new.key["expiring"]] == [old.key_id]
    assert old.request("GET", "/merchant/v1/me").status == 200  # inside the overlap
    assert new.request("GET", "/merchant/v1/me").status == 200
    time.sleep(2.5)
    r = old.request("GET", "/merchant/v1/me")
    assert r.status == 401 and error_code(r) == "key_expired"
    assert new.request("GET", "/merchant/v1/me").status == 200


def test_suspend_and_reinstate(st, api):
    m, c = st.merchant()
    offer = st.offer(c)
    (w,) = st.workers(1)
    r = api.post(f"/api/v1/merchants/{m['id']}/suspend", {"reason": "complaints"}, token=st.token)
    assert r.status_code == 200 and r.json()["status"] == "suspended" and "key_ids" not in r.json()
    r = c.request("GET", "/merchant/v1/me")
    assert r.status == 403 and error_code(r) == "merchant_suspended"
    assert st.order(w, offer["id"]).status_code == 404  # out of the mall
    r = api.post(f"/api/v1/merchants/{m['id']}/reinstate", {"reason": "resolved"}, token=st.token)
    assert r.status_code == 200
    assert c.request("GET", "/merchant/v1/me").status == 200
    assert st.order(w, offer["id"]).status_code == 201


def test_replies_are_signed_and_tampering_is_detected(st):
    _, c = st.merchant()
    nonce = mc.new_nonce()
    r = c.request("GET", "/merchant/v1/me", nonce=nonce)
    assert r.verified
    sig = r.headers["gp-signature"]
    assert mc.verify_response(c.key_id, c.secret, nonce, r.status, sig, r.body)
    assert not mc.verify_response(c.key_id, c.secret, nonce, r.status, sig, r.body[:-1] + b" ")
    assert not mc.verify_response(c.key_id, c.secret, nonce, 201, sig, r.body)
    assert not mc.verify_response(c.key_id, c.secret, mc.new_nonce(), r.status, sig, r.body)
    assert not mc.verify_response(c.key_id, c.secret, nonce, r.status, None, r.body)
    # errors after verification are signed too
    r = c.request("GET", "/merchant/v1/offers/999999999")
    assert r.status == 404 and r.verified


def test_rate_limited_with_retry_after(make_server, make_admin, sql):
    srv = make_server(env={"GRIDPOINTS_MERCHANT_RATE_LIMIT": "3",
                           "GRIDPOINTS_MERCHANT_RATE_WINDOW": "60s"})
    from gp import Api
    api = Api(srv)
    st = Street(api, make_admin(srv), sql, srv)
    _, c = st.merchant()
    codes = [c.request("GET", "/merchant/v1/me") for _ in range(5)]
    assert [r.status for r in codes] == [200, 200, 200, 429, 429]
    assert error_code(codes[3]) == "rate_limited" and int(codes[3].headers["retry-after"]) >= 1
    assert codes[3].verified
    api.close()


def test_writes_fail_closed_without_the_nonce_store(st, api, services):
    _, c = st.merchant()
    assert c.request("GET", "/merchant/v1/me").status == 200
    services.stop_redis()
    r = c.request("POST", "/merchant/v1/offers", {"title": "x", "price": 1, "stock": 1,
                                                  "ends_at": "2099-01-01T00:00:00Z"})
    assert r.status == 503 and error_code(r) == "nonce_store_unavailable"
    assert "retry-after" in r.headers
    r = c.request("GET", "/merchant/v1/me")  # reads go on, keys from PostgreSQL
    assert r.status == 200 and r.verified
    services.start()
    deadline = time.time() + 15  # leave the server reconnected for the next tests
    while time.time() < deadline and api.get("/readyz").status_code != 200:
        time.sleep(0.1)
    assert c.request("POST", "/merchant/v1/offers", {"title": "x", "price": 1, "stock": 1,
                                                     "ends_at": "2099-01-01T00:00:00Z"}).status == 201


def test_doc_example_matches_the_client():
    """docs/MERCHANTS.md's example (checked against the server by test_merchant_auth.c) is also
    what the shipped client computes."""
    from gp import REPO
    text = (REPO / "docs" / "MERCHANTS.md").read_text()
    block = text.split("<!-- signing-example:begin -->")[1].split("```text\n")[1].split("```")[0]
    kv = dict(line.split(" = ", 1) for line in block.splitlines() if " = " in line)
    kv = {k.strip(): v for k, v in kv.items()}
    auth, _, _ = mc.authorization(kv["key_id"], kv["secret"], kv["method"], kv["uri"],
                                  kv["body"].encode(), int(kv["ts"]), kv["nonce"])
    assert auth == kv["authorization"]


# ---- offers and the mall ---------------------------------------------------------------------

def test_fifty_concurrent_orders_on_the_last_five_items(st, api, sql):
    _, c = st.merchant()
    offer = st.offer(c, price=10, stock=8)
    early = st.workers(3, points=100)
    for w in early:
        assert st.order(w, offer["id"]).status_code == 201
    workers = st.workers(50, points=100)
    barrier = threading.Barrier(50)

    def order(w):
        barrier.wait()
        return st.order(w, offer["id"])

    with cf.ThreadPoolExecutor(max_workers=50) as ex:
        results = list(ex.map(order, workers))
    codes = [r.status_code for r in results]
    assert codes.count(201) == 5, codes
    assert all(error_code(r) == "out_of_stock" for r in results if r.status_code != 201)
    assert sql.scalar("SELECT count(*) FROM vouchers WHERE offer_id = %s", (offer["id"],)) == 8
    assert sql.scalar("SELECT stock FROM offers WHERE id = %s", (offer["id"],)) == 0
    # the losers paid nothing
    losers = [w for w, r in zip(workers, results) if r.status_code != 201]
    assert all(st.balance(w) == 100 for w in losers)
    st.ledger_ok()


def test_per_person_limit_under_concurrency(st, sql):
    _, c = st.merchant()
    offer = st.offer(c, price=10, stock=100, limit_per_day=2, limit_per_month=3)
    (w,) = st.workers(1, points=1000)
    barrier = threading.Barrier(10)

    def order(_):
        barrier.wait()
        return st.order(w, offer["id"]).status_code

    with cf.ThreadPoolExecutor(max_workers=10) as ex:
        codes = list(ex.map(order, range(10)))
    assert codes.count(201) == 2, codes
    assert sql.scalar("SELECT count(*) FROM vouchers WHERE offer_id = %s AND worker_id = %s",
                      (offer["id"], w["id"])) == 2
    assert st.balance(w) == 980


def test_offer_edit_pause_visibility_and_idempotent_order(st, api, sql):
    m, c = st.merchant()
    offer = st.offer(c, price=50, stock=5)
    (w,) = st.workers(1, points=200)
    r = c.request("PATCH", f"/merchant/v1/offers/{offer['id']}", {"status": "paused"})
    assert r.status == 200 and r.json()["status"] == "paused"
    assert offer["id"] not in [o["id"] for o in api.get("/api/v1/mall/offers", token=w["token"]).json()["items"]]
    assert st.order(w, offer["id"]).status_code == 404
    c.request("PATCH", f"/merchant/v1/offers/{offer['id']}", {"status": "active", "price": 40})
    key = str(uuid.uuid4())
    r1 = st.order(w, offer["id"], idempotency_key=key)
    r2 = st.order(w, offer["id"], idempotency_key=key)
    assert r1.status_code == 201 and r2.status_code == 201
    assert r1.json()["id"] == r2.json()["id"] and r2.json()["idempotent_replay"] is True
    assert st.balance(w) == 160
    # not enough points: refused, stock untouched
    before = sql.scalar("SELECT stock FROM offers WHERE id = %s", (offer["id"],))
    (poor,) = st.workers(1, points=10)
    r = st.order(poor, offer["id"])
    assert r.status_code == 409 and error_code(r) == "insufficient_points"
    assert sql.scalar("SELECT stock FROM offers WHERE id = %s", (offer["id"],)) == before
    # a unit outside the merchant's area is refused; another merchant's offer is 404
    _, c2 = st.merchant()
    assert c2.request("GET", f"/merchant/v1/offers/{offer['id']}").status == 404
    r = c2.request("PATCH", f"/merchant/v1/offers/{offer['id']}", {"price": 1})
    assert r.status == 404


# ---- vouchers --------------------------------------------------------------------------------

def test_another_merchants_voucher_is_404_and_nothing_changes(st, sql):
    _, c1 = st.merchant()
    _, c2 = st.merchant()
    offer = st.offer(c1)
    (w,) = st.workers(1)
    v = st.order(w, offer["id"]).json()
    txns = sql.scalar("SELECT count(*) FROM ledger_txns")
    for method, path in (("GET", f"/merchant/v1/vouchers/{v['code']}"),
                         ("POST", f"/merchant/v1/vouchers/{v['code']}/capture"),
                         ("POST", f"/merchant/v1/vouchers/{v['code']}/refunds")):
        r = c2.request(method, path, {} if method == "POST" else None)
        assert r.status == 404 and error_code(r) == "voucher_not_found", r.text
    assert sql.scalar("SELECT state FROM vouchers WHERE id = %s", (v["id"],)) == "issued"
    assert sql.scalar("SELECT count(*) FROM ledger_txns") == txns
    # an unknown code looks the same
    r = c2.request("GET", "/merchant/v1/vouchers/0000-0000-0000")
    assert error_code(r) == "voucher_not_found"


def test_double_capture_concurrently_captures_once(st, sql):
    m, c = st.merchant()
    offer = st.offer(c, price=70)
    (w,) = st.workers(1)
    v = st.order(w, offer["id"]).json()
    barrier = threading.Barrier(8)

    def capture(_):
        barrier.wait()
        return c.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture", {})

    with cf.ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(capture, range(8)))
    codes = [r.status for r in results]
    assert codes.count(200) == 1, codes
    assert all(error_code(r) == "voucher_captured" for r in results if r.status != 200)
    assert sql.scalar("SELECT count(*) FROM ledger_txns WHERE kind = 'capture' "
                      "AND refs ->> 'voucher_id' = %s", (str(v["id"]),)) == 1
    assert sql.scalar("SELECT balance FROM accounts WHERE kind = 'merchant' AND owner_id = %s",
                      (m["id"],)) == 70
    r = c.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture", {})
    assert error_code(r) == "voucher_captured"
    st.ledger_ok()


def test_capture_after_expiry_refused_and_points_back(st, api, sql):
    _, c = st.merchant()
    offer = st.offer(c, price=100, stock=1, voucher_ttl_s=1)
    (w,) = st.workers(1, points=500)
    v = st.order(w, offer["id"]).json()
    assert st.balance(w) == 400
    time.sleep(1.3)
    r = c.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture", {})
    assert r.status == 409 and error_code(r) == "voucher_expired"
    deadline = time.time() + 10
    while time.time() < deadline and sql.scalar("SELECT state FROM vouchers WHERE id = %s",
                                                (v["id"],)) != "expired":
        time.sleep(0.1)
    assert sql.scalar("SELECT state FROM vouchers WHERE id = %s", (v["id"],)) == "expired"
    assert st.balance(w) == 500
    assert sql.scalar("SELECT stock FROM offers WHERE id = %s", (offer["id"],)) == 1
    r = api.get("/api/v1/workers/me/balance", token=w["token"])  # the cache follows
    assert r.json()["available"] == 500
    r = c.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture", {})
    assert error_code(r) == "voucher_expired"
    st.ledger_ok()


def test_cancel_before_capture_gives_points_back(st, api, sql):
    _, c = st.merchant()
    offer = st.offer(c, price=30, stock=1)
    (w,) = st.workers(1, points=100)
    (other,) = st.workers(1, points=100)
    v = st.order(w, offer["id"]).json()
    assert api.post(f"/api/v1/vouchers/{v['id']}/cancel", token=other["token"]).status_code == 404
    r = api.post(f"/api/v1/vouchers/{v['id']}/cancel", token=w["token"])
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert st.balance(w) == 100
    assert api.post(f"/api/v1/vouchers/{v['id']}/cancel", token=w["token"]).status_code == 409
    r = c.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture", {})
    assert error_code(r) == "voucher_cancelled"
    assert st.order(other, offer["id"]).status_code == 201  # the item is back in stock
    st.ledger_ok()


def test_spent_lots_come_back_with_their_expiry(st, api, sql, admin):
    """A cancelled voucher's points return into the lots they were taken from."""
    r = api.put(f"/api/v1/units/{st.street}/points-policy", {"expiry": "end_of_next_year"},
                token=admin["token"])
    assert r.status_code == 200, r.text
    _, c = st.merchant()
    offer = st.offer(c, price=300)
    (w,) = st.workers(1, points=1000)
    lots = sql.query("SELECT expires_at, remaining FROM point_lots WHERE worker_id = %s", (w["id"],))
    v = st.order(w, offer["id"]).json()
    assert sql.scalar("SELECT sum(remaining) FROM point_lots WHERE worker_id = %s", (w["id"],)) == 700
    api.post(f"/api/v1/vouchers/{v['id']}/cancel", token=w["token"])
    assert sql.query("SELECT expires_at, remaining FROM point_lots WHERE worker_id = %s",
                     (w["id"],)) == lots
    st.ledger_ok()


# ---- charges ---------------------------------------------------------------------------------

def test_charge_retried_with_same_key_charges_once(st, sql):
    _, c = st.merchant()
    (w,) = st.workers(1, points=500)
    pc = st.paycode(w)
    key = str(uuid.uuid4())
    r1 = c.request("POST", "/merchant/v1/charges", {"paycode": pc, "amount": 120}, idempotency_key=key)
    r2 = c.request("POST", "/merchant/v1/charges", {"paycode": pc, "amount": 120}, idempotency_key=key)
    assert r1.status == 201 and r2.status == 201, (r1.text, r2.text)
    a, b = r1.json(), r2.json()
    assert b.pop("idempotent_replay") is True
    assert a == b
    assert st.balance(w) == 380
    r3 = c.request("POST", "/merchant/v1/charges", {"paycode": pc, "amount": 121}, idempotency_key=key)
    assert r3.status == 422 and error_code(r3) == "idempotency_key_reused"
    assert sql.scalar("SELECT count(*) FROM charges WHERE worker_id = %s", (w["id"],)) == 1
    # the pay code is single use
    r4 = c.request("POST", "/merchant/v1/charges", {"paycode": pc, "amount": 120})
    assert r4.status == 409 and error_code(r4) == "paycode_used"
    st.ledger_ok()


def test_paycode_forgery_expiry_and_limits(st, sql):
    m, c = st.merchant()
    (w,) = st.workers(1, points=100)
    pc = st.paycode(w)
    parts = pc.split(".")
    assert parts[0] == "gpc1" and parts[2] == str(w["id"])
    (victim,) = st.workers(1, points=100)
    forged = ".".join([parts[0], parts[1], str(victim["id"]), parts[3], parts[4]])
    for bad in (forged, pc[:-1] + ("0" if pc[-1] != "0" else "1"), "hello"):
        r = c.request("POST", "/merchant/v1/charges", {"paycode": bad, "amount": 10})
        assert r.status == 400 and error_code(r) == "invalid_paycode"
    r = c.request("POST", "/merchant/v1/charges", {"paycode": pc, "amount": 101})
    assert r.status == 409 and error_code(r) == "insufficient_points"
    sql.execute("UPDATE paycodes SET expires_at = now() - interval '1 second' WHERE nonce = %s",
                (parts[1],))
    r = c.request("POST", "/merchant/v1/charges", {"paycode": pc, "amount": 10})
    assert r.status == 409 and error_code(r) == "paycode_expired"
    assert st.balance(w) == 100 and st.balance(victim) == 100
    # a worker of another street is outside the merchant's area: to this merchant, their pay
    # code does not exist (no existence oracle; tests/api/test_scope_leaks.py)
    other = st.workers(1, points=0, unit=sql.scalar(
        "INSERT INTO org_units (level, name) VALUES ('street', %s) RETURNING id", (unique_name("s"),)))[0]
    r = st.charge(c, other, 10)
    assert r.status == 404 and error_code(r) == "paycode_not_found"


# ---- refunds ---------------------------------------------------------------------------------

def test_refunds_never_exceed_the_original_sequentially(st, api, sql):
    m, c = st.merchant()
    (w,) = st.workers(1, points=500)
    ch = st.charge(c, w, 100).json()
    r = c.request("POST", f"/merchant/v1/charges/{ch['id']}/refunds", {"amount": 60, "reason": "broken"})
    assert r.status == 201 and r.json()["refunded_total"] == 60, r.text
    r = c.request("POST", f"/merchant/v1/charges/{ch['id']}/refunds", {"amount": 50})
    assert r.status == 409 and error_code(r) == "refund_exceeds_original"
    r = c.request("POST", f"/merchant/v1/charges/{ch['id']}/refunds", {})
    assert r.status == 201 and r.json()["amount"] == 40
    r = c.request("POST", f"/merchant/v1/charges/{ch['id']}/refunds", {"amount": 1})
    assert error_code(r) == "fully_refunded"
    assert st.balance(w) == 500
    r = api.get("/api/v1/charges", token=w["token"])
    assert [x["amount"] for x in r.json()["items"][0]["refunds"]] == [60, 40]
    # each refund is its own ledger transaction
    assert sql.scalar("SELECT count(*) FROM ledger_txns WHERE kind = 'refund' "
                      "AND refs ->> 'charge_id' = %s", (str(ch["id"]),)) == 2
    # another merchant cannot refund it
    _, c2 = st.merchant()
    assert c2.request("POST", f"/merchant/v1/charges/{ch['id']}/refunds", {}).status == 404
    st.ledger_ok()


def test_concurrent_refunds_cannot_exceed_the_original(st, sql):
    m, c = st.merchant()
    (w,) = st.workers(1, points=500)
    offer = st.offer(c, price=100)
    v = st.order(w, offer["id"]).json()
    assert c.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture", {}).status == 200
    ch = st.charge(c, w, 100).json()
    barrier = threading.Barrier(20)

    def refund(i):
        barrier.wait()
        if i % 2:
            return c.request("POST", f"/merchant/v1/charges/{ch['id']}/refunds", {"amount": 30})
        return c.request("POST", f"/merchant/v1/vouchers/{v['code']}/refunds", {"amount": 30})

    with cf.ThreadPoolExecutor(max_workers=20) as ex:
        results = list(ex.map(refund, range(20)))
    ok = [r for r in results if r.status == 201]
    assert len(ok) == 6, [r.status for r in results]  # 3 of 30 on each 100
    assert all(error_code(r) == "refund_exceeds_original" for r in results if r.status != 201)
    assert sql.scalar("SELECT refunded FROM charges WHERE id = %s", (ch["id"],)) == 90
    assert sql.scalar("SELECT refunded FROM vouchers WHERE id = %s", (v["id"],)) == 90
    assert sql.scalar("SELECT coalesce(sum(amount), 0) FROM refunds WHERE merchant_id = %s",
                      (m["id"],)) == 180
    assert st.balance(w) == 500 - 200 + 180
    st.ledger_ok()


def test_refund_window(st, sql):
    _, c = st.merchant()
    (w,) = st.workers(1, points=100)
    ch = st.charge(c, w, 10).json()
    sql.execute("UPDATE charges SET created_at = now() - interval '8 days' WHERE id = %s", (ch["id"],))
    r = c.request("POST", f"/merchant/v1/charges/{ch['id']}/refunds", {})
    assert r.status == 409 and error_code(r) == "refund_window_closed"


# ---- statements and settlement ---------------------------------------------------------------

LEDGER_TOTALS = """
SELECT count(*) FILTER (WHERE t.kind = 'capture'), coalesce(sum(p.amount) FILTER (WHERE t.kind = 'capture'), 0),
       count(*) FILTER (WHERE t.kind = 'charge'), coalesce(sum(p.amount) FILTER (WHERE t.kind = 'charge'), 0),
       count(*) FILTER (WHERE t.kind = 'refund'), -coalesce(sum(p.amount) FILTER (WHERE t.kind = 'refund'), 0)
  FROM postings p JOIN ledger_txns t ON t.id = p.txn_id
  JOIN accounts a ON a.id = p.account_id AND a.kind = 'merchant' AND a.owner_id = %s
 WHERE t.kind IN ('capture', 'charge', 'refund') AND t.created_at >= %s AND t.created_at < %s"""


def test_settlement_totals_equal_the_ledger_and_a_settled_period_is_frozen(st, api, sql):
    m, c = st.merchant()
    ws = st.workers(3, points=1000)
    offer = st.offer(c, price=150)
    for w in ws:
        v = st.order(w, offer["id"]).json()
        assert c.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture", {}).status == 200
        ch = st.charge(c, w, 40).json()
    c.request("POST", f"/merchant/v1/charges/{ch['id']}/refunds", {"amount": 15})
    # the open statement, JSON and CSV, equals the ledger
    r = c.request("GET", "/merchant/v1/statement")
    assert r.status == 200 and r.verified
    tot = r.json()["totals"]
    assert (tot["captures"], tot["capture_points"], tot["charges"], tot["charge_points"],
            tot["refunds"], tot["refund_points"], tot["net"]) == (3, 450, 3, 120, 1, 15, 555)
    r = c.request("GET", "/merchant/v1/statement?format=csv")
    assert r.status == 200 and r.headers["content-type"].startswith("text/csv") and r.verified
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("record,txn_id") and lines[-1] == "total,,,net,555,,,"
    assert sum(int(x.split(",")[4]) for x in lines if x.startswith("line,")) == 555
    # close the period
    r = api.post(f"/api/v1/merchants/{m['id']}/settlements", {}, token=st.token)
    assert r.status_code == 201, r.text
    s = r.json()
    want = sql.one(LEDGER_TOTALS, (m["id"], s["period_start"], s["period_end"]))
    t = s["totals"]
    assert (t["captures"], t["capture_points"], t["charges"], t["charge_points"], t["refunds"],
            t["refund_points"]) == tuple(want)
    assert t["net"] == 555
    assert sql.scalar("SELECT balance FROM accounts WHERE kind = 'merchant' AND owner_id = %s",
                      (m["id"],)) == 0
    assert sql.scalar("SELECT kind FROM ledger_txns WHERE id = %s", (s["txn_id"],)) == "settle"
    # activity after the close belongs to the next period; the settled one does not change
    st.charge(c, ws[0], 7)
    r = c.request("GET", f"/merchant/v1/settlements/{s['id']}")
    assert r.status == 200 and r.json()["totals"] == t
    assert r.json()["statement"]["totals"]["net"] == 555
    r = c.request("GET", f"/merchant/v1/settlements/{s['id']}?format=csv")
    assert r.text.strip().splitlines()[-1] == "total,,,net,555,,,"
    r = api.post(f"/api/v1/merchants/{m['id']}/settlements", {"until": s["period_end"]},
                 token=st.token)
    assert r.status_code == 409 and error_code(r) == "period_settled"
    with pytest.raises(Exception):
        sql.execute("UPDATE settlements SET net = 0 WHERE id = %s", (s["id"],))
    r = api.post(f"/api/v1/merchants/{m['id']}/settlements", {"month": "2999-01"}, token=st.token)
    assert error_code(r) == "period_not_over"
    r = api.get(f"/api/v1/merchants/{m['id']}/settlements", token=st.token)
    assert r.json()["items"][0]["id"] == s["id"]
    st.ledger_ok()


def test_merchant_staff_console(st, api, sql):
    m, c = st.merchant()
    st.offer(c)
    (staff,) = bulk_workers(sql, st.street, 1, role="volunteer")
    r = api.get(f"/api/v1/console/merchants/{m['id']}/offers", token=staff["token"])
    assert r.status_code == 404
    r = api.post(f"/api/v1/merchants/{m['id']}/staff", {"person_id": staff["id"]}, token=st.token)
    assert r.status_code == 200 and staff["id"] in [p["person_id"] for p in r.json()["staff"]]
    r = api.get("/api/v1/console/merchants", token=staff["token"])
    assert [x["id"] for x in r.json()["items"]] == [m["id"]]
    r = api.get(f"/api/v1/console/merchants/{m['id']}/offers", token=staff["token"])
    assert r.status_code == 200 and len(r.json()["items"]) == 1
    r = api.get(f"/api/v1/console/merchants/{m['id']}/statement?format=csv", token=staff["token"])
    assert r.status_code == 200 and r.text.startswith("record,")
    r = api.get(f"/api/v1/console/merchants/{m['id']}/settlements", token=staff["token"])
    assert r.status_code == 200
    r = api.delete(f"/api/v1/merchants/{m['id']}/staff/{staff['id']}", token=st.token)
    assert r.status_code == 200
    assert api.get(f"/api/v1/console/merchants/{m['id']}/offers", token=staff["token"]).status_code == 404


def test_webhook_url_policy_on_the_default_config(make_server, make_admin, sql):
    """The default (merchant.webhook_allow_private = false) refuses loopback, private and
    link-local URLs when they are set."""
    srv = make_server(env={"GRIDPOINTS_MERCHANT_WEBHOOK_ALLOW_PRIVATE": "false"})
    from gp import Api
    api = Api(srv)
    st = Street(api, make_admin(srv), sql, srv)
    _, c = st.merchant()
    for url in ("https://127.0.0.1:9443/hook", "https://[::1]/hook", "https://10.1.2.3/hook",
                "https://169.254.169.254/latest", "https://localhost/hook"):
        r = c.request("PUT", "/merchant/v1/webhook", {"url": url})
        assert r.status == 400 and error_code(r) == "webhook_url_not_allowed", (url, r.text)
    for url in ("http://shop.example.cn/hook", "https://u:p@shop.example.cn/hook"):
        r = c.request("PUT", "/merchant/v1/webhook", {"url": url})
        assert error_code(r) == "invalid_webhook_url"
    r = c.request("PUT", "/merchant/v1/webhook", {"url": "https://shop.example.cn/hooks/gp"})
    assert r.status == 200 and r.json()["secret"].startswith("whsec_")
    assert sql.scalar("SELECT webhook_secret_ct FROM merchants WHERE webhook_url = %s",
                      ("https://shop.example.cn/hooks/gp",)).startswith("v1.")
    api.close()


def test_replies_match_the_openapi_schemas(st, api):
    import jsonschema
    import yaml
    from gp import REPO
    from test_openapi import json_schema
    doc = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    components = {"components": json_schema(doc["components"])}

    def check(instance, name):
        jsonschema.validate(instance, {"$ref": f"#/components/schemas/{name}", **components})

    m, c = st.merchant()
    check(m, "Merchant")
    check(c.key, "MerchantKey")
    offer = st.offer(c, limit_per_day=3)
    check(offer, "Offer")
    (w,) = st.workers(1, points=500)
    v = st.order(w, offer["id"]).json()
    check(v, "Voucher")
    check(c.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture", {}).json(), "Voucher")
    ch = st.charge(c, w, 20).json()
    check(ch, "Charge")
    check(c.request("POST", f"/merchant/v1/charges/{ch['id']}/refunds", {"amount": 5}).json(), "Refund")
    check(c.request("GET", "/merchant/v1/statement").json(), "Statement")
    s = api.post(f"/api/v1/merchants/{m['id']}/settlements", {}, token=st.token).json()
    check(s, "Settlement")
    check(c.request("GET", f"/merchant/v1/settlements/{s['id']}").json(), "Settlement")
