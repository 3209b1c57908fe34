"""The audit log of the ledger (issue 6, docs/AUDIT.md): sealing exactly once in (xid, id) order,
signed checkpoints, proofs, the offline verifier, exports, the auditor API, the audit log of
privileged actions, anomalies and the points board.

Every test runs against its own freshly migrated database (tampering must not leak into other
suites) with its own checkpoint key, and its servers use their own Redis database index (worker
ids repeat across databases). Proofs and roots are re-checked here with an independent Python
implementation of RFC 6962, besides `gridpointsd verify`."""

import base64
import concurrent.futures as cf
import csv
import datetime as dt
import hashlib
import io
import json
import random
import re
import threading
import time
from urllib.parse import urlparse

import pytest

from gp import Api, Sql, error_code, kv, unique_name, unique_phone
from loop import Tree, bulk_workers, iso, now, report_body

# --------------------------------------------------------------------------------------------
# RFC 6962 / 9162 in Python (independent of server/merkle.c)


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaves):
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(size1, size2, root1, root2, proof):
    """RFC 9162 §2.1.4.2."""
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2


def note_root(note):
    lines = note.split("\n")
    return int(lines[1]), base64.b64decode(lines[2])


# --------------------------------------------------------------------------------------------
# An isolated deployment: database, key, servers


class AuditEnv:
    def __init__(self, services, cli, server_factory, workdir):
        self.services, self.cli, self.factory = services, cli, server_factory
        self.db = unique_name("audit").replace("-", "_").lower()
        root = Sql(services.admin_url)
        root.execute(f"CREATE DATABASE {self.db}")
        root.close()
        self.admin_url = urlparse(services.admin_url)._replace(path="/" + self.db).geturl()
        self.app_url = urlparse(services.database_url)._replace(path="/" + self.db).geturl()
        redis_url = urlparse(services.redis_url)._replace(path="/9").geturl()
        # claim gates and balances of an earlier test's database
        with kv.connect(redis_url) as r:
            r.flushdb()
        self.key = workdir / f"{self.db}.key"
        self.dir = workdir
        self.env = {"GRIDPOINTS_DATABASE_URL": self.app_url,
                    "GRIDPOINTS_DATABASE_ADMIN_URL": self.admin_url,
                    "GRIDPOINTS_REDIS_URL": redis_url,
                    "GRIDPOINTS_AUDIT_KEY_FILE": str(self.key)}
        cli("migrate", env=self.env)
        out = cli("audit-keygen", env=self.env).stdout
        assert "wrote" in out, out
        self.sql = Sql(self.admin_url)
        self.servers = []

    def server(self, allow_errors=False, **extra):
        env = dict(self.env)
        env.update({f"GRIDPOINTS_{k.upper()}": str(v) for k, v in extra.items()})
        srv = self.factory.new(env=env, allow_errors=allow_errors)
        self.servers.append(srv)
        return srv

    def run(self, *args, check=True):
        return self.cli(*args, env=self.env, check=check)

    def close(self):
        for srv in self.servers:
            srv.stop()
        self.sql.close()
        root = Sql(self.services.admin_url)
        root.execute(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        root.close()


@pytest.fixture
def aenv(services, cli, server_factory, migrated, gp_tmp):
    env = AuditEnv(services, cli, server_factory, gp_tmp)
    yield env
    env.close()


def make_street_admin(aenv, srv):
    """A new street with its admin (street_admin + auditor-capable), logged in on srv."""
    phone, password = unique_phone(), "Pw-" + unique_name("x")
    p = aenv.cli("create-admin", "--phone", phone, "--name", unique_name("adm"),
                 "--street", unique_name("street"),
                 env=dict(aenv.env, GRIDPOINTS_ADMIN_PASSWORD=password))
    ids = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])
    r = Api(srv).post("/api/v1/auth/login", {"phone": phone, "password": password})
    assert r.status_code == 200, r.text
    return {"person_id": ids["person_id"], "unit_id": ids["unit_id"], "token": r.json()["token"]}


def street_tree(api, admin, aenv):
    """loop.Tree (street, community, grid, micro-grid, staff, funded grid) plus a funded street
    budget, which adjustments draw on."""
    tree = Tree(api, admin, aenv.sql)
    aenv.sql.scalar("SELECT gp_issue(%s, %s, 1000000, 'audit tests')",
                    (admin["person_id"], admin["unit_id"]))
    return tree


def auditor_of(aenv, unit_id):
    (a,) = bulk_workers(aenv.sql, unit_id, 1, role="auditor")
    return a


