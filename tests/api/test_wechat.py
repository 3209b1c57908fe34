"""WeChat login and binding with invite codes (issue 13, item 2; docs/OPERATIONS.md "WeChat
set-up").

A local peer on 127.0.0.1 (HTTPS, with a certificate made for the test and wechat.ca_file
pointing at it; wechat.api_base pointing at it) speaks both of WeChat's contracts:
jscode2session (mini-program, wx.login codes) and sns/oauth2/access_token (web OAuth in
WeChat's browser), with their error codes (40029 invalid code, 40163 used code, 45011 rate
limit, -1 system busy) and slow or dropped replies. Codes are one-time, as WeChat's are.

Covered: first login -> bind ticket -> bind with an invite code -> session; later logins by
code alone (both kinds); wrong invite, an invite of another person, expired, reused and
exhausted tickets, reused WeChat codes and invites; staff outside the person's subtree get 404
as for a missing person; each WeChat error mapped (never a 5xx but 503 with Retry-After); a
peer slower than wechat.timeout -> 503 while the server keeps serving; unbinding by the person
and by staff; every bind, unbind and invite in the audit log."""

import json
import secrets
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gp import Api, error_code, free_port, unique_name, unique_phone

WEB_APP, WEB_SECRET = "wxweb0000000001", "web-secret-0123456789abcdef"
MINI_APP, MINI_SECRET = "wxmini000000001", "mini-secret-0123456789abcdef"
TIMEOUT_S = 1.0  # wechat.timeout of the module's server


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("wechat-tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


class Peer:
    """WeChat's login API on 127.0.0.1. peer.code(openid, unionid=None) registers a one-time
    code for a user; codes named by a behaviour ("busy-...", "ratelimit-...", "slow-...",
    "drop-...", "cut-...", "http500-...", "html-...", "noopenid-...") answer that way."""

    def __init__(self, cert, key):
        self.codes = {}  # code -> (openid, unionid)
        self.used = set()
        self.requests = []  # (path, query dict)
        self.lock = threading.Lock()
        self.slow_s = 3 * TIMEOUT_S
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
                with outer.lock:
                    outer.requests.append((u.path, q))
                outer.answer(self, u.path, q)

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    def code(self, openid=None, unionid=None, prefix="c"):
        c = f"{prefix}-{unique_name('code')}".replace(".", "-")
        with self.lock:
            self.codes[c] = (openid or "o" + unique_name("id").replace(".", "_"), unionid)
        return c

    def behaviour(self, kind):
        return f"{kind}-{unique_name('x')}".replace(".", "-")

    def count(self, path=None):
        with self.lock:
            return sum(1 for p, _ in self.requests if path is None or p == path)

    @staticmethod
    def send_json(h, obj, status=200):
        body = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def answer(self, h, path, q):
        if path == "/sns/jscode2session":
            app, secret, code = q.get("appid"), q.get("secret"), q.get("js_code")
            want_app, want_secret = MINI_APP, MINI_SECRET
        elif path == "/sns/oauth2/access_token":
            app, secret, code = q.get("appid"), q.get("secret"), q.get("code")
            want_app, want_secret = WEB_APP, WEB_SECRET
        else:
            return self.send_json(h, {"errcode": 40066, "errmsg": "invalid url"}, 404)
        if q.get("grant_type") != "authorization_code":
            return self.send_json(h, {"errcode": 40002, "errmsg": "invalid grant_type"})
        if app != want_app:
            return self.send_json(h, {"errcode": 40013, "errmsg": "invalid appid"})
        if secret != want_secret:
            return self.send_json(h, {"errcode": 40125, "errmsg": "invalid appsecret"})
        kind = (code or "").split("-", 1)[0]
        if kind == "busy":
            return self.send_json(h, {"errcode": -1, "errmsg": "system error"})
        if kind == "ratelimit":
            return self.send_json(h, {"errcode": 45011, "errmsg": "api minute-quota reach limit"})
        if kind == "blocked":
            return self.send_json(h, {"errcode": 40226, "errmsg": "invalid user"})
        if kind == "http500":
            return self.send_json(h, {"errmsg": "internal"}, 500)
        if kind == "html":
            body = b"<html>busy</html>"
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        if kind == "noopenid":
            return self.send_json(h, {"session_key": "k"})
        if kind == "slow":
            time.sleep(self.slow_s)
            return self.send_json(h, {"openid": "oslow", "session_key": "k"})
        if kind == "drop":  # no reply at all
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if kind == "cut":  # the head, then part of the body, then gone
            h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"openid\":\"o")
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        with self.lock:
            if code in self.used:
                return self.send_json(h, {"errcode": 40163, "errmsg": "code been used"})
            user = self.codes.get(code)
            if user:
                self.used.add(code)
        if not user:
            return self.send_json(h, {"errcode": 40029, "errmsg": "invalid code"})
        openid, unionid = user
        if path == "/sns/jscode2session":
            reply = {"openid": openid, "session_key": "c2Vzc2lvbi1rZXk="}
        else:
            reply = {"access_token": "ACCESS", "expires_in": 7200, "refresh_token": "REFRESH",
                     "openid": openid, "scope": "snsapi_base"}
        if unionid:
            reply["unionid"] = unionid
        self.send_json(h, reply)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def peer(tls_files):
    p = Peer(*tls_files)
    yield p
    p.close()


