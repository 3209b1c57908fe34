"""Static serving of the browser apps (issue 13, item 1): a web dir built here in the test's
temp dir (an index.html, hashed assets, sw.js, a manifest, one file of each served type, a
nested file, symlinks inside and outside), served under /app/ by a server whose web.dir points
there. Types, caching headers, ETag/304, gzip, HEAD, the CSP, the SPA fallback, 404s, every
traversal spelling over raw sockets (requests would normalize them), and a server without a
web dir (JSON 404, the API still up) or with too much in it (refuses to start)."""

import gzip
import hashlib
import os
import socket
from pathlib import Path

import pytest

from gp import Api, error_code

REPO = Path(__file__).resolve().parents[2]
SECRET = b"gp-static-secret-outside-the-web-dir"

INDEX = b"<!doctype html><html><head><title>worker</title>" \
        b'<script type="module" src="/app/assets/index-B1c2D3e4.js"></script></head>' \
        b'<body><div id="app"></div></body></html>'
BIG_JS = b"".join(b"export const v%d = %d;\n" % (i, i * 7) for i in range(400))

FILES = {
    # path under web.dir: (bytes, Content-Type, Cache-Control)
    "app/index.html": (INDEX, "text/html; charset=utf-8", "no-cache"),
    "app/sw.js": (b"self.addEventListener('fetch', () => {});\n",
                  "text/javascript; charset=utf-8", "no-cache"),
    "app/manifest.webmanifest": (b'{"name":"worker","start_url":"/app/"}',
                                 "application/manifest+json", "no-cache"),
    "app/assets/index-B1c2D3e4.js": (BIG_JS, "text/javascript; charset=utf-8", "immutable"),
    "app/assets/chunk-x_Y-9zQ1.mjs": (b"export default 1;\n", "text/javascript; charset=utf-8",
                                      "immutable"),
    "app/assets/index-Ab12Cd34.css": (b"body{margin:0}\n", "text/css; charset=utf-8",
                                      "immutable"),
    "app/assets/index-B1c2D3e4.js.map": (b'{"version":3}', "application/json", "immutable"),
    "app/assets/logo-Zz9Yy8Xx.svg": (b'<svg xmlns="http://www.w3.org/2000/svg"/>',
                                     "image/svg+xml", "immutable"),
    "app/assets/photo-Q1w2E3r4.jpg": (b"\xff\xd8\xff\xe0fakejpeg", "image/jpeg", "immutable"),
    "app/assets/pic-Q1w2E3r4.webp": (b"RIFF\x00\x00\x00\x00WEBP", "image/webp", "immutable"),
    "app/assets/font-Q1w2E3r4.woff2": (b"wOF2fake", "font/woff2", "immutable"),
    "app/assets/vendor-components.js": (b"// no hash in this name\n",
                                        "text/javascript; charset=utf-8", "no-cache"),
    "app/icon-192.png": (b"\x89PNG\r\n\x1a\nfake", "image/png", "no-cache"),
    "app/favicon.ico": (b"\x00\x00\x01\x00fake", "image/x-icon", "no-cache"),
    "app/config.json": (b'{"a":1}', "application/json", "no-cache"),
    "app/robots.txt": (b"User-agent: *\n", "text/plain; charset=utf-8", "no-cache"),
    "app/nested/deep/file.txt": (b"deep file\n", "text/plain; charset=utf-8", "no-cache"),
}
IMMUTABLE = "public, max-age=31536000, immutable"


def etag_of(data, suffix=""):
    return '"%s%s"' % (hashlib.sha256(data).hexdigest(), suffix)


@pytest.fixture(scope="module")
def webroot(tmp_path_factory):
    top = tmp_path_factory.mktemp("static")
    (top / "outside.txt").write_bytes(SECRET)
    (top / "outside").mkdir()
    (top / "outside" / "index.html").write_bytes(SECRET)
    web = top / "web"
    for rel, (data, _, _) in FILES.items():
        p = web / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    app = web / "app"
    (app / ".env").write_bytes(SECRET)                       # hidden: never served
    os.symlink(top / "outside.txt", app / "evil.txt")        # file outside: skipped
    os.symlink("../../outside.txt", app / "rel-evil.txt")   # relative, outside: skipped
    os.symlink("/etc/passwd", app / "passwd.txt")            # system file: skipped
    os.symlink(top / "outside", app / "linkdir")             # directory link: not entered
    os.symlink("nested/deep/file.txt", app / "alias.txt")   # inside: served
    return top