def wait_for(pred, timeout=30.0, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def status(api, token):
    r = api.get("/audit/v1/status", token=token)
    assert r.status_code == 200, r.text
    return r.json()


def wait_checkpointed(api, token, timeout=40.0):
    """Until everything committed is sealed and covered by a signed checkpoint."""
    def done():
        s = status(api, token)
        cp = s["last_checkpoint"]
        return s if (s["unsealed"] == 0 and cp and cp["size"] == s["size"] and not s["alarm"]) else None
    s = wait_for(done, timeout)
    assert s, status(api, token)
    return s


def activity(api, tree, workers, n=6):
    """Ledger transactions through the API, each its own database transaction."""
    out = []
    for i in range(n):
        w = workers[i % len(workers)]
        r = api.post("/api/v1/adjustments", {"worker_id": w["id"], "amount": 5 + i,
                                             "reason": f"audit test {i}"},
                     token=tree.admin["token"], idempotency_key=unique_name("k"))
        assert r.status_code == 201, r.text
        out.append(r.json())
    return out


def export_and_verify(aenv, *args, name=None):
    path = aenv.dir / (name or f"{unique_name('export')}.jsonl")
    aenv.run("export", "--out", str(path), *args)
    keys = aenv.dir / f"{aenv.db}.pub.json"
    keys.write_text(aenv.run("audit-pubkey").stdout)
    p = aenv.run("verify", "--export", str(path), "--pubkey", str(keys), check=False)
    return path, keys, p


def check_log_structure(sql):
    """Invariant 6 from the database: every committed ledger transaction is sealed exactly
    once, at consecutive indexes, in (xid, id) order; every leaf hashes its transaction; every
    checkpoint root is the root of the leaves before it."""
    leaves = sql("SELECT l.idx, l.txn_id, l.hash, d.data FROM audit_leaves l "
                 "JOIN audit_txn_data d ON d.id = l.txn_id ORDER BY l.idx")
    order = [r[0] for r in sql("SELECT id FROM ledger_txns ORDER BY xid, id")]
    assert [r[0] for r in leaves] == list(range(len(leaves))), "gap in the log"
    assert [r[1] for r in leaves] == order, "not every transaction sealed once in (xid, id) order"
    hashes = [bytes(r[2]) for r in leaves]
    for (idx, txn, h, data) in leaves:
        assert leaf_hash(data.encode()) == bytes(h), f"leaf {idx} does not hash transaction {txn}"
    cps = sql("SELECT size, root, note FROM audit_checkpoints ORDER BY size")
    for size, root, note in cps:
        assert mth(hashes[:size]) == bytes(root), f"checkpoint {size} is not the log's root"
        assert note_root(note) == (size, bytes(root))
    assert sql.scalar("SELECT count(*) FROM audit_alarms") == 0
    return len(leaves), cps


# --------------------------------------------------------------------------------------------
# X1: end to end


def test_seal_checkpoint_export_verify_and_proofs(aenv):
    srv = aenv.server()
    api = Api(srv)
    admin = make_street_admin(aenv, srv)
    tree = street_tree(api, admin, aenv)
    workers = tree.workers(3)
    receipts = activity(api, tree, workers)
    # a task through the work loop: publish, claim, report, approve
    task = tree.publish(slots=2, reward=30)
    a = api.post(f"/api/v1/tasks/{task['id']}/claim", token=workers[0]["token"]).json()
    r = api.post("/api/v1/reports", report_body(a["id"]), token=workers[0]["token"])
    assert r.status_code == 201, r.text
    r = api.post(f"/api/v1/assignments/{a['id']}/approve", {}, token=tree.staff["token"])
    assert r.status_code == 200, r.text

    s = wait_checkpointed(api, admin["token"])
    n, cps = check_log_structure(aenv.sql)
    assert n == s["size"] and cps

    # the receipt's later half: position and proof of a ledger-changing response's txn
    txn = receipts[0]["txn_id"]
    r = api.get(f"/audit/v1/transactions/{txn}/proof", token=admin["token"])
    assert r.status_code == 200, r.text
    pr = r.json()
    size, root = note_root(pr["checkpoint"]["note"])
    assert pr["sealed"] and pr["checkpoint_size"] == size
    assert verify_inclusion(pr["log_index"], size, leaf_hash(pr["leaf_data"].encode()),
                            [bytes.fromhex(h) for h in pr["proof"]], root)
    # the worker may ask for the proof of their own transaction, not of another's
    r = api.get(f"/audit/v1/transactions/{txn}/proof", token=workers[0]["token"])
    assert r.status_code == 200 and r.json()["log_index"] == pr["log_index"]
    r = api.get(f"/audit/v1/transactions/{receipts[1]['txn_id']}/proof", token=workers[0]["token"])
    assert r.status_code == 404
    # statements carry the log position (worker's own statement and the auditor's)
    r = api.get("/api/v1/workers/me/statement", token=workers[0]["token"])
    assert r.status_code == 200, r.text
    assert all(isinstance(i["log_index"], int) for i in r.json()["items"])

    # a worker's statement with inclusion proofs, verified here and by gridpointsd verify
    r = api.get(f"/audit/v1/workers/{workers[0]['id']}/statement", params={"proofs": "true"},
                token=admin["token"])
    assert r.status_code == 200, r.text
    st = r.json()
    size, root = note_root(st["checkpoint"]["note"])
    assert len(st["items"]) >= 3
    for it in st["items"]:
        assert verify_inclusion(it["log_index"], size, leaf_hash(it["leaf_data"].encode()),
                                [bytes.fromhex(h) for h in it["proof"]], root)
    keys = aenv.dir / f"{aenv.db}.pub.json"
    r = api.get("/.well-known/gridpoints/checkpoint-keys", token=None)
    assert r.status_code == 200 and len(r.json()["keys"]) == 1
    keys.write_text(r.text)
    stf = aenv.dir / "statement.json"
    stf.write_text(json.dumps(st))
    p = aenv.run("verify", "--proofs", str(stf), "--pubkey", str(keys), check=False)
    assert p.returncode == 0 and p.stdout.startswith("OK"), p.stdout + p.stderr
    # a statement line changed after the fact no longer matches its sealed data
    st["items"][0]["amount"] += 1
    stf.write_text(json.dumps(st))
    p = aenv.run("verify", "--proofs", str(stf), "--pubkey", str(keys), check=False)
    assert p.returncode == 1 and "does not match" in p.stdout, p.stdout

    # the latest checkpoint, publicly, as a signed note
    r = api.get("/.well-known/gridpoints/checkpoint", token=None)
    assert r.status_code == 200 and r.text.split("\n")[1] == str(s["size"])
    assert "\n\n\u2014 " in r.text

    # more activity, a second checkpoint, and the consistency proof between the two
    activity(api, tree, workers, n=3)
    s2 = wait_checkpointed(api, admin["token"])
    assert s2["size"] > s["size"]
    r = api.get("/audit/v1/checkpoints/consistency",
                params={"from": s["last_checkpoint"]["size"], "to": s2["last_checkpoint"]["size"]},
                token=admin["token"])
    assert r.status_code == 200, r.text
    c = r.json()
    (n1, r1), (n2, r2) = note_root(c["from"]["note"]), note_root(c["to"]["note"])
    assert verify_consistency(n1, n2, r1, r2, [bytes.fromhex(h) for h in c["proof"]])
    cf_ = aenv.dir / "consistency.json"
    cf_.write_text(r.text)
    p = aenv.run("verify", "--proofs", str(cf_), "--pubkey", str(keys), check=False)
    assert p.returncode == 0, p.stdout
    r = api.get("/audit/v1/checkpoints", token=admin["token"])
    assert r.status_code == 200 and len(r.json()["items"]) >= 2

    # the complete export verifies offline, and its roots are the log's (independently)
    path, keys2, p = export_and_verify(aenv)
    assert p.returncode == 0 and "OK" in p.stdout and "total=0" in p.stdout, p.stdout + p.stderr
    lines = path.read_text().splitlines()
    datas = [ln[ln.index(',"txn":') + 7:-1] for ln in lines if ln.startswith('{"t":"txn"')]
    leaves = [leaf_hash(d.encode()) for d in datas]
    for ln in lines:
        if ln.startswith('{"t":"checkpoint"'):
            size, root = note_root(json.loads(ln)["note"])
            assert mth(leaves[:size]) == root

    # the auditor's paginated export (partial, with proofs) verifies too, page by page joined
    body, cursor = "", None
    while True:
        params = {"limit": 4, "unit_id": admin["unit_id"]}
        if cursor:
            params["cursor"] = cursor
        r = api.get("/audit/v1/export", params=params, token=admin["token"])
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        body += r.text
        cursor = json.loads(r.text.splitlines()[-1])["next_cursor"]
        if not cursor:
            break
    pf = aenv.dir / "api-export.jsonl"
    pf.write_text(body)
    p = aenv.run("verify", "--export", str(pf), "--pubkey", str(keys), check=False)
    assert p.returncode == 0 and "partial" in p.stdout, p.stdout
    # CSV: one row per posting
    r = api.get("/audit/v1/export", params={"format": "csv", "limit": 1000}, token=admin["token"])
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert rows and sum(int(x["amount"]) for x in rows) == 0
    # XLSX (issue 14): the CSV's rows, the whole range in one workbook read back with openpyxl
    import openpyxl
    csv_rows = list(csv.reader(io.StringIO(r.text)))
    r = api.get("/audit/v1/export", params={"format": "xlsx"}, token=admin["token"])
    assert r.status_code == 200, r.text
    assert int(r.headers["Content-Length"]) == len(r.content)
    sheet = openpyxl.load_workbook(io.BytesIO(r.content), read_only=True)["ledger"]
    assert [["" if c is None else str(c) for c in row]
            for row in sheet.iter_rows(values_only=True)] == csv_rows
    out = aenv.dir / "ledger.csv"
    aenv.run("export", "--format", "csv", "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == aenv.sql.scalar("SELECT count(*) FROM postings")
    r = api.get("/audit/v1/export", params={"format": "xml"}, token=admin["token"])
    assert r.status_code == 400


def test_sql_tree_and_proofs_match_rfc6962(aenv):
    """The stored tree (leaves + complete subtrees) and the SQL proof generators agree with the
    Python reference for every size 1..37, every index and every pair of sizes."""
    p = aenv.cli("create-admin", "--phone", unique_phone(), "--name", "a", "--street",
                 unique_name("s"), env=dict(aenv.env, GRIDPOINTS_ADMIN_PASSWORD="Pw-12345678"))
    ids = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])
    for i in range(37):  # each its own transaction: distinct xids
        aenv.sql.scalar("SELECT gp_issue(%s, %s, %s, 'p')", (ids["person_id"], ids["unit_id"], i + 1))
    r = aenv.sql.scalar("SELECT gp_audit_seal(1000, 0, 60, 1000000)")
    assert r["sealed"] == 37 and r["size"] == 37
    leaves = [bytes(h) for (h,) in aenv.sql("SELECT hash FROM audit_leaves ORDER BY idx")]
    assert bytes(aenv.sql.scalar("SELECT root FROM audit_head")) == mth(leaves)
    for n in range(1, 38):
        root = bytes(aenv.sql.scalar("SELECT gp_audit_mth(0, %s)", (n,)))
        assert root == mth(leaves[:n]), n
        for m in range(n):
            proof = [bytes(h) for h in aenv.sql.scalar("SELECT gp_audit_path(%s, 0, %s)", (m, n))]
            assert verify_inclusion(m, n, leaves[m], proof, root), (m, n)
            if m == 0:
                continue
            proof = [bytes(h) for h in
                     aenv.sql.scalar("SELECT gp_audit_subproof(%s, 0, %s, true)", (m, n))]
            assert verify_consistency(m, n, mth(leaves[:m]), root, proof), (m, n)


