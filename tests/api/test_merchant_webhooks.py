"""Merchant webhooks end to end (docs/MERCHANTS.md §8): events from the durable outbox are
delivered over HTTPS to a receiver on 127.0.0.1 (with a certificate made for the test and
merchant.webhook_ca_file pointing at it), signed, with an event id, retried after a failure;
and a server with the default address policy refuses to deliver to that loopback address even
when the URL is already stored (the check at fetch time, after resolution).

Every server of this module is started here (no module `server`), so that no other instance's
janitor takes the events these tests wait for."""

import hashlib
import hmac
import json
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gp import Api, error_code, free_port
from mall import Street, create_admin


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("webhook-tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


class Receiver:
    """An HTTPS endpoint on 127.0.0.1 that records deliveries; answers 500 to the first
    `fail_first` of them."""

    def __init__(self, cert, key, fail_first=0):
        self.deliveries = []
        self.fail_left = fail_first
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    fail = outer.fail_left > 0
                    outer.fail_left -= 1 if fail else 0
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}/hooks/gridpoints?shop=1"

    def wait(self, n, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                if len(self.deliveries) >= n:
                    return list(self.deliveries)
            time.sleep(0.1)
        with self.lock:
            return list(self.deliveries)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def verify(secret, headers, body):
    parts = dict(p.split("=", 1) for p in headers["gridpoints-signature"].split(","))
    want = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


def test_events_are_delivered_signed_and_retried(make_server, cli, sql, tls_files):
    cert, key = tls_files
    srv = make_server(env={"GRIDPOINTS_MERCHANT_WEBHOOK_CA_FILE": str(cert)})
    api = Api(srv)
    st = Street(api, create_admin(cli, srv), sql, srv)
    rx = Receiver(cert, key, fail_first=1)
    try:
        m, c = st.merchant()
        r = c.request("PUT", "/merchant/v1/webhook", {"url": rx.url})
        assert r.status == 200 and r.verified, r.text
        secret = r.json()["secret"]
        assert secret.startswith("whsec_")
        (w,) = st.workers(1, points=500)
        offer = st.offer(c, price=100)
        v = st.order(w, offer["id"]).json()
        assert c.request("POST", f"/merchant/v1/vouchers/{v['code']}/capture", {}).status == 200
        got = rx.wait(2)  # the first attempt answered 500, the retry (after ~1 s) 200
        assert len(got) >= 2, got
        (h1, b1), (h2, b2) = got[0], got[1]
        assert h1["gridpoints-event-id"] == h2["gridpoints-event-id"] and b1 == b2
        assert verify(secret, h2, b2) and verify(secret, h1, b1)
        assert not verify(secret + "x", h2, b2)
        event = json.loads(b2)
        assert event["type"] == "voucher.captured" and event["id"] == h2["gridpoints-event-id"]
        assert event["data"]["code"] == v["code"] and "worker_id" not in event["data"]
        # more events: a charge, a refund
        ch = st.charge(c, w, 30).json()
        c.request("POST", f"/merchant/v1/charges/{ch['id']}/refunds", {"amount": 5})
        got = rx.wait(4)
        types = [json.loads(b)["type"] for _, b in got]
        assert "charge.created" in types and "refund.created" in types
        # the merchant sees the delivery state
        deadline = time.time() + 10
        while time.time() < deadline:
            items = c.request("GET", "/merchant/v1/webhook/events").json()["items"]
            if all(i["delivered_at"] for i in items):
                break
            time.sleep(0.2)
        first = next(i for i in items if i["type"] == "voucher.captured")
        assert first["attempts"] == 2 and first["delivered_at"] and first["last_status"] == 200
        # removing the webhook stops new events
        assert c.request("DELETE", "/merchant/v1/webhook").status == 200
        before = len(rx.deliveries)
        st.charge(c, w, 1)
        time.sleep(1.0)
        assert len(rx.deliveries) == before
    finally:
        rx.close()
        api.close()


def test_default_policy_refuses_loopback_at_delivery_time(make_server, cli, sql, tls_files):
    cert, key = tls_files
    rx = Receiver(cert, key)
    try:
        # A URL stored while private addresses were allowed ...
        lax = make_server(env={"GRIDPOINTS_MERCHANT_WEBHOOK_CA_FILE": str(cert)})
        api = Api(lax)
        st = Street(api, create_admin(cli, lax), sql, lax)
        m, c = st.merchant()
        assert c.request("PUT", "/merchant/v1/webhook", {"url": rx.url}).status == 200
        api.close()
        lax.stop()
        # ... is refused by a server with the default policy when it delivers
        strict = make_server(env={"GRIDPOINTS_MERCHANT_WEBHOOK_CA_FILE": str(cert),
                                  "GRIDPOINTS_MERCHANT_WEBHOOK_ALLOW_PRIVATE": "false"})
        api = Api(strict)
        st.api, st.server = api, strict
        c = st.key(m["id"])
        (w,) = st.workers(1, points=100)
        assert st.charge(c, w, 10).status == 201
        deadline = time.time() + 10
        item = None
        while time.time() < deadline:
            items = c.request("GET", "/merchant/v1/webhook/events").json()["items"]
            item = items[0] if items else None
            if item and item["attempts"] >= 1 and item["last_error"]:
                break
            time.sleep(0.2)
        assert item and item["last_error"] == "address_not_allowed", item
        assert item["delivered_at"] is None
        assert rx.deliveries == []
        r = c.request("PUT", "/merchant/v1/webhook", {"url": rx.url})
        assert error_code(r) == "webhook_url_not_allowed"
        # leave no event retrying for the servers of later test modules
        sql.execute("UPDATE merchant_events SET failed_at = now() WHERE merchant_id = %s", (m["id"],))
        api.close()
    finally:
        rx.close()
