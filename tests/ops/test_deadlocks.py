"""No deadlocks under a mixed write load (issue 12, part 5a).

Three gridpointsd instances on one database run a randomized workload for
GRIDPOINTS_DEADLOCK_SECONDS (default 60): publish, claim, report, approve, grant, adjust,
voucher orders and captures, charges, refunds -- with the timer sweep running every 200 ms and
2 s review windows / 3 s claim lifetimes, so that auto-approval and claim expiry fire in the
middle of it. Then: zero `deadlock detected` in the PostgreSQL log since the start (each one
found is printed with the statements of both processes), zero 5xx, and gp_ledger_check() = [].

Every write path takes its row locks in the global order of docs/LEDGER.md ("Locks, hot rows
and deadlocks"); this test is the proof that they do."""

import datetime as dt
import os
import random
import re
import threading
import time
import uuid
from pathlib import Path

from conftest import record_figures
from gp import Api
from loop import Tree, iso, now, report_body
from mall import Street, mc

SECONDS = float(os.environ.get("GRIDPOINTS_DEADLOCK_SECONDS", "60"))
THREADS = int(os.environ.get("GRIDPOINTS_DEADLOCK_THREADS", "12"))
ENV = {"GRIDPOINTS_TIMERS_SWEEP_INTERVAL": "200ms"}


def pg_log_path(services):
    return Path((services.dir / "pgroot").read_text().strip()) / "postgresql.log"


def deadlocks_since(log, offset):
    """[(error line, detail lines...)] of each `deadlock detected` after offset."""
    with open(log, errors="replace") as f:
        f.seek(offset)
        lines = f.read().splitlines()
    out = []
    for i, ln in enumerate(lines):
        if "deadlock detected" in ln:
            block = [ln]
            for nxt in lines[i + 1:i + 12]:
                if re.match(r"^\d{4}-\d\d-\d\d ", nxt) and not re.search(
                        r"(DETAIL|HINT|CONTEXT|STATEMENT):", nxt):
                    break
                block.append(nxt)
            out.append(block)
    return out


class Workload:
    def __init__(self, servers, tree, street, admin, workers, offer, key):
        self.servers, self.tree, self.street = servers, tree, street
        self.admin, self.workers, self.offer, self.key = admin, workers, offer, key
        self.lock = threading.Lock()
        self.tasks, self.claimed, self.submitted, self.charges, self.vouchers = [], [], [], [], []
        self.counts = {}
        self.fivexx = []
        self.errors = []
        self.stop = threading.Event()

    def note(self, op, status, text=""):
        with self.lock:
            self.counts[(op, status)] = self.counts.get((op, status), 0) + 1
            if isinstance(status, int) and status >= 500:
                self.fivexx.append((op, status, text[:300]))

    def pick(self, lst, pop=False):
        with self.lock:
            if not lst:
                return None
            i = random.randrange(len(lst))
            return lst.pop(i) if pop else lst[i]

    def run(self, seed):
        rnd = random.Random(seed)
        clients = [Api(s) for s in self.servers]
        merchants = [mc.Client(s.url, self.key["key_id"], self.key["secret"]) for s in self.servers]
        ops = [(self.publish, 1), (self.claim, 6), (self.report, 5), (self.approve, 2),
               (self.grant, 1), (self.adjust, 2), (self.order, 2), (self.capture, 1),
               (self.charge, 3), (self.refund, 2)]
        names = [o for o, w in ops for _ in range(w)]
        while not self.stop.is_set():
            i = rnd.randrange(len(self.servers))
            op = rnd.choice(names)
            try:
                op(clients[i], merchants[i], rnd)
            except Exception as e:  # a dropped connection or a timeout is a failure
                with self.lock:
                    self.errors.append((op.__name__, repr(e)[:300]))

    def publish(self, c, m, rnd):
        r = c.post("/api/v1/tasks", {
            "unit_id": self.tree.grid, "title": "t" + uuid.uuid4().hex[:8], "category": "patrol",
            "reward": rnd.randint(1, 5), "slots": rnd.randint(2, 8),
            "ends_at": iso(now() + dt.timedelta(hours=1)),
            "claim_ttl_s": 3, "review_window_s": 2,
            "lat": 30.6570, "lng": 104.0800, "geofence_m": 500}, token=self.tree.staff["token"])
        self.note("publish", r.status_code, r.text)
        if r.status_code == 201:
            with self.lock:
                self.tasks.append(r.json()["id"])
                del self.tasks[:-20]  # the newest tasks: they still have free slots

    def claim(self, c, m, rnd):
        t = self.pick(self.tasks)
        if t is None:
            return
        w = rnd.choice(self.workers)
        r = c.post(f"/api/v1/tasks/{t}/claim", token=w["token"])
        self.note("claim", r.status_code, r.text)
        if r.status_code == 201:
            with self.lock:
                self.claimed.append((w, r.json()["id"]))

    def report(self, c, m, rnd):
        x = self.pick(self.claimed, pop=True)
        if x is None:
            return
        w, a = x
        r = c.post(f"/api/v1/assignments/{a}/checkins",
                   {"lat": 30.6571, "lng": 104.0801, "at": iso(now())}, token=w["token"])
        self.note("checkin", r.status_code, r.text)
        r = c.post("/api/v1/reports", report_body(a), token=w["token"])
        self.note("report", r.status_code, r.text)
        if r.status_code == 201 and rnd.random() < 0.5:  # the other half auto-approves
            with self.lock:
                self.submitted.append(a)

    def approve(self, c, m, rnd):
        a = self.pick(self.submitted, pop=True)
        if a is None:
            return
        r = c.post(f"/api/v1/assignments/{a}/approve", {}, token=self.tree.staff["token"])
        self.note("approve", r.status_code, r.text)

    def grant(self, c, m, rnd):
        src, dst = rnd.choice([(self.tree.street, self.tree.community),
                               (self.tree.community, self.tree.grid)])
        r = c.post("/api/v1/budgets/grants", {"from_unit_id": src, "to_unit_id": dst,
                                              "amount": rnd.randint(1, 50)},
                   token=self.admin["token"], idempotency_key=str(uuid.uuid4()))
        self.note("grant", r.status_code, r.text)

    def adjust(self, c, m, rnd):
        w = rnd.choice(self.workers)
        r = c.post("/api/v1/adjustments", {"worker_id": w["id"], "amount": rnd.choice([-3, 5, 20]),
                                           "reason": "drill"}, token=self.admin["token"])
        self.note("adjust", r.status_code, r.text)

    def order(self, c, m, rnd):
        w = rnd.choice(self.workers)
        r = c.post(f"/api/v1/mall/offers/{self.offer['id']}/orders", token=w["token"],
                   idempotency_key=str(uuid.uuid4()))
        self.note("order", r.status_code, r.text)
        if r.status_code == 201:
            with self.lock:
                self.vouchers.append(r.json())

    def capture(self, c, m, rnd):
        v = self.pick(self.vouchers, pop=True)
        if v is None or "code" not in v:
            return
        r = m.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture", {})
        self.note("capture", r.status, r.text)

    def charge(self, c, m, rnd):
        w = rnd.choice(self.workers)
        r = c.post("/api/v1/paycodes", token=w["token"])
        self.note("paycode", r.status_code, r.text)
        if r.status_code != 201:
            return
        r = m.request("POST", "/merchant/v1/charges",
                      {"paycode": r.json()["paycode"], "amount": rnd.randint(1, 30)},
                      idempotency_key=str(uuid.uuid4()))
        self.note("charge", r.status, r.text)
        if r.status == 201:
            with self.lock:
                self.charges.append(r.json()["id"])

    def refund(self, c, m, rnd):
        ch = self.pick(self.charges)
        if ch is None:
            return
        r = m.request("POST", f"/merchant/v1/charges/{ch}/refunds", {"amount": 1, "reason": "drill"},
                      idempotency_key=str(uuid.uuid4()))
        self.note("refund", r.status, r.text)