# --------------------------------------------------------------------------------------------
# X2: tampering directly in PostgreSQL


def sealed_pair(sql):
    """Two consecutive sealed transactions with distinct xids, both before the last one."""
    rows = sql("SELECT idx, txn_id, txn_xid::text::bigint FROM audit_leaves ORDER BY idx")
    last_xid = rows[-1][2]
    for a, b in zip(rows, rows[1:]):
        if a[2] != b[2] and b[2] < last_xid and a[0] > 0:
            return a, b
    raise AssertionError("no suitable pair of sealed transactions")


def tamper(sql, *statements):
    sql.execute("SET session_replication_role = replica")  # triggers (append-only, FK) off
    try:
        for s in statements:
            sql.execute(s)
    finally:
        sql.execute("SET session_replication_role = DEFAULT")


@pytest.mark.parametrize("how", ["posting", "delete", "insert", "reorder"])
def test_tampering_is_refused_and_pinpointed(aenv, how):
    srv = aenv.server(allow_errors=True)  # the alarm is logged at level=error on purpose
    api = Api(srv)
    admin = make_street_admin(aenv, srv)
    tree = street_tree(api, admin, aenv)
    workers = tree.workers(2)
    activity(api, tree, workers, n=8)
    s = wait_checkpointed(api, admin["token"])
    cps_before = aenv.sql.scalar("SELECT count(*) FROM audit_checkpoints")
    (ia, ta, xa), (ib, tb, xb) = sealed_pair(aenv.sql)
    if how == "posting":
        tamper(aenv.sql, f"UPDATE postings SET amount = amount + 1, balance_after = balance_after + 1 "
                         f"WHERE id = (SELECT max(id) FROM postings WHERE txn_id = {ta})")
        want = {"reason": "altered", "txn_id": ta, "log_index": ia}
    elif how == "delete":
        tamper(aenv.sql, f"DELETE FROM postings WHERE txn_id = {ta}",
               f"DELETE FROM ledger_txns WHERE id = {ta}")
        want = {"reason": "deleted", "txn_id": ta, "log_index": ia}
    elif how == "insert":
        acc = aenv.sql("SELECT p.account_id FROM postings p WHERE p.txn_id = %s ORDER BY p.account_id",
                       (ta,))
        new = aenv.sql.scalar("SELECT nextval('ledger_txns_id_seq')")
        tamper(aenv.sql,
               f"INSERT INTO ledger_txns (id, kind, actor_id, memo, xid) "
               f"VALUES ({new}, 'adjust', 1, 'forged', '{xa}')",
               f"INSERT INTO postings (txn_id, account_id, amount, account_version, balance_after) "
               f"VALUES ({new}, {acc[0][0]}, -1, 999, 0), ({new}, {acc[1][0]}, 1, 999, 1)")
        ta = new
        # it sorts right after the last sealed transaction of the same xid
        pos = aenv.sql.scalar("SELECT count(*) FROM ledger_txns WHERE (xid, id) < (%s::xid8, %s)",
                              (str(xa), new))
        want = {"reason": "inserted", "txn_id": new, "log_index": pos}
    else:  # reorder: swap the sort keys of two consecutive sealed transactions
        tamper(aenv.sql,
               f"UPDATE ledger_txns SET xid = CASE id WHEN {ta} THEN '{xb}'::xid8 "
               f"ELSE '{xa}'::xid8 END WHERE id IN ({ta}, {tb})")
        want = {"reason": "reordered", "txn_id": ta, "log_index": ia}

    # the next checkpoint refuses, naming the entry
    activity(api, tree, workers, n=1)
    def alarm():
        a = status(api, admin["token"])["alarm"]
        return a
    got = wait_for(alarm, timeout=20)
    assert got, status(api, admin["token"])
    for k, v in want.items():
        assert got[k] == v, (got, want)
    time.sleep(2.5)  # several checkpoint intervals: none may be signed now
    assert aenv.sql.scalar("SELECT count(*) FROM audit_checkpoints") == cps_before
    st = status(api, admin["token"])
    assert st["size"] > s["size"] and st["last_checkpoint"]["size"] == s["size"]
    assert "ledger tampering detected" in srv.log_text()
    assert f"txn={want['txn_id']}" in srv.log_text()

    # the offline verifier reports the exact entry
    path, keys, p = export_and_verify(aenv)
    assert p.returncode == 1, p.stdout
    out = p.stdout
    if how == "posting":
        assert f"log index {ia}, transaction {ta}:" in out and "differs from the leaf" in out, out
    elif how == "delete":
        assert f"log index {ia + 1}, transaction {tb}:" in out, out
        assert f"expected log index {ia} here" in out, out
    elif how == "insert":
        assert f"transaction {ta}:" in out and "no log position" in out, out
        assert f"expected log index {want['log_index']} here" in out, out
    else:
        assert f"log index {ib}, transaction {tb}:" in out and f"expected log index {ia}" in out, out

    # no checkpoint is signed until the ledger is restored; then the alarm clears
    if how == "posting":
        tamper(aenv.sql, f"UPDATE postings SET amount = amount - 1, balance_after = balance_after - 1 "
                         f"WHERE id = (SELECT max(id) FROM postings WHERE txn_id = {ta})")
        assert wait_for(lambda: status(api, admin["token"])["alarm"] is None, timeout=20)
        wait_checkpointed(api, admin["token"])
        assert aenv.sql.scalar("SELECT count(*) FROM audit_alarms WHERE event = 'cleared'") == 1


