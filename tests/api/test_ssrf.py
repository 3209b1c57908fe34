"""Webhook addresses against SSRF (issue 10 item 5; docs/MERCHANTS.md §8, netaddr.h).

With the production policy (merchant.webhook_allow_private = false, overriding test.conf):
every spelling of a loopback, private, link-local, multicast or reserved address, and every
obviously local name, is refused when the URL is set (400 webhook_url_not_allowed, nothing
stored); a public-looking name is accepted. At delivery time a name is resolved and every
address is checked: names that resolve to loopback (IPv4, IPv4-mapped IPv6, or one loopback
among public addresses) are refused and recorded as failed attempts, and nothing reaches the
receiver listening there.

How the tests control what a name resolves to: merchant.webhook_hosts_file, a hosts file the
server's own resolver (evdns) loads in addition to /etc/hosts and answers from without any
DNS query. It is the same resolver and the same code path as a DNS answer (dns_cb), so the
check after resolution is tested for real, without touching /etc/hosts or a DNS server.

With private addresses allowed (as the other webhook tests run), the delivery to a name goes
to the resolved address itself, with the URL's host in the Host header and the certificate
checked against that name (the connection is pinned); a redirect is not followed.

Every server of this module is started here, and every event it creates is marked failed at
the end, so that no other module's janitor keeps retrying them."""

import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gp import Api, error_code, free_port
from mall import Street, create_admin

STRICT = {"GRIDPOINTS_MERCHANT_WEBHOOK_ALLOW_PRIVATE": "false"}

# Every spelling of a forbidden address a merchant could send; each must be refused at set
# time with the production policy.
FORBIDDEN_URLS = [
    "https://127.0.0.1/h",
    "https://127.0.0.1./h",
    "https://0x7f000001/h",
    "https://0X7F000001:8443/h",
    "https://2130706433/h",
    "https://127.1/h",
    "https://127.0.1/h",
    "https://017700000001/h",
    "https://0177.0.0.1/h",
    "https://0x7f.0.0.1/h",
    "https://127.000.000.001/h",
    "https://[::1]/h",
    "https://[0:0:0:0:0:0:0:1]/h",
    "https://[::ffff:127.0.0.1]/h",
    "https://[::ffff:7f00:1]/h",
    "https://[::127.0.0.1]/h",
    "https://[::ffff:0:127.0.0.1]/h",
    "https://[64:ff9b::127.0.0.1]/h",
    "https://[2002:7f00:1::1]/h",
    "https://localhost/h",
    "https://LOCALHOST/h",
    "https://localhost./h",
    "https://hooks.localhost/h",
    "https://hooks.localhost./h",
    "https://localhost.localdomain/h",
    "https://ip6-localhost/h",
    "https://intranet/h",
    "https://169.254.169.254/latest/meta-data/",
    "https://0xa9fea9fe/latest/meta-data/",
    "https://2852039166/latest/meta-data/",
    "https://0251.0376.0251.0376/h",
    "https://[::ffff:169.254.169.254]/h",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://[fe80::1]/h",
    "https://10.0.0.1/h",
    "https://10.1/h",
    "https://172.16.0.1/h",
    "https://192.168.1.1/h",
    "https://3232235777/h",
    "https://0300.0250.1.1/h",
    "https://100.64.0.1/h",
    "https://[fc00::1]/h",
    "https://[fd00:ec2::254]/h",
    "https://0.0.0.0/h",
    "https://0/h",
    "https://[::]/h",
    "https://224.0.0.1/h",
    "https://[ff02::1]/h",
    "https://255.255.255.255/h",
    "https://0xffffffff/h",
    "https://240.0.0.1/h",
    "https://192.0.0.170/h",
    "https://192.0.2.1/h",
    "https://198.51.100.1/h",
    "https://203.0.113.1/h",
    "https://198.18.0.1/h",
    "https://[2001:db8::1]/h",
    "https://[64:ff9b:1::1]/h",
    "https://[2001::1]/h",
    "https://printer.local/h",
    "https://nas.home.arpa/h",
]

# Hosts that no resolver reads as an address or a valid name.
INVALID_URLS = [
    "https://1.2.3.4.5/h",
    "https://256.0.0.1/h",
    "https://4294967296/h",
    "https://127.0.0.1../h",
    "https://%31%32%37.0.0.1/h",
    "https://[fe80::1%25lo]/h",
    "https://[127.0.0.1]/h",
    "https://example.123/h",
]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ssrf-tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=pin.gridpoints.test",
                    "-addext", "subjectAltName=DNS:pin.gridpoints.test,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