def wechat_env(peer, cert, **over):
    env = {
        "GRIDPOINTS_WECHAT_API_BASE": peer.url,
        "GRIDPOINTS_WECHAT_APP_ID": WEB_APP,
        "GRIDPOINTS_WECHAT_APP_SECRET": WEB_SECRET,
        "GRIDPOINTS_WECHAT_MINI_APP_ID": MINI_APP,
        "GRIDPOINTS_WECHAT_MINI_APP_SECRET": MINI_SECRET,
        "GRIDPOINTS_WECHAT_CA_FILE": str(cert),
        "GRIDPOINTS_WECHAT_TIMEOUT": f"{int(TIMEOUT_S * 1000)}ms",
        "GRIDPOINTS_WECHAT_UNAVAILABLE_RETRY_AFTER": "7s",
        "GRIDPOINTS_WECHAT_RATE_LIMIT_RETRY_AFTER": "42s",
    }
    env.update(over)
    return env


@pytest.fixture(scope="module")
def wx(server_factory, migrated, peer, tls_files):
    """The module's server, configured for the peer."""
    srv = server_factory.new("wechat", env=wechat_env(peer, tls_files[0]))
    yield srv
    srv.stop()


@pytest.fixture
def wapi(wx):
    client = Api(wx)
    yield client
    client.close()


def make_person(api, admin, unit_id=None, roles=("worker",)):
    phone = unique_phone()
    r = api.post("/api/v1/people", {"phone": phone, "name": unique_name("p"),
                                    "unit_id": unit_id or admin["unit_id"],
                                    "roles": [{"role": x} for x in roles]}, token=admin["token"])
    assert r.status_code == 201, r.text
    p = r.json()
    p["phone"] = phone
    return p


def invite(api, admin, person_id):
    r = api.post(f"/api/v1/people/{person_id}/invites", {}, token=admin["token"])
    assert r.status_code == 201, r.text
    return r.json()


def login(api, code, kind="mini"):
    return api.post("/api/v1/auth/wechat", {"kind": kind, "code": code}, token=None)


def ticket_for(api, peer, openid=None, kind="mini"):
    r = login(api, peer.code(openid), kind)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["bound"] is False and len(body["bind_ticket"]) == 43 and body["expires_at"]
    assert "token" not in body
    return body["bind_ticket"]


def bind(api, ticket, phone, code):
    return api.post("/api/v1/auth/wechat/bind",
                    {"ticket": ticket, "phone": phone, "invite_code": code}, token=None)


# --------------------------------------------------------------------------------------------


