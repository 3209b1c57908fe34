"""The path to sharding (docs/SCALING.md): which tables carry street_id (the distribution
column PostgreSQL with Citus would shard by), read from the catalogue; and every Redis key a
workload leaves carries a hash tag, so that Redis Cluster can take over."""

import concurrent.futures as cf
import re
import socket
import threading
import subprocess
import time

import pytest

from gp import Api, error_code, kv, unique_phone
from loop import Tree, iso, now, report_body
from mall import Street

# Tables that hold no one street's data, or are found before any street is known. Each says
# where it goes under Citus. A new table goes here only with such a reason; a table holding a
# street's data carries `street_id bigint NOT NULL` instead.
GLOBAL = {
    # bookkeeping of migrate (docs/OPERATIONS.md, "Upgrading"): stays on the coordinator
    "schema_migrations": "coordinator",
    "schema_functions": "coordinator",
    # the org tree: small, read by every scope check; a reference table (copied to every
    # node). A unit's street is the root of its path (street_of_unit).
    "org_units": "reference",
    # the state machines' allowed transitions: constant reference tables
    "task_transitions": "reference",
    "assignment_transitions": "reference",
    # one Merkle log over the whole ledger (docs/AUDIT.md): the sealer and the verifier work on
    # one tree; it stays on the coordinator (per-street logs would be a new verifier)
    "audit_keys": "coordinator",
    "audit_leaves": "coordinator",
    "audit_nodes": "coordinator",
    "audit_checkpoints": "coordinator",
    "audit_head": "coordinator",
    "audit_alarms": "coordinator",
    # the dashboard fold's watermark over the whole ledger (one row, like audit_head)
    "dash_fold_state": "coordinator",
    # found by a token's hash before the person (and so the street) is known: distributed by
    # token_hash, its own colocation group
    "sessions": "distributed by token_hash",
    # found by (principal, key) before the function runs: distributed by principal
    "idempotency_keys": "distributed by principal",
    # found by WeChat openid / ticket before the person is known
    "wechat_bindings": "distributed by openid",
    "wechat_invites": "distributed by its code",
    "wechat_bind_tickets": "distributed by ticket",
    # content-addressed: the same bytes are one row whoever uploaded them
    "evidence": "distributed by sha256",
    "evidence_uploaders": "distributed by sha256",
}

# Street data whose rows do not carry street_id yet: the rest of the migration (docs/SCALING.md,
# "What is left"). Each names the way to its street. This list only shrinks: a table that gets
# street_id must leave it (checked below). Empty since sql/migrations/0024_street_ledger.sql.
PENDING = {}


HASH_TAG = re.compile(r"\{[^{}]+\}")


def catalogue(sql):
    tables = {r[0] for r in sql("""SELECT c.relname FROM pg_class c
                                    JOIN pg_namespace n ON n.oid = c.relnamespace
                                   WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')""")}
    with_street = {r[0]: (r[1], r[2]) for r in sql(
        """SELECT c.relname, format_type(a.atttypid, a.atttypmod),
                  CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attname = 'street_id'
              AND NOT a.attisdropped""")}
    return tables, with_street


def test_every_street_table_carries_street_id(sql, migrated):
    tables, with_street = catalogue(sql)
    assert len(tables) > 30, sorted(tables)  # the migrated schema, not an empty database
    unplaced = sorted(tables - set(with_street) - set(GLOBAL) - set(PENDING))
    assert not unplaced, (
        f"tables without street_id: {unplaced}. A table holding a street's data carries "
        "`street_id bigint NOT NULL`; a global one goes into GLOBAL with its reason")
    for t, (typ, nullable) in with_street.items():
        if t in tables:
            assert typ == "bigint" and nullable == "NO", (t, typ, nullable)
    done = sorted(set(PENDING) & set(with_street))
    assert not done, f"{done} carry street_id now: take them off PENDING"
    stale = sorted((set(GLOBAL) | set(PENDING)) - tables)
    assert not stale, f"no such tables any more: {stale}"
    # the tables of the work loop carry it (migration 0017)
    for t in ("persons", "role_grants", "tasks", "assignments", "reports", "checkins",
              "task_events", "assignment_events", "merchants", "merchant_keys", "merchant_staff", "offers", "vouchers", "charges",
              "refunds", "settlements", "merchant_events"):
        assert t in with_street, t