def test_tampered_export_file_is_caught(aenv):
    srv = aenv.server()
    api = Api(srv)
    admin = make_street_admin(aenv, srv)
    tree = street_tree(api, admin, aenv)
    activity(api, tree, tree.workers(2), n=6)
    wait_checkpointed(api, admin["token"])
    path, keys, p = export_and_verify(aenv)
    assert p.returncode == 0, p.stdout
    lines = path.read_text().splitlines()
    txn_lines = [i for i, ln in enumerate(lines) if ln.startswith('{"t":"txn"')]

    def verify(mutated):
        f = aenv.dir / f"{unique_name('bad')}.jsonl"
        f.write_text("\n".join(mutated) + "\n")
        return aenv.run("verify", "--export", str(f), "--pubkey", str(keys), check=False)

    # 1. an amount changed in one line (and its counterpart, so it still sums to zero)
    i = txn_lines[3]
    m = list(lines)
    t = json.loads(m[i])["txn"]
    t["postings"][0]["amount"] -= 1
    t["postings"][1]["amount"] += 1
    m[i] = m[i][:m[i].index(',"txn":') + 7] + json.dumps(t, separators=(",", ":"), ensure_ascii=False) + "}"
    p = verify(m)
    assert p.returncode == 1 and f"line {i + 1}, log index 3, transaction {t['id']}" in p.stdout, p.stdout
    # 2. a memo changed and the claimed leaf hash recomputed to match: the signed root still
    #    catches it, at the first checkpoint after it
    m = list(lines)
    t = json.loads(m[i])["txn"]
    t["memo"] = "rewritten"
    data = json.dumps(t, separators=(",", ":"), ensure_ascii=False)
    m[i] = re.sub(r'"leaf":"[0-9a-f]{64}"', '"leaf":"' + leaf_hash(data.encode()).hex() + '"',
                  m[i][:m[i].index(',"txn":') + 7]) + data + "}"
    p = verify(m)
    assert p.returncode == 1 and "history before it was changed" in p.stdout, p.stdout
    # 3. a line removed
    m = lines[:txn_lines[2]] + lines[txn_lines[2] + 1:]
    p = verify(m)
    assert p.returncode == 1 and "expected log index 2" in p.stdout, p.stdout
    # 4. two lines swapped
    m = list(lines)
    m[txn_lines[1]], m[txn_lines[2]] = m[txn_lines[2]], m[txn_lines[1]]
    p = verify(m)
    assert p.returncode == 1 and "expected log index 1" in p.stdout, p.stdout
    # 5. a checkpoint's signature broken (root replaced)
    m = list(lines)
    ci = next(i for i, ln in enumerate(lines) if ln.startswith('{"t":"checkpoint"'))
    cp = json.loads(m[ci])
    parts = cp["note"].split("\n")
    parts[2] = base64.b64encode(b"\x00" * 32).decode()
    cp["note"] = "\n".join(parts)
    m[ci] = json.dumps(cp)
    p = verify(m)
    assert p.returncode == 1 and "bad signature" in p.stdout, p.stdout
    # 6. another key: nothing is trusted
    other = aenv.dir / "other.pub"
    other.write_text("example.org/x+00000000+" + base64.b64encode(b"\x01" + b"\x07" * 32).decode() + "\n")
    p = aenv.run("verify", "--export", str(path), "--pubkey", str(other), check=False)
    assert p.returncode == 2  # the key line itself is refused (its id does not match)
    # 7. a partial export with one proof hash flipped
    part = aenv.dir / "part.jsonl"
    aenv.run("export", "--unit", str(admin["unit_id"]), "--out", str(part))
    pl = part.read_text().splitlines()
    j = next(i for i, ln in enumerate(pl) if ln.startswith('{"t":"txn"') and '"proof":["' in ln)
    h = re.search(r'"proof":\["([0-9a-f]{64})', pl[j]).group(1)
    pl[j] = pl[j].replace(h, ("0" if h[0] != "0" else "1") + h[1:], 1)
    p = verify(pl)
    assert p.returncode == 1 and "inclusion proof" in p.stdout, p.stdout


