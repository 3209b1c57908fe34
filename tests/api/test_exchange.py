"""Points exchange with another scheme (积分互通; issue 16; docs/EXCHANGE.md), between two real
deployments: a street (the session's server, PostgreSQL and Redis) and a "city" (a second
deployment with its own PostgreSQL and Redis, gp.deployment). Both serve HTTPS with a test
certificate that each trusts (exchange.ca_file) and exchange.allow_private lets them call each
other on 127.0.0.1.

Street -> city calls go through a small TCP proxy of this module (TLS passes through it
untouched), which can pass, refuse connections, or forward the request and drop the reply:
the faults of the protocol. City -> street calls go straight.

Covered: linking by a one-time code; transfers both ways with the rate 10 street : 1 city,
balances and clearing accounts agreeing on both sides; the partner down -> pending, completed
once when it returns; the reply lost after the partner committed -> no double credit,
completed by the status query; the same transfer delivered ten times at once -> one credit;
a bad signature, an unknown link, a limit exceeded, a replayed or stale request -> refused
with nothing changed; kill -9 of either side in the middle of transfers -> every transfer
completed or released, the clearing accounts mirror, reconciliation clean; a row deleted by
hand -> reconciliation names the transfer; the worked example of docs/EXCHANGE.md, byte for
byte."""

import copy
import json
import re
import secrets
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gp import Api, Sql, free_port, unique_name, unique_phone
from gp.deployment import Deployment, tls_env, tls_files
from loop import bulk_workers
from mall import mc

RATE_STREET, RATE_CITY = 10, 1  # 10 street points = 1 city point
TIMEOUT_S = 2


class Proxy:
    """An HTTPS proxy 127.0.0.1:port -> 127.0.0.1:target that terminates TLS with the test
    certificate (which the street trusts) and forwards each request. mode: "pass"; "refuse"
    (accept and close at once: the partner is down); "drop" (forward the request, read the
    partner's reply and throw it away, then close: the reply is lost after the partner
    committed). .seen lists (mode, request line) of every request forwarded."""

    def __init__(self, target, cert, key):
        self.target = target
        self.mode = "pass"
        self.seen = []
        self.sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.sctx.load_cert_chain(str(cert), str(key))
        self.cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.cctx.check_hostname = False
        self.cctx.verify_mode = ssl.CERT_NONE
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(128)
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c, self.mode), daemon=True).start()

    @staticmethod
    def _read_http(s):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        want = int(m.group(1)) if m else 0
        while len(body) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body

    def _serve(self, raw, mode):
        if mode == "refuse":
            raw.close()
            return
        c = u = None
        try:
            raw.settimeout(15)
            c = self.sctx.wrap_socket(raw, server_side=True)
            req = self._read_http(c)
            if not req:
                return
            u = self.cctx.wrap_socket(socket.create_connection(("127.0.0.1", self.target),
                                                               timeout=15))
            u.sendall(req)
            resp = self._read_http(u)
            self.seen.append((mode, req.split(b"\r\n", 1)[0].decode()))
            if mode != "drop":
                c.sendall(resp)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for x in (c, u, raw):
                try:
                    if x is not None:
                        x.close()
                except OSError:
                    pass

    def close(self):
        self.stopped = True
        self.sock.close()


def key_id():
    return "xp_" + secrets.token_hex(8)


def exchange_env(cert, key, tls_port):
    env = tls_env(cert, key, tls_port)
    env.update({"GRIDPOINTS_EXCHANGE_ALLOW_PRIVATE": "true",
                "GRIDPOINTS_EXCHANGE_CA_FILE": str(cert),
                "GRIDPOINTS_EXCHANGE_TIMEOUT": f"{TIMEOUT_S}s",
                "GRIDPOINTS_EXCHANGE_BACKOFF": "1s",
                "GRIDPOINTS_EXCHANGE_BACKOFF_MAX": "1s",
                "GRIDPOINTS_EXCHANGE_SEND_FOR": "3s",
                "GRIDPOINTS_EXCHANGE_RECON_LAG": "0s"})
    return env


def create_admin(cli, server):
    phone, password = unique_phone(), "Pw-" + secrets.token_hex(6)
    p = cli("create-admin", "--phone", phone, "--name", unique_name("admin"), "--street",
            unique_name("street"), env={"GRIDPOINTS_ADMIN_PASSWORD": password})
    ids = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])
    c = Api(server)
    r = c.post("/api/v1/auth/login", {"phone": phone, "password": password})
    c.close()
    assert r.status_code == 200, r.text
    return {"person_id": ids["person_id"], "unit_id": ids["unit_id"], "token": r.json()["token"]}