def test_street_id_follows_the_rows_parent(api, admin, sql, redis, server):
    """Rows written by the SQL functions carry the street of the unit their task is in, also
    through the claim, check-in, report and review path; and the merchant's rows the street of
    their merchant."""
    tree = Tree(api, admin, sql)
    task = tree.publish(slots=2, reward=5)
    (w,) = tree.workers(1)
    r = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"])
    assert r.status_code == 201, r.text
    a = r.json()
    r = api.post(f"/api/v1/assignments/{a['id']}/checkins",
                 {"lat": 30.6571, "lng": 104.0801, "at": iso(now())}, token=w["token"])
    assert r.status_code == 201, r.text
    r = api.post("/api/v1/reports", report_body(a["id"]), token=w["token"])
    assert r.status_code == 201, r.text
    r = api.post(f"/api/v1/assignments/{a['id']}/approve", {}, token=tree.staff["token"])
    assert r.status_code == 200, r.text
    street = tree.street
    rows = {
        "tasks": sql("SELECT street_id FROM tasks WHERE id = %s", (task["id"],)),
        "assignments": sql("SELECT street_id FROM assignments WHERE task_id = %s", (task["id"],)),
        "reports": sql("SELECT street_id FROM reports WHERE task_id = %s", (task["id"],)),
        "checkins": sql("SELECT street_id FROM checkins WHERE assignment_id = %s", (a["id"],)),
        "task_events": sql("SELECT street_id FROM task_events WHERE task_id = %s", (task["id"],)),
        "assignment_events": sql("SELECT street_id FROM assignment_events WHERE task_id = %s",
                                 (task["id"],)),
    }
    rows["persons"] = sql("SELECT street_id FROM persons WHERE id IN (%s, %s)",
                          (w["id"], admin["person_id"]))
    rows["role_grants"] = sql("SELECT street_id FROM role_grants WHERE person_id IN (%s, %s)",
                              (w["id"], admin["person_id"]))
    for t, got in rows.items():
        assert got and all(g[0] == street for g in got), (t, got, street)
    # and in the whole database: no row of these tables disagrees with its parent
    bad = sql("""SELECT 'tasks', count(*) FROM tasks WHERE street_id <> street_of_unit(unit_id)
                 UNION ALL SELECT 'assignments', count(*) FROM assignments a JOIN tasks t
                   ON t.id = a.task_id WHERE a.street_id <> t.street_id
                 UNION ALL SELECT 'reports', count(*) FROM reports r JOIN tasks t
                   ON t.id = r.task_id WHERE r.street_id <> t.street_id
                 UNION ALL SELECT 'checkins', count(*) FROM checkins c JOIN assignments a
                   ON a.id = c.assignment_id WHERE c.street_id <> a.street_id
                 UNION ALL SELECT 'persons', count(*) FROM persons
                   WHERE street_id <> street_of_unit(unit_id)
                 UNION ALL SELECT 'role_grants', count(*) FROM role_grants
                   WHERE street_id <> street_of_unit(unit_id)""")
    assert all(n == 0 for _, n in bad), bad
    # the ledger (0024): the award's transaction and postings, the worker's accounts, the
    # per-street issuance account the tree's budget came from; the audit and outbox rows
    award = sql("SELECT id, street_id FROM ledger_txns WHERE kind = 'award' "
                "AND refs ->> 'assignment_id' = %s", (str(a["id"]),))
    assert len(award) == 1 and award[0][1] == street, (award, street)
    got = sql("SELECT street_id FROM postings WHERE txn_id = %s", (award[0][0],))
    assert len(got) == 2 and all(g[0] == street for g in got), (got, street)
    got = sql("SELECT kind, street_id FROM accounts WHERE owner_id = %s "
              "AND kind IN ('worker', 'worker_pending')", (w["id"],))
    assert len(got) == 2 and all(g[1] == street for g in got), (got, street)
    got = sql("""SELECT a.street_id, t.street_id FROM ledger_txns t
                  JOIN postings p ON p.txn_id = t.id JOIN accounts a ON a.id = p.account_id
                 WHERE t.kind = 'issue' AND t.refs ->> 'unit_id' = %s
                   AND a.kind = 'issuance'""", (str(street),))
    assert got and all(g == (street, street) for g in got), (got, street)
    assert sql.scalar("SELECT owner_id FROM accounts WHERE kind = 'issuance' AND street_id = %s",
                      (street,)) == street
    got = sql("SELECT street_id FROM outbox WHERE person_id = %s", (w["id"],))
    assert got and all(g[0] == street for g in got), ("outbox", got, street)
    got = sql("SELECT street_id FROM audit_log WHERE unit_id IN "
              "(SELECT id FROM org_units WHERE path <@ %s::text::ltree)", (str(street),))
    assert got and all(g[0] == street for g in got), ("audit_log", got, street)
    # the merchant tables: a merchant with a key, an offer, a voucher and a charge
    st = Street(api, admin, sql, server)
    m, client = st.merchant()
    offer = st.offer(client, price=10)
    (mw,) = st.workers(1, points=100)
    assert st.order(mw, offer["id"]).status_code == 201
    r = st.charge(client, mw, 5)
    assert r.status == 201, r.text
    for t in ("merchant_keys", "offers", "vouchers", "charges"):
        got = sql(f"SELECT street_id FROM {t} WHERE merchant_id = %s", (m["id"],))
        assert got and all(g[0] == street for g in got), (t, got, street)
    for t in ("merchant_keys", "merchant_staff", "offers", "vouchers", "charges", "refunds",
              "settlements", "merchant_events"):
        n = sql.scalar(f"""SELECT count(*) FROM {t} x JOIN merchants m ON m.id = x.merchant_id
                            WHERE x.street_id <> m.street_id""")
        assert n == 0, t
    charge = sql("SELECT street_id FROM ledger_txns WHERE kind = 'charge' "
                 "AND id = (SELECT txn_id FROM charges WHERE merchant_id = %s)", (m["id"],))
    assert charge == [(street,)], (charge, street)
    # and in the whole database: every posting in its transaction's street, every account of a
    # transaction in that street or a legacy system account (gp_ledger_check's check 9), every
    # worker's accounts in the worker's street, audit and outbox rows in their unit's / person's
    assert not [v for v in sql.scalar("SELECT gp.gp_ledger_check()")
                if v["check"] == "street_mismatch"]
    bad = sql("""SELECT 'accounts', count(*) FROM accounts a JOIN persons p ON p.id = a.owner_id
                  WHERE a.kind IN ('worker', 'worker_pending') AND a.street_id <> p.street_id
                 UNION ALL SELECT 'budgets', count(*) FROM accounts
                  WHERE kind IN ('budget', 'care') AND street_id <> street_of_unit(owner_id)
                 UNION ALL SELECT 'system', count(*) FROM accounts
                  WHERE kind IN ('issuance', 'expiry', 'settlement') AND street_id <> owner_id
                 UNION ALL SELECT 'audit_log', count(*) FROM audit_log
                  WHERE street_id <> coalesce(street_of_unit(unit_id), 0)
                 UNION ALL SELECT 'outbox', count(*) FROM outbox o
                  WHERE o.street_id <> coalesce((SELECT p.street_id FROM persons p
                                                  WHERE p.id = o.person_id), 0)""")
    assert all(n == 0 for _, n in bad), bad
    # and the keys this (and any earlier test of the session) left in Redis are hash-tagged,
    # but for those tests/api/test_harness.py writes itself to test the harness
    untagged = sorted(k for k in redis.scan_iter(count=1000)
                      if not HASH_TAG.search(k) and not re.match(r"(harness|durable)", k))
    assert not untagged, untagged[:20]


