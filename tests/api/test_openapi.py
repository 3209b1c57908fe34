"""docs/openapi.yaml and the route table in server/routes.c list exactly the same routes, and
responses of a few routes validate against the document's schemas."""

import re
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]


def routes_from_table():
    text = (REPO / "server" / "routes.c").read_text()
    return {(m.group(1), m.group(2)) for m in
            re.finditer(r'\{\s*"(GET|POST|PUT|PATCH|DELETE)",\s*"([^"]+)"', text)}


def routes_from_openapi():
    doc = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    out = set()
    for path, ops in doc["paths"].items():
        for method in ops:
            if method in ("get", "post", "put", "patch", "delete"):
                out.add((method.upper(), path))
    return out


def normalize(routes):
    """Parameter names may differ ({id} vs {unit_id}); compare the shapes."""
    return {(m, re.sub(r"\{[^}]+\}", "{}", p)) for m, p in routes}


def test_routes_and_openapi_match():
    table, doc = normalize(routes_from_table()), normalize(routes_from_openapi())
    assert table, "no routes parsed from routes.c"
    assert table - doc == set(), f"routes missing from docs/openapi.yaml: {sorted(table - doc)}"
    assert doc - table == set(), f"documented routes that do not exist: {sorted(doc - table)}"


def json_schema(node):
    """OpenAPI 3.0 writes "nullable: true"; JSON Schema says type: [X, "null"]."""
    if isinstance(node, dict):
        out = {k: json_schema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") and "type" in node:
            out["type"] = [node["type"], "null"]
        return out
    if isinstance(node, list):
        return [json_schema(v) for v in node]
    return node


def test_responses_match_schemas(api, admin):
    doc = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    resolver_doc = {"components": json_schema(doc["components"])}

    def check(instance, name):
        schema = {"$ref": f"#/components/schemas/{name}", **resolver_doc}
        jsonschema.validate(instance, schema)

    r = api.get("/api/v1/nope")
    check(r.json(), "Error")
    r = api.get(f"/api/v1/people/{admin['person_id']}", token=admin["token"])
    check(r.json(), "Person")
    r = api.get("/api/v1/units", token=admin["token"])
    check(r.json(), "Page")
    for u in r.json()["items"]:
        check(u, "Unit")
    r = api.get("/api/v1/workers/me/balance", token=admin["token"])
    check(r.json(), "Balance")
