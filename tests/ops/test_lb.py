"""Several instances behind HAProxy (deploy/haproxy/haproxy.cfg): a steady mixed load of the
worker app's requests (reads, and writes with idempotency keys) while each of three instances
is restarted in turn (SIGTERM, wait for its exit, start, wait until HAProxy sees it ready).
Zero failed requests, and every timer effect that came due meanwhile (auto-approvals, claim
expiries) applied exactly once, as the ledger shows."""

import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid

import pytest
import requests

from conftest import record_figures
from gp import REPO, free_port, http_session
from loop import Tree, report_body

HAPROXY_CFG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
DRAIN_DELAY = os.environ.get("GP_TEST_DRAIN_DELAY", "2s")  # > inter 500ms x fall 2 of the shipped config


def wait_for(pred, timeout=30.0, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


class Haproxy:
    """The shipped configuration with our addresses: its bind lines and its server lines."""

    def __init__(self, workdir, servers):
        self.port, self.stats_port = free_port(), free_port()
        text = HAPROXY_CFG.read_text()
        text = re.sub(r"^(\s*)stats socket .*$", "", text, flags=re.M)  # no /run/haproxy here
        # the open-file limit of a test machine, not a production one's (2 per connection)
        text = re.sub(r"^(\s*)maxconn \d+$", r"\1maxconn 2000", text, count=1, flags=re.M)
        text = text.replace("bind 0.0.0.0:8080", f"bind 127.0.0.1:{self.port}")
        text = text.replace("bind 127.0.0.1:8404", f"bind 127.0.0.1:{self.stats_port}")
        text = re.sub(r"^\s*server gp\d .*\n", "", text, flags=re.M)
        lines = "".join(f"    server gp{i + 1} 127.0.0.1:{s.port} check\n"
                        for i, s in enumerate(servers))
        text = re.sub(r"(^\s*default-server .*\n)", lambda m: m.group(1) + lines, text,
                      count=1, flags=re.M)
        self.cfg = workdir / "haproxy.cfg"
        self.cfg.write_text(text)
        self.log = workdir / "haproxy.log"
        check = subprocess.run(["haproxy", "-c", "-f", str(self.cfg)], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.cfg)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def states(self):
        """{server name: status} from the stats page (UP, DOWN, "UP 1/2", ...)."""
        try:
            with http_session() as http:
                r = http.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2)
        except requests.RequestException:
            return {}  # not listening yet
        out = {}
        for row in r.text.splitlines()[1:]:
            f = row.split(",")
            if len(f) > 17 and f[0] == "gridpointsd" and f[1].startswith("gp"):
                out[f[1]] = f[17]
        return out

    def wait_up(self, name, timeout=20):
        assert self.proc.poll() is None, self.log.read_text()[-2000:]
        assert wait_for(lambda: self.states().get(name) == "UP", timeout, 0.1), self.states()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def haproxy_bin():
    if not shutil.which("haproxy"):
        pytest.fail("haproxy not found: run scripts/deps.sh (Debian's haproxy)", pytrace=False)