class Side:
    """One deployment's view: its server, admin, SQL, and the partner row for the other side."""

    def __init__(self, name, server, sql, cli, tls_port):
        self.name, self.server, self.sql, self.cli, self.tls_port = name, server, sql, cli, tls_port
        self.api = Api(server)
        self.admin = create_admin(cli, server)
        self.street = self.admin["unit_id"]
        self.sql.scalar("SELECT gp_issue(%s, %s, 100000000, 'exchange tests')",
                        (self.admin["person_id"], self.street))
        self.partner = None
        self.keys = None  # (out key id, out secret, in key id, in secret)

    def register(self, code, base_url, out_kid, out_sec, in_kid, in_sec, num, den, **over):
        body = {"unit_id": self.street, "code": code, "name": f"{code} scheme",
                "base_url": base_url, "out_key_id": out_kid, "out_secret": out_sec,
                "in_key_id": in_kid, "in_secret": in_sec, "rate_num": num, "rate_den": den,
                "worker_daily_limit": 100000, "partner_daily_limit": 10000000}
        body.update(over)
        r = self.api.post("/api/v1/exchange/partners", body, token=self.admin["token"])
        assert r.status_code == 201, r.text
        self.partner = r.json()
        self.keys = (out_kid, out_sec, in_kid, in_sec)
        return self.partner

    def workers(self, n, points):
        ws = bulk_workers(self.sql, self.street, n)
        for w in ws:
            self.sql.scalar("SELECT gp_adjust(%s, %s, %s, 'seed')",
                            (self.admin["person_id"], w["id"], points))
        return ws

    def balance(self, w):
        return self.sql.scalar("SELECT balance FROM accounts WHERE kind = 'worker' "
                               "AND owner_id = %s", (w["id"],))

    def clearing(self):
        return self.sql.scalar("SELECT balance FROM accounts WHERE kind = 'clearing' "
                               "AND owner_id = %s", (self.partner["id"],))

    def transfers(self, **where):
        q = "SELECT transfer_id, direction, amount, remote_amount, state, reason, attempts " \
            "FROM exchange_transfers WHERE partner_id = %s"
        args = [self.partner["id"]]
        for k, v in where.items():
            q += f" AND {k} = %s"
            args.append(v)
        return self.sql.query(q + " ORDER BY id", args, dicts=True)

    def signed(self):
        """A signed client of this side's plain port as the partner (its in key)."""
        return mc.Client(self.server.url, self.keys[2], self.keys[3])

    def ledger_ok(self):
        return self.sql.scalar("SELECT gp_ledger_check()")


@pytest.fixture(scope="module")
def pair(server_factory, migrated, cli, services, gp_tmp):
    cert, key = tls_files(gp_tmp / "exchange-tls")
    street_tls, city_tls = free_port(), free_port()
    city = Deployment("city", gp_tmp, env=exchange_env(cert, key, city_tls))
    street_srv = server_factory.new("street", env=exchange_env(cert, key, street_tls))
    street_sql = Sql(services.admin_url)
    proxy = Proxy(city_tls, cert, key)
    s = Side("street", street_srv, street_sql, cli, street_tls)
    c = Side("city", city.server, city.sql, city.cli, city_tls)
    s.proxy = c.proxy = proxy
    yield s, c
    proxy.close()
    s.api.close()
    c.api.close()
    street_sql.close()
    street_srv.stop()
    city.stop()


def fresh(pair, street_over=None, city_over=None):
    """A new partner pair on both deployments (its own keys and clearing accounts, so that each
    test's clearing positions and statements are its own): street -> city through the proxy."""
    s, c = copy.copy(pair[0]), copy.copy(pair[1])
    code = "p" + secrets.token_hex(4)
    a_kid, a_sec, b_kid, b_sec = key_id(), secrets.token_hex(24), key_id(), secrets.token_hex(24)
    # street -> city signed with key A, city -> street with key B
    s.register(code, f"https://127.0.0.1:{s.proxy.port}", a_kid, a_sec, b_kid, b_sec,
               RATE_STREET, RATE_CITY, **(street_over or {}))
    c.register(code, f"https://127.0.0.1:{s.tls_port}", b_kid, b_sec, a_kid, a_sec,
               RATE_CITY, RATE_STREET, **(city_over or {}))
    return s, c