# --------------------------------------------------------------------------------------------
# X5 and invariant 6 under crashes and concurrency


def writer_loop(api, token, workers, stop, counts):
    i = 0
    while not stop.is_set():
        w = workers[i % len(workers)]
        i += 1
        try:
            r = api.post("/api/v1/adjustments", {"worker_id": w["id"], "amount": 1, "reason": "load"},
                         token=token, idempotency_key=unique_name("k"), timeout=5)
            counts[r.status_code] = counts.get(r.status_code, 0) + 1
        except Exception:  # the server is being killed
            counts["down"] = counts.get("down", 0) + 1
            time.sleep(0.05)


def test_kill9_during_checkpointing_20_times(aenv):
    # checkpoint_max_tx = 1: every round that seals something verifies and signs, so the kills
    # land in the middle of sealing, verifying, signing and storing.
    srv = aenv.server(audit_checkpoint_max_tx=1)
    api = Api(srv)
    admin = make_street_admin(aenv, srv)
    tree = street_tree(api, admin, aenv)
    workers = tree.workers(4)
    stop, counts = threading.Event(), {}
    t = threading.Thread(target=writer_loop, args=(Api(srv), admin["token"], workers, stop, counts))
    t.start()
    rng = random.Random(6)
    try:
        for _ in range(20):
            time.sleep(rng.uniform(0.2, 0.9))
            srv.kill9()
            srv.start()
    finally:
        stop.set()
        t.join()
    assert counts.get(201, 0) > 20, counts
    wait_checkpointed(api, admin["token"], timeout=60)
    n, cps = check_log_structure(aenv.sql)
    assert n == aenv.sql.scalar("SELECT count(*) FROM ledger_txns")
    assert len(cps) >= 5
    path, keys, p = export_and_verify(aenv)
    assert p.returncode == 0, p.stdout


