"""Evidence photos (issue 13, item 3): PUT and GET /api/v1/evidence/{sha256}.

Uploads are checked by hash and by content, stored content-addressed in evidence.dir (the
tests look at the files), recorded in PostgreSQL, idempotent; downloads go only to the
uploaders and to staff and auditors who may read a report that refers to the photo, everyone
else gets the 404 of a missing hash; retention deletes the bytes and marks the row, once, with
an audit row and a log line."""

import concurrent.futures as cf
import hashlib
import json
import secrets
import socket
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from gp import Api, error_code, unique_name
from loop import Tree, bulk_workers, report_body

MAX_SIZE = 64 * 1024
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"


def jpeg(n=2000):
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + secrets.token_bytes(n)


def png(n=2000):
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + secrets.token_bytes(n)


def webp(n=2000):
    body = b"WEBPVP8 " + secrets.token_bytes(n)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def sha(data):
    return hashlib.sha256(data).hexdigest()


def put(api, data, ctype, token, digest=None):
    return api.put(f"/api/v1/evidence/{digest or sha(data)}", body=data, token=token,
                   headers={"Content-Type": ctype})


def stored_file(ev_dir, digest):
    return ev_dir / digest[:2] / digest


def wait_for(pred, timeout=15.0, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


@pytest.fixture(scope="module")
def ev_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("evidence")


@pytest.fixture(scope="module")
def server(server_factory, migrated, ev_dir):
    """The module's server, with its evidence store in a temp dir and a small upload limit."""
    srv = server_factory.new("evidence", env={
        "GRIDPOINTS_EVIDENCE_DIR": str(ev_dir),
        "GRIDPOINTS_EVIDENCE_MAX_SIZE": str(MAX_SIZE),
    })
    yield srv
    srv.stop()


@pytest.fixture
def tree(api, admin, sql):
    return Tree(api, admin, sql)


@pytest.mark.parametrize("make,ctype", [(jpeg, "image/jpeg"), (png, "image/png"),
                                        (webp, "image/webp")])
def test_upload_and_download(api, tree, sql, ev_dir, make, ctype):
    (w,) = tree.workers(1)
    data = make()
    digest = sha(data)
    r = put(api, data, ctype, w["token"])
    assert r.status_code == 201, r.text
    ev = r.json()
    assert ev["sha256"] == digest and ev["size"] == len(data) and ev["content_type"] == ctype
    assert ev["path"] == f"/api/v1/evidence/{digest}"
    schema = yaml.safe_load(OPENAPI.read_text())["components"]["schemas"]["Evidence"]
    jsonschema.validate(ev, schema)
    assert stored_file(ev_dir, digest).read_bytes() == data
    row = sql.one("SELECT state, uploaded_by, size, content_type, expires_at - created_at "
                  "FROM evidence WHERE sha256 = %s", (digest,))
    assert row[:4] == ("stored", w["id"], len(data), ctype)
    assert row[4].days == 180
    assert list((ev_dir / "tmp").iterdir()) == []

    # the same bytes again: 200, the same answer
    r2 = put(api, data, ctype, w["token"])
    assert r2.status_code == 200, r2.text
    assert r2.json() == ev

    r = api.get(ev["path"], token=w["token"])
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["Content-Type"] == ctype
    assert r.headers["ETag"] == f'"{digest}"'
    assert r.headers["Cache-Control"] == "private, max-age=3600"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in r.headers["Content-Security-Policy"]

    for inm in (f'"{digest}"', f'W/"{digest}"', f'"other", "{digest}"', "*"):
        r = api.get(ev["path"], token=w["token"], headers={"If-None-Match": inm})
        assert r.status_code == 304, (inm, r.status_code, r.text)
        assert r.content == b"" and r.headers["ETag"] == f'"{digest}"'
    r = api.get(ev["path"], token=w["token"], headers={"If-None-Match": '"other"'})
    assert r.status_code == 200 and r.content == data

    r = api.request("HEAD", ev["path"], token=w["token"])
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["Content-Length"]) == len(data)

    # upper-case hex names the same photo
    r = api.get(ev["path"].upper().replace("/API/V1/EVIDENCE/", "/api/v1/evidence/"),
                token=w["token"])
    assert r.status_code == 200 and r.content == data


