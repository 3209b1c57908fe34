"""The complete JSON Lines export (`gridpointsd export`, server/cli_audit.c, docs/AUDIT.md §3):
the rows stream by COPY on a second connection that shares the export's snapshot, and each
transaction's leaf data is encoded in C. That encoding must be byte for byte the
audit_txn_data view's: for an untampered ledger no transaction may fall back to the view (the
export's log line counts them; a fallback is correct but slow, so a test that only verified the
export would not notice an encoder that is always wrong). Text that COPY escapes (tabs, new
lines, backslashes, control characters), quotes, non-ASCII, NULL memos and timestamps whose
fraction PostgreSQL shortens are all written here; a row changed after sealing is written with
the view's own bytes."""

import json
import re

from gp import unique_name, unique_phone
from loop import bulk_workers
from test_audit import aenv, tamper  # noqa: F401

FALLBACKS = re.compile(r"(\d+) written from the audit_txn_data view")


def export(aenv):
    path = aenv.dir / f"{unique_name('export')}.jsonl"
    p = aenv.run("export", "--out", str(path))
    m = FALLBACKS.search(p.stderr)
    assert m, p.stderr
    lines = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()]
    raw = {}
    for ln in path.read_text(encoding="utf-8").splitlines():
        if ln.startswith('{"t":"txn"'):
            # the txn member's bytes as written: from '"txn":' to the line's last '}'
            raw[json.loads(ln)["txn"]["id"]] = ln[ln.index(',"txn":') + 7:-1]
    return int(m.group(1)), lines, raw


def view(aenv):
    return {i: d for i, d in aenv.sql("SELECT id, data FROM audit_txn_data ORDER BY id")}


def test_export_encodes_every_transaction_as_the_view_does(aenv):
    # No server: nothing seals until this test does, so rows can be shaped before sealing.
    p = aenv.cli("create-admin", "--phone", unique_phone(),
                 "--name", unique_name("adm"), "--street", unique_name("street"),
                 env=dict(aenv.env, GRIDPOINTS_ADMIN_PASSWORD="Pw-" + unique_name("x")))
    ids = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])
    admin, street = ids["person_id"], ids["unit_id"]
    aenv.sql.scalar("SELECT gp_issue(%s, %s, 1000000, %s)", (admin, street, 'tab\there "q" \\ 中文'))
    workers = bulk_workers(aenv.sql, street, 3)
    reasons = ["plain", "new\nline and\rreturn", "back\\slash \\N and \\t", "ctl \x01\x1f end",
               'quote " and 引号 “”', "emoji \U0001F600", "a" * 400]
    for i, reason in enumerate(reasons):
        aenv.sql.scalar("SELECT gp_adjust(%s, %s, %s, %s)",
                        (admin, workers[i % 3]["id"], 5 + i, reason))
    txns = [r[0] for r in aenv.sql("SELECT id FROM ledger_txns ORDER BY id")]
    assert len(txns) >= 8
    # timestamps whose text PostgreSQL shortens (no fraction, one digit, five digits) and a
    # transaction without memo, before they are sealed (so they are the sealed truth)
    tamper(aenv.sql,
           f"UPDATE ledger_txns SET created_at = '2026-03-01 08:00:00+08' WHERE id = {txns[1]}",
           f"UPDATE ledger_txns SET created_at = '2026-03-01 08:00:00.5+08' WHERE id = {txns[2]}",
           f"UPDATE ledger_txns SET created_at = '2026-03-01 08:00:00.12345+08' WHERE id = {txns[3]}",
           f"UPDATE ledger_txns SET memo = NULL WHERE id = {txns[4]}")
    r = json.loads(aenv.sql.scalar("SELECT gp_audit_seal(1000, 0, 86400, 1000000000)::text"))
    assert r["size"] == len(txns), r

    n, lines, raw = export(aenv)
    assert n == 0  # every transaction encoded here, none from the view
    v = view(aenv)
    assert raw == v  # byte for byte
    assert lines[0]["t"] == "header" and lines[0]["complete"] is True
    assert lines[-1] == {"t": "end", "transactions": len(txns), "checkpoints": 0}
    assert [ln["seq"] for ln in lines if ln["t"] == "txn"] == list(range(len(txns)))
    leaves = {t: h.hex() for t, h in aenv.sql("SELECT txn_id, hash FROM audit_leaves")}
    assert all(ln["leaf"] == leaves[ln["txn"]["id"]] for ln in lines if ln["t"] == "txn")
    assert v[txns[1]].count('"at":"2026-03-01T00:00:00.000000Z"') == 1
    assert v[txns[2]].count('"at":"2026-03-01T00:00:00.500000Z"') == 1
    assert v[txns[3]].count('"at":"2026-03-01T00:00:00.123450Z"') == 1

    # a row changed after sealing: that transaction, and only it, comes from the view
    tamper(aenv.sql, f"UPDATE ledger_txns SET memo = 'changed\tafter' WHERE id = {txns[5]}")
    n2, lines2, raw2 = export(aenv)
    assert n2 == 1
    v2 = view(aenv)
    assert raw2 == v2 and raw2[txns[5]] != raw[txns[5]]
    assert {k: x for k, x in raw2.items() if k != txns[5]} == {k: x for k, x in raw.items()
                                                               if k != txns[5]}
