"""Strict HTTP/1.1 framing (RFC 9112), over raw sockets: every malformed or ambiguous request
is refused with the right status and a JSON error, the connection is closed, and nothing that
followed the refused request on the connection is executed (issue 10, item 3).

Also the three aborts of issue 10: error replies that quote the client's bytes are valid
UTF-8, whatever the client sent."""

import json
import socket
import time

import pytest

from gp import error_code

HOST = b"Host: t\r\n"


def exchange(server, data, *, timeout=5.0, shut=True):
    """Sends raw bytes and returns everything the server answers until it closes."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    try:
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server refused early and closed its side; its reply is still there
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def parse_replies(raw):
    """Splits a byte stream into (status, headers, body) replies (Content-Length framing)."""
    replies = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"truncated reply head: {raw[:200]!r}"
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
        n = int(headers.get("content-length", len(rest)))  # HTTP/1.0: the body ends at close
        replies.append((status, headers, rest[:n]))
        raw = rest[n:]
    return replies


def refused(server, data, status, code):
    """The request is answered `status` with JSON error `code`, and it is the only answer."""
    replies = parse_replies(exchange(server, data))
    assert len(replies) == 1, replies
    st, headers, body = replies[0]
    assert st == status, (data, st, body)
    assert headers["content-type"].startswith("application/json"), headers
    assert headers.get("connection", "").lower() == "close", headers
    err = json.loads(body)["error"]
    assert err["code"] == code, (data, err)
    assert err["message"]
    return err


# The framing matrix: (name, bytes, status, code). Each request is followed on the same
# connection by a valid GET /healthz that must never be answered.
NEXT = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
MATRIX = [
    ("space before colon", b"GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n", 400, "malformed_header"),
    ("tab before colon", b"GET /healthz HTTP/1.1\r\nHost\t: t\r\n\r\n", 400, "malformed_header"),
    ("bare LF in head", b"GET /healthz HTTP/1.1\nHost: t\n\n", 400, "bare_lf"),
    ("bare LF after a header", b"GET /healthz HTTP/1.1\r\nHost: t\nX: 1\r\n\r\n", 400, "bare_lf"),
    ("bare CR in a value", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", 400,
     "malformed_header"),
    ("obs-fold", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\r\n  b\r\n\r\n", 400, "obs_fold"),
    ("obs-fold with tab", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\r\n\tb\r\n\r\n", 400, "obs_fold"),
    ("NUL in a value", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400,
     "malformed_header"),
    ("control byte in a value", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n", 400,
     "malformed_header"),
    ("DEL in a value", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\x7fb\r\n\r\n", 400, "malformed_header"),
    ("control byte in a name", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX\x01Y: 1\r\n\r\n", 400,
     "malformed_header"),
    ("empty name", b"GET /healthz HTTP/1.1\r\nHost: t\r\n: 1\r\n\r\n", 400, "malformed_header"),
    ("no colon", b"GET /healthz HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n", 400, "malformed_header"),
    ("HTTP/1.1 without Host", b"GET /healthz HTTP/1.1\r\nX: 1\r\n\r\n", 400, "bad_host"),
    ("two Host headers", b"GET /healthz HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", 400, "bad_host"),
    ("empty Host", b"GET /healthz HTTP/1.1\r\nHost: \r\n\r\n", 400, "bad_host"),
    ("Host with a slash", b"GET /healthz HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "bad_host"),
    ("absolute-form for another host", b"GET http://evil.example/healthz HTTP/1.1\r\nHost: t\r\n\r\n",
     400, "bad_host"),
    ("absolute-form of another scheme", b"GET ftp://t/healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400,
     "malformed_request_line"),
    ("CL and TE", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_framing"),
    ("TE gzip, chunked", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400, "bad_framing"),
    ("TE chunked, identity", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400, "bad_framing"),
    ("TE twice", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_framing"),
    ("TE in HTTP/1.0", b"POST /api/v1/auth/login HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400, "bad_framing"),
    ("CL twice, same value", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
     b"Content-Length: 2\r\n\r\n{}", 400, "bad_framing"),
    ("CL twice, different values", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x", 400, "bad_framing"),
    ("CL +10", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: +2\r\n\r\n{}", 400,
     "bad_framing"),
    ("CL -1", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400,
     "bad_framing"),
    ("CL 1e2", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: 1e2\r\n\r\n", 400,
     "bad_framing"),
    ("CL list", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: 10, 11\r\n\r\n",
     400, "bad_framing"),
    ("CL hex", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: 0x2\r\n\r\n{}", 400,
     "bad_framing"),
    ("chunk size overflow", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff1\r\n", 400, "bad_framing"),
    ("chunk size not hex", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_framing"),
    ("chunk size with a sign", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n+2\r\n{}\r\n0\r\n\r\n", 400, "bad_framing"),
    ("chunk data without CRLF", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n", 400, "bad_framing"),
    ("bare LF in chunked framing", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n", 400, "bare_lf"),
    ("bare LF after chunk data", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\n0\r\n\r\n", 400, "bare_lf"),
    ("control byte in a trailer", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\nX: \x01\r\n\r\n", 400, "malformed_header"),
    ("HEAD with a body", b"HEAD /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", 400,
     "bad_framing"),
    ("unknown method", b"BREW /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 501, "method_not_implemented"),
    ("lower-case method", b"get /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 501, "method_not_implemented"),
    ("TRACE", b"TRACE /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 501, "method_not_implemented"),
    ("CONNECT", b"CONNECT t:443 HTTP/1.1\r\nHost: t\r\n\r\n", 501, "method_not_implemented"),
    ("HTTP/2.0", b"GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n", 400, "http_version_not_supported"),
    ("HTTP/1.1x", b"GET /healthz HTTP/1.1x\r\nHost: t\r\n\r\n", 400, "malformed_request_line"),
    ("no version", b"GET /healthz\r\nHost: t\r\n\r\n", 400, "malformed_request_line"),
    ("two spaces", b"GET  /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400, "malformed_request_line"),
    ("leading empty line", b"\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400,
     "malformed_request_line"),
    ("non-ASCII byte in the target", b"GET /heal\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n", 400,
     "malformed_request_line"),
    ("bad percent escape", b"GET /healthz?a=%zz HTTP/1.1\r\nHost: t\r\n\r\n", 400,
     "malformed_request_line"),
    ("fragment in the target", b"GET /healthz#x HTTP/1.1\r\nHost: t\r\n\r\n", 400,
     "malformed_request_line"),
    ("asterisk-form", b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", 400, "malformed_request_line"),
    ("Expect other than 100-continue", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{}", 417, "expectation_failed"),
    ("forged guard verdict", b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Gp-Guard: 0\r\n\r\n", 400,
     "malformed_header"),
    ("body over the route's limit", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Content-Type: application/json\r\nContent-Length: 99999999\r\n\r\n{", 413, "body_too_large"),
    ("body on a route without one", b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}",
     413, "body_too_large"),
    ("chunked body over the limit", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n" + b"1001\r\n" + b"x" * 4097 + b"\r\n", 413, "body_too_large"),
]


@pytest.mark.parametrize("name,data,status,code", MATRIX, ids=[m[0] for m in MATRIX])
def test_framing_matrix(server, name, data, status, code):
    refused(server, data + NEXT, status, code)


def test_limits_of_the_head(server):
    refused(server, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414, "uri_too_long")
    refused(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n",
            431, "headers_too_large")
    many = b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(2000))
    refused(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n", 431, "headers_too_large")


def test_valid_forms_are_served(server):
    """What the guard accepts, evhttp serves: keep-alive pipelining, HTTP/1.0 without Host,
    absolute-form for our own host, chunked bodies with extensions and trailers, OWS."""
    ok = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    # Not half-closed: evhttp drops pipelined requests once it sees the client's FIN.
    replies = parse_replies(exchange(server, ok + ok + b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
                                     b"Connection: close\r\n\r\n", shut=False))
    assert [r[0] for r in replies] == [200, 200, 200]
    assert [r[0] for r in parse_replies(exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n"))] == [200]
    assert [r[0] for r in parse_replies(exchange(
        server, b"GET http://T/healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))] == [200]
    assert [r[0] for r in parse_replies(exchange(
        server, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Ows:   v  \t\r\nConnection: close\r\n\r\n"))] == [200]
    body = json.dumps({"phone": "13800000000", "password": "wrong-password"}).encode()
    chunked = (b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               + b"%x;ext=1\r\n" % 5 + body[:5] + b"\r\n"
               + b"%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\nX-Trailer: 1\r\n\r\n")
    (st, _, b), = parse_replies(exchange(server, chunked))
    assert st == 401 and json.loads(b)["error"]["code"], b  # framing passed, the login failed


def test_expect_100_continue(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        s.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"{}")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        (st, _, body), = parse_replies(out)
        assert st == 400, body  # the empty login body is refused by validation, not by framing
    finally:
        s.close()


def test_smuggled_request_never_runs(server, api, sql):
    """CL.TE: a proxy that reads Content-Length would forward both requests as one; we refuse
    the whole connection, so the hidden login is never tried."""
    hidden = json.dumps({"phone": "13999999999", "password": "smuggled-pw"}).encode()
    smuggle = (b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Length: 4\r\n\r\n0\r\n\r\nPOST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(hidden) + hidden)
    refused(server, smuggle, 400, "bad_framing")
    assert "smuggled" not in server.log_text()


@pytest.mark.parametrize("body", [
    '["\\🌀"]'.encode(),
    '{"a":"\\é"}'.encode(),
    ('{"' + "k" * 63 + 'é":1}').encode(),
    ('{"' + "k" * 63 + '🌀":1}').encode(),
    b'{"a":"\xff"}',
    b'{"\xc3":1}',
], ids=["escaped emoji", "escaped e-acute", "field cut at 64", "emoji cut at 64", "invalid byte",
        "truncated sequence"])
def test_error_replies_quoting_client_bytes_are_utf8(server, api, body):
    """Issue 10's repro and its cousins: 400 with a JSON error, and the server keeps serving."""
    r = api.post("/api/v1/auth/login", body=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    err["message"].encode("utf-8")  # valid UTF-8 by construction of r.json()
    assert error_code(r)
    assert api.get("/healthz").status_code == 200


def test_query_values_must_be_utf8(server, api):
    for q in ("x=%ff", "x=%c3", "x=%ed%a0%80", "x=a%00b"):
        r = api.get("/healthz?" + q)
        assert r.status_code == 400 and error_code(r) == "invalid_query", (q, r.text)
    assert api.get("/healthz?x=%e6%97%a5").status_code == 200


def test_head_is_get_without_a_body(server):
    """RFC 9110 §9.3.2; found by the whole-path fuzzer: libevent sent HEAD replies' bodies
    without a length, and HEAD was not routed where GET is."""
    get, = parse_replies(exchange(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    raw = exchange(server, b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                           b"HEAD /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                   shut=False)
    first, sep, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), raw
    assert b"Content-Length: %d" % len(get[2]) in first, first
    second, sep, tail = rest.partition(b"\r\n\r\n")
    assert second.startswith(b"HTTP/1.1 405"), raw  # the login route takes POST only
    assert tail == b"", tail