def test_wrong_hash(api, tree, sql, ev_dir):
    (w,) = tree.workers(1)
    data, other = jpeg(), jpeg()
    r = put(api, data, "image/jpeg", w["token"], digest=sha(other))
    assert r.status_code == 400, r.text
    assert error_code(r) == "hash_mismatch" and r.json()["error"]["field"] == "sha256"
    assert not stored_file(ev_dir, sha(other)).exists()
    assert not stored_file(ev_dir, sha(data)).exists()
    assert sql.scalar("SELECT count(*) FROM evidence WHERE sha256 IN (%s, %s)",
                      (sha(data), sha(other))) == 0
    # not a hash at all
    r = api.put("/api/v1/evidence/not-a-hash", body=data, token=w["token"],
                headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 400 and error_code(r) == "invalid_sha256"
    r = api.put("/api/v1/evidence/" + "g" * 64, body=data, token=w["token"],
                headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 400 and error_code(r) == "invalid_sha256"


@pytest.mark.parametrize("data,ctype", [
    (b"GIF89a" + secrets.token_bytes(100), "image/png"),           # a GIF labelled PNG
    (b"GIF89a" + secrets.token_bytes(100), "image/gif"),           # a GIF as what it is
    (b"hello, this is text, not a photo\n" * 10, "image/png"),    # text labelled PNG
    (png(), "image/jpeg"),                                         # a PNG labelled JPEG
    (jpeg(), "application/octet-stream"),                          # a JPEG, unlabelled
    (jpeg(), "application/json"),
    (jpeg(), None),                                                # no Content-Type at all
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
    (b"RIFF\x10\x00\x00\x00WAVEfmt " + secrets.token_bytes(20), "image/webp"),  # RIFF, not WebP
    (b"\xff\xd8", "image/jpeg"),                                   # too short to be a JPEG
])
def test_wrong_type(api, tree, sql, ev_dir, data, ctype):
    (w,) = tree.workers(1)
    r = put(api, data, ctype, w["token"])
    assert r.status_code == 415, r.text
    assert error_code(r) == "unsupported_type"
    assert not stored_file(ev_dir, sha(data)).exists()
    assert sql.scalar("SELECT count(*) FROM evidence WHERE sha256 = %s", (sha(data),)) == 0


def test_empty_body_and_no_session(api, tree):
    (w,) = tree.workers(1)
    r = api.put("/api/v1/evidence/" + sha(b""), body=b"", token=w["token"],
                headers={"Content-Type": "image/png"})
    assert r.status_code == 400 and error_code(r) == "missing_body"
    data = png()
    r = put(api, data, "image/png", None)
    assert r.status_code == 401
    r = api.get(f"/api/v1/evidence/{sha(data)}", token=None)
    assert r.status_code == 401


def raw_request(server, head, body=b"", read_timeout=5.0):
    """Sends bytes on a fresh connection and returns (status, headers text, body bytes)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout) as s:
        s.sendall(head + body)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head_text, _, rest = buf.partition(b"\r\n\r\n")
        lines = head_text.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, "\r\n".join(lines[1:]), rest


def test_too_large(api, server, tree, ev_dir):
    (w,) = tree.workers(1)
    # The guard answers from the head alone: the 10 MB are never sent.
    digest = "ab" * 32
    head = (f"PUT /api/v1/evidence/{digest} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {w['token']}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {10 * 1024 * 1024}\r\n\r\n").encode()
    status, _, body = raw_request(server, head)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "body_too_large"
    # one byte over the limit, sent in full
    data = jpeg(MAX_SIZE)[:MAX_SIZE + 1]
    r = put(api, data, "image/jpeg", w["token"])
    assert r.status_code == 413, r.text
    assert not stored_file(ev_dir, sha(data)).exists()
    # exactly at the limit is fine
    data = jpeg(MAX_SIZE)[:MAX_SIZE]
    r = put(api, data, "image/jpeg", w["token"])
    assert r.status_code == 201, r.text
    # the JSON routes keep their own limits
    r = api.post("/api/v1/auth/login", body=json.dumps({"phone": "1" * 11, "password": "x" * 5000}))
    assert r.status_code == 413


def test_other_worker_gets_404(api, tree):
    a, b = tree.workers(2)
    data = png()
    digest = sha(data)
    assert put(api, data, "image/png", a["token"]).status_code == 201
    missing = api.get(f"/api/v1/evidence/{sha(png())}", token=b["token"])
    other = api.get(f"/api/v1/evidence/{digest}", token=b["token"])
    assert missing.status_code == other.status_code == 404
    assert missing.json()["error"]["code"] == other.json()["error"]["code"] == "evidence_not_found"
    assert missing.json()["error"]["message"] == other.json()["error"]["message"]
    assert other.json()["error"].get("field") == missing.json()["error"].get("field")
    assert "ETag" not in other.headers
    # scope before any fast path: knowing the ETag earns nothing either
    r = api.get(f"/api/v1/evidence/{digest}", token=b["token"],
                headers={"If-None-Match": f'"{digest}"'})
    assert r.status_code == 404 and error_code(r) == "evidence_not_found"
    r = api.request("HEAD", f"/api/v1/evidence/{digest}", token=b["token"])
    assert r.status_code == 404
    # a malformed hash is the same 404
    r = api.get("/api/v1/evidence/zz", token=b["token"])
    assert r.status_code == 404 and error_code(r) == "evidence_not_found"
    # b uploads the same bytes: now b is an uploader too and may read them
    r = put(api, data, "image/png", b["token"])
    assert r.status_code == 200, r.text
    assert api.get(f"/api/v1/evidence/{digest}", token=b["token"]).content == data


def claim_and_report(api, tree, worker, digests):
    task = tree.publish(slots=1)
    r = api.post(f"/api/v1/tasks/{task['id']}/claim", token=worker["token"])
    assert r.status_code == 201, r.text
    a = r.json()
    body = report_body(a["id"])
    body["evidence"] = [{"url": f"https://gp.example.cn/api/v1/evidence/{d}", "sha256": d}
                        for d in digests]
    r = api.post("/api/v1/reports", body, token=worker["token"])
    assert r.status_code == 201, r.text
    return a


def test_readers_of_the_report(api, tree, sql, make_admin):
    (w,) = tree.workers(1)
    data = webp()
    digest = sha(data)
    assert put(api, data, "image/webp", w["token"]).status_code == 201
    path = f"/api/v1/evidence/{digest}"
    auditor = bulk_workers(sql, tree.street, 1, role="auditor")[0]
    micro_staff = bulk_workers(sql, tree.micro, 1, role="grid_staff")[0]
    sibling = api.post("/api/v1/units", {"parent_id": tree.grid, "name": "sibling micro-grid"},
                       token=tree.admin["token"]).json()["id"]
    sibling_staff = bulk_workers(sql, sibling, 1, role="grid_staff")[0]
    other_street = make_admin()
    # no report refers to it yet: only the uploader
    for who in (tree.staff, auditor, tree.admin):
        assert api.get(path, token=who["token"]).status_code == 404
    claim_and_report(api, tree, w, [digest])
    # staff and admins whose scope covers the report's task, the street's auditor, and (issue
    # 14: a task of a unit above them done in their unit) staff over the worker's home unit
    for who in (tree.staff, tree.admin, auditor, micro_staff):
        r = api.get(path, token=who["token"])
        assert r.status_code == 200, r.text
        assert r.content == data
    # staff below the task's unit who do not cover the worker, another street's admin, another
    # worker: 404
    for who in (sibling_staff, other_street, tree.workers(1)[0]):
        r = api.get(path, token=who["token"])
        assert r.status_code == 404 and error_code(r) == "evidence_not_found"


def test_concurrent_identical_uploads(api, tree, sql, ev_dir):
    workers = tree.workers(3)
    data = jpeg(30000)
    digest = sha(data)

    def one(i):
        c = Api(api.base_url)
        try:
            return put(c, data, "image/jpeg", workers[i % 3]["token"])
        finally:
            c.close()

    with cf.ThreadPoolExecutor(12) as ex:
        results = list(ex.map(one, range(12)))
    codes = sorted(r.status_code for r in results)
    assert codes == [200] * 11 + [201], [(r.status_code, r.text) for r in results]
    assert len({json.dumps(r.json(), sort_keys=True) for r in results}) == 1
    files = [p for p in (ev_dir / digest[:2]).iterdir() if p.name.startswith(digest)]
    assert files == [stored_file(ev_dir, digest)]
    assert files[0].read_bytes() == data
    assert list((ev_dir / "tmp").iterdir()) == []
    assert sql.scalar("SELECT count(*) FROM evidence WHERE sha256 = %s", (digest,)) == 1
    assert sql.scalar("SELECT count(*) FROM evidence_uploaders WHERE sha256 = %s",
                      (digest,)) == 3


def test_retention_deletes(api, server, tree, sql, ev_dir, make_server):
    """A short retention (2 s) on a second instance sharing the store: plain evidence is deleted
    (file gone, row marked, audit row, log line, 404), evidence of a rejected report is kept
    for evidence.flagged_retention; the same bytes uploaded again are stored anew."""
    srv = make_server(env={
        "GRIDPOINTS_EVIDENCE_DIR": str(ev_dir),
        "GRIDPOINTS_EVIDENCE_RETENTION": "2s",
        "GRIDPOINTS_EVIDENCE_FLAGGED_RETENTION": "1h",
    })
    short = api(srv)
    (w,) = tree.workers(1)
    plain, kept = png(), jpeg()
    dp, dk = sha(plain), sha(kept)
    # The report (made offline) refers to the photo before it arrives; it is rejected.
    a = claim_and_report(short, tree, w, [dk])
    r = short.post(f"/api/v1/assignments/{a['id']}/reject", {"reason": "blurred photo"},
                   token=tree.staff["token"])
    assert r.status_code == 200, r.text
    assert put(short, plain, "image/png", w["token"]).status_code == 201
    assert put(short, kept, "image/jpeg", w["token"]).status_code == 201

    assert wait_for(lambda: sql.scalar("SELECT state FROM evidence WHERE sha256 = %s",
                                       (dp,)) == "deleted", timeout=20)
    assert not stored_file(ev_dir, dp).exists()
    r = short.get(f"/api/v1/evidence/{dp}", token=w["token"])
    assert r.status_code == 404 and error_code(r) == "evidence_not_found"
    # whichever instance deleted it logged it
    line = f"evidence deleted: sha256={dp}"
    assert wait_for(lambda: line in srv.log_text() or line in server.log_text(), timeout=5)
    audit = sql.query("SELECT actor_id, action, reason FROM audit_log "
                      "WHERE object_type = 'evidence' AND object_id = %s", (dp,))
    assert audit == [(None, "evidence.delete", "retention")]

    # the rejected report's photo: kept longer, still readable
    time.sleep(2.5)
    row = sql.one("SELECT state, expires_at > now() + interval '30 minutes' FROM evidence "
                  "WHERE sha256 = %s", (dk,))
    assert row == ("stored", True)
    assert stored_file(ev_dir, dk).exists()
    assert short.get(f"/api/v1/evidence/{dk}", token=w["token"]).status_code == 200

    # more sweeps did not delete or audit twice
    assert sql.scalar("SELECT count(*) FROM audit_log WHERE object_type = 'evidence' "
                      "AND object_id = %s", (dp,)) == 1

    # the same bytes again: a new photo as far as retention goes
    r = put(short, plain, "image/png", w["token"])
    assert r.status_code == 201, r.text
    assert stored_file(ev_dir, dp).read_bytes() == plain
    assert short.get(f"/api/v1/evidence/{dp}", token=w["token"]).content == plain


def test_deletion_lease_is_taken_once(api, tree, sql, ev_dir):
    """Two sweeps racing over the same expired rows (two instances): each row is claimed by
    one of them only; a row being deleted answers an upload of its bytes with 503."""
    (w,) = tree.workers(1)
    datas = [png() for _ in range(4)]
    for d in datas:
        assert put(api, d, "image/png", w["token"]).status_code == 201
    digests = [sha(d) for d in datas]
    # hold a lease on them as a sweep would, without removing anything
    sql.execute("UPDATE evidence SET state = 'deleting', lease_until = now() + interval '1 hour' "
                "WHERE sha256 = ANY (%s)", (digests,))
    claimed = sql.scalar("SELECT gp_evidence_sweep(100, '{\"flagged_retention_s\": 60}')")
    assert not set(claimed["claimed"]) & set(digests)
    r = put(api, datas[0], "image/png", w["token"])
    assert r.status_code == 503 and error_code(r) == "evidence_busy"
    assert "Retry-After" in r.headers
    # marking is once: the second call finds nothing left to mark
    first = sql.scalar("SELECT gp_evidence_deleted(%s::jsonb)", (json.dumps(digests[:2]),))
    again = sql.scalar("SELECT gp_evidence_deleted(%s::jsonb)", (json.dumps(digests[:2]),))
    assert len(first["deleted"]) == 2 and again["deleted"] == []
    # a lease that ran out is claimed again (a server died while removing)
    sql.execute("UPDATE evidence SET lease_until = now() - interval '1 second' "
                "WHERE sha256 = ANY (%s)", (digests[2:],))
    assert wait_for(lambda: sql.scalar(
        "SELECT count(*) FROM evidence WHERE sha256 = ANY (%s) AND state = 'deleted'",
        (digests[2:],)) == 2, timeout=20)
    assert not stored_file(ev_dir, digests[2]).exists()