def test_first_login_bind_then_code_alone(wapi, make_admin, peer, sql):
    admin = make_admin(wapi.base_url)
    w = make_person(wapi, admin)
    inv = invite(wapi, admin, w["id"])
    assert inv["person_id"] == w["id"] and inv["expires_at"]
    assert len(inv["code"].replace("-", "")) == 16
    # stored hashed: the code itself is nowhere in the table
    stored = sql.one("SELECT code_hash, issued_by FROM wechat_invites WHERE id = %s", (inv["id"],))
    assert bytes(stored[0]) != inv["code"].encode() and len(bytes(stored[0])) == 32
    assert stored[1] == admin["person_id"]

    openid = "oMini_" + unique_name("u").replace(".", "_")
    before = peer.count("/sns/jscode2session")
    ticket = ticket_for(wapi, peer, openid)
    assert peer.count("/sns/jscode2session") == before + 1
    _, q = peer.requests[-1]
    assert q["appid"] == MINI_APP and q["secret"] == MINI_SECRET
    assert q["grant_type"] == "authorization_code"

    # typed sloppily: lower case, blanks instead of dashes
    r = bind(wapi, ticket, w["phone"], inv["code"].lower().replace("-", " "))
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["bound"] is True and s["token_type"] == "Bearer" and s["person"]["person_id"] == w["id"]
    me = wapi.get("/api/v1/me", token=s["token"])
    assert me.status_code == 200 and me.json()["id"] == w["id"]
    row = sql.one("SELECT person_id, app_id FROM wechat_bindings WHERE openid = %s", (openid,))
    assert row == (w["id"], MINI_APP)

    # later: the code alone, as often as WeChat hands out codes
    for _ in range(2):
        r = login(wapi, peer.code(openid))
        assert r.status_code == 200, r.text
        b = r.json()
        assert b["bound"] is True and b["person"]["person_id"] == w["id"]
        assert wapi.get("/api/v1/me", token=b["token"]).json()["id"] == w["id"]

    # the audit log has the invite and the bind
    actions = sql.query("SELECT action, actor_id FROM audit_log WHERE object_type = 'person' "
                        "AND object_id = %s ORDER BY id", (str(w["id"]),))
    assert ("wechat.invite", admin["person_id"]) in actions
    assert ("wechat.bind", w["id"]) in actions


def test_web_oauth_kind_and_unionid_across_apps(wapi, make_admin, peer, sql):
    admin = make_admin(wapi.base_url)
    w = make_person(wapi, admin)
    inv = invite(wapi, admin, w["id"])
    union = "uU_" + unique_name("u").replace(".", "_")
    web_openid = "oWeb_" + unique_name("u").replace(".", "_")
    r = login(wapi, peer.code(web_openid, union), "web")
    assert r.status_code == 200 and r.json()["bound"] is False, r.text
    _, q = peer.requests[-1]
    assert peer.requests[-1][0] == "/sns/oauth2/access_token"
    assert q["appid"] == WEB_APP and q["secret"] == WEB_SECRET
    r = bind(wapi, r.json()["bind_ticket"], w["phone"], inv["code"])
    assert r.status_code == 200 and r.json()["person"]["person_id"] == w["id"], r.text
    # the same WeChat user in the mini-program: another openid, the same unionid
    r = login(wapi, peer.code("oMiniOf_" + web_openid, union), "mini")
    assert r.status_code == 200, r.text
    assert r.json()["bound"] is True and r.json()["person"]["person_id"] == w["id"]
    apps = sql.query("SELECT app_id FROM wechat_bindings WHERE person_id = %s ORDER BY app_id",
                     (w["id"],))
    assert apps == [(MINI_APP,), (WEB_APP,)]


