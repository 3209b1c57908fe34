"""Incremental verification passes of the sealed log (issue 12 part 6, docs/AUDIT.md §4): a pass
re-derives only what was sealed since the last clean pass and says what it covered; a full pass
(every audit.full_pass_interval, while an alarm stands, or on request with `gridpointsd
audit-verify --full`) re-derives the whole log from index 0 and finds tampering with history
that an incremental pass no longer looks at."""

import json

from gp import Api, unique_name, unique_phone
from test_audit import (activity, aenv, make_street_admin, status, street_tree,  # noqa: F401
                        tamper, wait_checkpointed, wait_for)


def issuer(aenv):
    p = aenv.cli("create-admin", "--phone", unique_phone(), "--name", "a", "--street",
                 unique_name("s"), env=dict(aenv.env, GRIDPOINTS_ADMIN_PASSWORD="Pw-12345678"))
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])


def issue(aenv, ids, n):
    for i in range(n):  # each its own transaction: distinct xids
        aenv.sql.scalar("SELECT gp_issue(%s, %s, %s, 'p')", (ids["person_id"], ids["unit_id"], i + 1))


def seal(aenv):
    while aenv.sql.scalar("SELECT gp_audit_seal(1000, 0, 60, 1000000)")["more"]:
        pass
    return aenv.sql.scalar("SELECT size FROM audit_head")


def run_pass(aenv, batch=7):
    """Rounds of the sealer with verification due at once, until the pass ends or an alarm;
    returns the rounds' replies and the head's pass state."""
    rounds = []
    while True:
        r = aenv.sql.scalar("SELECT gp_audit_seal(1000, %s, 0, 1000000, 3600)", (batch,))
        rounds.append(r)
        st = aenv.sql.scalar("SELECT gp_audit_pass_state()")
        if r.get("new_alarm") or st["pass"] is None:
            return rounds, st


def bump_posting(aenv, idx, delta):
    txn = aenv.sql.scalar("SELECT txn_id FROM audit_leaves WHERE idx = %s", (idx,))
    tamper(aenv.sql, f"UPDATE postings SET amount = amount + ({delta}), "
                     f"balance_after = balance_after + ({delta}) "
                     f"WHERE id = (SELECT max(id) FROM postings WHERE txn_id = {txn})")
    return txn


def test_incremental_pass_covers_what_was_sealed_since_full_pass_finds_older_tampering(aenv):
    ids = issuer(aenv)
    issue(aenv, ids, 20)
    s1 = seal(aenv)
    rounds, st = run_pass(aenv)
    # no verified base yet: the first pass is full
    assert st["alarm"] is None and st["verified_full"] is True
    assert (st["verified_from"], st["verified_size"]) == (0, s1)
    assert sum(r["verified"] for r in rounds) == s1

    issue(aenv, ids, 9)
    s2 = seal(aenv)
    rounds, st = run_pass(aenv)
    assert st["alarm"] is None and st["verified_full"] is False
    assert (st["verified_from"], st["verified_size"]) == (s1, s2)
    assert sum(r["verified"] for r in rounds) == s2 - s1  # cost: only the new transactions

    # tampering before the last verified position: the incremental pass does not look there,
    # and says what it covered
    old_txn = bump_posting(aenv, 3, 1)
    issue(aenv, ids, 4)
    s3 = seal(aenv)
    rounds, st = run_pass(aenv)
    assert st["alarm"] is None and st["verified_full"] is False
    assert (st["verified_from"], st["verified_size"]) == (s2, s3)

    # a full pass on request finds it
    p = aenv.run("audit-verify", "--full")
    assert "full verification pass requested" in p.stdout, p.stdout
    assert aenv.sql.scalar("SELECT gp_audit_pass_state()")["full_pass_requested"] is True
    assert aenv.sql.scalar("SELECT count(*) FROM audit_log WHERE action = 'audit.full_pass_request'") == 1
    rounds, st = run_pass(aenv)
    assert st["alarm"]["reason"] == "altered", st
    assert (st["alarm"]["txn_id"], st["alarm"]["log_index"]) == (old_txn, 3)
    assert sum(r["verified"] for r in rounds) == 3

    # while the alarm stands every pass is full: restored, the next full pass clears it
    bump_posting(aenv, 3, -1)
    rounds, st = run_pass(aenv)
    assert st["alarm"] is None and st["verified_full"] is True and st["full_pass_requested"] is False
    assert (st["verified_from"], st["verified_size"]) == (0, s3)
    assert aenv.sql.scalar("SELECT count(*) FROM audit_alarms WHERE event = 'cleared'") == 1

    # tampering after the last verified position: the incremental pass finds it, having
    # re-derived only the transactions since that position
    issue(aenv, ids, 10)
    s4 = seal(aenv)
    new_txn = bump_posting(aenv, s3 + 6, 5)
    rounds, st = run_pass(aenv)
    assert st["alarm"]["reason"] == "altered", st
    assert (st["alarm"]["txn_id"], st["alarm"]["log_index"]) == (new_txn, s3 + 6)
    assert sum(r["verified"] for r in rounds) == 6
    bump_posting(aenv, s3 + 6, -5)
    rounds, st = run_pass(aenv)
    assert st["alarm"] is None and st["verified_full"] is True
    assert (st["verified_from"], st["verified_size"]) == (0, s4)