def link(s, c, sw, cw):
    """Links street worker sw with city worker cw: a code from the city, confirmed by the street."""
    r = c.api.post("/api/v1/exchange/link-codes", {"partner_id": c.partner["id"]}, token=cw["token"])
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    assert re.fullmatch(r"[0-9A-F]{12}", code)
    r = s.api.post("/api/v1/exchange/links", {"partner_id": s.partner["id"], "code": code},
                   token=sw["token"])
    assert r.status_code == 201, r.text
    return r.json(), code


def linked_pair(s, c, street_points=10000, city_points=1000):
    sw, = s.workers(1, street_points)
    cw, = c.workers(1, city_points)
    link(s, c, sw, cw)
    return sw, cw


def send(side, w, amount, expect=202):
    r = side.api.post("/api/v1/exchange/transfers", {"partner_id": side.partner["id"],
                                                     "amount": amount}, token=w["token"])
    assert r.status_code == expect, r.text
    return r.json()


def wait_state(side, w, tid_id, states=("completed", "rejected"), timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        r = side.api.get(f"/api/v1/exchange/transfers/{tid_id}", token=w["token"])
        assert r.status_code == 200, r.text
        if r.json()["state"] in states:
            return r.json()
        assert time.monotonic() < deadline, f"transfer still {r.json()}"
        time.sleep(0.1)


def wait_no_pending(side, timeout=60):
    deadline = time.monotonic() + timeout
    while side.sql.scalar("SELECT count(*) FROM exchange_transfers WHERE state = 'pending' "
                          "AND partner_id = %s", (side.partner["id"],)):
        assert time.monotonic() < deadline, "transfers still pending"
        time.sleep(0.2)


def mirror_ok(s, c):
    # street clearing in street points, city clearing in city points: opposite values at the rate
    assert s.clearing() * RATE_CITY == -c.clearing() * RATE_STREET, (s.clearing(), c.clearing())


def reconcile(side, day=None):
    day = day or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    r = side.api.post(f"/api/v1/exchange/partners/{side.partner['id']}/reconcile", {"day": day},
                      token=side.admin["token"])
    assert r.status_code == 200, r.text
    return r.json()


# --------------------------------------------------------------------------------------------


def test_link_and_transfer_both_ways(pair):
    s, c = fresh(pair)
    s0, c0 = s.clearing(), c.clearing()
    assert s0 == 0 and c0 == 0
    sw, cw = linked_pair(s, c)
    links = s.api.get("/api/v1/exchange/links", token=sw["token"]).json()["items"]
    assert len(links) == 1 and links[0]["partner_id"] == s.partner["id"]
    # street -> city: 100 street points = 10 city points
    t = send(s, sw, 100)
    assert t["state"] == "pending" and t["amount"] == 100 and t["remote_amount"] == 10
    assert s.balance(sw) == 9900
    done = wait_state(s, sw, t["id"])
    assert done["state"] == "completed", done
    assert c.balance(cw) == 1010 and s.balance(sw) == 9900
    # city -> street: 5 city points = 50 street points
    t2 = send(c, cw, 5)
    assert wait_state(c, cw, t2["id"])["state"] == "completed"
    assert s.balance(sw) == 9950 and c.balance(cw) == 1005
    assert s.clearing() - s0 == 100 - 50 and c.clearing() - c0 == -10 + 5
    mirror_ok(s, c)
    # the worker sees both transfers, the in one too
    items = s.api.get("/api/v1/exchange/transfers", token=sw["token"]).json()["items"]
    assert {(i["direction"], i["state"]) for i in items} == {("out", "completed"),
                                                             ("in", "accepted")}
    # amounts that do not convert exactly are refused: rounding never creates points
    r = s.api.post("/api/v1/exchange/transfers", {"partner_id": s.partner["id"], "amount": 15},
                   token=sw["token"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "inexact_amount"
    assert s.balance(sw) == 9950
    # both ledgers stay balanced; reconciliation of today is clean on both sides
    assert s.ledger_ok() == []
    assert c.ledger_ok() == []
    assert reconcile(s)["mismatches"] == []
    assert reconcile(c)["mismatches"] == []
    # settlement of the net position: sent 100, received 50 (street points); decision times
    # have sub-second precision, the period's end whole seconds
    time.sleep(1.1)
    now = datetime.now(timezone.utc)
    period = {"from": "2020-01-01T00:00:00Z", "to": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    r = s.api.post(f"/api/v1/exchange/partners/{s.partner['id']}/settlements", period,
                   token=s.admin["token"])
    assert r.status_code == 201, r.text
    assert (r.json()["sent"], r.json()["received"], r.json()["net"]) == (100, 50, 50)
    r = s.api.post(f"/api/v1/exchange/partners/{s.partner['id']}/settlements", period,
                   token=s.admin["token"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "period_overlaps"
    # a worker of the street cannot settle or read another street's partner
    r = s.api.post(f"/api/v1/exchange/partners/{s.partner['id']}/settlements", period,
                   token=sw["token"])
    assert r.status_code == 404


def test_daily_reconciliation_timer(pair):
    """The exchange_recon sweep reconciles each day once it is over (recon_lag 0 here): two
    past days are due, both get reconciled in order, and the next day is today."""
    s, c = fresh(pair)
    s.sql.execute("UPDATE exchange_partners SET recon_next_day = current_date - 2 WHERE id = %s",
                  (s.partner["id"],))
    deadline = time.monotonic() + 20
    while s.sql.scalar("SELECT recon_next_day < (now() AT TIME ZONE 'UTC')::date "
                       "FROM exchange_partners WHERE id = %s", (s.partner["id"],)):
        assert time.monotonic() < deadline, "the reconciliation timer did not run"
        time.sleep(0.2)
    rows = s.sql.query("SELECT day, error, mismatches FROM exchange_reconciliations "
                       "WHERE partner_id = %s ORDER BY day", (s.partner["id"],), dicts=True)
    assert len(rows) == 2 and all(r["error"] is None and r["mismatches"] == 0 for r in rows), rows


def city_rows(c, tid):
    return c.sql.query("SELECT state, amount, reason FROM exchange_transfers "
                       "WHERE partner_id = %s AND transfer_id = %s", (c.partner["id"], tid),
                       dicts=True)


def transfer_id_of(side, row_id):
    return side.sql.scalar("SELECT transfer_id FROM exchange_transfers WHERE id = %s", (row_id,))


def test_partner_down_then_completed_once(pair):
    s, c = fresh(pair)
    sw, cw = linked_pair(s, c)
    s.proxy.mode = "refuse"
    try:
        t = send(s, sw, 200)
        deadline = time.monotonic() + 10
        while s.sql.scalar("SELECT attempts FROM exchange_transfers WHERE id = %s", (t["id"],)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        row = s.api.get(f"/api/v1/exchange/transfers/{t['id']}", token=sw["token"]).json()
        assert row["state"] == "pending" and row["last_error"], row
        assert s.balance(sw) == 9800 and c.balance(cw) == 1000  # held, nothing credited
    finally:
        s.proxy.mode = "pass"
    done = wait_state(s, sw, t["id"])
    assert done["state"] == "completed", done
    tid = transfer_id_of(s, t["id"])
    assert [r["state"] for r in city_rows(c, tid)] == ["accepted"]
    assert c.balance(cw) == 1020 and s.balance(sw) == 9800
    mirror_ok(s, c)


def test_partner_down_past_deadline_releases_by_status_query(pair):
    s, c = fresh(pair)
    sw, cw = linked_pair(s, c)
    s.proxy.mode = "refuse"
    try:
        t = send(s, sw, 300)
        # past exchange.send_for (3 s) the timer asks for the status instead of sending
        time.sleep(4)
        assert s.balance(sw) == 9700
    finally:
        s.proxy.mode = "pass"
    done = wait_state(s, sw, t["id"])
    # the city never received it: the status query records it as rejected for good, and the
    # hold goes back to the worker
    assert done["state"] == "rejected" and done["reason"] == "not_received", done
    assert s.balance(sw) == 10000 and c.balance(cw) == 1000
    tid = transfer_id_of(s, t["id"])
    assert [r["state"] for r in city_rows(c, tid)] == ["rejected"]
    # delivering it now changes nothing: the answer is final
    body = s.sql.scalar("SELECT gp_xchg_message(t) FROM exchange_transfers t WHERE id = %s",
                        (t["id"],))
    r = c.signed().request("POST", "/exchange/v1/transfers", body)
    assert r.status == 200 and r.verified and r.json()["state"] == "rejected", r.text
    assert c.balance(cw) == 1000
    mirror_ok(s, c)
    assert s.clearing() == 0 and c.clearing() == 0


def test_reply_lost_no_double_credit_completed_by_status_query(pair):
    s, c = fresh(pair)
    sw, cw = linked_pair(s, c)
    s.proxy.seen.clear()
    s.proxy.mode = "drop"
    try:
        t = send(s, sw, 500)
        tid = None
        deadline = time.monotonic() + 10
        while not tid or not city_rows(c, tid):
            tid = transfer_id_of(s, t["id"])
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # the city committed; the street heard nothing and keeps the transfer pending, sending
        # it again with the same id until send_for, then asking for its status
        time.sleep(4)
        row = s.api.get(f"/api/v1/exchange/transfers/{t['id']}", token=sw["token"]).json()
        assert row["state"] == "pending" and row["attempts"] >= 2, row
    finally:
        s.proxy.mode = "pass"
    done = wait_state(s, sw, t["id"])
    assert done["state"] == "completed", done
    assert [r["state"] for r in city_rows(c, tid)] == ["accepted"]
    assert c.balance(cw) == 1050 and s.balance(sw) == 9500  # credited once
    assert any(m == "drop" and ln.startswith("POST /exchange/v1/transfers ")
               for m, ln in s.proxy.seen), s.proxy.seen
    assert any(m == "pass" and ln.startswith(f"POST /exchange/v1/transfers/{tid}/status ")
               for m, ln in s.proxy.seen), s.proxy.seen
    mirror_ok(s, c)


def message(s, sw, tid=None, amount=100, **over):
    """A transfer message street -> city as the street would send it, for sending by hand."""
    ref, remote = s.sql.one("SELECT local_ref, remote_ref FROM exchange_links WHERE worker_id = %s "
                            "AND partner_id = %s AND unlinked_at IS NULL",
                            (sw["id"], s.partner["id"]))
    m = {"transfer_id": tid or "xt_" + secrets.token_hex(12), "from_account": ref,
         "to_account": remote, "amount": amount, "credit": amount * RATE_CITY // RATE_STREET,
         "sent_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    m.update(over)
    return m


def test_same_transfer_ten_times_concurrently_one_credit(pair):
    s, c = fresh(pair)
    sw, cw = linked_pair(s, c)
    m = message(s, sw, amount=700)
    client = c.signed()
    with ThreadPoolExecutor(10) as ex:
        replies = list(ex.map(lambda _: client.request("POST", "/exchange/v1/transfers", m),
                              range(10)))
    assert all(r.status == 200 and r.verified for r in replies), [r.text for r in replies]
    assert {r.body for r in replies} == {replies[0].body}  # the same answer, byte for byte
    assert replies[0].json()["state"] == "accepted"
    assert c.balance(cw) == 1070
    assert len(city_rows(c, m["transfer_id"])) == 1
    # the same id with another amount is a conflict, not a second transfer
    r = client.request("POST", "/exchange/v1/transfers", dict(m, amount=800, credit=80))
    assert r.status == 409 and r.verified and r.json()["error"]["code"] == "transfer_conflict"
    assert c.balance(cw) == 1070


def test_refusals_change_nothing(pair):
    s, c = fresh(pair, city_over={"worker_daily_limit": 50})
    sw, cw = linked_pair(s, c)
    client = c.signed()
    clearing0, n0 = c.clearing(), len(c.transfers())

    def unchanged():
        assert c.balance(cw) == 1000 and c.clearing() == clearing0

    # a bad signature: another secret
    bad = mc.Client(c.server.url, c.keys[2], "x" * 48)
    r = bad.request("POST", "/exchange/v1/transfers", message(s, sw))
    assert r.status == 401 and r.json()["error"]["code"] == "bad_signature"
    # an unknown key
    r = mc.Client(c.server.url, key_id(), "y" * 48).request("POST", "/exchange/v1/transfers",
                                                           message(s, sw))
    assert r.status == 401 and r.json()["error"]["code"] == "unknown_key"
    # a stale request (outside exchange.signature_window)
    r = client.request("POST", "/exchange/v1/transfers", message(s, sw),
                       ts=int(time.time()) - 3600)
    assert r.status == 401 and r.json()["error"]["code"] == "timestamp_out_of_window"
    # a replayed request: the same signed bytes again
    m = message(s, sw, amount=10)
    body = json.dumps(m).encode()
    auth, ts, nonce = mc.authorization(client.key_id, client.secret, "POST",
                                       "/exchange/v1/transfers", body)
    h = {"Authorization": auth, "Content-Type": "application/json"}
    first = client.send_raw("POST", "/exchange/v1/transfers", body, h, request_nonce=nonce)
    assert first.status == 200 and first.verified and first.json()["state"] == "accepted"
    replay = client.send_raw("POST", "/exchange/v1/transfers", body, h, request_nonce=nonce)
    assert replay.status == 401 and replay.json()["error"]["code"] == "nonce_reused"
    assert c.balance(cw) == 1001
    clearing0 -= 1
    n0 += 1

    def unchanged():  # noqa: F811 -- after the one accepted transfer above
        assert c.balance(cw) == 1001 and c.clearing() == clearing0

    unchanged()
    assert len(c.transfers()) == n0  # refused requests left no row
    # an unknown link: refused (rejected, the answer recorded so that it stays the same)
    r = client.request("POST", "/exchange/v1/transfers",
                       message(s, sw, to_account="xa_" + "0" * 24))
    assert r.status == 200 and r.json()["state"] == "rejected" and \
        r.json()["reason"] == "unknown_link", r.text
    unchanged()
    # over the worker's daily limit at the city (50 city points)
    r = client.request("POST", "/exchange/v1/transfers", message(s, sw, amount=600))
    assert r.status == 200 and r.json()["reason"] == "worker_limit_exceeded", r.text
    unchanged()
    # a credit that is not the amount at the city's rate
    r = client.request("POST", "/exchange/v1/transfers", message(s, sw, amount=100, credit=11))
    assert r.json()["reason"] == "rate_mismatch", r.text
    unchanged()
    # hostile bodies: 400, nothing stored
    for junk in ({}, {"transfer_id": "x"}, dict(message(s, sw), amount=-5),
                 dict(message(s, sw), extra=1), dict(message(s, sw), sent_at="yesterday")):
        r = client.request("POST", "/exchange/v1/transfers", junk)
        assert r.status == 400, (junk, r.text)
    unchanged()
    # the street refuses what is over its own limits before holding anything
    s2, c2 = fresh(pair, street_over={"worker_daily_limit": 100})
    sw2, cw2 = linked_pair(s2, c2)
    r = s2.api.post("/api/v1/exchange/transfers", {"partner_id": s2.partner["id"],
                                                   "amount": 200}, token=sw2["token"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "worker_limit_exceeded"
    assert s2.balance(sw2) == 10000
    # without a link
    lone, = s2.workers(1, 100)
    r = s2.api.post("/api/v1/exchange/transfers", {"partner_id": s2.partner["id"], "amount": 10},
                    token=lone["token"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_linked"
    # another street's partner answers as a missing one
    r = s2.api.get(f"/api/v1/exchange/partners/{s2.partner['id']}", token=c.admin["token"])
    assert r.status_code in (401, 404)


def test_kill9_either_side_mid_transfers(pair):
    s, c = fresh(pair)
    pairs = [linked_pair(s, c) for _ in range(3)]
    sent = []

    def fire(n):
        for i in range(n):
            sw, cw = pairs[i % 3]
            sent.append(("s", sw, send(s, sw, 10)))
            sent.append(("c", cw, send(c, cw, 1)))

    fire(6)
    s.server.kill9()
    s.server.start()
    fire(6)
    c.server.kill9()
    time.sleep(0.5)
    c.server.start()
    fire(3)
    wait_no_pending(s)
    wait_no_pending(c)
    for side, w, t in sent:
        st = (s if side == "s" else c).api.get(f"/api/v1/exchange/transfers/{t['id']}",
                                               token=w["token"]).json()["state"]
        assert st in ("completed", "rejected")
    # every worker's balance is what the completed transfers say
    for sw, cw in pairs:
        out_s = s.sql.scalar("SELECT coalesce(sum(amount), 0) FROM exchange_transfers "
                             "WHERE worker_id = %s AND direction = 'out' AND state = 'completed'",
                             (sw["id"],))
        in_s = s.sql.scalar("SELECT coalesce(sum(amount), 0) FROM exchange_transfers "
                            "WHERE worker_id = %s AND direction = 'in' AND state = 'accepted'",
                            (sw["id"],))
        assert s.balance(sw) == 10000 - out_s + in_s
    mirror_ok(s, c)
    assert s.ledger_ok() == [] and c.ledger_ok() == []
    assert reconcile(s)["mismatches"] == []
    assert reconcile(c)["mismatches"] == []


def test_row_deleted_by_hand_named_by_reconciliation(pair):
    s, c = fresh(pair)
    sw, cw = linked_pair(s, c)
    t = send(s, sw, 100)
    assert wait_state(s, sw, t["id"])["state"] == "completed"
    tid = transfer_id_of(s, t["id"])
    c.sql.execute("DELETE FROM exchange_transfers WHERE partner_id = %s AND transfer_id = %s",
                  (c.partner["id"], tid))
    rs = reconcile(s)
    assert [(m["transfer_id"], m["kind"]) for m in rs["mismatches"]] == [(tid, "missing_there")]
    rc = reconcile(c)
    assert [(m["transfer_id"], m["kind"]) for m in rc["mismatches"]] == [(tid, "missing_here")]
    # an auditor's view: the anomaly names the transfer
    r = s.api.get("/audit/v1/exchange/mismatches", params={"unit_id": s.street},
                  token=s.admin["token"])
    assert r.status_code == 200, r.text
    assert any(i["subject"]["transfer_id"] == tid and i["rule"] == "exchange_mismatch"
               for i in r.json()["items"])
    r = s.api.get("/audit/v1/anomalies", params={"unit_id": s.street, "rule": "exchange_mismatch"},
                  token=s.admin["token"])
    assert r.status_code == 200, r.text
    assert any(i["subject"]["transfer_id"] == tid and i["evidence"]["kind"] == "missing_there"
               for i in r.json()["items"]), r.json()
    r = s.api.get(f"/api/v1/exchange/partners/{s.partner['id']}/reconciliations",
                  token=s.admin["token"])
    assert r.json()["items"][0]["mismatches"][0]["transfer_id"] == tid


def doc_example():
    """The worked example of docs/EXCHANGE.md: (values, [fenced block texts])."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "EXCHANGE.md").read_text()
    ex = text[text.index("## 8. Worked example"):]
    values = dict(re.findall(r"(?m)^    (key id|secret|method|path|ts|nonce) +(\S+)$", ex))
    blocks = re.findall(r"```(?:json|text)\n(.*?)```", ex, re.S)
    return values, blocks


def test_worked_example():
    """Byte for byte: the body's hash, the string to sign, the Authorization header, the
    response string and GP-Signature of docs/EXCHANGE.md follow from its fixed values."""
    v, (body, sts, auth, reply, rstr, gpsig) = doc_example()
    body, reply = body.rstrip("\n").encode(), reply.rstrip("\n").encode()
    ts = int(v["ts"])
    assert mc.string_to_sign(v["key id"], v["method"], v["path"], ts, v["nonce"], body) == sts
    want, _, _ = mc.authorization(v["key id"], v["secret"], v["method"], v["path"], body, ts,
                                  v["nonce"])
    assert want == auth.rstrip("\n")
    rts = int(re.match(r"ts=(\d+),", gpsig).group(1))
    assert mc.response_string(v["key id"], v["nonce"], 200, rts, reply) == rstr
    assert f"ts={rts},sig={mc.hmac_hex(v['secret'], rstr)}" == gpsig.rstrip("\n")
    assert mc.verify_response(v["key id"], v["secret"], v["nonce"], 200, gpsig.rstrip("\n"),
                              reply, now=rts)
    # the body is what the server sends for such a transfer (jsonb's key order), and the reply
    # what it answers
    m = json.loads(body)
    assert m["credit"] * RATE_STREET == m["amount"] * RATE_CITY
    assert list(json.loads(reply)) == ["state", "credit", "reason", "transfer_id"]


def test_server_message_bytes_match_the_example(pair):
    """gp_xchg_message and gp_xchg_wire_reply write the example's exact bytes."""
    s, _ = pair
    v, (body, _, _, reply, _, _) = doc_example()
    m = json.loads(body)
    got = s.sql.scalar(
        "SELECT gp_xchg_message(ROW(0, 0, 0, %s, 'out', NULL, NULL, %s, %s, %s, %s, 'pending', "
        "NULL, %s::timestamptz, now(), NULL, 0, now(), NULL, NULL, NULL, NULL, NULL)"
        "::exchange_transfers)",
        (m["transfer_id"], m["from_account"], m["to_account"], m["amount"], m["credit"],
         m["sent_at"]))
    assert got == body.rstrip("\n")
    r = json.loads(reply)
    got = s.sql.scalar(
        "SELECT gp_xchg_wire_reply(ROW(0, 0, 0, %s, 'in', NULL, NULL, 'a', 'b', %s, 100, "
        "'accepted', NULL, now(), now(), now(), 0, NULL, NULL, NULL, NULL, NULL, NULL)"
        "::exchange_transfers)::text", (r["transfer_id"], r["credit"]))
    assert got == reply.rstrip("\n")


def test_inputs_guards_and_link_codes(pair):
    s, c = fresh(pair)
    tok = s.admin["token"]
    base = {"unit_id": s.street, "code": "bad", "name": "x", "base_url": "https://127.0.0.1:1",
            "out_key_id": key_id(), "out_secret": "s" * 20, "in_key_id": key_id(),
            "in_secret": "t" * 20, "rate_num": 1, "rate_den": 1, "worker_daily_limit": 1,
            "partner_daily_limit": 1}
    for field, value in (("base_url", "http://127.0.0.1:1"), ("base_url", "https://u@h/"),
                         ("out_key_id", "mk_0123456789abcdef"), ("code", "Bad Code"),
                         ("rate_num", 0), ("in_key_id", base["out_key_id"]),
                         ("extra", 1)):
        r = s.api.post("/api/v1/exchange/partners", dict(base, **{field: value}), token=tok)
        assert r.status_code == 400, (field, value, r.text)
        assert r.json()["error"]["field"] == field, r.text
    assert s.sql.scalar("SELECT count(*) FROM exchange_partners WHERE code = 'bad'") == 0
    # a worker cannot register partners
    w, = s.workers(1, 10)
    r = s.api.post("/api/v1/exchange/partners", dict(base, code="bad2"), token=w["token"])
    assert r.status_code in (403, 404), r.text
    # partner routes want a partner signature: not a session, not a merchant key
    r = c.api.post("/exchange/v1/transfers", {}, token=c.admin["token"])
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_signature"
    r = c.api.get("/exchange/v1/statements/2026-01-01", token=None, headers={
        "Authorization": "GP1-HMAC-SHA256 key=mk_0123456789abcdef,ts=1,nonce=n0123456789abcdef,"
                         "sig=" + "0" * 64})
    assert r.status_code == 401 and r.json()["error"]["code"] == "malformed_signature"
    r = c.signed().request("GET", "/exchange/v1/statements/2026-02-31")
    assert r.status == 400 and r.verified
    # link codes: unknown, used twice, and one worker linked once per partner
    sw, = s.workers(1, 100)
    cw, = c.workers(1, 100)
    r = s.api.post("/api/v1/exchange/links", {"partner_id": s.partner["id"],
                                              "code": "00000000AAAA"}, token=sw["token"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "link_code_not_found"
    _, code = link(s, c, sw, cw)
    sw2, = s.workers(1, 100)
    r = s.api.post("/api/v1/exchange/links", {"partner_id": s.partner["id"], "code": code},
                   token=sw2["token"])
    assert r.status_code == 404, r.text
    r = c.api.post("/api/v1/exchange/link-codes", {"partner_id": c.partner["id"]},
                   token=cw["token"])
    r = s.api.post("/api/v1/exchange/links", {"partner_id": s.partner["id"],
                                              "code": r.json()["code"]}, token=sw["token"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_linked"
    # another street's worker does not see this partner
    r = c.api.post("/api/v1/exchange/link-codes", {"partner_id": s.partner["id"] + 10 ** 6},
                   token=cw["token"])
    assert r.status_code == 404
    # unlink: transfers to the link are refused from then on, on the receiving side too
    lid = s.api.get("/api/v1/exchange/links", token=sw["token"]).json()["items"][0]["id"]
    assert s.api.delete(f"/api/v1/exchange/links/{lid}", token=sw["token"]).status_code == 200
    r = s.api.post("/api/v1/exchange/transfers", {"partner_id": s.partner["id"], "amount": 10},
                   token=sw["token"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_linked"
    t = send(c, cw, 1)
    done = wait_state(c, cw, t["id"])
    assert done["state"] == "rejected" and done["reason"] == "unknown_link", done
    assert c.balance(cw) == 100 and s.balance(sw) == 100


def test_exchange_disabled_by_configuration(make_server, migrated):
    """exchange.enabled = false: partner routes and the calls that need a partner answer 404
    exchange_disabled; the server still starts and stops cleanly."""
    srv = make_server(env={"GRIDPOINTS_EXCHANGE_ENABLED": "false"})
    api = Api(srv)
    r = api.post("/exchange/v1/transfers", {})
    assert r.status_code == 404 and r.json()["error"]["code"] == "exchange_disabled"
    api.close()