@pytest.fixture(scope="module")
def web_server(server_factory, migrated, webroot):
    srv = server_factory.new("static", env={"GRIDPOINTS_WEB_DIR": str(webroot / "web")})
    yield srv
    srv.stop()


def raw(server, target, method="GET", headers=()):
    """One request over a raw socket, the target sent exactly as given; -> (status, headers
    with lower-case names, body)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    finally:
        s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    status_line, *hdrs = head.decode("latin-1").split("\r\n")
    h = {}
    for ln in hdrs:
        k, _, v = ln.partition(":")
        h[k.strip().lower()] = v.strip()
    return int(status_line.split(" ")[1]), h, body


def test_types_caching_and_bytes(web_server):
    api = Api(web_server)
    for rel, (data, ctype, cache) in FILES.items():
        r = api.get("/" + rel, headers={"Accept-Encoding": "identity"})
        assert r.status_code == 200, rel
        assert r.headers["Content-Type"] == ctype, rel
        assert r.headers["Cache-Control"] == (IMMUTABLE if cache == "immutable" else cache), rel
        assert r.content == data, rel
        assert r.headers["ETag"] == etag_of(data), rel
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert "Content-Encoding" not in r.headers
        assert "Access-Control-Allow-Origin" not in r.headers  # same origin, no CORS


def test_csp_on_html(web_server):
    r = Api(web_server).get("/app/")
    csp = {d.split()[0]: d.split()[1:] for d in
           (x.strip() for x in r.headers["Content-Security-Policy"].split(";")) if d}
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["img-src"] == ["'self'", "data:", "blob:"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["worker-src"] == ["'self'"]
    assert csp["manifest-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'self'"]
    assert csp["form-action"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]
    assert not any("unsafe" in v or v == "*" for vals in csp.values() for v in vals)
    assert r.headers["X-Frame-Options"] == "DENY"


def test_gzip_copy(web_server):
    st, h, body = raw(web_server, "/app/assets/index-B1c2D3e4.js",
                      headers=["Accept-Encoding: gzip, deflate, br"])
    assert st == 200
    assert h["content-encoding"] == "gzip"
    assert h["vary"] == "Accept-Encoding"
    assert int(h["content-length"]) == len(body) < len(BIG_JS) // 2
    assert gzip.decompress(body) == BIG_JS
    assert h["etag"] == etag_of(BIG_JS, "-gz")
    assert h["cache-control"] == IMMUTABLE
    # q=0 refuses gzip; identity bytes with the identity ETag, still Vary
    st, h, body = raw(web_server, "/app/assets/index-B1c2D3e4.js",
                      headers=["Accept-Encoding: gzip;q=0, identity"])
    assert st == 200 and body == BIG_JS and "content-encoding" not in h
    assert h["etag"] == etag_of(BIG_JS) and h["vary"] == "Accept-Encoding"
    # no header: identity
    st, h, body = raw(web_server, "/app/assets/index-B1c2D3e4.js")
    assert st == 200 and body == BIG_JS and "content-encoding" not in h


def test_etag_304(web_server):
    api = Api(web_server)
    data = FILES["app/sw.js"][0]
    tag = etag_of(data)
    for inm in (tag, "W/" + tag, '"nope", ' + tag, "*"):
        r = api.get("/app/sw.js", headers={"If-None-Match": inm, "Accept-Encoding": "identity"})
        assert r.status_code == 304, inm
        assert r.content == b""
        assert r.headers["ETag"] == tag
        assert r.headers["Cache-Control"] == "no-cache"
    r = api.get("/app/sw.js", headers={"If-None-Match": '"other"'})
    assert r.status_code == 200 and r.content == data
    # the gzip representation revalidates against its own tag
    st, h, body = raw(web_server, "/app/assets/index-B1c2D3e4.js",
                      headers=["Accept-Encoding: gzip", "If-None-Match: " + etag_of(BIG_JS, "-gz")])
    assert st == 304 and body == b"" and h["etag"] == etag_of(BIG_JS, "-gz")
    assert h["vary"] == "Accept-Encoding" and h["cache-control"] == IMMUTABLE
    # on a SPA route the tag is index.html's
    r = api.get("/app/tasks/7", headers={"If-None-Match": etag_of(INDEX)})
    assert r.status_code == 304


def test_head(web_server):
    st, h, body = raw(web_server, "/app/index.html", method="HEAD")
    assert st == 200 and body == b""
    assert int(h["content-length"]) == len(INDEX)
    assert h["content-type"] == "text/html; charset=utf-8"
    assert h["etag"] == etag_of(INDEX)
    assert "content-security-policy" in h
    st, h, body = raw(web_server, "/app/assets/index-B1c2D3e4.js", method="HEAD",
                      headers=["Accept-Encoding: gzip"])
    assert st == 200 and body == b"" and h["content-encoding"] == "gzip"
    assert int(h["content-length"]) < len(BIG_JS)
    st, h, body = raw(web_server, "/app/sw.js", method="HEAD",
                      headers=["If-None-Match: " + etag_of(FILES["app/sw.js"][0])])
    assert st == 304 and body == b""
    st, h, body = raw(web_server, "/app/missing.js", method="HEAD")
    assert st == 404 and body == b""


def test_spa_fallback(web_server):
    api = Api(web_server)
    for path in ("/app/", "/app/tasks", "/app/tasks/12", "/app/tasks/12/", "/app/me/points",
                 "/app/assets", "/app/nested/deep", "/app/%E4%BB%BB%E5%8A%A1"):
        r = api.get(path)
        assert r.status_code == 200, path
        assert r.content == INDEX, path
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert r.headers["Cache-Control"] == "no-cache"
        assert "Content-Security-Policy" in r.headers
    # a query string (a WeChat OAuth redirect) does not change what is served
    r = api.get("/app/?code=abc&state=xyz")
    assert r.status_code == 200 and r.content == INDEX


def test_redirect_to_slash(web_server):
    st, h, _ = raw(web_server, "/app")
    assert st == 301 and h["location"] == "/app/"
    st, h, _ = raw(web_server, "/app?code=abc&state=1")
    assert st == 301 and h["location"] == "/app/?code=abc&state=1"


def test_missing_files_are_404(web_server):
    api = Api(web_server)
    for path in ("/app/missing.js", "/app/assets/index-XXXXXXXX.js", "/app/nested/nope.txt",
                 "/app/index.htm", "/app/sw.js.bak", "/app/.env", "/app/tasks/1.5"):
        r = api.get(path)
        assert r.status_code == 404, path
        assert error_code(r) == "not_found", path
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.headers["Cache-Control"] == "no-store"
    r = api.get("/app/alias.txt")  # a symlink inside the dir is followed
    assert r.status_code == 200 and r.content == b"deep file\n"


def test_other_methods(web_server):
    api = Api(web_server)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = api.request(method, "/app/index.html")
        assert r.status_code == 405, method
        assert r.headers["Allow"] == "GET"
    # the API shares the origin and still answers
    assert api.get("/healthz").status_code == 200
    assert api.get("/api/v1/me").status_code == 401


TRAVERSALS = [
    "/app/../outside.txt",
    "/app/../../outside.txt",
    "/app/../../../../../../etc/passwd",
    "/app/..%2f..%2foutside.txt",
    "/app/..%2F..%2Foutside.txt",
    "/app/%2e%2e/%2e%2e/outside.txt",
    "/app/%2E%2E/%2E%2E/outside.txt",
    "/app/.%2e/.%2e/outside.txt",
    "/app/%2e%2e%2f%2e%2e%2foutside.txt",
    "/app/%252e%252e/%252e%252e/outside.txt",
    "/app/%252e%252e%252f%252e%252e%252foutside.txt",
    "/app/%25252e%25252e/outside.txt",
    "/app/..%252f..%252foutside.txt",
    "/app/%c0%ae%c0%ae/%c0%ae%c0%ae/outside.txt",
    "/app/%e0%80%ae%e0%80%ae/outside.txt",
    "/app//outside.txt",
    "/app///etc/passwd",
    "/app/%2fetc%2fpasswd",
    "/app/%2f%2e%2e%2foutside.txt",
    "/app/./../outside.txt",
    "/app/nested/../../outside.txt",
    "/app/nested/deep/../../../../outside.txt",
    "/app/..\\..\\outside.txt",
    "/app/%5c..%5c..%5coutside.txt",
    "/app/..%5c..%5coutside.txt",
    "/app/..%255c..%255coutside.txt",
    "/app/%00",
    "/app/index.html%00.js",
    "/app/..%00/outside.txt",
    "/app/%0d%0aX-Injected:%201",
    "/app/..;/outside.txt",
    "/app/....//outside.txt",
    "/app/evil.txt",
    "/app/rel-evil.txt",
    "/app/passwd.txt",
    "/app/linkdir/index.html",
    "/app/linkdir",
    "/app/.env",
    "/app/%2eenv",
    "/outside.txt",
    "/web/app/index.html",
    "/app/%",
    "/app/%zz",
    "/app/%2",
    "//app/../outside.txt",
    "/./app/../outside.txt",
    "/app/../app/../outside.txt",
    "http://127.0.0.1/app/../outside.txt",
    "/app/" + "a/" * 600 + "x.js",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_never_escapes(web_server, target):
    st, h, body = raw(web_server, target)
    assert st < 500, (target, st)
    assert SECRET not in body, target
    assert b"root:" not in body, target
    assert "x-injected" not in h
    if st == 200:
        # the only thing a traversal spelling may get is the app's own index.html (a path
        # without an extension is a client-side route)
        assert body == INDEX, target


def test_traversal_with_head_and_conditional(web_server):
    for target in ("/app/%2e%2e/outside.txt", "/app/evil.txt", "/app/linkdir/index.html"):
        st, h, body = raw(web_server, target, method="HEAD")
        assert st < 500 and st != 200 and body == b"", target
        st, h, body = raw(web_server, target, headers=["If-None-Match: *"])
        assert st < 500 and st != 304 and SECRET not in body, target


def test_openapi_yaml(web_server):
    r = Api(web_server).get("/openapi.yaml", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/yaml"
    want = (REPO / "docs" / "openapi.yaml").read_bytes()
    assert r.content == want
    assert r.headers["ETag"] == etag_of(want)
    assert r.headers["Cache-Control"] == "no-cache"


def test_missing_web_dir(make_server, tmp_path):
    srv = make_server(env={"GRIDPOINTS_WEB_DIR": str(tmp_path / "not-built")})
    api = Api(srv)
    for path in ("/app/", "/app/index.html", "/app/tasks/3", "/app/assets/x-B1c2D3e4.js"):
        r = api.get(path)
        assert r.status_code == 404, path
        assert error_code(r) == "web_app_not_built", path
        assert "run make" in r.json()["error"]["message"]
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code == 200
    assert " level=warn " in srv.log_text() and "not-built" in srv.log_text()


def test_web_dir_without_the_app(make_server, tmp_path):
    (tmp_path / "console").mkdir()
    (tmp_path / "console" / "index.html").write_bytes(b"<!doctype html>")
    srv = make_server(env={"GRIDPOINTS_WEB_DIR": str(tmp_path)})
    r = Api(srv).get("/app/tasks")
    assert r.status_code == 404 and error_code(r) == "web_app_not_built"
    r = Api(srv).get("/app/x.js")
    assert r.status_code == 404 and error_code(r) == "not_found"


@pytest.mark.parametrize("env", [
    {"GRIDPOINTS_WEB_MAX_SIZE": "4k"},
    {"GRIDPOINTS_WEB_MAX_FILES": "5"},
])
def test_too_much_refuses_to_start(make_server, webroot, env):
    srv = make_server(start=False, allow_errors=True,
                      env={"GRIDPOINTS_WEB_DIR": str(webroot / "web"), **env})
    srv.start(wait=False)
    assert srv.wait_exit(timeout=20) == 1
    errors = [ln for ln in srv.log_text().splitlines() if " level=error " in ln]
    key = "web.max_size" if "GRIDPOINTS_WEB_MAX_SIZE" in env else "web.max_files"
    assert any(key in ln for ln in errors), errors