def test_wrong_invites_count_against_the_ticket(wapi, make_admin, peer):
    admin = make_admin(wapi.base_url)
    w, other = make_person(wapi, admin), make_person(wapi, admin)
    inv_w, inv_other = invite(wapi, admin, w["id"]), invite(wapi, admin, other["id"])
    ticket = ticket_for(wapi, peer)
    # a well-formed code nobody issued
    r = bind(wapi, ticket, w["phone"], "AAAA-BBBB-CCCC-DDDD")
    assert r.status_code == 401 and error_code(r) == "invite_invalid", r.text
    # an invite issued for another person: the phone does not fit
    r = bind(wapi, ticket, w["phone"], inv_other["code"])
    assert r.status_code == 401 and error_code(r) == "invite_invalid", r.text
    # the right invite with another person's phone
    r = bind(wapi, ticket, other["phone"], inv_w["code"])
    assert r.status_code == 401 and error_code(r) == "invite_invalid", r.text
    # malformed input never reaches the database
    for bad in ("short", "AAAA-BBBB-CCCC-DDD1", "ÄAAA-BBBB-CCCC-DDDD", "A" * 17):
        r = bind(wapi, ticket, w["phone"], bad)
        assert r.status_code == 400 and error_code(r) == "invalid_field", (bad, r.text)
    # the ticket still works (3 of 5 attempts used), once
    r = bind(wapi, ticket, w["phone"], inv_w["code"])
    assert r.status_code == 200 and r.json()["person"]["person_id"] == w["id"], r.text
    r = bind(wapi, ticket, other["phone"], inv_other["code"])
    assert r.status_code == 401 and error_code(r) == "bind_ticket_invalid", r.text
    # the used invite cannot bind another WeChat user
    r = bind(wapi, ticket_for(wapi, peer), w["phone"], inv_w["code"])
    assert r.status_code == 401 and error_code(r) == "invite_invalid", r.text
    # and the other person's invite still binds them
    r = bind(wapi, ticket_for(wapi, peer), other["phone"], inv_other["code"])
    assert r.status_code == 200 and r.json()["person"]["person_id"] == other["id"], r.text


def test_ticket_expiry_attempts_and_shape(wapi, make_admin, peer, sql):
    admin = make_admin(wapi.base_url)
    w = make_person(wapi, admin)
    inv = invite(wapi, admin, w["id"])
    # expired
    ticket = ticket_for(wapi, peer)
    sql.execute("UPDATE wechat_bind_tickets SET created_at = now() - interval '1 hour', "
                "expires_at = now() - interval '1 second' WHERE id = "
                "(SELECT max(id) FROM wechat_bind_tickets)")
    r = bind(wapi, ticket, w["phone"], inv["code"])
    assert r.status_code == 401 and error_code(r) == "bind_ticket_invalid", r.text
    # out of attempts (wechat.bind_ticket_attempts = 5)
    ticket = ticket_for(wapi, peer)
    for _ in range(5):
        r = bind(wapi, ticket, w["phone"], "AAAA-BBBB-CCCC-DDDD")
        assert r.status_code == 401 and error_code(r) == "invite_invalid", r.text
    r = bind(wapi, ticket, w["phone"], inv["code"])
    assert r.status_code == 401 and error_code(r) == "bind_ticket_invalid", r.text
    # unknown and malformed tickets
    for t in ("x" * 43, "short", "a b" * 14 + "a"):
        r = bind(wapi, t, w["phone"], inv["code"])
        assert r.status_code == 401 and error_code(r) == "bind_ticket_invalid", (t, r.text)
    # the invite survived all that
    r = bind(wapi, ticket_for(wapi, peer), w["phone"], inv["code"])
    assert r.status_code == 200, r.text


def test_new_invite_replaces_the_open_one(wapi, make_admin, peer):
    admin = make_admin(wapi.base_url)
    w = make_person(wapi, admin)
    first, second = invite(wapi, admin, w["id"]), invite(wapi, admin, w["id"])
    assert first["code"] != second["code"]
    r = bind(wapi, ticket_for(wapi, peer), w["phone"], first["code"])
    assert r.status_code == 401 and error_code(r) == "invite_invalid", r.text
    r = bind(wapi, ticket_for(wapi, peer), w["phone"], second["code"])
    assert r.status_code == 200, r.text