def test_concurrent_writers_sealed_exactly_once_trial_balance_zero(aenv):
    s1, s2 = aenv.server(), aenv.server()  # two instances, one key, one database
    admin = make_street_admin(aenv, s1)
    api1, api2 = Api(s1), Api(s2)
    tree = street_tree(api1, admin, aenv)
    workers = tree.workers(6)
    auditor = auditor_of(aenv, admin["unit_id"])
    stop, counts = threading.Event(), {}
    threads = [threading.Thread(target=writer_loop,
                                args=(api, admin["token"], workers[i::3], stop, counts))
               for i, api in enumerate([api1, api2, api1])]
    for t in threads:
        t.start()
    balances = []
    try:
        end = time.time() + 8
        while time.time() < end:
            api = api1 if len(balances) % 2 else api2
            r = api.get("/audit/v1/trial-balance", token=auditor["token"])
            assert r.status_code == 200, r.text
            balances.append(r.json())
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert counts.get(201, 0) >= 50, counts
    assert all(b["total"] == 0 and b["mismatched_accounts"] == 0 for b in balances), balances[:3]
    assert len({b["by_kind"].get("worker") for b in balances}) > 1  # the ledger moved meanwhile
    s = wait_checkpointed(api1, admin["token"], timeout=60)
    n, cps = check_log_structure(aenv.sql)
    txns = aenv.sql.scalar("SELECT count(*) FROM ledger_txns")
    assert n == txns == s["size"]
    assert aenv.sql.scalar("SELECT count(DISTINCT txn_id) FROM audit_leaves") == txns
    # both instances signed and stored through the same checks: one root per size
    assert aenv.sql.scalar("SELECT count(*) FROM audit_checkpoints") == len(cps)


# --------------------------------------------------------------------------------------------
# Scope, audit log, anomalies, board, rotation


def test_instance_without_key_seals_but_does_not_verify(aenv):
    srv = aenv.server(audit_key_file="")
    api = Api(srv)
    admin = make_street_admin(aenv, srv)
    tree = street_tree(api, admin, aenv)
    activity(api, tree, tree.workers(1), n=3)
    s = wait_for(lambda: (lambda x: x if x["unsealed"] == 0 else None)(status(api, admin["token"])))
    assert s and s["size"] == aenv.sql.scalar("SELECT count(*) FROM ledger_txns")
    time.sleep(1.5)  # past checkpoint_interval: still no pass, no candidate, no checkpoint
    s = status(api, admin["token"])
    assert s["verified_at"] is None and s["pass"] is None and s["candidate_size"] is None
    assert s["last_checkpoint"] is None
    assert "neither verifies nor signs" in srv.log_text()
    check_log_structure(aenv.sql)


def test_auditor_of_street_a_cannot_read_street_b(aenv):
    srv = aenv.server()
    api = Api(srv)
    a, b = make_street_admin(aenv, srv), make_street_admin(aenv, srv)
    ta, tb = street_tree(api, a, aenv), street_tree(api, b, aenv)
    wa, wb = ta.workers(1)[0], tb.workers(1)[0]
    ra = activity(api, ta, [wa], n=2)
    rb = activity(api, tb, [wb], n=2)
    aud_a = auditor_of(aenv, a["unit_id"])
    wait_checkpointed(api, a["token"])
    tok = aud_a["token"]
    B = str(b["unit_id"])
    for path, params in [("/audit/v1/transactions", {"unit_id": B}),
                         ("/audit/v1/trial-balance", {"unit_id": B}),
                         ("/audit/v1/budget-use", {"unit_id": B}),
                         ("/audit/v1/log", {"unit_id": B}),
                         ("/audit/v1/anomalies", {"unit_id": B}),
                         ("/audit/v1/export", {"unit_id": B}),
                         (f"/audit/v1/workers/{wb['id']}/statement", {}),
                         (f"/audit/v1/transactions/{rb[0]['txn_id']}/proof", {})]:
        r = api.get(path, params=params, token=tok)
        assert r.status_code == 404, (path, r.status_code, r.text)
    # what A sees of its own street holds none of B's transactions
    r = api.get("/audit/v1/transactions", params={"limit": 200}, token=tok)
    assert r.status_code == 200
    ids = {t["id"] for t in r.json()["items"]}
    assert {x["txn_id"] for x in ra} <= ids and not ({x["txn_id"] for x in rb} & ids)
    r = api.get("/audit/v1/export", params={"limit": 1000}, token=tok)
    exported = {json.loads(ln)["txn"]["id"] for ln in r.text.splitlines() if ln.startswith('{"t":"txn"')}
    assert {x["txn_id"] for x in ra} <= exported and not ({x["txn_id"] for x in rb} & exported)
    r = api.get(f"/audit/v1/workers/{wa['id']}/statement", token=tok)
    assert r.status_code == 200 and len(r.json()["items"]) == 2
    # a worker is no auditor; no session at all is 401
    r = api.get("/audit/v1/transactions", token=wa["token"])
    assert r.status_code == 403
    r = api.get("/audit/v1/status", token=None)
    assert r.status_code == 401


