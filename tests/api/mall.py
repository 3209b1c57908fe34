"""Helpers of the merchant suites: a street with a street admin, funded workers, onboarded
merchants with API keys, and the shipped signing client (scripts/merchant-client.py), which
the tests import so that the client merchants get is the one under test."""

import importlib.util
import json
import uuid

from gp import REPO, Api, unique_name, unique_phone
from loop import bulk_workers

_spec = importlib.util.spec_from_file_location("merchant_client", REPO / "scripts" / "merchant-client.py")
mc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mc)


def create_admin(cli, server):
    """A new street and its street admin (gridpointsd create-admin), logged in on `server`."""
    phone, password = unique_phone(), "Pw-" + uuid.uuid4().hex[:12]
    p = cli("create-admin", "--phone", phone, "--name", unique_name("admin"), "--street",
            unique_name("street"), env={"GRIDPOINTS_ADMIN_PASSWORD": password})
    ids = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])
    client = Api(server)
    r = client.post("/api/v1/auth/login", {"phone": phone, "password": password})
    client.close()
    assert r.status_code == 200, r.text
    return {"person_id": ids["person_id"], "unit_id": ids["unit_id"], "token": r.json()["token"]}


class Street:
    """A street admin's street: funded workers, merchants, and their signed clients."""

    def __init__(self, api, admin, sql, server):
        self.api, self.admin, self.sql, self.server = api, admin, sql, server
        self.street = admin["unit_id"]
        self.token = admin["token"]
        self.sql.scalar("SELECT gp_issue(%s, %s, 100000000, 'merchant tests')",
                        (admin["person_id"], self.street))

    def workers(self, n, points=1000, unit=None):
        ws = bulk_workers(self.sql, unit or self.street, n)
        for w in ws:
            if points:
                self.fund(w, points)
        return ws

    def fund(self, w, points):
        self.sql.scalar("SELECT gp_adjust(%s, %s, %s, 'seed')",
                        (self.admin["person_id"], w["id"], points))

    def balance(self, w):
        return self.sql.scalar("SELECT balance FROM accounts WHERE kind = 'worker' AND owner_id = %s",
                               (w["id"],))

    def merchant(self, name=None, unit=None):
        """Onboards a merchant and issues a key; returns (merchant json, Client)."""
        r = self.api.post("/api/v1/merchants", {
            "name": name or unique_name("shop"), "address": "锦华路 1 号",
            "unit_id": unit or self.street, "contact_name": "李经理",
            "contact_phone": "028-8888-0000"}, token=self.token)
        assert r.status_code == 201, r.text
        m = r.json()
        return m, self.key(m["id"])

    def key(self, merchant_id, **body):
        r = self.api.post(f"/api/v1/merchants/{merchant_id}/keys", body, token=self.token)
        assert r.status_code == 201, r.text
        k = r.json()
        assert k["secret"].startswith("sk_")
        client = mc.Client(self.server.url, k["key_id"], k["secret"])
        client.key = k
        return client

    def offer(self, client, **over):
        body = {"title": unique_name("offer"), "price": 100, "stock": 10,
                "ends_at": "2099-01-01T00:00:00Z"}
        body.update(over)
        r = client.request("POST", "/merchant/v1/offers", body)
        assert r.status == 201 and r.verified, r.text
        return r.json()

    def order(self, w, offer_id, **kw):
        return self.api.post(f"/api/v1/mall/offers/{offer_id}/orders", token=w["token"], **kw)

    def paycode(self, w):
        r = self.api.post("/api/v1/paycodes", token=w["token"])
        assert r.status_code == 201, r.text
        return r.json()["paycode"]

    def charge(self, client, w, amount, key=None):
        return client.request("POST", "/merchant/v1/charges",
                              {"paycode": self.paycode(w), "amount": amount},
                              idempotency_key=key)

    def ledger_ok(self):
        problems = self.sql.scalar("SELECT gp_ledger_check()")
        assert problems == [], problems
