"""The streaming verifier's fast path (server/cli_verify.c, docs/AUDIT.md §7): transaction lines
of exactly the exporter's format are read without a JSON tree; anything else goes through the
general JSON path. Differential robustness test: thousands of malformed, mutated and hostile
lines; the verifier never crashes (ASan/UBSan build), says FAIL with a line number, and the fast
path's verdict and message are exactly those of `verify --general` (every line through jansson)."""

import random
import re

from gp import Api, unique_name
from test_audit import (activity, aenv, export_and_verify, make_street_admin,  # noqa: F401
                        street_tree, wait_checkpointed)

SANITIZER = re.compile(r"AddressSanitizer|runtime error|LeakSanitizer|Segmentation|Aborted")
TIME = re.compile(r" in \d+\.\d+ s")


def run_both(aenv, keys, lines_bytes):
    f = aenv.dir / f"{unique_name('fz')}.jsonl"
    f.write_bytes(b"\n".join(lines_bytes) + b"\n")
    out = []
    for extra in ([], ["--general"]):
        p = aenv.run("verify", "--export", str(f), "--pubkey", str(keys), *extra, check=False)
        assert not SANITIZER.search(p.stderr), p.stderr
        assert p.returncode in (0, 1, 2), (p.returncode, p.stderr)
        if p.returncode == 1:
            assert re.match(r"FAIL \S+: line \d+", p.stdout), p.stdout
        out.append((p.returncode, TIME.sub("", p.stdout)))
    assert out[0] == out[1], out
    f.unlink()
    return out[0]


def mutate(rng, line: bytes) -> bytes:
    b = bytearray(line)
    k = rng.randrange(9)
    pos = rng.randrange(len(b))
    if k == 0:    # one byte replaced by a structural, escape, control or non-UTF-8 byte
        b[pos] = rng.choice(b'"\\{}[],:0129-+.eE aZ\x00\x01\x1f\x7f\x80\xc3\xff')
    elif k == 1:  # a byte dropped
        del b[pos]
    elif k == 2:  # truncated
        del b[pos:]
    elif k == 3:  # a piece repeated (duplicate keys, members)
        n = rng.randrange(1, 40)
        b[pos:pos] = b[pos:pos + n]
    elif k == 4:  # an integer made huge, negative or fractional
        m = list(re.finditer(rb"-?\d+", bytes(b)))
        if m:
            g = rng.choice(m)
            rep = rng.choice([b"99999999999999999999", b"9223372036854775807", b"-0", b"01",
                              b"1.0", b"1e3", b"-9223372036854775808", b"0"])
            b[g.start():g.end()] = rep
    elif k == 5:  # whitespace after a colon or comma
        m = [i for i, c in enumerate(b) if c in b":,"]
        if m:
            b.insert(rng.choice(m) + 1, 0x20)
    elif k == 6:  # a string with an escape, or a nested value in refs
        b = bytearray(bytes(b).replace(b'"refs":{}', rng.choice(
            [b'"refs":{"a":{"b":1}}', b'"refs":{"a":1,"a":2}', b'"refs":{"a":"\\u00e9"}',
             b'"refs":[]', b'"refs":{"a":1.5}', b'"refs":{"a":true,"b":null}'])))
    elif k == 7:  # a key renamed
        m = list(re.finditer(rb'"[a-z_]+":', bytes(b)))
        if m:
            g = rng.choice(m)
            b[g.start() + 1:g.start() + 2] = b"X"
    else:         # invalid UTF-8 / overlong inside a string
        m = [i for i, c in enumerate(b) if c == 0x22]
        if m:
            i = rng.choice(m) + 1
            b[i:i] = rng.choice([b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe4\xb8"])
    return bytes(b)


def test_streaming_verifier_rejects_malformed_lines_like_the_general_path(aenv):
    srv = aenv.server()
    api = Api(srv)
    admin = make_street_admin(aenv, srv)
    tree = street_tree(api, admin, aenv)
    workers = tree.workers(2)
    activity(api, tree, workers, n=6)
    # strings with escapes and non-ASCII take the general path inside the same export
    for reason in ['with "quotes" and \\ backslash', "换行\nnewline", "tab\there"]:
        r = api.post("/api/v1/adjustments", {"worker_id": workers[0]["id"], "amount": 3,
                                             "reason": reason},
                     token=tree.admin["token"], idempotency_key=unique_name("k"))
        assert r.status_code == 201, r.text
    activity(api, tree, workers, n=3)
    wait_checkpointed(api, admin["token"])
    path, keys, p = export_and_verify(aenv)
    assert p.returncode == 0, p.stdout
    lines = path.read_bytes().rstrip(b"\n").split(b"\n")
    rc, out = run_both(aenv, keys, lines)
    assert rc == 0 and out.startswith("OK "), out
    txn = [i for i, ln in enumerate(lines) if ln.startswith(b'{"t":"txn"')]
    assert len(txn) >= 12

    rng = random.Random(20261207)
    verdicts = {0: 0, 1: 0, 2: 0}
    for _ in range(150):
        m = list(lines)
        i = rng.choice(txn) if rng.random() < 0.85 else rng.randrange(len(m))
        m[i] = mutate(rng, m[i])
        if rng.random() < 0.2:
            m[i] = mutate(rng, m[i])
        rc, out = run_both(aenv, keys, m)
        verdicts[rc] += 1
        if rc == 1 and m[i] != lines[i]:
            assert f"line " in out
    assert verdicts[1] > 100, verdicts  # nearly every mutation is caught
    # hostile whole lines
    for bad in [b"", b"{", b'{"t":"txn",', b'{"t":"txn","seq":0,"leaf":null,"txn":}',
                b'{"t":"txn","seq":0,"leaf":"' + b"0" * 64 + b'","txn":{"id":1}}',
                b'{"t":"txn","seq":0,"leaf":"' + b"g" * 64 + b'","txn":{}}',
                b'{"t":"txn","seq":0,"leaf":null,"proof":[' + b",".join([b'"' + b"0" * 64 + b'"'] * 80)
                + b'],"txn":{}}', b"\x00" * 100, b'{"t":"txn"' + b"[" * 5000,
                b'{"t":"txn","seq":0,"leaf":null,"txn":{"id":1,"xid":1,"kind":"k","at":"a",'
                b'"actor":null,"refs":{},"memo":null,"postings":[' +
                b",".join([b'{"id":1,"account":2,"account_kind":"' + b"w" * 70 +
                           b'","amount":1,"version":1,"balance_after":1}'] * 3) + b"]}}"]:
        m = list(lines)
        m[txn[2]] = bad
        rc, out = run_both(aenv, keys, m)
        assert rc == 1, out