def test_incremental_pass_finds_deleted_inserted_and_reordered_after_base(aenv):
    ids = issuer(aenv)
    issue(aenv, ids, 12)
    seal(aenv)
    _, st = run_pass(aenv)
    base = st["verified_size"]
    issue(aenv, ids, 8)
    seal(aenv)
    rows = aenv.sql("SELECT idx, txn_id, txn_xid::text FROM audit_leaves WHERE idx >= %s "
                    "ORDER BY idx", (base,))
    (ia, ta, xa), (ib, tb, xb) = rows[2], rows[3]
    tamper(aenv.sql, f"UPDATE ledger_txns SET xid = CASE id WHEN {ta} THEN '{xb}'::xid8 "
                     f"ELSE '{xa}'::xid8 END WHERE id IN ({ta}, {tb})")
    rounds, st = run_pass(aenv)
    assert st["alarm"]["reason"] == "reordered" and st["alarm"]["log_index"] == ia, st
    tamper(aenv.sql, f"UPDATE ledger_txns SET xid = CASE id WHEN {ta} THEN '{xa}'::xid8 "
                     f"ELSE '{xb}'::xid8 END WHERE id IN ({ta}, {tb})")
    _, st = run_pass(aenv)
    assert st["alarm"] is None and st["verified_full"] is True
    issue(aenv, ids, 5)
    seal(aenv)
    victim = aenv.sql("SELECT idx, txn_id FROM audit_leaves ORDER BY idx DESC LIMIT 1 OFFSET 1")[0]
    tamper(aenv.sql, f"DELETE FROM postings WHERE txn_id = {victim[1]}",
           f"DELETE FROM ledger_txns WHERE id = {victim[1]}")
    rounds, st = run_pass(aenv)
    assert st["alarm"]["reason"] == "deleted" and st["alarm"]["txn_id"] == victim[1], st
    assert sum(r["verified"] for r in rounds) == 3  # from the base, not from 0


def test_server_incremental_checkpoints_and_full_pass_on_demand(aenv):
    """With a real server and its sweep: checkpoints after the first come from incremental
    passes; `audit-verify --full --wait` finds tampering with checkpointed history."""
    srv = aenv.server(allow_errors=True, audit_full_pass_interval="1h")
    api = Api(srv)
    admin = make_street_admin(aenv, srv)
    tree = street_tree(api, admin, aenv)
    workers = tree.workers(2)
    activity(api, tree, workers, n=4)
    s1 = wait_checkpointed(api, admin["token"])
    activity(api, tree, workers, n=3)
    s2 = wait_for(lambda: (lambda s: s if s["verified_full"] is False and s["last_checkpoint"]
                           and s["last_checkpoint"]["size"] == s["size"] and s["unsealed"] == 0
                           else None)(status(api, admin["token"])), timeout=40)
    assert s2 and s2["verified_from"] >= s1["size"] and s2["verified_size"] == s2["size"], s2
    assert s2["full_verified_at"] is not None
    ok = aenv.run("audit-verify", "--full", "--wait", "60", check=False)
    assert ok.returncode == 0 and f"OK: full pass verified log indexes 0..{s2['size'] - 1}" \
        in ok.stdout, ok.stdout
    txn = bump_posting(aenv, 2, 1)
    p = aenv.run("audit-verify", "--full", "--wait", "60", check=False)
    assert p.returncode == 1, p.stdout
    assert f"transaction {txn} at log index 2 differs from its sealed leaf" in p.stdout, p.stdout
    assert status(api, admin["token"])["alarm"]["log_index"] == 2
    bad = aenv.run("audit-verify", check=False)
    assert bad.returncode == 2 and "usage" in bad.stderr
    bad = aenv.run("audit-verify", "--full", "--wait", "x", check=False)
    assert bad.returncode == 2