@pytest.fixture(scope="module")
def hosts_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("ssrf-hosts") / "hosts"
    # mixed-*: one public address and one loopback, in both orders, so that a check of only
    # the first (or only the last) answer would let one of them through.
    p.write_text("127.0.0.1 loop.gridpoints.test pin.gridpoints.test\n"
                 "::ffff:127.0.0.1 mapped.gridpoints.test\n"
                 "::1 six.gridpoints.test\n"
                 "8.8.8.8 mixed-a.gridpoints.test\n"
                 "127.0.0.1 mixed-a.gridpoints.test\n"
                 "127.0.0.1 mixed-b.gridpoints.test\n"
                 "8.8.8.8 mixed-b.gridpoints.test\n"
                 "169.254.169.254 meta.gridpoints.test\n")
    return p


class Receiver:
    """An HTTPS endpoint on 127.0.0.1 recording (path, headers) of every request; answers
    `status`, with `location` as the Location header when set."""

    def __init__(self, cert, key, status=200, location=None):
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(n)
                with outer.lock:
                    outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, n, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                if len(self.requests) >= n:
                    break
            time.sleep(0.1)
        with self.lock:
            return list(self.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def stored(sql, merchant_id):
    return sql.one("SELECT webhook_url, webhook_secret_ct FROM merchants WHERE id = %s",
                   (merchant_id,))


def wait_event(client, pred, timeout=15):
    """The merchant's newest webhook event once pred(event) holds (or the last one seen)."""
    deadline = time.time() + timeout
    item = None
    while time.time() < deadline:
        items = client.request("GET", "/merchant/v1/webhook/events").json()["items"]
        item = items[0] if items else None
        if item and pred(item):
            return item
        time.sleep(0.2)
    return item


def give_up_events(sql, merchant_ids):
    if merchant_ids:
        sql.execute("UPDATE merchant_events SET failed_at = now() "
                    "WHERE merchant_id = ANY(%s) AND delivered_at IS NULL AND failed_at IS NULL",
                    (list(merchant_ids),))


def test_forbidden_urls_are_refused_when_set(make_server, cli, sql):
    srv = make_server(env=STRICT)
    api = Api(srv)
    try:
        st = Street(api, create_admin(cli, srv), sql, srv)
        m, c = st.merchant()
        # a public-looking name is accepted (it is checked again after resolution)
        good = "https://hooks.example.com/gridpoints?shop=1"
        r = c.request("PUT", "/merchant/v1/webhook", {"url": good})
        assert r.status == 200 and r.verified, r.text
        assert r.json()["webhook_url"] == good
        before = stored(sql, m["id"])
        assert before[0] == good and before[1]
        for url in FORBIDDEN_URLS:
            r = c.request("PUT", "/merchant/v1/webhook", {"url": url})
            assert r.status == 400, (url, r.status, r.text)
            assert error_code(r) == "webhook_url_not_allowed", (url, r.text)
            assert r.json()["error"]["field"] == "url", (url, r.text)
        for url in INVALID_URLS:
            r = c.request("PUT", "/merchant/v1/webhook", {"url": url})
            assert r.status == 400, (url, r.status, r.text)
            assert error_code(r) == "invalid_webhook_url", (url, r.text)
        # nothing was changed: neither the URL nor the secret
        assert stored(sql, m["id"]) == before
        for url in ["https://shop.example.cn./h", "https://8.8.8.8/h", "https://0x08080808/h",
                    "https://[2606:4700:4700::1111]:8443/h", "https://127.0.0.1.nip.example/h"]:
            r = c.request("PUT", "/merchant/v1/webhook", {"url": url})
            assert r.status == 200, (url, r.status, r.text)
        assert c.request("DELETE", "/merchant/v1/webhook").status == 200
        assert stored(sql, m["id"]) == (None, None)
    finally:
        api.close()


def test_names_resolving_to_forbidden_addresses_are_refused_at_delivery(
        make_server, cli, sql, tls_files, hosts_file):
    cert, key = tls_files
    rx = Receiver(cert, key)
    srv = make_server(env={**STRICT, "GRIDPOINTS_MERCHANT_WEBHOOK_CA_FILE": str(cert),
                           "GRIDPOINTS_MERCHANT_WEBHOOK_HOSTS_FILE": str(hosts_file)})
    api = Api(srv)
    merchants = []
    try:
        st = Street(api, create_admin(cli, srv), sql, srv)
        (w,) = st.workers(1, points=1000)
        cases = {}
        for name in ["loop", "mapped", "six", "mixed-a", "mixed-b", "meta"]:
            m, c = st.merchant()
            merchants.append(m["id"])
            url = f"https://{name}.gridpoints.test:{rx.port}/hooks"
            r = c.request("PUT", "/merchant/v1/webhook", {"url": url})
            assert r.status == 200, (url, r.text)  # a name: accepted, checked at delivery
            cases[name] = c
        # A literal stored under an older, laxer rule (as an older version could have): read
        # as the resolver reads it at delivery time too, not sent to DNS as a name.
        m, c = st.merchant()
        merchants.append(m["id"])
        assert c.request("PUT", "/merchant/v1/webhook",
                         {"url": "https://hooks.example.com/h"}).status == 200
        sql.execute("UPDATE merchants SET webhook_url = %s WHERE id = %s",
                    (f"https://0x7f000001:{rx.port}/hooks", m["id"]))
        cases["0x7f000001"] = c

        for c in cases.values():
            assert st.charge(c, w, 10).status == 201
        for name, c in cases.items():
            item = wait_event(c, lambda i: i["attempts"] >= 1 and i["last_error"])
            assert item and item["last_error"] == "address_not_allowed", (name, item)
            assert item["delivered_at"] is None and item["last_status"] is None, (name, item)
            # a failed attempt like any other: retried later, not dropped
            assert item["failed_at"] is None and item["next_attempt_at"], (name, item)
        assert rx.requests == []
        log = srv.log_text()
        assert "host loop.gridpoints.test is 127.0.0.1, a loopback address: refused" in log
        assert "host mapped.gridpoints.test is ::ffff:127.0.0.1, a loopback address: refused" in log
        assert "host meta.gridpoints.test is 169.254.169.254, a link-local address: refused" in log
        assert "host 0x7f000001 is 127.0.0.1, a loopback address: refused" in log
        # retried with back-off, refused again each time
        item = wait_event(cases["loop"], lambda i: i["attempts"] >= 2)
        assert item["attempts"] >= 2 and item["last_error"] == "address_not_allowed", item
        assert rx.requests == []
    finally:
        give_up_events(sql, merchants)
        api.close()
        rx.close()


def test_delivery_is_pinned_to_the_checked_address_and_not_redirected(
        make_server, cli, sql, tls_files, hosts_file):
    cert, key = tls_files
    rx = Receiver(cert, key)
    bounce = Receiver(cert, key, status=302,
                      location=f"https://127.0.0.1:{rx.port}/redirected")
    # private addresses allowed (as in the other webhook tests): the receivers are local
    srv = make_server(env={"GRIDPOINTS_MERCHANT_WEBHOOK_CA_FILE": str(cert),
                           "GRIDPOINTS_MERCHANT_WEBHOOK_HOSTS_FILE": str(hosts_file)})
    api = Api(srv)
    merchants = []
    try:
        st = Street(api, create_admin(cli, srv), sql, srv)
        (w,) = st.workers(1, points=1000)
        m, c = st.merchant()
        merchants.append(m["id"])
        url = f"https://pin.gridpoints.test:{rx.port}/hooks?shop=1"
        assert c.request("PUT", "/merchant/v1/webhook", {"url": url}).status == 200
        assert st.charge(c, w, 10).status == 201
        got = rx.wait(1)
        assert len(got) == 1, got
        path, headers = got[0]
        # the name was resolved by the server's resolver (only the hosts file knows it), the
        # connection went to that address, and the request still names the URL's host (the
        # certificate was checked for it: its SAN holds the name)
        assert path == "/hooks?shop=1"
        assert headers["host"] == f"pin.gridpoints.test:{rx.port}"
        item = wait_event(c, lambda i: i["delivered_at"])
        assert item["delivered_at"] and item["last_status"] == 200, item

        # a redirect is a failed attempt; its Location is never followed
        m2, c2 = st.merchant()
        merchants.append(m2["id"])
        assert c2.request("PUT", "/merchant/v1/webhook",
                          {"url": f"https://pin.gridpoints.test:{bounce.port}/h"}).status == 200
        assert st.charge(c2, w, 10).status == 201
        item = wait_event(c2, lambda i: i["attempts"] >= 1 and i["last_status"])
        assert item and item["last_status"] == 302 and item["delivered_at"] is None, item
        assert len(bounce.wait(1)) >= 1
        time.sleep(0.5)
        assert all(p != "/redirected" for p, _ in rx.requests), rx.requests
    finally:
        give_up_events(sql, merchants)
        api.close()
        rx.close()
        bounce.close()


def test_unreadable_hosts_file_stops_the_start(server_factory, migrated, tmp_path):
    srv = server_factory.new(env={"GRIDPOINTS_MERCHANT_WEBHOOK_HOSTS_FILE":
                                  str(tmp_path / "missing")}, start=False, allow_errors=True)
    srv.start(wait=False)
    assert srv.wait_exit(timeout=20) != 0
    assert "merchant.webhook_hosts_file" in srv.log_text()