def test_system_accounts_are_per_street_and_made_once_under_a_race(api, make_admin, sql):
    """Two fresh streets issue concurrently (20 issues each, released together): each street
    gets exactly one issuance account of its own (owner = street = the street's unit), every
    issue posts to it and not to the legacy global account, and the ledger is sound."""
    admins = [make_admin(), make_admin()]
    legacy = sql.scalar("SELECT balance FROM accounts WHERE kind = 'issuance' AND owner_id = 0")
    barrier = threading.Barrier(40)

    def issue(i):
        a = admins[i % 2]
        barrier.wait()
        return api.post("/api/v1/budgets/issue",
                        {"unit_id": a["unit_id"], "amount": 10 + i, "memo": "race"},
                        token=a["token"])

    with cf.ThreadPoolExecutor(max_workers=40) as ex:
        rs = list(ex.map(issue, range(40)))
    assert [r.status_code for r in rs] == [201] * 40, [r.text for r in rs if r.status_code != 201]
    for k, a in enumerate(admins):
        street = a["unit_id"]
        got = sql("SELECT owner_id, street_id, balance, version FROM accounts "
                  "WHERE kind = 'issuance' AND street_id = %s", (street,))
        issued = sum(10 + i for i in range(k, 40, 2))
        assert got == [(street, street, -issued, 20)], (got, street)
        txns = sql("SELECT street_id FROM ledger_txns WHERE kind = 'issue' "
                   "AND refs ->> 'unit_id' = %s", (str(street),))
        assert txns == [(street,)] * 20, txns
    assert sql.scalar("SELECT balance FROM accounts WHERE kind = 'issuance' AND owner_id = 0") \
        == legacy
    assert sql.scalar("SELECT gp.gp_ledger_check()") == []