def test_no_deadlocks_under_mixed_load(server_factory, migrated, admin, api, sql, services):
    servers = [server_factory.new(f"dl{i + 1}", env=ENV) for i in range(3)]
    c = api(servers[0])
    tree = Tree(c, admin, sql, budget=10_000_000)
    street = Street(c, admin, sql, servers[0])
    workers = tree.workers(40)
    for w in workers:
        street.fund(w, 100_000)
    m, client = street.merchant()
    offer = street.offer(client, price=5, stock=100_000)
    load = Workload(servers, tree, street, admin, workers, offer, client.key)
    for _ in range(3):
        load.publish(c, None, random.Random(0))

    log = pg_log_path(services)
    offset = log.stat().st_size
    threads = [threading.Thread(target=load.run, args=(i,), daemon=True) for i in range(THREADS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    load.stop.set()
    for t in threads:
        t.join(30)
    time.sleep(4)  # the last review windows and claim lifetimes end; the sweeps run
    elapsed = time.monotonic() - t0

    found = deadlocks_since(log, offset)
    for block in found:
        print("\n".join(["DEADLOCK:"] + block))
    with open(log, errors="replace") as f:
        f.seek(offset)
        tail = f.read()
    lock_timeouts = tail.count("canceling statement due to statement timeout")
    ok = {k: v for k, v in load.counts.items() if isinstance(k[1], int) and k[1] < 300}
    record_figures("deadlocks", seconds=round(elapsed, 1), threads=THREADS,
                   requests=sum(load.counts.values()), ok=sum(ok.values()),
                   deadlocks=len(found), statement_timeouts=lock_timeouts,
                   fivexx=len(load.fivexx), client_errors=len(load.errors),
                   counts={f"{k[0]} {k[1]}": v for k, v in sorted(load.counts.items(),
                                                                  key=str)})
    assert sum(v for (op, st), v in ok.items() if op == "report") > 10, load.counts
    assert not load.errors, load.errors[:10]
    assert not load.fivexx, load.fivexx[:10]
    assert not found, f"{len(found)} deadlocks: {found[:3]}"
    assert lock_timeouts == 0
    problems = sql.scalar("SELECT gp_ledger_check()")
    assert problems == [], problems
    for s in servers:
        s.stop()
