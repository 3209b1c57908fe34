#!/usr/bin/env python3
"""Seed corpus and dictionary of the whole-path fuzzer (tests/fuzz/fuzz_http.c).

    scripts/fuzz-seeds.py BUILD_DIR

writes BUILD_DIR/seeds-http/ (one request per route and method of docs/openapi.yaml with a
plausible body, query and credentials; the JSONTestSuite test_parsing files as bodies of
POST /api/v1/auth/login) and BUILD_DIR/http.dict (libFuzzer -dict). Generated, never in git.

An input is 4 bytes that steer the fake backend (0 = a plausible answer to every call), then
the request bytes. Merchant routes carry a GP1-HMAC-SHA256 header with ts=0 and sig=64 zeros:
the harness fills in the time and the real signature."""
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "jsonsuite"))
import jsonsuite  # noqa: E402

TOKEN = "A" * 21 + "b" * 21 + "Z"  # 43 base64url characters: a well-formed session token
MERCHANT_AUTH = ("GP1-HMAC-SHA256 key=mk_0123456789abcdef,ts=0,nonce=fuzznonce0123456789,sig="
                 + "0" * 64)
PASSWORD = "fuzz-password"  # what the fake backend's stored hash opens with


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"].lstrip("#/").split("/")
        node = spec
        for part in ref:
            node = node[part]
    return node


def example(spec, schema, name=""):
    schema = resolve(spec, schema or {})
    if "example" in schema:
        return schema["example"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("oneOf", "anyOf", "allOf"):
        if key in schema:
            return example(spec, schema[key][0], name)
    t = schema.get("type")
    if t == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: example(spec, v, k) for k, v in props.items()}
    if t == "array":
        return [example(spec, schema.get("items", {}), name)]
    if t == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if t == "number":
        return max(schema.get("minimum", 1), 1)
    if t == "boolean":
        return True
    if t == "string":
        fmt = schema.get("format", "")
        if "phone" in name or schema.get("pattern", "").startswith("^1[0-9]"):
            return "13800000001"
        if name == "password":
            return PASSWORD
        if fmt == "date-time" or name.endswith("_at") or name in ("from", "to", "at"):
            return "2030-01-01T00:00:00Z"
        if fmt == "uri" or "url" in name:
            return "https://example.com/hook"
        if name == "role":
            return "worker"
        if name == "period":
            return "2030-01"
        return "x" * max(int(schema.get("minLength", 1)), 1)
    return "x"


def path_value(name):
    if name in ("role",):
        return "worker"
    if name == "code":
        return "VCH-0123456789"
    return "1"


def request(method, path, query, headers, body):
    target = path + ("?" + "&".join(query) if query else "")
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost"]
    lines += headers
    raw = b""
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
        raw = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + raw


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "fuzz")
    seeds = os.path.join(out, "seeds-http")
    os.makedirs(seeds, exist_ok=True)
    for f in os.listdir(seeds):
        os.unlink(os.path.join(seeds, f))
    with open(os.path.join(ROOT, "docs", "openapi.yaml"), encoding="utf-8") as f:
        spec = yaml.safe_load(f)

    import json
    n = 0
    words = set()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            concrete = re.sub(r"\{([^}]+)\}", lambda m: path_value(m.group(1)), path)
            words.update(p for p in path.split("/") if p and not p.startswith("{"))
            query = []
            for prm in op.get("parameters", []):
                prm = resolve(spec, prm)
                if prm.get("in") == "query":
                    words.add(prm["name"] + "=")
                    v = example(spec, prm.get("schema", {}), prm["name"])
                    query.append(f"{prm['name']}={str(v).lower() if isinstance(v, bool) else v}")
            headers = []
            security = op.get("security", spec.get("security"))
            if path.startswith("/merchant/"):
                headers.append("Authorization: " + MERCHANT_AUTH)
            elif security != []:
                headers.append("Authorization: Bearer " + TOKEN)
            body = None
            rb = op.get("requestBody")
            if rb:
                schema = rb.get("content", {}).get("application/json", {}).get("schema", {})
                body = json.dumps(example(spec, schema), separators=(",", ":")).encode()
                words.update(resolve(spec, schema).get("properties", {}).keys())
            if method != "get":
                headers.append("Idempotency-Key: fuzz-key-1")
            name = f"route-{method}-{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_')}"
            for script in (b"\0\0\0\0", b"\0\x08\x0d\x0c"):
                data = script + request(method.upper(), concrete, query, headers, body)
                with open(os.path.join(seeds, f"{name}-{script.hex()}"), "wb") as f:
                    f.write(data)
                n += 1

    suite = 0
    if jsonsuite.install():
        cases, skipped = jsonsuite.load()
        for case, body in cases:
            data = b"\0\0\0\0" + request("POST", "/api/v1/auth/login", [], [], body)
            with open(os.path.join(seeds, "jsonsuite-" + case), "wb") as f:
                f.write(data)
            suite += 1
        print(f"fuzz-seeds: {n} route seeds, {suite} JSONTestSuite bodies "
              f"({len(skipped)} cases skipped: bytes lost in the npm packaging)")
    else:
        print(f"fuzz-seeds: {n} route seeds; JSONTestSuite unavailable (no npm / no registry)")

    tokens = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "HTTP/1.1", "HTTP/1.0",
              "Host:", "Content-Length:", "Content-Type:", "application/json",
              "Transfer-Encoding:", "chunked", "Connection:", "close", "keep-alive",
              "Authorization:", "Bearer ", "Idempotency-Key:", "X-Request-Id:", "Expect:",
              "100-continue", "X-Forwarded-For:", "\r\n", "\r\n\r\n", "0\r\n\r\n",
              "GP1-HMAC-SHA256 key=mk_0123456789abcdef,ts=0,nonce=", ",sig=" + "0" * 64,
              "\\u0000", "\\ud83c\\udf00", "\\", "\u00e9", "\U0001f300", "true", "false", "null",
              "{}", "[]", "1e999", "-0", "9223372036854775808", "2030-01-01T00:00:00Z",
              PASSWORD, "13800000001", TOKEN, "?limit=", "&cursor=", "format=csv"}
    tokens.update(words)
    with open(os.path.join(out, "http.dict"), "w", encoding="utf-8") as f:
        for t in sorted(tokens):
            esc = "".join(c if 0x20 <= ord(c) < 0x7f and c not in '"\\' else
                          "".join(f"\\x{b:02x}" for b in c.encode()) for c in t)
            f.write(f'"{esc}"\n')


if __name__ == "__main__":
    main()