def redis_workload(api, admin, sql):
    """Touches every kind of key: sessions, login throttling, the claim rate limit and gate,
    balances, rankings."""
    tree = Tree(api, admin, sql)
    task = tree.publish(slots=1, reward=7)
    workers = tree.workers(2)
    # sessions: a fresh login and requests with the token
    r = api.post("/api/v1/auth/login", {"phone": admin["phone"], "password": admin["password"]},
                 token=None)
    assert r.status_code == 200
    assert api.get("/api/v1/me", token=r.json()["token"]).status_code == 200
    # login throttling: a wrong password
    r = api.post("/api/v1/auth/login", {"phone": unique_phone(), "password": "wrong-password"},
                 token=None)
    assert r.status_code in (401, 429)
    # claim: rate limit, gate (the second worker is refused by the gate)
    r = api.post(f"/api/v1/tasks/{task['id']}/claim", token=workers[0]["token"])
    assert r.status_code == 201, r.text
    a = r.json()
    r = api.post(f"/api/v1/tasks/{task['id']}/claim", token=workers[1]["token"])
    assert r.status_code == 409 and error_code(r) == "task_full"
    # balance and rankings: report, approve, read them
    r = api.post("/api/v1/reports", report_body(a["id"]), token=workers[0]["token"])
    assert r.status_code == 201, r.text
    r = api.post(f"/api/v1/assignments/{a['id']}/approve", {}, token=tree.staff["token"])
    assert r.status_code == 200, r.text
    w = workers[0]
    r = api.get(f"/api/v1/workers/{w['id']}/balance", token=w["token"])
    assert r.status_code == 200 and r.json()["available"] == 7, r.text
    assert api.get(f"/api/v1/workers/{w['id']}/rank", token=w["token"]).status_code == 200


def free_port_pair():
    """A port p with p + 10000 free too (Redis Cluster's bus port)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 10000))
            return p
        except OSError:
            continue
    pytest.skip("no free port pair for a Redis Cluster node")


@pytest.fixture
def redis_cluster(tmp_path):
    """A one-node Redis Cluster holding all 16384 slots: it refuses, like a real cluster, any
    command or script whose keys hash to different slots (CROSSSLOT), and never redirects."""
    port = free_port_pair()
    d = tmp_path / "redis-cluster"
    d.mkdir()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
         "--cluster-config-file", str(d / "nodes.conf"), "--dir", str(d), "--save", "",
         "--appendonly", "no"], stdout=open(d / "log", "w"), stderr=subprocess.STDOUT)
    try:
        client = None
        deadline = time.monotonic() + 20
        while True:
            try:
                client = kv.connect(f"redis://127.0.0.1:{port}/0")
                client.ping()
                break
            except Exception:
                assert time.monotonic() < deadline, (d / "log").read_text()
                time.sleep(0.1)
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        while "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, client.execute_command("CLUSTER", "INFO")
            time.sleep(0.1)
        # the property this fixture exists for
        with pytest.raises(Exception, match="CROSSSLOT"):
            client.eval("return 1", 2, "a{x}", "b{y}")
        yield client, f"redis://127.0.0.1:{port}/0"
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_runs_on_redis_cluster(make_server, make_admin, sql, redis_cluster):
    """The server against a Redis Cluster node: every script and multi-key command keeps its
    keys in one slot (or the cluster refuses it with CROSSSLOT, counted as a Redis error), and
    every key the workload leaves carries a hash tag."""
    client, url = redis_cluster
    srv = make_server(env={"GRIDPOINTS_REDIS_URL": url})
    api = Api(srv)

    def redis_metric(name):
        for ln in api.get("/metrics").text.splitlines():
            if ln.startswith(name + " "):
                return int(float(ln.split()[1]))
        raise AssertionError(name)

    # connected (commands sent while a first connect is still under way fail as unavailable)
    deadline = time.monotonic() + 20
    while redis_metric("gridpoints_redis_up") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    admin = make_admin(srv)
    errors_before = redis_metric("gridpoints_redis_errors_total")
    redis_workload(api, admin, sql)
    assert redis_metric("gridpoints_redis_errors_total") == errors_before
    assert "CROSSSLOT" not in srv.log_text()
    keys = list(client.scan_iter(count=1000))
    assert {k.split(":", 1)[0] for k in keys} >= {"sess", "login", "rl", "gate", "bal"}, keys
    untagged = sorted(k for k in keys if not HASH_TAG.search(k))
    assert not untagged, untagged[:20]
    api.close()