class Load:
    """Threads that each play workers of the worker app through the balancer: claim (with an
    Idempotency-Key), read the task, submit a report for half of the claims (client_report_id
    and an Idempotency-Key), read balance and statement. Every reply must be a success."""

    def __init__(self, url, tree, tasks, workers, threads=6):
        self.url, self.tree, self.tasks = url, tree, tasks
        self.workers = [(w, 0) for w in workers]  # (worker, index of the next task)
        self.last_ok = 0.0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.requests = 0
        self.failures = []
        self.claims, self.reports = [], []
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def call(self, http, method, path, token, body=None, key=None):
        h = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if key:
            h["Idempotency-Key"] = key
        try:
            r = http.request(method, self.url + path, json=body, headers=h, timeout=15)
            ok = r.status_code in (200, 201)
            what = f"{r.status_code} {r.text[:200]}"
        except Exception as e:  # a failed request, counted
            r, ok, what = None, False, repr(e)
        with self.lock:
            self.requests += 1
            if ok:
                self.last_ok = time.monotonic()
            else:
                self.failures.append(f"{method} {path}: {what}")
        return r if ok else None

    def run(self, idx):
        http = http_session()
        n = 0
        while not self.stop.is_set():
            with self.lock:
                if not self.workers:
                    break
                w, t = self.workers.pop(0)
                if t + 1 < len(self.tasks):  # the same worker claims the next task later
                    self.workers.append((w, t + 1))
            task = self.tasks[t]
            n += 1
            tok = w["token"]
            r = self.call(http, "POST", f"/api/v1/tasks/{task['id']}/claim", tok, {},
                          str(uuid.uuid4()))
            if r is None:
                continue
            aid = r.json()["id"]
            with self.lock:
                self.claims.append(aid)
            self.call(http, "GET", f"/api/v1/tasks/{task['id']}", tok)
            if n % 2 == 0:
                body = report_body(aid)
                if self.call(http, "POST", "/api/v1/reports", tok, body, str(uuid.uuid4())):
                    with self.lock:
                        self.reports.append(aid)
            self.call(http, "GET", "/api/v1/workers/me/balance", tok)
            self.call(http, "GET", f"/api/v1/workers/{w['id']}/statement", tok)
            self.call(http, "GET", "/api/v1/assignments", tok)
        http.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_rolling_restart_behind_haproxy(haproxy_bin, server_factory, migrated, admin, api, sql,
                                        gp_tmp):
    env = {"GRIDPOINTS_SERVER_DRAIN_DELAY": DRAIN_DELAY,
           "GRIDPOINTS_SERVER_TRUST_PROXY": "true",
           "GRIDPOINTS_SERVER_MAX_CONNECTIONS_PER_ADDRESS": "0"}
    servers = [server_factory.new(f"lb{i + 1}", env=env) for i in range(3)]
    lb = Haproxy(gp_tmp, servers)
    try:
        for i in range(3):
            lb.wait_up(f"gp{i + 1}")
        tree = Tree(api(lb.url), admin, sql, budget=1000000)
        # Timers that come due during the restarts: reviews auto-approve after 2 s, claims
        # without a report expire after 3 s.
        # More claims than the restarts take (the load stops when they end): 300 workers x
        # 12 tasks. With 4, the faster write path ran out of claims before the last restart.
        tasks = [tree.publish(slots=1000, reward=3, review_window_s=2, claim_ttl_s=3)
                 for _ in range(12)]
        workers = tree.workers(300)
        t0 = time.monotonic()
        restarts = []
        with Load(lb.url, tree, tasks, workers) as load:
            time.sleep(2)
            for i, srv in enumerate(servers):
                r0 = time.monotonic()
                srv.proc.send_signal(signal.SIGTERM)
                assert srv.wait_exit(20) == 0
                srv.check_log()
                srv.start()  # waits for its /readyz
                lb.wait_up(f"gp{i + 1}")
                restarts.append(round(time.monotonic() - r0, 2))
            restarted = time.monotonic()
            time.sleep(2)
        elapsed = time.monotonic() - t0
        assert load.last_ok > restarted, "the load ran out before the restarts ended"
        assert load.requests > 200, load.requests
        assert not load.failures, f"{len(load.failures)} of {load.requests} failed: " \
                                  f"{load.failures[:10]}"

        # Every timer effect exactly once: each reported claim approved and awarded once,
        # each unreported one expired, nothing left pending, the ledger balanced.
        ids = [t["id"] for t in tasks]
        assert wait_for(lambda: sql.scalar(
            "SELECT count(*) FROM assignments WHERE task_id = ANY(%s) "
            "AND state IN ('claimed','submitted')", (ids,)) == 0, timeout=30)
        claims, reports = len(load.claims), len(load.reports)
        assert sql.scalar("SELECT count(*) FROM assignments WHERE task_id = ANY(%s)",
                          (ids,)) == claims
        assert sql.scalar("SELECT count(*) FROM assignments WHERE task_id = ANY(%s) "
                          "AND state = 'approved'", (ids,)) == reports
        assert sql.scalar("SELECT count(*) FROM assignments WHERE task_id = ANY(%s) "
                          "AND state = 'expired'", (ids,)) == claims - reports
        per_assignment = sql.query(
            "SELECT (refs ->> 'assignment_id')::bigint, count(*) FROM ledger_txns "
            "WHERE kind = 'award' AND (refs ->> 'task_id')::bigint = ANY(%s) GROUP BY 1",
            (ids,))
        assert sorted(a for a, _ in per_assignment) == sorted(load.reports)
        assert all(n == 1 for _, n in per_assignment), per_assignment
        tree.ledger_ok()
        record_figures("rolling_restart", instances=3, requests=load.requests,
                       failures=len(load.failures), claims=claims, auto_approved=reports,
                       expired=claims - reports, seconds=round(elapsed, 1),
                       restart_seconds=restarts, drain_delay=DRAIN_DELAY)
    finally:
        lb.stop()
        for srv in servers:
            srv.stop(check=False)
