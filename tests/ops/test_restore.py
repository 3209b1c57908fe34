"""The backup and restore drill (docs/OPERATIONS.md, "Backup and restore"), with PostgreSQL's
own tools: a primary with WAL archiving (archive_command into a directory), a base backup
(pg_basebackup), work, a named restore point, more work and a newer signed checkpoint, then the
primary is lost. Restored from the base backup and the archive to the restore point:

- the ledger check is clean and the ledger ends exactly at the restore point;
- gridpointsd refuses to start: its signed history is behind the checkpoint it already
  published (kept in audit.state_dir), until told to (audit.allow_rewind);
- `gridpointsd verify` accepts the restored export against the checkpoint published before the
  restore point, and reports the newer one instead of silently forking it;
- Redis, which still holds the lost writes, is rebuilt from the ledger (rebuild-cache)."""

import json
import os
import pwd
import shutil
import time
from urllib.parse import urlparse

import pytest

from conftest import record_figures
from gp import Api, Sql, kv, unique_name, unique_phone
from loop import Tree
from pgcluster import Cluster, basebackup, make_dir


def wait_for(pred, timeout=30.0, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


class Drill:
    """A primary of our own (archiving) and everything that points at it."""

    def __init__(self, tmp, services, cli, factory):
        self.tmp, self.cli, self.factory = tmp, cli, factory
        self.archive = make_dir(tmp / "wal-archive", 0o755)
        self.primary = Cluster.initdb(tmp / "pg" / "primary", extra_conf=(
            "wal_level = replica\narchive_mode = on\n"
            f"archive_command = 'test ! -f {self.archive}/%f && cp %p {self.archive}/%f'\n"))
        self.primary.start()
        self.primary.sql("CREATE DATABASE gridpoints", db="postgres")
        self.redis_url = urlparse(services.redis_url)._replace(path="/7").geturl()
        with kv.connect(self.redis_url) as r:
            r.flushdb()
        self.state_dir = tmp / "state"
        self.key = tmp / "audit.key"
        self.servers = []
        self.point_at(self.primary)
        self.run("migrate")
        assert "wrote" in self.run("audit-keygen").stdout
        self.keys = tmp / "keys.json"
        self.keys.write_text(self.run("audit-pubkey").stdout)

    def point_at(self, cluster):
        self.cluster = cluster
        self.env = {"GRIDPOINTS_DATABASE_URL": cluster.url("gp_app"),
                    "GRIDPOINTS_DATABASE_ADMIN_URL": cluster.url(),
                    "GRIDPOINTS_REDIS_URL": self.redis_url,
                    "GRIDPOINTS_AUDIT_KEY_FILE": str(self.key),
                    "GRIDPOINTS_AUDIT_STATE_DIR": str(self.state_dir)}

    def run(self, *args, check=True, env=None):
        return self.cli(*args, env={**self.env, **(env or {})}, check=check)

    def server(self, start=True, allow_errors=False, **extra):
        env = {**self.env, **{f"GRIDPOINTS_{k.upper()}": str(v) for k, v in extra.items()}}
        srv = self.factory.new(env=env, start=start, allow_errors=allow_errors)
        self.servers.append(srv)
        return srv

    def close(self):
        for srv in self.servers:
            srv.stop(check=False)
        for c in {self.primary, self.cluster}:
            c.purge()


@pytest.fixture
def drill(gp_tmp, services, cli, server_factory):
    d = Drill(gp_tmp / unique_name("drill"), services, cli, server_factory)
    yield d
    d.close()


def status(api, token):
    r = api.get("/audit/v1/status", token=token)
    assert r.status_code == 200, r.text
    return r.json()


def wait_checkpointed(api, token, timeout=40.0):
    def done():
        s = status(api, token)
        cp = s["last_checkpoint"]
        return s if (s["unsealed"] == 0 and cp and cp["size"] == s["size"]
                     and not s["alarm"]) else None
    s = wait_for(done, timeout)
    assert s, status(api, token)
    return s


def test_backup_restore_drill(drill):
    timings = {}
    srv = drill.server()
    api = Api(srv)
    phone, pw = unique_phone(), "Pw-drill-0123456789"
    out = drill.run("create-admin", "--phone", phone, "--name", unique_name("admin"),
                    "--street", unique_name("street"), env={"GRIDPOINTS_ADMIN_PASSWORD": pw})
    ids = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    r = api.post("/api/v1/auth/login", {"phone": phone, "password": pw})
    assert r.status_code == 200, r.text
    adm = {"token": r.json()["token"], "person_id": ids["person_id"], "unit_id": ids["unit_id"]}
    sql = Sql(drill.primary.url())
    tree = Tree(api, adm, sql, budget=0)
    tree.fund(tree.street, 100000)
    workers = tree.workers(5)

    def work(amount):
        for w in workers:
            r = api.post("/api/v1/adjustments", {"worker_id": w["id"], "amount": amount,
                                                 "reason": "drill"}, token=adm["token"])
            assert r.status_code == 201, r.text

    work(10)
    # 1. Base backup of the running primary (WAL archiving is on since initdb).
    t0 = time.monotonic()
    base = basebackup(drill.primary.port, drill.tmp / "backup" / "base")
    timings["base_backup_s"] = round(time.monotonic() - t0, 2)

    # 2. Keep working; a checkpoint is published, then the named restore point.
    work(20)
    s1 = wait_checkpointed(api, adm["token"])
    before = drill.tmp / "checkpoint-before.note"
    before.write_text(api.get("/.well-known/gridpoints/checkpoint").text)
    txns_at_point = sql.scalar("SELECT count(*) FROM ledger_txns")
    balances_at_point = {w["id"]: tree.balance(w["id"]) for w in workers}
    sql.scalar("SELECT pg_create_restore_point('drill')::text")
    sql.scalar("SELECT pg_switch_wal()::text")  # its segment goes to the archive now

    # 3. More work after it, and a newer checkpoint, published (kept in audit.state_dir).
    work(30)
    s2 = wait_checkpointed(api, adm["token"])
    assert s2["size"] > s1["size"]
    kept = drill.state_dir / "published-checkpoint.note"
    assert wait_for(lambda: kept.exists() and kept.read_text().split("\n")[1] == str(s2["size"]),
                    10), "the published checkpoint was not kept in audit.state_dir"
    sql.scalar("SELECT pg_switch_wal()::text")
    assert wait_for(lambda: drill.primary.scalar(
        "SELECT last_archived_wal IS NOT NULL AND failed_count = 0 FROM pg_stat_archiver"), 20)
    lost_balances = {w["id"]: tree.balance(w["id"]) for w in workers}
    sql.close()

    # 4. Lose the primary: its server stops, the cluster crashes and its files are gone.
    srv.stop(check=False)
    drill.primary.stop("immediate")
    shutil.rmtree(drill.primary.data)

    # 5. Restore: the base backup, then the archive replayed up to the restore point.
    t0 = time.monotonic()
    restored = Cluster(drill.tmp / "pg" / "restored")
    shutil.copytree(base, restored.data, symlinks=True)
    shutil.copystat(base, restored.data)
    if os.geteuid() == 0:  # as the cluster owner (pgcluster.as_pg runs it as that user)
        owner = pwd.getpwnam("gridpoints")
        for root, dirs, files in os.walk(restored.data):
            for n in dirs + files:
                os.chown(os.path.join(root, n), owner.pw_uid, owner.pw_gid)
        os.chown(restored.data, owner.pw_uid, owner.pw_gid)
    restored.append_conf(f"restore_command = 'cp {drill.archive}/%f %p'\n"
                         "recovery_target_name = 'drill'\n"
                         "recovery_target_action = 'promote'\n"
                         "archive_mode = off\n")
    (restored.data / "recovery.signal").touch()
    restored.start()
    assert wait_for(lambda: restored.scalar("SELECT NOT pg_is_in_recovery()"), 60)
    timings["restore_to_point_s"] = round(time.monotonic() - t0, 2)
    drill.point_at(restored)
    rsql = Sql(restored.url())
    try:
        # The ledger is balanced and ends exactly at the restore point.
        assert rsql.scalar("SELECT gp_ledger_check()") == []
        assert rsql.scalar("SELECT count(*) FROM ledger_txns") == txns_at_point
        assert {w["id"]: rsql.scalar("SELECT (body ->> 'available')::bigint FROM "
                                     "gp_balance(%s, %s)", (w["id"], w["id"]))
                for w in workers} == balances_at_point
        restored_size = rsql.scalar("SELECT coalesce(max(size), 0) FROM audit_checkpoints")
        assert s1["size"] <= restored_size < s2["size"]
    finally:
        rsql.close()

    # 6. The export verifies against the checkpoint published before the restore point; the
    #    newer published one is reported, not forked.
    t0 = time.monotonic()
    exp = drill.tmp / "restored.jsonl"
    drill.run("export", "--out", exp)
    p = drill.run("verify", "--export", exp, "--pubkey", drill.keys, "--checkpoint", before,
                  check=False)
    assert p.returncode == 0 and p.stdout.startswith("OK"), p.stdout + p.stderr
    assert "(--checkpoint) is a prefix of this log" in p.stdout
    timings["export_and_verify_s"] = round(time.monotonic() - t0, 2)
    p = drill.run("verify", "--export", exp, "--pubkey", drill.keys, "--checkpoint", kept,
                  check=False)
    assert p.returncode == 1 and "is newer than this log" in p.stdout, p.stdout + p.stderr

    # 7. gridpointsd refuses to start on the restored database ...
    refused = drill.server(start=False, allow_errors=True)
    refused.start(wait=False)
    assert refused.wait_exit(30) == 1
    assert "behind the checkpoint of size" in refused.log_text()
    assert kept.exists()
    # ... until told to: the kept checkpoint is set aside and the server runs.
    srv2 = drill.server(audit_allow_rewind="true", allow_errors=False)
    assert not kept.exists()
    assert list(drill.state_dir.glob("published-checkpoint.note.superseded-*"))
    assert "starting anyway (audit.allow_rewind)" in srv2.log_text()

    # 8. Redis still holds the lost writes' balances; rebuilt from the ledger.
    api2 = Api(srv2)
    tok = workers[0]["token"]
    stale = api2.get("/api/v1/workers/me/balance", token=tok).json()["available"]
    assert stale == lost_balances[workers[0]["id"]] != balances_at_point[workers[0]["id"]]
    t0 = time.monotonic()
    drill.run("rebuild-cache")
    timings["rebuild_cache_s"] = round(time.monotonic() - t0, 2)
    for w in workers:
        got = api2.get("/api/v1/workers/me/balance", token=w["token"]).json()["available"]
        assert got == balances_at_point[w["id"]]
    # It works on: new writes, and a checkpoint of the continued log is published and kept.
    r = api2.post("/api/v1/adjustments", {"worker_id": workers[0]["id"], "amount": 1,
                                          "reason": "after the restore"}, token=adm["token"])
    assert r.status_code == 201, r.text
    srv2.stop()
    record_figures("restore_drill", txns_at_restore_point=txns_at_point,
                   lost_after_point=sum(lost_balances.values()) - sum(balances_at_point.values()),
                   checkpoint_before=s1["size"], checkpoint_lost=s2["size"], **timings)


def test_kept_checkpoint_refusals(server_factory, migrated, gp_tmp):
    """The start-up check on its own, against the session's database (which holds no signed
    checkpoint): a kept note it does not hold stops the server; so does a kept file that is not
    a note; audit.allow_rewind sets the note aside and starts."""
    state = gp_tmp / unique_name("state")
    state.mkdir()
    kept = state / "published-checkpoint.note"
    kept.write_text("gridpoints.local/ledger\n42\n" + "A" * 43 + "=\ntime 2026-12-07T14:00:00Z\n\n"
                    "\u2014 gridpoints.local/ledger AAAA\n")
    env = {"GRIDPOINTS_AUDIT_STATE_DIR": str(state)}
    srv = server_factory.new(env=env, start=False, allow_errors=True)
    srv.start(wait=False)
    assert srv.wait_exit(30) == 1
    assert "behind the checkpoint of size 42 already published" in srv.log_text()

    srv = server_factory.new(env={**env, "GRIDPOINTS_AUDIT_ALLOW_REWIND": "true"})
    assert not kept.exists()
    assert len(list(state.glob("published-checkpoint.note.superseded-*"))) == 1
    srv.stop()

    kept.write_text("not a checkpoint note")
    srv = server_factory.new(env=env, start=False, allow_errors=True)
    srv.start(wait=False)
    assert srv.wait_exit(30) == 1
    assert "is not a checkpoint note" in srv.log_text()