def test_audit_log_of_privileged_actions(aenv):
    srv = aenv.server()
    api = Api(srv)
    admin = make_street_admin(aenv, srv)
    tree = street_tree(api, admin, aenv)
    (w, w2) = tree.workers(2)
    activity(api, tree, [w], n=1)                                      # adjust
    r = api.post("/api/v1/budgets/grants", {"from_unit_id": tree.street, "to_unit_id": tree.community,
                                            "amount": 10}, token=admin["token"])
    assert r.status_code == 201, r.text                                # grant
    task = tree.publish(slots=2, reward=5)                             # publish
    a1 = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w["token"]).json()
    a2 = api.post(f"/api/v1/tasks/{task['id']}/claim", token=w2["token"]).json()
    for a, ww in ((a1, w), (a2, w2)):
        assert api.post("/api/v1/reports", report_body(a["id"]), token=ww["token"]).status_code == 201
    assert api.post(f"/api/v1/assignments/{a1['id']}/approve", {}, token=tree.staff["token"]).status_code == 200
    assert api.post(f"/api/v1/assignments/{a2['id']}/reject", {"reason": "no photo"},
                    token=tree.staff["token"]).status_code == 200
    t2 = tree.publish(slots=1)
    assert api.post(f"/api/v1/tasks/{t2['id']}/cancel", {"reason": "rain"},
                    token=tree.staff["token"]).status_code == 200        # cancel
    r = api.post(f"/api/v1/people/{w['id']}/roles", {"role": "volunteer", "unit_id": tree.micro},
                 token=admin["token"])
    assert r.status_code in (200, 201), r.text                         # change a role
    r = api.get("/audit/v1/log", params={"limit": 200}, token=admin["token"])
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    actions = {i["action"] for i in items}
    for want in ("ledger.adjust", "ledger.grant", "task.publish", "task.cancel", "report.approve",
                 "report.reject", "role.grant"):
        assert want in actions, (want, actions)
    for i in items:
        assert i["at"] and i["object_type"] and i["object_id"]
    cancel = next(i for i in items if i["action"] == "task.cancel")
    assert cancel["before"]["status"] == "open" and cancel["after"]["status"] == "cancelled"
    assert cancel["actor_id"] == tree.staff["id"]
    # filters: action prefix, actor, object
    r = api.get("/audit/v1/log", params={"action": "report."}, token=admin["token"])
    assert {i["action"] for i in r.json()["items"]} == {"report.approve", "report.reject"}
    r = api.get("/audit/v1/log", params={"actor_id": tree.staff["id"], "object_type": "task",
                                         "object_id": str(t2["id"])}, token=admin["token"])
    assert {i["action"] for i in r.json()["items"]} == {"task.publish", "task.cancel"}
    # append-only: no UPDATE privilege for the application, and a trigger for everyone else
    wait_checkpointed(api, admin["token"])  # so that there are leaves and checkpoints to refuse
    app = Sql(aenv.app_url)
    with pytest.raises(Exception):
        app.execute("UPDATE audit_log SET reason = 'x'")
    app.close()
    with pytest.raises(Exception):
        aenv.sql.execute("DELETE FROM audit_log")
    with pytest.raises(Exception):
        aenv.sql.execute("DELETE FROM audit_leaves")
    with pytest.raises(Exception):
        aenv.sql.execute("UPDATE audit_checkpoints SET note = ''")
    # key rotation is audited too (a system action, visible to every auditor)
    aenv.run("audit-rotate-key")
    r = api.get("/audit/v1/log", params={"action": "audit."}, token=admin["token"])
    assert [i["action"] for i in r.json()["items"]] == ["audit.key_rotate", "audit.key_create"]