def test_invites_are_scoped_like_people(wapi, make_admin, peer):
    admin, stranger = make_admin(wapi.base_url), make_admin(wapi.base_url)
    w = make_person(wapi, admin)
    # staff of another street: 404 as for a missing person
    r = wapi.post(f"/api/v1/people/{w['id']}/invites", {}, token=stranger["token"])
    assert r.status_code == 404 and error_code(r) == "person_not_found", r.text
    r = wapi.post("/api/v1/people/999999999/invites", {}, token=admin["token"])
    assert r.status_code == 404 and error_code(r) == "person_not_found", r.text
    # a worker is not staff, even for themselves
    r = wapi.post("/api/v1/auth/login", {"phone": w["phone"], "password": w["initial_password"]},
                  token=None)
    wtoken = r.json()["token"]
    r = wapi.post(f"/api/v1/people/{w['id']}/invites", {}, token=wtoken)
    assert r.status_code == 404 and error_code(r) == "person_not_found", r.text
    # no session, unknown fields
    r = wapi.post(f"/api/v1/people/{w['id']}/invites", {}, token=None)
    assert r.status_code == 401
    r = wapi.post(f"/api/v1/people/{w['id']}/invites", {"ttl": 5}, token=admin["token"])
    assert r.status_code == 400 and error_code(r) == "unknown_field", r.text


def test_wechat_errors_are_mapped(wapi, peer, wx):
    # a code WeChat does not know, and one used twice
    r = login(wapi, "unknown-" + unique_name("c").replace(".", "-"))
    assert r.status_code == 401 and error_code(r) == "wechat_code_invalid", r.text
    code = peer.code()
    assert login(wapi, code).status_code == 200
    r = login(wapi, code)
    assert r.status_code == 401 and error_code(r) == "wechat_code_invalid", r.text
    r = login(wapi, peer.behaviour("ratelimit"))
    assert r.status_code == 429 and error_code(r) == "wechat_rate_limited", r.text
    assert r.headers["Retry-After"] == "42"
    r = login(wapi, peer.behaviour("blocked"), "web")
    assert r.status_code == 403 and error_code(r) == "wechat_user_blocked", r.text
    for kind in ("busy", "http500", "html", "noopenid", "drop", "cut"):
        for app in ("mini", "web"):
            r = login(wapi, peer.behaviour(kind), app)
            assert r.status_code == 503 and error_code(r) == "wechat_unavailable", (kind, r.text)
            assert r.headers["Retry-After"] == "7", (kind, r.headers)
    assert wapi.get("/healthz").status_code == 200


def test_slow_peer_times_out_and_the_server_keeps_serving(wapi, peer, wx):
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(login, Api(wx), peer.behaviour("slow")) for _ in range(3)]
        # meanwhile: other requests, a WeChat login included, are answered at once
        time.sleep(0.2)
        t = time.monotonic()
        assert wapi.get("/healthz").status_code == 200
        r = login(wapi, peer.code())
        assert r.status_code == 200 and r.json()["bound"] is False, r.text
        assert time.monotonic() - t < TIMEOUT_S
        for f in slow:
            r = f.result()
            assert r.status_code == 503 and error_code(r) == "wechat_unavailable", r.text
            assert r.headers["Retry-After"] == "7"
    elapsed = time.monotonic() - started
    assert TIMEOUT_S * 0.9 <= elapsed < peer.slow_s, elapsed


def test_bad_requests_never_reach_wechat(wapi, peer):
    before = peer.count()
    for body in ({"kind": "mini"}, {"code": "abc"}, {"kind": "app", "code": "abc"},
                 {"kind": "mini", "code": ""}, {"kind": "mini", "code": "a&secret=x"},
                 {"kind": "mini", "code": "x" * 129}, {"kind": "mini", "code": 5},
                 {"kind": "mini", "code": "abc", "appid": "x"}, {"kind": "mini", "code": "代码"}):
        r = wapi.post("/api/v1/auth/wechat", body, token=None)
        assert r.status_code == 400, (body, r.text)
    r = wapi.post("/api/v1/auth/wechat", body="[1]", token=None)
    assert r.status_code == 400
    for body in ({"ticket": "x" * 43, "phone": "1380000"}, {"ticket": 1, "phone": "13800000000",
                                                            "invite_code": "A"}):
        r = wapi.post("/api/v1/auth/wechat/bind", body, token=None)
        assert r.status_code == 400, (body, r.text)
    assert peer.count() == before


