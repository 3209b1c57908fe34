#!/usr/bin/env python3
"""merchant-client.py -- a small client of the gridpoints merchant API (/merchant/v1) that signs
every request and verifies every reply's signature. Python 3 standard library only.

    export GRIDPOINTS_MERCHANT_URL=http://127.0.0.1:8080
    export GRIDPOINTS_MERCHANT_KEY_ID=mk_...  GRIDPOINTS_MERCHANT_SECRET=sk_...
    scripts/merchant-client.py GET /merchant/v1/me
    scripts/merchant-client.py POST /merchant/v1/offers '{"title":"Rice 5kg","price":300,...}'
    scripts/merchant-client.py POST /merchant/v1/vouchers/7K3M-Q9XD-2HWT/capture '{}'
    scripts/merchant-client.py POST /merchant/v1/charges '{"paycode":"gpc1...","amount":60}'
    scripts/merchant-client.py GET '/merchant/v1/statement?format=csv'
    scripts/merchant-client.py sign --ts 1795000000 --nonce N POST /merchant/v1/charges BODY
                                         (prints the string to sign and the header; no request)

Writes get an Idempotency-Key (a new UUID unless --idempotency-key is given: retry a write
with the same key to get its first answer back). The exit status is 0 for a signed 2xx reply, 1 for
another status, and 2 for a 2xx whose GP-Signature is missing or wrong (treat that reply as
forged). The scheme is described in docs/MERCHANTS.md; this file is its reference client, and
the tests import it.
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import secrets
import sys
import time
import uuid
from urllib.parse import urlsplit

SCHEME = "GP1-HMAC-SHA256"
RESPONSE_SCHEME = "GP1-HMAC-SHA256-RESPONSE"
WINDOW_S = 300


def body_sha256(body):
    return hashlib.sha256(body or b"").hexdigest()


def string_to_sign(key_id, method, uri, ts, nonce, body):
    """The seven lines the request signature covers; uri is the path and query exactly as
    sent, body the raw bytes (b"" when there is none)."""
    return "".join(f"{line}\n" for line in (SCHEME, key_id, method.upper(), uri, str(ts), nonce,
                                            body_sha256(body)))


def response_string(key_id, request_nonce, status, ts, body):
    return "".join(f"{line}\n" for line in (RESPONSE_SCHEME, key_id, request_nonce, str(status),
                                            str(ts), body_sha256(body)))


def hmac_hex(secret, text):
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def new_nonce():
    return secrets.token_hex(16)


def authorization(key_id, secret, method, uri, body, ts=None, nonce=None):
    """-> (Authorization header value, ts, nonce)."""
    ts = int(time.time()) if ts is None else ts
    nonce = nonce or new_nonce()
    sig = hmac_hex(secret, string_to_sign(key_id, method, uri, ts, nonce, body))
    return f"{SCHEME} key={key_id},ts={ts},nonce={nonce},sig={sig}", ts, nonce


def verify_response(key_id, secret, request_nonce, status, signature_header, body, now=None):
    """True when GP-Signature is present, fresh and matches the reply."""
    if not signature_header:
        return False
    try:
        parts = dict(p.split("=", 1) for p in signature_header.split(","))
        ts = int(parts["ts"])
        given = parts["sig"]
    except (ValueError, KeyError):
        return False
    now = int(time.time()) if now is None else now
    if abs(now - ts) > WINDOW_S:
        return False
    want = hmac_hex(secret, response_string(key_id, request_nonce, status, ts, body))
    return hmac.compare_digest(want, given)


class Reply:
    def __init__(self, status, headers, body, verified):
        self.status = status
        self.status_code = status
        self.headers = headers
        self.body = body
        self.verified = verified

    @property
    def text(self):
        return self.body.decode(errors="replace")

    def json(self):
        return json.loads(self.body)


class Client:
    """Client(url, key_id, secret).request(method, path, body=None, idempotency_key=None)
    -> Reply. body may be a dict/list (sent as JSON), str or bytes. send_raw() sends exactly
    what it is given (the tests use it to tamper with signed requests)."""

    def __init__(self, url, key_id, secret, timeout=10.0):
        u = urlsplit(url)
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.key_id = key_id
        self.secret = secret
        self.timeout = timeout

    def _conn(self):
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def send_raw(self, method, uri, body, headers, request_nonce=None):
        conn = self._conn()
        try:
            conn.request(method, uri, body=body if body else None, headers=headers)
            r = conn.getresponse()
            data = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()
        verified = request_nonce is not None and verify_response(
            self.key_id, self.secret, request_nonce, r.status, hdrs.get("gp-signature"), data)
        return Reply(r.status, hdrs, data, verified)

    def request(self, method, uri, body=None, idempotency_key=None, headers=None, ts=None,
                nonce=None):
        method = method.upper()
        if isinstance(body, (dict, list)):
            body = json.dumps(body, separators=(",", ":")).encode()
        elif isinstance(body, str):
            body = body.encode()
        body = body or b""
        auth, ts, nonce = authorization(self.key_id, self.secret, method, uri, body, ts, nonce)
        h = {"Authorization": auth, "Accept": "application/json"}
        if body:
            h["Content-Type"] = "application/json"
        if method not in ("GET", "HEAD"):
            h["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        h.update(headers or {})
        return self.send_raw(method, uri, body, h, request_nonce=nonce)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Sign and send a request to the gridpoints merchant API.")
    ap.add_argument("--url", default=os.environ.get("GRIDPOINTS_MERCHANT_URL", "http://127.0.0.1:8080"))
    ap.add_argument("--key-id", default=os.environ.get("GRIDPOINTS_MERCHANT_KEY_ID"))
    ap.add_argument("--secret", default=os.environ.get("GRIDPOINTS_MERCHANT_SECRET"))
    ap.add_argument("--idempotency-key", help="for writes; default: a new UUID")
    ap.add_argument("--ts", type=int, help="timestamp to sign (default: now)")
    ap.add_argument("--nonce", help="nonce to sign (default: random)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print status and headers")
    ap.add_argument("method", help="GET, POST, PATCH, PUT, DELETE, or 'sign' to only sign")
    ap.add_argument("rest", nargs="*", help="[METHOD] PATH [BODY]")
    a = ap.parse_args(argv)
    if not a.key_id or not a.secret:
        ap.error("--key-id and --secret (or GRIDPOINTS_MERCHANT_KEY_ID/_SECRET) are required")
    if a.method.lower() == "sign":
        if len(a.rest) < 2:
            ap.error("sign METHOD PATH [BODY]")
        method, uri = a.rest[0].upper(), a.rest[1]
        body = a.rest[2].encode() if len(a.rest) > 2 else b""
        auth, ts, nonce = authorization(a.key_id, a.secret, method, uri, body, a.ts, a.nonce)
        sys.stdout.write(string_to_sign(a.key_id, method, uri, ts, nonce, body))
        print(f"Authorization: {auth}")
        return 0
    if not a.rest:
        ap.error("PATH is required")
    uri = a.rest[0]
    body = a.rest[1] if len(a.rest) > 1 else None
    client = Client(a.url, a.key_id, a.secret)
    r = client.request(a.method, uri, body, a.idempotency_key, ts=a.ts, nonce=a.nonce)
    if a.verbose:
        print(f"HTTP {r.status}", file=sys.stderr)
        for k, v in r.headers.items():
            print(f"{k}: {v}", file=sys.stderr)
    sys.stdout.write(r.text + ("" if r.text.endswith("\n") else "\n"))
    ok = 200 <= r.status < 300
    if not r.verified:
        # A 2xx without a valid signature is forged or tampered with (the WeChat Pay rule).
        # Errors of requests that failed verification themselves (401) are not signed.
        print("merchant-client: the reply's GP-Signature is missing or wrong: do not trust it",
              file=sys.stderr)
        if ok:
            return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