def test_anomalies_with_evidence(aenv):
    srv = aenv.server(audit_anomaly_max_completions_per_day=1)
    api = Api(srv)
    admin = make_street_admin(aenv, srv)
    tree = street_tree(api, admin, aenv)
    w1, w2 = tree.workers(2)
    shared_hash = hashlib.sha256(b"same photo").hexdigest()

    def claim_report(w, device, lat=30.6571, lng=104.0801, evidence_hash=None, publisher=None):
        t = tree.publish(token=publisher, slots=3, reward=5)
        r = api.post(f"/api/v1/tasks/{t['id']}/claim", token=w["token"])
        assert r.status_code == 201, r.text
        a = r.json()
        body = report_body(a["id"], lat=lat, lng=lng)
        body["device_id"] = device
        if evidence_hash:
            body["evidence"] = [{"url": "https://img.example.cn/s.jpg", "sha256": evidence_hash}]
        r = api.post("/api/v1/reports", body, token=w["token"])
        assert r.status_code == 201, r.text
        return a

    a1 = claim_report(w1, "dev-shared", evidence_hash=shared_hash)
    a2 = claim_report(w1, "dev-w1")
    a3 = claim_report(w2, "dev-shared", lat=30.70, lng=104.20, evidence_hash=shared_hash)  # far away
    # a staff member who approves their own report
    aenv.sql.execute("INSERT INTO role_grants (person_id, role, unit_id) VALUES (%s, 'worker', %s)",
                     (tree.staff["id"], tree.grid))
    a4 = claim_report(tree.staff, "dev-staff", publisher=admin["token"])
    r = api.post(f"/api/v1/assignments/{a4['id']}/approve", {}, token=tree.staff["token"])
    assert r.status_code == 403 and error_code(r) == "self_approval"  # the API refuses it...
    r = api.post(f"/api/v1/assignments/{a4['id']}/approve", {}, token=admin["token"])
    assert r.status_code == 200, r.text
    # ... the rule still finds it in the data (older rows, a path that forgot the check)
    aenv.sql.execute("UPDATE assignments SET decided_by = worker_id WHERE id = %s", (a4["id"],))
    r = api.get("/audit/v1/anomalies", token=admin["token"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["thresholds"]["max_completions_per_day"] == 1
    by_rule = {}
    for it in body["items"]:
        by_rule.setdefault(it["rule"], []).append(it)
    assert {"too_many_completions", "report_too_soon", "outside_geofence", "shared_device",
            "shared_evidence", "self_approval"} <= set(by_rule), by_rule.keys()
    tm = by_rule["too_many_completions"][0]
    assert tm["subject"]["worker_id"] == w1["id"] and tm["evidence"]["completions"] == 2
    assert set(tm["evidence"]["assignment_ids"]) == {a1["id"], a2["id"]}
    og = by_rule["outside_geofence"][0]
    assert og["subject"]["assignment_id"] == a3["id"] and og["evidence"]["distance_m"] > 500
    sd = by_rule["shared_device"][0]
    assert sd["subject"]["device_id"] == "dev-shared" and set(sd["evidence"]["workers"]) == {w1["id"], w2["id"]}
    se = {i["subject"]["sha256"]: i for i in by_rule["shared_evidence"]}
    assert set(se[shared_hash]["evidence"]["workers"]) == {w1["id"], w2["id"]}
    sa = by_rule["self_approval"][0]
    assert sa["subject"]["worker_id"] == tree.staff["id"] and sa["evidence"]["decided_by"] == tree.staff["id"]
    assert len(by_rule["report_too_soon"]) == 4  # all made seconds after the claim (threshold 2 min)
    r = api.get("/audit/v1/anomalies", params={"rule": "self_approval"}, token=admin["token"])
    assert {i["rule"] for i in r.json()["items"]} == {"self_approval"}
    r = api.get("/audit/v1/anomalies", params={"rule": "nonsense"}, token=admin["token"])
    assert r.status_code == 400 and error_code(r) == "invalid_rule"
    # budget use per community and per task
    r = api.get("/audit/v1/budget-use", token=admin["token"])
    assert r.status_code == 200, r.text
    bu = r.json()
    assert any(g["unit_id"] == tree.community and g["awarded"] == 5 for g in bu["groups"]), bu["groups"]
    t = next(x for x in bu["tasks"]["items"] if x["approved"] == 1)
    assert t["awarded"] == 5 and t["reserved"] == 15


def test_points_board_masks_names(aenv):
    srv = aenv.server()
    api = Api(srv)
    admin = make_street_admin(aenv, srv)
    tree = street_tree(api, admin, aenv)
    r = api.put(f"/api/v1/units/{admin['unit_id']}/points-policy", {"objection_period": "3 days"},
                token=admin["token"])
    assert r.status_code == 200, r.text
    (w,) = tree.workers(1)
    name = aenv.sql.scalar("SELECT name FROM persons WHERE id = %s", (w["id"],))
    t = tree.publish(slots=1, reward=40)
    a = api.post(f"/api/v1/tasks/{t['id']}/claim", token=w["token"]).json()
    assert api.post("/api/v1/reports", report_body(a["id"]), token=w["token"]).status_code == 201
    assert api.post(f"/api/v1/assignments/{a['id']}/approve", {}, token=tree.staff["token"]).status_code == 200
    month = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m")
    r = api.get(f"/api/v1/public/grids/{tree.grid}/points-board", params={"month": month}, token=None)
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["objection_period_s"] == 3 * 86400
    (item,) = b["items"]
    assert item["points"] == 40 and item["rank"] == 1 and item["pending"] == 40
    assert item["objection_until"]
    assert item["name"] == name[0] + "*" * (len(name) - 1) and item["name"] != name
    assert set(item) == {"name", "rank", "points", "pending", "micro_grid", "objection_until",
                         "adjusted"}
    r = api.get(f"/api/v1/public/grids/{tree.community}/points-board", params={"month": month}, token=None)
    assert r.status_code == 404
    r = api.get(f"/api/v1/public/grids/{tree.grid}/points-board", params={"month": "2025-13"}, token=None)
    assert r.status_code == 400


def test_key_rotation_keeps_old_checkpoints_verifiable(aenv):
    srv = aenv.server()
    api = Api(srv)
    admin = make_street_admin(aenv, srv)
    tree = street_tree(api, admin, aenv)
    workers = tree.workers(2)
    activity(api, tree, workers, n=3)
    wait_checkpointed(api, admin["token"])
    old_key = aenv.sql.scalar("SELECT key_id FROM audit_keys")
    out = aenv.run("audit-rotate-key").stdout
    assert "rotated" in out
    # the running server still holds the old key: its checkpoints are refused (warned once)
    activity(api, tree, workers, n=1)
    time.sleep(2)
    assert aenv.sql.scalar("SELECT count(*) FROM audit_checkpoints WHERE key_id <> %s", (old_key,)) == 0
    srv.restart()
    wait_checkpointed(api, admin["token"])
    keys = aenv.sql("SELECT key_id, valid_until FROM audit_keys ORDER BY valid_from")
    assert len(keys) == 2 and keys[0][0] == old_key and keys[0][1] is not None and keys[1][1] is None
    assert aenv.sql.scalar("SELECT count(DISTINCT key_id) FROM audit_checkpoints") == 2
    r = api.get("/.well-known/gridpoints/checkpoint-keys", token=None)
    assert [k["key_id"] for k in r.json()["keys"]] == [k[0] for k in keys]
    path, pub, p = export_and_verify(aenv)
    assert p.returncode == 0, p.stdout
    # with only the new key, the old checkpoints are not trusted
    only_new = aenv.dir / "new.pub"
    only_new.write_text(r.json()["keys"][1]["vkey"] + "\n")
    p = aenv.run("verify", "--export", str(path), "--pubkey", str(only_new), check=False)
    assert p.returncode == 1 and "not signed by a trusted key" in p.stdout, p.stdout
    # keygen refuses to overwrite; rotation needs an existing key
    p = aenv.run("audit-keygen", check=False)
    assert p.returncode == 2