def test_unbind_by_person_and_by_staff(wapi, make_admin, peer, sql):
    admin, stranger = make_admin(wapi.base_url), make_admin(wapi.base_url)
    w = make_person(wapi, admin)
    openid = "oUnbind_" + unique_name("u").replace(".", "_")
    r = bind(wapi, ticket_for(wapi, peer, openid), w["phone"], invite(wapi, admin, w["id"])["code"])
    token = r.json()["token"]
    # the person unbinds themselves: the next login by code needs a bind again
    r = wapi.delete("/api/v1/me/wechat", token=token)
    assert r.status_code == 200 and r.json()["unbound"] == 1, r.text
    r = login(wapi, peer.code(openid))
    assert r.status_code == 200 and r.json()["bound"] is False
    # bound again, then unbound by staff; strangers see no such person
    r = bind(wapi, r.json()["bind_ticket"], w["phone"], invite(wapi, admin, w["id"])["code"])
    assert r.status_code == 200, r.text
    r = wapi.delete(f"/api/v1/people/{w['id']}/wechat", token=stranger["token"])
    assert r.status_code == 404 and error_code(r) == "person_not_found", r.text
    r = wapi.delete(f"/api/v1/people/{w['id']}/wechat", token=admin["token"])
    assert r.status_code == 200 and r.json()["unbound"] == 1, r.text
    assert login(wapi, peer.code(openid)).json()["bound"] is False
    r = wapi.delete(f"/api/v1/people/{w['id']}/wechat", token=admin["token"])
    assert r.status_code == 200 and r.json()["unbound"] == 0
    unbinds = sql.query("SELECT actor_id, before->>'openid' FROM audit_log WHERE action = "
                        "'wechat.unbind' AND object_id = %s ORDER BY id", (str(w["id"]),))
    assert unbinds == [(w["id"], openid), (admin["person_id"], openid)]


def test_unbinding_ends_the_other_sessions(wapi, make_admin, peer):
    """A binding is removed because a phone was lost: the sessions it left open end with it,
    at once (the server's session cache included); the person's own phone stays signed in."""
    admin = make_admin(wapi.base_url)
    w = make_person(wapi, admin)
    openid = "oEnd_" + unique_name("u").replace(".", "_")
    r = bind(wapi, ticket_for(wapi, peer, openid), w["phone"], invite(wapi, admin, w["id"])["code"])
    lost = r.json()["token"]
    kept = login(wapi, peer.code(openid)).json()["token"]
    for t in (lost, kept):  # both sessions are in use (and cached) before the unbind
        assert wapi.get("/api/v1/me", token=t).status_code == 200
    r = wapi.delete("/api/v1/me/wechat", token=kept)
    assert r.status_code == 200, r.text
    assert r.json() == {"person_id": w["id"], "unbound": 1, "sessions_ended": 1}
    assert wapi.get("/api/v1/me", token=lost).status_code == 401
    assert wapi.get("/api/v1/me", token=kept).status_code == 200
    # staff unbind: every session of the person ends, the one that asked included
    r = bind(wapi, ticket_for(wapi, peer, openid), w["phone"], invite(wapi, admin, w["id"])["code"])
    again = r.json()["token"]
    r = wapi.delete(f"/api/v1/people/{w['id']}/wechat", token=admin["token"])
    assert r.status_code == 200 and r.json()["sessions_ended"] == 2, r.text
    for t in (kept, again):
        assert wapi.get("/api/v1/me", token=t).status_code == 401
    assert wapi.get("/api/v1/me", token=admin["token"]).status_code == 200
    # nothing left to unbind: nothing else ends
    r = wapi.delete(f"/api/v1/people/{w['id']}/wechat", token=admin["token"])
    assert r.json() == {"person_id": w["id"], "unbound": 0, "sessions_ended": 0}


def test_suspended_person_cannot_log_in_by_code(wapi, make_admin, peer):
    admin = make_admin(wapi.base_url)
    w = make_person(wapi, admin)
    openid = "oSusp_" + unique_name("u").replace(".", "_")
    r = bind(wapi, ticket_for(wapi, peer, openid), w["phone"], invite(wapi, admin, w["id"])["code"])
    assert r.status_code == 200
    r = wapi.patch(f"/api/v1/people/{w['id']}", {"status": "suspended"}, token=admin["token"])
    assert r.status_code == 200, r.text
    r = login(wapi, peer.code(openid))
    assert r.status_code == 403 and error_code(r) == "account_inactive", r.text
    r = wapi.post(f"/api/v1/people/{w['id']}/invites", {}, token=admin["token"])
    assert r.status_code == 409 and error_code(r) == "person_inactive", r.text


def test_login_throttle_applies_per_address(make_server, peer, tls_files):
    # trust_proxy: this test's client address is its own (the counters live in the shared
    # Redis, keyed by address, across servers and tests)
    srv = make_server(env=wechat_env(peer, tls_files[0], GRIDPOINTS_AUTH_LOGIN_LIMIT_PER_ADDR="3",
                                     GRIDPOINTS_SERVER_TRUST_PROXY="true"))
    api = Api(srv)
    me = {"X-Forwarded-For": "10.13.%d.%d" % (secrets.randbelow(250), secrets.randbelow(250) + 1)}
    other = {"X-Forwarded-For": "10.14.%d.%d" % (secrets.randbelow(250), secrets.randbelow(250) + 1)}

    def attempt(code, headers):
        return api.post("/api/v1/auth/wechat", {"kind": "mini", "code": code}, token=None,
                        headers=headers)

    try:
        # WeChat's weather is not held against the client: busy replies are taken back
        for _ in range(4):
            assert attempt(peer.behaviour("busy"), me).status_code == 503
        for _ in range(3):
            r = attempt("unknown-" + unique_name("c").replace(".", "-"), me)
            assert r.status_code == 401, r.text
        before = peer.count()
        r = attempt(peer.code(), me)
        assert r.status_code == 429 and error_code(r) == "too_many_attempts", r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert peer.count() == before  # refused before asking WeChat
        # another address is not affected
        r = attempt(peer.code(), other)
        assert r.status_code == 200 and r.json()["bound"] is False, r.text
    finally:
        api.close()


def test_disabled_kinds_and_bad_settings(make_server, server_factory, peer, tls_files):
    # only the official account configured: the mini-program kind is off
    srv = make_server(env={"GRIDPOINTS_WECHAT_API_BASE": peer.url,
                           "GRIDPOINTS_WECHAT_APP_ID": WEB_APP,
                           "GRIDPOINTS_WECHAT_APP_SECRET": WEB_SECRET,
                           "GRIDPOINTS_WECHAT_CA_FILE": str(tls_files[0])})
    api = Api(srv)
    try:
        r = login(api, peer.code(), "mini")
        assert r.status_code == 403 and error_code(r) == "wechat_not_enabled", r.text
        r = login(api, peer.code(), "web")
        assert r.status_code == 200, r.text
    finally:
        api.close()
    # an app id without its secret, or an api_base that is not https: the server refuses to start
    for env in ({"GRIDPOINTS_WECHAT_APP_ID": WEB_APP},
                {"GRIDPOINTS_WECHAT_API_BASE": "http://127.0.0.1:1"}):
        bad = server_factory.new(start=False, env=env, allow_errors=True)
        bad.start(wait=False)
        assert bad.wait_exit() == 1
        assert "wechat." in bad.log_text()
